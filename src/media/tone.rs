//! Audio sources that only produce sound: call-progress tones (ringback,
//! busy, a join beep) and recorded announcements. A room plays them as
//! participants that are heard and never listen.

use std::sync::Arc;

use super::frame_samples;
use super::resample::{ResampleError, Resampler};

/// Something that renders audio, 20 ms at a time.
pub trait AudioSource: Send {
    /// Fills `out` (one frame at `rate` Hz) with the next 20 ms. Returns
    /// `false` once the source has finished (`out` is then silence).
    fn render(&mut self, rate: u32, out: &mut [i16]) -> bool;
}

/// A cadenced tone of one or two frequencies.
#[derive(Debug, Clone)]
pub struct Tone {
    freqs: [f32; 2],
    /// Peak amplitude of each component.
    amplitude: f32,
    /// (on ms, off ms) pairs, played in order.
    cadence: Vec<(u32, u32)>,
    repeat: bool,
    /// Position in the cadence, in samples at the current rate.
    pos: u64,
    rate: u32,
    /// Oscillator states (cos, sin) and per-sample rotations, per component.
    osc: [(f64, f64); 2],
    rot: [(f64, f64); 2],
}

impl Tone {
    /// A tone of `freqs` (one or two, Hz) at `level_dbov` per component,
    /// following `cadence` (on/off ms pairs), repeated or played once.
    pub fn new(freqs: &[f32], level_dbov: f32, cadence: &[(u32, u32)], repeat: bool) -> Self {
        let f = [
            freqs.first().copied().unwrap_or(0.0),
            freqs.get(1).copied().unwrap_or(0.0),
        ];
        // A sine's RMS is peak/√2; dBov is relative to a full-scale square wave.
        let amplitude = 32768.0 * 10f32.powf(level_dbov / 20.0) * std::f32::consts::SQRT_2;
        Tone {
            freqs: f,
            amplitude,
            cadence: cadence.to_vec(),
            repeat,
            pos: 0,
            rate: 0,
            osc: [(1.0, 0.0); 2],
            rot: [(1.0, 0.0); 2],
        }
    }

    /// European ringback (ETSI): 425 Hz, 1 s on, 4 s off.
    pub fn ringback_eu() -> Self {
        Tone::new(&[425.0], -13.0, &[(1000, 4000)], true)
    }

    /// North American ringback: 440 + 480 Hz, 2 s on, 4 s off.
    pub fn ringback_us() -> Self {
        Tone::new(&[440.0, 480.0], -19.0, &[(2000, 4000)], true)
    }

    /// European busy: 425 Hz, 0.5 s on, 0.5 s off.
    pub fn busy_eu() -> Self {
        Tone::new(&[425.0], -13.0, &[(500, 500)], true)
    }

    /// North American busy: 480 + 620 Hz, 0.5 s on, 0.5 s off.
    pub fn busy_us() -> Self {
        Tone::new(&[480.0, 620.0], -24.0, &[(500, 500)], true)
    }

    /// What the other party hears while a browser holds the call: a soft
    /// 660 Hz note, 400 ms every 3 s.
    pub fn hold() -> Self {
        Tone::new(&[660.0], -20.0, &[(400, 2600)], true)
    }

    /// A short beep (e.g. someone joined): 880 Hz for 150 ms, once.
    pub fn beep() -> Self {
        Tone::new(&[880.0], -18.0, &[(150, 0)], false)
    }

    fn set_rate(&mut self, rate: u32) {
        if self.rate == rate {
            return;
        }
        // Keep the cadence position in time across a rate change.
        if self.rate != 0 {
            self.pos = self.pos * rate as u64 / self.rate as u64;
        }
        self.rate = rate;
        for k in 0..2 {
            let w = 2.0 * std::f64::consts::PI * self.freqs[k] as f64 / rate as f64;
            self.rot[k] = (w.cos(), w.sin());
        }
    }

    /// Whether the tone sounds at sample `pos` of the cadence, or `None` when finished.
    fn on_at(&self, pos: u64) -> Option<bool> {
        let total: u64 = self.cadence.iter().map(|&(a, b)| (a + b) as u64).sum();
        if total == 0 {
            return None;
        }
        let ms = pos * 1000 / self.rate as u64;
        if !self.repeat && ms >= total {
            return None;
        }
        let mut t = ms % total;
        for &(on, off) in &self.cadence {
            if t < on as u64 {
                return Some(true);
            }
            t -= on as u64;
            if t < off as u64 {
                return Some(false);
            }
            t -= off as u64;
        }
        Some(false)
    }
}

