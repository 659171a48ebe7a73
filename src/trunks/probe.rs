//! OPTIONS health probing of a trunk as a sans-IO state machine: when to
//! send the next probe, when one has timed out, and when the trunk goes down
//! or comes back up. The driver (`super::driver`) sends the OPTIONS.
//!
//! What counts (see docs/trunks.md):
//! - a probe is sent every `options_interval` seconds (fixed rate), the
//!   first one at start;
//! - it fails when no final response arrives within the interval (at most
//!   5 s), when it cannot be sent, or when the answer is 408 or 5xx; any
//!   other final response (200, but also 403, 404, 405, 6xx: the carrier is
//!   there and answering) is a success;
//! - two failures in a row take the trunk down; one success brings it up.

use std::time::{Duration, Instant};

/// Failures in a row that take a trunk down.
pub const FAILURES_TO_DOWN: u32 = 2;
/// Longest wait for an answer to one probe.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// A final response with this status.
    Reply(u16),
    /// It could not be sent (resolution, connection, TLS).
    Error(String),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutput {
    /// Send an OPTIONS now; its result comes back with this id.
    Send(u64),
    /// The trunk went down, for this reason.
    Down(String),
    /// The trunk came back up.
    Up,
}

/// The probing of one trunk.
#[derive(Debug)]
pub struct Probe {
    interval: Duration,
    timeout: Duration,
    next: Instant,
    /// The probe in flight: (id, sent at).
    in_flight: Option<(u64, Instant)>,
    last_id: u64,
    failures: u32,
    /// Failed probes since start.
    failed: u64,
    down: bool,
    reason: Option<String>,
}

impl Probe {
    /// Probing every `interval`; the first probe is due at `now`.
    pub fn new(interval: Duration, now: Instant) -> Probe {
        let interval = interval.max(Duration::from_millis(100));
        Probe {
            interval,
            timeout: interval.min(MAX_PROBE_TIMEOUT),
            next: now,
            in_flight: None,
            last_id: 0,
            failures: 0,
            failed: 0,
            down: false,
            reason: None,
        }
    }

    /// When [`poll`](Self::poll) has something to do.
    pub fn deadline(&self) -> Instant {
        match self.in_flight {
            Some((_, sent)) => sent + self.timeout,
            None => self.next,
        }
    }

