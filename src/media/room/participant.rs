//! One participant's pipeline: jitter buffer → decoder → resampler into the
//! mix, and mix → resampler → encoder back out; plus players and recorders.

use std::collections::VecDeque;
use std::io;

use bytes::{Bytes, BytesMut};

use super::{
    InPacket, ParticipantConfig, ParticipantId, PushOutcome, RoomError, TelephoneEventSpec,
    WavOutput,
};
use crate::media::codec::g711::{self, Law};
use crate::media::codec::{Codec, CodecKind, CodecSpec, MAX_PAYLOAD};
use crate::media::dsp::{mean_square, mean_square_from_dbov, saturate};
use crate::media::dtmf::{DtmfReceiver, DtmfRescaler, TelephoneEvent};
use crate::media::frame_samples;
use crate::media::jitter::{JitterBuffer, JitterConfig, Pop, PushResult};
use crate::media::resample::{ResampleError, Resampler};
use crate::media::talker::{TalkerChange, TalkerConfig, TalkerDetector};
use crate::media::tone::AudioSource;
use crate::media::wav::WavWriter;

/// Unity gain in Q12.
pub(super) const UNITY: i32 = 4096;

/// A resampler when the rates differ.
fn resampler(from: u32, to: u32) -> Result<Option<Resampler>, ResampleError> {
    if from == to {
        Ok(None)
    } else {
        Resampler::new(from, to).map(Some)
    }
}

/// Runs `input` through `r` (or copies it) into `out`, zero-filling the rest.
pub(super) fn convert(r: Option<&mut Resampler>, input: &[i16], out: &mut [i16]) {
    let n = match r {
        Some(r) => r.process(input, out),
        None => {
            let n = input.len().min(out.len());
            out[..n].copy_from_slice(&input[..n]);
            n
        }
    };
    out[n..].fill(0);
}

/// Encodes `pcm` into a fresh `Bytes` carved out of `buf`, whose allocation
/// is reclaimed on the next call once the previous payload has been dropped.
pub(super) fn encode_into(codec: &mut dyn Codec, pcm: &[i16], buf: &mut BytesMut) -> Option<Bytes> {
    buf.clear();
    buf.reserve(MAX_PAYLOAD);
    buf.resize(MAX_PAYLOAD, 0);
    match codec.encode(pcm, buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf.split().freeze())
        }
        Err(_) => None,
    }
}

/// The frame delay line of an echo room.
#[derive(Debug)]
pub(super) struct EchoLine {
    frames: usize,
    buf: Vec<i16>,
    pos: usize,
}

impl EchoLine {
    fn new(frames: usize, frame_len: usize) -> Self {
        EchoLine {
            frames,
            buf: vec![0; frames * frame_len],
            pos: 0,
        }
    }

    /// Writes `input` and reads the frame stored `frames` ticks ago into `out`.
    pub(super) fn swap(&mut self, input: &[i16], out: &mut [i16]) {
        let n = input.len();
        let at = self.pos * n;
        out.copy_from_slice(&self.buf[at..at + n]);
        self.buf[at..at + n].copy_from_slice(input);
        self.pos = (self.pos + 1) % self.frames;
    }
}

/// A WAV recording fed at the mixing rate, written at the rate it started with.
pub(super) struct Recorder {
    wav: WavWriter<Box<dyn WavOutput>>,
    resampler: Option<Resampler>,
    buf: Vec<i16>,
}

impl Recorder {
    pub(super) fn new(
        wav: WavWriter<Box<dyn WavOutput>>,
        mix_rate: u32,
    ) -> Result<Self, ResampleError> {
        let buf = vec![0; frame_samples(wav.rate())];
        let resampler = resampler(mix_rate, wav.rate())?;
        Ok(Recorder {
            wav,
            resampler,
            buf,
        })
    }

    pub(super) fn set_mix_rate(&mut self, mix_rate: u32) -> Result<(), ResampleError> {
        self.resampler = resampler(mix_rate, self.wav.rate())?;
        Ok(())
    }

