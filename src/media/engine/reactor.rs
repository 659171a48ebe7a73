//! The media threads: each runs one level-triggered `epoll` loop that owns
//! a share of the rooms ([`RoomTask`]s), their leg sockets and their timers.
//!
//! Why not tokio tasks: relaying a packet costs two system calls (receive,
//! send) and little else, so the driver's own work shows. A tokio task per
//! room paid, per packet, a wake-up, a poll, and a third system call (the
//! receive that ends in `EAGAIN`, which an edge-triggered reactor needs to
//! re-arm). Here a readable socket is reported again while it holds
//! datagrams, so each wake-up reads one and nothing ends in `EAGAIN`; one
//! `epoll_wait` serves every ready socket of every room on the thread.
//!
//! Per thread: an `eventfd` wakes the loop for work from signalling (a new
//! room; a room's command channel has something, or its last handle was
//! dropped: the channel's waker queues the room's key); a binary heap of
//! (deadline, room) gives the `epoll_wait` timeout (stale entries are
//! skipped when they come up). Epoll data is `room key << 32 | fd`.
//!
//! A new room goes to the first thread holding fewer than `fill` rooms
//! (packed: fewer, fuller batches per wake-up at low load), else to the
//! thread with the fewest. The threads stop when the
//! [`MediaThreads`] is dropped (the engine), ending the rooms they hold.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, Event, EventData, EventFlags};
use rustix::event::{EventfdFlags, eventfd};
use tracing::{debug, error, warn};

use super::EngineError;
use super::pacer::{Next, Pacer};
use super::room_task::{RoomTask, Scratch};
use crate::media::prefetch::prefetch;

/// Epoll data of a thread's own eventfd.
const WAKE_TOKEN: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Work handed to a thread from signalling.
#[derive(Default)]
struct Pending {
    /// Rooms to adopt.
    new: Vec<RoomTask>,
    /// Rooms whose command channel woke (may repeat; may be stale).
    woken: Vec<u32>,
    stop: bool,
}

/// A thread's inbox and the eventfd that rings it.
struct Inbox {
    fd: OwnedFd,
    pending: Mutex<Pending>,
}

impl Inbox {
    fn post(&self, f: impl FnOnce(&mut Pending)) {
        let ring = {
            let Ok(mut p) = self.pending.lock() else {
                return;
            };
            let was_empty = p.new.is_empty() && p.woken.is_empty() && !p.stop;
            f(&mut p);
            was_empty
        };
        // Only the first item since the thread last looked rings: the thread
        // reads the eventfd before it takes the inbox, so none is missed.
        if ring {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }
}

/// Queues a room's key on its thread when its command channel wakes.
struct RoomWaker {
    key: u32,
    inbox: Arc<Inbox>,
}

impl Wake for RoomWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let key = self.key;
        self.inbox.post(|p| p.woken.push(key));
    }
}

/// How a room registers its sockets with its thread's epoll.
pub(super) struct Watch {
    ep: Arc<OwnedFd>,
    key: u32,
}

impl Watch {
    /// Watches `socket` for reading (level-triggered).
    pub(super) fn add(&self, socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let data = EventData::new_u64(token(self.key, socket));
        epoll::add(&*self.ep, socket, data, EventFlags::IN)?;
        Ok(())
    }

    /// Stops watching `socket` (before it leaves the room open).
    pub(super) fn remove(&self, socket: BorrowedFd<'_>) {
        let _ = epoll::delete(&*self.ep, socket);
    }
}

fn io(e: rustix::io::Errno) -> EngineError {
    EngineError::Io(e.into())
}

fn token(key: u32, socket: BorrowedFd<'_>) -> u64 {
    use std::os::fd::AsRawFd;
    (u64::from(key) << 32) | u64::from(socket.as_raw_fd() as u32)
}

struct ThreadHandle {
    inbox: Arc<Inbox>,
    rooms: Arc<AtomicUsize>,
    join: Option<JoinHandle<()>>,
}

/// The engine's media threads.
pub(super) struct MediaThreads {
    threads: Vec<ThreadHandle>,
    /// Rooms a thread takes before the next one gets any (0: spread).
    fill: usize,
}

/// The thread a new room goes to, given each thread's rooms: the first
/// with fewer than `fill`, else (all full, or `fill` 0) the one with the
/// fewest.
fn placement(rooms: impl Iterator<Item = usize> + Clone, fill: usize) -> Option<usize> {
    if fill > 0
        && let Some(i) = rooms.clone().position(|n| n < fill)
    {
        return Some(i);
    }
    rooms.enumerate().min_by_key(|&(_, n)| n).map(|(i, _)| i)
}

