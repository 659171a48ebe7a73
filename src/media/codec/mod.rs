//! Audio codecs behind one trait: G.711 µ-law (PCMU) and A-law (PCMA),
//! G.722 (64 kbit/s SB-ADPCM) and Opus (libopus).
//!
//! A [`Codec`] instance holds the encoder and decoder state of one stream
//! direction pair; [`CodecSpec`] is the negotiated description (payload type,
//! clock rate, Opus settings) it is built from. All codecs work on mono 20 ms
//! frames of 16-bit PCM. Decoders never panic on arbitrary payload bytes.

pub mod g711;
pub mod g722;
pub mod opus;
pub mod plc;

use thiserror::Error;

use super::frame_samples;

/// Largest encoded payload any codec here writes (one Opus frame is ≤ 1275 bytes).
pub const MAX_PAYLOAD: usize = 1500;

/// Why a codec call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The codec cannot run at this PCM sample rate.
    #[error("{codec} does not support a PCM rate of {rate} Hz")]
    UnsupportedRate {
        /// Codec name.
        codec: &'static str,
        /// Rate asked for.
        rate: u32,
    },
    /// The input PCM does not have the frame length the codec expects.
    #[error("expected {expected} PCM samples, got {got}")]
    FrameLength {
        /// Samples per frame.
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// An output buffer is too small.
    #[error("output buffer too small: {needed} needed, {got} given")]
    BufferTooSmall {
        /// Size needed.
        needed: usize,
        /// Size given.
        got: usize,
    },
    /// The payload could not be decoded.
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// libopus reported an error.
    #[error("opus: {0}")]
    Opus(String),
}

/// The codecs the media engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722 at 64 kbit/s, static payload type 9 (RTP clock 8000, audio 16 kHz).
    G722,
    /// Opus, mono, dynamic payload type, RTP clock 48000.
    Opus,
}

impl CodecKind {
    /// Every codec, G.711 first.
    pub const ALL: [CodecKind; 4] = [
        CodecKind::Pcmu,
        CodecKind::Pcma,
        CodecKind::G722,
        CodecKind::Opus,
    ];
}

impl<'de> serde::Deserialize<'de> for CodecKind {
    /// Reads a codec name as in SDP, case-insensitively (`PCMU`, `pcma`,
    /// `G722`, `opus`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        [
            CodecKind::Pcmu,
            CodecKind::Pcma,
            CodecKind::G722,
            CodecKind::Opus,
        ]
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            serde::de::Error::custom(format!("unknown codec '{name}' (PCMU, PCMA, G722 or opus)"))
        })
    }
}

impl CodecKind {
    /// SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::G722 => "G722",
            CodecKind::Opus => "opus",
        }
    }

    /// Static RTP payload type (RFC 3551), `None` for dynamic ones.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::G722 => Some(9),
            CodecKind::Opus => None,
        }
    }

    /// RTP clock rate as written in SDP (G.722 says 8000 for historical reasons).
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => 8000,
            CodecKind::Opus => 48_000,
        }
    }

    /// The PCM rate the codec carries at best.
    pub fn native_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
            CodecKind::G722 => 16_000,
            CodecKind::Opus => 48_000,
        }
    }

    /// RTP timestamp increment of one 20 ms frame.
    pub fn timestamp_step(self) -> u32 {
        self.clock_rate() / 50
    }

    /// Whether the codec can run at `rate` Hz PCM (Opus: 8/12/16/24/48 kHz).
    pub fn supports_rate(self, rate: u32) -> bool {
        match self {
            CodecKind::Opus => matches!(rate, 8000 | 12_000 | 16_000 | 24_000 | 48_000),
            other => rate == other.native_rate(),
        }
    }
}

