//! The driver of the media core: port allocation, and the **media
//! threads** ([`reactor`]) that own the rooms, their legs and sockets.
//!
//! Each media thread runs one level-triggered `epoll` loop over the leg
//! sockets of its rooms, an `eventfd` for work from signalling, and a heap
//! of room deadlines (the next 20 ms tick or the earliest leg timeout). A
//! readable socket gives one datagram to its leg ([`room_task`]), whose
//! callbacks push packets into the room and send with non-blocking
//! `send_to`; in relay mode the other leg sends it on in the same wake-up.
//! No task, system call ending in `EAGAIN`, or allocation per packet, no
//! lock on the media path.
//!
//! Signalling talks to a room through a cloneable [`RoomHandle`] (an mpsc
//! of [`Command`]s whose waker rings the room's thread). [`MediaEngine`]
//! keeps the named rooms (conferences) and creates anonymous ones (a call,
//! an echo test) on a media thread (the first holding fewer than
//! `thread_fill_rooms`, else the one with the fewest); a room ends when its
//! last participant leaves or its last handle is dropped. Dropping the
//! engine stops its threads.

mod pacer;
pub mod ports;
mod reactor;
mod room_task;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::leg::{Leg, LegClosed, LegStats};
use super::room::{
    ParticipantConfig, ParticipantId, ParticipantInfo, Room, RoomConfig, RoomError, RoomEvent,
};
use super::tone::AudioSource;
use crate::metrics::Metrics;
pub use ports::{PortAllocator, PortLease, PortPair, PortRange};

/// The `media:` section of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// UDP ports for RTP/RTCP pairs, `first-last`.
    pub rtp_ports: String,
    /// Address the media sockets bind to.
    pub bind: IpAddr,
    /// Address written into SDP, for a server behind 1:1 NAT. Default: the
    /// bind address, or when that is a wildcard, the address the call's
    /// signalling arrived on.
    pub advertised_address: Option<IpAddr>,
    /// A leg that receives nothing (RTP or RTCP) for this long is closed
    /// and its call hung up.
    pub media_timeout_secs: u64,
    /// Rooms open at most (calls + conferences).
    pub max_rooms: usize,
    /// Legs open at most.
    pub max_legs: usize,
    /// Participants per conference room at most.
    pub max_room_size: usize,
    /// Delay of the echo test (600), ms.
    pub echo_delay_ms: u32,
    /// How long calls the gateway answers itself (echo, conference) ring
    /// before the answer, ms (180 Ringing meanwhile; 0: answer at once).
    pub answer_delay_ms: u64,
    /// While a browser holds a bridged call, the other party hears a hold
    /// tone (browsers play no music on hold of their own).
    pub hold_tone: bool,
    /// Media threads (each an epoll loop owning a share of the rooms);
    /// 0: one per CPU core.
    pub threads: usize,
    /// A media thread woken again within this many µs of its last work is
    /// busy: it then handles datagrams in batches at most this often (like
    /// a NIC's interrupt coalescing), so it wakes once per batch instead of
    /// once per packet, adding at most this much latency (to datagrams and
    /// to room commands alike: the pause is a sleep). Quiet threads wake
    /// for every datagram as it comes. 0: never batch.
    pub coalesce_us: u32,
    /// Rooms a media thread takes before new rooms go to the next one; once
    /// all hold this many, a new room goes to the one with the fewest. At
    /// low load the rooms share one thread: one wake-up serves more
    /// packets. 0: always the thread with the fewest.
    pub thread_fill_rooms: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: "20000-29999".into(),
            bind: IpAddr::from([0, 0, 0, 0]),
            advertised_address: None,
            media_timeout_secs: 30,
            max_rooms: 5000,
            max_legs: 10_000,
            max_room_size: 500,
            echo_delay_ms: 200,
            answer_delay_ms: 0,
            hold_tone: true,
            threads: 0,
            coalesce_us: 1000,
            thread_fill_rooms: 256,
        }
    }
}

