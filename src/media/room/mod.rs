//! The mixer room (sans-IO): every call's audio goes through one.
//!
//! A two-party call is a room with two participants, a conference a room
//! with many. Legs push packet payloads in ([`Room::push_packet`]) and call
//! [`Room::tick`] every 20 ms; each tick:
//!
//! 1. pops every participant's jitter buffer and decodes its input once
//!    (or conceals a loss, or takes silence), and runs talker detection;
//! 2. picks the contributors: everyone audible in a small room, only the
//!    loudest active talkers in a large one (`mix_everyone_up_to`);
//! 3. sums the contributors at the room's mixing rate;
//! 4. gives each contributor its own N−1 mix (sum minus itself), encoded for
//!    it alone, and gives everybody else the shared full mix, encoded once
//!    per codec configuration and handed out as the same [`Bytes`].
//!
//! The mixing rate is the second-highest native rate among participants (an
//! Opus↔PCMU call mixes at 8 kHz, an Opus conference at 48 kHz): nobody
//! could hear more than that, and Opus then encodes and decodes at it
//! directly, without resampling. A two-party room whose sides use the same
//! codec relays payloads without decoding while nothing (mute, hold, volume,
//! recording, playback) needs the audio itself. Echo rooms play each
//! participant back to itself; players ([`AudioSource`]) are participants
//! that are heard and never listen.

mod mix;
mod participant;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io::{Seek, Write};

use bytes::Bytes;
use thiserror::Error;

use super::codec::{CodecError, CodecKind, CodecSpec};
use super::dtmf::{DtmfNotice, DtmfRescaler, TelephoneEvent};
use super::jitter::{JitterConfig, JitterStats};
use super::resample::ResampleError;
use super::talker::TalkerConfig;
use super::tone::{AudioSource, Tone};
use super::wav::WavWriter;
use mix::SharedOut;
use participant::{Participant, Player, Recorder};

/// Identifies a participant (or player) within a room; chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// The telephone-event (RFC 4733) format negotiated with a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEventSpec {
    /// Its dynamic payload type, as the peer's SDP maps it: what we send.
    pub payload_type: u8,
    /// The payload type our own SDP gave it, which the peer should send
    /// with (RFC 3264 §5.1). It differs from `payload_type` only when the
    /// peer answered our offer with another number; events with either
    /// are taken.
    pub receive_payload_type: u8,
    /// Its RTP clock rate (8000, or 48000 next to Opus).
    pub clock_rate: u32,
}

/// How a participant joins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParticipantConfig {
    /// The audio codec negotiated with its leg.
    pub codec: CodecSpec,
    /// telephone-event, when negotiated.
    pub telephone_event: Option<TelephoneEventSpec>,
    /// Jitter buffer settings; `None` for the defaults at the codec's clock.
    pub jitter: Option<JitterConfig>,
    /// RTP timestamp of the first frame the room sends it.
    pub initial_timestamp: u32,
}

impl ParticipantConfig {
    /// Defaults for `codec`: no telephone-event, default jitter buffer.
    pub fn new(codec: CodecSpec) -> Self {
        ParticipantConfig {
            codec,
            telephone_event: None,
            jitter: None,
            initial_timestamp: 0,
        }
    }

    /// With telephone-event on `payload_type` at `clock_rate`.
    pub fn with_telephone_event(mut self, payload_type: u8, clock_rate: u32) -> Self {
        self.telephone_event = Some(TelephoneEventSpec {
            payload_type,
            receive_payload_type: payload_type,
            clock_rate,
        });
        self
    }
}

/// Where received DTMF events are forwarded (they are always reported as events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfForwarding {
    /// Never: events only.
    Never,
    /// To the other side while the room has exactly two participants.
    TwoParty,
    /// To every other participant that negotiated telephone-event.
    Always,
}

/// Room settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomConfig {
    /// Participants admitted at most (players not counted).
    pub max_participants: usize,
    /// Fixed mixing rate, or `None` to follow the participants.
    pub mix_rate: Option<u32>,
    /// Up to this many participants everyone audible is mixed; above it only
    /// the loudest active talkers are.
    pub mix_everyone_up_to: usize,
    /// Talkers mixed at most in a large room.
    pub max_talkers: usize,
    /// Talker detection settings.
    pub talker: TalkerConfig,
    /// Echo room: each participant hears itself after this delay (ms) and nobody else.
    pub echo_delay_ms: Option<u32>,
    /// Play a beep to the room when someone joins.
    pub join_beep: bool,
    /// Relay same-codec two-party rooms without decoding when possible.
    pub relay: bool,
    /// DTMF forwarding policy.
    pub dtmf_forwarding: DtmfForwarding,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_participants: 1000,
            mix_rate: None,
            mix_everyone_up_to: 8,
            max_talkers: 4,
            talker: TalkerConfig::default(),
            echo_delay_ms: None,
            join_beep: false,
            relay: true,
            dtmf_forwarding: DtmfForwarding::TwoParty,
        }
    }
}

