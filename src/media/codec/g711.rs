//! G.711 (ITU-T, 1972): µ-law (PCMU) and A-law (PCMA) companding.
//!
//! Encoding is computed (no table): µ-law works on the 14-bit and A-law on
//! the 13-bit left-justified magnitude of the 16-bit input, exactly as the
//! G.711 tables and the ITU G.191 reference code do. Decoding uses two
//! 256-entry tables built at compile time.

use super::plc::RepeatConcealer;
use super::{Codec, CodecError, CodecSpec, check_frame, check_room};

/// µ-law bias added before finding the segment (0x84 >> 2 on the 14-bit value).
const ULAW_BIAS: i32 = 0x21;
/// Largest 14-bit magnitude µ-law represents before clipping.
const ULAW_CLIP: i32 = 8159;

/// Encodes one sample to µ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = (sample as i32) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment: position of the highest set bit above bit 5 (v is 33..=8192).
    let seg = (32 - (v as u32).leading_zeros()).saturating_sub(6);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let code = ((seg << 4) as u8) | ((v >> (seg + 1)) & 0x0F) as u8;
    code ^ mask
}

/// Encodes one sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = (sample as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    // v is 0..=4095: segment from the highest set bit above bit 4.
    let seg = (32 - (v as u32).leading_zeros()).saturating_sub(5);
    let quant = if seg < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> seg) & 0x0F
    };
    (((seg << 4) as u8) | quant as u8) ^ mask
}

const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let t = (((u & 0x0F) as i32) << 3) + 0x84;
    let t = t << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode(i as u8);
        i += 1;
    }
    t
}

const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode(i as u8);
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = ulaw_table();
static ALAW_TABLE: [i16; 256] = alaw_table();

const fn squares(t: [i16; 256]) -> [u32; 256] {
    let mut sq = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let v = t[i] as i32;
        sq[i] = (v * v) as u32;
        i += 1;
    }
    sq
}

static ULAW_SQUARES: [u32; 256] = squares(ulaw_table());
static ALAW_SQUARES: [u32; 256] = squares(alaw_table());

/// Mean square of the decoded samples of a G.711 payload, without decoding
/// it (one table lookup per byte): talker detection on relayed packets.
pub fn mean_square(law: Law, payload: &[u8]) -> f32 {
    if payload.is_empty() {
        return 0.0;
    }
    let table = match law {
        Law::Mu => &ULAW_SQUARES,
        Law::A => &ALAW_SQUARES,
    };
    let sum: u64 = payload.iter().map(|&b| u64::from(table[b as usize])).sum();
    sum as f32 / payload.len() as f32
}

/// Decodes one µ-law byte.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Decodes one A-law byte.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

/// Which companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (North America, Japan): PCMU.
    Mu,
    /// A-law (rest of the world): PCMA.
    A,
}

/// G.711 codec instance: stateless coding plus a repeat-and-fade concealer.
#[derive(Debug, Clone)]
pub struct G711 {
    spec: CodecSpec,
    law: Law,
    plc: RepeatConcealer,
}

/// Samples in a 20 ms G.711 frame.
const FRAME: usize = 160;

impl G711 {
    /// A PCMU or PCMA instance.
    pub fn new(spec: CodecSpec, law: Law) -> Self {
        G711 {
            spec,
            law,
            plc: RepeatConcealer::new(FRAME),
        }
    }

    /// The byte that encodes digital silence in this law.
    pub fn silence_byte(&self) -> u8 {
        match self.law {
            Law::Mu => linear_to_ulaw(0),
            Law::A => linear_to_alaw(0),
        }
    }
}

impl Codec for G711 {
    fn spec(&self) -> &CodecSpec {
        &self.spec
    }

    fn pcm_rate(&self) -> u32 {
        8000
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(pcm, FRAME)?;
        check_room(out, FRAME)?;
        match self.law {
            Law::Mu => out
                .iter_mut()
                .zip(pcm)
                .for_each(|(o, &s)| *o = linear_to_ulaw(s)),
            Law::A => out
                .iter_mut()
                .zip(pcm)
                .for_each(|(o, &s)| *o = linear_to_alaw(s)),
        }
        Ok(FRAME)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        check_room(out, payload.len())?;
        let table = match self.law {
            Law::Mu => &ULAW_TABLE,
            Law::A => &ALAW_TABLE,
        };
        out.iter_mut()
            .zip(payload)
            .for_each(|(o, &b)| *o = table[b as usize]);
        self.plc.remember(&out[..payload.len()]);
        Ok(payload.len())
    }

