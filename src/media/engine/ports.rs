//! RTP port allocation: even/odd pairs (RTP on the even port, RTCP on the
//! next, RFC 3550 §11) from a configured range, bound on allocation and
//! returned when the lease drops.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use super::EngineError;
use crate::metrics::Gauge;

/// A port range `first-last` (inclusive), as in `rtp_ports: "20000-29999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (rounded up to even).
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl PortRange {
    /// Parses `first-last`; at least one even/odd pair, above 1023.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("'{text}' is not a range like 20000-29999"))?;
        let (first, last): (u16, u16) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(format!("'{text}' is not a range like 20000-29999")),
        };
        let first = first.saturating_add(first % 2);
        if first < 1024 || last < first.saturating_add(1) {
            return Err(format!(
                "'{text}' must hold at least one even/odd pair of ports above 1023"
            ));
        }
        Ok(PortRange { first, last })
    }

    /// Number of even/odd pairs.
    pub fn pairs(&self) -> usize {
        usize::from((self.last - self.first).div_ceil(2))
    }
}

struct State {
    next: usize,
    used: Vec<bool>,
}

struct Inner {
    ip: IpAddr,
    range: PortRange,
    state: Mutex<State>,
    in_use: Arc<Gauge>,
}

/// Hands out bound port pairs. Cheap to clone.
#[derive(Clone)]
pub struct PortAllocator(Arc<Inner>);

/// A bound RTP/RTCP socket pair and its lease on the ports.
pub struct PortPair {
    /// The RTP socket (even port), non-blocking.
    pub rtp: UdpSocket,
    /// The RTCP socket (RTP port + 1), non-blocking.
    pub rtcp: UdpSocket,
    /// Returns the ports when dropped.
    pub lease: PortLease,
}

impl PortPair {
    /// The RTP port.
    pub fn rtp_port(&self) -> u16 {
        self.lease.port
    }
}

/// Ownership of one port pair; dropping it frees the pair.
pub struct PortLease {
    inner: Arc<Inner>,
    index: usize,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.state.lock()
            && let Some(slot) = state.used.get_mut(self.index)
        {
            *slot = false;
        }
        self.inner.in_use.add(-2);
    }
}

impl PortAllocator {
    /// An allocator binding `ip` within `range`; `in_use` counts ports held.
    pub fn new(ip: IpAddr, range: PortRange, in_use: Arc<Gauge>) -> PortAllocator {
        PortAllocator(Arc::new(Inner {
            ip,
            range,
            state: Mutex::new(State {
                next: 0,
                used: vec![false; range.pairs()],
            }),
            in_use,
        }))
    }

    /// Binds the next free pair, round robin (a port just released is not
    /// reused at once, so late packets of an old call do not reach a new
    /// one). Ports another process holds are skipped.
    pub fn allocate(&self) -> Result<PortPair, EngineError> {
        let inner = &self.0;
        let mut state = inner.state.lock().map_err(|_| EngineError::NoPorts)?;
        let pairs = state.used.len();
        for step in 0..pairs {
            let index = (state.next + step) % pairs;
            if state.used[index] {
                continue;
            }
            let port = inner.range.first + 2 * index as u16;
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(inner.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(inner.ip, port + 1)) else {
                continue;
            };
            if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                continue;
            }
            state.used[index] = true;
            state.next = index + 1;
            inner.in_use.add(2);
            return Ok(PortPair {
                rtp,
                rtcp,
                lease: PortLease {
                    inner: inner.clone(),
                    index,
                    port,
                },
            });
        }
        Err(EngineError::NoPorts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            PortRange::parse("20000-29999"),
            Ok(PortRange {
                first: 20000,
                last: 29999
            })
        );
        assert_eq!(PortRange::parse("20001-20003").unwrap().first, 20002);
        assert_eq!(PortRange::parse("20000-29999").unwrap().pairs(), 5000);
        for bad in ["", "20000", "a-b", "100-200", "3000-3000", "3001-3002"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_are_even_odd_and_come_back() {
        // Find a free window of 4 ports on loopback.
        let base = loop {
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = probe.local_addr().unwrap().port() & !1;
            drop(probe);
            if p > 1024 && p < 65000 {
                break p;
            }
        };
        let gauge = Arc::new(Gauge::default());
        let range = PortRange {
            first: base,
            last: base + 3,
        };
        let alloc = PortAllocator::new(IpAddr::from([127, 0, 0, 1]), range, gauge.clone());
        let Ok(a) = alloc.allocate() else { return }; // port raced away: nothing to test
        assert_eq!(a.rtp_port() % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.rtp_port() + 1);
        assert_eq!(gauge.get(), 2);
        if let Ok(b) = alloc.allocate() {
            assert_ne!(a.rtp_port(), b.rtp_port());
            assert!(matches!(alloc.allocate(), Err(EngineError::NoPorts)));
            drop(b);
        }
        drop(a);
        assert_eq!(gauge.get(), 0);
        assert!(alloc.allocate().is_ok());
    }
}