    /// Appends one frame at the mixing rate.
    pub(super) fn write(&mut self, frame: &[i16]) -> io::Result<()> {
        convert(self.resampler.as_mut(), frame, &mut self.buf);
        self.wav.write_samples(&self.buf)
    }

    pub(super) fn finish(self) -> io::Result<Box<dyn WavOutput>> {
        self.wav.finish()
    }
}

/// A source of audio mixed into the room (tone, announcement).
pub(super) struct Player {
    pub(super) id: ParticipantId,
    source: Box<dyn AudioSource>,
    pub(super) buf: Vec<i16>,
}

impl Player {
    pub(super) fn new(id: ParticipantId, source: Box<dyn AudioSource>, mix_rate: u32) -> Self {
        Player {
            id,
            source,
            buf: vec![0; frame_samples(mix_rate)],
        }
    }

    pub(super) fn set_mix_rate(&mut self, rate: u32) {
        self.buf = vec![0; frame_samples(rate)];
    }

    /// Renders the next frame; `false` once finished.
    pub(super) fn render(&mut self, rate: u32) -> bool {
        self.source.render(rate, &mut self.buf)
    }
}

/// Everything the room keeps per participant.
#[repr(C, align(64))]
pub(super) struct Participant {
    // Relaying reads and writes the fields up to `sent_last_tick` for every
    // packet: they come first (`repr(C)`), in the participant's first cache
    // lines, so a relayed packet touches few lines per participant.
    pub(super) id: ParticipantId,
    /// Relay mode: when the last frame was relayed to it, ms.
    relay_last_ms: u64,
    /// Relay mode: when it last sent us audio, ms (talker silence).
    relay_heard_ms: Option<u64>,
    /// While an event forwarded to it has not ended: no audio goes to it
    /// until this time, ms (the end packet clears it; a lost end times out).
    pub(super) dtmf_quiet_until_ms: u64,
    pub(super) track: Option<Box<Recorder>>,
    pub(super) spec: CodecSpec,
    pub(super) te: Option<TelephoneEventSpec>,
    /// A digit from signalling (SIP INFO) being played to it as RFC 4733.
    pub(super) dtmf_synth: Option<DtmfSynth>,
    pub(super) talker: TalkerDetector,
    /// RTP timestamp of the next frame sent to it.
    out_ts: u32,
    /// Relay mode: offset from the other side's RTP timestamps to ours,
    /// fixed by the first packet relayed after the room (re)entered relay.
    relay_offset: Option<u32>,
    /// Relay mode: our timestamp of the last frame relayed to it.
    relay_last_ts: Option<u32>,
    pub(super) gain_q12: i32,
    pub(super) muted: bool,
    pub(super) deaf: bool,
    pub(super) held: bool,
    /// Relay mode: a frame was relayed to it since the last tick.
    relayed_since_tick: bool,
    sent_this_tick: bool,
    sent_last_tick: bool,
    pub(super) jb: JitterBuffer,
    /// Decoder for the input and encoder for an individual mix.
    pub(super) codec: Box<dyn Codec>,
    /// PCM rate of `codec`: the native rate, or the mixing rate for Opus.
    pub(super) pcm_rate: u32,
    mix_rate: u32,
    /// This tick's decoded input at `pcm_rate`.
    pub(super) input: Vec<i16>,
    /// Whether `input` holds audio (decoded or concealed) this tick.
    pub(super) has_audio: bool,
    to_mix: Option<Resampler>,
    from_mix: Option<Resampler>,
    /// What the others hear from it this tick, at the mixing rate.
    pub(super) contrib: Vec<i16>,
    /// In this tick's mix.
    pub(super) contributes: bool,
    /// `contrib` was computed this tick / last tick (resampler continuity).
    contrib_ran: bool,
    contrib_ran_last: bool,
    /// An individual mix was encoded this tick / last tick.
    individual_ran: bool,
    individual_ran_last: bool,
    /// An individual mix at `pcm_rate`, to encode.
    out_pcm: Vec<i16>,
    out_buf: BytesMut,
    pub(super) dtmf_rx: DtmfReceiver,
    /// Rescaler of the event being forwarded to it: (source, source event timestamp, rescaler).
    pub(super) dtmf_fwd: Option<(ParticipantId, u32, DtmfRescaler)>,
    /// Forwarded telephone-event packets waiting for the next tick.
    pub(super) dtmf_out: VecDeque<(u32, TelephoneEvent, bool)>,
    /// Digits from signalling waiting for the one being played: (sender,
    /// event, duration ms). INFO requests can arrive faster than their
    /// digits last.
    pub(super) dtmf_queued: VecDeque<(ParticipantId, u8, u32)>,
    /// Ticks since a digit from signalling was last played to it.
    pub(super) dtmf_idle_ticks: u8,
    pub(super) echo: Option<EchoLine>,
    echo_frames: Option<usize>,
    /// Packets that are not whole 20 ms frames, cut on a 20 ms grid.
    reframe: Reframe,
}

