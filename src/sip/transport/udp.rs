//! SIP over UDP: one task per socket reads datagrams into one reused buffer.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transport::udp::UdpConnection;
use socket2::Type;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::bind_socket;
use crate::sip::{SipConnection, SipCore, SipError, TransportKind};

/// A bound SIP UDP socket and the handle the transaction layer sends through.
pub struct UdpListener {
    socket: Arc<UdpSocket>,
    connection: SipConnection,
    local: SocketAddr,
}

impl UdpListener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, core: &SipCore) -> Result<Self, SipError> {
        let socket = bind_socket(addr, Type::DGRAM)?;
        let socket =
            Arc::new(
                UdpSocket::from_std(socket.into()).map_err(|source| SipError::Io {
                    context: format!("register UDP {addr}"),
                    source,
                })?,
            );
        let local = socket.local_addr().map_err(|source| SipError::Io {
            context: format!("local address of {addr}"),
            source,
        })?;
        let platform: Arc<dyn rsipstack::platform::net::UdpSocket> = socket.clone();
        let connection =
            UdpConnection::from_socket(platform, None, Some(core.cancel_token().child_token()))
                .await
                .map_err(|e| SipError::Io {
                    context: format!("UDP connection {addr}"),
                    source: std::io::Error::other(e.to_string()),
                })?;
        Ok(UdpListener {
            socket,
            connection: SipConnection::Udp(connection),
            local,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The handle client transactions use to send from this socket.
    pub fn connection(&self) -> &SipConnection {
        &self.connection
    }

    /// Reads datagrams until shutdown.
    pub fn spawn(self, core: Arc<SipCore>) {
        info!(transport = "udp", addr = %self.local, "listening");
        tokio::spawn(async move {
            let cancel = core.cancel_token().clone();
            // One byte more than the limit tells an oversize datagram from a full one.
            let mut buf = vec![0u8; core.limits().max_message_size.min(65_535) + 1];
            loop {
                let (len, remote) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    received = self.socket.recv_from(&mut buf) => match received {
                        Ok(received) => received,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here; keep reading.
                            debug!(error = %e, "UDP receive error");
                            continue;
                        }
                    },
                };
                let datagram = &buf[..len];
                if datagram == b"\r\n\r\n" {
                    let _ = self.socket.send_to(b"\r\n", remote).await;
                    continue;
                }
                if datagram.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Some(reply) = core
                    .deliver(datagram, TransportKind::Udp, &self.connection, remote)
                    .await
                {
                    if let Err(e) = self.socket.send_to(&reply, remote).await {
                        warn!(%remote, error = %e, "could not send error response");
                    }
                }
            }
        });
    }
}