/// One received RTP packet, as the leg saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPacket<'a> {
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload (after SRTP decryption, without RTP header).
    pub payload: &'a [u8],
    /// RFC 6464 client-to-mixer audio level (−dBov), when the leg parsed one.
    /// Lets a large room skip decoding participants who are quiet.
    pub audio_level: Option<u8>,
}

/// What [`Room::push_packet`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered for playout.
    Buffered,
    /// Relay mode: forwarded to the other participant at once (the
    /// [`Room::push_packet_with`] callback, or [`Room::drain_output`]).
    Relayed,
    /// Arrived after its playout time: dropped.
    Late,
    /// Already buffered: dropped.
    Duplicate,
    /// Too large: dropped.
    TooLarge,
    /// A telephone-event packet: reported / forwarded.
    Dtmf,
    /// Payload type not negotiated, comfort noise, the participant is on
    /// hold, or (relay mode) the other side is being sent a digit.
    Ignored,
}

/// A frame for a participant's leg to send, borrowed: a relayed packet's
/// payload straight from the driver's receive buffer, or an [`OutFrame`]'s
/// ([`OutFrame::as_ref`]). Legs that need owned bytes share a mix
/// ([`FrameRef::shared`]) and copy a borrowed payload into storage they reuse
/// ([`FrameRef::to_bytes`] copies into a new buffer).
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    payload: &'a [u8],
    shared: Option<&'a Bytes>,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP timestamp on the participant's outgoing clock.
    pub timestamp: u32,
    /// RTP marker bit: first packet after a gap, or of a telephone-event.
    pub marker: bool,
}

impl<'a> FrameRef<'a> {
    /// A frame over borrowed payload bytes.
    pub fn borrowed(payload: &'a [u8], payload_type: u8, timestamp: u32, marker: bool) -> Self {
        FrameRef {
            payload,
            shared: None,
            payload_type,
            timestamp,
            marker,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload's `Bytes` when it is an [`OutFrame`]'s (a mix: shared,
    /// not copied), `None` when it is borrowed from a receive buffer.
    pub fn shared(&self) -> Option<&'a Bytes> {
        self.shared
    }

    /// The payload as `Bytes`: shared when it already is, else copied.
    pub fn to_bytes(&self) -> Bytes {
        self.shared
            .cloned()
            .unwrap_or_else(|| Bytes::copy_from_slice(self.payload))
    }
}

/// One payload for a participant's leg to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    /// The payload (shared between listeners of the same mix).
    pub payload: Bytes,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP timestamp on the participant's outgoing clock.
    pub timestamp: u32,
    /// RTP marker bit: first packet after a gap, or of a telephone-event.
    pub marker: bool,
}

impl OutFrame {
    /// The frame borrowed, as [`crate::media::leg::Leg::send_frame`] takes it.
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            payload: &self.payload,
            shared: Some(&self.payload),
            payload_type: self.payload_type,
            timestamp: self.timestamp,
            marker: self.marker,
        }
    }
}

/// One participant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its id in the room.
    pub id: ParticipantId,
    /// The codec it sends and receives.
    pub codec: &'static str,
    /// Not heard by the others.
    pub muted: bool,
    /// Hears silence.
    pub deaf: bool,
    /// On hold (neither heard nor sent anything).
    pub held: bool,
    /// Detected as talking now.
    pub talking: bool,
}
/// Something that happened in the room.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// A participant was added.
    Joined {
        /// Who.
        participant: ParticipantId,
    },
    /// A participant or player was removed.
    Left {
        /// Who.
        participant: ParticipantId,
    },
    /// A participant started talking.
    TalkingStarted {
        /// Who.
        participant: ParticipantId,
        /// Its level, dBov.
        level_dbov: f32,
    },
    /// A participant stopped talking (after the hangover).
    TalkingStopped {
        /// Who.
        participant: ParticipantId,
    },
    /// A DTMF digit (or other telephone-event) ended.
    Dtmf {
        /// From whom.
        participant: ParticipantId,
        /// Event code (0–15 are DTMF).
        event: u8,
        /// `0-9*#A-D` for DTMF events.
        digit: Option<char>,
        /// Duration, ms.
        duration_ms: u32,
    },
    /// A player finished and was removed.
    PlaybackFinished {
        /// Which player.
        participant: ParticipantId,
    },
    /// The mixing rate changed (participants joined or left).
    MixRateChanged {
        /// New rate, Hz.
        rate: u32,
    },
    /// A recording failed and was stopped.
    RecordingFailed {
        /// The participant track, or `None` for the mixed recording.
        participant: Option<ParticipantId>,
        /// The I/O error.
        error: String,
    },
}

