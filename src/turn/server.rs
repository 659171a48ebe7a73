//! The sans-IO TURN server (RFC 8656) and STUN Binding responder (RFC 8489).
//!
//! [`TurnServer`] owns allocations, permissions, channels, quotas and rate
//! limits. It is fed what arrived — a client's bytes on a 5-tuple, or a
//! peer's datagram on a relay — with the time, and answers with [`Output`]s
//! for the driver to carry out; [`TurnServer::poll_timeout`] says when it next
//! needs [`TurnServer::handle_timeout`]. It never reads a clock or touches a
//! socket: relay sockets are obtained through the [`RelayBinder`] the caller
//! passes in, and are opaque handles (`R`) to this code.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::TurnMetrics;
use super::credentials::{Credentials, KeyRefusal};
use super::policy::{PeerFilter, canonical};
use super::stun::{self, Builder, Class, Message, attr, method};
use crate::source::RateLimiter;

/// The transport a client reached us over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (`turns:`).
    Tls,
}

impl Transport {
    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Whether ChannelData must be padded to 4 bytes (stream transports).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple: transport, our address, its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The transport.
    pub transport: Transport,
    /// Our listener address.
    pub local: SocketAddr,
    /// The client's address.
    pub remote: SocketAddr,
}

/// The time as both the monotonic clock (lifetimes) and UNIX seconds (REST
/// username expiry, nonces).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the UNIX epoch.
    pub unix: u64,
}

/// A relay socket the driver bound for a new allocation.
#[derive(Debug, Clone)]
pub struct BoundRelay<R> {
    /// The driver's handle (socket and task).
    pub handle: R,
    /// The socket's local address: the key peer datagrams arrive under.
    pub local: SocketAddr,
    /// The address given to the client in XOR-RELAYED-ADDRESS (the advertised one).
    pub relayed: SocketAddr,
}

/// The address family a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Binds relay sockets; implemented by the driver (and by fakes in tests).
pub trait RelayBinder<R> {
    /// Binds a UDP relay socket of `family` in the relay port range, on an
    /// even port when `even`. It relays nothing until [`RelayBinder::start`].
    fn bind(&mut self, family: Family, even: bool) -> Option<BoundRelay<R>>;
    /// Binds an even port and the odd port after it (EVEN-PORT with the R bit).
    fn bind_pair(&mut self, family: Family) -> Option<(BoundRelay<R>, BoundRelay<R>)>;
    /// Starts relaying what peers send to `relay` to the client of the
    /// message being handled (`client`).
    fn start(&mut self, relay: &BoundRelay<R>, client: FiveTuple);
}

/// What the driver must do.
#[derive(Debug)]
pub enum Output<R> {
    /// Send these bytes to the client of this 5-tuple.
    ToClient {
        /// The client.
        to: FiveTuple,
        /// A STUN message.
        data: Vec<u8>,
    },
    /// Send `input[range]` (the bytes passed to `handle_client`) from `relay` to `peer`.
    ToPeer {
        /// The relay socket.
        relay: R,
        /// The peer.
        peer: SocketAddr,
        /// The payload within the input.
        range: Range<usize>,
    },
    /// An allocation ended: close its relay socket.
    Release {
        /// The relay socket.
        relay: R,
    },
}

/// What to do with a datagram a peer sent to a relay.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerAction {
    /// No allocation or no permission: drop it.
    Drop,
    /// Send `buf[range]` (a ChannelData message built in place) to the client.
    Forward {
        /// The client.
        to: FiveTuple,
        /// The ChannelData message within the buffer.
        range: Range<usize>,
    },
    /// Send this Data indication to the client.
    Indication {
        /// The client.
        to: FiveTuple,
        /// The message.
        data: Vec<u8>,
    },
}

/// Bytes a relay buffer keeps in front of a peer's payload for the ChannelData header.
pub const HEADROOM: usize = 4;

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct Options {
    /// SOFTWARE attribute value.
    pub software: String,
    /// Allocation lifetime when the client asks for less or nothing.
    pub default_lifetime: Duration,
    /// The longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: Duration,
    /// Allocations one user may hold at once.
    pub user_quota: usize,
    /// Allocations in total.
    pub total_quota: usize,
    /// Peer addresses one allocation may hold permissions for at once.
    pub max_permissions: usize,
    /// Allocate requests per second per source address (0: unlimited).
    pub allocate_rate: u32,
    /// Allocate requests one source may send at once.
    pub allocate_burst: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            software: format!("Switchboard/{}", env!("CARGO_PKG_VERSION")),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            user_quota: 10,
            total_quota: 10_000,
            max_permissions: 100,
            allocate_rate: 20,
            allocate_burst: 100,
        }
    }
}

