//! SIP: transports, message checks and the transaction layer.
//!
//! This module owns everything between the socket and a server transaction:
//! listeners for UDP, TCP and TLS, WebSocket flows handed over by `http`,
//! framing and limits ([`framer`], [`limits`]), the pre-parse checks that answer
//! malformed messages ([`inspect`]), the table of open flows ([`connections`]),
//! and the RFC 3261 transaction layer of `rsipstack`, which stays behind this
//! module: the rest of the crate uses the names re-exported here.

pub mod acks;
pub mod advertise;
pub mod connections;
pub mod framer;
pub mod inspect;
pub mod limits;
pub mod nist;
pub mod outbound;
pub mod response;
pub mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rsipstack::transaction::endpoint::{EndpointInner, EndpointOption, MessageInspector};

use rsipstack::transport::TransportLayer as StackTransportLayer;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::metrics::Metrics;
pub use connections::{ConnectionId, Connections, Flow};

/// `bytes` random bytes as lowercase hex: tags, branches, Call-IDs, nonces.
pub fn random_hex(bytes: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let b: u8 = rand::random();
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}
pub use limits::Limits;

/// Typed access to headers.
pub use rsipstack::sip::prelude::{ToTypedHeader, UntypedHeader};
/// The SIP message types of the stack we build on, under our own names.
pub use rsipstack::sip::{
    Header, HeadersExt, Method, Request, Response, SipMessage, StatusCode, Transport,
};
/// More message types: header lists, URI parameters, URIs, the SIP version.
pub use rsipstack::sip::{Headers, Param, Uri, Version};
/// New server transactions, as the transaction layer hands them over.
pub use rsipstack::transaction::TransactionReceiver;
/// The transaction layer (shared by all transactions).
pub use rsipstack::transaction::endpoint::EndpointInner as TransactionLayer;
/// Transaction identity.
pub use rsipstack::transaction::key::{TransactionKey, TransactionRole};
/// A server or client transaction of the RFC 3261 transaction layer.
pub use rsipstack::transaction::transaction::Transaction;
/// Events a transaction's owner can send it.
pub use rsipstack::transaction::transaction::{TransactionEvent, TransactionEventSender};
/// A transport address (transport + host + port).
pub use rsipstack::transport::SipAddr;
/// A transport handle the transaction layer sends through.
pub use rsipstack::transport::SipConnection;

/// Methods every listener answers in `Allow` (OPTIONS, 405): PRACK (the
/// B2BUA acknowledges reliable provisionals, RFC 3262; the proxy relays
/// it), UPDATE, INFO and REFER in dialogs, MESSAGE and REGISTER out of them.
/// A peer decides by it whether to send UPDATE at all (RFC 3311 §5.1).
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, MESSAGE, REGISTER";
/// Body types we accept (`Accept`).
pub const ACCEPT: &str = "application/sdp";
/// Option tags we support (`Supported`); grows with the features that need them.
/// `100rel`: calls the B2BUA terminates send reliable provisionals (RFC
/// 3262) to callers that support them; the proxy passes them through.
pub const SUPPORTED: &str = "100rel";

/// Option tags a call the B2BUA answers may require (RFC 3261 §8.2.2.3):
/// reliable provisionals, and session timers (our 2xx names the refresher;
/// a caller that stops refreshing is hung up, and we refresh with UPDATE
/// when it is our turn). Anything else (`precondition`, `replaces` on a
/// new call, ...) is refused with 420 so that the peer can retry without.
pub const B2BUA_REQUIRE_OK: &[&str] = &["100rel", "timer"];