/// Why a room operation failed.
#[derive(Debug, Error)]
pub enum RoomError {
    /// The room has `max_participants` already.
    #[error("room is full ({0} participants)")]
    Full(usize),
    /// The id is taken.
    #[error("participant {0:?} is already in the room")]
    Duplicate(ParticipantId),
    /// No such participant.
    #[error("no participant {0:?} in the room")]
    Unknown(ParticipantId),
    /// A codec could not be set up.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A resampler could not be set up.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// The mixing rate asked for is not 8, 16 or 48 kHz.
    #[error("unsupported mixing rate {0} Hz")]
    MixRate(u32),
    /// Recording I/O failed.
    #[error("recording: {0}")]
    Io(#[from] std::io::Error),
}

/// A destination for a WAV recording: a file, a `Cursor<Vec<u8>>`, ...
pub trait WavOutput: Write + Seek + Send {}
impl<T: Write + Seek + Send> WavOutput for T {}

/// Events kept at most when the caller does not drain them.
const MAX_EVENTS: usize = 4096;
/// Tick interval while relaying, ms (see [`Room::tick_interval_ms`]).
pub const RELAY_TICK_MS: u64 = 100;
/// A DTMF event with no packet for this long is ended by timeout, ms: all
/// its end packets were lost. Long enough for a sender starved for a few
/// hundred ms (whose late packets would otherwise find the digit already
/// reported, cut short); Asterisk waits 3 s.
const DTMF_END_TIMEOUT_MS: u64 = 1000;
/// Digits from signalling queued at most per participant behind the one
/// being played.
const MAX_QUEUED_DIGITS: usize = 16;
/// Silent ticks between two digits played from signalling (40 ms).
const DIGIT_GAP_TICKS: u8 = 2;
/// Audio to a participant resumes this long after the last event packet
/// forwarded to it when no end packet came, ms.
const DTMF_QUIET_MS: u64 = 250;

/// The mixer room. See the module documentation.
///
/// ```
/// use switchboard::media::{CodecSpec, InPacket, ParticipantConfig, ParticipantId, Room, RoomConfig};
///
/// let mut room = Room::new(RoomConfig::default()).unwrap();
/// room.add_participant(ParticipantId(1), ParticipantConfig::new(CodecSpec::pcmu())).unwrap();
/// room.add_participant(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcma())).unwrap();
/// assert_eq!(room.mix_rate(), 8000);
/// for (k, now) in [0u64, 20, 40].into_iter().enumerate() {
///     let payload = [0xFFu8; 160]; // 20 ms of µ-law silence
///     let pkt = InPacket {
///         payload_type: 0,
///         seq: k as u16,
///         timestamp: k as u32 * 160,
///         marker: k == 0,
///         payload: &payload,
///         audio_level: None,
///     };
///     room.push_packet(ParticipantId(1), pkt, now).unwrap();
///     // Both sides get a frame every tick: PCMU (PT 0) for 1, PCMA (PT 8) for 2.
///     let mut sent: Vec<(u64, u8, usize)> =
///         room.tick(now).map(|(to, f)| (to.0, f.payload_type, f.payload.len())).collect();
///     sent.sort();
///     assert_eq!(sent, vec![(1, 0, 160), (2, 8, 160)]);
/// }
/// ```
#[repr(C)]
pub struct Room {
    // What a relayed packet reads comes first (`repr(C)`): see `Participant`.
    participants: Vec<Participant>,
    players: Vec<Player>,
    beeps: Vec<Tone>,
    out: Vec<(ParticipantId, OutFrame)>,
    recorder: Option<Box<Recorder>>,
    cfg: RoomConfig,
    relaying: bool,
    index: HashMap<ParticipantId, usize>,
    mix_rate: u32,
    shared: Vec<SharedOut>,
    /// Sum of the contributors at the mixing rate.
    total: Vec<i32>,
    /// Scratch frame at the mixing rate.
    scratch: Vec<i16>,
    events: VecDeque<RoomEvent>,
    tick_no: u64,
    last_tick_ms: Option<u64>,
}

impl Room {
    /// An empty room.
    pub fn new(cfg: RoomConfig) -> Result<Room, RoomError> {
        let mix_rate = cfg.mix_rate.unwrap_or(8000);
        if !matches!(mix_rate, 8000 | 16_000 | 48_000) {
            return Err(RoomError::MixRate(mix_rate));
        }
        let n = super::frame_samples(mix_rate);
        Ok(Room {
            cfg,
            participants: Vec::new(),
            index: HashMap::new(),
            players: Vec::new(),
            beeps: Vec::new(),
            mix_rate,
            shared: Vec::new(),
            total: vec![0; n],
            scratch: vec![0; n],
            recorder: None,
            out: Vec::new(),
            events: VecDeque::new(),
            relaying: false,
            tick_no: 0,
            last_tick_ms: None,
        })
    }