/// An address peers can be told to send to (SDP, Via, Contact): not the
/// wildcard, not multicast or broadcast.
pub fn usable_advertised(ip: IpAddr) -> bool {
    // `::ffff:0.0.0.0` is the IPv4 wildcard, and so on.
    let ip = ip.to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

impl MediaConfig {
    /// Checks the values; messages name the key.
    pub fn validate(&self) -> Result<PortRange, String> {
        let range =
            PortRange::parse(&self.rtp_ports).map_err(|e| format!("media.rtp_ports: {e}"))?;
        if !(1..=3600).contains(&self.media_timeout_secs) {
            return Err(format!(
                "media.media_timeout_secs: {} is out of range (1..=3600)",
                self.media_timeout_secs
            ));
        }
        if self.max_rooms == 0 || self.max_legs == 0 || self.max_room_size < 2 {
            return Err(
                "media.max_rooms and max_legs must be at least 1, max_room_size at least 2".into(),
            );
        }
        if let Some(ip) = self.advertised_address
            && !usable_advertised(ip)
        {
            return Err(format!(
                "media.advertised_address: {ip} is not a unicast address peers can reach"
            ));
        }
        if self.answer_delay_ms > 60_000 {
            return Err("media.answer_delay_ms: at most 60000".into());
        }
        if self.threads > 256 {
            return Err("media.threads: at most 256".into());
        }
        if self.coalesce_us > 20_000 {
            return Err("media.coalesce_us: at most 20000 (one 20 ms frame)".into());
        }
        if self.thread_fill_rooms > 1_000_000 {
            return Err("media.thread_fill_rooms: at most 1000000".into());
        }
        if self.echo_delay_ms > 5000 {
            return Err("media.echo_delay_ms: at most 5000".into());
        }
        Ok(range)
    }

    /// How many media threads to start.
    pub fn media_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The media timeout as a duration.
    pub fn media_timeout(&self) -> Duration {
        Duration::from_secs(self.media_timeout_secs)
    }
}

/// Why the engine could not do something.
#[derive(Debug, Error)]
pub enum EngineError {
    /// Every port pair of the range is in use.
    #[error("no free RTP port pair")]
    NoPorts,
    /// `max_rooms` reached.
    #[error("too many rooms")]
    TooManyRooms,
    /// `max_legs` reached.
    #[error("too many legs")]
    TooManyLegs,
    /// The room has ended.
    #[error("the room has ended")]
    RoomGone,
    /// The room refused the participant.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// A socket could not be set up or registered with its media thread's epoll.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
}

/// What a participant's owner (its call) hears from its room. The close
/// reason and the counters are boxed (they come once per leg): events go
/// through an unbounded channel per leg, whose blocks hold 32 items, so a
/// small item keeps a call's memory small.
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// The leg closed (media timeout, transport failure) and was removed.
    Closed(Box<LegClosed>, Box<LegStats>),
    /// The participant was removed on request; its final counters.
    Removed(Box<LegStats>),
    /// The participant sent a DTMF digit (RFC 4733).
    Dtmf {
        /// The digit.
        digit: char,
        /// Its duration, ms.
        duration_ms: u32,
    },
}

/// The sockets of one leg: plain RTP has two, WebRTC one.
pub struct LegSockets {
    /// The socket media (and, with rtcp-mux, RTCP) uses.
    pub main: std::net::UdpSocket,
    /// A separate RTCP socket (RTP/AVP: port + 1).
    pub rtcp: Option<std::net::UdpSocket>,
    /// The port lease to give back when the leg leaves.
    pub lease: Option<PortLease>,
}

impl From<PortPair> for LegSockets {
    fn from(p: PortPair) -> Self {
        LegSockets {
            main: p.rtp,
            rtcp: Some(p.rtcp),
            lease: Some(p.lease),
        }
    }
}

/// A change to a leg, run inside the room (on its media thread).
pub type LegUpdate = Box<dyn FnOnce(&mut dyn Leg) + Send>;

