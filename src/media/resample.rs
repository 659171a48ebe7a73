//! Integer-ratio polyphase FIR resampling (8 ↔ 16 ↔ 48 kHz and any other
//! pair whose rates divide, up to a factor of 12).
//!
//! One Kaiser-windowed sinc low-pass, designed at the higher rate with its
//! cut-off just under the lower rate's Nyquist frequency, serves both
//! directions: decimation computes only the kept outputs, interpolation runs
//! one short sub-filter per output phase. Design for a low rate `F`:
//! pass band to 0.4375·F (3.5 kHz at 8 kHz), stop band from 0.55·F
//! (4.4 kHz), ≥ 70 dB stop-band attenuation, 36 taps per phase, so the
//! delay is about 2.3 ms at 8 kHz. Filtering is streaming: the history
//! between frames is kept, nothing is allocated per call.

use thiserror::Error;

/// Taps per polyphase branch (total taps = this × ratio).
const TAPS_PER_PHASE: usize = 36;
/// Kaiser β for ≈ 70 dB stop-band attenuation.
const KAISER_BETA: f64 = 6.76;
/// Pass-band edge and stop-band start as fractions of the lower rate.
const PASS_EDGE: f64 = 0.4375;
const STOP_EDGE: f64 = 0.55;

/// Why a resampler cannot be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResampleError {
    /// The rates are not an integer ratio of at most 12.
    #[error("cannot resample {from} Hz to {to} Hz (integer ratios up to 12 only)")]
    UnsupportedRatio {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Same,
    Up,
    Down,
}

/// A streaming mono resampler between two rates with an integer ratio.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    dir: Direction,
    factor: usize,
    /// Down: the reversed prototype. Up: the sub-filters transposed (see `new`).
    coeffs: Vec<f32>,
    /// Input history (taps − 1 for down, taps-per-phase − 1 for up) followed by
    /// room for the current frame.
    buf: Vec<f32>,
    history: usize,
}

/// Zeroth-order modified Bessel function of the first kind (series).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term) = (1.0, 1.0);
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

/// Kaiser-windowed sinc low-pass of `len` taps, cut-off `fc` cycles/sample.
fn design_lowpass(len: usize, fc: f64) -> Vec<f64> {
    let m = (len - 1) as f64;
    let norm = bessel_i0(KAISER_BETA);
    let mut h: Vec<f64> = (0..len)
        .map(|i| {
            let t = i as f64 - m / 2.0;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let r = 2.0 * i as f64 / m - 1.0;
            sinc * bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / norm
        })
        .collect();
    let sum: f64 = h.iter().sum();
    h.iter_mut().for_each(|x| *x /= sum);
    h
}

/// Dot product with eight independent accumulators so it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