    /// Settings of this room.
    pub fn config(&self) -> &RoomConfig {
        &self.cfg
    }

    /// Participants in the room (players not counted).
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Hints the CPU to load the per-packet state of a two-party room's
    /// participants (a media thread calls it for the packets after the one
    /// it is handling; see `media::prefetch`).
    pub fn prefetch(&self) {
        if self.participants.len() <= 2 {
            for p in &self.participants {
                // The fields up to `sent_last_tick`: the first three lines.
                super::prefetch::prefetch(p, 3);
            }
        }
    }

    /// Whether frames wait in the output ([`Room::drain_output`]).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Current mixing rate, Hz.
    pub fn mix_rate(&self) -> u32 {
        self.mix_rate
    }

    /// Whether the last tick relayed payloads without decoding.
    pub fn is_relaying(&self) -> bool {
        self.relaying
    }

    /// How often the room needs [`Room::tick`] now, ms: every 20 ms while
    /// it mixes; every [`RELAY_TICK_MS`] while it relays (packets are
    /// forwarded as they arrive, and a tick only notices silence and DTMF
    /// timeouts; it catches up on the frames since the last one). After
    /// anything that may end relaying (a command, a join or leave) the
    /// driver ticks on the 20 ms grid again until the next tick says so.
    pub fn tick_interval_ms(&self) -> u64 {
        let playing_dtmf = self
            .participants
            .iter()
            .any(|p| p.dtmf_synth.is_some() || !p.dtmf_queued.is_empty());
        if self.relaying && self.relay_possible() && !playing_dtmf {
            RELAY_TICK_MS
        } else {
            u64::from(super::FRAME_MS)
        }
    }

    fn push_event(&mut self, ev: RoomEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// Drains the events that happened since the last call.
    pub fn events(&mut self) -> impl Iterator<Item = RoomEvent> + '_ {
        self.events.drain(..)
    }

    fn taken(&self, id: ParticipantId) -> bool {
        self.index.contains_key(&id) || self.players.iter().any(|p| p.id == id)
    }

    /// Adds a participant speaking `cfg.codec`.
    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        cfg: ParticipantConfig,
    ) -> Result<(), RoomError> {
        if self.taken(id) {
            return Err(RoomError::Duplicate(id));
        }
        if self.participants.len() >= self.cfg.max_participants {
            return Err(RoomError::Full(self.cfg.max_participants));
        }
        let echo_frames = self
            .cfg
            .echo_delay_ms
            .map(|ms| (ms / super::FRAME_MS).max(1) as usize);
        let p = Participant::new(id, cfg, self.mix_rate, self.cfg.talker, echo_frames)?;
        self.index.insert(id, self.participants.len());
        self.participants.push(p);
        self.update_mix_rate()?;
        self.push_event(RoomEvent::Joined { participant: id });
        if self.cfg.join_beep {
            self.beeps.push(Tone::beep());
        }
        Ok(())
    }

    /// Switches a participant to another codec, payload type or
    /// telephone-event (a renegotiation: the 2xx answered differently from
    /// the early 183, a re-INVITE moved the codec). Nothing happens when
    /// `cfg` names what it already speaks.
    pub fn reconfigure(
        &mut self,
        id: ParticipantId,
        cfg: ParticipantConfig,
    ) -> Result<(), RoomError> {
        let talker = self.cfg.talker;
        let p = self.participant_mut(id)?;
        if p.spec == cfg.codec && p.te == cfg.telephone_event {
            return Ok(());
        }
        let mut fresh = p.reconfigured(cfg, talker)?;
        std::mem::swap(p, &mut fresh);
        if fresh.talker.talking() {
            self.push_event(RoomEvent::TalkingStopped { participant: id });
        }
        // Digits it sent by INFO and waiting to be played to the others
        // stay queued: it is the same party.
        self.update_mix_rate()
    }

