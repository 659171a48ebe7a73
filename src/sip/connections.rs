//! The table of open stream connections (TCP, TLS, WS, WSS) and their limits.
//!
//! Every accepted connection takes a [`Slot`] (bounded in total and per source
//! IP). A connection that carries SIP is also registered as a flow with a
//! [`ConnectionId`], so that higher layers can send to one particular browser
//! over its own WebSocket, and learn when it closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rsipstack::transport::SipConnection;
use tokio::sync::broadcast;

use super::TransportKind;
use crate::source::source_key;

/// Identifies one stream connection for its whole life; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// What higher layers know about a registered flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The connection's id.
    pub id: ConnectionId,
    /// Its transport.
    pub kind: TransportKind,
    /// Our address on it.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The handle the transaction layer sends through.
    pub connection: SipConnection,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The process-wide connection limit is reached.
    #[error("connection limit reached")]
    Total,
    /// This source IP already has its maximum number of connections.
    #[error("per-address connection limit reached")]
    PerIp,
}

#[derive(Default)]
struct Inner {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    flows: HashMap<ConnectionId, Flow>,
    by_peer: HashMap<(TransportKind, SocketAddr), ConnectionId>,
}

/// Open connections, their limits, and the flows registered on them.
pub struct Connections {
    inner: Mutex<Inner>,
    max_total: usize,
    max_per_ip: usize,
    next_id: AtomicU64,
    closed: broadcast::Sender<ConnectionId>,
}

impl Connections {
    /// An empty table with the given limits.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        let (closed, _) = broadcast::channel(1024);
        Arc::new(Connections {
            inner: Mutex::new(Inner::default()),
            max_total,
            max_per_ip,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counts inconsistent
        // in a way worse than refusing connections, so recover from poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves room for one connection from `ip` (counted with the rest of
    /// its IPv6 /64, [`source_key`]); the slot is freed on drop.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = source_key(ip);
        let mut inner = self.lock();
        if inner.total >= self.max_total {
            return Err(Refused::Total);
        }
        let count = inner.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *count += 1;
        inner.total += 1;
        Ok(Slot {
            table: self.clone(),
            ip,
        })
    }

    /// Registers a SIP flow; it is removed (and announced as closed) when the
    /// returned guard drops.
    pub fn register(
        self: &Arc<Self>,
        kind: TransportKind,
        local: SocketAddr,
        remote: SocketAddr,
        connection: SipConnection,
    ) -> FlowGuard {
        let id = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let flow = Flow {
            id,
            kind,
            local,
            remote,
            connection,
        };
        let mut inner = self.lock();
        inner.by_peer.insert((kind, remote), id);
        inner.flows.insert(id, flow);
        FlowGuard {
            table: self.clone(),
            id,
            kind,
            remote,
        }
    }

    /// The flow with this id, while it is open.
    pub fn flow(&self, id: ConnectionId) -> Option<Flow> {
        self.lock().flows.get(&id).cloned()
    }

    /// The flow a message arrived on, found by transport and peer address.
    pub fn flow_by_peer(&self, kind: TransportKind, remote: SocketAddr) -> Option<Flow> {
        let inner = self.lock();
        inner
            .by_peer
            .get(&(kind, remote))
            .and_then(|id| inner.flows.get(id))
            .cloned()
    }

    /// Number of open connections (slots held).
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Number of registered SIP flows.
    pub fn flows(&self) -> usize {
        self.lock().flows.len()
    }

    /// Announces the id of every flow that closes from now on.
    pub fn subscribe_closed(&self) -> broadcast::Receiver<ConnectionId> {
        self.closed.subscribe()
    }
}

/// One reserved connection slot; dropping it frees the slot.
pub struct Slot {
    table: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(count) = inner.per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A registered flow; dropping it unregisters the flow and announces the close.
pub struct FlowGuard {
    table: Arc<Connections>,
    id: ConnectionId,
    kind: TransportKind,
    remote: SocketAddr,
}

impl FlowGuard {
    /// The flow's id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        {
            let mut inner = self.table.lock();
            inner.flows.remove(&self.id);
            if inner.by_peer.get(&(self.kind, self.remote)) == Some(&self.id) {
                inner.by_peer.remove(&(self.kind, self.remote));
            }
        }
        let _ = self.table.closed.send(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_ip_and_in_total() {
        let table = Connections::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = table.admit(a).unwrap();
        let _s2 = table.admit(a).unwrap();
        assert_eq!(table.admit(a).err(), Some(Refused::PerIp));
        let _s3 = table.admit(b).unwrap();
        assert_eq!(table.admit(b).err(), Some(Refused::Total));
        drop(s1);
        assert_eq!(table.open(), 2);
        assert!(table.admit(a).is_ok());
    }

    #[test]
    fn an_ipv6_64_is_one_source() {
        let table = Connections::new(10, 2);
        let _s1 = table.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let s2 = table.admit("2001:db8:1:2::2".parse().unwrap()).unwrap();
        assert_eq!(
            table.admit("2001:db8:1:2:ffff::3".parse().unwrap()).err(),
            Some(Refused::PerIp)
        );
        assert!(table.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        drop(s2);
        assert!(table.admit("2001:db8:1:2::4".parse().unwrap()).is_ok());
    }
}
