//! The `turn:` section of the configuration file, its defaults and its
//! validation. See `docs/configuration.md`.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::policy::PeerRule;

/// TURN listener addresses; an empty list turns that transport off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnListen {
    /// STUN/TURN over UDP (default 3478).
    pub udp: Vec<String>,
    /// STUN/TURN over TCP (default 3478).
    pub tcp: Vec<String>,
    /// STUN/TURN over TLS, `turns:` (default 5349).
    pub tls: Vec<String>,
}

impl Default for TurnListen {
    fn default() -> Self {
        let both = |port: u16| vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")];
        TurnListen {
            udp: both(3478),
            tcp: both(3478),
            tls: both(5349),
        }
    }
}

/// A static TURN user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnUser {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// The bundled STUN/TURN server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Run the STUN/TURN server.
    pub enabled: bool,
    /// Listener addresses.
    pub listen: TurnListen,
    /// Realm of the long-term credentials.
    pub realm: String,
    /// Static users (long-term credentials).
    pub users: Vec<TurnUser>,
    /// TURN REST API shared secret; a random one is made at start when unset.
    pub rest_secret: Option<String>,
    /// Lifetime of REST credentials handed out by `/api/ice-servers`, seconds.
    pub rest_ttl_secs: u64,
    /// Relay port range, `MIN-MAX`.
    pub relay_ports: String,
    /// Address IPv4 relay sockets bind to (`0.0.0.0` by default; empty: no IPv4 relays).
    pub relay_ipv4: String,
    /// Address IPv6 relay sockets bind to (`::` by default; empty: no IPv6 relays).
    pub relay_ipv6: String,
    /// IPv4 address given to clients as the relayed address (1:1 NAT); by
    /// default `relay_ipv4` when it is specific, else this host's first
    /// non-loopback IPv4 address.
    pub advertised_ipv4: Option<String>,
    /// IPv6 counterpart of `advertised_ipv4`.
    pub advertised_ipv6: Option<String>,
    /// Host name or address written in the URLs of `/api/ice-servers`; by
    /// default the host the browser used to reach us (its `Host` header).
    pub public_host: Option<String>,
    /// Peers allowed despite the built-in deny list: `ADDR`, `CIDR`,
    /// `ADDR:PORT` or `ADDR:PORT-PORT` (e.g. the gateway's own media ports).
    pub allowed_peers: Vec<String>,
    /// Peers refused in addition to the built-in deny list.
    pub denied_peers: Vec<String>,
    /// Allow relaying to this server's own advertised relay addresses and
    /// ports (two browsers both behind TURN, talking through it).
    pub allow_relay_to_relay: bool,
    /// Allocations one user may hold at once.
    pub user_quota: usize,
    /// Allocations in total.
    pub total_quota: usize,
    /// Peer addresses one allocation may hold permissions for at once.
    pub max_permissions: usize,
    /// Allocate requests per second per source address (0: unlimited).
    pub allocate_rate: u32,
    /// Allocate requests a source may send in a burst.
    pub allocate_burst: u32,
    /// Allocation lifetime granted by default, seconds.
    pub default_lifetime_secs: u64,
    /// Longest allocation lifetime granted, seconds.
    pub max_lifetime_secs: u64,
    /// How long a nonce stays valid, seconds.
    pub nonce_lifetime_secs: u64,
    /// Open TCP/TLS connections at most.
    pub max_connections: usize,
    /// Open TCP/TLS connections from one source (IPv4 address or IPv6 /64).
    pub max_connections_per_ip: usize,
    /// A TCP/TLS connection whose client holds no allocation is closed
    /// after this many seconds without a message (with one: the longest
    /// allocation lifetime plus a minute).
    pub idle_timeout_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            listen: TurnListen::default(),
            realm: "switchboard".into(),
            users: Vec::new(),
            rest_secret: None,
            rest_ttl_secs: 86_400,
            relay_ports: "49152-65535".into(),
            relay_ipv4: "0.0.0.0".into(),
            relay_ipv6: "::".into(),
            advertised_ipv4: None,
            advertised_ipv6: None,
            public_host: None,
            allowed_peers: Vec::new(),
            denied_peers: Vec::new(),
            allow_relay_to_relay: true,
            user_quota: 10,
            total_quota: 10_000,
            max_permissions: 100,
            allocate_rate: 20,
            allocate_burst: 100,
            default_lifetime_secs: 600,
            max_lifetime_secs: 3_600,
            nonce_lifetime_secs: 3_600,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            idle_timeout_secs: 60,
        }
    }
}

/// The settings in usable form.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<SocketAddr>,
    /// Relay port range.
    pub ports: (u16, u16),
    /// IPv4 relay bind address.
    pub relay_ipv4: Option<IpAddr>,
    /// IPv6 relay bind address.
    pub relay_ipv6: Option<IpAddr>,
    /// Configured advertised IPv4 address.
    pub advertised_ipv4: Option<IpAddr>,
    /// Configured advertised IPv6 address.
    pub advertised_ipv6: Option<IpAddr>,
    /// Allow rules.
    pub allowed: Vec<PeerRule>,
    /// Extra deny rules.
    pub denied: Vec<PeerRule>,
}

