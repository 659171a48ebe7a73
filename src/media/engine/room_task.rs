//! The task that owns one room: see the parent module.
//!
//! **Tick timing.** The tick deadline advances by exactly 20 ms each time
//! (no drift: the room's outgoing RTP clocks stay locked to real time). A
//! tick that fires late runs at once (burst), so a short stall costs jitter,
//! not a gap; when the task falls more than 100 ms behind (a stalled
//! runtime), the missed ticks are dropped and counted
//! (`switchboard_media_ticks_skipped_total`) instead of being sent as a burst
//! the peers' jitter buffers could not absorb. `Room::tick` gets the
//! scheduled time, not the wake-up time, so its clock is regular.
//!
//! **Relay mode.** A two-party same-codec room forwards each packet as it
//! arrives: the datagram's wake-up reads it, the room maps it onto the other
//! side's clock ([`Room::drain_output`]) and the other leg sends it, in the
//! same wake-up. Ticks are then needed only for silence and DTMF timeouts,
//! so they come every [`Room::tick_interval_ms`] (100 ms) on the same grid;
//! any command or leg change returns to the 20 ms grid until the next tick
//! decides again. RTCP sockets are read at ticks, not polled per wake-up.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Sleep;
use tracing::{debug, info, warn};

use super::{
    Command, Detached, EngineError, Join, LegEvent, LegSockets, MediaEngine, ParticipantView,
    PortLease,
};
use crate::media::leg::{Leg, LegClosed, LegIo};
use crate::media::room::{InPacket, ParticipantId, Room, RoomEvent};

const TICK: Duration = Duration::from_millis(20);
const MAX_LAG: Duration = Duration::from_millis(100);
/// Datagrams read from one socket per wake-up before the others get a turn.
const BATCH: usize = 64;

struct Slot {
    id: ParticipantId,
    leg: Box<dyn Leg>,
    main: UdpSocket,
    rtcp: Option<UdpSocket>,
    _lease: Option<PortLease>,
    events: Option<mpsc::UnboundedSender<LegEvent>>,
    deadline: Option<Instant>,
    /// Who it is, for the admin API (e.g. the caller's user or number).
    label: String,
    /// How it joined (kept for [`Command::Detach`]).
    config: crate::media::room::ParticipantConfig,
}

/// The callbacks a leg gets: send from its sockets, push into the room.
struct Io<'a> {
    main: &'a UdpSocket,
    rtcp: Option<&'a UdpSocket>,
    room: Option<&'a mut Room>,
    id: ParticipantId,
    now_ms: u64,
}

impl LegIo for Io<'_> {
    fn transmit(&mut self, to: SocketAddr, data: &[u8]) {
        // Non-blocking: a full socket buffer drops the datagram, like the network would.
        let _ = self.main.try_send_to(data, to);
    }

    fn transmit_rtcp(&mut self, to: SocketAddr, data: &[u8]) {
        let _ = self.rtcp.unwrap_or(self.main).try_send_to(data, to);
    }

    fn media(&mut self, pkt: InPacket<'_>) {
        if let Some(room) = self.room.as_deref_mut() {
            let _ = room.push_packet(self.id, pkt, self.now_ms);
        }
    }
}

enum Wake {
    Command(Command),
    Closed,
    Timer,
    Sockets,
}

pub(super) struct RoomTask {
    id: u64,
    name: Option<String>,
    room: Room,
    commands: mpsc::Receiver<Command>,
    engine: Arc<MediaEngine>,
    slots: Vec<Slot>,
    index: HashMap<ParticipantId, usize>,
    /// Slots whose main socket is ready to read.
    ready: Vec<usize>,
    buf: Box<[u8; 2048]>,
    start: Instant,
    next_tick: Instant,
    /// When the last tick was due (the 20 ms grid is counted from it).
    last_tick: Instant,
    leg_deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    subscribers: Option<broadcast::Sender<RoomEvent>>,
    ever_joined: bool,
}