/// The state of [`Participant::push_reframed`].
#[derive(Debug, Default)]
struct Reframe {
    /// A timestamp on the 20 ms grid (the stream's first packet, or the
    /// last whole-frame packet).
    base: Option<u32>,
    /// The frame being joined: its timestamp and the bytes so far.
    ts: u32,
    bytes: Vec<u8>,
}

impl Participant {
    pub(super) fn new(
        id: ParticipantId,
        cfg: ParticipantConfig,
        mix_rate: u32,
        talker: TalkerConfig,
        echo_frames: Option<usize>,
    ) -> Result<Self, RoomError> {
        let spec = cfg.codec;
        let pcm_rate = Self::pcm_rate_for(spec.kind, mix_rate);
        let clock = spec.kind.clock_rate();
        let jb_cfg = cfg.jitter.unwrap_or_else(|| JitterConfig::new(clock));
        let mut p = Participant {
            id,
            spec,
            te: cfg.telephone_event,
            jb: JitterBuffer::new(jb_cfg),
            codec: spec.build(pcm_rate)?,
            pcm_rate,
            mix_rate,
            input: Vec::new(),
            has_audio: false,
            to_mix: None,
            from_mix: None,
            contrib: Vec::new(),
            contributes: false,
            contrib_ran: false,
            contrib_ran_last: false,
            individual_ran: false,
            individual_ran_last: false,
            out_pcm: Vec::new(),
            out_buf: BytesMut::with_capacity(MAX_PAYLOAD * 2),
            muted: false,
            deaf: false,
            held: false,
            gain_q12: UNITY,
            talker: TalkerDetector::new(talker),
            out_ts: cfg.initial_timestamp,
            relay_offset: None,
            relay_last_ts: None,
            relayed_since_tick: false,
            relay_last_ms: 0,
            relay_heard_ms: None,
            sent_this_tick: false,
            sent_last_tick: false,
            dtmf_rx: DtmfReceiver::new(cfg.telephone_event.map_or(clock, |t| t.clock_rate)),
            dtmf_fwd: None,
            dtmf_out: VecDeque::new(),
            dtmf_synth: None,
            dtmf_queued: VecDeque::new(),
            dtmf_idle_ticks: u8::MAX,
            dtmf_quiet_until_ms: 0,
            echo: None,
            echo_frames,
            track: None,
            reframe: Reframe::default(),
        };
        p.build_buffers()?;
        Ok(p)
    }

