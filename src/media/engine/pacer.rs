//! When a media thread waits, polls or pauses (`MediaConfig::coalesce_us`):
//! plain state, fed what each pass of the thread's loop found.
//!
//! A pass that found events is followed at once by a poll (timeout 0),
//! until a poll finds nothing. A thread is **busy** when it is woken again
//! within `coalesce` of its last work; a busy thread then pauses until
//! `coalesce` after the start of that work (never past its next deadline)
//! and polls, so each pass finds a batch: one wake-up per batch instead of
//! one per packet. A poll after a pause that finds nothing ends the busy
//! stretch: the thread blocks until the next event.

use std::time::{Duration, Instant};

/// What the thread does after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Poll at once (timeout 0).
    Poll,
    /// Sleep until then, then poll.
    PauseUntil(Instant),
    /// Block until an event or the next deadline.
    Block,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Pacer {
    coalesce: Duration,
    /// The last pass was a poll (not a blocking wait).
    polling: bool,
    busy: bool,
    /// When the work of the current stretch began.
    work_began: Option<Instant>,
    /// When a pass last found events.
    last_work: Option<Instant>,
}

impl Pacer {
    /// A pacer that batches at most every `coalesce` (zero: never).
    pub(super) fn new(coalesce: Duration) -> Pacer {
        Pacer {
            coalesce,
            polling: false,
            busy: false,
            work_began: None,
            last_work: None,
        }
    }

    /// A pass at `now` found `found` events; `deadline` is the thread's
    /// next timer.
    pub(super) fn after_pass(
        &mut self,
        now: Instant,
        found: usize,
        deadline: Option<Instant>,
    ) -> Next {
        if found > 0 {
            if !self.polling {
                // Woken: busy if the last work was recent.
                self.busy = !self.coalesce.is_zero()
                    && self
                        .last_work
                        .is_some_and(|t| now.saturating_duration_since(t) < self.coalesce);
            }
            self.last_work = Some(now);
            self.work_began.get_or_insert(now);
            return self.next(Next::Poll);
        }
        match self.work_began.take() {
            Some(began) if self.busy => {
                let until =
                    deadline.map_or(began + self.coalesce, |d| d.min(began + self.coalesce));
                if until > now {
                    self.next(Next::PauseUntil(until))
                } else {
                    self.next(Next::Poll)
                }
            }
            _ => self.next(Next::Block),
        }
    }

    fn next(&mut self, next: Next) -> Next {
        self.polling = next != Next::Block;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn a_quiet_thread_drains_then_blocks() {
        let t0 = Instant::now();
        let mut p = Pacer::new(MS);
        assert_eq!(p.after_pass(t0, 3, None), Next::Poll);
        assert_eq!(p.after_pass(t0 + 10 * US, 1, None), Next::Poll);
        assert_eq!(p.after_pass(t0 + 20 * US, 0, None), Next::Block);
        // The next packet 20 ms later: not busy, no pause.
        let t1 = t0 + 20 * MS;
        assert_eq!(p.after_pass(t1, 1, None), Next::Poll);
        assert_eq!(p.after_pass(t1 + 5 * US, 0, None), Next::Block);
    }

    #[test]
    fn a_busy_thread_pauses_until_a_batch_is_due() {
        let t0 = Instant::now();
        let mut p = Pacer::new(MS);
        assert_eq!(p.after_pass(t0, 1, None), Next::Poll);
        assert_eq!(p.after_pass(t0 + 5 * US, 0, None), Next::Block);
        // Woken again 50 µs after its last work: busy.
        let t1 = t0 + 55 * US;
        assert_eq!(p.after_pass(t1, 1, None), Next::Poll);
        assert_eq!(
            p.after_pass(t1 + 5 * US, 0, None),
            Next::PauseUntil(t1 + MS)
        );
        // The poll after the pause finds a batch: another pause, counted
        // from when that work began.
        let t2 = t1 + MS + 60 * US;
        assert_eq!(p.after_pass(t2, 20, None), Next::Poll);
        assert_eq!(
            p.after_pass(t2 + 40 * US, 0, None),
            Next::PauseUntil(t2 + MS)
        );
        // A poll after a pause that finds nothing: block.
        assert_eq!(p.after_pass(t2 + MS + 60 * US, 0, None), Next::Block);
    }

    #[test]
    fn a_pause_ends_at_the_next_deadline() {
        let t0 = Instant::now();
        let mut p = Pacer::new(MS);
        p.after_pass(t0, 1, None);
        p.after_pass(t0, 0, None);
        let t1 = t0 + 100 * US;
        p.after_pass(t1, 1, None);
        let due = t1 + 300 * US;
        assert_eq!(p.after_pass(t1 + US, 0, Some(due)), Next::PauseUntil(due));
        // A deadline already passed: poll at once.
        p.after_pass(due, 1, None);
        assert_eq!(p.after_pass(due + US, 0, Some(due)), Next::Poll);
    }

    #[test]
    fn zero_never_pauses() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::ZERO);
        for k in 0..5u32 {
            let t = t0 + k * 10 * US;
            assert_eq!(p.after_pass(t, 1, None), Next::Poll);
            assert_eq!(p.after_pass(t + US, 0, None), Next::Block);
        }
    }
}
