//! Requests we originate towards peers that did not connect to us (SIP
//! trunks): resolving their address, choosing the UDP socket or reusing /
//! dialling a TCP or TLS connection, and starting client transactions on it.
//!
//! A dialled stream becomes an ordinary flow (see [`super::connections`]):
//! the same connection task reads it, so requests the peer sends back on it
//! (a carrier's BYE) arrive like any other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info};

use super::transport::open_flow;
use super::transport::stream::serve_flow;
use super::{
    Request, SipAddr, SipConnection, SipCore, Transaction, TransactionKey, TransactionRole,
    TransportKind,
};

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// No listener of the transport and address family to send from.
    #[error("no {0} socket for {1}")]
    NoSocket(&'static str, SocketAddr),
    /// Connecting failed or timed out.
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// TLS was asked for without a client configuration, or the name is invalid.
    #[error("TLS to {0}: {1}")]
    Tls(SocketAddr, String),
    /// The connection limits refused a new connection.
    #[error("connection limit reached")]
    Limit,
    /// The request has no usable Via branch.
    #[error("request cannot start a client transaction")]
    BadRequest,
}

/// Where to send one request and what to put in Via and Contact.
#[derive(Clone)]
pub struct NextHop {
    /// The connection to send on.
    pub connection: SipConnection,
    /// The destination for UDP (`None` for stream flows).
    pub destination: Option<SipAddr>,
    /// The transport.
    pub kind: TransportKind,
    /// Our address on this hop (Via sent-by).
    pub local: SocketAddr,
    /// Our address the peer can open new connections to (Contact).
    pub contact: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
}

/// TLS settings of one destination.
#[derive(Clone)]
pub struct TlsClient {
    /// The client configuration (roots, verification).
    pub config: Arc<rustls::ClientConfig>,
    /// The name to verify the certificate against (and send in SNI).
    pub server_name: String,
}

/// Sends requests we originate.
pub struct Outbound {
    core: Arc<SipCore>,
    /// UDP sockets: (advertised address, handle).
    udp: Vec<(SocketAddr, SipConnection)>,
    /// Listening addresses of the stream transports (for Contact).
    listeners: Vec<(TransportKind, SocketAddr)>,
    connect_timeout: Duration,
    /// One lock per destination being dialled, so that concurrent requests
    /// to a new destination share one connection.
    dialling: Mutex<HashMap<(TransportKind, SocketAddr), DialLock>>,
}

/// Held while one connection to a destination is being dialled.
type DialLock = Arc<tokio::sync::Mutex<()>>;