    /// A participant like this one speaking `cfg`'s codec: the controls
    /// (mute, deaf, hold, gain), its recording and its outgoing timestamps
    /// carry over; codec, jitter buffer and DTMF state start afresh (a
    /// renegotiation switched the codec or its payload type).
    pub(super) fn reconfigured(
        &mut self,
        mut cfg: ParticipantConfig,
        talker: TalkerConfig,
    ) -> Result<Self, RoomError> {
        // Relaying keeps `out_ts` past every frame it sent: go on from there.
        cfg.initial_timestamp = self.out_ts;
        let mut p = Participant::new(self.id, cfg, self.mix_rate, talker, self.echo_frames)?;
        p.muted = self.muted;
        p.deaf = self.deaf;
        p.held = self.held;
        p.gain_q12 = self.gain_q12;
        p.track = self.track.take();
        // Digits for it are not lost: a digit being played ends with its
        // end packets, queued ones follow. The end packets are on the old
        // telephone-event's clock and payload type: they go only when the
        // new one is the same (else the receiver's own timeout ends the
        // digit); without telephone-event nothing can be played at all.
        if let Some(synth) = self.dtmf_synth.take() {
            synth.end_now(&mut self.dtmf_out);
        }
        if p.te.is_some() {
            if p.te == self.te {
                p.dtmf_out = std::mem::take(&mut self.dtmf_out);
            }
            p.dtmf_queued = std::mem::take(&mut self.dtmf_queued);
        }
        Ok(p)
    }

    fn pcm_rate_for(kind: CodecKind, mix_rate: u32) -> u32 {
        if kind == CodecKind::Opus {
            mix_rate
        } else {
            kind.native_rate()
        }
    }

    /// (Re)creates resamplers and buffers for the current rates.
    fn build_buffers(&mut self) -> Result<(), RoomError> {
        let (pcm, mix) = (frame_samples(self.pcm_rate), frame_samples(self.mix_rate));
        self.to_mix = resampler(self.pcm_rate, self.mix_rate)?;
        self.from_mix = resampler(self.mix_rate, self.pcm_rate)?;
        self.input = vec![0; pcm];
        self.out_pcm = vec![0; pcm];
        self.contrib = vec![0; mix];
        self.echo = self.echo_frames.map(|f| EchoLine::new(f, mix));
        Ok(())
    }

    /// Follows a change of the room's mixing rate.
    pub(super) fn set_mix_rate(&mut self, mix_rate: u32) -> Result<(), RoomError> {
        self.mix_rate = mix_rate;
        let pcm_rate = Self::pcm_rate_for(self.spec.kind, mix_rate);
        if pcm_rate != self.pcm_rate {
            self.codec = self.spec.build(pcm_rate)?;
            self.pcm_rate = pcm_rate;
        }
        if let Some(t) = &mut self.track {
            t.set_mix_rate(mix_rate)?;
        }
        self.build_buffers()
    }

    /// Nothing about it needs decoded audio: relaying is allowed.
    pub(super) fn plain(&self) -> bool {
        !self.muted && !self.deaf && !self.held && self.gain_q12 == UNITY && self.track.is_none()
    }

    /// Buffers an audio packet, splitting multi-frame G.711/G.722 payloads
    /// into 20 ms frames (they are sample-aligned; Opus packets are not split).
    pub(super) fn push_audio(&mut self, pkt: &InPacket<'_>, now_ms: u64) -> PushOutcome {
        if pkt.payload.is_empty() {
            return PushOutcome::Ignored;
        }
        let kind = self.spec.kind;
        // 160 bytes = 20 ms for G.711 (8 kHz, 8 bit) and G.722 (two samples per byte).
        let frame_bytes = if kind == CodecKind::Opus {
            usize::MAX
        } else {
            160
        };
        if kind != CodecKind::Opus
            && (!pkt.payload.len().is_multiple_of(frame_bytes) || !self.reframe.bytes.is_empty())
        {
            return self.push_reframed(pkt, now_ms);
        }
        if kind != CodecKind::Opus {
            // Whole 20 ms frames: they set the grid a 10 or 30 ms stream
            // is cut on.
            self.reframe.base = Some(pkt.timestamp);
        }
        let step = kind.timestamp_step();
        let mut outcome = PushOutcome::Buffered;
        for (k, chunk) in pkt.payload.chunks(frame_bytes).enumerate() {
            let ts = pkt.timestamp.wrapping_add(step.wrapping_mul(k as u32));
            let marker = pkt.marker && k == 0;
            let r = self
                .jb
                .push_with(pkt.seq, ts, marker, pkt.audio_level, chunk, now_ms);
            if k == 0 {
                outcome = match r {
                    PushResult::Stored => PushOutcome::Buffered,
                    PushResult::Late => PushOutcome::Late,
                    PushResult::Duplicate => PushOutcome::Duplicate,
                    PushResult::TooLarge => PushOutcome::TooLarge,
                };
            }
        }
        outcome
    }