impl MediaThreads {
    /// Starts `n` threads (at least one), batching at most every
    /// `coalesce` when busy (`MediaConfig::coalesce_us`), each taking
    /// `fill` rooms before the next gets any (`MediaConfig::thread_fill_rooms`).
    pub(super) fn start(
        n: usize,
        coalesce: Duration,
        fill: usize,
    ) -> Result<MediaThreads, EngineError> {
        // Built up in place: on an error, its Drop stops the threads started.
        let mut this = MediaThreads {
            threads: Vec::with_capacity(n.max(1)),
            fill,
        };
        for i in 0..n.max(1) {
            let ep = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC).map_err(io)?);
            let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(io)?;
            epoll::add(&*ep, &fd, EventData::new_u64(WAKE_TOKEN), EventFlags::IN).map_err(io)?;
            let inbox = Arc::new(Inbox {
                fd,
                pending: Mutex::new(Pending::default()),
            });
            let rooms = Arc::new(AtomicUsize::new(0));
            let mut thread = Thread {
                ep,
                inbox: inbox.clone(),
                rooms: rooms.clone(),
                slab: Vec::new(),
                free: Vec::new(),
                heap: BinaryHeap::new(),
                scratch: Scratch::new(),
                pacer: Pacer::new(coalesce),
            };
            let join = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || thread.run())?;
            this.threads.push(ThreadHandle {
                inbox,
                rooms,
                join: Some(join),
            });
        }
        Ok(this)
    }

    /// Hands a room to a thread ([`placement`]).
    pub(super) fn adopt(&self, task: RoomTask) {
        let rooms = self.threads.iter().map(|t| t.rooms.load(Ordering::Relaxed));
        let Some(t) = placement(rooms, self.fill).and_then(|i| self.threads.get(i)) else {
            return;
        };
        t.rooms.fetch_add(1, Ordering::Relaxed);
        t.inbox.post(|p| p.new.push(task));
    }
}

impl Drop for MediaThreads {
    fn drop(&mut self) {
        for t in &self.threads {
            t.inbox.post(|p| p.stop = true);
        }
        for t in &mut self.threads {
            // Not from a media thread itself (a room never holds the engine).
            if let Some(join) = t.join.take()
                && join.thread().id() != std::thread::current().id()
            {
                let _ = join.join();
            }
        }
    }
}

/// What a room is run for.
enum Drive {
    /// A socket of its is readable.
    Readable(i32, Instant),
    /// Its command channel woke (or it was just adopted).
    Commands,
    /// Its deadline passed.
    Timer(Instant),
}

// `repr(C)`: what every event reads first, the room's own per-packet
// fields next (see `prefetch_ahead`).
#[repr(C)]
struct Entry {
    /// The deadline the heap holds for it.
    scheduled: Option<Instant>,
    generation: u32,
    task: RoomTask,
    waker: Waker,
}

#[repr(C)]
struct Slot {
    entry: Option<Entry>,
    generation: u32,
}

struct Thread {
    ep: Arc<OwnedFd>,
    inbox: Arc<Inbox>,
    rooms: Arc<AtomicUsize>,
    slab: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    scratch: Scratch,
    pacer: Pacer,
}

