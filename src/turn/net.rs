//! The tokio driver of the TURN state machine: UDP, TCP and TLS listeners,
//! one task per relay socket (never one per packet), and a housekeeping
//! task for lifetimes.
//!
//! The state machine sits behind one `std::sync::Mutex`, taken for the
//! duration of one `handle_*` call and never across an `.await`. Sends are
//! `try_send_to` on UDP sockets (a full socket buffer drops the datagram, as
//! the network would) and a bounded queue per TCP/TLS connection, so no task
//! waits on another while the lock is held.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{Resolved, TurnConfig};
use super::credentials::Credentials;
use super::policy::{PeerFilter, PeerRule};
use super::server::{
    BoundRelay, Family, FiveTuple, HEADROOM, Now, Options, Output, PeerAction, RelayBinder,
    Transport, TurnServer,
};
use super::{TurnError, TurnMetrics, stun};
use crate::sip::transport::bind_socket;
use crate::sip::{Connections, SipError};
use socket2::Type;

/// A relay socket and the token that stops its task.
#[derive(Clone)]
pub struct Relay(Arc<RelayInner>);

struct RelayInner {
    socket: Arc<UdpSocket>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay({:?})", self.0.socket.local_addr().ok())
    }
}

type Shared = Arc<Mutex<TurnServer<Relay>>>;

/// Receive buffer of a relay socket: one stream's burst.
const RELAY_BUFFER: usize = 256 * 1024;
/// Receive and send buffers of a UDP listener, which carries every client's traffic.
const LISTENER_BUFFER: usize = 4 * 1024 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// Where a relay sends what its peers send: the client's flow.
#[derive(Clone)]
enum ClientSink {
    /// The UDP listener socket and the client's address.
    Udp(Arc<UdpSocket>, SocketAddr),
    /// The write queue of the client's TCP/TLS connection.
    Stream(mpsc::Sender<Bytes>),
}

impl ClientSink {
    fn send(&self, data: &[u8]) {
        match self {
            ClientSink::Udp(socket, to) => {
                let _ = socket.try_send_to(data, *to);
            }
            ClientSink::Stream(queue) => {
                let _ = queue.try_send(Bytes::copy_from_slice(data));
            }
        }
    }
}

/// What relay sockets are made from.
struct RelayEnv {
    ports: (u16, u16),
    /// (bind address, advertised address) per family.
    v4: Option<(IpAddr, IpAddr)>,
    v6: Option<(IpAddr, IpAddr)>,
    cancel: CancellationToken,
}

/// The binder handed to the state machine for one client message.
struct Binder<'a> {
    env: &'a RelayEnv,
    shared: &'a Shared,
    sink: &'a ClientSink,
}

impl Binder<'_> {
    /// Binds the first free port(s) of the range from a random start: one
    /// port, or an even port and the next one when `pair`.
    fn bind_ports(&self, family: Family, even: bool, pair: bool) -> Option<Vec<BoundRelay<Relay>>> {
        let (bind_ip, advertised) = match family {
            Family::V4 => self.env.v4?,
            Family::V6 => self.env.v6?,
        };
        let (lo, hi) = self.env.ports;
        let span = (hi - lo) as u32 + 1;
        let start = rand::random_range(0..span);
        let sockets = (0..span.min(4096)).find_map(|i| {
            let port = lo + ((start + i) % span) as u16;
            if (even || pair) && port % 2 == 1 {
                return None;
            }
            let bind = |port: u16| {
                bind_socket(SocketAddr::new(bind_ip, port), Type::DGRAM)
                    .ok()
                    .map(std::net::UdpSocket::from)
            };
            let first = bind(port)?;
            if !pair {
                return Some(vec![first]);
            }
            Some(vec![first, bind(port.checked_add(1)?)?])
        });
        let Some(sockets) = sockets else {
            warn!(ports = ?self.env.ports, "no free relay port");
            return None;
        };
        let mut bound = Vec::with_capacity(sockets.len());
        for socket in sockets {
            socket.set_nonblocking(true).ok()?;
            // Room for a burst while the relay task waits for a core (capped by net.core.rmem_max).
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RELAY_BUFFER);
            let socket = Arc::new(UdpSocket::from_std(socket).ok()?);
            let local = socket.local_addr().ok()?;
            bound.push(BoundRelay {
                handle: Relay(Arc::new(RelayInner {
                    socket,
                    cancel: self.env.cancel.child_token(),
                })),
                local,
                relayed: SocketAddr::new(advertised, local.port()),
            });
        }
        Some(bound)
    }
}