    /// Buffers G.711/G.722 packets that are not whole 20 ms frames (10 or
    /// 30 ms packets, `a=ptime:30`): their bytes (one per RTP clock tick)
    /// are cut on a 20 ms grid set by the stream's first packet, and a
    /// frame split across two packets is joined when they are contiguous;
    /// otherwise its part is dropped and the jitter buffer conceals it.
    fn push_reframed(&mut self, pkt: &InPacket<'_>, now_ms: u64) -> PushOutcome {
        const FRAME: usize = 160;
        let base = *self.reframe.base.get_or_insert(pkt.timestamp);
        let mut data = pkt.payload;
        let mut ts = pkt.timestamp;
        let mut outcome = PushOutcome::Buffered;
        let mut first = true;
        let off = (ts.wrapping_sub(base) % FRAME as u32) as usize;
        if off != 0 {
            let start = ts.wrapping_sub(off as u32);
            let take = (FRAME - off).min(data.len());
            let r = &mut self.reframe;
            if r.ts == start && r.bytes.len() == off {
                r.bytes.extend_from_slice(&data[..take]);
            } else {
                r.bytes.clear();
            }
            data = &data[take..];
            ts = ts.wrapping_add(take as u32);
            if self.reframe.bytes.len() == FRAME {
                let r = self.jb.push_with(
                    pkt.seq,
                    start,
                    false,
                    pkt.audio_level,
                    &self.reframe.bytes,
                    now_ms,
                );
                self.reframe.bytes.clear();
                outcome = Self::outcome(r);
                first = false;
            }
        } else {
            self.reframe.bytes.clear();
        }
        while data.len() >= FRAME {
            let r = self.jb.push_with(
                pkt.seq,
                ts,
                pkt.marker && first,
                pkt.audio_level,
                &data[..FRAME],
                now_ms,
            );
            if first {
                outcome = Self::outcome(r);
                first = false;
            }
            data = &data[FRAME..];
            ts = ts.wrapping_add(FRAME as u32);
        }
        if !data.is_empty() {
            self.reframe.ts = ts;
            self.reframe.bytes.clear();
            self.reframe.bytes.extend_from_slice(data);
        }
        outcome
    }

    fn outcome(r: PushResult) -> PushOutcome {
        match r {
            PushResult::Stored => PushOutcome::Buffered,
            PushResult::Late => PushOutcome::Late,
            PushResult::Duplicate => PushOutcome::Duplicate,
            PushResult::TooLarge => PushOutcome::TooLarge,
        }
    }

    /// Pops and decodes this tick's input (at most once), feeding talker
    /// detection. With `skip_quiet`, a frame whose RFC 6464 level is below
    /// the talker threshold is not decoded while the participant is silent.
    pub(super) fn read_input(&mut self, now_ms: u64, skip_quiet: bool) -> Option<TalkerChange> {
        self.has_audio = false;
        let pop = self.jb.pop(now_ms);
        if self.muted || self.held {
            return self.talker.silence();
        }
        let n = self.input.len();
        match pop {
            Pop::Frame(f) => {
                let level_hint = f
                    .audio_level
                    .map(|l| mean_square_from_dbov(-(l.min(127) as f32)));
                if skip_quiet
                    && !self.talker.talking()
                    && let Some(ms) = level_hint
                    && !self.talker.is_loud(ms)
                {
                    return self.talker.update(ms);
                }
                match self.codec.decode(f.payload, &mut self.input) {
                    Ok(k) => self.input[k.min(n)..].fill(0),
                    Err(_) => {
                        if self.codec.conceal(None, &mut self.input).is_err() {
                            self.input.fill(0);
                        }
                    }
                }
            }
            Pop::Lost => {
                let next = self.jb.peek_next();
                match self.codec.conceal(next, &mut self.input) {
                    Ok(k) => self.input[k.min(n)..].fill(0),
                    Err(_) => self.input.fill(0),
                }
            }
            Pop::Empty => {
                self.input.fill(0);
                return self.talker.update(0.0);
            }
        }
        self.has_audio = true;
        self.talker.update(mean_square(&self.input))
    }

