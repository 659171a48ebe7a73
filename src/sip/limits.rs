//! Explicit, configurable limits on what the SIP transports accept.
//!
//! Every number here bounds memory or work that a remote peer can make us spend.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Limits applied by every SIP transport (UDP, TCP, TLS, WS, WSS).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest SIP message accepted, headers plus body, in bytes. Larger ones get
    /// `513 Message Too Large` when they can be answered, else they are dropped.
    pub max_message_size: usize,
    /// Most header lines in one message (folded continuation lines count too).
    pub max_headers: usize,
    /// Longest single header line, in bytes.
    pub max_line_length: usize,
    /// Most simultaneous stream connections (TCP, TLS, WS, WSS, HTTP) in total.
    pub max_connections: usize,
    /// Most simultaneous stream connections from one source: an IPv4
    /// address, or an IPv6 /64.
    pub max_connections_per_ip: usize,
    /// A stream connection that carries no bytes for this long is closed, in seconds.
    /// Clients keep flows alive with CRLF keepalives or WebSocket pings (RFC 5626).
    pub idle_timeout_secs: u64,
    /// Once the first byte of a message has arrived, the whole message must arrive
    /// within this many seconds (defends against slow-loris peers). Also bounds the
    /// TLS handshake and the HTTP request head.
    pub message_timeout_secs: u64,
    /// Interval between WebSocket pings sent to idle browsers, in seconds (0 = never).
    pub ws_ping_interval_secs: u64,
    /// Initial read buffer per stream connection, in bytes. It grows only while a
    /// large message is being read, then shrinks back.
    pub read_buffer_size: usize,
    /// Messages queued for sending on one stream connection before the sender waits.
    pub send_queue: usize,
    /// A write that cannot complete within this many seconds closes the
    /// connection (SIP streams, WebSocket, HTTP).
    pub write_timeout_secs: u64,
    /// Memory, in bytes, for the transactions the UDP fast path answered
    /// (out-of-dialog REGISTER and OPTIONS): each keeps its response for RFC
    /// 3261 Timer J (32 s) to answer retransmissions. When full, the oldest go
    /// first. About 0.6–0.9 KB per request; 0 turns the fast path off (those
    /// requests then take the general transaction layer).
    pub udp_transaction_memory: usize,
    /// Tasks reading each UDP socket (0 = one per CPU).
    pub udp_readers: usize,
    /// The shortest session interval (RFC 4028 `Session-Expires`) taken
    /// from callers, in seconds: a caller that supports session timers and
    /// asks for less gets `422` with this as `Min-SE`. RFC 4028 sets 90;
    /// lower values exist for tests.
    pub min_session_expires_secs: u64,
    /// SIP requests a second one source (an IPv4 address, or an IPv6 /64)
    /// may send, over every transport together; 0 = unlimited. Beyond it a
    /// request over a stream connection gets `503` with `Retry-After`, one
    /// over UDP is dropped (a UDP source address may be forged, so no answer
    /// goes to it); an ACK, and a CANCEL over a stream, always pass.
    /// Responses are not counted.
    /// Trunks and [`Limits::rate_exempt`] are not limited.
    pub source_rate: u32,
    /// Messages one source may send at once above [`Limits::source_rate`].
    pub source_burst: u32,
    /// Sources never rate limited, e.g. a reverse proxy in front of the
    /// WebSocket listener or a load generator; trunks' addresses are exempt
    /// already.
    pub rate_exempt: Vec<IpNet>,
    /// Sources the rate limit tracks at once. When all are still refilling,
    /// a new source passes untracked until a sweep (at most once a second)
    /// makes room.
    pub max_rate_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65_535,
            max_headers: 128,
            max_line_length: 8_192,
            max_connections: 10_000,
            max_connections_per_ip: 200,
            idle_timeout_secs: 600,
            message_timeout_secs: 10,
            ws_ping_interval_secs: 30,
            read_buffer_size: 4_096,
            send_queue: 128,
            write_timeout_secs: 10,
            udp_transaction_memory: 128 << 20,
            udp_readers: 0,
            min_session_expires_secs: 90,
            source_rate: 200,
            source_burst: 1000,
            rate_exempt: Vec::new(),
            max_rate_sources: 100_000,
        }
    }
}

impl Limits {
    /// [`Limits::idle_timeout_secs`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    /// [`Limits::message_timeout_secs`] as a duration.
    pub fn message_timeout(&self) -> Duration {
        Duration::from_secs(self.message_timeout_secs)
    }
    /// [`Limits::write_timeout_secs`] as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
    /// How many tasks read each UDP socket: [`Limits::udp_readers`], or one
    /// per CPU when that is 0.
    pub fn udp_reader_count(&self) -> usize {
        match self.udp_readers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
    /// [`Limits::ws_ping_interval_secs`] as a duration, `None` when pings are off.
    pub fn ws_ping_interval(&self) -> Option<Duration> {
        (self.ws_ping_interval_secs > 0).then(|| Duration::from_secs(self.ws_ping_interval_secs))
    }
}