/// Opus encoder settings (the decoder needs none).
///
/// Audio at 8 kHz (a mix heard by a G.711 caller, or from one) has nothing
/// above 4 kHz: SILK narrowband codes it well with far fewer bits and cycles,
/// so the encoder switches to the `narrowband_*` settings at that rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpusParams {
    /// Encoder complexity, 0 (cheapest) to 10, at 12 kHz and above.
    pub complexity: u8,
    /// Target bitrate in bit/s at 12 kHz and above.
    pub bitrate: u32,
    /// Complexity when encoding 8 kHz audio.
    pub narrowband_complexity: u8,
    /// Encode 8 kHz audio (an Opus leg bridged to G.711) with CELT only
    /// (libopus `RESTRICTED_LOWDELAY`) instead of SILK: about half the CPU
    /// at complexity 0 (docs/media.md), any Opus decoder plays it; the price
    /// is in-band FEC, which only SILK carries.
    pub narrowband_celt: bool,
    /// Bitrate when encoding 8 kHz audio.
    pub narrowband_bitrate: u32,
    /// In-band forward error correction (LBRR) in what we send.
    pub fec: bool,
    /// Expected loss in percent; tells the encoder how much FEC to spend.
    pub packet_loss_percent: u8,
}

impl Default for OpusParams {
    fn default() -> Self {
        OpusParams {
            complexity: 5,
            bitrate: 32_000,
            narrowband_complexity: 0,
            narrowband_celt: true,
            narrowband_bitrate: 20_000,
            fec: true,
            packet_loss_percent: 10,
        }
    }
}

/// A negotiated codec: what it is, its payload type and its settings.
///
/// Two participants with equal specs can share one encoder output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodecSpec {
    /// Which codec.
    pub kind: CodecKind,
    /// RTP payload type negotiated for it.
    pub payload_type: u8,
    /// Opus settings (ignored by the other codecs).
    pub opus: OpusParams,
}

impl CodecSpec {
    /// PCMU on payload type 0.
    pub fn pcmu() -> Self {
        Self::with_pt(CodecKind::Pcmu, 0)
    }

    /// PCMA on payload type 8.
    pub fn pcma() -> Self {
        Self::with_pt(CodecKind::Pcma, 8)
    }

    /// G.722 on payload type 9.
    pub fn g722() -> Self {
        Self::with_pt(CodecKind::G722, 9)
    }

    /// Opus on the given dynamic payload type with default settings.
    pub fn opus(payload_type: u8) -> Self {
        Self::with_pt(CodecKind::Opus, payload_type)
    }

    /// `kind` on `payload_type`, default Opus settings.
    pub fn with_pt(kind: CodecKind, payload_type: u8) -> Self {
        CodecSpec {
            kind,
            payload_type,
            opus: OpusParams::default(),
        }
    }

    /// Builds a codec instance exchanging PCM at `pcm_rate` Hz.
    pub fn build(&self, pcm_rate: u32) -> Result<Box<dyn Codec>, CodecError> {
        if !self.kind.supports_rate(pcm_rate) {
            return Err(CodecError::UnsupportedRate {
                codec: self.kind.name(),
                rate: pcm_rate,
            });
        }
        Ok(match self.kind {
            CodecKind::Pcmu => Box::new(g711::G711::new(*self, g711::Law::Mu)),
            CodecKind::Pcma => Box::new(g711::G711::new(*self, g711::Law::A)),
            CodecKind::G722 => Box::new(g722::G722::new(*self)),
            CodecKind::Opus => Box::new(opus::Opus::new(*self, pcm_rate)?),
        })
    }
}

/// One codec instance: an encoder and a decoder for mono 20 ms frames.
///
/// Buffers are the caller's so the hot path allocates nothing.
pub trait Codec: Send {
    /// What this instance was built from.
    fn spec(&self) -> &CodecSpec;

    /// PCM rate of [`encode`](Self::encode) input and [`decode`](Self::decode) output.
    fn pcm_rate(&self) -> u32;

    /// PCM samples in one frame.
    fn frame_len(&self) -> usize {
        frame_samples(self.pcm_rate())
    }

    /// Encodes exactly one frame of PCM into `out`, returning the payload length.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;

    /// Decodes one payload into `out` (at least one frame long), returning the
    /// number of samples written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;

    /// Produces one frame standing in for a lost packet. `next` is the payload
    /// that follows the lost one when the jitter buffer already holds it (Opus
    /// recovers the frame from its in-band FEC); otherwise the codec conceals.
    fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, CodecError>;

    /// Forgets all history (after a discontinuity such as a relay period).
    fn reset(&mut self);

