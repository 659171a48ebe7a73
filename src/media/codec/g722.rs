//! G.722 (ITU-T, 1988): 7 kHz wideband audio at 64 kbit/s by sub-band ADPCM.
//!
//! A 24-tap QMF splits 16 kHz PCM into a low band (6-bit ADPCM) and a high
//! band (2-bit ADPCM) at 8 kHz each; one byte carries a sample pair. The
//! block names in comments (QUANTL, INVQAL, LOGSCL, UPPOL2, ...) are those of
//! the Recommendation; the arithmetic follows its 16-bit fixed point with
//! saturation, as the public-domain CMU/spandsp reference does.

use super::plc::RepeatConcealer;
use super::{Codec, CodecError, CodecSpec, check_frame, check_room};

/// Quantizer decision levels of the low band (QUANTL), Q12 of the scale factor.
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// Low-band codes for negative differences, by quantizer interval.
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
/// Low-band codes for positive differences, by quantizer interval.
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// Log scale factor multipliers of the low band (LOGSCL).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// Maps a 4-bit low-band code to its WL index.
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse log table (SCALEL/SCALEH).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// 4-bit inverse quantizer outputs (INVQAL, predictor update).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// 6-bit inverse quantizer outputs (INVQBL, reconstructed low band at 64 kbit/s).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// 2-bit inverse quantizer outputs of the high band (INVQAH).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// High-band codes (QUANTH) for negative and positive differences.
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];
/// Log scale factor multipliers of the high band (LOGSCH) and their index map.
const WH: [i32; 3] = [0, -214, 798];
const RH2: [i32; 4] = [2, 1, 2, 1];
/// QMF coefficients (half of the symmetric 24-tap filter, mirrored in use).
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

#[inline]
fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// Adaptive predictor state of one sub-band.
#[derive(Debug, Clone, Default)]
struct Band {
    /// Signal estimate (PREDIC) and its pole/zero parts.
    s: i32,
    sp: i32,
    sz: i32,
    /// Reconstructed signal, partial reconstruction, pole coefficients.
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    /// Quantized differences and zero coefficients.
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    /// Log scale factor and scale factor.
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band {
            det,
            ..Band::default()
        }
    }

    /// Block 3: log scale factor adaptation (LOGSCL/LOGSCH) and SCALEL/SCALEH.
    fn adapt_scale(&mut self, w: i32, nb_max: i32, shift_base: i32) {
        self.nb = (((self.nb * 127) >> 7) + w).clamp(0, nb_max);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift_base - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1] << -wd2
        } else {
            ILB[wd1] >> wd2
        };
        self.det = wd3 << 2;
    }

    /// Block 4: reconstruction, pole and zero predictor adaptation, prediction.
    fn block4(&mut self, d: i32) {
        // RECONS, PARREC
        self.d[0] = d;
        self.r[0] = sat(self.s + d);
        self.p[0] = sat(self.sz + d);

        // UPPOL2
        let sg0 = self.p[0] >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
        let wd3 = (wd2 >> 7) + if sg0 == sg2 { 128 } else { -128 } + ((self.a[2] * 32512) >> 15);
        self.ap[2] = wd3.clamp(-12288, 12288);

        // UPPOL1
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let limit = sat(15360 - self.ap[2]);
        self.ap[1] = sat(wd1 + wd2).clamp(-limit, limit);

        // UPZERO
        let step = if d == 0 { 0 } else { 128 };
        let sgd = d >> 15;
        for i in 1..7 {
            let wd2 = if self.d[i] >> 15 == sgd { step } else { -step };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = sat(wd2 + wd3);
        }

        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }

        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);

        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);

        // PREDIC
        self.s = sat(self.sp + self.sz);
    }
}

/// G.722 encoder state (64 kbit/s mode).
#[derive(Debug, Clone)]
pub struct G722Encoder {
    qmf: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder {
            qmf: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }
}

impl G722Encoder {
    /// Encodes one pair of 16 kHz samples into one code byte.
    pub fn encode_pair(&mut self, s0: i16, s1: i16) -> u8 {
        // Transmit QMF: keep the last 24 samples, split into two bands.
        self.qmf.copy_within(2.., 0);
        self.qmf[22] = s0 as i32;
        self.qmf[23] = s1 as i32;
        let (mut odd, mut even) = (0i32, 0i32);
        for i in 0..12 {
            odd += self.qmf[2 * i] * QMF[i];
            even += self.qmf[2 * i + 1] * QMF[11 - i];
        }
        self.encode_bands((even + odd) >> 14, (even - odd) >> 14)
    }