    fn conceal(&mut self, _next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, CodecError> {
        check_room(out, FRAME)?;
        self.plc.conceal(&mut out[..FRAME]);
        Ok(FRAME)
    }

    fn reset(&mut self) {
        self.plc.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_from_g711() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    /// Every code decodes to a value that encodes back to the same code
    /// (except µ-law's negative zero 0x7F, which G.711 maps to 0xFF).
    #[test]
    fn every_code_is_a_fixed_point() {
        for c in 0..=255u8 {
            let u = linear_to_ulaw(ulaw_to_linear(c));
            assert!(u == c || (c == 0x7F && u == 0xFF), "ulaw {c:#x} -> {u:#x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    /// Encoding picks the nearest decision level: monotone, and every input is
    /// reproduced within half a quantisation step of its segment.
    #[test]
    fn encoding_is_monotone_and_close() {
        let mut prev_u = i32::MIN;
        let mut prev_a = i32::MIN;
        for x in i16::MIN..=i16::MAX {
            let du = ulaw_to_linear(linear_to_ulaw(x)) as i32;
            let da = alaw_to_linear(linear_to_alaw(x)) as i32;
            assert!(du >= prev_u && da >= prev_a, "monotone at {x}");
            prev_u = du;
            prev_a = da;
            let mag = (x as i32).abs();
            // Step size of the segment holding x (16-bit scale).
            // (Negative inputs are floored by the shifts, as in the encoder.)
            let v14 = ((x as i32) >> 2).unsigned_abs();
            let v13 = if x < 0 {
                (-((x as i32) >> 3) - 1) as u32
            } else {
                (x as u32) >> 3
            };
            let seg_u = (32 - (v14 + 33).leading_zeros()).saturating_sub(6);
            let seg_a = (32 - v13.leading_zeros()).saturating_sub(5);
            let step_u = 8 << seg_u;
            let step_a = if seg_a < 2 { 16 } else { 8 << seg_a };
            if mag < 32000 {
                assert!((du - x as i32).abs() <= step_u, "ulaw {x} -> {du}");
                assert!((da - x as i32).abs() <= step_a, "alaw {x} -> {da}");
            }
        }
    }

    /// Pins the full encode (65536 inputs) and decode (256 codes) tables to
    /// the Sun/CCITT reference as shipped in CPython's `audioop`
    /// (`lin2ulaw`, `lin2alaw`, `ulaw2lin`, `alaw2lin`): SHA-256 of the
    /// outputs in input order, samples little-endian.
    #[test]
    fn tables_match_the_reference_implementation() {
        use sha2::{Digest, Sha256};
        let hex = |bytes: &[u8]| -> String {
            Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let all = i16::MIN..=i16::MAX;
        let enc_u: Vec<u8> = all.clone().map(linear_to_ulaw).collect();
        let enc_a: Vec<u8> = all.map(linear_to_alaw).collect();
        let dec_u: Vec<u8> = (0..=255u8)
            .flat_map(|c| ulaw_to_linear(c).to_le_bytes())
            .collect();
        let dec_a: Vec<u8> = (0..=255u8)
            .flat_map(|c| alaw_to_linear(c).to_le_bytes())
            .collect();
        assert_eq!(
            hex(&enc_u),
            "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a"
        );
        assert_eq!(
            hex(&enc_a),
            "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b"
        );
        assert_eq!(
            hex(&dec_u),
            "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
        );
        assert_eq!(
            hex(&dec_a),
            "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174"
        );
    }

    #[test]
    fn plc_repeats_then_fades() {
        let mut c = G711::new(CodecSpec::pcmu(), Law::Mu);
        let pcm: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 4000 } else { -4000 })
            .collect();
        let p = c.encode_vec(&pcm).unwrap();
        c.decode_vec(&p).unwrap();
        let mut out = [0i16; 160];
        c.conceal(None, &mut out).unwrap();
        assert!(out[0].abs() > 3000);
        for _ in 0..4 {
            c.conceal(None, &mut out).unwrap();
        }
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn mean_square_from_the_table_matches_a_decode() {
        let payload: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        for (law, table) in [(Law::Mu, &ULAW_TABLE), (Law::A, &ALAW_TABLE)] {
            let pcm: Vec<i16> = payload.iter().map(|&b| table[b as usize]).collect();
            let want = crate::media::dsp::mean_square(&pcm);
            assert!((mean_square(law, &payload) - want).abs() <= want * 1e-6);
        }
        assert_eq!(mean_square(Law::Mu, &[]), 0.0);
    }
}
