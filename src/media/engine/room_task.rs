//! One room with its legs and their sockets ([`RoomTask`]), as plain
//! state that a media thread ([`super::reactor`]) drives: commands, one
//! datagram per readable socket, and timers at [`RoomTask::deadline`].
//!
//! **Tick timing.** Ticks fall on one process-wide 20 ms grid (so a thread
//! wakes once per tick for all its rooms), and the deadline advances by
//! exactly 20 ms each time (no drift: the room's outgoing RTP clocks stay
//! locked to real time). A tick that fires late runs at once (burst), so a
//! short stall costs jitter, not a gap; when the room falls more than
//! 100 ms behind (a stalled thread), the missed ticks are dropped and
//! counted (`switchboard_media_ticks_skipped_total`) instead of being sent
//! as a burst the peers' jitter buffers could not absorb. `Room::tick` gets
//! the scheduled time, not the wake-up time, so its clock is regular.
//!
//! **Relay mode.** A two-party same-codec room forwards each packet as it
//! arrives: the datagram's wake-up reads it, the room maps it onto the other
//! side's clock and hands it over ([`Room::push_packet_with`]), and the
//! other leg sends it from the receive buffer, in the same wake-up. Ticks
//! are then needed only for silence and DTMF timeouts, so they come every
//! [`Room::tick_interval_ms`] (100 ms) on the same grid;
//! any command or leg change returns to the 20 ms grid until the next tick
//! decides again. RTCP sockets are watched like the main ones (reports
//! come every few seconds: level-triggered, an idle socket costs nothing).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use super::reactor::Watch;
use super::{
    Command, Detached, EngineError, Join, LegEvent, LegSockets, ParticipantView, PortLease, Shared,
};
use crate::media::leg::{Leg, LegClosed, LegIo};
use crate::media::prefetch::prefetch;
use crate::media::room::{InPacket, OutFrame, ParticipantId, Room, RoomEvent};

const TICK: Duration = Duration::from_millis(20);
const MAX_LAG: Duration = Duration::from_millis(100);
/// Rooms this small find a slot by scanning, not hashing.
const SCAN: usize = 4;

/// The first point of the process-wide 20 ms grid after `t`. Every room
/// ticks on this one grid, so a media thread wakes once per tick for all
/// its rooms rather than once per room.
fn grid_after(t: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let k = t.saturating_duration_since(epoch).as_nanos() / TICK.as_nanos() + 1;
    epoch + Duration::from_nanos((k * TICK.as_nanos()) as u64)
}

#[repr(C)]
struct Slot {
    // Per-packet fields first (`repr(C)`).
    id: ParticipantId,
    leg: Box<dyn Leg>,
    deadline: Option<Instant>,
    main: UdpSocket,
    rtcp: Option<UdpSocket>,
    _lease: Option<PortLease>,
    events: Option<mpsc::UnboundedSender<LegEvent>>,
    /// Who it is, for the admin API (e.g. the caller's user or number).
    label: String,
    /// How it joined (kept for [`Command::Detach`]).
    config: crate::media::room::ParticipantConfig,
}

impl Slot {
    /// The leg and the callbacks it gets (its sockets, the room when it
    /// pushes media), borrowed together.
    fn leg_io<'a>(
        &'a mut self,
        room: Option<&'a mut Room>,
        now: Instant,
        now_ms: u64,
        tx: &'a mut Vec<u8>,
    ) -> (&'a mut dyn Leg, Io<'a>) {
        let Slot {
            leg,
            main,
            rtcp,
            id,
            ..
        } = self;
        let io = Io {
            main,
            rtcp: rtcp.as_ref(),
            room,
            peers: [&mut [], &mut []],
            tx,
            id: *id,
            now,
            now_ms,
        };
        (leg.as_mut(), io)
    }

    /// Asks the leg when it next needs a timeout, and keeps the answer.
    fn refresh_deadline(&mut self) -> Option<Instant> {
        self.deadline = self.leg.poll_timeout();
        self.deadline
    }

    /// Its sockets: main, and RTCP when separate.
    fn fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        std::iter::once(self.main.as_fd()).chain(self.rtcp.as_ref().map(|r| r.as_fd()))
    }
}