impl RelayBinder<Relay> for Binder<'_> {
    fn bind(&mut self, family: Family, even: bool) -> Option<BoundRelay<Relay>> {
        self.bind_ports(family, even, false)?.pop()
    }

    fn bind_pair(&mut self, family: Family) -> Option<(BoundRelay<Relay>, BoundRelay<Relay>)> {
        let mut pair = self.bind_ports(family, true, true)?;
        let second = pair.pop()?;
        Some((pair.pop()?, second))
    }

    fn start(&mut self, relay: &BoundRelay<Relay>, client: FiveTuple) {
        let inner = &relay.handle.0;
        tokio::spawn(
            relay_loop(
                inner.socket.clone(),
                relay.local,
                self.shared.clone(),
                self.sink.clone(),
                inner.cancel.clone(),
            )
            .instrument(
                info_span!("turn_relay", relayed = %relay.relayed, client = %client.remote),
            ),
        );
    }
}

/// Reads what peers send to one relay socket until its allocation ends.
async fn relay_loop(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    shared: Shared,
    sink: ClientSink,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; HEADROOM + 65_536 + 4];
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf[HEADROOM..HEADROOM + 65_536]) => r,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "relay receive failed");
                continue;
            }
        };
        let action = lock(&shared).handle_peer(local, peer, &mut buf, len, Instant::now());
        match action {
            PeerAction::Drop => {}
            PeerAction::Forward { range, .. } => sink.send(&buf[range]),
            PeerAction::Indication { data, .. } => sink.send(&data),
        }
    }
}

/// The state shared by every listener task.
struct Driver {
    shared: Shared,
    env: RelayEnv,
    /// Open TCP/TLS connections, in total and per source (the same
    /// accounting as SIP's streams, its own limits).
    connections: Arc<Connections>,
    /// Silence allowed on a stream whose client holds an allocation.
    idle: Duration,
    /// Silence allowed on a stream whose client holds none.
    idle_unallocated: Duration,
}

impl Driver {
    /// Feeds one client message to the state machine and carries out what
    /// it says. Whether the client holds an allocation afterwards.
    fn client_message(
        &self,
        from: FiveTuple,
        data: &[u8],
        sink: &ClientSink,
        out: &mut Vec<Output<Relay>>,
    ) -> bool {
        let allocated = {
            let mut binder = Binder {
                env: &self.env,
                shared: &self.shared,
                sink,
            };
            let mut server = lock(&self.shared);
            server.handle_client(from, data, now(), &mut binder, out);
            server.has_allocation(from)
        };
        for output in out.drain(..) {
            match output {
                Output::ToClient { data, .. } => sink.send(&data),
                Output::ToPeer { relay, peer, range } => {
                    let _ = relay.0.socket.try_send_to(&data[range], peer);
                }
                Output::Release { relay } => relay.0.cancel.cancel(),
            }
        }
        allocated
    }
}

/// The running STUN/TURN service.
pub struct TurnService {
    /// Who may allocate; mints REST credentials for `/api/ice-servers`.
    pub credentials: Arc<Credentials>,
    /// Counters.
    pub metrics: Arc<TurnMetrics>,
    /// Bound listeners as (label, address): `turn-udp`, `turn-tcp`, `turn-tls`.
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// Host for the URLs of `/api/ice-servers`, when configured.
    pub public_host: Option<String>,
}

/// The first address of this host in `family` that is not loopback (nor
/// IPv6 link-local), else loopback.
fn host_address(v6: bool) -> IpAddr {
    let found = if_addrs::get_if_addrs().ok().and_then(|addrs| {
        addrs.into_iter().map(|a| a.ip()).find(|ip| match ip {
            IpAddr::V4(v4) => !v6 && !v4.is_loopback(),
            IpAddr::V6(a) => v6 && !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
        })
    });
    found.unwrap_or(if v6 {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    })
}

fn ipv6_unavailable(addr: &SocketAddr, error: &std::io::Error) -> bool {
    addr.is_ipv6() && matches!(error.raw_os_error(), Some(97 | 99))
}