/// The option tags of `request`'s Require headers that are not in
/// `supported` (case-insensitive), in order, for a 420's `Unsupported`.
pub fn unsupported_required(request: &rsipstack::sip::Request, supported: &[&str]) -> Vec<String> {
    use rsipstack::sip::Header;
    let mut out: Vec<String> = Vec::new();
    for header in request.headers.iter() {
        let value = match header {
            Header::Require(r) => r.value().to_string(),
            Header::Other(name, value) if name.eq_ignore_ascii_case("require") => value.clone(),
            _ => continue,
        };
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !supported.iter().any(|s| s.eq_ignore_ascii_case(tag))
                && !out.iter().any(|o| o.eq_ignore_ascii_case(tag))
                && out.len() < 16
            {
                out.push(tag.chars().filter(|c| !c.is_control()).take(64).collect());
            }
        }
    }
    out
}

/// The SIP transports Switchboard speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// SIP over UDP.
    Udp = 0,
    /// SIP over TCP.
    Tcp = 1,
    /// SIP over TLS.
    Tls = 2,
    /// SIP over WebSocket (RFC 7118), plain.
    Ws = 3,
    /// SIP over secure WebSocket (RFC 7118).
    Wss = 4,
}

impl TransportKind {
    /// Every transport, in index order.
    pub const ALL: [TransportKind; 5] = [Self::Udp, Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    /// Lower-case name, as in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// The URI parameter that selects this transport (`;transport=tcp`;
    /// nothing for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Self::Udp => "",
            Self::Tcp => ";transport=tcp",
            Self::Tls => ";transport=tls",
            Self::Ws => ";transport=ws",
            Self::Wss => ";transport=wss",
        }
    }

    /// The transport token of a Via header (`SIP/2.0/<this>`).
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// The stack's transport value (used in Via and SipAddr).
    pub fn sip_transport(self) -> Transport {
        match self {
            Self::Udp => Transport::Udp,
            Self::Tcp => Transport::Tcp,
            Self::Tls => Transport::Tls,
            Self::Ws => Transport::Ws,
            Self::Wss => Transport::Wss,
        }
    }

    /// How messages are delimited on this transport.
    pub fn framing(self) -> inspect::Framing {
        match self {
            Self::Udp => inspect::Framing::Datagram,
            Self::Tcp | Self::Tls => inspect::Framing::Stream,
            Self::Ws | Self::Wss => inspect::Framing::WebSocket,
        }
    }
}

/// Where a request came from: transport, peer address and, for stream
/// transports, the connection (flow) it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Transport.
    pub kind: TransportKind,
    /// Peer address (after `received`/`rport`).
    pub remote: SocketAddr,
    /// The stream connection, when there is one.
    pub flow: Option<ConnectionId>,
}

/// Errors of the SIP layer.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// A socket could not be bound or used.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Bounds how often a flood of bad input can write to the log: at most
/// `per_second` lines a second, then a count of what was suppressed.
pub struct LogLimiter {
    per_second: u64,
    state: AtomicU64,
}

impl LogLimiter {
    /// A limiter allowing `per_second` lines a second.
    pub const fn new(per_second: u64) -> Self {
        LogLimiter {
            per_second,
            state: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now.
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // state = second << 20 | count within that second
        let prev = self.state.load(Ordering::Relaxed);
        let (second, count) = (prev >> 20, prev & 0xF_FFFF);
        if second != now & 0xFFF_FFFF_FFFF {
            self.state
                .store((now & 0xFFF_FFFF_FFFF) << 20 | 1, Ordering::Relaxed);
            return true;
        }
        self.state.store(prev + 1, Ordering::Relaxed);
        count < self.per_second
    }
}

static REJECT_LOG: LogLimiter = LogLimiter::new(20);
static RATE_LOG: LogLimiter = LogLimiter::new(5);

/// Rewrites the stack's `User-Agent` into `Server` on responses (RFC 3261 §20.35).
struct ServerHeader;

impl MessageInspector for ServerHeader {
    fn before_send(&self, message: SipMessage, _destination: Option<&SipAddr>) -> SipMessage {
        match message {
            SipMessage::Response(mut response) => {
                for header in response.headers.iter_mut() {
                    if let Header::UserAgent(agent) = header {
                        *header = Header::Server(agent.value().into());
                    }
                }
                SipMessage::Response(response)
            }
            request => request,
        }
    }