/// What a [`RoomHandle`] can ask of its room.
pub enum Command {
    /// Adds a participant with its leg and sockets. Boxed, being by far the
    /// largest command: a room's command channel allocates 32 slots of the
    /// largest at once. The sender gets the outcome.
    Add(Box<Join>, oneshot::Sender<Result<(), EngineError>>),
    /// Adds several participants at once: no tick runs between them (a
    /// call's two legs, so that neither is alone in the room and sent the
    /// silence of an empty mix). The sender gets each outcome, in order.
    AddAll(Box<[Join]>, oneshot::Sender<Vec<Result<(), EngineError>>>),
    /// Removes a participant (its sockets and ports are released).
    Remove(ParticipantId),
    /// Mute (not heard).
    Mute(ParticipantId, bool),
    /// Deaf (hears silence).
    Deaf(ParticipantId, bool),
    /// Hold (neither heard nor sent anything).
    Hold(ParticipantId, bool),
    /// How loud it is heard (1.0 = unchanged).
    Volume(ParticipantId, f32),
    /// Plays a tone or announcement to the room.
    Play(ParticipantId, Box<dyn AudioSource>),
    /// A DTMF digit received in signalling (SIP INFO): reported like RFC 4733 ones.
    Dtmf(ParticipantId, char, u32),
    /// Runs a change on a participant's leg (e.g. a re-INVITE's new address).
    UpdateLeg(ParticipantId, LegUpdate),
    /// Switches a participant's codec, payload type or telephone-event (a
    /// renegotiation changed them); nothing when they are the same.
    Reconfigure(ParticipantId, Box<crate::media::room::ParticipantConfig>),
    /// Reports a participant's jitter buffer statistics.
    JitterStats(
        ParticipantId,
        oneshot::Sender<Option<crate::media::jitter::JitterStats>>,
    ),
    /// Takes a participant out of the room without closing its leg: the
    /// leg, its sockets and its config come back (to join another room:
    /// an attended transfer). `None` if it is not here.
    Detach(ParticipantId, oneshot::Sender<Option<Detached>>),
    /// Names a participant for the admin API.
    Label(ParticipantId, String),
    /// Lists the participants (the admin API).
    Participants(oneshot::Sender<Vec<ParticipantView>>),
    /// Subscribes to every [`RoomEvent`].
    Subscribe(oneshot::Sender<broadcast::Receiver<RoomEvent>>),
    /// Removes everybody and ends the room.
    Close,
}

/// What [`Command::Add`] carries.
pub struct Join {
    /// Its id (unique within the room).
    pub id: ParticipantId,
    /// The network endpoint.
    pub leg: Box<dyn Leg>,
    /// Its sockets.
    pub sockets: LegSockets,
    /// Codec and telephone-event.
    pub config: ParticipantConfig,
    /// Where its owner wants [`LegEvent`]s.
    pub events: Option<mpsc::UnboundedSender<LegEvent>>,
}

/// A participant taken out of its room with its leg still open
/// ([`Command::Detach`]); [`RoomHandle::add`] puts it in another.
pub struct Detached {
    /// The network endpoint, state intact (SSRC, ICE, DTLS).
    pub leg: Box<dyn Leg>,
    /// Its sockets and port lease.
    pub sockets: LegSockets,
    /// How it joined.
    pub config: ParticipantConfig,
}

/// A participant as the admin API lists it: the room's state and a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantView {
    /// Mute, deaf, hold, talking, codec.
    pub info: ParticipantInfo,
    /// Who it is (set by the call that added it; may be empty).
    pub label: String,
}

/// A cloneable handle on a room.
#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::Sender<Command>,
    /// The room's number (for logs).
    pub id: u64,
}

impl RoomHandle {
    /// Sends a command; `RoomGone` when the room has ended.
    pub async fn send(&self, command: Command) -> Result<(), EngineError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| EngineError::RoomGone)
    }

    /// Adds a participant and waits for the room to take it.
    pub async fn add(
        &self,
        id: ParticipantId,
        leg: Box<dyn Leg>,
        sockets: LegSockets,
        config: ParticipantConfig,
        events: Option<mpsc::UnboundedSender<LegEvent>>,
    ) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        let join = Join {
            id,
            leg,
            sockets,
            config,
            events,
        };
        self.send(Command::Add(Box::new(join), reply)).await?;
        rx.await.map_err(|_| EngineError::RoomGone)?
    }

    /// Adds participants in one command (see [`Command::AddAll`]) and waits
    /// for the room to take them: each one's outcome, in order.
    pub async fn add_all(&self, joins: Box<[Join]>) -> Vec<Result<(), EngineError>> {
        let n = joins.len();
        let gone = || (0..n).map(|_| Err(EngineError::RoomGone)).collect();
        let (reply, rx) = oneshot::channel();
        if self.send(Command::AddAll(joins, reply)).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// Subscribes to the room's events.
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<RoomEvent>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Subscribe(reply)).await?;
        rx.await.map_err(|_| EngineError::RoomGone)
    }

    /// Takes a participant out with its leg open (see [`Command::Detach`]).
    pub async fn detach(&self, id: ParticipantId) -> Result<Option<Detached>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Detach(id, reply)).await?;
        rx.await.map_err(|_| EngineError::RoomGone)
    }

    /// The participants, in join order.
    pub async fn participants(&self) -> Result<Vec<ParticipantView>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Participants(reply)).await?;
        rx.await.map_err(|_| EngineError::RoomGone)
    }

    /// Whether the room has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What the rooms share with the engine (they hold this, not the engine,