impl TurnConfig {
    /// Checks every value; each problem is (key, message).
    pub fn resolve(&self) -> Result<Resolved, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let mut addrs = |key: &'static str, list: &[String]| -> Vec<SocketAddr> {
            list.iter()
                .filter_map(|a| match a.parse() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        problems.push((
                            key,
                            format!("turn.listen.{key}: '{a}' is not an IP:PORT address"),
                        ));
                        None
                    }
                })
                .collect()
        };
        let udp = addrs("udp", &self.listen.udp);
        let tcp = addrs("tcp", &self.listen.tcp);
        let tls = addrs("tls", &self.listen.tls);
        let ports = self
            .relay_ports
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| *a > 0 && a <= b);
        if ports.is_none() {
            problems.push((
                "relay_ports",
                format!(
                    "turn.relay_ports: '{}' is not a range MIN-MAX of ports (1..=65535)",
                    self.relay_ports
                ),
            ));
        }
        let mut ip = |key: &'static str, value: Option<&str>, v6: bool| -> Option<IpAddr> {
            let value = value?.trim();
            if value.is_empty() {
                return None;
            }
            match value.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == v6 => Some(ip),
                _ => {
                    problems.push((
                        key,
                        format!(
                            "turn.{key}: '{value}' is not an IPv{} address",
                            if v6 { 6 } else { 4 }
                        ),
                    ));
                    None
                }
            }
        };
        let relay_ipv4 = ip("relay_ipv4", Some(&self.relay_ipv4), false);
        let relay_ipv6 = ip("relay_ipv6", Some(&self.relay_ipv6), true);
        let advertised_ipv4 = ip("advertised_ipv4", self.advertised_ipv4.as_deref(), false);
        let advertised_ipv6 = ip("advertised_ipv6", self.advertised_ipv6.as_deref(), true);
        let mut rules = |key: &'static str, list: &[String]| -> Vec<PeerRule> {
            list.iter()
                .filter_map(|r| match PeerRule::parse(r) {
                    Ok(rule) => Some(rule),
                    Err(e) => {
                        problems.push((key, format!("turn.{key}: {e}")));
                        None
                    }
                })
                .collect()
        };
        let allowed = rules("allowed_peers", &self.allowed_peers);
        let denied = rules("denied_peers", &self.denied_peers);
        let mut range = |key: &'static str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                problems.push((
                    key,
                    format!("turn.{key}: {value} is out of range ({min}..={max})"),
                ));
            }
        };
        range("rest_ttl_secs", self.rest_ttl_secs, 60, 30 * 86_400);
        range("user_quota", self.user_quota as u64, 1, 1_000_000);
        range("total_quota", self.total_quota as u64, 1, 10_000_000);
        range("max_permissions", self.max_permissions as u64, 1, 10_000);
        range(
            "default_lifetime_secs",
            self.default_lifetime_secs,
            30,
            86_400,
        );
        range(
            "max_lifetime_secs",
            self.max_lifetime_secs,
            self.default_lifetime_secs,
            86_400,
        );
        range("nonce_lifetime_secs", self.nonce_lifetime_secs, 30, 86_400);
        range(
            "max_connections",
            self.max_connections as u64,
            1,
            10_000_000,
        );
        range(
            "max_connections_per_ip",
            self.max_connections_per_ip as u64,
            1,
            10_000_000,
        );
        range("idle_timeout_secs", self.idle_timeout_secs, 1, 86_400);
        if self.realm.trim().is_empty() || self.realm.contains('"') {
            problems.push((
                "realm",
                "turn.realm: must be non-empty text without quotes".into(),
            ));
        }
        if matches!(&self.rest_secret, Some(s) if s.is_empty()) {
            problems.push((
                "rest_secret",
                "turn.rest_secret: must not be empty (omit it for a random one)".into(),
            ));
        }
        if self
            .users
            .iter()
            .any(|u| u.username.is_empty() || u.password.is_empty())
        {
            problems.push((
                "users",
                "turn.users: username and password must not be empty".into(),
            ));
        }
        if relay_ipv4.is_none() && relay_ipv6.is_none() && self.enabled {
            problems.push((
                "relay_ipv4",
                "turn: relay_ipv4 and relay_ipv6 are both empty".into(),
            ));
        }
        match ports {
            Some(ports) if problems.is_empty() => Ok(Resolved {
                udp,
                tcp,
                tls,
                ports,
                relay_ipv4,
                relay_ipv6,
                advertised_ipv4,
                advertised_ipv6,
                allowed,
                denied,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let r = TurnConfig::default().resolve().unwrap();
        assert_eq!(r.udp[0].port(), 3478);
        assert_eq!(r.tls[0].port(), 5349);
        assert_eq!(r.ports, (49152, 65535));
    }

    #[test]
    fn bad_values_are_named() {
        let c = TurnConfig {
            relay_ports: "9-1".into(),
            allowed_peers: vec!["x".into()],
            advertised_ipv4: Some("::1".into()),
            ..TurnConfig::default()
        };
        let keys: Vec<&str> = c
            .resolve()
            .unwrap_err()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["relay_ports", "advertised_ipv4", "allowed_peers"]);
    }
}