impl RoomTask {
    pub(super) fn new(
        id: u64,
        room: Room,
        commands: mpsc::Receiver<Command>,
        engine: Arc<MediaEngine>,
        name: Option<String>,
    ) -> RoomTask {
        let start = Instant::now();
        RoomTask {
            id,
            name,
            room,
            commands,
            engine,
            slots: Vec::new(),
            index: HashMap::new(),
            ready: Vec::new(),
            buf: Box::new([0u8; 2048]),
            start,
            next_tick: start + TICK,
            last_tick: start,
            leg_deadline: None,
            timer: Box::pin(tokio::time::sleep_until((start + TICK).into())),
            subscribers: None,
            ever_joined: false,
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_millis() as u64
    }

    pub(super) async fn run(mut self) {
        debug!(room = self.id, name = ?self.name, "room started");
        loop {
            let deadline = match self.leg_deadline {
                Some(d) => d.min(self.next_tick),
                None => self.next_tick,
            };
            if self.timer.deadline().into_std() != deadline {
                self.timer.as_mut().reset(deadline.into());
            }
            let wake = poll_fn(|cx| self.poll_wake(cx)).await;
            match wake {
                Wake::Command(command) => self.on_command(command),
                Wake::Closed => break,
                Wake::Timer => self.on_timer(),
                Wake::Sockets => self.on_sockets(),
            }
            if self.ever_joined && self.room.is_empty() && self.slots.is_empty() {
                // Last one out: drain what was queued meanwhile, then end.
                match self.commands.try_recv() {
                    Ok(command) => self.on_command(command),
                    Err(_) => break,
                }
                if self.room.is_empty() && self.slots.is_empty() {
                    break;
                }
            }
        }
        self.shutdown();
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        match self.commands.poll_recv(cx) {
            Poll::Ready(Some(c)) => return Poll::Ready(Wake::Command(c)),
            Poll::Ready(None) => return Poll::Ready(Wake::Closed),
            Poll::Pending => {}
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        self.ready.clear();
        // RTCP sockets are read at ticks (`drain_rtcp`): reports come every
        // few seconds, and polling them would cost every packet's wake-up.
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.main.poll_recv_ready(cx).is_ready() {
                self.ready.push(i);
            }
        }
        if self.ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Wake::Sockets)
        }
    }

    fn on_sockets(&mut self) {
        let now = Instant::now();
        let now_ms = self.ms(now);
        let mut closed = false;
        for r in 0..self.ready.len() {
            let i = self.ready[r];
            for _ in 0..BATCH {
                let Some(slot) = self.slots.get_mut(i) else {
                    break;
                };
                match slot.main.try_recv_from(&mut self.buf[..]) {
                    Ok((n, from)) => {
                        let mut io = Io {
                            main: &slot.main,
                            rtcp: slot.rtcp.as_ref(),
                            room: Some(&mut self.room),
                            id: slot.id,
                            now_ms,
                        };
                        slot.leg
                            .handle_datagram(now, from, &mut self.buf[..n], &mut io);
                        // Relay mode forwards at once: send what the room produced.
                        Self::send_output(
                            &mut self.room,
                            &mut self.slots,
                            &self.index,
                            now,
                            now_ms,
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP port unreachable surfaces here on Linux: not fatal.
                    Err(_) => break,
                }
            }
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            slot.deadline = slot.leg.poll_timeout();
            if let Some(d) = slot.deadline {
                self.leg_deadline = Some(self.leg_deadline.map_or(d, |g| g.min(d)));
            }
            closed |= slot.leg.closed().is_some();
        }
        if closed {
            self.reap_closed();
        }
    }

    /// Sends the frames the room produced outside a tick (relay mode).
    fn send_output(
        room: &mut Room,
        slots: &mut [Slot],
        index: &HashMap<ParticipantId, usize>,
        now: Instant,
        now_ms: u64,
    ) {
        for (to, frame) in room.drain_output() {
            // A call has two legs: a scan beats hashing the id.
            let i = if slots.len() <= 4 {
                slots.iter().position(|s| s.id == to)
            } else {
                index.get(&to).copied()
            };
            let Some(slot) = i.and_then(|i| slots.get_mut(i)) else {
                continue;
            };
            let mut io = Io {
                main: &slot.main,
                rtcp: slot.rtcp.as_ref(),
                room: None,
                id: slot.id,
                now_ms,
            };
            slot.leg.send_frame(now, &frame, &mut io);
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if now >= self.next_tick {
            let tick_ms = self.ms(self.next_tick);
            let RoomTask {
                room, slots, index, ..
            } = self;
            for (to, frame) in room.tick(tick_ms) {
                let Some(slot) = index.get(&to).and_then(|&i| slots.get_mut(i)) else {
                    continue;
                };
                let mut io = Io {
                    main: &slot.main,
                    rtcp: slot.rtcp.as_ref(),
                    room: None,
                    id: slot.id,
                    now_ms: tick_ms,
                };
                slot.leg.send_frame(now, &frame, &mut io);
            }
            self.last_tick = self.next_tick;
            // Every 20 ms while mixing; sparser while relaying (packets are
            // forwarded as they arrive), see `Room::tick_interval_ms`.
            self.next_tick += Duration::from_millis(self.room.tick_interval_ms());
            if now > self.next_tick + MAX_LAG {
                let behind = now.saturating_duration_since(self.next_tick);
                let skipped = (behind.as_millis() / TICK.as_millis()) as u64;
                self.engine.metrics.media.ticks_skipped.add(skipped);
                self.next_tick = now + TICK;
            }
            self.forward_events();
            self.drain_rtcp(now);
        }
        if self.leg_deadline.is_some_and(|d| d <= now) {
            let now_ms = self.ms(now);
            let mut earliest: Option<Instant> = None;
            let mut closed = false;
            for slot in &mut self.slots {
                if slot.deadline.is_some_and(|d| d <= now) {
                    let mut io = Io {
                        main: &slot.main,
                        rtcp: slot.rtcp.as_ref(),
                        room: Some(&mut self.room),
                        id: slot.id,
                        now_ms,
                    };
                    slot.leg.handle_timeout(now, &mut io);
                    slot.deadline = slot.leg.poll_timeout();
                    closed |= slot.leg.closed().is_some();
                }
                if let Some(d) = slot.deadline {
                    earliest = Some(earliest.map_or(d, |e| e.min(d)));
                }
            }
            self.leg_deadline = earliest;
            if closed {
                self.reap_closed();
            }
        }
    }

    /// Reads the RTCP sockets (plain RTP legs without rtcp-mux), at ticks.
    fn drain_rtcp(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        let mut closed = false;
        for slot in &mut self.slots {
            let Some(rtcp) = &slot.rtcp else { continue };
            for _ in 0..BATCH {
                match rtcp.try_recv_from(&mut self.buf[..]) {
                    Ok((n, from)) => {
                        let mut io = Io {
                            main: &slot.main,
                            rtcp: Some(rtcp),
                            room: Some(&mut self.room),
                            id: slot.id,
                            now_ms,
                        };
                        slot.leg
                            .handle_datagram(now, from, &mut self.buf[..n], &mut io);
                    }
                    Err(_) => break,
                }
            }
            slot.deadline = slot.leg.poll_timeout();
            if let Some(d) = slot.deadline {
                self.leg_deadline = Some(self.leg_deadline.map_or(d, |g| g.min(d)));
            }
            closed |= slot.leg.closed().is_some();
        }
        if closed {
            self.reap_closed();
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
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.id, i);
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
                Some(reason) => LegEvent::Closed(reason, stats),
                None => LegEvent::Removed(stats),
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
        let main = match slot.main.into_std() {
            Ok(socket) => socket,
            Err(e) => {
                warn!(error = %e, "detached leg lost its socket");
                return None;
            }
        };
        let rtcp = slot.rtcp.and_then(|s| s.into_std().ok());
        Some(Detached {
            leg: slot.leg,
            sockets: LegSockets {
                main,
                rtcp,
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
                    slot.deadline = slot.leg.poll_timeout();
                    if let Some(d) = slot.deadline {
                        self.leg_deadline = Some(self.leg_deadline.map_or(d, |g| g.min(d)));
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
        let main = UdpSocket::from_std(sockets.main)?;
        let rtcp = sockets.rtcp.map(UdpSocket::from_std).transpose()?;
        self.room.add_participant(id, config)?;
        let deadline = leg.poll_timeout();
        if let Some(d) = deadline {
            self.leg_deadline = Some(self.leg_deadline.map_or(d, |g| g.min(d)));
        }
        self.index.insert(id, self.slots.len());
        self.slots.push(Slot {
            id,
            leg,
            main,
            rtcp,
            _lease: sockets.lease,
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

    fn shutdown(&mut self) {
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
