//! Authentication-failure throttling, sans-IO.
//!
//! Owns per-key failure counting and temporary bans. Callers keep one
//! [`Throttle`] per dimension (source address, username — unknown usernames
//! included, so that bans do not reveal which users exist), ask
//! [`Throttle::is_banned`] before authenticating, and report each outcome.
//!
//! The window starts at a key's first failure and lasts `window_secs`; a
//! failure after it starts a new window. `max_failures` failures within one
//! window ban the key for `ban_secs`, after which it starts afresh. Memory is
//! bounded by `max_tracked`: when full, entries that carry no state are
//! dropped first, then the least recently failing unbanned ones, then the
//! bans closest to expiry — in batches of an eighth of the table, so the cost
//! is amortised O(1) per failure.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use serde::Deserialize;

/// Throttling settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Length of the counting window, in seconds (treated as at least 1).
    pub window_secs: u64,
    /// Failures within one window that trigger a ban; 0 disables throttling.
    pub max_failures: u32,
    /// Ban length, in seconds; 0 disables throttling.
    pub ban_secs: u64,
    /// Most keys tracked at once (treated as at least 1).
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            window_secs: 60,
            max_failures: 10,
            ban_secs: 300,
            max_tracked: 100_000,
        }
    }
}

/// Per-key state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Time of the first failure of the current window.
    window_start: u64,
    /// Failures in the current window.
    failures: u32,
    /// Ban end (exclusive); 0 when never banned.
    banned_until: u64,
    /// Time of the latest failure, for eviction order.
    last_seen: u64,
}

impl Entry {
    fn is_banned(&self, now: u64) -> bool {
        self.banned_until > now
    }

    /// True when the entry no longer affects any decision.
    fn is_idle(&self, now: u64, window: u64) -> bool {
        !self.is_banned(now)
            && (self.failures == 0 || now >= self.window_start.saturating_add(window))
    }

    /// Eviction rank: lower goes first. Unbanned entries by last failure,
    /// then banned ones by ban end.
    fn rank(&self, now: u64) -> u128 {
        if self.is_banned(now) {
            (1u128 << 64) | u128::from(self.banned_until)
        } else {
            u128::from(self.last_seen)
        }
    }
}

/// Failure counter and ban list keyed by `K` (e.g. `IpAddr`, `String`).
#[derive(Debug, Clone)]
pub struct Throttle<K> {
    config: ThrottleConfig,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq> Throttle<K> {
    /// Creates an empty throttle.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn enabled(&self) -> bool {
        self.config.max_failures > 0 && self.config.ban_secs > 0
    }

    fn window(&self) -> u64 {
        self.config.window_secs.max(1)
    }

    /// True while `key` is banned at `now`. Forgets a ban that has expired.
    pub fn is_banned<Q>(&mut self, key: &Q, now: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(entry) = self.entries.get(key) else {
            return false;
        };
        if entry.is_banned(now) {
            return true;
        }
        if entry.banned_until != 0 {
            // Ban served: start afresh.
            self.entries.remove(key);
        }
        false
    }

    /// Counts a failed authentication for `key` at `now`. Returns true exactly
    /// when this failure starts a new ban; failures while banned are ignored.
    pub fn record_failure<Q>(&mut self, key: &Q, now: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.enabled() {
            return false;
        }
        let (window, max, ban) = (
            self.window(),
            self.config.max_failures,
            self.config.ban_secs,
        );
        if let Some(entry) = self.entries.get_mut(key) {
            return fail(entry, now, window, max, ban);
        }
        self.make_room(now);
        let mut entry = Entry {
            window_start: now,
            failures: 0,
            banned_until: 0,
            last_seen: now,
        };
        let banned = fail(&mut entry, now, window, max, ban);
        self.entries.insert(key.to_owned(), entry);
        banned
    }

