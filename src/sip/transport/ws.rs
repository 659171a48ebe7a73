//! SIP over WebSocket (RFC 7118): one SIP message per frame.
//!
//! The `http` module upgrades the connection (subprotocol `sip`) and hands the
//! socket here. The flow is registered in the connection table, so a browser
//! registered over it can be reached through it and only through it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use rsipstack::transport::TransportEvent;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::debug;

use super::{OpenFlow, open_flow};
use crate::sip::connections::Slot;
use crate::sip::{SipCore, TransportKind};

/// Serves one upgraded SIP WebSocket until it closes.
pub async fn serve(
    core: Arc<SipCore>,
    mut socket: WebSocket,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
    slot: Slot,
) {
    let limits = core.limits().clone();
    let Some(OpenFlow {
        connection,
        guard: flow,
        mut outgoing,
    }) = open_flow(&core, kind, local, remote).await
    else {
        return;
    };
    let counters = core.metrics().transport(kind);
    debug!(%remote, transport = kind.as_str(), flow = %flow.id(), "websocket open");

    let cancel = core.cancel_token().clone();
    let ping_every = limits.ws_ping_interval();
    let mut next_ping = ping_every.map(|every| Instant::now() + every);
    let mut last_activity = Instant::now();
    let reason = loop {
        let idle_deadline = last_activity + limits.idle_timeout();
        let ping_deadline = next_ping.unwrap_or(idle_deadline);
        tokio::select! {
            _ = cancel.cancelled() => break "shutdown",
            _ = sleep_until(idle_deadline) => {
                counters.timeouts.inc();
                break "idle";
            }
            _ = sleep_until(ping_deadline), if next_ping.is_some() => {
                next_ping = ping_every.map(|every| Instant::now() + every);
                if send(&mut socket, Message::Ping(Default::default()), &limits).await.is_err() {
                    break "write failed";
                }
            }
            outgoing = outgoing.recv() => {
                let Some(TransportEvent::Incoming(message, _, _)) = outgoing else { continue };
                let bytes = message.to_bytes();
                let frame = match String::from_utf8(bytes) {
                    Ok(text) => Message::Text(text.into()),
                    Err(e) => Message::Binary(e.into_bytes().into()),
                };
                if send(&mut socket, frame, &limits).await.is_err() {
                    break "write failed";
                }
            }
            incoming = socket.recv() => {
                last_activity = Instant::now();
                let reply = match incoming {
                    None => break "closed by peer",
                    Some(Err(e)) => {
                        debug!(%remote, error = %e, "websocket error");
                        break "protocol error";
                    }
                    Some(Ok(Message::Text(text))) => core.deliver(text.as_bytes(), kind, &connection, remote).await,
                    Some(Ok(Message::Binary(bytes))) => core.deliver(&bytes, kind, &connection, remote).await,
                    Some(Ok(Message::Close(_))) => break "closed by peer",
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                };
                if let Some(reply) = reply {
                    let frame = Message::Text(String::from_utf8_lossy(&reply).into_owned().into());
                    if send(&mut socket, frame, &limits).await.is_err() {
                        break "write failed";
                    }
                }
            }
        }
    };
    let _ = timeout(
        std::time::Duration::from_secs(1),
        socket.send(Message::Close(None)),
    )
    .await;
    counters.connections.dec();
    debug!(%remote, transport = kind.as_str(), flow = %flow.id(), reason, "websocket closed");
    drop(flow);
    drop(slot);
}

async fn send(
    socket: &mut WebSocket,
    message: Message,
    limits: &crate::sip::Limits,
) -> Result<(), ()> {
    match timeout(limits.write_timeout(), socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