    /// What is due at `now`: a timeout (maybe a transition), then the next
    /// probe. Call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<ProbeOutput> {
        if let Some((_, sent)) = self.in_flight {
            if now < sent + self.timeout {
                return None;
            }
            self.in_flight = None;
            let reason = format!(
                "no answer to OPTIONS within {} ms",
                self.timeout.as_millis()
            );
            if let Some(output) = self.failure(reason) {
                return Some(output);
            }
        }
        if self.in_flight.is_none() && now >= self.next {
            self.last_id += 1;
            self.in_flight = Some((self.last_id, now));
            // Fixed rate; after a long stall, start counting from now.
            self.next = (self.next + self.interval).max(now);
            return Some(ProbeOutput::Send(self.last_id));
        }
        None
    }

    /// The result of probe `id` (a late one, after its timeout, is ignored).
    pub fn on_result(
        &mut self,
        id: u64,
        result: ProbeResult,
        _now: Instant,
    ) -> Option<ProbeOutput> {
        match self.in_flight {
            Some((current, _)) if current == id => self.in_flight = None,
            _ => return None,
        }
        match result {
            ProbeResult::Reply(status) if status == 408 || (500..=599).contains(&status) => {
                self.failure(format!("OPTIONS answered {status}"))
            }
            ProbeResult::Reply(_) => {
                self.failures = 0;
                if self.down {
                    self.down = false;
                    self.reason = None;
                    return Some(ProbeOutput::Up);
                }
                None
            }
            ProbeResult::Error(reason) => self.failure(format!("OPTIONS not sent: {reason}")),
        }
    }

    fn failure(&mut self, reason: String) -> Option<ProbeOutput> {
        self.failures += 1;
        self.failed += 1;
        if self.down {
            self.reason = Some(reason);
            return None;
        }
        if self.failures >= FAILURES_TO_DOWN {
            self.down = true;
            self.reason = Some(reason.clone());
            return Some(ProbeOutput::Down(reason));
        }
        None
    }

    /// How long one probe may take before it counts as failed (the driver
    /// drops its transaction then, ending its retransmissions).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Probes failed since start (for the metrics).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Whether the trunk is down.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Why it is down.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn two_timeouts_take_it_down_and_one_answer_brings_it_up() {
        let t0 = Instant::now();
        let mut p = Probe::new(10 * SECOND, t0);
        assert_eq!(p.poll(t0), Some(ProbeOutput::Send(1)));
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.deadline(), t0 + 5 * SECOND, "timeout capped at 5 s");
        assert_eq!(p.on_result(1, ProbeResult::Reply(200), t0), None);
        assert_eq!(p.deadline(), t0 + 10 * SECOND);
        // Two unanswered probes.
        let t1 = t0 + 10 * SECOND;
        assert_eq!(p.poll(t1), Some(ProbeOutput::Send(2)));
        assert_eq!(p.poll(t1 + 5 * SECOND), None, "one failure is not enough");
        assert!(!p.is_down());
        let t2 = t0 + 20 * SECOND;
        assert_eq!(p.poll(t2), Some(ProbeOutput::Send(3)));
        let down = p.poll(t2 + 5 * SECOND).unwrap();
        assert!(
            matches!(&down, ProbeOutput::Down(r) if r.contains("no answer")),
            "{down:?}"
        );
        assert!(p.is_down());
        // A late answer to probe 3 does not count.
        assert_eq!(
            p.on_result(3, ProbeResult::Reply(200), t2 + 6 * SECOND),
            None
        );
        assert!(p.is_down());
        let t3 = t0 + 30 * SECOND;
        assert_eq!(p.poll(t3), Some(ProbeOutput::Send(4)));
        // 404 means the carrier is there.
        assert_eq!(
            p.on_result(4, ProbeResult::Reply(404), t3),
            Some(ProbeOutput::Up)
        );
        assert!(!p.is_down() && p.reason().is_none());
        assert_eq!(p.failed(), 2);
    }

    #[test]
    fn server_errors_and_send_errors_count_as_failures() {
        let t0 = Instant::now();
        let mut p = Probe::new(SECOND, t0);
        assert_eq!(p.poll(t0), Some(ProbeOutput::Send(1)));
        assert_eq!(p.on_result(1, ProbeResult::Reply(503), t0), None);
        assert_eq!(p.poll(t0 + SECOND), Some(ProbeOutput::Send(2)));
        let out = p.on_result(2, ProbeResult::Error("cannot connect".into()), t0 + SECOND);
        assert!(matches!(out, Some(ProbeOutput::Down(r)) if r.contains("cannot connect")));
        // An answer between failures resets the count.
        let mut p = Probe::new(SECOND, t0);
        for (i, status) in [503, 200, 408, 200, 500].into_iter().enumerate() {
            let now = t0 + SECOND * i as u32;
            assert_eq!(p.poll(now), Some(ProbeOutput::Send(i as u64 + 1)));
            assert_eq!(
                p.on_result(i as u64 + 1, ProbeResult::Reply(status), now),
                None
            );
        }
        assert!(!p.is_down());
    }

    #[test]
    fn timeout_equal_to_interval_sends_the_next_probe_at_once() {
        let t0 = Instant::now();
        let mut p = Probe::new(SECOND, t0);
        assert_eq!(p.poll(t0), Some(ProbeOutput::Send(1)));
        // At t0+1 s the first probe times out and the second is due.
        assert_eq!(p.poll(t0 + SECOND), Some(ProbeOutput::Send(2)));
        assert!(matches!(
            p.poll(t0 + 2 * SECOND),
            Some(ProbeOutput::Down(_))
        ));
        assert_eq!(p.poll(t0 + 2 * SECOND), Some(ProbeOutput::Send(3)));
    }
}