/// Comprehension-required attributes we understand in requests and indications.
const KNOWN: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::CHANGE_REQUEST,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::XOR_MAPPED_ADDRESS,
    attr::PADDING,
    attr::RESERVATION_TOKEN,
    0x0024, // PRIORITY (ICE)
    0x0025, // USE-CANDIDATE (ICE)
];

struct Permission {
    expires: Instant,
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

struct Allocation<R> {
    client: FiveTuple,
    relay: BoundRelay<R>,
    username: String,
    identity: String,
    expires: Instant,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<u16, Channel>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    /// The Allocate success response, resent for a retransmitted request.
    allocate_response: ([u8; 12], Vec<u8>),
}

impl<R> Allocation<R> {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|p| p.expires > now)
    }
}

/// A request that passed authentication.
struct Authenticated {
    key: [u8; 16],
    username: String,
    identity: String,
}

/// The TURN server state machine. See the module documentation.
pub struct TurnServer<R> {
    options: Options,
    credentials: Arc<Credentials>,
    filter: PeerFilter,
    rate: RateLimiter,
    metrics: Arc<TurnMetrics>,
    next_id: u64,
    allocations: HashMap<u64, Allocation<R>>,
    by_client: HashMap<FiveTuple, u64>,
    by_relay: HashMap<SocketAddr, u64>,
    per_identity: HashMap<String, usize>,
    /// Odd ports held for a later Allocate with RESERVATION-TOKEN (RFC 8656 §7.2).
    reservations: HashMap<[u8; 8], (BoundRelay<R>, Instant)>,
}

/// Sources the Allocate rate limit tracks at most (beyond: let through
/// untracked until a sweep makes room, see [`RateLimiter`]).
const RATE_TRACKED_SOURCES: usize = 100_000;

/// How long a reserved port waits for its Allocate.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

