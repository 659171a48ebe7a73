//! Adaptive jitter buffer for one input stream (sans-IO).
//!
//! Packets go in with their RTP sequence number, timestamp and arrival time
//! ([`JitterBuffer::push`]); once per 20 ms the consumer asks for the frame
//! due now ([`JitterBuffer::pop`]) and gets it, a request to conceal a loss,
//! or "nothing is being sent" (silence, no concealment).
//!
//! - Reordering: packets are kept by timestamp, played in timestamp order.
//! - Late packets (timestamp already played) and duplicates are dropped.
//! - Target delay adapts to the measured jitter: the peak deviation of the
//!   transit time above its recent minimum, decaying with a ~3 s half-life,
//!   clamped to `[min_delay_ms, max_delay_ms]`.
//! - Under-run (the due frame is missing and nothing newer is here) stretches
//!   playout: concealment without advancing, which grows the delay by one frame.
//! - Over-full (the buffer stayed more than two frames above target for a
//!   second, e.g. a sender clock running fast) drops one frame to shrink it.
//! - Bounded memory: `capacity` slots of at most `max_payload` bytes, reused.
//! - No packets for `idle_after_ms`: the stream is idle, `pop` says
//!   [`Pop::Empty`] and the next packet starts a new playout (DTX, hold).

/// Jitter buffer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream.
    pub clock_rate: u32,
    /// RTP timestamp units per 20 ms frame.
    pub frame_step: u32,
    /// Lowest target delay, ms.
    pub min_delay_ms: u32,
    /// Highest target delay, ms.
    pub max_delay_ms: u32,
    /// Packets held at most.
    pub capacity: usize,
    /// Largest payload accepted, bytes.
    pub max_payload: usize,
    /// Silence after this long without a packet ends playout, ms.
    pub idle_after_ms: u32,
}

impl JitterConfig {
    /// Defaults for a stream at `clock_rate` with 20 ms frames.
    pub fn new(clock_rate: u32) -> Self {
        JitterConfig {
            clock_rate,
            frame_step: clock_rate / 50,
            min_delay_ms: 20,
            max_delay_ms: 300,
            capacity: 32,
            max_payload: crate::media::codec::MAX_PAYLOAD,
            idle_after_ms: 200,
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Stored for playout.
    Stored,
    /// Its frame was already played (or concealed): dropped.
    Late,
    /// Same timestamp already held: dropped.
    Duplicate,
    /// Larger than `max_payload`: dropped.
    TooLarge,
}

/// A frame ready to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Codec payload.
    pub payload: &'a [u8],
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP marker bit (start of a talk spurt).
    pub marker: bool,
    /// RFC 6464 audio level (−dBov, 0..=127) when the sender gave one.
    pub audio_level: Option<u8>,
}

/// What is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop<'a> {
    /// The due frame.
    Frame(Frame<'a>),
    /// The due frame is missing while the stream is live: conceal it.
    Lost,
    /// Nothing is being received: play silence.
    Empty,
}

/// Counters, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets pushed (all outcomes).
    pub received: u64,
    /// Frames handed out.
    pub played: u64,
    /// Concealment requests for missing frames.
    pub lost: u64,
    /// Of those, under-runs where playout waited instead of skipping.
    pub stretched: u64,
    /// Frames dropped to shrink the delay (fast sender clock, spikes over).
    pub accelerated: u64,
    /// Packets too late to play.
    pub late: u64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// Packets evicted because the buffer was full.
    pub overflows: u64,
    /// Current target delay, ms.
    pub target_delay_ms: u32,
    /// Current jitter estimate, ms.
    pub jitter_ms: u32,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    used: bool,
    timestamp: u32,
    seq: u16,
    marker: bool,
    audio_level: Option<u8>,
    payload: Vec<u8>,
}

/// Packets per bucket of the sliding transit-time minimum.
const MIN_BUCKET: u32 = 50;
/// Pops per window of the over-full check (1 s).
const ACCEL_WINDOW: u32 = 50;

