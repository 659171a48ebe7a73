//! The live trunk table: the configuration in force, each trunk's status
//! (registration, health) and its call counters. Replaced as a whole on
//! reload; a trunk that keeps its name keeps its counters and status.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::config::TrunkConfig;
use super::tls::TrunkTlsError;
use crate::sip::outbound::TlsClient;

/// A trunk's health and registration, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrunkStatus {
    /// False once OPTIONS probing found it unreachable (or registration
    /// failed for good); a trunk that is down is skipped by failover.
    pub down: bool,
    /// Why it is down, or the last registration problem.
    pub reason: Option<String>,
    /// Registered (when registration is configured).
    pub registered: bool,
    /// Seconds since the Unix epoch when the registration expires.
    pub registered_until: Option<u64>,
}

/// Why a call was not allowed on a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefused {
    /// `max_calls` reached.
    #[error("too many concurrent calls")]
    Calls,
    /// `max_cps` reached.
    #[error("too many calls per second")]
    Rate,
    /// The trunk is down.
    #[error("trunk is down")]
    Down,
}

/// One trunk at run time.
#[derive(Debug)]
pub struct Trunk {
    /// Its configuration.
    pub config: TrunkConfig,
    /// Shared with the trunk's successor after a reload (same name).
    status: Arc<Mutex<TrunkStatus>>,
    calls: Arc<AtomicU32>,
    /// Start of the current one-second window and calls started in it.
    window: Mutex<(Instant, u32)>,
    /// Addresses `host` resolved to (for recognising inbound requests);
    /// read for every SIP message by the rate limit's exemption, so not locked.
    resolved: Arc<ArcSwap<Vec<IpAddr>>>,
    /// The TLS client, built on first use.
    tls: TlsCache,
}

/// The lazily built TLS client of a trunk.
#[derive(Default)]
struct TlsCache(std::sync::OnceLock<Result<TlsClient, TrunkTlsError>>);

impl std::fmt::Debug for TlsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "TlsCache(built)"
        } else {
            "TlsCache"
        })
    }
}

/// What `GET /api/trunks` shows of one trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrunkReport {
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    /// Not down (see docs/trunks.md for what counts).
    pub up: bool,
    /// Why it is down, or the last registration problem.
    pub reason: Option<String>,
    /// Whether registration is configured.
    pub register: bool,
    /// Registered now.
    pub registered: bool,
    /// Unix time (seconds) the registration expires.
    pub registered_until: Option<u64>,
    /// Calls in progress.
    pub active_calls: u32,
    /// OPTIONS probe interval, seconds (0: no probing).
    pub options_interval: u32,
}

