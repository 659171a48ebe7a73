//! Where bindings live: the [`LocationStore`] trait and its in-memory
//! implementation, the embedded default (a shared store for several nodes
//! implements the same trait later).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use super::Binding;
use crate::sip::ConnectionId;

/// Storage of bindings per address of record (`user@domain`).
pub trait LocationStore: Send + Sync {
    /// Runs `change` on the bindings of `aor` atomically (no other update of the
    /// same AOR interleaves). Returns what `change` returns.
    fn update(
        &self,
        aor: &str,
        change: &mut dyn FnMut(&mut Vec<Binding>) -> UpdateResult,
    ) -> UpdateResult;
    /// The bindings of `aor` that are live at `now`.
    fn lookup(&self, aor: &str, now: u64) -> Vec<Binding>;
    /// Removes every binding made over the connection `flow` (it closed).
    fn remove_flow(&self, flow: ConnectionId) -> usize;
    /// Removes expired bindings; returns how many.
    fn purge_expired(&self, now: u64) -> usize;
    /// Number of bindings stored.
    fn len(&self) -> usize;
    /// Whether no binding is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an update closure reports back (kept concrete so the trait stays object-safe).
pub type UpdateResult = Result<super::Applied, super::RegisterError>;

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    aors: HashMap<String, Vec<Binding>>,
    flows: HashMap<ConnectionId, Vec<String>>,
}

/// Bindings in memory, in 16 independently locked shards.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl MemoryStore {
    fn shard(&self, aor: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(aor) as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shard {
    fn reindex(&mut self, aor: &str, before: &[Option<ConnectionId>], after: &[Binding]) {
        for flow in before.iter().flatten() {
            if !after.iter().any(|b| b.flow == Some(*flow))
                && let Some(list) = self.flows.get_mut(flow)
            {
                list.retain(|a| a != aor);
                if list.is_empty() {
                    self.flows.remove(flow);
                }
            }
        }
        for flow in after.iter().filter_map(|b| b.flow) {
            let list = self.flows.entry(flow).or_default();
            if !list.iter().any(|a| a == aor) {
                list.push(aor.to_string());
            }
        }
    }
}

impl LocationStore for MemoryStore {
    fn update(
        &self,
        aor: &str,
        change: &mut dyn FnMut(&mut Vec<Binding>) -> UpdateResult,
    ) -> UpdateResult {
        let mut shard = self.shard(aor);
        let mut bindings = shard.aors.remove(aor).unwrap_or_default();
        let before: Vec<Option<ConnectionId>> = bindings.iter().map(|b| b.flow).collect();
        let result = change(&mut bindings);
        shard.reindex(aor, &before, &bindings);
        if !bindings.is_empty() {
            shard.aors.insert(aor.to_string(), bindings);
        }
        result
    }

    fn lookup(&self, aor: &str, now: u64) -> Vec<Binding> {
        let shard = self.shard(aor);
        shard
            .aors
            .get(aor)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn remove_flow(&self, flow: ConnectionId) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Some(aors) = shard.flows.remove(&flow) else {
                continue;
            };
            for aor in aors {
                if let Some(list) = shard.aors.get_mut(&aor) {
                    let before = list.len();
                    list.retain(|b| b.flow != Some(flow));
                    removed += before - list.len();
                    if list.is_empty() {
                        shard.aors.remove(&aor);
                    }
                }
            }
        }
        removed
    }

    fn purge_expired(&self, now: u64) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let mut emptied = Vec::new();
            let mut dead_flows = Vec::new();
            for (aor, list) in shard.aors.iter_mut() {
                let before = list.len();
                list.retain(|b| {
                    let live = b.expires_at > now;
                    if !live && let Some(flow) = b.flow {
                        dead_flows.push((flow, aor.clone()));
                    }
                    live
                });
                removed += before - list.len();
                if list.is_empty() {
                    emptied.push(aor.clone());
                }
            }
            for aor in emptied {
                shard.aors.remove(&aor);
            }
            for (flow, aor) in dead_flows {
                let still_used = shard
                    .aors
                    .get(&aor)
                    .is_some_and(|l| l.iter().any(|b| b.flow == Some(flow)));
                if !still_used && let Some(list) = shard.flows.get_mut(&flow) {
                    list.retain(|a| a != &aor);
                    if list.is_empty() {
                        shard.flows.remove(&flow);
                    }
                }
            }
        }
        removed
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .aors
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::{RegisterRequest, RegistrarConfig, apply, contact::parse_contacts};
    use crate::sip::TransportKind;

    fn register(
        store: &MemoryStore,
        aor: &str,
        contact: &str,
        flow: Option<u64>,
        expires: u64,
        now: u64,
    ) {
        let request = RegisterRequest {
            contacts: parse_contacts([contact]).unwrap(),
            expires: Some(expires),
            call_id: format!("{aor}-{contact}"),
            cseq: 1,
            path: vec![],
            outbound: false,
            flow: flow.map(ConnectionId),
            transport: TransportKind::Ws,
            source: "127.0.0.1:1".parse().unwrap(),
        };
        store
            .update(aor, &mut |b| {
                apply(b, &request, &RegistrarConfig::default(), now)
            })
            .unwrap();
    }

    #[test]
    fn closing_a_flow_removes_its_bindings_at_once() {
        let store = MemoryStore::default();
        register(&store, "1001@d", "<sip:a@x.invalid>", Some(7), 600, 0);
        register(&store, "1001@d", "<sip:b@y.invalid>", Some(8), 600, 0);
        register(&store, "1002@d", "<sip:c@z.invalid>", Some(7), 600, 0);
        assert_eq!(store.len(), 3);
        assert_eq!(store.remove_flow(ConnectionId(7)), 2);
        assert_eq!(store.lookup("1001@d", 1).len(), 1);
        assert!(store.lookup("1002@d", 1).is_empty());
        assert_eq!(store.remove_flow(ConnectionId(7)), 0);
    }

    #[test]
    fn bindings_expire_on_time() {
        let store = MemoryStore::default();
        register(&store, "1001@d", "<sip:a@h>", None, 60, 100);
        assert_eq!(store.lookup("1001@d", 159).len(), 1);
        assert!(store.lookup("1001@d", 160).is_empty());
        assert_eq!(store.purge_expired(160), 1);
        assert!(store.is_empty());
    }
}
