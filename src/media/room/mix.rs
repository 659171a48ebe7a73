//! The per-tick work of a room: relay, or decode → mix → encode with one
//! shared encoding per codec configuration for everyone who hears the full mix.

use bytes::{Bytes, BytesMut};

use super::participant::{convert, encode_into};
use super::{FrameRef, InPacket, OutFrame, ParticipantId, PushOutcome, Room, RoomEvent};
use crate::media::codec::{Codec, CodecKind, CodecSpec, MAX_PAYLOAD};
use crate::media::dsp::saturate;
use crate::media::frame_samples;
use crate::media::resample::Resampler;
use crate::media::talker::TalkerChange;

/// Relay mode: a sender silent for this long is silent for talker detection, ms.
const RELAY_SILENCE_MS: u64 = 60;
/// Frames kept for the driver at most between drains.
const MAX_PENDING_OUT: usize = 256;

/// Ticks a shared output may go unused before it is dropped.
const SHARED_IDLE_TICKS: u64 = 250;

/// One encoding of the full mix for all listeners with the same codec spec.
pub(super) struct SharedOut {
    spec: CodecSpec,
    codec: Box<dyn Codec>,
    resampler: Option<Resampler>,
    pcm: Vec<i16>,
    buf: BytesMut,
    /// This tick's payload, once computed.
    frame: Option<Bytes>,
    frame_tick: u64,
    /// Encoded digital silence (for deaf participants), once computed.
    silence: Option<Bytes>,
    used_tick: u64,
}

impl SharedOut {
    fn new(spec: CodecSpec, pcm_rate: u32, mix_rate: u32) -> Option<Self> {
        let codec = spec.build(pcm_rate).ok()?;
        let resampler = if pcm_rate == mix_rate {
            None
        } else {
            Resampler::new(mix_rate, pcm_rate).ok()
        };
        Some(SharedOut {
            spec,
            codec,
            resampler,
            pcm: vec![0; frame_samples(pcm_rate)],
            buf: BytesMut::with_capacity(MAX_PAYLOAD * 2),
            frame: None,
            frame_tick: 0,
            silence: None,
            used_tick: 0,
        })
    }

    /// The full mix encoded for this spec, computed once per tick.
    fn mix_frame(&mut self, tick: u64, mix: &[i16]) -> Option<Bytes> {
        self.used_tick = tick;
        if self.frame_tick != tick {
            self.frame_tick = tick;
            convert(self.resampler.as_mut(), mix, &mut self.pcm);
            // Drop our handle on last tick's payload first so its buffer can be reused.
            self.frame = None;
            self.frame = encode_into(self.codec.as_mut(), &self.pcm, &mut self.buf);
        }
        self.frame.clone()
    }

    /// Encoded silence (a fresh encoder's steady state), computed once.
    fn silence_frame(&mut self, tick: u64) -> Option<Bytes> {
        self.used_tick = tick;
        if self.silence.is_none() {
            let mut c = self.spec.build(self.codec.pcm_rate()).ok()?;
            let zeros = vec![0i16; self.pcm.len()];
            for _ in 0..3 {
                self.silence = c.encode_vec(&zeros).ok().map(Bytes::from);
            }
        }
        self.silence.clone()
    }
}

impl Room {
    /// The shared output for `spec` at `pcm_rate`, created on first use.
    fn shared_for(
        shared: &mut Vec<SharedOut>,
        spec: CodecSpec,
        pcm_rate: u32,
        mix_rate: u32,
    ) -> Option<&mut SharedOut> {
        let i = match shared.iter().position(|s| s.spec == spec) {
            Some(i) => i,
            None => {
                shared.push(SharedOut::new(spec, pcm_rate, mix_rate)?);
                shared.len() - 1
            }
        };
        shared.get_mut(i)
    }

    /// Reports a talker state change of participant `i` as an event.
    pub(super) fn talker_event(&mut self, i: usize, change: Option<TalkerChange>) {
        let p = &self.participants[i];
        let participant = p.id;
        match change {
            Some(TalkerChange::Started) => {
                let level_dbov = p.talker.level_dbov();
                self.push_event(RoomEvent::TalkingStarted {
                    participant,
                    level_dbov,
                })
            }
            Some(TalkerChange::Stopped) => {
                self.push_event(RoomEvent::TalkingStopped { participant })
            }
            None => {}
        }
    }