/// The jitter buffer of one input stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    count: usize,
    /// Timestamp of the next frame to play, once playing.
    next_ts: Option<u32>,
    /// Arrival of the first packet since (re)start, ms.
    first_arrival: Option<u64>,
    last_arrival: u64,
    /// Highest timestamp held or played, relative to `next_ts`.
    highest_ts: u32,
    /// Extended timestamp of the last in-order packet, for transit times.
    ext_ts: i64,
    last_ts: Option<u32>,
    /// Sliding minimum of transit times (two buckets), ms.
    min_cur: f64,
    min_prev: f64,
    bucket_fill: u32,
    /// Peak transit deviation above the minimum, ms (decays).
    jitter_ms: f64,
    target_ms: u32,
    consecutive_stretch: u32,
    window_pops: u32,
    window_min_level: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        let cfg = JitterConfig {
            frame_step: cfg.frame_step.max(1),
            clock_rate: cfg.clock_rate.max(1),
            capacity: cfg.capacity.max(2),
            max_delay_ms: cfg.max_delay_ms.max(cfg.min_delay_ms),
            ..cfg
        };
        JitterBuffer {
            slots: vec![Slot::default(); cfg.capacity],
            count: 0,
            next_ts: None,
            first_arrival: None,
            last_arrival: 0,
            highest_ts: 0,
            ext_ts: 0,
            last_ts: None,
            min_cur: f64::INFINITY,
            min_prev: f64::INFINITY,
            bucket_fill: 0,
            jitter_ms: 0.0,
            target_ms: cfg.min_delay_ms,
            consecutive_stretch: 0,
            window_pops: 0,
            window_min_level: u32::MAX,
            stats: JitterStats::default(),
            cfg,
        }
    }

    /// Settings in force.
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Counters and current estimates.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay_ms: self.target_ms,
            jitter_ms: self.jitter_ms.round() as u32,
            ..self.stats
        }
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn frame_ms(&self) -> u32 {
        (self.cfg.frame_step as u64 * 1000 / self.cfg.clock_rate as u64) as u32
    }

    fn ts_to_ms(&self, ticks: i64) -> f64 {
        ticks as f64 * 1000.0 / self.cfg.clock_rate as f64
    }

    /// Offers one packet received at `arrival_ms`.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
        arrival_ms: u64,
    ) -> PushResult {
        self.push_with(seq, timestamp, false, None, payload, arrival_ms)
    }

    /// [`push`](Self::push) with the marker bit and an RFC 6464 audio level.
    pub fn push_with(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        audio_level: Option<u8>,
        payload: &[u8],
        arrival_ms: u64,
    ) -> PushResult {
        self.stats.received += 1;
        if payload.len() > self.cfg.max_payload {
            return PushResult::TooLarge;
        }
        if let Some(next) = self.next_ts {
            let d = timestamp.wrapping_sub(next) as i32;
            if d < 0 {
                self.stats.late += 1;
                return PushResult::Late;
            }
            // Far ahead of playout (a new stream, or a long DTX gap): restart.
            let horizon = self.cfg.frame_step as i64 * self.cfg.capacity as i64 * 4;
            if d as i64 > horizon {
                self.restart();
            }
        }
        if self
            .slots
            .iter()
            .any(|s| s.used && s.timestamp == timestamp)
        {
            self.stats.duplicates += 1;
            return PushResult::Duplicate;
        }
        self.measure(timestamp, arrival_ms);
        let idx = match self.slots.iter().position(|s| !s.used) {
            Some(i) => i,
            None => {
                // Full: evict the oldest frame; playout jumps past it.
                self.stats.overflows += 1;
                let oldest = self.oldest().expect("full buffer has an oldest slot");
                self.slots[oldest].used = false;
                self.count -= 1;
                if let Some(next) = self.next_ts {
                    let after = self.slots[oldest]
                        .timestamp
                        .wrapping_add(self.cfg.frame_step);
                    if after.wrapping_sub(next) as i32 > 0 {
                        self.next_ts = Some(after);
                    }
                }
                oldest
            }
        };
        let slot = &mut self.slots[idx];
        slot.used = true;
        slot.timestamp = timestamp;
        slot.seq = seq;
        slot.marker = marker;
        slot.audio_level = audio_level;
        slot.payload.clear();
        slot.payload.extend_from_slice(payload);
        self.count += 1;
        self.last_arrival = arrival_ms;
        if self.first_arrival.is_none() {
            self.first_arrival = Some(arrival_ms);
            self.highest_ts = timestamp;
        } else if timestamp.wrapping_sub(self.highest_ts) as i32 > 0 {
            self.highest_ts = timestamp;
        }
        PushResult::Stored
    }

    /// Updates the transit-time minimum, the jitter peak and the target delay.
    fn measure(&mut self, timestamp: u32, arrival_ms: u64) {
        match self.last_ts {
            None => self.ext_ts = 0,
            Some(last) => self.ext_ts += timestamp.wrapping_sub(last) as i32 as i64,
        }
        self.last_ts = Some(timestamp);
        let transit = arrival_ms as f64 - self.ts_to_ms(self.ext_ts);
        self.min_cur = self.min_cur.min(transit);
        self.bucket_fill += 1;
        if self.bucket_fill >= MIN_BUCKET {
            self.min_prev = self.min_cur;
            self.min_cur = f64::INFINITY;
            self.bucket_fill = 0;
        }
        let base = self.min_cur.min(self.min_prev);
        let dev = (transit - base).max(0.0);
        // Half-life of ~140 packets (≈ 2.8 s at 20 ms).
        self.jitter_ms = dev.max(self.jitter_ms * 0.995);
        let frame = self.frame_ms() as f64;
        let want = (self.jitter_ms / frame).ceil() * frame;
        self.target_ms = (want as u32).clamp(self.cfg.min_delay_ms, self.cfg.max_delay_ms);
    }

    fn oldest(&self) -> Option<usize> {
        let reference = self
            .next_ts
            .unwrap_or(self.highest_ts.wrapping_sub(1 << 30));
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.used)
            .min_by_key(|(_, s)| s.timestamp.wrapping_sub(reference))
            .map(|(i, _)| i)
    }

    /// The held packet with the smallest timestamp at or after `ts`, and its distance.
    fn first_from(&self, ts: u32) -> Option<(usize, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.used && s.timestamp.wrapping_sub(ts) as i32 >= 0)
            .map(|(i, s)| (i, s.timestamp.wrapping_sub(ts)))
            .min_by_key(|&(_, d)| d)
    }

    /// Forgets everything held and waits for a new stream start.
    fn restart(&mut self) {
        for s in &mut self.slots {
            s.used = false;
        }
        self.count = 0;
        self.next_ts = None;
        self.first_arrival = None;
        self.last_ts = None;
        // A new stream has a new transit base; the jitter peak carries over.
        self.min_cur = f64::INFINITY;
        self.min_prev = f64::INFINITY;
        self.bucket_fill = 0;
        self.consecutive_stretch = 0;
        self.window_pops = 0;
        self.window_min_level = u32::MAX;
    }

    /// Buffered audio from the due frame to the newest one, ms.
    fn level_ms(&self, next: u32) -> u32 {
        if self.count == 0 {
            return 0;
        }
        let ahead = self.highest_ts.wrapping_sub(next) as i32;
        if ahead < 0 {
            return 0;
        }
        let ticks = ahead as u64 + self.cfg.frame_step as u64;
        (ticks * 1000 / self.cfg.clock_rate as u64) as u32
    }

    /// Hands every held packet to `f` in timestamp order, then forgets
    /// them and the playout position (the next packet starts a new playout).
    /// A room that stops playing out through the buffer (relay mode) forwards
    /// what it held instead of dropping it.
    pub fn drain_in_order(&mut self, mut f: impl FnMut(Frame<'_>)) {
        while let Some(i) = self.oldest() {
            let s = &self.slots[i];
            f(Frame {
                payload: &s.payload,
                timestamp: s.timestamp,
                seq: s.seq,
                marker: s.marker,
                audio_level: s.audio_level,
            });
            self.slots[i].used = false;
            self.count -= 1;
        }
        self.restart();
    }

    /// The payload of the frame due next, without consuming it (Opus FEC).
    pub fn peek_next(&self) -> Option<&[u8]> {
        let next = self.next_ts?;
        self.slots
            .iter()
            .find(|s| s.used && s.timestamp == next)
            .map(|s| s.payload.as_slice())
    }

    /// What to play for the 20 ms starting at `now_ms`.
    pub fn pop(&mut self, now_ms: u64) -> Pop<'_> {
        let step = self.cfg.frame_step;
        let next = match self.next_ts {
            Some(n) => n,
            None => {
                // Waiting to start: hold the first packet for the target delay.
                let Some(first) = self.first_arrival else {
                    return Pop::Empty;
                };
                if now_ms < first + self.target_ms as u64 {
                    return Pop::Empty;
                }
                let Some(i) = self.oldest() else {
                    self.restart();
                    return Pop::Empty;
                };
                let ts = self.slots[i].timestamp;
                self.next_ts = Some(ts);
                ts
            }
        };

        // Over-full for a whole window: skip one frame to cut the delay.
        let level = self.level_ms(next);
        self.window_min_level = self.window_min_level.min(level);
        self.window_pops += 1;
        let mut next = next;
        if self.window_pops >= ACCEL_WINDOW {
            if self.window_min_level > self.target_ms + 2 * self.frame_ms() {
                if let Some(i) = self
                    .slots
                    .iter()
                    .position(|s| s.used && s.timestamp == next)
                {
                    self.slots[i].used = false;
                    self.count -= 1;
                }
                next = next.wrapping_add(step);
                self.next_ts = Some(next);
                self.stats.accelerated += 1;
            }
            self.window_pops = 0;
            self.window_min_level = u32::MAX;
        }

        match self.first_from(next) {
            Some((i, d)) if d < step => {
                // Due (d == 0) or misaligned by less than a frame: play it.
                let ts = self.slots[i].timestamp;
                self.next_ts = Some(ts.wrapping_add(step));
                self.slots[i].used = false;
                self.count -= 1;
                self.consecutive_stretch = 0;
                self.stats.played += 1;
                let s = &self.slots[i];
                Pop::Frame(Frame {
                    payload: &s.payload,
                    timestamp: s.timestamp,
                    seq: s.seq,
                    marker: s.marker,
                    audio_level: s.audio_level,
                })
            }
            Some(_) => {
                // A newer frame is here, so the due one is lost.
                self.next_ts = Some(next.wrapping_add(step));
                self.consecutive_stretch = 0;
                self.stats.lost += 1;
                Pop::Lost
            }
            None => {
                if now_ms.saturating_sub(self.last_arrival) >= self.cfg.idle_after_ms as u64 {
                    self.restart();
                    return Pop::Empty;
                }
                // Under-run: wait for it (stretch) while the delay allows.
                let max_stretch = (self.cfg.max_delay_ms / self.frame_ms().max(1)).max(1);
                if self.consecutive_stretch < max_stretch {
                    self.consecutive_stretch += 1;
                    self.stats.stretched += 1;
                } else {
                    self.next_ts = Some(next.wrapping_add(step));
                }
                self.stats.lost += 1;
                Pop::Lost
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::new(8000))
    }

    /// Pops once and reduces the answer to the frame's seq, `L`ost or `E`mpty.
    fn pop_seq(j: &mut JitterBuffer, now: u64) -> Result<u16, char> {
        match j.pop(now) {
            Pop::Frame(f) => Ok(f.seq),
            Pop::Lost => Err('L'),
            Pop::Empty => Err('E'),
        }
    }

    #[test]
    fn reordered_and_lost_packets_yield_continuous_frames() {
        let mut j = jb();
        // Sequence 0..20, with 5 and 6 swapped, 9 lost, 14 arriving after 15.
        let mut order: Vec<u16> = (0..20).filter(|&s| s != 9).collect();
        order.swap(5, 6);
        let p14 = order.iter().position(|&s| s == 14).unwrap();
        order.swap(p14, p14 + 1);
        // Arrival: every 20 ms, in the shuffled order, starting at t=0.
        for (k, &seq) in order.iter().enumerate() {
            j.push(seq, seq as u32 * 160, &[seq as u8; 160], k as u64 * 20);
        }
        // Playout every 20 ms from t = 40 (after the 20 ms target).
        let mut got = vec![];
        for k in 0..20 {
            got.push(pop_seq(&mut j, 40 + k * 20));
        }
        let expect: Vec<Result<u16, char>> = (0..20)
            .map(|s| if s == 9 { Err('L') } else { Ok(s) })
            .collect();
        assert_eq!(got, expect);
        let st = j.stats();
        assert_eq!((st.played, st.lost, st.late), (19, 1, 0));
    }

    #[test]
    fn interleaved_push_pop_with_jitter_and_loss_never_gaps() {
        let mut j = jb();
        // Deterministic jitter 0..35 ms, 10% loss; ticks every 20 ms.
        let mut arrivals: Vec<(u64, u16)> = (0..500u16)
            .filter(|s| s % 10 != 3)
            .map(|s| (s as u64 * 20 + (s as u64 * 7919 % 36), s))
            .collect();
        arrivals.sort();
        let mut ai = 0;
        let mut frames = 0;
        let mut last_seq = None;
        let mut started = false;
        for tick in 0..540u64 {
            let now = tick * 20;
            while ai < arrivals.len() && arrivals[ai].0 <= now {
                let (t, s) = arrivals[ai];
                j.push(s, s as u32 * 160, &[0; 160], t);
                ai += 1;
            }
            match j.pop(now) {
                Pop::Frame(f) => {
                    started = true;
                    frames += 1;
                    if let Some(l) = last_seq {
                        assert!(f.seq > l, "out of order {} after {l}", f.seq);
                    }
                    last_seq = Some(f.seq);
                }
                Pop::Lost => assert!(started),
                Pop::Empty => assert!(!started || ai == arrivals.len(), "gap at tick {tick}"),
            }
        }
        let st = j.stats();
        assert!(frames >= 440, "played {frames}, stats {st:?}");
        assert!(
            st.target_delay_ms >= 20 && st.target_delay_ms <= 60,
            "{st:?}"
        );
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped() {
        let mut j = jb();
        j.push(0, 0, &[1], 0);
        j.push(1, 160, &[2], 20);
        assert_eq!(j.push(1, 160, &[2], 21), PushResult::Duplicate);
        assert_eq!(pop_seq(&mut j, 20), Ok(0));
        assert_eq!(pop_seq(&mut j, 40), Ok(1));
        assert_eq!(j.push(0, 0, &[1], 45), PushResult::Late);
        assert_eq!(j.push(9, 0, &vec![0; 5000], 45), PushResult::TooLarge);
    }

    #[test]
    fn silence_when_the_sender_stops_and_restart_when_it_resumes() {
        let mut j = jb();
        for s in 0..5u16 {
            j.push(s, s as u32 * 160, &[0], s as u64 * 20);
        }
        let mut out = vec![];
        for k in 0..20u64 {
            out.push(pop_seq(&mut j, 20 + k * 20));
        }
        assert_eq!(&out[..5], &[Ok(0), Ok(1), Ok(2), Ok(3), Ok(4)]);
        assert!(out[5..].contains(&Err('L')));
        assert_eq!(out[19], Err('E'));
        // Resumes 10 s later with a timestamp jump (DTX, hold): plays again.
        j.push(100, 80_000, &[0], 10_000);
        assert_eq!(pop_seq(&mut j, 10_000), Err('E'));
        assert_eq!(pop_seq(&mut j, 10_020), Ok(100));
    }

    /// Sender clock 1% fast or slow: delay stays bounded, every frame is
    /// either played, concealed or (fast case) dropped on purpose.
    #[test]
    fn clock_drift_is_absorbed() {
        for period_us in [19_800u64, 20_200] {
            let mut j = jb();
            let mut seq = 0u16;
            let mut next_send = 0u64;
            let mut max_level = 0;
            for tick in 0..3000u64 {
                let now_us = tick * 20_000;
                while next_send <= now_us {
                    j.push(seq, seq as u32 * 160, &[0], next_send / 1000);
                    seq = seq.wrapping_add(1);
                    next_send += period_us;
                }
                j.pop(now_us / 1000);
                max_level = max_level.max(j.len());
            }
            let st = j.stats();
            assert!(
                max_level <= 6,
                "period {period_us}: {max_level} frames buffered, {st:?}"
            );
            if period_us < 20_000 {
                assert!(st.accelerated >= 20, "{st:?}");
            } else {
                assert!(st.stretched >= 20, "{st:?}");
            }
        }
    }

    #[test]
    fn target_grows_with_jitter_and_memory_is_bounded() {
        let mut cfg = JitterConfig::new(8000);
        cfg.capacity = 8;
        let mut j = JitterBuffer::new(cfg);
        // Alternating 0 / 90 ms extra delay.
        for s in 0..200u16 {
            let extra = if s % 2 == 0 { 0 } else { 90 };
            j.push(s, s as u32 * 160, &[0; 160], s as u64 * 20 + extra);
        }
        assert!(j.stats().target_delay_ms >= 80, "{:?}", j.stats());
        assert!(j.len() <= 8);
        assert!(j.stats().overflows > 0);
    }

    #[test]
    fn fec_peek_sees_the_frame_after_a_loss() {
        let mut j = jb();
        j.push(0, 0, &[0], 0);
        j.push(2, 320, &[2], 40);
        assert_eq!(pop_seq(&mut j, 40), Ok(0));
        assert_eq!(pop_seq(&mut j, 60), Err('L'));
        assert_eq!(j.peek_next(), Some(&[2u8][..]));
        assert_eq!(pop_seq(&mut j, 80), Ok(2));
    }
}
