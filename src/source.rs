//! What a peer's address counts as where limits are kept per source
//! (connections, authentication failures, SIP message rates, TURN
//! allocations): an IPv4 address as itself, an IPv6 address by its /64,
//! which one client usually holds whole (RFC 6177) and can hop around in at
//! will; and the token bucket per source that rate limits use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The key a per-source limit counts `ip` under: IPv4 (also written as
/// IPv4-mapped IPv6) as is, other IPv6 by its /64 prefix.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
        v4 => v4,
    }
}

/// `net` as addresses are compared once canonical ([`IpAddr::to_canonical`]):
/// an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network
/// it stands for (`10.0.0.0/8`), anything else as is.
pub fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    if let ipnet::IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(v4) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return ipnet::IpNet::V4(v4);
    }
    net
}

/// A token bucket per source ([`source_key`]), sans-IO: `per_second`
/// tokens come back each second up to `burst`, and each event takes one.
/// At most `max_tracked` sources are tracked; when the table is full of
/// sources still refilling, a new source is let through untracked (a flood
/// from many addresses must not lock out the ones already counted, nor cost
/// more than one sweep of the table a second).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    max_tracked: usize,
    buckets: HashMap<IpAddr, (f64, Instant)>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// `per_second` sustained, `burst` at once (at least 1), `max_tracked`
    /// sources at most; a `per_second` of 0 turns limiting off.
    pub fn new(per_second: u32, burst: u32, max_tracked: usize) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            max_tracked: max_tracked.max(1),
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Whether limiting is on.
    pub fn is_on(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes one token for `source`; false when it has none left.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        self.allow_key(source_key(source), now)
    }

    /// [`RateLimiter::allow`] for a source already made its [`source_key`].
    fn allow_key(&mut self, key: IpAddr, now: Instant) -> bool {
        if !self.is_on() {
            return true;
        }
        if self.buckets.len() >= self.max_tracked && !self.buckets.contains_key(&key) {
            let swept_lately = self
                .last_sweep
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
            if !swept_lately {
                self.last_sweep = Some(now);
                self.purge(now);
            }
            if self.buckets.len() >= self.max_tracked {
                return true;
            }
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let (tokens, last) = self.buckets.entry(key).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose bucket is full again.
    pub fn purge(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets.retain(|_, (tokens, last)| {
            *tokens + now.saturating_duration_since(*last).as_secs_f64() * per_second < burst
        });
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// A [`RateLimiter`] shared by threads: the sources are spread over
/// independently locked shards, so readers of different sources seldom wait
/// for each other, and a sweep holds one shard only.
#[derive(Debug)]
pub struct SharedRateLimiter {
    shards: Box<[Mutex<RateLimiter>]>,
}

impl SharedRateLimiter {
    const SHARDS: usize = 16;

    /// As [`RateLimiter::new`], `max_tracked` split over the shards.
    pub fn new(per_second: u32, burst: u32, max_tracked: usize) -> Self {
        let per_shard = max_tracked.div_ceil(Self::SHARDS).max(1);
        SharedRateLimiter {
            shards: (0..Self::SHARDS)
                .map(|_| Mutex::new(RateLimiter::new(per_second, burst, per_shard)))
                .collect(),
        }
    }

    /// Takes one token for `source`; false when it has none left (a
    /// poisoned shard lets everything through).
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let key = source_key(source);
        let folded: u64 = match key {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => v6.octets()[..8]
                .iter()
                .fold(0, |h, b| h << 8 | u64::from(*b)),
        };
        // Fibonacci hashing: the upper half of the product mixes every input bit.
        let shard = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % Self::SHARDS;
        match self.shards[shard].lock() {
            Ok(mut limiter) => limiter.allow_key(key, now),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_networks_become_ipv4_networks() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        assert_eq!(canonical_net(net("::ffff:10.0.0.0/104")), net("10.0.0.0/8"));
        assert_eq!(
            canonical_net(net("::ffff:192.0.2.7/128")),
            net("192.0.2.7/32")
        );
        assert_eq!(canonical_net(net("2001:db8::/32")), net("2001:db8::/32"));
        assert_eq!(canonical_net(net("::/0")), net("::/0"));
        assert_eq!(canonical_net(net("10.0.0.0/8")), net("10.0.0.0/8"));
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut r = RateLimiter::new(10, 5, 100);
        let t = Instant::now();
        for _ in 0..5 {
            assert!(r.allow(ip("192.0.2.1"), t));
        }
        assert!(!r.allow(ip("192.0.2.1"), t), "burst spent");
        assert!(r.allow(ip("192.0.2.2"), t), "another source has its own");
        // 10 a second: one token back after 100 ms.
        let later = t + Duration::from_millis(100);
        assert!(r.allow(ip("192.0.2.1"), later));
        assert!(!r.allow(ip("192.0.2.1"), later));
        // An IPv6 /64 is one source.
        let mut r = RateLimiter::new(1, 1, 100);
        assert!(r.allow(ip("2001:db8::1"), t));
        assert!(!r.allow(ip("2001:db8::2"), t));
        assert!(r.allow(ip("2001:db8:0:1::1"), t));
        // Off.
        let mut r = RateLimiter::new(0, 1, 1);
        assert!((0..1000).all(|_| r.allow(ip("192.0.2.1"), t)));
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn shared_limiter_counts_each_source_once_across_shards() {
        let r = SharedRateLimiter::new(1, 3, 1000);
        let t = Instant::now();
        for n in 0..50 {
            let a = ip(&format!("192.0.2.{n}"));
            let b = ip(&format!("2001:db8:{n}::1"));
            for _ in 0..3 {
                assert!(r.allow(a, t) && r.allow(b, t));
            }
            assert!(!r.allow(a, t) && !r.allow(b, t));
            assert!(!r.allow(ip(&format!("2001:db8:{n}::2")), t), "same /64");
        }
    }

    #[test]
    fn the_table_is_bounded_and_sources_refilled_make_room() {
        let mut r = RateLimiter::new(1, 2, 3);
        let t = Instant::now();
        for n in 1..=3 {
            assert!(r.allow(ip(&format!("192.0.2.{n}")), t));
        }
        assert_eq!(r.tracked(), 3);
        // Full of sources still refilling: a new one passes untracked,
        // the tracked ones stay limited.
        for _ in 0..10 {
            assert!(r.allow(ip("192.0.2.9"), t));
        }
        assert_eq!(r.tracked(), 3);
        assert!(r.allow(ip("192.0.2.1"), t));
        assert!(!r.allow(ip("192.0.2.1"), t));
        // Two seconds later every bucket is full again: swept for the new one.
        let later = t + Duration::from_secs(2);
        assert!(r.allow(ip("192.0.2.9"), later));
        assert!(r.allow(ip("192.0.2.9"), later));
        assert!(!r.allow(ip("192.0.2.9"), later));
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_ipv4_by_itself() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_eq!(source_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(
            source_key(a),
            source_key("2001:db8:1:3::1".parse().unwrap())
        );
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.9".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(source_key(v4), v4);
    }
}