    /// Clears `key`'s failure count after a successful authentication. An
    /// active ban is kept (callers should not authenticate banned keys).
    pub fn record_success<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.entries.get_mut(key) {
            Some(entry) if entry.banned_until != 0 => entry.failures = 0,
            Some(_) => {
                self.entries.remove(key);
            }
            None => {}
        }
    }

    /// Number of keys banned at `now` (O(n): for metrics, not per request).
    pub fn banned_count(&self, now: u64) -> usize {
        self.entries.values().filter(|e| e.is_banned(now)).count()
    }

    /// Number of keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Ensures there is room for one more entry.
    fn make_room(&mut self, now: u64) {
        let max = self.config.max_tracked.max(1);
        if self.entries.len() < max {
            return;
        }
        let window = self.window();
        self.entries.retain(|_, e| !e.is_idle(now, window));
        // Free at least an eighth of the table per sweep: amortised O(1).
        let target = max - (max / 8).max(1);
        let len = self.entries.len();
        if len <= target {
            return;
        }
        let evict = len - target;
        let mut ranks: Vec<u128> = self.entries.values().map(|e| e.rank(now)).collect();
        let (_, &mut threshold, _) = ranks.select_nth_unstable(evict - 1);
        let below = ranks.iter().filter(|&&r| r < threshold).count();
        let mut ties = evict - below;
        self.entries.retain(|_, e| {
            let rank = e.rank(now);
            if rank < threshold {
                false
            } else if rank == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Applies one failure to `entry`; true when it starts a ban.
fn fail(entry: &mut Entry, now: u64, window: u64, max: u32, ban: u64) -> bool {
    if entry.is_banned(now) {
        entry.last_seen = entry.last_seen.max(now);
        return false;
    }
    if entry.banned_until != 0
        || now < entry.window_start
        || now >= entry.window_start.saturating_add(window)
    {
        entry.window_start = now;
        entry.failures = 0;
        entry.banned_until = 0;
    }
    entry.failures = entry.failures.saturating_add(1);
    entry.last_seen = now;
    if entry.failures >= max {
        entry.failures = 0;
        entry.banned_until = now.saturating_add(ban);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn config(window: u64, max: u32, ban: u64, tracked: usize) -> ThrottleConfig {
        ThrottleConfig {
            window_secs: window,
            max_failures: max,
            ban_secs: ban,
            max_tracked: tracked,
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn ban_after_max_failures_in_window() {
        let mut t = Throttle::new(config(60, 3, 300, 100));
        let a = ip(1);
        assert!(!t.record_failure(&a, 1_000));
        assert!(!t.record_failure(&a, 1_010));
        assert!(!t.is_banned(&a, 1_020));
        assert!(
            t.record_failure(&a, 1_059),
            "third failure within 60 s bans"
        );
        assert!(t.is_banned(&a, 1_059));
        assert!(
            !t.record_failure(&a, 1_060),
            "already banned: not a new ban"
        );
        assert_eq!(t.banned_count(1_060), 1);
        assert!(!t.is_banned(&ip(2), 1_060));
    }

    #[test]
    fn failures_spread_beyond_window_do_not_ban() {
        let mut t = Throttle::new(config(60, 3, 300, 100));
        let a = ip(1);
        for now in [0, 30, 60, 90, 120, 150, 180, 1_000, 1_059] {
            assert!(!t.record_failure(&a, now), "{now}");
        }
        assert!(!t.is_banned(&a, 1_059));
        assert!(t.record_failure(&a, 1_059));
    }

    #[test]
    fn ban_expires_and_counting_restarts() {
        let mut t = Throttle::new(config(60, 2, 300, 100));
        let a = ip(1);
        t.record_failure(&a, 10);
        assert!(t.record_failure(&a, 10));
        assert!(t.is_banned(&a, 309));
        assert!(!t.is_banned(&a, 310));
        assert_eq!(t.banned_count(310), 0);
        assert_eq!(t.tracked(), 0, "served ban forgotten");
        assert!(!t.record_failure(&a, 311));
        assert!(t.record_failure(&a, 312));

        // Expiry noticed by record_failure alone (no is_banned call).
        let mut t = Throttle::new(config(60, 2, 100, 100));
        t.record_failure(&a, 0);
        assert!(t.record_failure(&a, 0));
        assert!(!t.record_failure(&a, 100));
        assert!(t.record_failure(&a, 101));
    }

    #[test]
    fn success_resets_failures() {
        let mut t = Throttle::new(config(60, 3, 300, 100));
        let a = ip(1);
        t.record_failure(&a, 0);
        t.record_failure(&a, 1);
        t.record_success(&a);
        assert_eq!(t.tracked(), 0);
        assert!(!t.record_failure(&a, 2));
        assert!(!t.record_failure(&a, 3));
        assert!(t.record_failure(&a, 4));
        // Success does not lift an active ban.
        t.record_success(&a);
        assert!(t.is_banned(&a, 5));
        t.record_success(&ip(9));
    }

    #[test]
    fn string_keys_looked_up_by_str() {
        let mut t: Throttle<String> = Throttle::new(config(60, 2, 300, 100));
        assert!(!t.record_failure("1001", 0));
        assert!(t.record_failure(&String::from("1001"), 1));
        assert!(t.is_banned("1001", 2));
        assert!(!t.is_banned("1002", 2));
    }

    #[test]
    fn disabled_never_bans_or_tracks() {
        for cfg in [config(60, 0, 300, 100), config(60, 3, 0, 100)] {
            let mut t = Throttle::new(cfg);
            for now in 0..100 {
                assert!(!t.record_failure(&ip(1), now));
            }
            assert!(!t.is_banned(&ip(1), 100));
            assert_eq!(t.tracked(), 0);
        }
        // A zero window behaves as one second.
        let mut t = Throttle::new(config(0, 2, 10, 100));
        t.record_failure(&ip(1), 0);
        assert!(t.record_failure(&ip(1), 0));
        t.record_failure(&ip(2), 0);
        assert!(!t.record_failure(&ip(2), 1));
    }

    #[test]
    fn memory_is_bounded_and_bans_survive_floods() {
        let mut t = Throttle::new(config(60, 3, 300, 64));
        let banned = ip(0xdead);
        for now in 0..3 {
            t.record_failure(&banned, now);
        }
        assert!(t.is_banned(&banned, 3));
        for n in 0..10_000u32 {
            t.record_failure(&ip(n + 1), 3 + u64::from(n / 100));
            assert!(t.tracked() <= 64);
        }
        assert!(t.is_banned(&banned, 200), "unbanned keys are evicted first");
        // Recent keys are kept, old ones evicted.
        assert!(!t.record_failure(&ip(10_000), 103));
        assert!(t.record_failure(&ip(10_000), 103));
    }

    #[test]
    fn idle_entries_are_evicted_first() {
        let mut t = Throttle::new(config(10, 3, 300, 4));
        for n in 0..4 {
            t.record_failure(&ip(n), 0);
        }
        assert_eq!(t.tracked(), 4);
        // At t=20 all windows have lapsed: all four are dropped as idle.
        t.record_failure(&ip(100), 20);
        assert_eq!(t.tracked(), 1);

        // Tiny table: one slot.
        let mut t = Throttle::new(config(60, 3, 300, 0));
        t.record_failure(&ip(1), 0);
        t.record_failure(&ip(2), 1);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let c: ThrottleConfig = serde_json::from_str(r#"{"window_secs": 30}"#).unwrap();
        assert_eq!(
            c,
            ThrottleConfig {
                window_secs: 30,
                ..ThrottleConfig::default()
            }
        );
        assert_eq!(ThrottleConfig::default(), config(60, 10, 300, 100_000));
        assert!(serde_json::from_str::<ThrottleConfig>(r#"{"window": 30}"#).is_err());
    }
}