    /// Adds a player: a participant that is heard and never listens.
    /// It is removed (with [`RoomEvent::PlaybackFinished`]) when it ends.
    pub fn add_player(
        &mut self,
        id: ParticipantId,
        source: Box<dyn AudioSource>,
    ) -> Result<(), RoomError> {
        if self.taken(id) {
            return Err(RoomError::Duplicate(id));
        }
        self.players.push(Player::new(id, source, self.mix_rate));
        Ok(())
    }

    /// Removes a participant or player.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), RoomError> {
        if let Some(i) = self.players.iter().position(|p| p.id == id) {
            self.players.remove(i);
            self.push_event(RoomEvent::Left { participant: id });
            return Ok(());
        }
        let i = self.index.remove(&id).ok_or(RoomError::Unknown(id))?;
        let mut p = self.participants.swap_remove(i);
        if let Some(moved) = self.participants.get(i) {
            self.index.insert(moved.id, i);
        }
        if let Some(Err(e)) = p.track.take().map(|t| t.finish()) {
            self.push_event(RoomEvent::RecordingFailed {
                participant: Some(id),
                error: e.to_string(),
            });
        }
        if p.talker.talking() {
            self.push_event(RoomEvent::TalkingStopped { participant: id });
        }
        self.drop_queued_dtmf_from(id);
        self.push_event(RoomEvent::Left { participant: id });
        self.update_mix_rate()?;
        Ok(())
    }

    fn participant_mut(&mut self, id: ParticipantId) -> Result<&mut Participant, RoomError> {
        let i = *self.index.get(&id).ok_or(RoomError::Unknown(id))?;
        Ok(&mut self.participants[i])
    }

    /// Mute: the participant is not heard (its DTMF is still reported; its
    /// digits from signalling not yet played to the others are dropped).
    pub fn set_mute(&mut self, id: ParticipantId, muted: bool) -> Result<(), RoomError> {
        self.participant_mut(id)?.muted = muted;
        if muted {
            self.drop_queued_dtmf_from(id);
        }
        Ok(())
    }

    /// Drops the digits from signalling that `id` sent and that wait to be
    /// played to the others (a digit being played is finished whole).
    fn drop_queued_dtmf_from(&mut self, id: ParticipantId) {
        for p in &mut self.participants {
            p.dtmf_queued.retain(|&(from, ..)| from != id);
        }
    }

    /// Deaf: the participant hears silence (frames keep flowing).
    pub fn set_deaf(&mut self, id: ParticipantId, deaf: bool) -> Result<(), RoomError> {
        let p = self.participant_mut(id)?;
        p.deaf = deaf;
        if deaf {
            p.stop_dtmf();
        }
        Ok(())
    }

    /// Hold: the participant is neither heard nor sent anything (a digit
    /// being played to it ends at once; queued ones are dropped, and so are
    /// those it sent that wait to be played to the others).
    pub fn set_hold(&mut self, id: ParticipantId, held: bool) -> Result<(), RoomError> {
        let p = self.participant_mut(id)?;
        p.held = held;
        if held {
            p.stop_dtmf();
            self.drop_queued_dtmf_from(id);
        }
        Ok(())
    }

    /// How loud the participant is heard: a gain, 1.0 unchanged (0.0..=8.0).
    pub fn set_volume(&mut self, id: ParticipantId, gain: f32) -> Result<(), RoomError> {
        let g = if gain.is_finite() {
            gain.clamp(0.0, 8.0)
        } else {
            1.0
        };
        self.participant_mut(id)?.gain_q12 = (g * 4096.0).round() as i32;
        Ok(())
    }

    /// Every participant's state, in join order (the admin view).
    pub fn participants(&self) -> impl Iterator<Item = ParticipantInfo> + '_ {
        self.participants.iter().map(|p| ParticipantInfo {
            id: p.id,
            codec: p.spec.kind.name(),
            muted: p.muted,
            deaf: p.deaf,
            held: p.held,
            talking: p.talker.talking(),
        })
    }

    /// Whether the participant is currently detected as talking.
    pub fn is_talking(&self, id: ParticipantId) -> Option<bool> {
        self.index
            .get(&id)
            .map(|&i| self.participants[i].talker.talking())
    }

    /// Jitter buffer counters of a participant's input.
    pub fn jitter_stats(&self, id: ParticipantId) -> Option<JitterStats> {
        self.index
            .get(&id)
            .map(|&i| self.participants[i].jb.stats())
    }

    /// Records the room's mix (what a pure listener hears) as WAV at the
    /// current mixing rate.
    pub fn start_recording(&mut self, out: Box<dyn WavOutput>) -> Result<(), RoomError> {
        if let Some(old) = self.recorder.take() {
            old.finish()?;
        }
        self.recorder = Some(Box::new(Recorder::new(
            WavWriter::new(out, self.mix_rate)?,
            self.mix_rate,
        )?));
        Ok(())
    }

    /// Stops the mixed recording, finishing the file; returns its output.
    pub fn stop_recording(&mut self) -> Result<Option<Box<dyn WavOutput>>, RoomError> {
        Ok(self.recorder.take().map(|r| r.finish()).transpose()?)
    }

    /// Records one participant's own track (what the others hear from it) as WAV.
    pub fn record_participant(
        &mut self,
        id: ParticipantId,
        out: Box<dyn WavOutput>,
    ) -> Result<(), RoomError> {
        let rate = self.mix_rate;
        let p = self.participant_mut(id)?;
        if let Some(old) = p.track.take() {
            old.finish()?;
        }
        p.track = Some(Box::new(Recorder::new(WavWriter::new(out, rate)?, rate)?));
        Ok(())
    }

    /// Stops a participant's track, finishing the file; returns its output.
    pub fn stop_participant_recording(
        &mut self,
        id: ParticipantId,
    ) -> Result<Option<Box<dyn WavOutput>>, RoomError> {
        Ok(self
            .participant_mut(id)?
            .track
            .take()
            .map(|t| t.finish())
            .transpose()?)
    }

    /// The mixing rate the participants call for.
    fn wanted_mix_rate(&self) -> u32 {
        if let Some(r) = self.cfg.mix_rate {
            return r;
        }
        let mut rates: Vec<u32> = self
            .participants
            .iter()
            .map(|p| p.spec.kind.native_rate())
            .collect();
        rates.sort_unstable_by(|a, b| b.cmp(a));
        match rates.as_slice() {
            [] => self.mix_rate,
            [only] => *only,
            [_, second, ..] => *second,
        }
    }

    fn update_mix_rate(&mut self) -> Result<(), RoomError> {
        let rate = self.wanted_mix_rate();
        if rate == self.mix_rate {
            return Ok(());
        }
        self.mix_rate = rate;
        let n = super::frame_samples(rate);
        self.total = vec![0; n];
        self.scratch = vec![0; n];
        self.shared.clear();
        for p in &mut self.participants {
            p.set_mix_rate(rate)?;
        }
        for p in &mut self.players {
            p.set_mix_rate(rate);
        }
        if let Some(r) = &mut self.recorder {
            r.set_mix_rate(rate)?;
        }
        self.push_event(RoomEvent::MixRateChanged { rate });
        Ok(())
    }

    /// Hands one received packet to a participant's input.
    pub fn push_packet(
        &mut self,
        id: ParticipantId,
        pkt: InPacket<'_>,
        now_ms: u64,
    ) -> Result<PushOutcome, RoomError> {
        let mut relayed = None;
        let outcome = self.push_packet_with(id, pkt, now_ms, &mut |to, frame| {
            relayed = Some((to, frame.timestamp, frame.marker));
        })?;
        // Copied into the participant's reused buffer (no allocation once warm).
        if let Some((to, timestamp, marker)) = relayed
            && let Some(dst) = self.participants.iter_mut().find(|p| p.id == to)
        {
            let frame = dst.relayed(pkt.payload, timestamp, marker);
            self.queue_out((to, frame));
        }
        Ok(outcome)
    }

    /// [`Room::push_packet`] for drivers that send at once: in relay mode
    /// the frame goes to `relay` (destination, frame over `pkt`'s payload)
    /// instead of being copied into the output, so a relayed packet is sent
    /// from the buffer it was received into.
    pub fn push_packet_with(
        &mut self,
        id: ParticipantId,
        pkt: InPacket<'_>,
        now_ms: u64,
        relay: &mut dyn FnMut(ParticipantId, FrameRef<'_>),
    ) -> Result<PushOutcome, RoomError> {
        // A call has two participants: a scan beats hashing the id.
        let i = if self.participants.len() <= 4 {
            self.participants.iter().position(|p| p.id == id)
        } else {
            self.index.get(&id).copied()
        }
        .ok_or(RoomError::Unknown(id))?;
        let p = &mut self.participants[i];
        if let Some(te) = p.te
            && (pkt.payload_type == te.payload_type || pkt.payload_type == te.receive_payload_type)
        {
            self.on_dtmf(i, pkt, now_ms);
            return Ok(PushOutcome::Dtmf);
        }
        if pkt.payload_type != p.spec.payload_type || p.held {
            return Ok(PushOutcome::Ignored);
        }
        if self.relaying && self.relay_possible() {
            return Ok(self.relay_packet(i, &pkt, now_ms, relay));
        }
        let p = &mut self.participants[i];
        Ok(p.push_audio(&pkt, now_ms))
    }

    /// Frames produced since the last [`Room::tick`] or drain. In relay mode
    /// a packet is forwarded as soon as it is pushed, without waiting for the
    /// next tick or a jitter buffer: drain after each
    /// [`Room::push_packet`] and send. Frames not drained come out of the
    /// next `tick`.
    pub fn drain_output(&mut self) -> impl Iterator<Item = (ParticipantId, OutFrame)> + '_ {
        self.out.drain(..)
    }

    /// Reports and forwards one telephone-event packet from participant `i`.
    fn on_dtmf(&mut self, i: usize, pkt: InPacket<'_>, now_ms: u64) {
        let Ok(ev) = TelephoneEvent::parse(pkt.payload) else {
            return;
        };
        let src = &mut self.participants[i];
        let (src_id, src_clock) = (src.id, src.te.map_or(8000, |t| t.clock_rate));
        let audible = !src.muted && !src.held;
        match src.dtmf_rx.on_packet(pkt.timestamp, ev, now_ms) {
            DtmfNotice::Ended { event, duration_ms }
            | DtmfNotice::Started {
                unfinished: Some((event, duration_ms)),
                ..
            } => self.report_dtmf(src_id, event, duration_ms),
            DtmfNotice::Started { .. } | DtmfNotice::Continued | DtmfNotice::Repeat => {}
        }
        let forward = match self.cfg.dtmf_forwarding {
            DtmfForwarding::Never => false,
            DtmfForwarding::TwoParty => self.participants.len() == 2,
            DtmfForwarding::Always => true,
        };
        if !forward || !audible {
            return;
        }
        let relaying = self.relaying;
        for (j, dst) in self.participants.iter_mut().enumerate() {
            let Some(te) = dst.te else { continue };
            if j == i || dst.held || dst.deaf {
                continue;
            }
            // One rescaler per event: its start maps to the next frame we send.
            let fresh = dst
                .dtmf_fwd
                .as_ref()
                .is_none_or(|(s, ts, _)| *s != src_id || *ts != pkt.timestamp);
            if fresh {
                let mut r = DtmfRescaler::new(src_clock, te.clock_rate);
                r.anchor(pkt.timestamp, dst.out_ts_for(te.clock_rate));
                dst.dtmf_fwd = Some((src_id, pkt.timestamp, r));
            }
            let (_, _, r) = dst.dtmf_fwd.as_mut().expect("set above");
            let (ts, out_ev) = r.rescale(pkt.timestamp, ev);
            dst.dtmf_quiet_until_ms = if out_ev.end {
                0
            } else {
                now_ms + DTMF_QUIET_MS
            };
            if dst.dtmf_out.len() < 32 {
                dst.dtmf_out.push_back((ts, out_ev, fresh));
            }
        }
        if relaying {
            // Audio is forwarded on receipt: so is DTMF.
            self.drain_dtmf_out();
        }
    }

    /// Plays a DTMF digit that participant `id` sent in signalling (SIP
    /// INFO) to the others as RFC 4733 events of `duration_ms`, at their
    /// telephone-event clock rate, following the forwarding policy.
    pub fn inject_dtmf(
        &mut self,
        id: ParticipantId,
        event: u8,
        duration_ms: u32,
    ) -> Result<(), RoomError> {
        let i = *self.index.get(&id).ok_or(RoomError::Unknown(id))?;
        let forward = match self.cfg.dtmf_forwarding {
            DtmfForwarding::Never => false,
            DtmfForwarding::TwoParty => self.participants.len() == 2,
            DtmfForwarding::Always => true,
        };
        let src = &self.participants[i];
        if !forward || src.muted || src.held {
            return Ok(());
        }
        let duration_ms = duration_ms.clamp(40, 5_000);
        for (j, dst) in self.participants.iter_mut().enumerate() {
            if j == i || dst.te.is_none() || dst.held || dst.deaf {
                continue;
            }
            // One digit at a time, each whole, in order (the next tick starts it).
            if dst.dtmf_queued.len() < MAX_QUEUED_DIGITS {
                dst.dtmf_queued.push_back((id, event, duration_ms));
            }
        }
        Ok(())
    }

    /// Runs one 20 ms step at `now_ms`: decode, mix, encode. Returns the
    /// payloads to send, in no particular order; the iterator drains a
    /// buffer the room reuses, so nothing is allocated per tick once warm.
    pub fn tick(&mut self, now_ms: u64) -> impl Iterator<Item = (ParticipantId, OutFrame)> + '_ {
        self.tick_no += 1;
        // Frames relayed since the last drain stay in `out` and go out first.
        self.poll_dtmf_timeouts(now_ms);
        for p in &mut self.participants {
            if let Some(synth) = p.dtmf_synth.as_mut()
                && !synth.next_frame(&mut p.dtmf_out)
            {
                p.dtmf_synth = None;
            }
            if p.dtmf_synth.is_some() {
                p.dtmf_idle_ticks = 0;
            } else {
                p.dtmf_idle_ticks = p.dtmf_idle_ticks.saturating_add(1);
            }
            // The next digit starts on this tick's timestamp, with at least
            // DIGIT_GAP_TICKS ticks (audio again) after the last one's end
            // packets: "22" must stay two digits for a tone detector.
            if p.dtmf_synth.is_none()
                && p.dtmf_idle_ticks > DIGIT_GAP_TICKS
                && let Some(te) = p.te
                && let Some((_, event, duration_ms)) = p.dtmf_queued.pop_front()
            {
                let ts = p.out_ts_for(te.clock_rate);
                let mut synth = participant::DtmfSynth::new(event, duration_ms, ts, te.clock_rate);
                synth.next_frame(&mut p.dtmf_out);
                p.dtmf_synth = Some(synth);
                p.dtmf_idle_ticks = 0;
            }
        }
        self.drain_dtmf_out();
        let relay = self.relay_possible();
        if relay != self.relaying {
            self.relaying = relay;
            if relay {
                // Relaying measures G.711 and RFC 6464 levels only: others start silent.
                for i in 0..self.participants.len() {
                    if !matches!(
                        self.participants[i].spec.kind,
                        CodecKind::Pcmu | CodecKind::Pcma
                    ) {
                        let change = self.participants[i].talker.silence();
                        self.talker_event(i, change);
                    }
                    self.participants[i].start_relay();
                }
                self.flush_to_relay(now_ms);
            } else {
                // Decoders missed the relayed frames: start them clean.
                for p in &mut self.participants {
                    p.stop_relay(now_ms);
                    p.reset_pipeline();
                }
            }
        }
        // Relay-mode ticks may be sparse (see `relay_tick_ms`): catch up.
        let frames = match self.last_tick_ms {
            Some(last) if relay => {
                (now_ms.saturating_sub(last) / u64::from(super::FRAME_MS)).clamp(1, 50) as u32
            }
            _ => 1,
        };
        self.last_tick_ms = Some(now_ms);
        if relay {
            self.relay_tick(now_ms, frames);
        } else {
            self.mix_tick(now_ms);
        }
        for p in &mut self.participants {
            p.advance_clock(frames);
        }
        self.out.drain(..)
    }

    fn poll_dtmf_timeouts(&mut self, now_ms: u64) {
        for i in 0..self.participants.len() {
            let p = &mut self.participants[i];
            if let Some((event, duration_ms)) = p.dtmf_rx.poll_timeout(now_ms, DTMF_END_TIMEOUT_MS)
            {
                let participant = p.id;
                self.report_dtmf(participant, event, duration_ms);
            }
        }
    }

    /// A digit from `participant` ended: one event for whoever listens.
    fn report_dtmf(&mut self, participant: ParticipantId, event: u8, duration_ms: u32) {
        self.push_event(RoomEvent::Dtmf {
            participant,
            event,
            digit: super::dtmf::digit_for_event(event),
            duration_ms,
        });
    }

    fn drain_dtmf_out(&mut self) {
        for p in &mut self.participants {
            let Some(te) = p.te else {
                p.dtmf_out.clear();
                continue;
            };
            while let Some((ts, ev, marker)) = p.dtmf_out.pop_front() {
                let frame = OutFrame {
                    payload: Bytes::copy_from_slice(&ev.to_bytes()),
                    payload_type: te.payload_type,
                    timestamp: ts,
                    marker,
                };
                self.out.push((p.id, frame));
            }
        }
    }

    /// Whether this tick can relay payloads untouched.
    fn relay_possible(&self) -> bool {
        let [a, b] = self.participants.as_slice() else {
            return false;
        };
        self.cfg.relay
            && self.cfg.echo_delay_ms.is_none()
            && self.players.is_empty()
            && self.beeps.is_empty()
            && self.recorder.is_none()
            && a.spec.kind == b.spec.kind
            && a.spec.payload_type == b.spec.payload_type
            && a.plain()
            && b.plain()
    }
}