impl TurnService {
    /// Binds every configured listener and starts the service's tasks.
    pub async fn start(
        config: &TurnConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<TurnMetrics>,
        software: &str,
        cancel: CancellationToken,
    ) -> Result<TurnService, TurnError> {
        let resolved: Resolved = config.resolve().map_err(|problems| {
            TurnError::Config(
                problems
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let secret = match &config.rest_secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                let mut secret = [0u8; 32];
                rand::fill(&mut secret);
                info!("no turn.rest_secret configured: a random one is used until restart");
                secret.to_vec()
            }
        };
        let users: Vec<(String, String)> = config
            .users
            .iter()
            .map(|u| (u.username.clone(), u.password.clone()))
            .collect();
        let credentials = Arc::new(Credentials::new(
            &config.realm,
            &users,
            Some(&secret),
            config.rest_ttl_secs,
            config.nonce_lifetime_secs,
        ));

        let family = |bind: Option<IpAddr>, advertised: Option<IpAddr>, v6: bool| {
            let bind = bind?;
            if v6 && std::net::UdpSocket::bind((bind, 0)).is_err() {
                warn!(%bind, "IPv6 relays are not available on this host");
                return None;
            }
            let advertised = advertised.unwrap_or(if bind.is_unspecified() {
                host_address(v6)
            } else {
                bind
            });
            Some((bind, advertised))
        };
        let env = RelayEnv {
            ports: resolved.ports,
            v4: family(resolved.relay_ipv4, resolved.advertised_ipv4, false),
            v6: family(resolved.relay_ipv6, resolved.advertised_ipv6, true),
            cancel: cancel.child_token(),
        };
        let mut filter = PeerFilter::new(resolved.allowed.clone(), resolved.denied.clone());
        if config.allow_relay_to_relay {
            for (_, advertised) in env.v4.iter().chain(env.v6.iter()) {
                filter.allow(PeerRule::host(*advertised, resolved.ports));
            }
        }
        let options = Options {
            software: software.to_string(),
            default_lifetime: Duration::from_secs(config.default_lifetime_secs),
            max_lifetime: Duration::from_secs(config.max_lifetime_secs),
            user_quota: config.user_quota,
            total_quota: config.total_quota,
            max_permissions: config.max_permissions,
            allocate_rate: config.allocate_rate,
            allocate_burst: config.allocate_burst,
            ..Options::default()
        };
        info!(
            relay_ipv4 = ?env.v4,
            relay_ipv6 = ?env.v6,
            ports = ?resolved.ports,
            realm = %config.realm,
            "TURN relays"
        );
        let shared: Shared = Arc::new(Mutex::new(TurnServer::new(
            options,
            credentials.clone(),
            filter,
            metrics.clone(),
        )));
        let driver = Arc::new(Driver {
            shared: shared.clone(),
            env,
            connections: Connections::new(config.max_connections, config.max_connections_per_ip),
            idle: Duration::from_secs(config.max_lifetime_secs + 60),
            idle_unallocated: Duration::from_secs(config.idle_timeout_secs),
        });

        let mut listeners = Vec::new();
        for &addr in &resolved.udp {
            // IPv6-only sockets, so that 0.0.0.0:3478 and [::]:3478 can both be bound.
            let bound = bind_socket(addr, Type::DGRAM).and_then(|socket| {
                let _ = socket.set_recv_buffer_size(LISTENER_BUFFER);
                let _ = socket.set_send_buffer_size(LISTENER_BUFFER);
                UdpSocket::from_std(socket.into()).map_err(|source| SipError::Io {
                    context: format!("register {addr}"),
                    source,
                })
            });
            let socket = match bound {
                Ok(socket) => socket,
                Err(SipError::Io { source: e, .. }) if ipv6_unavailable(&addr, &e) => {
                    warn!(%addr, "IPv6 is not available on this host; TURN listener skipped");
                    continue;
                }
                Err(e) => {
                    return Err(TurnError::Bind {
                        transport: "udp",
                        addr,
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            };
            let local = socket.local_addr().unwrap_or(addr);
            listeners.push(("turn-udp", local));
            let (driver, cancel) = (driver.clone(), cancel.clone());
            tokio::spawn(
                udp_loop(Arc::new(socket), local, driver, cancel)
                    .instrument(info_span!("turn", transport = "udp", %local)),
            );
        }
        let stream_groups = [
            ("turn-tcp", Transport::Tcp, &resolved.tcp, None),
            (
                "turn-tls",
                Transport::Tls,
                &resolved.tls,
                tls.map(TlsAcceptor::from),
            ),
        ];
        for (label, transport, addrs, acceptor) in stream_groups {
            if transport == Transport::Tls && acceptor.is_none() && !addrs.is_empty() {
                return Err(TurnError::Config("TLS listeners need a certificate".into()));
            }
            for &addr in addrs {
                let listener = match crate::sip::transport::bind_tcp(addr) {
                    Ok(listener) => listener,
                    Err(crate::sip::SipError::Io { source, .. })
                        if ipv6_unavailable(&addr, &source) =>
                    {
                        warn!(%addr, "IPv6 is not available on this host; TURN listener skipped");
                        continue;
                    }
                    Err(e) => {
                        return Err(TurnError::Bind {
                            transport: transport.as_str(),
                            addr,
                            source: std::io::Error::other(e.to_string()),
                        });
                    }
                };
                let local = listener.local_addr().unwrap_or(addr);
                listeners.push((label, local));
                let (driver, cancel, acceptor) = (driver.clone(), cancel.clone(), acceptor.clone());
                tokio::spawn(
                    accept_loop(listener, local, transport, acceptor, driver, cancel)
                        .instrument(info_span!("turn", transport = transport.as_str(), %local)),
                );
            }
        }
        for (label, addr) in &listeners {
            info!(transport = *label, %addr, "listening");
        }
        spawn_housekeeping(shared, cancel);
        Ok(TurnService {
            credentials,
            metrics,
            listeners,
            public_host: config.public_host.clone(),
        })
    }
}

/// Runs `handle_timeout` when the state machine asks, at least once a second.
fn spawn_housekeeping(shared: Shared, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut out = Vec::new();
        loop {
            let second = Instant::now() + Duration::from_secs(1);
            let wake = lock(&shared)
                .poll_timeout()
                .map_or(second, |t| t.min(second));
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            lock(&shared).handle_timeout(Instant::now(), &mut out);
            for output in out.drain(..) {
                if let Output::Release { relay } = output {
                    relay.0.cancel.cancel();
                }
            }
        }
    });
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    driver: Arc<Driver>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (len, remote) = match received {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "receive failed");
                continue;
            }
        };
        let from = FiveTuple {
            transport: Transport::Udp,
            local,
            remote,
        };
        let sink = ClientSink::Udp(socket.clone(), remote);
        driver.client_message(from, &buf[..len], &sink, &mut out);
    }
}