    fn after_received(&self, message: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        message
    }
}

/// A transaction user that answers some requests at once, without waiting:
/// the UDP fast path hands it every request it [`accepts`](Self::accepts)
/// and sends the answer straight from the socket reader. Sans-IO.
pub trait FastAnswer: Send + Sync {
    /// Whether this request is answered here (out-of-dialog, non-INVITE, and
    /// decided without waiting for anything).
    fn accepts(&self, request: &Request) -> bool;
    /// The final status and extra headers for `request` from `source`.
    fn answer(&self, request: &Request, source: Source) -> (StatusCode, Vec<Header>);
}

/// Sources the request rate limit (`limits.source_rate`) leaves alone
/// besides `limits.rate_exempt`: the trunks, which the transaction user
/// knows. Asked for every request before it spends a token, so it must be
/// cheap and take no lock.
pub trait RateExempt: Send + Sync {
    /// Whether requests from `ip` are never rate limited.
    fn exempt(&self, ip: std::net::IpAddr) -> bool;
}

/// Buffers one UDP reader reuses for every datagram.
#[derive(Default)]
pub struct DatagramScratch {
    /// The reply to send back to the datagram's source, when there is one.
    pub reply: Vec<u8>,
    key: Vec<u8>,
}

/// The SIP core shared by all transports: checks messages, answers what the
/// fast path takes, and feeds the transaction layer the rest.
pub struct SipCore {
    endpoint: Arc<EndpointInner>,
    limits: Limits,
    metrics: Arc<Metrics>,
    connections: Arc<Connections>,
    server_name: String,
    cancel: CancellationToken,
    fast: OnceLock<Arc<dyn FastAnswer>>,
    records: nist::CompletedTransactions,
    advertise: OnceLock<advertise::Advertise>,
    acks: Arc<acks::Acks<outbound::NextHop>>,
    /// Requests per source (`None`: `limits.source_rate` is 0).
    rate: Option<crate::source::SharedRateLimiter>,
    rate_exempt: OnceLock<Arc<dyn RateExempt>>,
}

impl SipCore {
    /// Builds the transaction layer. Call [`SipCore::run`] to start its timers and
    /// take the incoming server transactions.
    pub fn new(
        limits: Limits,
        metrics: Arc<Metrics>,
        server_name: String,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let transport_layer = StackTransportLayer::new(cancel.child_token());
        let endpoint = rsipstack::EndpointBuilder::new()
            .with_user_agent(&server_name)
            .with_transport_layer(transport_layer)
            .with_cancel_token(cancel.child_token())
            // The ACK of a 2xx is the dialog's (RFC 6026 §7.2): sent by
            // its owner where the dialog says, see `send_ack`.
            .with_option(EndpointOption {
                auto_ack_2xx: false,
                ..EndpointOption::default()
            })
            .with_inspector(Box::new(ServerHeader))
            .build();
        let connections = Connections::new(limits.max_connections, limits.max_connections_per_ip);
        let records =
            nist::CompletedTransactions::new(nist::TIMER_J_UDP, limits.udp_transaction_memory);
        // Addresses are compared in canonical form: so are the networks.
        let mut limits = limits;
        limits.rate_exempt = limits
            .rate_exempt
            .iter()
            .map(|net| crate::source::canonical_net(*net))
            .collect();
        let rate = (limits.source_rate > 0).then(|| {
            crate::source::SharedRateLimiter::new(
                limits.source_rate,
                limits.source_burst,
                limits.max_rate_sources,
            )
        });
        Arc::new(SipCore {
            endpoint: endpoint.inner.clone(),
            rate,
            rate_exempt: OnceLock::new(),
            fast: OnceLock::new(),
            records,
            advertise: OnceLock::new(),
            acks: acks::Acks::new(),
            limits,
            metrics,
            connections,
            server_name,
            cancel,
        })
    }

    /// Installs who is exempt from the request rate limit besides
    /// `limits.rate_exempt` (once; later calls are ignored).
    pub fn set_rate_exempt(&self, exempt: Arc<dyn RateExempt>) {
        let _ = self.rate_exempt.set(exempt);
    }

