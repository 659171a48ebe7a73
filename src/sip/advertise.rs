//! Which address of ours we write into SIP headers (Via sent-by, Contact,
//! Record-Route) for a given peer. Behind 1:1 NAT (a cloud instance with a
//! public address mapped to its private one), peers outside our own
//! networks must be told the public address; peers inside them (and
//! loopback) the one we actually use.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The networks whose peers reach us directly by default: loopback, RFC
/// 1918, link-local, shared address space (RFC 6598) and IPv6 unique-local.
pub const DEFAULT_LOCAL_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Whether `ip` is in one of [`DEFAULT_LOCAL_NETWORKS`] (loopback or a
/// private range: unreachable from the Internet).
pub fn is_private(ip: IpAddr) -> bool {
    DEFAULT_LOCAL_NETWORKS
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .any(|n| n.contains(&ip))
}

/// The public address to advertise, and to whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertise {
    public: Option<IpAddr>,
    local_networks: Vec<IpNet>,
}

impl Advertise {
    /// Advertises `public` (when set) to peers outside `local_networks`.
    pub fn new(public: Option<IpAddr>, local_networks: Vec<IpNet>) -> Advertise {
        Advertise {
            public,
            local_networks,
        }
    }

    /// Our address `local` (the one we send from) as written for a peer at
    /// `remote`: the public address, same port, when one is set for that
    /// address family and the peer is outside our networks; else `local`.
    pub fn address(&self, local: SocketAddr, remote: IpAddr) -> SocketAddr {
        match self.public {
            Some(public)
                if public.is_ipv4() == local.is_ipv4()
                    && !self.local_networks.iter().any(|n| n.contains(&remote)) =>
            {
                SocketAddr::new(public, local.port())
            }
            _ => local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<IpNet> {
        DEFAULT_LOCAL_NETWORKS
            .iter()
            .map(|n| n.parse().unwrap())
            .collect()
    }

    #[test]
    fn public_peers_get_the_public_address_local_ones_ours() {
        let ours: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        let nat = Advertise::new(Some("203.0.113.7".parse().unwrap()), nets());
        let carrier: IpAddr = "198.51.100.20".parse().unwrap();
        assert_eq!(
            nat.address(ours, carrier),
            "203.0.113.7:5060".parse::<SocketAddr>().unwrap()
        );
        for inside in ["10.1.2.3", "192.168.1.9", "127.0.0.1", "fd00::1"] {
            assert_eq!(nat.address(ours, inside.parse().unwrap()), ours, "{inside}");
        }
        // No IPv6 public address: an IPv6 socket keeps its own.
        let v6: SocketAddr = "[2001:db8::5]:5060".parse().unwrap();
        assert_eq!(nat.address(v6, "2001:db8:1::1".parse().unwrap()), v6);
        // Not configured: always ours.
        assert_eq!(Advertise::default().address(ours, carrier), ours);
    }

    #[test]
    fn private_addresses() {
        for ip in [
            "10.1.1.1",
            "172.31.0.1",
            "192.168.0.1",
            "127.0.0.1",
            "100.64.1.1",
            "fd12::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["172.32.0.1", "198.51.100.20", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