    /// Relay mode: the talker level of a packet it sent, from its RFC 6464
    /// level or, for G.711, a (cheap) decode of its first frame; other
    /// codecs without a level count as silence.
    pub(super) fn relay_heard(
        &mut self,
        payload: &[u8],
        audio_level: Option<u8>,
        now_ms: u64,
    ) -> Option<TalkerChange> {
        self.relay_heard_ms = Some(now_ms);
        let first = &payload[..payload.len().min(160)];
        let level = match (audio_level, self.spec.kind) {
            (Some(l), _) => Some(mean_square_from_dbov(-(l.min(127) as f32))),
            (None, CodecKind::Pcmu) => Some(g711::mean_square(Law::Mu, first)),
            (None, CodecKind::Pcma) => Some(g711::mean_square(Law::A, first)),
            (None, _) => None,
        };
        level.and_then(|ms| self.talker.update(ms))
    }

    /// Relay mode, at a tick `frames` × 20 ms after the last one: a
    /// participant that sent nothing for `silent_ms` is silent for talker
    /// detection, one silent frame per 20 ms.
    pub(super) fn relay_quiet(
        &mut self,
        now_ms: u64,
        silent_ms: u64,
        frames: u32,
    ) -> Option<TalkerChange> {
        let quiet = self
            .relay_heard_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= silent_ms);
        let mut change = None;
        if quiet {
            for _ in 0..frames {
                change = self.talker.update(0.0).or(change);
            }
        }
        change
    }

    /// Relay mode: stamps a payload the other side sent (RTP timestamp `ts`,
    /// `frames` × 20 ms long) for this participant, on its outgoing clock:
    /// (timestamp, marker). Timestamps map with a fixed offset, so gaps
    /// (loss, DTX) pass through and the clock stays continuous with the
    /// mixed frames before and after. `None` for a packet older than the last one relayed
    /// (reordered, duplicate): without a jitter buffer it is too late.
    pub(super) fn relay_stamp(
        &mut self,
        now_ms: u64,
        ts: u32,
        marker: bool,
        frames: u32,
    ) -> Option<(u32, bool)> {
        let step = self.spec.kind.timestamp_step();
        let first = self.relay_offset.is_none();
        let offset = *self
            .relay_offset
            .get_or_insert(self.out_ts.wrapping_sub(ts));
        let mut out_ts = ts.wrapping_add(offset);
        if let Some(last) = self.relay_last_ts {
            let ahead = out_ts.wrapping_sub(last) as i32;
            // More than 50 frames back: the sender restarted its clock; re-anchor.
            if ahead <= -(50 * step as i32) {
                self.relay_offset = Some(self.out_ts.wrapping_sub(ts));
                out_ts = self.out_ts;
            } else if ahead <= 0 {
                return None;
            }
        }
        self.relay_last_ts = Some(out_ts);
        self.relay_last_ms = now_ms;
        let next = out_ts.wrapping_add(step.wrapping_mul(frames.max(1)));
        if next.wrapping_sub(self.out_ts) as i32 > 0 {
            self.out_ts = next;
        }
        self.relayed_since_tick = true;
        self.sent_this_tick = true;
        Some((out_ts, marker || first))
    }

    /// A relayed payload as an owned frame (stamped by
    /// [`Participant::relay_stamp`]), for the room's output queue.
    pub(super) fn relayed(
        &mut self,
        payload: &[u8],
        timestamp: u32,
        marker: bool,
    ) -> super::OutFrame {
        self.out_buf.clear();
        self.out_buf.extend_from_slice(payload);
        super::OutFrame {
            payload: self.out_buf.split().freeze(),
            payload_type: self.spec.payload_type,
            timestamp,
            marker,
        }
    }

    /// 20 ms frames in an audio payload of `len` bytes (G.711/G.722: 160
    /// bytes each; an Opus packet counts as one).
    pub(super) fn frames_in(&self, len: usize) -> u32 {
        if self.spec.kind == CodecKind::Opus {
            1
        } else {
            len.div_ceil(160).max(1) as u32
        }
    }

    /// The room starts relaying: the next relayed packet fixes the offset,
    /// and the jitter buffer (unused while relaying) starts afresh later.
    pub(super) fn start_relay(&mut self) {
        self.relay_offset = None;
        self.relay_last_ts = None;
        self.relay_heard_ms = None;
    }

    /// The room stops relaying at `now_ms`: the mixed frames continue the
    /// clock from the last relayed frame plus the time since (relay-mode
    /// ticks are sparse, so the tick clock alone may lag behind).
    pub(super) fn stop_relay(&mut self, now_ms: u64) {
        if let Some(last) = self.relay_last_ts.take() {
            let step = self.spec.kind.timestamp_step();
            let frames = (now_ms.saturating_sub(self.relay_last_ms) / 20).clamp(1, 1 << 20) as u32;
            let due = last.wrapping_add(step.wrapping_mul(frames));
            if due.wrapping_sub(self.out_ts) as i32 > 0 {
                self.out_ts = due;
            }
        }
        self.relay_offset = None;
        // This tick's mixed frame goes out at `out_ts`: advance past it.
        self.relayed_since_tick = false;
    }

    /// Computes `contrib` (input at the mixing rate, times the gain).
    pub(super) fn make_contrib(&mut self) {
        if !self.contrib_ran_last
            && let Some(r) = &mut self.to_mix
        {
            r.reset();
        }
        self.contrib_ran = true;
        convert(self.to_mix.as_mut(), &self.input, &mut self.contrib);
        if self.gain_q12 != UNITY {
            let g = self.gain_q12;
            self.contrib
                .iter_mut()
                .for_each(|s| *s = saturate((*s as i32 * g) >> 12));
        }
    }

    /// Encodes an individual mix (at the mixing rate) for this participant.
    pub(super) fn encode_individual(&mut self, mix: &[i16]) -> Option<Bytes> {
        if !self.individual_ran_last
            && let Some(r) = &mut self.from_mix
        {
            r.reset();
        }
        self.individual_ran = true;
        convert(self.from_mix.as_mut(), mix, &mut self.out_pcm);
        encode_into(self.codec.as_mut(), &self.out_pcm, &mut self.out_buf)
    }

    /// Wraps a payload with this participant's payload type, clock and marker.
    pub(super) fn frame(&mut self, payload: Bytes) -> super::OutFrame {
        self.sent_this_tick = true;
        super::OutFrame {
            payload,
            payload_type: self.spec.payload_type,
            timestamp: self.out_ts,
            marker: !self.sent_last_tick,
        }
    }

    /// Whether an RFC 4733 event is being sent to it: audio to it waits
    /// (as a phone sends no voice while it sends a digit: a receiver such as
    /// Chromium's NetEq otherwise buffers the audio behind the tone).
    pub(super) fn sending_dtmf(&self, now_ms: u64) -> bool {
        self.dtmf_synth.is_some() || now_ms < self.dtmf_quiet_until_ms
    }

    /// Ends the digit being played to it now (its end packets go out with
    /// the next drain) and drops the queued ones.
    pub(super) fn stop_dtmf(&mut self) {
        self.dtmf_queued.clear();
        if let Some(synth) = self.dtmf_synth.take() {
            synth.end_now(&mut self.dtmf_out);
        }
    }

    /// The next frame's timestamp on a clock of `rate` Hz (telephone-event).
    pub(super) fn out_ts_for(&self, rate: u32) -> u32 {
        let clock = self.spec.kind.clock_rate();
        if rate == clock {
            self.out_ts
        } else {
            (self.out_ts as u64 * rate as u64 / clock as u64) as u32
        }
    }

    /// Moves the outgoing clock one frame on (whether or not we sent).
    /// `frames` × 20 ms since the last tick (more than one only in relay
    /// mode, whose ticks are sparse). In relay mode, frames relayed since
    /// the last tick have already moved it past themselves.
    pub(super) fn advance_clock(&mut self, frames: u32) {
        if !std::mem::take(&mut self.relayed_since_tick) {
            let step = self.spec.kind.timestamp_step();
            self.out_ts = self.out_ts.wrapping_add(step.wrapping_mul(frames));
        }
        self.sent_last_tick = std::mem::take(&mut self.sent_this_tick);
        self.contrib_ran_last = std::mem::take(&mut self.contrib_ran);
        self.individual_ran_last = std::mem::take(&mut self.individual_ran);
    }

    /// Forgets codec and filter history (after relaying).
    pub(super) fn reset_pipeline(&mut self) {
        self.codec.reset();
        for r in [&mut self.to_mix, &mut self.from_mix].into_iter().flatten() {
            r.reset();
        }
        self.contrib_ran_last = false;
        self.individual_ran_last = false;
    }
}