impl Outbound {
    /// Sends from these UDP sockets; advertises these stream listeners.
    pub fn new(
        core: Arc<SipCore>,
        udp: Vec<(SocketAddr, SipConnection)>,
        listeners: Vec<(TransportKind, SocketAddr)>,
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            core,
            udp,
            listeners,
            connect_timeout: Duration::from_secs(5),
            dialling: Mutex::new(HashMap::new()),
        })
    }

    /// The SIP core requests go through.
    pub fn core(&self) -> &Arc<SipCore> {
        &self.core
    }

    /// Resolves `host` (a name or a literal address) to addresses, IPv4 first.
    pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| OutboundError::Resolve(host.to_string()))?
            .collect();
        addrs.sort_by_key(|a| a.is_ipv6());
        addrs.dedup();
        if addrs.is_empty() {
            return Err(OutboundError::Resolve(host.to_string()));
        }
        Ok(addrs)
    }

    /// The hop to `remote` over `kind`: the UDP socket of its family, or an
    /// open flow to it, or a new connection (TLS with `tls`).
    pub async fn hop(
        &self,
        kind: TransportKind,
        remote: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<NextHop, OutboundError> {
        let mut hop = self.find_hop(kind, remote, tls).await?;
        // Behind NAT, what the peer is told (Via, Contact) is our public address.
        hop.local = self.core.advertised(hop.local, remote.ip());
        hop.contact = self.core.advertised(hop.contact, remote.ip());
        Ok(hop)
    }

    async fn find_hop(
        &self,
        kind: TransportKind,
        remote: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<NextHop, OutboundError> {
        match kind {
            TransportKind::Udp => {
                let (local, connection) = self
                    .udp
                    .iter()
                    .find(|(local, _)| local.is_ipv4() == remote.is_ipv4())
                    .cloned()
                    .ok_or(OutboundError::NoSocket("UDP", remote))?;
                Ok(NextHop {
                    connection,
                    destination: Some(SipAddr {
                        r#type: Some(crate::sip::Transport::Udp),
                        addr: remote.into(),
                    }),
                    kind,
                    local,
                    contact: local,
                    remote,
                })
            }
            TransportKind::Tcp | TransportKind::Tls => self.stream_hop(kind, remote, tls).await,
            TransportKind::Ws | TransportKind::Wss => Err(OutboundError::NoSocket("WS", remote)),
        }
    }

    fn contact_for(&self, kind: TransportKind, local: SocketAddr) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(k, a)| *k == kind && a.is_ipv4() == local.is_ipv4())
            .map(|(_, a)| {
                if a.ip().is_unspecified() {
                    SocketAddr::new(local.ip(), a.port())
                } else {
                    *a
                }
            })
            .unwrap_or(local)
    }

    fn existing(&self, kind: TransportKind, remote: SocketAddr) -> Option<NextHop> {
        let flow = self.core.connections().flow_by_peer(kind, remote)?;
        Some(NextHop {
            connection: flow.connection,
            destination: None,
            kind,
            local: flow.local,
            contact: self.contact_for(kind, flow.local),
            remote,
        })
    }

    async fn stream_hop(
        &self,
        kind: TransportKind,
        remote: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<NextHop, OutboundError> {
        if let Some(hop) = self.existing(kind, remote) {
            return Ok(hop);
        }
        let lock = {
            let mut dialling = self
                .dialling
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            dialling.entry((kind, remote)).or_default().clone()
        };
        let _dialling = lock.lock().await;
        // Somebody else may have connected while we waited.
        if let Some(hop) = self.existing(kind, remote) {
            return Ok(hop);
        }
        let result = self.dial(kind, remote, tls).await;
        if let Ok(mut dialling) = self.dialling.lock() {
            dialling.remove(&(kind, remote));
        }
        result
    }

    async fn dial(
        &self,
        kind: TransportKind,
        remote: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<NextHop, OutboundError> {
        let slot = self
            .core
            .connections()
            .admit(remote.ip())
            .map_err(|_| OutboundError::Limit)?;
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(remote))
            .await
            .map_err(|_| OutboundError::Connect(remote, "timed out".into()))?
            .map_err(|e| OutboundError::Connect(remote, e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp
            .local_addr()
            .map_err(|e| OutboundError::Connect(remote, e.to_string()))?;
        let core = self.core.clone();
        if kind == TransportKind::Tls {
            let tls = tls.ok_or_else(|| OutboundError::Tls(remote, "no client settings".into()))?;
            let name = ServerName::try_from(tls.server_name.clone())
                .map_err(|e| OutboundError::Tls(remote, e.to_string()))?;
            let stream = tokio::time::timeout(
                self.connect_timeout,
                TlsConnector::from(tls.config.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| OutboundError::Tls(remote, "handshake timed out".into()))?
            .map_err(|e| OutboundError::Tls(remote, e.to_string()))?;
            let open = open_flow(&core, kind, local, remote)
                .await
                .ok_or(OutboundError::Limit)?;
            let connection = open.connection.clone();
            tokio::spawn(serve_flow(core, stream, kind, remote, slot, open));
            info!(%remote, %local, "TLS connection to peer open");
            return Ok(self.stream_next_hop(connection, kind, local, remote));
        }
        let open = open_flow(&core, kind, local, remote)
            .await
            .ok_or(OutboundError::Limit)?;
        let connection = open.connection.clone();
        tokio::spawn(serve_flow(core, tcp, kind, remote, slot, open));
        debug!(%remote, %local, "TCP connection to peer open");
        Ok(self.stream_next_hop(connection, kind, local, remote))
    }

    fn stream_next_hop(
        &self,
        connection: SipConnection,
        kind: TransportKind,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> NextHop {
        NextHop {
            connection,
            destination: None,
            kind,
            local,
            contact: self.contact_for(kind, local),
            remote,
        }
    }

    /// A client transaction for `request` on `hop` (not sent yet: call
    /// `send()` on it).
    pub fn client(&self, request: Request, hop: &NextHop) -> Result<Transaction, OutboundError> {
        let key = TransactionKey::from_request(&request, TransactionRole::Client)
            .map_err(|_| OutboundError::BadRequest)?;
        let mut client = Transaction::new_client(
            key,
            request,
            self.core.transaction_layer().clone(),
            Some(hop.connection.clone()),
        );
        client.destination = hop.destination.clone();
        Ok(client)
    }
}