    /// Relay mode, per tick: payloads are forwarded as they arrive
    /// ([`Room::relay_packet`]); the tick only notices silent senders.
    pub(super) fn relay_tick(&mut self, now_ms: u64, frames: u32) {
        for i in 0..self.participants.len() {
            let change = self.participants[i].relay_quiet(now_ms, RELAY_SILENCE_MS, frames);
            self.talker_event(i, change);
        }
    }

    /// Queues a frame for the next drain or tick; bounded if the driver
    /// never drains (a tick then takes them).
    pub(super) fn queue_out(&mut self, frame: (ParticipantId, OutFrame)) {
        if self.out.len() < MAX_PENDING_OUT {
            self.out.push(frame);
        }
    }

    /// Relay mode: forwards one audio packet from participant `i` to the
    /// other participant at once, through `relay`.
    pub(super) fn relay_packet(
        &mut self,
        i: usize,
        pkt: &InPacket<'_>,
        now_ms: u64,
        relay: &mut dyn FnMut(ParticipantId, FrameRef<'_>),
    ) -> PushOutcome {
        if pkt.payload.is_empty() {
            return PushOutcome::Ignored;
        }
        if pkt.payload.len() > MAX_PAYLOAD {
            return PushOutcome::TooLarge;
        }
        let change = self.participants[i].relay_heard(pkt.payload, pkt.audio_level, now_ms);
        self.talker_event(i, change);
        let frames = self.participants[i].frames_in(pkt.payload.len());
        let dst = &mut self.participants[1 - i];
        if dst.sending_dtmf(now_ms) {
            return PushOutcome::Ignored;
        }
        match dst.relay_stamp(now_ms, pkt.timestamp, pkt.marker, frames) {
            Some((timestamp, marker)) => {
                let frame =
                    FrameRef::borrowed(pkt.payload, dst.spec.payload_type, timestamp, marker);
                relay(dst.id, frame);
                PushOutcome::Relayed
            }
            None => PushOutcome::Late,
        }
    }

    /// Entering relay mode: forwards what the jitter buffers still hold, in
    /// order, so the switch loses no audio.
    pub(super) fn flush_to_relay(&mut self, now_ms: u64) {
        if self.participants.len() != 2 {
            return;
        }
        for i in 0..2 {
            let (left, right) = self.participants.split_at_mut(1);
            let (src, dst) = if i == 0 {
                (&mut left[0], &mut right[0])
            } else {
                (&mut right[0], &mut left[0])
            };
            let out = &mut self.out;
            let opus = src.spec.kind == CodecKind::Opus;
            src.jb.drain_in_order(|f| {
                let frames = if opus {
                    1
                } else {
                    f.payload.len().div_ceil(160).max(1) as u32
                };
                if let Some((timestamp, marker)) =
                    dst.relay_stamp(now_ms, f.timestamp, f.marker, frames)
                    && out.len() < MAX_PENDING_OUT
                {
                    let frame = dst.relayed(f.payload, timestamp, marker);
                    out.push((dst.id, frame));
                }
            });
        }
    }

    /// Decode every input once, mix, encode.
    pub(super) fn mix_tick(&mut self, now_ms: u64) {
        let large = self.participants.len() > self.cfg.mix_everyone_up_to;
        let echo = self.cfg.echo_delay_ms.is_some();

        // 1. Inputs and talker detection.
        for i in 0..self.participants.len() {
            let change = self.participants[i].read_input(now_ms, large && !echo);
            self.talker_event(i, change);
        }

        // 2. Contributors.
        for p in &mut self.participants {
            p.contributes = p.has_audio && !p.muted && !p.held;
        }
        if large {
            self.pick_loudest_talkers();
        }

        // 3. The sum of everything heard, at the mixing rate.
        self.total.fill(0);
        for p in &mut self.participants {
            if p.contributes || p.track.is_some() {
                p.make_contrib();
            }
            if p.contributes && !echo {
                self.total
                    .iter_mut()
                    .zip(&p.contrib)
                    .for_each(|(t, &s)| *t += s as i32);
            }
        }
        let mix_rate = self.mix_rate;
        let mut finished = Vec::new();
        for pl in &mut self.players {
            if !pl.render(mix_rate) {
                finished.push(pl.id);
            }
            self.total
                .iter_mut()
                .zip(&pl.buf)
                .for_each(|(t, &s)| *t += s as i32);
        }
        self.beeps.retain_mut(|tone| {
            use crate::media::tone::AudioSource;
            let alive = tone.render(mix_rate, &mut self.scratch);
            self.total
                .iter_mut()
                .zip(&self.scratch)
                .for_each(|(t, &s)| *t += s as i32);
            alive
        });
        for id in finished {
            self.players.retain(|p| p.id != id);
            self.push_event(RoomEvent::PlaybackFinished { participant: id });
        }

        // 4. Recordings.
        self.record();

        // 5. Outputs.
        let tick = self.tick_no;
        let Room {
            participants,
            shared,
            total,
            scratch,
            out,
            ..
        } = self;
        for p in participants.iter_mut() {
            if p.held || p.sending_dtmf(now_ms) {
                continue;
            }
            let payload = if echo {
                if !p.contributes {
                    p.contrib.fill(0);
                }
                match p.echo.as_mut() {
                    Some(line) => line.swap(&p.contrib, scratch),
                    None => scratch.fill(0),
                }
                p.encode_individual(scratch)
            } else if p.deaf {
                Self::shared_for(shared, p.spec, p.pcm_rate, mix_rate)
                    .and_then(|s| s.silence_frame(tick))
            } else if p.contributes {
                // N−1: everything but itself.
                for (o, (&t, &c)) in scratch.iter_mut().zip(total.iter().zip(&p.contrib)) {
                    *o = saturate(t - c as i32);
                }
                p.encode_individual(scratch)
            } else {
                for (o, &t) in scratch.iter_mut().zip(total.iter()) {
                    *o = saturate(t);
                }
                Self::shared_for(shared, p.spec, p.pcm_rate, mix_rate)
                    .and_then(|s| s.mix_frame(tick, scratch))
            };
            if let Some(payload) = payload {
                let frame = p.frame(payload);
                out.push((p.id, frame));
            }
        }
        shared.retain(|s| tick.saturating_sub(s.used_tick) < SHARED_IDLE_TICKS);
    }

    /// In a large room, keeps only the `max_talkers` loudest talkers.
    fn pick_loudest_talkers(&mut self) {
        let max = self.cfg.max_talkers;
        let mut talkers = 0;
        for p in &mut self.participants {
            p.contributes &= p.talker.talking();
            talkers += p.contributes as usize;
        }
        while talkers > max {
            // Few talkers: a linear scan per removal is cheaper than sorting.
            let quietest = self
                .participants
                .iter_mut()
                .filter(|p| p.contributes)
                .min_by(|a, b| a.talker.level().total_cmp(&b.talker.level()));
            if let Some(p) = quietest {
                p.contributes = false;
            }
            talkers -= 1;
        }
    }

    /// Writes the mixed recording and participant tracks.
    fn record(&mut self) {
        let mut failures = Vec::new();
        if let Some(rec) = &mut self.recorder {
            for (o, &t) in self.scratch.iter_mut().zip(self.total.iter()) {
                *o = saturate(t);
            }
            if let Err(e) = rec.write(&self.scratch) {
                failures.push((None, e.to_string()));
            }
        }
        for p in &mut self.participants {
            let heard = p.has_audio && !p.muted && !p.held;
            let Some(track) = &mut p.track else { continue };
            if !heard {
                p.contrib.fill(0);
            }
            if let Err(e) = track.write(&p.contrib) {
                failures.push((Some(p.id), e.to_string()));
                p.track = None;
            }
        }
        for (participant, error) in failures {
            if participant.is_none() {
                self.recorder = None;
            }
            self.push_event(RoomEvent::RecordingFailed { participant, error });
        }
    }
}