    /// Convenience: encodes one frame into a new `Vec` (allocates; not for the hot path).
    fn encode_vec(&mut self, pcm: &[i16]) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![0u8; MAX_PAYLOAD];
        let n = self.encode(pcm, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Convenience: decodes one payload into a new `Vec` (allocates; not for the hot path).
    fn decode_vec(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        // 120 ms: the longest Opus packet.
        let mut out = vec![0i16; self.frame_len() * 6];
        let n = self.decode(payload, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

/// Checks an encoder input length.
pub(crate) fn check_frame(pcm: &[i16], expected: usize) -> Result<(), CodecError> {
    if pcm.len() != expected {
        return Err(CodecError::FrameLength {
            expected,
            got: pcm.len(),
        });
    }
    Ok(())
}

/// Checks an output buffer size.
pub(crate) fn check_room<T>(out: &[T], needed: usize) -> Result<(), CodecError> {
    if out.len() < needed {
        return Err(CodecError::BufferTooSmall {
            needed,
            got: out.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dsp::{sine, snr_db};

    /// Encodes and decodes `frames` frames of a 1 kHz tone, returns the SNR
    /// over the second half (after codec warm-up).
    fn round_trip_snr(spec: CodecSpec, rate: u32, frames: usize) -> f32 {
        let mut codec = spec.build(rate).unwrap();
        let n = frame_samples(rate);
        let input = sine(1000.0, rate, 8000.0, 0, n * frames);
        let mut output = Vec::new();
        for f in input.chunks(n) {
            let payload = codec.encode_vec(f).unwrap();
            output.extend(codec.decode_vec(&payload).unwrap());
        }
        let half = n * frames / 2;
        snr_db(&input[half - 2 * n..], &output[half..], 2 * n)
    }

    #[test]
    fn g711_round_trip_snr_at_least_30_db() {
        let u = round_trip_snr(CodecSpec::pcmu(), 8000, 10);
        let a = round_trip_snr(CodecSpec::pcma(), 8000, 10);
        assert!(u >= 30.0, "PCMU SNR {u}");
        assert!(a >= 30.0, "PCMA SNR {a}");
    }

    #[test]
    fn g722_round_trip_snr_at_least_20_db() {
        let s = round_trip_snr(CodecSpec::g722(), 16_000, 20);
        assert!(s >= 20.0, "G.722 SNR {s}");
    }

    #[test]
    fn opus_round_trip_snr_at_least_15_db() {
        for rate in [8000, 16_000, 48_000] {
            let s = round_trip_snr(CodecSpec::opus(111), rate, 25);
            assert!(s >= 15.0, "Opus SNR {s} at {rate} Hz");
        }
    }

    #[test]
    fn random_payloads_never_panic_any_decoder() {
        // Deterministic xorshift so failures reproduce.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for spec in [
            CodecSpec::pcmu(),
            CodecSpec::pcma(),
            CodecSpec::g722(),
            CodecSpec::opus(96),
        ] {
            for rate in [8000, 16_000, 48_000] {
                let Ok(mut codec) = spec.build(rate) else {
                    continue;
                };
                let mut out = vec![0i16; codec.frame_len() * 6];
                for i in 0..3000 {
                    let len = (next() % 400) as usize;
                    let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    let _ = codec.decode(&payload, &mut out);
                    if i % 7 == 0 {
                        let _ = codec.conceal(Some(&payload), &mut out);
                        let _ = codec.conceal(None, &mut out);
                    }
                }
                // Too-small output buffers are errors, not panics.
                let _ = codec.decode(&[0x78, 1, 2, 3], &mut out[..10]);
                let _ = codec.conceal(None, &mut out[..10]);
            }
        }
    }

    #[test]
    fn encode_rejects_wrong_frame_length() {
        for spec in [CodecSpec::pcmu(), CodecSpec::g722(), CodecSpec::opus(111)] {
            let mut c = spec.build(spec.kind.native_rate()).unwrap();
            let e = c.encode(&[0i16; 7], &mut [0u8; MAX_PAYLOAD]).unwrap_err();
            assert!(matches!(e, CodecError::FrameLength { got: 7, .. }));
        }
    }

    #[test]
    fn metadata() {
        assert_eq!(CodecKind::G722.clock_rate(), 8000);
        assert_eq!(CodecKind::G722.native_rate(), 16_000);
        assert_eq!(CodecKind::Opus.timestamp_step(), 960);
        assert_eq!(CodecKind::Pcmu.static_payload_type(), Some(0));
        assert!(CodecSpec::pcmu().build(16_000).is_err());
        assert!(CodecSpec::opus(111).build(16_000).is_ok());
    }
}