    /// Whether the raw message `raw` from `ip` over `kind` is refused by
    /// `limits.source_rate`. Only requests count: a response answers a
    /// request of ours. Exempt sources spend nothing. An ACK spends a token
    /// but always passes: it ends work that exists already (refusing it
    /// makes us retransmit the 2xx), has no answer, and without a
    /// transaction to match costs next to nothing. So does a CANCEL over a
    /// stream, where a refused one might never come again and leave a call
    /// ringing; over UDP its sender retransmits it, and letting every
    /// CANCEL from a forged source through would reflect our 481s.
    fn over_rate(&self, raw: &[u8], kind: TransportKind, ip: std::net::IpAddr) -> bool {
        let Some(rate) = &self.rate else {
            return false;
        };
        if raw.starts_with(b"SIP/") || raw.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return false;
        }
        let ip = ip.to_canonical();
        if self.limits.rate_exempt.iter().any(|net| net.contains(&ip))
            || self.rate_exempt.get().is_some_and(|e| e.exempt(ip))
        {
            return false;
        }
        let allowed = rate.allow(ip, Instant::now());
        !allowed
            && !raw.starts_with(b"ACK ")
            && (kind == TransportKind::Udp || !raw.starts_with(b"CANCEL "))
    }

    /// Starts the transaction layer's timers and returns the stream of new
    /// server transactions (retransmissions already absorbed).
    pub fn run(self: &Arc<Self>) -> Option<rsipstack::transaction::TransactionReceiver> {
        let incoming = rsipstack::transaction::endpoint::Endpoint {
            inner: self.endpoint.clone(),
        }
        .incoming_transactions()
        .ok()?;
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = endpoint.serve().await {
                warn!(error = %e, "transaction layer stopped");
            }
        });
        Some(incoming)
    }

    /// The transaction layer (for client transactions we originate).
    pub fn transaction_layer(&self) -> &Arc<TransactionLayer> {
        &self.endpoint
    }

    /// Installs the transaction user of the UDP fast path (once; later calls
    /// are ignored). Without one, every request goes to the transaction layer.
    pub fn set_fast_answer(&self, answerer: Arc<dyn FastAnswer>) {
        let _ = self.fast.set(answerer);
    }

    /// The transactions the UDP fast path answered and remembers (Timer J).
    pub fn fast_transactions(&self) -> &nist::CompletedTransactions {
        &self.records
    }

    /// Sets the address we advertise behind NAT (once, at start; later
    /// calls are ignored).
    pub fn set_advertise(&self, advertise: advertise::Advertise) {
        let _ = self.advertise.set(advertise);
    }

    /// Our address `local` as written into headers (Via, Contact,
    /// Record-Route) for a peer at `remote` ([`advertise::Advertise`]).
    pub fn advertised(&self, local: SocketAddr, remote: std::net::IpAddr) -> SocketAddr {
        match self.advertise.get() {
            Some(a) => a.address(local, remote),
            None => local,
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The process counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The table of open stream connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Our name in `Server`/`User-Agent` headers.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Cancelled when the process shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The final response already sent for this transaction key, when the
    /// transaction layer remembers one. A retransmission can slip past the
    /// layer's own absorption while the first transaction is being retired
    /// (rsipstack 0.7.14 removes it from the live table before it records the
    /// response); the dispatcher replays the response instead of processing
    /// the request twice.
    pub fn completed_response(&self, key: &TransactionKey) -> Option<Response> {
        match self.endpoint.finished_transactions.get(key) {
            Some(Some(SipMessage::Response(response))) => Some(response),
            _ => None,
        }
    }

    /// Where the request of a server transaction came from.
    pub fn source(&self, request: &Request, connection: Option<&SipConnection>) -> Option<Source> {
        match connection? {
            SipConnection::Channel(channel) => {
                let addr = channel.get_addr();
                let kind = match addr.r#type {
                    Some(Transport::Tcp) => TransportKind::Tcp,
                    Some(Transport::Tls) => TransportKind::Tls,
                    Some(Transport::Ws) => TransportKind::Ws,
                    Some(Transport::Wss) => TransportKind::Wss,
                    _ => return None,
                };
                let remote = addr.get_socketaddr().ok()?;
                let flow = self.connections.flow_by_peer(kind, remote).map(|f| f.id);
                Some(Source { kind, remote, flow })
            }
            SipConnection::Udp(_) => {
                let via = request.via_header().ok()?.typed().ok()?;
                let mut ip = match &via.uri.host_with_port.host {
                    rsipstack::sip::Host::IpAddr(ip) => Some(*ip),
                    _ => None,
                };
                let mut port = via
                    .uri
                    .host_with_port
                    .port
                    .as_ref()
                    .map(|p| p.value())
                    .unwrap_or(5060);
                for param in &via.params {
                    match param {
                        rsipstack::sip::Param::Received(received) => {
                            if let Ok(parsed) = received.value().parse() {
                                ip = Some(parsed);
                            }
                        }
                        rsipstack::sip::Param::Rport(Some(rport)) => port = *rport,
                        _ => {}
                    }
                }
                Some(Source {
                    kind: TransportKind::Udp,
                    remote: SocketAddr::new(ip?, port),
                    flow: None,
                })
            }
            _ => None,
        }
    }

    /// Inspects a raw message and notes where it came from (`received`,
    /// `rport` on the top Via). `Err` carries the bytes of a stateless error
    /// response to send back when the message was refused and can be answered.
    fn accept(
        &self,
        raw: &[u8],
        kind: TransportKind,
        remote: SocketAddr,
    ) -> Result<SipMessage, Option<Vec<u8>>> {
        let counters = self.metrics.transport(kind);
        if self.over_rate(raw, kind, remote.ip()) {
            counters.rate_limited.inc();
            // A UDP source address may be forged: nothing is sent to it.
            let response = match kind {
                TransportKind::Udp => None,
                _ => inspect::stateless_response(
                    raw,
                    &inspect::Rejection::rate_limited(),
                    &self.server_name,
                    Some(remote),
                ),
            };
            if response.is_some() {
                counters.error_responses.inc();
            }
            if RATE_LOG.allow() {
                warn!(%remote, transport = kind.as_str(), answered = response.is_some(), "source over limits.source_rate: request refused");
            }
            return Err(response);
        }
        let message = match inspect::inspect(raw, kind.framing(), &self.limits) {
            Ok(message) => message,
            Err(rejection) => {
                counters.rejected.inc();
                let response =
                    inspect::stateless_response(raw, &rejection, &self.server_name, Some(remote));
                if response.is_some() {
                    counters.error_responses.inc();
                    debug!(%remote, transport = kind.as_str(), status = rejection.status, reason = %rejection.reason, "refused SIP message");
                } else {
                    counters.dropped.inc();
                    if REJECT_LOG.allow() {
                        warn!(%remote, transport = kind.as_str(), reason = %rejection.reason, len = raw.len(), "dropped unanswerable SIP message");
                    }
                }
                return Err(response);
            }
        };
        let message = match SipConnection::update_msg_received(
            message,
            remote,
            kind.sip_transport(),
        ) {
            Ok(message) => message,
            Err(e) => {
                counters.rejected.inc();
                counters.dropped.inc();
                if REJECT_LOG.allow() {
                    warn!(%remote, transport = kind.as_str(), error = %e, "dropped SIP message with unusable Via");
                }
                return Err(None);
            }
        };
        counters.received.inc();
        Ok(message)
    }

    /// The first 2xx to an INVITE of ours reached its owner: 2xx of other
    /// dialogs go to `forks` from now on ([`acks::Acks::expect`]). Hold the
    /// guard while the dialog lives: it keeps the ACKs sent with
    /// [`SipCore::send_ack`] for retransmitted 2xx.
    pub fn expect_ack(
        &self,
        answer: &Response,
        forks: acks::ForkHandler,
    ) -> Option<acks::AckGuard<outbound::NextHop>> {
        self.acks.expect(answer, forks)
    }

    /// Sends the ACK of a 2xx to an INVITE of ours on `hop` (the dialog's
    /// remote target and route set are the caller's, RFC 3261 §13.2.2.4)
    /// and keeps it for the 2xx's retransmissions ([`acks`]). Returns a
    /// guard when no [`SipCore::expect_ack`] entry held the INVITE yet.
    pub async fn send_ack(
        &self,
        ack: Request,
        hop: &outbound::NextHop,
    ) -> Option<acks::AckGuard<outbound::NextHop>> {
        let guard = self.acks.record(&ack, hop);
        Self::send_on(SipMessage::Request(ack), hop).await;
        guard
    }

    async fn send_on(message: SipMessage, hop: &outbound::NextHop) {
        if let Err(e) = hop.connection.send(message, hop.destination.as_ref()).await {
            debug!(remote = %hop.remote, error = %e, "ACK not sent");
        }
    }

    /// Hands an accepted message to the transaction layer. A 2xx to an
    /// INVITE of ours that was ACKed already is answered here ([`acks`]).
    async fn to_transaction_layer(
        &self,
        message: SipMessage,
        kind: TransportKind,
        connection: &SipConnection,
        remote: SocketAddr,
    ) {
        if let SipMessage::Response(response) = &message
            && response.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
            && let Some(known) = self.acks.on_success(response)
        {
            match known {
                acks::Known::Resend(sent) => {
                    let (ack, hop) = *sent;
                    debug!(%remote, "2xx again: ACK again");
                    Self::send_on(SipMessage::Request(ack), &hop).await;
                }
                acks::Known::Fork(owner) => owner(response.clone()),
                acks::Known::Pending => {}
            }
            return;
        }
        let from = SipAddr {
            r#type: Some(kind.sip_transport()),
            addr: remote.into(),
        };
        if let Err(e) = self
            .endpoint
            .on_received_message(message, connection.clone(), &from)
            .await
        {
            debug!(%remote, transport = kind.as_str(), error = %e, "transaction layer refused message");
        }
    }

    /// Checks one raw message from `remote` and hands it to the transaction
    /// layer. Returns the bytes of a stateless error response to send back on
    /// the same transport when the message was refused and can be answered.
    pub async fn deliver(
        &self,
        raw: &[u8],
        kind: TransportKind,
        connection: &SipConnection,
        remote: SocketAddr,
    ) -> Option<Vec<u8>> {
        match self.accept(raw, kind, remote) {
            Ok(message) => {
                self.to_transaction_layer(message, kind, connection, remote)
                    .await;
                None
            }
            Err(response) => response,
        }
    }

    /// Checks one UDP datagram from `remote`. Requests the [`FastAnswer`]
    /// accepts are answered at once, with an RFC 3261 §17.2.2 record of their
    /// transaction so that a retransmission gets the same response and is not
    /// processed again; the rest go to the transaction layer. Returns whether
    /// `scratch.reply` holds bytes to send back to `remote`.
    pub async fn deliver_datagram(
        &self,
        raw: &[u8],
        connection: &SipConnection,
        remote: SocketAddr,
        scratch: &mut DatagramScratch,
    ) -> bool {
        scratch.reply.clear();
        let message = match self.accept(raw, TransportKind::Udp, remote) {
            Ok(message) => message,
            Err(Some(response)) => {
                scratch.reply = response;
                return true;
            }
            Err(None) => return false,
        };
        if let SipMessage::Request(request) = &message
            && let Some(answered) = self.answer_at_once(request, remote, scratch)
        {
            return answered;
        }
        self.to_transaction_layer(message, TransportKind::Udp, connection, remote)
            .await;
        false
    }

    /// The fast path: `None` when the request is not for it; else whether a
    /// reply (new or repeated) is in `scratch.reply`.
    fn answer_at_once(
        &self,
        request: &Request,
        remote: SocketAddr,
        scratch: &mut DatagramScratch,
    ) -> Option<bool> {
        let answerer = self.fast.get()?;
        if !self.records.enabled() || !answerer.accepts(request) {
            return None;
        }
        // RFC 3261 branches only: older clients' transactions are matched
        // on more than the key below, which the transaction layer does.
        let via = request.via_header().ok()?.typed().ok()?;
        let branch = via.branch()?.value();
        if !branch.starts_with("z9hG4bK") {
            return None;
        }
        let mut key = std::mem::take(&mut scratch.key);
        nist::write_key(&mut key, request.method, branch, &via.uri.host_with_port);
        let outcome = self.records.begin(&key, Instant::now(), &mut scratch.reply);
        let ticket = match outcome {
            nist::Begin::Retransmission => {
                scratch.key = key;
                return Some(!scratch.reply.is_empty());
            }
            nist::Begin::New(ticket) => Some(ticket),
            nist::Begin::Untracked => None,
        };
        self.metrics.requests_processed.inc();
        let source = Source {
            kind: TransportKind::Udp,
            remote,
            flow: None,
        };
        // A bug here must cost one answer, not the socket reader (which
        // serves every UDP message and is not restarted).
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answerer.answer(request, source)
        }));
        let (status, headers) = answered.unwrap_or_else(|_| {
            error!(method = %request.method, %remote, "answering panicked: 500");
            (StatusCode::ServerInternalError, Vec::new())
        });
        response::write_final_response(
            &mut scratch.reply,
            request,
            &status,
            &headers,
            &self.server_name,
        );
        if let Some(ticket) = ticket {
            self.records.complete(ticket, &key, &scratch.reply);
        }
        scratch.key = key;
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_required_tags_are_listed_once_in_order() {
        let text = "INVITE sip:+15550001001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nRequire: 100rel, Precondition\r\nRequire: timer,sec-agree, precondition\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(request) = SipMessage::try_from(text).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(
            unsupported_required(&request, B2BUA_REQUIRE_OK),
            ["Precondition", "sec-agree"]
        );
        assert!(
            unsupported_required(&request, &["100rel", "timer", "precondition", "SEC-AGREE"])
                .is_empty()
        );
    }

    /// A fast-path answerer with a bug.
    struct Panics;

    impl FastAnswer for Panics {
        fn accepts(&self, _: &Request) -> bool {
            true
        }
        fn answer(&self, _: &Request, _: Source) -> (StatusCode, Vec<Header>) {
            panic!("a bug in the answerer")
        }
    }

    #[tokio::test]
    async fn a_panicking_fast_answer_costs_a_500_not_the_reader() {
        let core = SipCore::new(
            Limits::default(),
            Arc::new(Metrics::default()),
            "test".into(),
            CancellationToken::new(),
        );
        core.set_fast_answer(Arc::new(Panics));
        let remote: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let mut scratch = DatagramScratch::default();
        for branch in ["z9hG4bK1", "z9hG4bK2"] {
            let raw = format!(
                "OPTIONS sip:example.test SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\n\
                 To: <sip:example.test>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            let SipMessage::Request(request) = SipMessage::try_from(raw.as_str()).unwrap() else {
                panic!("not a request")
            };
            assert_eq!(
                core.answer_at_once(&request, remote, &mut scratch),
                Some(true)
            );
            let reply = String::from_utf8_lossy(&scratch.reply);
            assert!(reply.starts_with("SIP/2.0 500"), "{reply}");
            // A retransmission gets the same answer from the record.
            assert_eq!(
                core.answer_at_once(&request, remote, &mut scratch),
                Some(true)
            );
            assert!(scratch.reply.starts_with(b"SIP/2.0 500"));
        }
    }

    #[test]
    fn random_hex_is_lowercase_hex_of_the_asked_length() {
        let a = super::random_hex(8);
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(a, super::random_hex(8));
    }
}