async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    transport: Transport,
    tls: Option<TlsAcceptor>,
    driver: Arc<Driver>,
    cancel: CancellationToken,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match driver.connections.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                debug!(%remote, %refused, "TURN connection refused");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let from = FiveTuple {
            transport,
            local,
            remote,
        };
        let (driver, tls, cancel) = (driver.clone(), tls.clone(), cancel.clone());
        tokio::spawn(
            async move {
                match tls {
                    None => serve_stream(tcp, from, &driver, cancel).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => serve_stream(stream, from, &driver, cancel).await,
                            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                            Err(_) => debug!("TLS handshake timed out"),
                        }
                    }
                }
                drop(slot);
            }
            .instrument(info_span!("turn_conn", transport = transport.as_str(), client = %remote)),
        );
    }
}

/// One TCP or TLS client: cuts STUN and ChannelData frames from the stream,
/// writes responses and relayed data through a bounded queue.
async fn serve_stream<S>(io: S, from: FiveTuple, driver: &Driver, cancel: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let (queue, mut outgoing) = mpsc::channel::<Bytes>(512);
    let mut write_task = tokio::spawn(async move {
        while let Some(first) = outgoing.recv().await {
            if writer.write_all(&first).await.is_err() {
                return;
            }
            while let Ok(more) = outgoing.try_recv() {
                if writer.write_all(&more).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    let sink = ClientSink::Stream(queue);
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::new();
    let mut timeout = driver.idle_unallocated.min(Duration::from_secs(10));
    'connection: loop {
        loop {
            match stun::stream_frame_len(&buf) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(n);
                    let allocated = driver.client_message(from, &frame, &sink, &mut out);
                    timeout = if allocated {
                        driver.idle
                    } else {
                        driver.idle_unallocated
                    };
                }
                Ok(None) => break,
                Err(_) => {
                    debug!("not STUN or ChannelData: connection closed");
                    break 'connection;
                }
            }
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(timeout, reader.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                debug!(error = %e, "read failed");
                break;
            }
            Err(_) => {
                debug!("idle connection closed");
                break;
            }
        }
    }
    lock(&driver.shared).client_closed(from, &mut out);
    for output in out.drain(..) {
        if let Output::Release { relay } = output {
            relay.0.cancel.cancel();
        }
    }
    drop(sink);
    // Let queued responses go out, but do not wait on a peer that stopped
    // reading: the writer (and with it the socket) goes after a second.
    if tokio::time::timeout(Duration::from_secs(1), &mut write_task)
        .await
        .is_err()
    {
        write_task.abort();
    }
}