impl<R: Clone> TurnServer<R> {
    /// A server with these settings.
    pub fn new(
        options: Options,
        credentials: Arc<Credentials>,
        filter: PeerFilter,
        metrics: Arc<TurnMetrics>,
    ) -> Self {
        TurnServer {
            rate: RateLimiter::new(
                options.allocate_rate,
                options.allocate_burst,
                RATE_TRACKED_SOURCES,
            ),
            options,
            credentials,
            filter,
            metrics,
            next_id: 1,
            allocations: HashMap::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            per_identity: HashMap::new(),
            reservations: HashMap::new(),
        }
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Handles bytes a client sent on `from` (one datagram, or one frame cut
    /// from a stream).
    pub fn handle_client(
        &mut self,
        from: FiveTuple,
        data: &[u8],
        now: Now,
        binder: &mut dyn RelayBinder<R>,
        out: &mut Vec<Output<R>>,
    ) {
        if stun::is_channel_data(data) {
            self.channel_data_from_client(from, data, now.mono, out);
            return;
        }
        let Ok(message) = Message::parse(data) else {
            return;
        };
        if !message.fingerprint_ok() {
            return;
        }
        match message.class {
            Class::Request => {}
            Class::Indication => {
                if message.method == method::SEND {
                    self.send_indication(from, &message, data, now.mono, out);
                }
                return;
            }
            // Responses are not for a server.
            Class::Success | Class::Error => return,
        }
        let unknown = message.unknown_required(KNOWN);
        if !unknown.is_empty() {
            let mut b = self.response(&message, Class::Error);
            b.add_error(420, "Unknown Attribute");
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            b.add(attr::UNKNOWN_ATTRIBUTES, &list);
            out.push(Output::ToClient {
                to: from,
                data: b.fingerprint(),
            });
            return;
        }
        let response = match message.method {
            method::BINDING => Some(self.binding(from, &message)),
            method::ALLOCATE => self.allocate(from, &message, now, binder),
            method::REFRESH => Some(self.refresh(from, &message, now, out)),
            method::CREATE_PERMISSION => Some(self.create_permission(from, &message, now)),
            method::CHANNEL_BIND => Some(self.channel_bind(from, &message, now)),
            _ => Some(self.error(&message, 400, "Bad Request", None)),
        };
        if let Some(data) = response {
            out.push(Output::ToClient { to: from, data });
        }
    }

    fn response(&self, request: &Message<'_>, class: Class) -> Builder {
        let mut b = Builder::new(request.method, class, request.transaction, 96);
        b.add(attr::SOFTWARE, self.options.software.as_bytes());
        b
    }

    fn error(&self, request: &Message<'_>, code: u16, reason: &str, key: Option<&[u8]>) -> Vec<u8> {
        let mut b = self.response(request, Class::Error);
        b.add_error(code, reason);
        if let Some(key) = key {
            b.integrity(key);
        }
        b.fingerprint()
    }

    /// A 401 or 438 with a fresh nonce and our realm.
    fn challenge(&self, request: &Message<'_>, from: FiveTuple, code: u16, now: Now) -> Vec<u8> {
        let mut b = self.response(request, Class::Error);
        b.add_error(
            code,
            if code == 438 {
                "Stale Nonce"
            } else {
                "Unauthorized"
            },
        );
        b.add(attr::REALM, self.credentials.realm().as_bytes());
        b.add(
            attr::NONCE,
            self.credentials
                .nonce(from.remote.ip(), now.unix)
                .as_bytes(),
        );
        b.fingerprint()
    }

    /// RFC 8489 §9.2.4: checks long-term credentials; the error response to send otherwise.
    fn authenticate(
        &self,
        request: &Message<'_>,
        from: FiveTuple,
        now: Now,
    ) -> Result<Authenticated, Vec<u8>> {
        if request.get(attr::MESSAGE_INTEGRITY).is_none() {
            return Err(self.challenge(request, from, 401, now));
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            request.text(attr::USERNAME),
            request.text(attr::REALM),
            request.text(attr::NONCE),
        ) else {
            return Err(self.error(request, 400, "Bad Request", None));
        };
        if realm != self.credentials.realm() {
            self.metrics.auth_failures.inc();
            return Err(self.challenge(request, from, 401, now));
        }
        if !self
            .credentials
            .nonce_fresh(nonce, from.remote.ip(), now.unix)
        {
            return Err(self.challenge(request, from, 438, now));
        }
        let (key, identity) = match self.credentials.key(username, now.unix) {
            Ok(found) => found,
            Err(refusal) => {
                self.metrics.auth_failures.inc();
                debug!(
                    username,
                    expired = refusal == KeyRefusal::Expired,
                    "TURN credentials refused"
                );
                return Err(self.challenge(request, from, 401, now));
            }
        };
        if request.integrity_ok(&key) != Some(true) {
            self.metrics.auth_failures.inc();
            debug!(username, "TURN message integrity check failed");
            return Err(self.challenge(request, from, 401, now));
        }
        Ok(Authenticated {
            key,
            username: username.to_string(),
            identity,
        })
    }

    fn binding(&self, from: FiveTuple, request: &Message<'_>) -> Vec<u8> {
        self.metrics.binding_requests.inc();
        // RFC 5780: we have no alternate address, so a change request cannot be honoured.
        let change = request.get(attr::CHANGE_REQUEST);
        if change.is_some_and(|v| v.len() == 4 && v[3] & 0x06 != 0) {
            let mut b = self.response(request, Class::Error);
            b.add_error(420, "Unknown Attribute");
            b.add(
                attr::UNKNOWN_ATTRIBUTES,
                &attr::CHANGE_REQUEST.to_be_bytes(),
            );
            return b.fingerprint();
        }
        let mut b = self.response(request, Class::Success);
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.remote);
        b.add_address(attr::MAPPED_ADDRESS, from.remote);
        b.add_address(attr::RESPONSE_ORIGIN, from.local);
        b.fingerprint()
    }

    /// Finds the caller's allocation and checks that the same user owns it.
    /// Whether the client on this 5-tuple holds an allocation.
    pub fn has_allocation(&self, from: FiveTuple) -> bool {
        self.by_client.contains_key(&from)
    }

    fn own_allocation(
        &self,
        from: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
    ) -> Result<u64, Vec<u8>> {
        let Some(&id) = self.by_client.get(&from) else {
            return Err(self.error(request, 437, "Allocation Mismatch", Some(&auth.key)));
        };
        match self.allocations.get(&id) {
            Some(a) if a.username == auth.username => Ok(id),
            _ => Err(self.error(request, 441, "Wrong Credentials", Some(&auth.key))),
        }
    }

    fn allocate(
        &mut self,
        from: FiveTuple,
        request: &Message<'_>,
        now: Now,
        binder: &mut dyn RelayBinder<R>,
    ) -> Option<Vec<u8>> {
        // A retransmission of the request that created the allocation gets the same answer.
        let existing = self
            .by_client
            .get(&from)
            .and_then(|id| self.allocations.get(id));
        if let Some(a) = existing.filter(|a| a.allocate_response.0 == request.transaction) {
            return Some(a.allocate_response.1.clone());
        }
        if !self.rate.allow(canonical(from.remote.ip()), now.mono) {
            self.metrics.rate_limited.inc();
            debug!(client = %from.remote, "TURN Allocate rate limit reached");
            return Some(self.error(request, 486, "Allocation Quota Reached", None));
        }
        let auth = match self.authenticate(request, from, now) {
            Ok(auth) => auth,
            Err(response) => return Some(response),
        };
        let key = auth.key;
        let fail = |this: &Self, code: u16, reason: &str| {
            Some(this.error(request, code, reason, Some(&key)))
        };
        if self.by_client.contains_key(&from) {
            return fail(self, 437, "Allocation Mismatch");
        }
        match request.get(attr::REQUESTED_TRANSPORT) {
            None => return fail(self, 400, "Bad Request"),
            Some(v) if v.first() != Some(&17) => {
                return fail(self, 442, "Unsupported Transport Protocol");
            }
            Some(_) => {}
        }
        let family = match request.get(attr::REQUESTED_ADDRESS_FAMILY) {
            // RFC 8656 §7.2: IPv4 unless asked otherwise, whatever the client's transport.
            None => Family::V4,
            Some([1, ..]) => Family::V4,
            Some([2, ..]) => Family::V6,
            Some(_) => return fail(self, 440, "Address Family not Supported"),
        };
        let token = match request.get(attr::RESERVATION_TOKEN) {
            None => None,
            Some(v) if v.len() == 8 && request.get(attr::EVEN_PORT).is_none() => {
                let mut t = [0u8; 8];
                t.copy_from_slice(v);
                Some(t)
            }
            Some(_) => return fail(self, 400, "Bad Request"),
        };
        // EVEN-PORT: (even port wanted, reserve the next one too).
        let (even, reserve) = match request.get(attr::EVEN_PORT) {
            None => (false, false),
            Some([flags, ..]) => (true, flags & 0x80 != 0),
            Some(_) => return fail(self, 400, "Bad Request"),
        };
        let used = self.per_identity.get(&auth.identity).copied().unwrap_or(0);
        if used >= self.options.user_quota {
            self.metrics.quota_refusals.inc();
            info!(user = %auth.identity, used, "TURN allocation refused: user quota");
            return fail(self, 486, "Allocation Quota Reached");
        }
        if self.allocations.len() >= self.options.total_quota {
            self.metrics.quota_refusals.inc();
            info!(
                total = self.allocations.len(),
                "TURN allocation refused: total quota"
            );
            return fail(self, 508, "Insufficient Capacity");
        }
        let mut reserved_token = None;
        let relay = if let Some(token) = token {
            match self.reservations.remove(&token) {
                Some((relay, _)) if relay.relayed.is_ipv4() == (family == Family::V4) => relay,
                _ => return fail(self, 508, "Insufficient Capacity"),
            }
        } else if reserve {
            let Some((relay, next)) = binder.bind_pair(family) else {
                return fail(self, 508, "Insufficient Capacity");
            };
            let mut token = [0u8; 8];
            rand::fill(&mut token);
            self.reservations
                .insert(token, (next, now.mono + RESERVATION_LIFETIME));
            reserved_token = Some(token);
            relay
        } else {
            match binder.bind(family, even) {
                Some(relay) => relay,
                None => return fail(self, 508, "Insufficient Capacity"),
            }
        };
        binder.start(&relay, from);
        let lifetime = match request.u32(attr::LIFETIME) {
            Some(asked) => Duration::from_secs(asked as u64)
                .min(self.options.max_lifetime)
                .max(self.options.default_lifetime),
            None => self.options.default_lifetime,
        };
        let mut b = self.response(request, Class::Success);
        b.add_xor_address(attr::XOR_RELAYED_ADDRESS, relay.relayed);
        b.add_u32(attr::LIFETIME, lifetime.as_secs() as u32);
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.remote);
        if let Some(token) = reserved_token {
            b.add(attr::RESERVATION_TOKEN, &token);
        }
        b.integrity(&key);
        let response = b.fingerprint();
        let id = self.next_id;
        self.next_id += 1;
        info!(
            client = %from.remote,
            transport = from.transport.as_str(),
            relayed = %relay.relayed,
            user = %auth.identity,
            lifetime = lifetime.as_secs(),
            "TURN allocation created"
        );
        self.by_client.insert(from, id);
        self.by_relay.insert(relay.local, id);
        *self.per_identity.entry(auth.identity.clone()).or_default() += 1;
        self.allocations.insert(
            id,
            Allocation {
                client: from,
                relay,
                username: auth.username,
                identity: auth.identity,
                expires: now.mono + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of_peer: HashMap::new(),
                allocate_response: (request.transaction, response.clone()),
            },
        );
        self.metrics.allocations.inc();
        self.metrics.allocations_total.inc();
        Some(response)
    }

