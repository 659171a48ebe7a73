//! SIP over UDP: a few tasks per socket read datagrams into reused buffers
//! and send back what the core answers at once.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transport::udp::UdpConnection;
use socket2::Type;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::bind_socket;
use crate::sip::{DatagramScratch, SipConnection, SipCore, SipError};

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

    /// Reads datagrams until shutdown, in [`Limits::udp_reader_count`](crate::sip::Limits::udp_reader_count)
    /// tasks sharing the socket (each with its own buffers, reused for every datagram).
    pub fn spawn(self, core: Arc<SipCore>) {
        let readers = core.limits().udp_reader_count();
        info!(transport = "udp", addr = %self.local, readers, "listening");
        for _ in 0..readers {
            tokio::spawn(read_loop(
                self.socket.clone(),
                self.connection.clone(),
                core.clone(),
            ));
        }
    }
}

/// One reader: receives a datagram, lets the core answer or route it, sends
/// the reply (if any) back to its source.
async fn read_loop(socket: Arc<UdpSocket>, connection: SipConnection, core: Arc<SipCore>) {
    let cancel = core.cancel_token().clone();
    // One byte more than the limit tells an oversize datagram from a full one.
    let mut buf = vec![0u8; core.limits().max_message_size.min(65_535) + 1];
    let mut scratch = DatagramScratch::default();
    loop {
        let (len, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
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
            let _ = socket.send_to(b"\r\n", remote).await;
            continue;
        }
        if datagram.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = core
            .deliver_datagram(datagram, &connection, remote, &mut scratch)
            .await;
        if reply && let Err(e) = socket.send_to(&scratch.reply, remote).await {
            warn!(%remote, error = %e, "could not send response");
        }
    }
}