/// so that dropping the engine stops its media threads).
struct Shared {
    named: Mutex<HashMap<String, RoomHandle>>,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// Forgets a named room that is ending (only if it is that room).
    fn retire(&self, name: &str, id: u64) {
        if let Ok(mut named) = self.named.lock()
            && named.get(name).is_some_and(|h| h.id == id)
        {
            named.remove(name);
        }
    }
}

/// The media engine: ports, rooms, limits, media threads. Shared by all calls.
pub struct MediaEngine {
    cfg: MediaConfig,
    ports: PortAllocator,
    shared: Arc<Shared>,
    threads: reactor::MediaThreads,
    next_room: AtomicU64,
    next_participant: AtomicU64,
}

impl MediaEngine {
    /// An engine for `cfg`.
    pub fn new(cfg: MediaConfig, metrics: Arc<Metrics>) -> Result<Arc<MediaEngine>, EngineError> {
        let range = cfg.validate().map_err(EngineError::Config)?;
        let ports = PortAllocator::new(cfg.bind, range, metrics.media.ports.clone());
        let threads = reactor::MediaThreads::start(
            cfg.media_threads(),
            Duration::from_micros(u64::from(cfg.coalesce_us)),
            cfg.thread_fill_rooms,
        )?;
        Ok(Arc::new(MediaEngine {
            cfg,
            ports,
            shared: Arc::new(Shared {
                named: Mutex::new(HashMap::new()),
                metrics,
            }),
            threads,
            next_room: AtomicU64::new(1),
            next_participant: AtomicU64::new(1),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    /// The metrics this engine counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Binds a port pair for a new RTP leg.
    pub fn allocate_ports(&self) -> Result<PortPair, EngineError> {
        if self.shared.metrics.media.legs.get() as usize >= self.cfg.max_legs {
            return Err(EngineError::TooManyLegs);
        }
        self.ports.allocate()
    }

    /// The address to advertise in SDP; `signalling` is the local address
    /// the call's SIP arrived on (used when we bind a wildcard).
    pub fn advertised_ip(&self, signalling: IpAddr) -> IpAddr {
        match self.cfg.advertised_address {
            Some(ip) => ip,
            None if !self.cfg.bind.is_unspecified() => self.cfg.bind,
            None => signalling,
        }
    }

    /// A fresh participant id (unique in the process).
    pub fn participant_id(&self) -> ParticipantId {
        ParticipantId(self.next_participant.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts an anonymous room (a call, an echo test).
    pub fn create_room(self: &Arc<Self>, cfg: RoomConfig) -> Result<RoomHandle, EngineError> {
        if self.shared.metrics.media.rooms.get() as usize >= self.cfg.max_rooms {
            return Err(EngineError::TooManyRooms);
        }
        let room = Room::new(cfg)?;
        let id = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        let task = room_task::RoomTask::new(id, room, rx, self.shared.clone(), None);
        self.shared.metrics.media.rooms.inc();
        self.threads.adopt(task);
        Ok(RoomHandle { tx, id })
    }

    /// The named room (a conference), started when it does not exist yet.
    /// A handle may name a room that is just ending: [`RoomHandle::add`]
    /// then fails with `RoomGone`, and calling this again starts a new one.
    pub fn named_room(
        self: &Arc<Self>,
        name: &str,
        cfg: RoomConfig,
    ) -> Result<RoomHandle, EngineError> {
        let mut named = self
            .shared
            .named
            .lock()
            .map_err(|_| EngineError::RoomGone)?;
        if let Some(handle) = named.get(name).filter(|h| !h.is_closed()) {
            return Ok(handle.clone());
        }
        if self.shared.metrics.media.rooms.get() as usize >= self.cfg.max_rooms {
            return Err(EngineError::TooManyRooms);
        }
        let room = Room::new(cfg)?;
        let id = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        let task =
            room_task::RoomTask::new(id, room, rx, self.shared.clone(), Some(name.to_string()));
        self.shared.metrics.media.rooms.inc();
        self.threads.adopt(task);
        let handle = RoomHandle { tx, id };
        named.insert(name.to_string(), handle.clone());
        Ok(handle)
    }

    /// The conference room called `name`, if it is open.
    pub fn conference(&self, name: &str) -> Option<RoomHandle> {
        let named = self.shared.named.lock().ok()?;
        named.get(name).filter(|h| !h.is_closed()).cloned()
    }

    /// Names of the conference rooms open now.
    pub fn room_names(&self) -> Vec<String> {
        self.shared
            .named
            .lock()
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default()
    }
}
