//! Completed non-INVITE server transactions of the UDP fast path (RFC 3261
//! §17.2.2), reduced to what retransmission absorption needs.
//!
//! Requests the fast path answers at once (out-of-dialog REGISTER and OPTIONS
//! over UDP, see [`SipCore`](super::SipCore)) never enter the transaction
//! layer we build on. Their transactions are recorded here instead: while the
//! request is being answered (state Trying) a retransmission is discarded;
//! once answered (state Completed) a retransmission gets the same final
//! response again, byte for byte, for Timer J (64·T1 = 32 s on UDP). Nothing
//! else is kept: the key (method, branch, sent-by, RFC 3261 §17.2.3) and the
//! serialized response, in one allocation.
//!
//! Sans-IO: callers pass the current [`Instant`]. Memory is bounded by
//! `max_bytes`: past it the oldest records are dropped before their Timer J,
//! which only matters for a request retransmitted that late (after the first
//! several retransmissions were lost as well); such a request is then
//! processed again, which the registrar tolerates (its digest nonce count
//! makes a replay a `stale` challenge, and CSeq ordering keeps the binding).

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// RFC 3261 Timer J for UDP: 64·T1 with T1 = 500 ms.
pub const TIMER_J_UDP: Duration = Duration::from_secs(32);

/// Bytes counted per record on top of its key and response: the hash-table
/// slot, the expiry-queue entry and the allocator's header.
const RECORD_OVERHEAD: usize = 96;

const SHARDS: usize = 16;

/// The key of a server transaction (RFC 3261 §17.2.3, RFC 3261 branches
/// only): the request method, the top Via's branch and its sent-by, as bytes.
/// Built into a caller-owned buffer so that the hot path allocates nothing.
pub fn write_key(out: &mut Vec<u8>, method: impl Display, branch: &str, sent_by: impl Display) {
    out.clear();
    // Writes into a Vec cannot fail.
    let _ = write!(out, "{method}");
    out.push(0);
    out.extend_from_slice(branch.as_bytes());
    out.push(0);
    let _ = write!(out, "{sent_by}");
}

/// What [`CompletedTransactions::begin`] found for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// A new transaction: answer it, then call [`CompletedTransactions::complete`].
    New(Ticket),
    /// A retransmission. When the transaction is completed, its response was
    /// copied into the caller's buffer (send it again); while it is still
    /// being answered the buffer is left empty (discard the request).
    Retransmission,
    /// The table cannot track this request (disabled, or a 64-bit hash
    /// collision with a completed record of another key): answer it without a
    /// record. (A collision with a record still Trying, a window of
    /// microseconds, is taken for a retransmission: the keyed hash makes that
    /// as unlikely as guessing the key.)
    Untracked,
}

/// Identifies the record a [`Begin::New`] created.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    hash: u64,
    seq: u64,
}

/// One transaction. `data` is empty while the transaction is Trying, and
/// holds key + response once it is Completed.
struct Record {
    seq: u64,
    key_len: u32,
    data: Box<[u8]>,
}

impl Record {
    fn cost(&self) -> usize {
        self.data.len() + RECORD_OVERHEAD
    }
}

/// Hashes a `u64` that is already a keyed hash: identity.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    records: HashMap<u64, Record, BuildHasherDefault<PreHashed>>,
    /// (expiry, hash, seq), oldest first: every record lives equally long.
    expiry: VecDeque<(Instant, u64, u64)>,
    bytes: usize,
    next_seq: u64,
}

impl Shard {
    /// Drops the record the queue entry names, if it is still that record.
    fn drop_record(&mut self, hash: u64, seq: u64) {
        if self.records.get(&hash).is_some_and(|r| r.seq == seq)
            && let Some(record) = self.records.remove(&hash)
        {
            self.bytes -= record.cost();
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, hash, seq)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            self.drop_record(hash, seq);
        }
        if self.records.is_empty() && self.records.capacity() > 1024 {
            self.records.shrink_to(1024);
            self.expiry.shrink_to(1024);
        }
    }
}

/// The completed (and in-progress) transactions of the UDP fast path.
pub struct CompletedTransactions {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    lifetime: Duration,
    shard_budget: usize,
}

impl CompletedTransactions {
    /// A table keeping each record for `lifetime` (Timer J), in at most
    /// `max_bytes` of memory; `max_bytes == 0` disables it.
    pub fn new(lifetime: Duration, max_bytes: usize) -> Self {
        CompletedTransactions {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            lifetime,
            shard_budget: max_bytes / SHARDS,
        }
    }