/// Sends each frame through its participant's leg.
fn send_frames(
    frames: impl Iterator<Item = (ParticipantId, OutFrame)>,
    slots: &mut [Slot],
    index: &HashMap<ParticipantId, usize>,
    now: Instant,
    now_ms: u64,
    tx: &mut Vec<u8>,
) {
    for (to, frame) in frames {
        // A call has two legs: a scan beats hashing the id.
        let i = if slots.len() <= SCAN {
            slots.iter().position(|s| s.id == to)
        } else {
            index.get(&to).copied()
        };
        let Some(slot) = i.and_then(|i| slots.get_mut(i)) else {
            continue;
        };
        let (leg, mut io) = slot.leg_io(None, now, now_ms, tx);
        leg.send_frame(now, frame.as_ref(), &mut io);
    }
}

/// A media thread's buffers, shared by all its rooms (so they stay in
/// cache): the datagram being received, and the one being sent.
pub(super) struct Scratch {
    rx: Box<[u8; 2048]>,
    tx: Vec<u8>,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        Scratch {
            rx: Box::new([0u8; 2048]),
            tx: Vec::with_capacity(2048),
        }
    }
}

/// Sends one datagram by a direct system call (rustix), as
/// `UdpSocket::send_to` would through libc: without libc's wrapper and the
/// thread-cancellation bookkeeping around it, ~4 % of a media thread's
/// time at one call per packet.
fn send_to(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    Ok(rustix::net::sendto(
        socket,
        data,
        rustix::net::SendFlags::empty(),
        &to,
    )?)
}

/// Receives one datagram by a direct system call, as [`send_to`] sends.
fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    let (n, _, from) = rustix::net::recvfrom(socket, buf, rustix::net::RecvFlags::empty())?;
    let from = from
        .and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    Ok((n, from))
}

/// The callbacks a leg gets: send from its sockets, push into the room.
struct Io<'a> {
    main: &'a UdpSocket,
    rtcp: Option<&'a UdpSocket>,
    room: Option<&'a mut Room>,
    /// The room's other slots, when a datagram is being handled: a packet
    /// the room relays goes out through its destination's leg at once,
    /// from the receive buffer.
    peers: [&'a mut [Slot]; 2],
    tx: &'a mut Vec<u8>,
    id: ParticipantId,
    now: Instant,
    now_ms: u64,
}

impl LegIo for Io<'_> {
    fn transmit(&mut self, to: SocketAddr, data: &[u8]) {
        // Non-blocking: a full socket buffer drops the datagram, like the network would.
        let _ = send_to(self.main, data, to);
    }

    fn transmit_parts(&mut self, to: SocketAddr, head: &[u8], body: &[u8]) {
        self.tx.clear();
        self.tx.extend_from_slice(head);
        self.tx.extend_from_slice(body);
        let _ = send_to(self.main, self.tx, to);
    }

    fn transmit_rtcp(&mut self, to: SocketAddr, data: &[u8]) {
        let _ = send_to(self.rtcp.unwrap_or(self.main), data, to);
    }

    fn media(&mut self, pkt: InPacket<'_>) {
        let Io {
            room: Some(room),
            peers,
            tx,
            id,
            now,
            now_ms,
            ..
        } = self
        else {
            return;
        };
        if peers.iter().all(|p| p.is_empty()) || room.has_output() {
            // Not handling a datagram, or frames are already queued (a leg
            // that gave several packets at once): queue behind them, so
            // frames leave in order; the driver drains the queue next.
            let _ = room.push_packet(*id, pkt, *now_ms);
            return;
        }
        let (now, now_ms) = (*now, *now_ms);
        let _ = room.push_packet_with(*id, pkt, now_ms, &mut |to, frame| {
            if let Some(slot) = peers
                .iter_mut()
                .flat_map(|p| p.iter_mut())
                .find(|s| s.id == to)
            {
                let (leg, mut io) = slot.leg_io(None, now, now_ms, tx);
                leg.send_frame(now, frame, &mut io);
            }
        });
    }
}

