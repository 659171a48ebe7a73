//! Which peers a relay may reach.
//!
//! By default a relay refuses peers in loopback, RFC 1918, link-local,
//! CGNAT (100.64/10), multicast, unspecified, reserved and IPv6
//! loopback/ULA/link-local space, IPv4-mapped forms included: a public TURN
//! server must not become a way into the network it runs in. Configured
//! allow rules win over the deny list; configured deny rules are added to it.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// An address range with an optional port range: `10.0.0.0/8`,
/// `127.0.0.1`, `127.0.0.1:40000-40100`, `[::1]:5004`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRule {
    net: IpNet,
    ports: (u16, u16),
}

impl PeerRule {
    /// Parses one rule.
    pub fn parse(text: &str) -> Result<PeerRule, String> {
        let text = text.trim();
        let bad = || format!("'{text}' is not an address, CIDR range or ADDRESS:PORT[-PORT]");
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':'))
        } else if text.matches(':').count() == 1 {
            let (host, ports) = text.split_once(':').ok_or_else(bad)?;
            (host, Some(ports))
        } else {
            (text, None)
        };
        let net: IpNet = match host.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(host.parse::<IpAddr>().map_err(|_| bad())?),
        };
        let ports = match ports {
            None => (0, u16::MAX),
            Some(p) => {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                let lo: u16 = lo.parse().map_err(|_| bad())?;
                let hi: u16 = hi.parse().map_err(|_| bad())?;
                if lo > hi {
                    return Err(bad());
                }
                (lo, hi)
            }
        };
        Ok(PeerRule {
            net: net.trunc(),
            ports,
        })
    }

    /// One address with a port range.
    pub fn host(ip: IpAddr, ports: (u16, u16)) -> PeerRule {
        PeerRule {
            net: IpNet::from(canonical(ip)),
            ports,
        }
    }

    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(&ip) && (self.ports.0..=self.ports.1).contains(&port)
    }
}

/// The ranges refused by default (RFC 6890 special-purpose space a relay
/// has no business reaching).
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The peer address filter.
#[derive(Debug, Clone)]
pub struct PeerFilter {
    allow: Vec<PeerRule>,
    deny: Vec<PeerRule>,
}

impl PeerFilter {
    /// The default deny list plus `deny`, overridden by `allow`.
    pub fn new(allow: Vec<PeerRule>, deny: Vec<PeerRule>) -> Self {
        let mut all = DEFAULT_DENY
            .iter()
            .map(|r| PeerRule::parse(r).unwrap_or_else(|e| unreachable!("built-in rule: {e}")))
            .collect::<Vec<_>>();
        all.extend(deny);
        PeerFilter { allow, deny: all }
    }

    /// Adds an allow rule (the relay's own address and port range).
    pub fn allow(&mut self, rule: PeerRule) {
        self.allow.push(rule);
    }

    /// Whether a relay may exchange packets with `peer`.
    pub fn permits(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        let port = peer.port();
        if self.allow.iter().any(|r| r.matches(ip, port)) {
            return true;
        }
        !self.deny.iter().any(|r| r.matches(ip, port))
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) IPv6
/// addresses are judged as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let o = v6.octets();
            if o[..12].iter().all(|b| *b == 0) && !(o[12..15].iter().all(|b| *b == 0)) {
                return IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            ip
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str]) -> PeerFilter {
        PeerFilter::new(
            allow.iter().map(|r| PeerRule::parse(r).unwrap()).collect(),
            vec![],
        )
    }

    #[test]
    fn special_ranges_are_refused_by_default() {
        let f = filter(&[]);
        for peer in [
            "127.0.0.1:3480",
            "10.0.0.1:1",
            "172.16.5.4:1",
            "192.168.1.1:1",
            "169.254.1.1:1",
            "100.64.0.1:1",
            "224.0.0.251:5353",
            "0.0.0.0:1",
            "255.255.255.255:1",
            "[::1]:1",
            "[::]:1",
            "[fc00::1]:1",
            "[fd12::1]:1",
            "[fe80::1]:1",
            "[ff02::1]:1",
            "[::ffff:127.0.0.1]:1",
            "[::ffff:10.0.0.1]:1",
            "[::ffff:192.168.0.1]:1",
        ] {
            assert!(!f.permits(peer.parse().unwrap()), "{peer} must be refused");
        }
        for peer in [
            "8.8.8.8:53",
            "192.0.2.1:5000",
            "[2001:db8::1]:1",
            "[::ffff:8.8.8.8]:1",
        ] {
            assert!(f.permits(peer.parse().unwrap()), "{peer} must be allowed");
        }
    }

    #[test]
    fn allow_rules_override_with_ports() {
        let f = filter(&["127.0.0.1:40000-40010", "10.0.0.0/8"]);
        assert!(f.permits("127.0.0.1:40005".parse().unwrap()));
        assert!(!f.permits("127.0.0.1:40011".parse().unwrap()));
        assert!(f.permits("10.1.2.3:9".parse().unwrap()));
        assert!(f.permits("[::ffff:10.1.2.3]:9".parse().unwrap()));
        assert!(PeerRule::parse("[::1]:5004").is_ok());
        assert!(PeerRule::parse("fe80::/10").is_ok());
        assert!(PeerRule::parse("nonsense").is_err());
        assert!(PeerRule::parse("1.2.3.4:9-1").is_err());
    }
}
