//! Small signal helpers shared by the media code and its tests: levels in
//! dBov, a Goertzel tone detector, saturation.

/// Full-scale amplitude of a 16-bit sample; 0 dBov is a square wave at it.
pub const FULL_SCALE: f32 = 32768.0;

/// Clamps an `i32` into the `i16` range.
#[inline]
pub fn saturate(x: i32) -> i16 {
    x.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// Mean of the squared samples (0.0 for an empty slice).
pub fn mean_square(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    // i64 accumulation: exact, and 960 * 2^30 fits easily.
    let sum: i64 = samples.iter().map(|&s| (s as i64) * (s as i64)).sum();
    sum as f32 / samples.len() as f32
}

/// Converts a mean square into dBov (−127 for silence, as RFC 6464 floors it).
pub fn dbov(mean_square: f32) -> f32 {
    if mean_square <= 0.0 {
        return -127.0;
    }
    (10.0 * (mean_square / (FULL_SCALE * FULL_SCALE)).log10()).max(-127.0)
}

/// Converts a dBov level back into the mean square it stands for.
pub fn mean_square_from_dbov(db: f32) -> f32 {
    FULL_SCALE * FULL_SCALE * 10f32.powf(db / 10.0)
}

/// Power of `freq` Hz in `samples` taken at `rate` Hz (Goertzel algorithm).
///
/// Normalised so that a full-block sine of amplitude `a` yields about `a²/4`
/// (the squared magnitude of its DFT bin divided by N²).
pub fn goertzel(samples: &[i16], rate: u32, freq: f32) -> f32 {
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq as f64 / rate as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    (power / (n as f64 * n as f64)) as f32
}

/// Signal-to-noise ratio in dB of `decoded` against `reference`, after
/// searching a lag of up to `max_lag` samples (codec delay) and the best gain.
pub fn snr_db(reference: &[i16], decoded: &[i16], max_lag: usize) -> f32 {
    let mut best = f64::NEG_INFINITY;
    for lag in 0..=max_lag.min(decoded.len()) {
        let n = reference.len().min(decoded.len() - lag);
        if n == 0 {
            break;
        }
        let r = &reference[..n];
        let d = &decoded[lag..lag + n];
        let (mut rr, mut rd, mut dd) = (0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in r.iter().zip(d) {
            let (a, b) = (a as f64, b as f64);
            rr += a * a;
            rd += a * b;
            dd += b * b;
        }
        if rr == 0.0 || dd == 0.0 {
            continue;
        }
        // Error energy with the optimal gain g = rd/dd applied to `d`.
        let noise = rr - rd * rd / dd;
        let snr = 10.0 * (rr / noise.max(1e-9)).log10();
        best = best.max(snr);
    }
    best as f32
}

/// A sine tone as 16-bit samples: `amplitude` peak, starting at sample `start`.
pub fn sine(freq: f32, rate: u32, amplitude: f32, start: usize, len: usize) -> Vec<i16> {
    (start..start + len)
        .map(|i| {
            let t = i as f64 / rate as f64;
            (amplitude as f64 * (2.0 * std::f64::consts::PI * freq as f64 * t).sin()).round() as i16
        })
        .collect()
}

/// Deterministic speech-like test audio at `rate`: harmonics of a gliding
/// 100–180 Hz pitch shaped by two crude formants, a 4 Hz syllable envelope
/// with a quiet second in every three, and a little noise. Codecs (and
/// their voice activity detectors) treat it as speech, unlike a pure tone.
pub fn speech_like(rate: u32, len: usize, seed: u64) -> Vec<i16> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 2001) as f64 / 1000.0 - 1.0
    };
    let tau = 2.0 * std::f64::consts::PI;
    let mut phase = 0.0f64;
    (0..len)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let pitch = 140.0 + 40.0 * (tau * 0.7 * t).sin();
            phase += tau * pitch / rate as f64;
            let quiet = if (t as u64) % 3 == 2 { 0.1 } else { 1.0 };
            let env = (tau * 4.0 * t).sin().max(0.0) * quiet;
            let mut v = 0.0;
            for h in 1..12 {
                let f = pitch * h as f64;
                if f < rate as f64 / 2.2 {
                    let g = 1.0 / (1.0 + ((f - 500.0) / 300.0).powi(2))
                        + 0.5 / (1.0 + ((f - 1500.0) / 400.0).powi(2));
                    v += g * (phase * h as f64).sin();
                }
            }
            (6000.0 * env * v + 100.0 * noise()).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_finds_the_tone_and_not_others() {
        let s = sine(1000.0, 8000, 10000.0, 0, 800);
        let on = goertzel(&s, 8000, 1000.0);
        let off = goertzel(&s, 8000, 1500.0);
        assert!((on - 10000.0f32.powi(2) / 4.0).abs() / on < 0.02, "{on}");
        assert!(off < on * 1e-4);
    }

    #[test]
    fn levels_round_trip() {
        let ms = mean_square_from_dbov(-30.0);
        assert!((dbov(ms) + 30.0).abs() < 1e-3);
        assert_eq!(dbov(0.0), -127.0);
        assert_eq!(saturate(40000), i16::MAX);
        assert_eq!(saturate(-40000), i16::MIN);
    }

    #[test]
    fn snr_of_identical_signal_is_high() {
        let s = sine(440.0, 8000, 8000.0, 0, 1000);
        let mut d = vec![0i16; 5];
        d.extend_from_slice(&s);
        assert!(snr_db(&s, &d, 10) > 80.0);
    }
}