impl AudioSource for Tone {
    fn render(&mut self, rate: u32, out: &mut [i16]) -> bool {
        if rate == 0 {
            out.fill(0);
            return false;
        }
        self.set_rate(rate);
        let mut alive = false;
        for o in out.iter_mut() {
            let on = self.on_at(self.pos);
            alive |= on.is_some();
            let mut v = 0.0;
            for k in 0..2 {
                let (c, s) = self.osc[k];
                let (rc, rs) = self.rot[k];
                self.osc[k] = (c * rc - s * rs, c * rs + s * rc);
                if on == Some(true) && self.freqs[k] > 0.0 {
                    v += s;
                }
            }
            *o = (v * self.amplitude as f64).round().clamp(-32768.0, 32767.0) as i16;
            self.pos += 1;
        }
        // Renormalise the oscillators once per frame against rounding drift.
        for osc in &mut self.osc {
            let norm = (osc.0 * osc.0 + osc.1 * osc.1).sqrt();
            *osc = (osc.0 / norm, osc.1 / norm);
        }
        alive
    }
}

/// A recorded announcement: PCM at a fixed rate, played once or looped.
#[derive(Debug, Clone)]
pub struct Announcement {
    samples: Arc<[i16]>,
    rate: u32,
    looped: bool,
    pos: usize,
    resampler: Option<Resampler>,
    scratch: Vec<i16>,
}

impl Announcement {
    /// An announcement of `samples` at `rate` Hz (8, 16 or 48 kHz).
    pub fn new(samples: Arc<[i16]>, rate: u32, looped: bool) -> Self {
        Announcement {
            samples,
            rate,
            looped,
            pos: 0,
            resampler: None,
            scratch: Vec::new(),
        }
    }

    /// Copies the next frame at the recording's own rate into `scratch`.
    fn next_native(&mut self) -> bool {
        let n = frame_samples(self.rate);
        self.scratch.clear();
        while self.scratch.len() < n {
            if self.pos >= self.samples.len() {
                if !self.looped || self.samples.is_empty() {
                    break;
                }
                self.pos = 0;
            }
            let take = (n - self.scratch.len()).min(self.samples.len() - self.pos);
            self.scratch
                .extend_from_slice(&self.samples[self.pos..self.pos + take]);
            self.pos += take;
        }
        let alive = !self.scratch.is_empty();
        self.scratch.resize(n, 0);
        alive
    }

    fn resampler_for(&mut self, rate: u32) -> Result<&mut Resampler, ResampleError> {
        if self.resampler.as_ref().is_none_or(|r| r.to_rate() != rate) {
            self.resampler = Some(Resampler::new(self.rate, rate)?);
        }
        Ok(self.resampler.as_mut().expect("just set"))
    }
}

impl AudioSource for Announcement {
    fn render(&mut self, rate: u32, out: &mut [i16]) -> bool {
        let alive = self.next_native();
        let scratch = std::mem::take(&mut self.scratch);
        match self.resampler_for(rate) {
            Ok(r) => {
                let n = r.process(&scratch, out);
                out[n..].fill(0);
            }
            Err(_) => out.fill(0),
        }
        self.scratch = scratch;
        alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dsp::{goertzel, mean_square};

    #[test]
    fn ringback_eu_cadence_and_frequency() {
        let mut t = Tone::ringback_eu();
        let mut frame = [0i16; 160];
        let mut on_frames = 0;
        for i in 0..250 {
            assert!(t.render(8000, &mut frame));
            if mean_square(&frame) > 1000.0 {
                on_frames += 1;
                if i == 10 {
                    assert!(goertzel(&frame, 8000, 425.0) > 10.0 * goertzel(&frame, 8000, 600.0));
                }
            }
        }
        // 1 s on per 5 s: 50 of 250 frames.
        assert_eq!(on_frames, 50);
    }

    #[test]
    fn beep_finishes() {
        let mut t = Tone::beep();
        let mut frame = [0i16; 960];
        let alive: Vec<bool> = (0..10).map(|_| t.render(48_000, &mut frame)).collect();
        assert_eq!(alive.iter().filter(|&&a| a).count(), 8);
        assert!(frame.iter().all(|&s| s == 0));
    }

    #[test]
    fn announcement_plays_resampled_then_ends() {
        let pcm: Arc<[i16]> = vec![1000i16; 8000].into();
        let mut a = Announcement::new(pcm, 8000, false);
        let mut frame = [0i16; 320];
        let mut frames = 0;
        while a.render(16_000, &mut frame) {
            frames += 1;
            assert!(frames <= 50);
        }
        assert_eq!(frames, 50);
    }
}