    /// Encodes one low-band and one high-band sample (the QMF outputs); with
    /// the QMF bypassed this is the Recommendation's test configuration.
    pub fn encode_bands(&mut self, xlow: i32, xhigh: i32) -> u8 {
        // Low band: SUBTRA, QUANTL.
        let el = sat(xlow - self.low.s);
        let wd = if el >= 0 { el } else { -(el + 1) };
        let mut i = 1;
        while i < 30 && wd >= (Q6[i] * self.low.det) >> 12 {
            i += 1;
        }
        let ilow = if el < 0 { ILN[i] } else { ILP[i] };
        // INVQAL, LOGSCL, SCALEL, block 4.
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
        self.low.block4(dlow);

        // High band: SUBTRA, QUANTH.
        let eh = sat(xhigh - self.high.s);
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        // INVQAH, LOGSCH, SCALEH, block 4.
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        self.high
            .adapt_scale(WH[RH2[ihigh as usize] as usize], 22528, 10);
        self.high.block4(dhigh);

        ((ihigh << 6) | ilow) as u8
    }
}

/// G.722 decoder state (64 kbit/s mode).
#[derive(Debug, Clone)]
pub struct G722Decoder {
    qmf: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder {
            qmf: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }
}

impl G722Decoder {
    /// Decodes one code byte into two 16 kHz samples.
    pub fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let (rlow, rhigh) = self.decode_bands(code);
        // Receive QMF.
        self.qmf.copy_within(2.., 0);
        self.qmf[22] = rlow + rhigh;
        self.qmf[23] = rlow - rhigh;
        let (mut x1, mut x2) = (0i32, 0i32);
        for i in 0..12 {
            x2 += self.qmf[2 * i] * QMF[i];
            x1 += self.qmf[2 * i + 1] * QMF[11 - i];
        }
        (sat(x1 >> 11) as i16, sat(x2 >> 11) as i16)
    }

    /// Decodes one code byte into the reconstructed low-band and high-band
    /// samples (before the QMF), the Recommendation's test configuration.
    pub fn decode_bands(&mut self, code: u8) -> (i32, i32) {
        let code = code as usize;
        let ilow = code & 0x3F;
        let ihigh = (code >> 6) & 0x03;

        // Low band: INVQBL, RECONS, LIMIT.
        let rlow = (self.low.s + ((self.low.det * QM6[ilow]) >> 15)).clamp(-16384, 16383);
        // INVQAL on the 4 most significant bits drives the predictor.
        let ril = ilow >> 2;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
        self.low.block4(dlow);

        // High band: INVQAH, RECONS, LIMIT.
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.adapt_scale(WH[RH2[ihigh] as usize], 22528, 10);
        self.high.block4(dhigh);
        (rlow, rhigh)
    }
}

/// Samples (16 kHz) in a 20 ms frame; the payload is half as many bytes.
const FRAME: usize = 320;

/// G.722 codec instance with repeat-and-fade concealment.
#[derive(Debug, Clone)]
pub struct G722 {
    spec: CodecSpec,
    enc: G722Encoder,
    dec: G722Decoder,
    plc: RepeatConcealer,
}

impl G722 {
    /// A fresh encoder/decoder pair.
    pub fn new(spec: CodecSpec) -> Self {
        G722 {
            spec,
            enc: G722Encoder::default(),
            dec: G722Decoder::default(),
            plc: RepeatConcealer::new(FRAME),
        }
    }
}

impl Codec for G722 {
    fn spec(&self) -> &CodecSpec {
        &self.spec
    }

    fn pcm_rate(&self) -> u32 {
        16_000
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(pcm, FRAME)?;
        check_room(out, FRAME / 2)?;
        for (o, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            *o = self.enc.encode_pair(pair[0], pair[1]);
        }
        Ok(FRAME / 2)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = payload.len() * 2;
        check_room(out, n)?;
        for (&code, pair) in payload.iter().zip(out.chunks_exact_mut(2)) {
            let (a, b) = self.dec.decode_byte(code);
            pair[0] = a;
            pair[1] = b;
        }
        self.plc.remember(&out[..n]);
        Ok(n)
    }