#[inline]
fn to_i16(x: f32) -> i16 {
    x.round().clamp(-32768.0, 32767.0) as i16
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let err = ResampleError::UnsupportedRatio { from, to };
        if from == 0 || to == 0 {
            return Err(err);
        }
        let (hi, lo) = (from.max(to), from.min(to));
        if hi % lo != 0 || hi / lo > 12 {
            return Err(err);
        }
        let factor = (hi / lo) as usize;
        let dir = if from == to {
            Direction::Same
        } else if to > from {
            Direction::Up
        } else {
            Direction::Down
        };
        let (coeffs, history) = match dir {
            Direction::Same => (Vec::new(), 0),
            _ => {
                let taps = TAPS_PER_PHASE * factor;
                // Cut-off midway through the transition band, in cycles per high-rate sample.
                let fc = (PASS_EDGE + STOP_EDGE) / 2.0 / factor as f64;
                let h = design_lowpass(taps, fc);
                if dir == Direction::Down {
                    (h.iter().rev().map(|&x| x as f32).collect(), taps - 1)
                } else {
                    // Transposed for vectorising across phases: row i holds, for
                    // every phase p, tap (K-1-i)·L + p times L (unity gain), padded
                    // to a whole number of 8-lane rows.
                    let lanes = factor.next_multiple_of(8);
                    let mut c = vec![0.0f32; TAPS_PER_PHASE * lanes];
                    for i in 0..TAPS_PER_PHASE {
                        for p in 0..factor {
                            let j = TAPS_PER_PHASE - 1 - i;
                            c[i * lanes + p] = (h[j * factor + p] * factor as f64) as f32;
                        }
                    }
                    (c, TAPS_PER_PHASE - 1)
                }
            }
        };
        Ok(Resampler {
            from,
            to,
            dir,
            factor,
            coeffs,
            buf: vec![0.0; history],
            history,
        })
    }

    /// Input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Output samples produced for `input_len` input samples.
    pub fn output_len(&self, input_len: usize) -> usize {
        match self.dir {
            Direction::Same => input_len,
            Direction::Up => input_len * self.factor,
            Direction::Down => input_len / self.factor,
        }
    }

    /// Delay the filter adds, in output samples.
    pub fn delay(&self) -> usize {
        match self.dir {
            Direction::Same => 0,
            Direction::Up => (TAPS_PER_PHASE * self.factor - 1) / 2,
            Direction::Down => (TAPS_PER_PHASE * self.factor - 1) / 2 / self.factor,
        }
    }

    /// Resamples `input` into `output`, returning the samples written
    /// (`output_len(input.len())`, bounded by `output.len()`). When
    /// decimating, `input.len()` should be a multiple of the ratio; a
    /// remainder is dropped.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        let n_out = self.output_len(input.len()).min(output.len());
        match self.dir {
            Direction::Same => {
                output[..n_out].copy_from_slice(&input[..n_out]);
                return n_out;
            }
            Direction::Up => {
                // Only the inputs that produce the requested outputs are consumed.
                let n_in = n_out.div_ceil(self.factor);
                self.load(&input[..n_in]);
                if self.factor <= 8 {
                    self.interpolate::<8>(&mut output[..n_out]);
                } else {
                    self.interpolate::<16>(&mut output[..n_out]);
                }
                self.keep_history(n_in);
            }
            Direction::Down => {
                let n_in = n_out * self.factor;
                self.load(&input[..n_in]);
                let taps = self.coeffs.len();
                for (i, o) in output[..n_out].iter_mut().enumerate() {
                    let start = i * self.factor;
                    *o = to_i16(dot(&self.coeffs, &self.buf[start..start + taps]));
                }
                self.keep_history(n_in);
            }
        }
        n_out
    }

    /// Interpolation kernel: for each input position, all `factor` output
    /// phases at once (`LANES` ≥ factor accumulators, one per phase).
    fn interpolate<const LANES: usize>(&self, output: &mut [i16]) {
        let k = TAPS_PER_PHASE;
        for (n, out) in output.chunks_mut(self.factor).enumerate() {
            let mut acc = [0.0f32; LANES];
            for (row, &x) in self.coeffs.chunks_exact(LANES).zip(&self.buf[n..n + k]) {
                for p in 0..LANES {
                    acc[p] += row[p] * x;
                }
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = to_i16(a);
            }
        }
    }

    /// Appends the input after the history.
    fn load(&mut self, input: &[i16]) {
        self.buf.truncate(self.history);
        self.buf.extend(input.iter().map(|&s| s as f32));
    }

    /// Moves the last `history` samples to the front.
    fn keep_history(&mut self, consumed: usize) {
        let len = self.buf.len();
        self.buf.copy_within(len - self.history.., 0);
        self.buf.truncate(self.history);
        debug_assert!(consumed + self.history == len);
    }

    /// Clears the filter history (after a discontinuity).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.history, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dsp::{goertzel, mean_square, sine};

    /// Resamples `frames` 20 ms frames of a tone, returns the output after warm-up.
    fn run(from: u32, to: u32, freq: f32, frames: usize) -> Vec<i16> {
        let mut r = Resampler::new(from, to).unwrap();
        let n_in = from as usize / 50;
        let input = sine(freq, from, 10_000.0, 0, n_in * frames);
        let mut out = vec![];
        let mut buf = vec![0i16; to as usize / 50];
        for f in input.chunks(n_in) {
            let n = r.process(f, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out.split_off(out.len() / 2)
    }

    fn energy_ratio_db(out: &[i16]) -> f32 {
        // Input tone of amplitude 10000 has mean square 5e7.
        10.0 * (mean_square(out) / 5.0e7).log10()
    }

    #[test]
    fn tone_at_3500_hz_keeps_its_energy_48k_to_8k() {
        let out = run(48_000, 8000, 3500.0, 10);
        let db = energy_ratio_db(&out);
        assert!(db.abs() < 0.5, "3.5 kHz changed by {db} dB");
        // And it is still a 3.5 kHz tone.
        assert!(goertzel(&out, 8000, 3500.0) > 0.9 * 1e8 / 4.0);
    }

    #[test]
    fn tone_at_6_khz_is_attenuated_40_db_48k_to_8k() {
        let out = run(48_000, 8000, 6000.0, 10);
        let db = energy_ratio_db(&out);
        assert!(db <= -40.0, "6 kHz only attenuated {db} dB");
        // Specifically no alias at 2 kHz.
        let alias = goertzel(&out, 8000, 2000.0) / (1e8 / 4.0);
        assert!(10.0 * alias.log10() <= -40.0);
    }

    #[test]
    fn all_rate_pairs_pass_band_and_stop_band() {
        for (from, to) in [
            (8000, 16_000),
            (16_000, 8000),
            (8000, 48_000),
            (48_000, 16_000),
            (16_000, 48_000),
        ] {
            let low = from.min(to) as f32;
            let pass = energy_ratio_db(&run(from, to, 0.4 * low, 10));
            assert!(pass.abs() < 0.5, "{from}->{to}: pass band {pass} dB");
            if from > to {
                let stop = energy_ratio_db(&run(from, to, 0.6 * low, 10));
                assert!(stop < -60.0, "{from}->{to}: stop band {stop} dB");
            } else {
                // Interpolation images of a 0.4·low tone sit above low/2.
                let out = run(from, to, 0.4 * low, 10);
                let image = goertzel(&out, to, low - 0.4 * low) / (1e8 / 4.0);
                assert!(10.0 * image.log10() < -60.0, "{from}->{to}: image {image}");
            }
        }
    }

    #[test]
    fn same_rate_is_a_copy_and_bad_ratios_are_refused() {
        let mut r = Resampler::new(8000, 8000).unwrap();
        let mut out = [0i16; 3];
        assert_eq!(r.process(&[1, 2, 3], &mut out), 3);
        assert_eq!(out, [1, 2, 3]);
        assert!(Resampler::new(44_100, 48_000).is_err());
        assert!(Resampler::new(0, 8000).is_err());
    }

    #[test]
    fn dc_gain_is_unity_and_delay_is_reported() {
        let mut r = Resampler::new(8000, 48_000).unwrap();
        let mut out = vec![0i16; 960];
        for _ in 0..3 {
            r.process(&[1000; 160], &mut out);
        }
        assert!(
            out.iter().all(|&s| (s - 1000).abs() <= 1),
            "{:?}",
            &out[..8]
        );
        assert!(r.delay() > 0);
    }
}