    /// Whether records are kept at all.
    pub fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits the hash table does not use for its buckets (low) or control bytes (top 7).
        let index = (hash >> 32) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `key` up at `now`. A retransmission of a completed transaction
    /// has its response appended to `out`.
    pub fn begin(&self, key: &[u8], now: Instant, out: &mut Vec<u8>) -> Begin {
        if !self.enabled() {
            return Begin::Untracked;
        }
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        shard.expire(now);
        if let Some(record) = shard.records.get(&hash) {
            if record.data.is_empty() {
                return Begin::Retransmission;
            }
            let (stored_key, response) = record.data.split_at(record.key_len as usize);
            if stored_key != key {
                return Begin::Untracked;
            }
            out.extend_from_slice(response);
            return Begin::Retransmission;
        }
        let seq = shard.next_seq;
        shard.next_seq += 1;
        let record = Record {
            seq,
            key_len: 0,
            data: Box::default(),
        };
        shard.bytes += record.cost();
        shard.records.insert(hash, record);
        shard.expiry.push_back((now + self.lifetime, hash, seq));
        self.trim(&mut shard);
        Begin::New(Ticket { hash, seq })
    }

    /// Records the final response sent for the transaction `ticket` names.
    pub fn complete(&self, ticket: Ticket, key: &[u8], response: &[u8]) {
        let Ok(key_len) = u32::try_from(key.len()) else {
            return self.abandon(ticket);
        };
        let mut shard = self.shard(ticket.hash);
        let Some(record) = shard.records.get_mut(&ticket.hash) else {
            return;
        };
        if record.seq != ticket.seq {
            return;
        }
        let mut data = Vec::with_capacity(key.len() + response.len());
        data.extend_from_slice(key);
        data.extend_from_slice(response);
        let before = record.cost();
        record.key_len = key_len;
        record.data = data.into_boxed_slice();
        let after = record.cost();
        shard.bytes = shard.bytes + after - before;
        self.trim(&mut shard);
    }

    /// Forgets the transaction `ticket` names (it was not answered here).
    pub fn abandon(&self, ticket: Ticket) {
        self.shard(ticket.hash).drop_record(ticket.hash, ticket.seq);
    }

    /// Drops the oldest records while the shard is over its budget.
    fn trim(&self, shard: &mut Shard) {
        while shard.bytes > self.shard_budget {
            let Some((_, hash, seq)) = shard.expiry.pop_front() else {
                break;
            };
            shard.drop_record(hash, seq);
        }
    }

    /// Number of records (Trying and Completed).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).records.len())
            .sum()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the records are counted for, in bytes.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> Vec<u8> {
        let mut k = Vec::new();
        write_key(&mut k, "REGISTER", branch, "10.0.0.1:5060");
        k
    }

    #[test]
    fn retransmission_gets_the_same_response_until_timer_j() {
        let table = CompletedTransactions::new(TIMER_J_UDP, 1 << 20);
        let t0 = Instant::now();
        let k = key("z9hG4bK-1");
        let mut out = Vec::new();
        let Begin::New(ticket) = table.begin(&k, t0, &mut out) else {
            panic!("first sight is new");
        };
        // Retransmission while Trying: discarded.
        assert_eq!(table.begin(&k, t0, &mut out), Begin::Retransmission);
        assert!(out.is_empty());
        table.complete(ticket, &k, b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(
            table.begin(&k, t0 + Duration::from_secs(31), &mut out),
            Begin::Retransmission
        );
        assert_eq!(out, b"SIP/2.0 200 OK\r\n\r\n");
        // Another branch, another method: new transactions.
        out.clear();
        assert!(matches!(
            table.begin(&key("z9hG4bK-2"), t0, &mut out),
            Begin::New(_)
        ));
        let mut options = Vec::new();
        write_key(&mut options, "OPTIONS", "z9hG4bK-1", "10.0.0.1:5060");
        assert!(matches!(table.begin(&options, t0, &mut out), Begin::New(_)));
        // After Timer J the record is gone.
        assert!(matches!(
            table.begin(&k, t0 + TIMER_J_UDP, &mut out),
            Begin::New(_)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_dropping_the_oldest() {
        let table = CompletedTransactions::new(TIMER_J_UDP, 16 * 4096);
        let now = Instant::now();
        let response = vec![b'x'; 500];
        let mut out = Vec::new();
        for i in 0..10_000 {
            let k = key(&format!("z9hG4bK-{i}"));
            if let Begin::New(ticket) = table.begin(&k, now, &mut out) {
                table.complete(ticket, &k, &response);
            }
        }
        assert!(table.bytes() <= 16 * 4096, "{} bytes", table.bytes());
        assert!(table.len() > 50, "recent records kept: {}", table.len());
        // The newest is still answered, the oldest was dropped.
        assert_eq!(
            table.begin(&key("z9hG4bK-9999"), now, &mut out),
            Begin::Retransmission
        );
        out.clear();
        assert!(matches!(
            table.begin(&key("z9hG4bK-0"), now, &mut out),
            Begin::New(_)
        ));
    }

    #[test]
    fn disabled_table_tracks_nothing() {
        let table = CompletedTransactions::new(TIMER_J_UDP, 0);
        let mut out = Vec::new();
        assert_eq!(
            table.begin(&key("z9hG4bK-1"), Instant::now(), &mut out),
            Begin::Untracked
        );
        assert!(table.is_empty());
    }
}
