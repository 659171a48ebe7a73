//! The bundled STUN/TURN server: STUN Binding (RFC 8489, with the cheap
//! parts of RFC 5780) and TURN UDP relays (RFC 8656) requested over UDP,
//! TCP and TLS, with long-term and TURN REST API credentials, a peer address
//! policy, quotas and rate limits; and `GET /api/ice-servers`, which hands
//! SIP-authenticated softphones fresh REST credentials.
//!
//! Layout, protocol first and sockets last (see `docs/turn.md`):
//! - [`stun`]: the message codec (zero-copy parse, builder, integrity,
//!   fingerprint, ChannelData framing);
//! - [`credentials`]: static users, REST credentials, nonces;
//! - [`policy`]: the peer address filter (the per-source rate limit is
//!   [`crate::source::RateLimiter`]);
//! - [`server`]: the sans-IO state machine (allocations, permissions,
//!   channels, lifetimes, quotas) — bytes and time in, [`server::Output`]s out;
//! - [`config`]: the `turn:` section of the configuration file;
//! - [`net`]: the tokio driver (UDP/TCP/TLS listeners, one task per relay
//!   socket, housekeeping);
//! - [`api`]: the `/api/ice-servers` endpoint.

pub mod api;
pub mod config;
pub mod credentials;
pub mod net;
pub mod policy;
pub mod server;
pub mod stun;

use std::fmt::Write as _;

use crate::metrics::{Counter, Gauge};

pub use config::TurnConfig;
pub use net::TurnService;

/// Why the TURN service could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// A listener could not be bound.
    #[error("TURN {transport} listener {addr}: {source}")]
    Bind {
        /// udp, tcp or tls.
        transport: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A setting is unusable (already validated, so this is rare).
    #[error("turn: {0}")]
    Config(String),
}

/// TURN counters, rendered with the process metrics.
#[derive(Debug, Default)]
pub struct TurnMetrics {
    /// Live allocations.
    pub allocations: Gauge,
    /// Allocations created since start.
    pub allocations_total: Counter,
    /// STUN Binding requests answered.
    pub binding_requests: Counter,
    /// Packets relayed from clients to peers.
    pub relayed_to_peers: Counter,
    /// Packets relayed from peers to clients.
    pub relayed_to_clients: Counter,
    /// Requests whose credentials were wrong, unknown or expired.
    pub auth_failures: Counter,
    /// Permissions and channel bindings refused by the peer address policy.
    pub refused_peers: Counter,
    /// Allocations refused by a quota.
    pub quota_refusals: Counter,
    /// Allocate requests refused by the per-source rate limit.
    pub rate_limited: Counter,
    /// Packets dropped because no permission covered the peer.
    pub dropped_no_permission: Counter,
    /// REST credentials handed out by `/api/ice-servers`.
    pub credentials_issued: Counter,
}

impl TurnMetrics {
    /// Appends the Prometheus text of every counter.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# TYPE switchboard_turn_allocations gauge\nswitchboard_turn_allocations {}",
            self.allocations.get()
        );
        let counters: [(&str, &Counter); 10] = [
            (
                "switchboard_turn_allocations_total",
                &self.allocations_total,
            ),
            (
                "switchboard_turn_binding_requests_total",
                &self.binding_requests,
            ),
            (
                "switchboard_turn_relayed_to_peers_total",
                &self.relayed_to_peers,
            ),
            (
                "switchboard_turn_relayed_to_clients_total",
                &self.relayed_to_clients,
            ),
            ("switchboard_turn_auth_failures_total", &self.auth_failures),
            ("switchboard_turn_refused_peers_total", &self.refused_peers),
            (
                "switchboard_turn_quota_refusals_total",
                &self.quota_refusals,
            ),
            ("switchboard_turn_rate_limited_total", &self.rate_limited),
            (
                "switchboard_turn_dropped_no_permission_total",
                &self.dropped_no_permission,
            ),
            (
                "switchboard_turn_credentials_issued_total",
                &self.credentials_issued,
            ),
        ];
        for (name, counter) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", counter.get());
        }
    }
}