impl Thread {
    /// The loop. Each pass waits for events (or the next deadline), hands
    /// each readable socket's room one datagram (level-triggered: a socket
    /// with more queued comes back in the next pass), then runs what is
    /// due; the pacer says whether to poll at once, pause (a busy thread
    /// batching) or block.
    fn run(&mut self) {
        let empty = Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let mut events = vec![empty; EVENTS];
        let zero = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut poll = false;
        loop {
            let timeout = if poll {
                Some(zero)
            } else {
                self.heap.peek().map(|Reverse((d, _, _))| {
                    let wait = d.saturating_duration_since(Instant::now());
                    // Whole milliseconds, rounded up: never early.
                    let ms = wait.as_nanos().div_ceil(1_000_000).min(60_000) as i64;
                    rustix::fs::Timespec {
                        tv_sec: ms / 1000,
                        tv_nsec: (ms % 1000) * 1_000_000,
                    }
                })
            };
            let n = match epoll::wait(&*self.ep, &mut events[..], timeout.as_ref()) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    warn!(error = %e, "epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            let now = Instant::now();
            let batch = &events[..n];
            for (k, ev) in batch.iter().enumerate() {
                self.prefetch_ahead(batch, k);
                let token = ev.data.u64();
                if token == WAKE_TOKEN {
                    if self.on_inbox() {
                        self.stop();
                        return;
                    }
                    continue;
                }
                let key = (token >> 32) as u32;
                let fd = token as u32 as i32;
                self.drive(key, Drive::Readable(fd, now));
            }
            self.on_timers(now);
            let deadline = self.heap.peek().map(|Reverse((d, _, _))| *d);
            match self.pacer.after_pass(now, n, deadline) {
                Next::Poll => poll = true,
                Next::Block => poll = false,
                Next::PauseUntil(until) => {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    poll = true;
                }
            }
        }
    }

    /// Starts loading the state of the rooms whose sockets come next in
    /// the batch, one pointer hop per step so that no step waits on memory:
    /// three events ahead the room itself, two ahead its slots and
    /// participants, one ahead its legs. A batch holds many events when
    /// the thread is busy (each one room's datagram), which is when it
    /// matters.
    fn prefetch_ahead(&self, batch: &[Event], k: usize) {
        let slot = |j: usize| {
            let token = batch.get(j)?.data.u64();
            if token == WAKE_TOKEN {
                return None;
            }
            self.slab.get((token >> 32) as usize)
        };
        if let Some(s) = slot(k + 3) {
            prefetch(s, 5);
        }
        if let Some(Some(e)) = slot(k + 2).map(|s| s.entry.as_ref()) {
            e.task.prefetch_inner();
        }
        if let Some(Some(e)) = slot(k + 1).map(|s| s.entry.as_ref()) {
            e.task.prefetch_legs();
        }
    }

    fn entry(&mut self, key: u32) -> Option<&mut Entry> {
        self.slab.get_mut(key as usize)?.entry.as_mut()
    }

    /// Takes the inbox; true when the thread is to stop.
    fn on_inbox(&mut self) -> bool {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.inbox.fd, &mut count);
        let Pending { new, woken, stop } = match self.inbox.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return true,
        };
        if stop {
            // Adopted only to be ended with the others.
            for task in new {
                self.insert(task);
            }
            return true;
        }
        for task in new {
            let key = self.insert(task);
            self.poll_commands(key);
        }
        for key in woken {
            self.poll_commands(key);
        }
        false
    }

    fn insert(&mut self, mut task: RoomTask) -> u32 {
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.slab.push(Slot {
                    entry: None,
                    generation: 0,
                });
                (self.slab.len() - 1) as u32
            }
        };
        task.attach(Watch {
            ep: self.ep.clone(),
            key,
        });
        let waker = Waker::from(Arc::new(RoomWaker {
            key,
            inbox: self.inbox.clone(),
        }));
        let slot = &mut self.slab[key as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.entry = Some(Entry {
            task,
            waker,
            scheduled: None,
            generation: slot.generation,
        });
        key
    }

    fn poll_commands(&mut self, key: u32) {
        self.drive(key, Drive::Commands);
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(&Reverse((due, key, generation))) = self.heap.peek() {
            if due > now {
                break;
            }
            self.heap.pop();
            let Some(entry) = self.entry(key) else {
                continue;
            };
            if entry.generation != generation || entry.scheduled != Some(due) {
                continue; // rescheduled since
            }
            entry.scheduled = None;
            self.drive(key, Drive::Timer(now));
        }
    }

    /// Runs a room, then ends it if it is done, else keeps its deadline in
    /// the heap. A panic in the room (its legs, its codecs) ends that room
    /// only: the thread and its other rooms go on.
    fn drive(&mut self, key: u32, what: Drive) {
        let scratch = &mut self.scratch;
        let Some(entry) = self
            .slab
            .get_mut(key as usize)
            .and_then(|s| s.entry.as_mut())
        else {
            return;
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut cx = Context::from_waker(&entry.waker);
            match what {
                Drive::Readable(fd, now) => entry.task.on_readable(fd, now, scratch),
                Drive::Commands => entry.task.poll_commands(&mut cx),
                Drive::Timer(now) => entry.task.on_timer(now, scratch),
            }
            if entry.task.finished(&mut cx) {
                None
            } else {
                Some(entry.task.deadline())
            }
        }));
        match outcome {
            Ok(Some(due)) => {
                if entry.scheduled != Some(due) {
                    entry.scheduled = Some(due);
                    self.heap.push(Reverse((due, key, entry.generation)));
                }
            }
            Ok(None) => self.end(key),
            Err(_) => {
                error!(room = entry.task.id(), "room panicked: ended");
                self.end(key);
            }
        }
    }

    /// Ends a room and frees its key.
    fn end(&mut self, key: u32) {
        let Some(mut entry) = self.slab.get_mut(key as usize).and_then(|s| s.entry.take()) else {
            return;
        };
        self.free.push(key);
        self.rooms.fetch_sub(1, Ordering::Relaxed);
        let ended = catch_unwind(AssertUnwindSafe(move || {
            entry.task.shutdown();
            drop(entry);
        }));
        if ended.is_err() {
            error!("room panicked while ending");
        }
    }

    /// The engine is gone: end every room.
    fn stop(&mut self) {
        let before = self.rooms.load(Ordering::Relaxed);
        for key in 0..self.slab.len() as u32 {
            self.end(key);
        }
        debug!(rooms = before, "media thread stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::placement;

    #[test]
    fn rooms_fill_a_thread_before_the_next_then_spread() {
        let at = |rooms: &[usize], fill| placement(rooms.iter().copied(), fill);
        // Packed: the first thread not yet full.
        assert_eq!(at(&[0, 0], 256), Some(0));
        assert_eq!(at(&[255, 0], 256), Some(0));
        assert_eq!(at(&[256, 3], 256), Some(1));
        // A room ended on a full thread: it takes the next one again.
        assert_eq!(at(&[255, 256], 256), Some(0));
        // All full: the fewest.
        assert_eq!(at(&[300, 260], 256), Some(1));
        // fill 0: always the fewest.
        assert_eq!(at(&[1, 0], 0), Some(1));
        assert_eq!(at(&[], 256), None);
    }
}
