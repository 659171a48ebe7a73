//! Process-wide counters, rendered in the Prometheus text format on the admin listener.
//!
//! Counters are plain atomics: incrementing one on a hot path costs one relaxed add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sip::TransportKind;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `delta` (which may be negative), never going below zero.
    pub fn add(&self, delta: i64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some((v as i64).saturating_add(delta).max(0) as u64)
            });
    }
    /// Subtracts one, never below zero.
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters kept per SIP transport.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// SIP messages accepted and handed to the transaction layer.
    pub received: Counter,
    /// Messages refused by the inspector (answered or not).
    pub rejected: Counter,
    /// Refused messages that could not be answered and were dropped.
    pub dropped: Counter,
    /// Stateless error responses sent (400, 505, 513, and 503 for a source
    /// over its rate).
    pub error_responses: Counter,
    /// Messages refused because their source was over `limits.source_rate`.
    pub rate_limited: Counter,
    /// Open connections (stream transports only).
    pub connections: Gauge,
    /// Connections refused by the per-IP or total limit.
    pub connections_refused: Counter,
    /// Connections closed for idleness or a message that never completed.
    pub timeouts: Counter,
}

/// All counters of one Switchboard process.
#[derive(Debug, Default)]
pub struct Metrics {
    transports: [TransportCounters; TransportKind::ALL.len()],
    /// Requests the transaction user processed, after retransmission absorption.
    pub requests_processed: Counter,
    /// OPTIONS requests answered.
    pub options_answered: Counter,
    /// Requests whose digest credentials were valid.
    pub auth_successes: Counter,
    /// Requests whose credentials were wrong (unknown users included).
    pub auth_failures: Counter,
    /// Requests refused because their source or username is banned.
    pub auth_banned: Counter,
    /// Bans imposed for repeated failures.
    pub auth_bans: Counter,
    /// Successful REGISTER requests.
    pub registrations: Counter,
    /// Bindings removed because their connection closed.
    pub bindings_flow_closed: Counter,
    /// Live registrar bindings.
    pub bindings: std::sync::Arc<Gauge>,
    /// Dialplan versions loaded (1 after start, +1 per successful reload).
    pub dialplan_version: Counter,
    /// Successful dialplan reloads.
    pub dialplan_reloads: Counter,
    /// Refused dialplan reloads (the running version stayed).
    pub dialplan_reload_failures: Counter,
    /// The media engine's counters.
    pub media: MediaCounters,
    /// The bundled STUN/TURN server.
    pub turn: std::sync::Arc<crate::turn::TurnMetrics>,
    /// Trunk registration and probing, per-trunk gauges.
    pub trunks: std::sync::Arc<crate::trunks::TrunkMetrics>,
}

/// Media engine and B2BUA counters. Gauges are shared (`Arc`) with the
/// parts that hold the resources, so they drop back when those do.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// Rooms open (one task each).
    pub rooms: std::sync::Arc<Gauge>,
    /// Legs (participants with a network endpoint) in rooms.
    pub legs: std::sync::Arc<Gauge>,
    /// UDP ports held by legs (two per RTP leg).
    pub ports: std::sync::Arc<Gauge>,
    /// RTP packets received by legs (added when a leg leaves its room).
    pub packets_received: Counter,
    /// RTP packets sent by legs (added when a leg leaves its room).
    pub packets_sent: Counter,
    /// Legs closed for lack of media.
    pub media_timeouts: Counter,
    /// Room ticks that ran late by more than 100 ms and were skipped.
    pub ticks_skipped: Counter,
    /// Calls the B2BUA is handling (echo, conference).
    pub calls: std::sync::Arc<Gauge>,
    /// Outgoing INVITE client transactions the B2BUA runs (one task each;
    /// an answered one ends with its leg).
    pub outgoing_invites: std::sync::Arc<Gauge>,
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

impl Metrics {
    /// The counters of one transport.
    pub fn transport(&self, kind: TransportKind) -> &TransportCounters {
        &self.transports[kind as usize]
    }

    /// Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        /// (metric name, type, how to read it from a transport's counters).
        type PerTransport = (&'static str, &'static str, fn(&TransportCounters) -> u64);
        let per_transport: [PerTransport; 8] = [
            ("switchboard_sip_messages_received_total", "counter", |c| {
                c.received.get()
            }),
            ("switchboard_sip_messages_rejected_total", "counter", |c| {
                c.rejected.get()
            }),
            ("switchboard_sip_messages_dropped_total", "counter", |c| {
                c.dropped.get()
            }),
            ("switchboard_sip_error_responses_total", "counter", |c| {
                c.error_responses.get()
            }),
            ("switchboard_sip_rate_limited_total", "counter", |c| {
                c.rate_limited.get()
            }),
            ("switchboard_sip_connections", "gauge", |c| {
                c.connections.get()
            }),
            (
                "switchboard_sip_connections_refused_total",
                "counter",
                |c| c.connections_refused.get(),
            ),
            (
                "switchboard_sip_connection_timeouts_total",
                "counter",
                |c| c.timeouts.get(),
            ),
        ];
        for (name, kind, get) in per_transport {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for transport in TransportKind::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{transport=\"{}\"}} {}",
                    transport.as_str(),
                    get(self.transport(transport))
                );
            }
        }
        let _ = writeln!(
            out,
            "# TYPE switchboard_sip_requests_processed_total counter"
        );
        let _ = writeln!(
            out,
            "switchboard_sip_requests_processed_total {}",
            self.requests_processed.get()
        );
        let _ = writeln!(out, "# TYPE switchboard_sip_options_answered_total counter");
        let _ = writeln!(
            out,
            "switchboard_sip_options_answered_total {}",
            self.options_answered.get()
        );
        let singles: [(&str, &Counter); 9] = [
            ("switchboard_dialplan_version", &self.dialplan_version),
            ("switchboard_dialplan_reloads_total", &self.dialplan_reloads),
            (
                "switchboard_dialplan_reload_failures_total",
                &self.dialplan_reload_failures,
            ),
            ("switchboard_auth_successes_total", &self.auth_successes),
            ("switchboard_auth_failures_total", &self.auth_failures),
            ("switchboard_auth_banned_total", &self.auth_banned),
            ("switchboard_auth_bans_total", &self.auth_bans),
            ("switchboard_registrations_total", &self.registrations),
            (
                "switchboard_bindings_flow_closed_total",
                &self.bindings_flow_closed,
            ),
        ];
        let _ = writeln!(
            out,
            "# TYPE switchboard_registrar_bindings gauge\nswitchboard_registrar_bindings {}",
            self.bindings.get()
        );
        for (name, counter) in singles {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", counter.get());
        }
        let m = &self.media;
        for (name, value) in [
            ("switchboard_media_rooms", m.rooms.get()),
            ("switchboard_media_legs", m.legs.get()),
            ("switchboard_media_ports", m.ports.get()),
            ("switchboard_b2bua_calls", m.calls.get()),
            (
                "switchboard_b2bua_outgoing_invites",
                m.outgoing_invites.get(),
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
        }
        for (name, counter) in [
            (
                "switchboard_media_packets_received_total",
                &m.packets_received,
            ),
            ("switchboard_media_packets_sent_total", &m.packets_sent),
            ("switchboard_media_timeouts_total", &m.media_timeouts),
            ("switchboard_media_ticks_skipped_total", &m.ticks_skipped),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", counter.get());
        }
        self.turn.render(&mut out);
        self.trunks.render(&mut out);
        out
    }
}