/// One room, its legs and their sockets, driven by a media thread
/// ([`super::reactor`]): commands when its channel wakes, a datagram when a
/// leg socket is readable, and its timers at [`RoomTask::deadline`].
#[repr(C)]
pub(super) struct RoomTask {
    // Per-packet fields first (`repr(C)`; the room's own come first in it).
    slots: Vec<Slot>,
    start: Instant,
    next_tick: Instant,
    leg_deadline: Option<Instant>,
    ever_joined: bool,
    /// Every handle is gone (or the room closed its channel).
    handles_gone: bool,
    room: Room,
    id: u64,
    name: Option<String>,
    commands: mpsc::Receiver<Command>,
    engine: Arc<Shared>,
    index: HashMap<ParticipantId, usize>,
    /// Slot by main socket, for rooms larger than [`SCAN`].
    by_fd: HashMap<RawFd, usize>,
    /// The thread's epoll, once adopted.
    watch: Option<Watch>,
    /// When the last tick was due (the 20 ms grid is counted from it).
    last_tick: Instant,
    subscribers: Option<broadcast::Sender<RoomEvent>>,
}

impl RoomTask {
    pub(super) fn new(
        id: u64,
        room: Room,
        commands: mpsc::Receiver<Command>,
        engine: Arc<Shared>,
        name: Option<String>,
    ) -> RoomTask {
        // The room's clock starts on the grid point just passed.
        let start = grid_after(Instant::now()) - TICK;
        debug!(room = id, ?name, "room started");
        RoomTask {
            id,
            name,
            room,
            commands,
            engine,
            slots: Vec::new(),
            index: HashMap::new(),
            by_fd: HashMap::new(),
            watch: None,
            start,
            next_tick: start + TICK,
            last_tick: start,
            leg_deadline: None,
            subscribers: None,
            ever_joined: false,
            handles_gone: false,
        }
    }

    /// Prefetch, second step (see the reactor): the heap blocks a datagram
    /// of a two-party room reads next, its slots and its participants.
    pub(super) fn prefetch_inner(&self) {
        if self.slots.len() <= 2 {
            for slot in &self.slots {
                prefetch(slot, 1);
            }
            self.room.prefetch();
        }
    }

    /// Prefetch, third step: the legs (their per-packet fields come first).
    pub(super) fn prefetch_legs(&self) {
        if self.slots.len() <= 2 {
            for slot in &self.slots {
                prefetch(&*slot.leg, 7);
            }
        }
    }

