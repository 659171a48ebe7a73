//! SIP over TCP and TLS: an accept loop per listener and one task per connection.
//!
//! The connection task owns a small [`Framer`] buffer, answers CRLF keepalives
//! (RFC 5626 §3.5.1), enforces the idle and message-completion timeouts, and
//! writes whatever the transaction layer queues for this connection.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transport::TransportEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::bind_tcp;
use super::{OpenFlow, open_flow};
use crate::sip::connections::Slot;
use crate::sip::framer::{Frame, FrameError, Framer};
use crate::sip::inspect::{Rejection, stateless_response};
use crate::sip::{SipCore, SipError, TransportKind};

/// A bound TCP or TLS listener for SIP.
pub struct StreamListener {
    listener: tokio::net::TcpListener,
    kind: TransportKind,
    tls: Option<TlsAcceptor>,
    local: SocketAddr,
}

impl StreamListener {
    /// Binds `addr`; with `tls`, every connection is a TLS server session.
    pub fn bind(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Result<Self, SipError> {
        let listener = bind_tcp(addr)?;
        let local = listener.local_addr().map_err(|source| SipError::Io {
            context: format!("local address of {addr}"),
            source,
        })?;
        let kind = if tls.is_some() {
            TransportKind::Tls
        } else {
            TransportKind::Tcp
        };
        Ok(StreamListener {
            listener,
            kind,
            tls,
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// TCP or TLS.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// Accepts connections until shutdown.
    pub fn spawn(self, core: Arc<SipCore>) {
        info!(transport = self.kind.as_str(), addr = %self.local, "listening");
        tokio::spawn(async move {
            let cancel = core.cancel_token().clone();
            loop {
                let (tcp, remote) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    accepted = self.listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // EMFILE and friends: back off briefly rather than spin.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let counters = core.metrics().transport(self.kind);
                let slot = match core.connections().admit(remote.ip()) {
                    Ok(slot) => slot,
                    Err(refused) => {
                        counters.connections_refused.inc();
                        debug!(%remote, transport = self.kind.as_str(), %refused, "connection refused");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(self.local);
                let (core, kind, tls) = (core.clone(), self.kind, self.tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(core, tcp, kind, local, remote, slot).await,
                        Some(acceptor) => {
                            let handshake =
                                timeout(core.limits().message_timeout(), acceptor.accept(tcp))
                                    .await;
                            match handshake {
                                Ok(Ok(stream)) => {
                                    serve(core, stream, kind, local, remote, slot).await
                                }
                                Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                                Err(_) => {
                                    core.metrics().transport(kind).timeouts.inc();
                                    debug!(%remote, "TLS handshake timed out");
                                }
                            }
                        }
                    }
                });
            }
        });
    }
}

/// Why a connection task ended.
#[derive(Debug)]
#[allow(dead_code)] // the payload is read through Debug in the close log line
enum Close {
    Peer,
    Idle,
    SlowMessage,
    Framing,
    Io(std::io::Error),
    Shutdown,
}

/// Serves one SIP stream connection until it closes.
pub async fn serve<S>(
    core: Arc<SipCore>,
    io: S,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(open) = open_flow(&core, kind, local, remote).await else {
        return;
    };
    serve_flow(core, io, kind, remote, slot, open).await
}

/// Serves a stream connection whose flow is already registered (a
/// connection we dialled: the caller needed its handle before serving).
pub async fn serve_flow<S>(
    core: Arc<SipCore>,
    io: S,
    kind: TransportKind,
    remote: SocketAddr,
    slot: Slot,
    open: OpenFlow,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = core.limits().clone();
    let OpenFlow {
        connection,
        guard: flow,
        mut outgoing,
    } = open;
    let counters = core.metrics().transport(kind);
    debug!(%remote, transport = kind.as_str(), flow = %flow.id(), "connection open");

    let (mut reader, mut writer) = tokio::io::split(io);
    let mut framer = Framer::new(limits.read_buffer_size.max(512), limits.max_message_size);
    let cancel = core.cancel_token().clone();
    let mut last_activity = Instant::now();
    let mut partial_since: Option<Instant> = None;

    let reason = 'conn: loop {
        let deadline = match partial_since {
            Some(since) => since + limits.message_timeout(),
            None => last_activity + limits.idle_timeout(),
        };
        tokio::select! {
            _ = cancel.cancelled() => break Close::Shutdown,
            _ = sleep_until(deadline) => {
                break if partial_since.is_some() { Close::SlowMessage } else { Close::Idle };
            }
            outgoing = outgoing.recv() => {
                let Some(TransportEvent::Incoming(message, _, _)) = outgoing else { continue };
                if let Err(e) = write(&mut writer, &message.to_bytes(), &limits).await {
                    break Close::Io(e);
                }
            }
            read = reader.read_buf(framer.read_buf()) => {
                match read {
                    Ok(0) => break Close::Peer,
                    Ok(_) => last_activity = Instant::now(),
                    Err(e) => break Close::Io(e),
                }
                while let Some(frame) = framer.next_frame() {
                    // Flush what is queued first: delivering may queue more on this
                    // same connection (a replayed response), and the queue is bounded.
                    while let Ok(TransportEvent::Incoming(message, _, _)) = outgoing.try_recv() {
                        if let Err(e) = write(&mut writer, &message.to_bytes(), &limits).await {
                            break 'conn Close::Io(e);
                        }
                    }
                    let reply = match frame {
                        Ok(Frame::Message(bytes)) => core.deliver(&bytes, kind, &connection, remote).await,
                        Ok(Frame::Ping) => Some(b"\r\n".to_vec()),
                        Ok(Frame::Pong) => None,
                        Err(error) => {
                            let (raw, rejection) = match error {
                                FrameError::TooLarge(raw) => (raw, Rejection::new(513, "Message Too Large")),
                                FrameError::BadContentLength(raw) => (raw, Rejection::new(400, "Invalid Content-Length")),
                            };
                            counters.rejected.inc();
                            match stateless_response(&raw, &rejection, core.server_name(), Some(remote)) {
                                Some(reply) => {
                                    counters.error_responses.inc();
                                    let _ = write(&mut writer, &reply, &limits).await;
                                }
                                None => counters.dropped.inc(),
                            }
                            break 'conn Close::Framing;
                        }
                    };
                    if let Some(reply) = reply
                        && let Err(e) = write(&mut writer, &reply, &limits).await {
                            break 'conn Close::Io(e);
                        }
                }
                partial_since = match (framer.is_partial(), partial_since) {
                    (false, _) => None,
                    (true, None) => Some(Instant::now()),
                    (true, since) => since,
                };
            }
        }
    };
    if matches!(reason, Close::Idle | Close::SlowMessage) {
        counters.timeouts.inc();
    }
    let _ = timeout(std::time::Duration::from_secs(1), writer.shutdown()).await;
    counters.connections.dec();
    debug!(%remote, transport = kind.as_str(), flow = %flow.id(), ?reason, buffered = framer.buffered(), "connection closed");
    drop(flow);
    drop(slot);
}

async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limits: &crate::sip::Limits,
) -> std::io::Result<()> {
    timeout(limits.write_timeout(), async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}