    fn remove(&mut self, id: u64, why: &str, out: &mut Vec<Output<R>>) {
        let Some(a) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&a.client);
        self.by_relay.remove(&a.relay.local);
        if let Some(n) = self.per_identity.get_mut(&a.identity) {
            *n -= 1;
            if *n == 0 {
                self.per_identity.remove(&a.identity);
            }
        }
        self.metrics.allocations.dec();
        info!(client = %a.client.remote, relayed = %a.relay.relayed, why, "TURN allocation ended");
        out.push(Output::Release {
            relay: a.relay.handle,
        });
    }

    fn refresh(
        &mut self,
        from: FiveTuple,
        request: &Message<'_>,
        now: Now,
        out: &mut Vec<Output<R>>,
    ) -> Vec<u8> {
        let auth = match self.authenticate(request, from, now) {
            Ok(auth) => auth,
            Err(response) => return response,
        };
        let id = match self.own_allocation(from, request, &auth) {
            Ok(id) => id,
            Err(response) => return response,
        };
        let lifetime = match request.u32(attr::LIFETIME) {
            Some(0) => Duration::ZERO,
            Some(asked) => Duration::from_secs(asked as u64).min(self.options.max_lifetime),
            None => self.options.default_lifetime,
        };
        if lifetime.is_zero() {
            self.remove(id, "refreshed with lifetime 0", out);
        } else if let Some(a) = self.allocations.get_mut(&id) {
            a.expires = now.mono + lifetime;
        }
        let mut b = self.response(request, Class::Success);
        b.add_u32(attr::LIFETIME, lifetime.as_secs() as u32);
        b.integrity(&auth.key);
        b.fingerprint()
    }

    /// Checks one XOR-PEER-ADDRESS against the relay's family and the filter.
    fn check_peer(&self, id: u64, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
        let relayed = self.allocations.get(&id).map(|a| a.relay.relayed);
        if relayed.is_some_and(|r| r.is_ipv4() != peer.is_ipv4()) {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if !self.filter.permits(peer) {
            self.metrics.refused_peers.inc();
            info!(%peer, "TURN peer address refused by policy");
            return Err((403, "Forbidden"));
        }
        Ok(())
    }

    fn create_permission(&mut self, from: FiveTuple, request: &Message<'_>, now: Now) -> Vec<u8> {
        let auth = match self.authenticate(request, from, now) {
            Ok(auth) => auth,
            Err(response) => return response,
        };
        let id = match self.own_allocation(from, request, &auth) {
            Ok(id) => id,
            Err(response) => return response,
        };
        let mut peers = Vec::new();
        for value in request.get_all(attr::XOR_PEER_ADDRESS) {
            let Some(peer) = stun::decode_xor_address(value, &request.transaction) else {
                return self.error(request, 400, "Bad Request", Some(&auth.key));
            };
            if let Err((code, reason)) = self.check_peer(id, peer) {
                return self.error(request, code, reason, Some(&auth.key));
            }
            peers.push(peer);
        }
        if peers.is_empty() {
            return self.error(request, 400, "Bad Request", Some(&auth.key));
        }
        if !self.room_for_permissions(id, peers.iter().map(SocketAddr::ip)) {
            return self.error(request, 508, "Insufficient Capacity", Some(&auth.key));
        }
        let expires = now.mono + self.options.permission_lifetime;
        if let Some(a) = self.allocations.get_mut(&id) {
            for peer in peers {
                a.permissions.insert(peer.ip(), Permission { expires });
            }
        }
        let mut b = self.response(request, Class::Success);
        b.integrity(&auth.key);
        b.fingerprint()
    }

    /// Whether allocation `id` may hold permissions for `ips` too
    /// ([`Options::max_permissions`]; renewing one takes no room).
    fn room_for_permissions(&self, id: u64, ips: impl Iterator<Item = IpAddr>) -> bool {
        let Some(a) = self.allocations.get(&id) else {
            return true;
        };
        let mut new: Vec<IpAddr> = ips.filter(|ip| !a.permissions.contains_key(ip)).collect();
        new.sort_unstable();
        new.dedup();
        let fits = a.permissions.len() + new.len() <= self.options.max_permissions;
        if !fits {
            self.metrics.quota_refusals.inc();
            info!(
                held = a.permissions.len(),
                asked = new.len(),
                "TURN permissions refused: per-allocation limit"
            );
        }
        fits
    }

    fn channel_bind(&mut self, from: FiveTuple, request: &Message<'_>, now: Now) -> Vec<u8> {
        let auth = match self.authenticate(request, from, now) {
            Ok(auth) => auth,
            Err(response) => return response,
        };
        let id = match self.own_allocation(from, request, &auth) {
            Ok(id) => id,
            Err(response) => return response,
        };
        let bad = |this: &Self, why: &str| {
            debug!(client = %from.remote, why, "ChannelBind refused");
            this.error(request, 400, "Bad Request", Some(&auth.key))
        };
        let number = match request.get(attr::CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return bad(self, "no CHANNEL-NUMBER"),
        };
        // RFC 8656 narrowed the range to 0x4000-0x4FFF; RFC 5766 clients
        // (coturn's among them) still use up to 0x7FFF.
        if !(0x4000..=0x7FFF).contains(&number) {
            return bad(self, "channel number out of range");
        }
        let Some(peer) = request.xor_address(attr::XOR_PEER_ADDRESS) else {
            return bad(self, "no XOR-PEER-ADDRESS");
        };
        if let Err((code, reason)) = self.check_peer(id, peer) {
            return self.error(request, code, reason, Some(&auth.key));
        }
        let Some(a) = self.allocations.get(&id) else {
            return bad(self, "no allocation");
        };
        let channel_taken = a.channels.get(&number).is_some_and(|c| c.peer != peer);
        let peer_taken = a.channel_of_peer.get(&peer).is_some_and(|n| *n != number);
        if channel_taken || peer_taken {
            return bad(self, "channel or peer already bound otherwise");
        }
        if !self.room_for_permissions(id, std::iter::once(peer.ip())) {
            return self.error(request, 508, "Insufficient Capacity", Some(&auth.key));
        }
        let Some(a) = self.allocations.get_mut(&id) else {
            return bad(self, "no allocation");
        };
        a.channels.insert(
            number,
            Channel {
                peer,
                expires: now.mono + self.options.channel_lifetime,
            },
        );
        a.channel_of_peer.insert(peer, number);
        a.permissions.insert(
            peer.ip(),
            Permission {
                expires: now.mono + self.options.permission_lifetime,
            },
        );
        let mut b = self.response(request, Class::Success);
        b.integrity(&auth.key);
        b.fingerprint()
    }

    fn send_indication(
        &mut self,
        from: FiveTuple,
        message: &Message<'_>,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Output<R>>,
    ) {
        let Some(a) = self
            .by_client
            .get(&from)
            .and_then(|id| self.allocations.get(id))
        else {
            return;
        };
        let (Some(peer), Some(payload)) = (
            message.xor_address(attr::XOR_PEER_ADDRESS),
            message.get(attr::DATA),
        ) else {
            return;
        };
        if !a.permitted(peer.ip(), now) {
            self.metrics.dropped_no_permission.inc();
            return;
        }
        let start = payload.as_ptr() as usize - data.as_ptr() as usize;
        self.metrics.relayed_to_peers.inc();
        out.push(Output::ToPeer {
            relay: a.relay.handle.clone(),
            peer,
            range: start..start + payload.len(),
        });
    }

    fn channel_data_from_client(
        &mut self,
        from: FiveTuple,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Output<R>>,
    ) {
        let Some((number, payload)) = stun::parse_channel_data(data) else {
            return;
        };
        let Some(a) = self
            .by_client
            .get(&from)
            .and_then(|id| self.allocations.get(id))
        else {
            return;
        };
        let Some(channel) = a.channels.get(&number).filter(|c| c.expires > now) else {
            return;
        };
        if !a.permitted(channel.peer.ip(), now) {
            self.metrics.dropped_no_permission.inc();
            return;
        }
        self.metrics.relayed_to_peers.inc();
        out.push(Output::ToPeer {
            relay: a.relay.handle.clone(),
            peer: channel.peer,
            range: 4..4 + payload.len(),
        });
    }

    /// Handles a datagram of `len` bytes that `peer` sent to the relay bound
    /// at `relay`, stored at `buf[HEADROOM..HEADROOM + len]`. `buf` must have
    /// 3 spare bytes after it (ChannelData padding on streams).
    pub fn handle_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> PeerAction {
        let Some(a) = self
            .by_relay
            .get(&relay)
            .and_then(|id| self.allocations.get(id))
        else {
            return PeerAction::Drop;
        };
        if !a.permitted(peer.ip(), now) {
            self.metrics.dropped_no_permission.inc();
            return PeerAction::Drop;
        }
        if buf.len() < HEADROOM + len {
            return PeerAction::Drop;
        }
        self.metrics.relayed_to_clients.inc();
        let channel = a
            .channel_of_peer
            .get(&peer)
            .filter(|n| a.channels.get(n).is_some_and(|c| c.expires > now));
        if let Some(&number) = channel {
            buf[0..2].copy_from_slice(&number.to_be_bytes());
            buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let mut end = HEADROOM + len;
            if a.client.transport.is_stream() {
                let padded = (end + 3) & !3;
                if padded > buf.len() {
                    return PeerAction::Drop;
                }
                buf[end..padded].fill(0);
                end = padded;
            }
            return PeerAction::Forward {
                to: a.client,
                range: 0..end,
            };
        }
        let mut transaction = [0u8; 12];
        rand::fill(&mut transaction);
        let mut b = Builder::new(method::DATA, Class::Indication, transaction, len + 32);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.add(attr::DATA, &buf[HEADROOM..HEADROOM + len]);
        PeerAction::Indication {
            to: a.client,
            data: b.finish(),
        }
    }

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, client: FiveTuple, out: &mut Vec<Output<R>>) {
        if let Some(id) = self.by_client.get(&client).copied() {
            self.remove(id, "connection closed", out);
        }
    }

    /// When `handle_timeout` must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let reservations = self.reservations.values().map(|(_, t)| *t);
        self.allocations
            .values()
            .map(|a| a.expires)
            .chain(reservations)
            .min()
    }

    /// Ends expired allocations and forgets expired permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Output<R>>) {
        let expired: Vec<u64> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove(id, "lifetime expired", out);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, p| p.expires > now);
            let channels = &mut a.channels;
            channels.retain(|_, c| c.expires > now);
            a.channel_of_peer.retain(|_, n| channels.contains_key(n));
        }
        self.rate.purge(now);
        let expired: Vec<[u8; 8]> = self
            .reservations
            .iter()
            .filter(|(_, (_, expires))| *expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some((relay, _)) = self.reservations.remove(&token) {
                out.push(Output::Release {
                    relay: relay.handle,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