/// Plays one DTMF digit as RFC 4733 telephone-event packets: one per 20 ms
/// frame with a growing duration, then three end packets (RFC 4733 §2.5.1.4).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DtmfSynth {
    /// The event code.
    pub(super) event: u8,
    /// The event's timestamp (its start), on the telephone-event clock.
    pub(super) timestamp: u32,
    /// Its whole length, clock units.
    pub(super) total: u32,
    /// How much has been sent, clock units.
    pub(super) sent: u32,
    /// Clock units per 20 ms frame.
    pub(super) step: u32,
}

impl DtmfSynth {
    /// A digit of `duration_ms` starting at `timestamp` on a `clock` Hz
    /// telephone-event clock.
    pub(super) fn new(event: u8, duration_ms: u32, timestamp: u32, clock: u32) -> DtmfSynth {
        DtmfSynth {
            event,
            timestamp,
            total: duration_ms * clock / 1000,
            sent: 0,
            step: clock / 50,
        }
    }

    /// Ends the event now: its three end packets with the duration sent so
    /// far (nothing if none was sent, or if they already went).
    pub(super) fn end_now(self, out: &mut VecDeque<(u32, TelephoneEvent, bool)>) {
        if self.sent > 0 && self.sent < self.total {
            let ev = TelephoneEvent {
                event: self.event,
                end: true,
                volume: 10,
                duration: self.sent.min(u32::from(u16::MAX)) as u16,
            };
            out.extend((0..3).map(|_| (self.timestamp, ev, false)));
        }
    }

    /// Appends the packets of the next frame to `out`: `(timestamp, event,
    /// marker)`. False, and nothing appended, once the event is over (the
    /// end packets were the last).
    pub(super) fn next_frame(&mut self, out: &mut VecDeque<(u32, TelephoneEvent, bool)>) -> bool {
        if self.sent >= self.total {
            return false;
        }
        let first = self.sent == 0;
        self.sent = (self.sent + self.step).min(self.total);
        let duration = self.sent.min(u32::from(u16::MAX)) as u16;
        let end = self.sent >= self.total;
        let ev = TelephoneEvent {
            event: self.event,
            end,
            volume: 10,
            duration,
        };
        let copies = if end { 3 } else { 1 };
        out.extend((0..copies).map(|k| (self.timestamp, ev, first && k == 0)));
        true
    }
}
