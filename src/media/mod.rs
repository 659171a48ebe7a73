//! The media engine core: codecs, resampling, jitter buffers, DTMF and the
//! mixer room every call's audio goes through.
//!
//! Sans-IO: nothing here opens a socket, reads a clock or spawns a task. Legs
//! (RTP, WebRTC) hand packet payloads to a [`Room`] with the arrival time and
//! call [`Room::tick`] every 20 ms; the room answers with payloads to send.
//! A two-party call is a room with two participants, a conference a room with
//! many; see `docs/media.md`.
//!
//! - [`codec`]: G.711 µ-law/A-law, G.722, Opus (libopus) behind one [`Codec`] trait.
//! - [`resample`]: polyphase FIR resampling between 8, 16 and 48 kHz.
//! - [`jitter`]: per-input adaptive jitter buffer (reorder, loss, drift).
//! - [`dtmf`]: RFC 4733 telephone-events: parse, build, rescale between clocks.
//! - [`leg`]: the [`Leg`] trait RTP and WebRTC legs implement for their room task.
//! - [`sdp`]: SDP parsing and RFC 3264 offer/answer for audio.
//! - [`rtp`]: the plain RTP/AVP leg (symmetric RTP, RTCP, SSRC remapping).
//! - [`engine`]: the async driver: port pairs, one task per room, `RoomHandle`.
//! - [`room`]: the mixer (N−1 mixes, shared listener mix, relay, echo, players).
//! - [`tone`], [`wav`], [`talker`], [`dsp`]: the small parts the room is made of.

#![warn(missing_docs)]

pub mod codec;
pub mod dsp;
pub mod dtmf;
pub mod engine;
pub mod jitter;
pub mod leg;
mod prefetch;
pub mod resample;
pub mod room;
pub mod rtp;
pub mod sdp;
pub mod talker;
pub mod tone;
pub mod wav;
pub mod webrtc;

pub use codec::{Codec, CodecError, CodecKind, CodecSpec, OpusParams};
pub use dtmf::{DtmfRescaler, TelephoneEvent};
pub use jitter::{JitterBuffer, JitterConfig, Pop};
pub use leg::{Leg, LegClosed, LegIo, LegStats};
pub use resample::Resampler;
pub use room::{
    DtmfForwarding, FrameRef, InPacket, OutFrame, ParticipantConfig, ParticipantId, PushOutcome,
    Room, RoomConfig, RoomError, RoomEvent, TelephoneEventSpec,
};
pub use tone::{Announcement, AudioSource, Tone};

/// Length of one media frame and of one room tick, in milliseconds.
pub const FRAME_MS: u32 = 20;

/// Samples in one 20 ms frame at `rate` Hz (mono).
pub const fn frame_samples(rate: u32) -> usize {
    (rate / (1000 / FRAME_MS)) as usize
}