/// Holds one call slot on a trunk; dropping it frees the slot.
#[derive(Debug)]
pub struct CallPermit {
    calls: Arc<AtomicU32>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        self.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Trunk {
    /// A trunk that has not been probed yet (up).
    pub fn new(config: TrunkConfig) -> Trunk {
        let resolved = config.host.parse::<IpAddr>().into_iter().collect();
        Trunk {
            config,
            status: Arc::new(Mutex::new(TrunkStatus::default())),
            calls: Arc::new(AtomicU32::new(0)),
            window: Mutex::new((Instant::now(), 0)),
            resolved: Arc::new(ArcSwap::from_pointee(resolved)),
            tls: TlsCache::default(),
        }
    }

    /// The trunk's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The current status.
    pub fn status(&self) -> TrunkStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the status.
    pub fn update_status(&self, f: impl FnOnce(&mut TrunkStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Whether failover may use it.
    pub fn is_up(&self) -> bool {
        !self.status().down
    }

    /// Calls in progress on this trunk.
    pub fn active_calls(&self) -> u32 {
        self.calls.load(Ordering::Acquire)
    }

    /// Takes a call slot for a call to the trunk, checking state and limits.
    pub fn try_acquire(&self, now: Instant) -> Result<CallPermit, LimitRefused> {
        if !self.is_up() {
            return Err(LimitRefused::Down);
        }
        self.take_slot(now)
    }

    /// Takes a call slot for a call from the trunk: the same `max_calls` and
    /// `max_cps` as calls to it, whatever the probes say (it just reached us).
    pub fn try_acquire_inbound(&self, now: Instant) -> Result<CallPermit, LimitRefused> {
        self.take_slot(now)
    }

    fn take_slot(&self, now: Instant) -> Result<CallPermit, LimitRefused> {
        let max = self.config.max_calls;
        let previous = self.calls.fetch_add(1, Ordering::AcqRel);
        let permit = CallPermit {
            calls: self.calls.clone(),
        };
        if max > 0 && previous >= max {
            return Err(LimitRefused::Calls);
        }
        if self.config.max_cps > 0 {
            let mut window = self.window.lock().map_err(|_| LimitRefused::Rate)?;
            if now.duration_since(window.0) >= Duration::from_secs(1) {
                *window = (now, 0);
            }
            if window.1 >= self.config.max_cps {
                return Err(LimitRefused::Rate);
            }
            window.1 += 1;
        }
        Ok(permit)
    }

    /// Records the addresses `host` resolves to.
    pub fn set_resolved(&self, addrs: Vec<IpAddr>) {
        self.resolved.store(Arc::new(addrs));
    }

    /// Whether a request from `ip` comes from this trunk: one of its
    /// `inbound` networks, or (none configured) an address of its host or
    /// outbound proxy.
    pub fn matches_source(&self, ip: IpAddr) -> bool {
        if !self.config.inbound.is_empty() {
            return self.config.allows_inbound(ip);
        }
        self.resolved.load().contains(&ip)
    }

    /// Whether `ip` is any address of this trunk: its `inbound` networks,
    /// where its calls come from, and what its host and outbound proxy
    /// resolve to, where the answers to our requests come from.
    pub fn owns_address(&self, ip: IpAddr) -> bool {
        self.config.allows_inbound(ip) || self.resolved.load().contains(&ip)
    }

    /// Whether a request that arrived over `kind` from `remote` comes from
    /// this trunk. Without `inbound` networks, a UDP request must also come
    /// from the trunk's port (carriers send from their signalling port), so
    /// that users behind the carrier's address are not taken for it.
    /// WebSocket clients are never trunks.
    pub fn matches(&self, kind: crate::sip::TransportKind, remote: std::net::SocketAddr) -> bool {
        use crate::sip::TransportKind::*;
        match kind {
            Ws | Wss => false,
            _ if !self.config.inbound.is_empty() => self.config.allows_inbound(remote.ip()),
            Udp => self.matches_source(remote.ip()) && remote.port() == self.config.port(),
            Tcp | Tls => self.matches_source(remote.ip()),
        }
    }

    /// The TLS client for this trunk (built once from its `tls` settings).
    pub fn tls_client(&self) -> Result<TlsClient, TrunkTlsError> {
        self.tls
            .0
            .get_or_init(|| super::tls::client(&self.config))
            .clone()
    }

    /// The trunk as `GET /api/trunks` shows it.
    pub fn report(&self) -> TrunkReport {
        let status = self.status();
        TrunkReport {
            name: self.config.name.clone(),
            host: self.config.host.clone(),
            port: self.config.port(),
            transport: self.config.transport.kind().as_str(),
            up: !status.down,
            reason: status.reason,
            register: self.config.register.is_some(),
            registered: status.registered,
            registered_until: status.registered_until,
            active_calls: self.active_calls(),
            options_interval: self.config.options_interval,
        }
    }

    /// Shares the counters and status of the trunk it replaces (and its
    /// resolved addresses while the host stays the same).
    fn inherit(mut self, old: &Trunk) -> Trunk {
        self.calls = old.calls.clone();
        self.status = old.status.clone();
        if self.config.host == old.config.host {
            self.resolved = old.resolved.clone();
        }
        self
    }
}

/// Every configured trunk, replaceable at run time.
#[derive(Debug)]
pub struct Trunks {
    current: ArcSwap<Vec<Arc<Trunk>>>,
    /// Bumped by every [`Trunks::replace`], for the registration manager.
    version: tokio::sync::watch::Sender<u64>,
}

impl Trunks {
    /// A table of these trunks.
    pub fn new(configs: Vec<TrunkConfig>) -> Arc<Trunks> {
        Arc::new(Trunks {
            current: ArcSwap::from_pointee(
                configs.into_iter().map(Trunk::new).map(Arc::new).collect(),
            ),
            version: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The trunk of this name.
    pub fn get(&self, name: &str) -> Option<Arc<Trunk>> {
        self.current
            .load()
            .iter()
            .find(|t| t.name() == name)
            .cloned()
    }

    /// Every trunk.
    pub fn all(&self) -> Vec<Arc<Trunk>> {
        self.current.load().iter().cloned().collect()
    }

    /// Names of every trunk.
    pub fn names(&self) -> Vec<String> {
        self.current
            .load()
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }

    /// The trunk a request from `ip` belongs to.
    pub fn identify(&self, ip: IpAddr) -> Option<Arc<Trunk>> {
        self.current
            .load()
            .iter()
            .find(|t| t.matches_source(ip))
            .cloned()
    }

    /// Whether `ip` is an address of a trunk ([`Trunk::owns_address`]).
    pub fn knows(&self, ip: IpAddr) -> bool {
        self.current.load().iter().any(|t| t.owns_address(ip))
    }

    /// The trunk a request that arrived over `kind` from `remote` belongs to
    /// (see [`Trunk::matches`]).
    pub fn identify_request(
        &self,
        kind: crate::sip::TransportKind,
        remote: std::net::SocketAddr,
    ) -> Option<Arc<Trunk>> {
        self.current
            .load()
            .iter()
            .find(|t| t.matches(kind, remote))
            .cloned()
    }

    /// Replaces the configuration; trunks that keep their name keep their
    /// counters and status.
    pub fn replace(&self, configs: Vec<TrunkConfig>) {
        let old = self.current.load();
        let next = configs
            .into_iter()
            .map(|c| {
                let fresh = Trunk::new(c);
                match old.iter().find(|t| t.name() == fresh.name()) {
                    Some(previous) => Arc::new(fresh.inherit(previous)),
                    None => Arc::new(fresh),
                }
            })
            .collect();
        self.current.store(Arc::new(next));
        self.version.send_modify(|v| *v += 1);
    }

    /// Notified after every [`replace`](Self::replace).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every trunk as `GET /api/trunks` shows it.
    pub fn report(&self) -> Vec<TrunkReport> {
        self.current.load().iter().map(|t| t.report()).collect()
    }
}

/// Trunks send at the rate their calls need: the per-source message limit
/// (`limits.source_rate`) leaves them alone.
impl crate::sip::RateExempt for Trunks {
    fn exempt(&self, ip: IpAddr) -> bool {
        self.knows(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> TrunkConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn limits_and_permits() {
        let t = Trunk::new(config(
            "name: a\nhost: 192.0.2.1\nmax_calls: 2\nmax_cps: 3\n",
        ));
        let now = Instant::now();
        let a = t.try_acquire(now).unwrap();
        let _b = t.try_acquire(now).unwrap();
        assert_eq!(t.try_acquire(now).unwrap_err(), LimitRefused::Calls);
        drop(a);
        assert_eq!(t.active_calls(), 1);
        let _c = t.try_acquire(now).unwrap();
        drop(_c);
        // Three calls were started in this second.
        assert_eq!(t.try_acquire(now).unwrap_err(), LimitRefused::Rate);
        assert!(t.try_acquire(now + Duration::from_secs(1)).is_ok());
        t.update_status(|s| s.down = true);
        assert_eq!(
            t.try_acquire(now + Duration::from_secs(5)).unwrap_err(),
            LimitRefused::Down
        );
    }

    #[test]
    fn identify_by_host_or_inbound_networks() {
        let trunks = Trunks::new(vec![
            config("name: a\nhost: 192.0.2.1\n"),
            config("name: b\nhost: carrier.example\ninbound: [198.51.100.0/24]\n"),
        ]);
        assert_eq!(
            trunks
                .identify("192.0.2.1".parse().unwrap())
                .unwrap()
                .name(),
            "a"
        );
        assert_eq!(
            trunks
                .identify("198.51.100.7".parse().unwrap())
                .unwrap()
                .name(),
            "b"
        );
        assert!(trunks.identify("192.0.2.2".parse().unwrap()).is_none());
        let a = trunks.get("a").unwrap();
        let _permit = a.try_acquire(Instant::now()).unwrap();
        trunks.replace(vec![config("name: a\nhost: 192.0.2.1\nmax_calls: 5\n")]);
        assert_eq!(trunks.get("a").unwrap().active_calls(), 1);
        assert!(trunks.get("b").is_none());
    }
}