    /// The room's number (for logs).
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_millis() as u64
    }

    /// Joins a media thread: sockets are registered with its epoll.
    pub(super) fn attach(&mut self, watch: Watch) {
        self.watch = Some(watch);
    }

    /// When it next needs [`RoomTask::on_timer`]: the next tick or the
    /// earliest leg timeout.
    pub(super) fn deadline(&self) -> Instant {
        match self.leg_deadline {
            Some(d) => d.min(self.next_tick),
            None => self.next_tick,
        }
    }

    /// Runs every queued command; `cx` carries the waker that brings the
    /// thread back to this room when more come or the last handle drops.
    pub(super) fn poll_commands(&mut self, cx: &mut Context<'_>) {
        while !self.handles_gone {
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(command)) => self.on_command(command),
                Poll::Ready(None) => self.handles_gone = true,
                Poll::Pending => break,
            }
        }
    }

    /// Whether the room is over: its handles are gone, or it was used and
    /// is empty (after running what was queued meanwhile: a late joiner
    /// keeps it open).
    pub(super) fn finished(&mut self, cx: &mut Context<'_>) -> bool {
        let empty = |t: &Self| t.ever_joined && t.room.is_empty() && t.slots.is_empty();
        if self.handles_gone {
            return true;
        }
        if !empty(self) {
            return false;
        }
        self.poll_commands(cx);
        self.handles_gone || empty(self)
    }

    /// The slot whose main or RTCP socket `fd` is.
    fn slot_of_fd(&self, fd: RawFd) -> Option<usize> {
        if self.slots.len() <= SCAN {
            self.slots.iter().position(|s| {
                s.main.as_raw_fd() == fd || s.rtcp.as_ref().is_some_and(|r| r.as_raw_fd() == fd)
            })
        } else {
            self.by_fd.get(&fd).copied()
        }
    }

    /// A leg socket (main or RTCP) is readable: reads one datagram (the
    /// socket is watched level-triggered, so more come as further events;
    /// no read ends in `EAGAIN`) and hands it to the leg; in relay mode the
    /// other leg sends it on at once.
    pub(super) fn on_readable(&mut self, fd: RawFd, now: Instant, scratch: &mut Scratch) {
        // A stale event (the socket left this room in this batch) finds nothing.
        let Some(i) = self.slot_of_fd(fd) else {
            return;
        };
        let now_ms = self.ms(now);
        let Scratch { rx, tx } = scratch;
        let (before, rest) = self.slots.split_at_mut(i);
        let Some((slot, after)) = rest.split_first_mut() else {
            return;
        };
        let socket = match &slot.rtcp {
            Some(rtcp) if rtcp.as_raw_fd() == fd => rtcp,
            _ => &slot.main,
        };
        // An error is a spurious wake-up (WouldBlock) or an ICMP error
        // surfacing: not fatal, nothing to hand on.
        if let Ok((n, from)) = recv_from(socket, &mut rx[..]) {
            let (leg, mut io) = slot.leg_io(Some(&mut self.room), now, now_ms, tx);
            // Relay mode forwards at once, through the other slot's leg.
            io.peers = [before, after];
            leg.handle_datagram(now, from, &mut rx[..n], &mut io);
            // Anything else the room produced (forwarded DTMF).
            self.send_output(now, now_ms, tx);
        }
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let deadline = slot.refresh_deadline();
        let closed = slot.leg.closed().is_some();
        self.note_leg_deadline(deadline);
        if closed {
            self.reap_closed();
        }
    }

    /// Sends the frames the room produced outside a tick (queued relayed
    /// frames, DTMF).
    fn send_output(&mut self, now: Instant, now_ms: u64, tx: &mut Vec<u8>) {
        let RoomTask {
            room, slots, index, ..
        } = self;
        send_frames(room.drain_output(), slots, index, now, now_ms, tx);
    }

    /// Runs what is due at `now`: the tick and leg timeouts.
    pub(super) fn on_timer(&mut self, now: Instant, scratch: &mut Scratch) {
        if now >= self.next_tick {
            let tick_ms = self.ms(self.next_tick);
            let RoomTask {
                room, slots, index, ..
            } = self;
            let frames = room.tick(tick_ms);
            send_frames(frames, slots, index, now, tick_ms, &mut scratch.tx);
            self.last_tick = self.next_tick;
            // Every 20 ms while mixing; sparser while relaying (packets are
            // forwarded as they arrive), see `Room::tick_interval_ms`.
            self.next_tick += Duration::from_millis(self.room.tick_interval_ms());
            if now > self.next_tick + MAX_LAG {
                let behind = now.saturating_duration_since(self.next_tick);
                let skipped = (behind.as_millis() / TICK.as_millis()) as u64;
                self.engine.metrics.media.ticks_skipped.add(skipped);
                self.next_tick = grid_after(now);
            }
            self.forward_events();
        }
        if self.leg_deadline.is_some_and(|d| d <= now) {
            let now_ms = self.ms(now);
            let mut earliest: Option<Instant> = None;
            let mut closed = false;
            for slot in &mut self.slots {
                if slot.deadline.is_some_and(|d| d <= now) {
                    let (leg, mut io) =
                        slot.leg_io(Some(&mut self.room), now, now_ms, &mut scratch.tx);
                    leg.handle_timeout(now, &mut io);
                    slot.refresh_deadline();
                    closed |= slot.leg.closed().is_some();
                }
                if let Some(d) = slot.deadline {
                    earliest = Some(earliest.map_or(d, |e| e.min(d)));
                }
            }
            self.leg_deadline = earliest;
            // What the legs gave the room meanwhile (relayed, DTMF) goes now.
            self.send_output(now, now_ms, &mut scratch.tx);
            if closed {
                self.reap_closed();
            }
        }
    }

    /// Brings the earliest leg deadline forward to `deadline` if sooner.
    fn note_leg_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.leg_deadline = Some(self.leg_deadline.map_or(d, |g| g.min(d)));
        }
    }

    /// Back to ticking on the 20 ms grid: something (a command, a leg
    /// leaving) may have ended relaying, which ticks sparsely.
    fn regrid(&mut self) {
        let since = Instant::now().saturating_duration_since(self.last_tick);
        let k = (since.as_nanos() / TICK.as_nanos()) as u32 + 1;
        let next = self.last_tick + TICK * k;
        if next < self.next_tick {
            self.next_tick = next;
        }
    }

    /// Removes legs that closed and tells their owners.
    fn reap_closed(&mut self) {
        let mut i = 0;
        while i < self.slots.len() {
            match self.slots[i].leg.closed() {
                Some(reason) => {
                    let id = self.slots[i].id;
                    info!(room = self.id, participant = id.0, ?reason, "leg closed");
                    if reason == LegClosed::MediaTimeout {
                        self.engine.metrics.media.media_timeouts.inc();
                    }
                    self.remove(id, Some(reason));
                }
                None => i += 1,
            }
        }
    }

    /// Takes a participant (or player) out of the room and, when it has a
    /// leg, its slot out of the table (the leg no longer counted).
    fn take_slot(&mut self, id: ParticipantId) -> Option<Slot> {
        let _ = self.room.remove(id);
        self.regrid();
        let i = self.index.remove(&id)?;
        let slot = self.slots.swap_remove(i);
        for fd in slot.fds() {
            self.by_fd.remove(&fd.as_raw_fd());
            if let Some(watch) = &self.watch {
                watch.remove(fd);
            }
        }
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.id, i);
            for fd in moved.fds() {
                self.by_fd.insert(fd.as_raw_fd(), i);
            }
        }
        self.engine.metrics.media.legs.dec();
        Some(slot)
    }

    fn remove(&mut self, id: ParticipantId, reason: Option<LegClosed>) {
        let Some(slot) = self.take_slot(id) else {
            return;
        };
        let stats = slot.leg.stats();
        let media = &self.engine.metrics.media;
        media.packets_received.add(stats.packets_received);
        media.packets_sent.add(stats.packets_sent);
        if let Some(events) = &slot.events {
            let _ = events.send(match reason {
                Some(reason) => LegEvent::Closed(Box::new(reason), Box::new(stats)),
                None => LegEvent::Removed(Box::new(stats)),
            });
        }
        self.forward_events();
    }

    /// Takes a participant out with its leg and sockets intact.
    fn detach(&mut self, id: ParticipantId) -> Option<Detached> {
        if !self.index.contains_key(&id) {
            return None;
        }
        // The leg is counted again when it joins its next room.
        let slot = self.take_slot(id)?;
        self.forward_events();
        Some(Detached {
            leg: slot.leg,
            sockets: LegSockets {
                main: slot.main,
                rtcp: slot.rtcp,
                lease: slot._lease,
            },
            config: slot.config,
        })
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add(join, reply) => {
                let _ = reply.send(self.add(*join));
            }
            Command::AddAll(joins, reply) => {
                let _ = reply.send(joins.into_vec().into_iter().map(|j| self.add(j)).collect());
            }
            Command::Remove(id) => self.remove(id, None),
            Command::Mute(id, on) => drop(self.room.set_mute(id, on)),
            Command::Deaf(id, on) => drop(self.room.set_deaf(id, on)),
            Command::Hold(id, on) => drop(self.room.set_hold(id, on)),
            Command::Volume(id, gain) => drop(self.room.set_volume(id, gain)),
            Command::Play(id, source) => drop(self.room.add_player(id, source)),
            Command::Dtmf(id, digit, duration_ms) => {
                let event = crate::media::dtmf::event_for_digit(digit).unwrap_or(0);
                // The others hear it as RFC 4733 (telephone-event legs).
                let _ = self.room.inject_dtmf(id, event, duration_ms);
                self.publish(RoomEvent::Dtmf {
                    participant: id,
                    event,
                    digit: Some(digit),
                    duration_ms,
                });
            }
            Command::UpdateLeg(id, update) => {
                if let Some(&i) = self.index.get(&id) {
                    let slot = &mut self.slots[i];
                    update(slot.leg.as_mut());
                    let deadline = slot.refresh_deadline();
                    self.note_leg_deadline(deadline);
                }
            }
            Command::Reconfigure(id, config) => {
                if let Some(&i) = self.index.get(&id) {
                    match self.room.reconfigure(id, *config) {
                        Ok(()) => self.slots[i].config = *config,
                        Err(e) => warn!(participant = ?id, error = %e, "codec change refused"),
                    }
                }
            }
            Command::Detach(id, reply) => {
                let _ = reply.send(self.detach(id));
            }
            Command::Label(id, label) => {
                if let Some(&i) = self.index.get(&id) {
                    self.slots[i].label = label;
                }
            }
            Command::Participants(reply) => {
                let labels = &self.slots;
                let list = self
                    .room
                    .participants()
                    .map(|info| {
                        let label = labels
                            .iter()
                            .find(|s| s.id == info.id)
                            .map(|s| s.label.clone())
                            .unwrap_or_default();
                        ParticipantView { info, label }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::JitterStats(id, reply) => {
                let _ = reply.send(self.room.jitter_stats(id));
            }
            Command::Subscribe(reply) => {
                let tx = self
                    .subscribers
                    .get_or_insert_with(|| broadcast::channel(256).0);
                let _ = reply.send(tx.subscribe());
            }
            Command::Close => {
                let ids: Vec<ParticipantId> = self.slots.iter().map(|s| s.id).collect();
                for id in ids {
                    self.remove(id, None);
                }
                self.ever_joined = true;
            }
        }
        self.regrid();
        self.forward_events();
    }

    fn add(&mut self, join: Join) -> Result<(), EngineError> {
        let Join {
            id,
            leg,
            sockets,
            config,
            events,
        } = join;
        // Whatever happens, the room has been used: an empty room ends.
        self.ever_joined = true;
        let LegSockets { main, rtcp, lease } = sockets;
        main.set_nonblocking(true)?;
        if let Some(rtcp) = &rtcp {
            rtcp.set_nonblocking(true)?;
        }
        let Some(watch) = &self.watch else {
            return Err(EngineError::RoomGone);
        };
        watch.add(main.as_fd())?;
        if let Some(rtcp) = &rtcp
            && let Err(e) = watch.add(rtcp.as_fd())
        {
            watch.remove(main.as_fd());
            return Err(e.into());
        }
        if let Err(e) = self.room.add_participant(id, config) {
            watch.remove(main.as_fd());
            if let Some(rtcp) = &rtcp {
                watch.remove(rtcp.as_fd());
            }
            return Err(e.into());
        }
        let deadline = leg.poll_timeout();
        self.note_leg_deadline(deadline);
        self.index.insert(id, self.slots.len());
        self.by_fd.insert(main.as_raw_fd(), self.slots.len());
        if let Some(rtcp) = &rtcp {
            self.by_fd.insert(rtcp.as_raw_fd(), self.slots.len());
        }
        self.slots.push(Slot {
            id,
            leg,
            main,
            rtcp,
            _lease: lease,
            events,
            label: String::new(),
            config,
            deadline,
        });
        self.engine.metrics.media.legs.inc();
        Ok(())
    }

    fn publish(&mut self, event: RoomEvent) {
        if let RoomEvent::Dtmf {
            participant,
            digit: Some(digit),
            duration_ms,
            ..
        } = &event
            && let Some(slot) = self.index.get(participant).and_then(|&i| self.slots.get(i))
            && let Some(events) = &slot.events
        {
            let _ = events.send(LegEvent::Dtmf {
                digit: *digit,
                duration_ms: *duration_ms,
            });
        }
        if let Some(tx) = &self.subscribers {
            let _ = tx.send(event);
        }
    }

    fn forward_events(&mut self) {
        // Drain into a small local batch: `events()` borrows the room.
        let mut batch = Vec::new();
        batch.extend(self.room.events());
        for event in batch {
            self.publish(event);
        }
    }

    /// Ends the room: everybody out (their owners told), the name freed.
    pub(super) fn shutdown(&mut self) {
        // Handles see the room as ended from now on (joiners start a new one).
        self.commands.close();
        let ids: Vec<ParticipantId> = self.slots.iter().map(|s| s.id).collect();
        for id in ids {
            self.remove(id, None);
        }
        if let Some(name) = &self.name {
            self.engine.retire(name, self.id);
        }
        self.engine.metrics.media.rooms.dec();
        debug!(room = self.id, "room ended");
        if !self.slots.is_empty() {
            warn!(room = self.id, "room ended with legs left");
        }
    }
}