    fn conceal(&mut self, _next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, CodecError> {
        check_room(out, FRAME)?;
        self.plc.conceal(&mut out[..FRAME]);
        Ok(FRAME)
    }

    fn reset(&mut self) {
        self.enc = G722Encoder::default();
        self.dec = G722Decoder::default();
        self.plc.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dsp::{goertzel, sine, snr_db};

    #[test]
    fn silence_stays_silent() {
        let mut c = G722::new(CodecSpec::g722());
        for _ in 0..5 {
            let p = c.encode_vec(&[0; FRAME]).unwrap();
            assert_eq!(p.len(), 160);
            let d = c.decode_vec(&p).unwrap();
            assert!(d.iter().all(|&s| s.abs() < 4), "{:?}", &d[..8]);
        }
    }

    #[test]
    fn wideband_tone_survives() {
        // 6 kHz is above what narrowband carries: G.722 must keep it.
        let mut c = G722::new(CodecSpec::g722());
        let input = sine(6000.0, 16_000, 8000.0, 0, FRAME * 20);
        let mut out = vec![];
        for f in input.chunks(FRAME) {
            let p = c.encode_vec(f).unwrap();
            out.extend(c.decode_vec(&p).unwrap());
        }
        let tail = &out[FRAME * 10..];
        let p = goertzel(tail, 16_000, 6000.0);
        assert!(p > 0.5 * 8000.0f32.powi(2) / 4.0, "6 kHz power {p}");
        let snr = snr_db(&input[FRAME * 9..], tail, FRAME);
        assert!(snr > 15.0, "snr {snr}");
    }

    /// Reads an ITU-T G.722 Appendix II test sequence (ASCII format: 16 hex
    /// words per line plus a checksum, framed by 0x0001 sync words).
    fn read_vector(path: &std::path::Path) -> Vec<u16> {
        let text = std::fs::read_to_string(path).unwrap();
        let words: Vec<u16> = text
            .lines()
            .filter(|l| !l.starts_with("/*") && l.len() >= 64)
            .flat_map(|l| {
                (0..16).map(move |i| u16::from_str_radix(&l[4 * i..4 * i + 4], 16).unwrap())
            })
            .collect();
        // Keep the data between the sync words (odd) at both ends.
        let start = words.iter().position(|w| w & 1 == 0).unwrap();
        let end = start + words[start..].iter().position(|w| w & 1 == 1).unwrap();
        words[start..end].to_vec()
    }

    /// Bit-exactness against the ITU-T test sequences (64 kbit/s, QMF
    /// bypassed). They are ITU material and not in this repository: point
    /// `G722_VECTORS` at a directory holding the ASCII files (T1C1.XMT,
    /// T2R1.COD, T3L1.RC1, T3H1.RC0, and/or the *2 set) and run with `--ignored`.
    #[test]
    #[ignore = "needs the ITU-T test sequences in $G722_VECTORS"]
    fn itu_test_sequences() {
        let Ok(dir) = std::env::var("G722_VECTORS") else {
            return;
        };
        let dir = std::path::Path::new(&dir);
        let mut checked = 0;
        for set in ["1", "2"] {
            let file = |name: &str| dir.join(name.replace('#', set));
            if !file("T1C#.XMT").exists() {
                continue;
            }
            // Encoder: input to both bands (>> 1), compare the code byte.
            let input = read_vector(&file("T1C#.XMT"));
            let codes = read_vector(&file("T2R#.COD"));
            let mut enc = G722Encoder::default();
            for (k, (&x, &c)) in input.iter().zip(&codes).enumerate() {
                let x = (x as i16 as i32) >> 1;
                assert_eq!(
                    enc.encode_bands(x, x),
                    (c >> 8) as u8,
                    "encoder, set {set}, sample {k}"
                );
            }
            // Decoder: both bands' reconstruction, << 1.
            let low = read_vector(&file("T3L#.RC1"));
            let high = read_vector(&file("T3H#.RC0"));
            let mut dec = G722Decoder::default();
            for (k, &c) in codes.iter().enumerate() {
                let (rl, rh) = dec.decode_bands((c >> 8) as u8);
                assert_eq!(
                    ((rl << 1) as u16, (rh << 1) as u16),
                    (low[k], high[k]),
                    "decoder, set {set}, sample {k}"
                );
            }
            checked += input.len();
        }
        assert!(checked > 0, "no test sequences found in {}", dir.display());
    }

    #[test]
    fn full_scale_input_does_not_overflow() {
        let mut c = G722::new(CodecSpec::g722());
        let loud: Vec<i16> = (0..FRAME)
            .map(|i| if (i / 3) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        for _ in 0..20 {
            let p = c.encode_vec(&loud).unwrap();
            c.decode_vec(&p).unwrap();
        }
        for b in 0..=255u8 {
            let mut d = G722Decoder::default();
            for _ in 0..200 {
                d.decode_byte(b);
            }
        }
    }
}
