//! Listeners and connection tasks: they move bytes, nothing else.
//!
//! Each task reads, hands complete messages to [`SipCore::deliver`](super::SipCore::deliver),
//! and writes what the transaction layer sends. No protocol decisions live here.

pub mod stream;
pub mod udp;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transport::channel::ChannelConnection;
use rsipstack::transport::{SipAddr, TransportEvent};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;
use tracing::warn;

use super::connections::FlowGuard;
use super::{SipConnection, SipCore, SipError, TransportKind};

/// A stream connection registered as a SIP flow.
pub struct OpenFlow {
    /// The handle the transaction layer sends through.
    pub connection: SipConnection,
    /// Keeps the flow registered; dropping it announces the close.
    pub guard: FlowGuard,
    /// What the transaction layer wants written on this connection.
    pub outgoing: mpsc::Receiver<TransportEvent>,
}

/// Registers a new stream connection: a channel connection for the transaction
/// layer (its writes arrive on `outgoing`, bounded by `limits.send_queue`) and
/// an entry in the flow table; counts it as open.
pub async fn open_flow(
    core: &Arc<SipCore>,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<OpenFlow> {
    let (out_tx, outgoing) = mpsc::channel::<TransportEvent>(core.limits().send_queue.max(1));
    let (_unused_tx, unused_rx) = mpsc::unbounded_channel();
    let peer = SipAddr {
        r#type: Some(kind.sip_transport()),
        addr: remote.into(),
    };
    let connection = match ChannelConnection::create_connection_bounded(
        unused_rx,
        out_tx,
        peer,
        Some(core.cancel_token().child_token()),
    )
    .await
    {
        Ok(channel) => SipConnection::Channel(channel),
        Err(e) => {
            warn!(%remote, error = %e, "could not create flow");
            return None;
        }
    };
    let guard = core
        .connections()
        .register(kind, local, remote, connection.clone());
    core.metrics().transport(kind).connections.inc();
    Some(OpenFlow {
        connection,
        guard,
        outgoing,
    })
}

/// Creates a socket bound to `addr`. IPv6 sockets are IPv6-only, so `0.0.0.0:P`
/// and `[::]:P` can be bound side by side.
pub fn bind_socket(addr: SocketAddr, kind: Type) -> Result<Socket, SipError> {
    let io = |context: &str, source| SipError::Io {
        context: format!("{context} {addr}"),
        source,
    };
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(domain, kind, Some(protocol)).map_err(|e| io("socket for", e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| io("IPV6_V6ONLY on", e))?;
    }
    if kind == Type::STREAM {
        socket
            .set_reuse_address(true)
            .map_err(|e| io("SO_REUSEADDR on", e))?;
    } else {
        // Room for bursts of signalling; the kernel caps it at rmem_max.
        let _ = socket.set_recv_buffer_size(4 << 20);
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| io("non-blocking mode on", e))?;
    socket.bind(&addr.into()).map_err(|e| io("bind", e))?;
    if kind == Type::STREAM {
        socket.listen(1024).map_err(|e| io("listen on", e))?;
    }
    Ok(socket)
}

/// Binds a TCP listener (see [`bind_socket`]).
pub fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener, SipError> {
    let socket = bind_socket(addr, Type::STREAM)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(|source| SipError::Io {
        context: format!("register listener {addr}"),
        source,
    })
}
