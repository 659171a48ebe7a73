//! Opus (RFC 6716) through libopus, the implementation Chromium ships: mono,
//! 20 ms frames, in-band FEC, VoIP application (SILK/hybrid); 8 kHz audio
//! (bridged from G.711) is encoded CELT-only by default, which costs about
//! half as much ([`OpusParams::narrowband_celt`](super::OpusParams)). Why libopus and not a
//! pure-Rust port is measured and argued in `docs/media.md`.
//!
//! The RTP clock of Opus is always 48 kHz, but libopus encodes from and
//! decodes to 8, 12, 16, 24 or 48 kHz PCM: the room runs Opus at its mixing
//! rate so an Opus↔G.711 call needs no resampling at all. Encoder and
//! decoder are created on first use, so a decode-only or encode-only
//! instance does not pay for the other half.

use opus::{Application, Bitrate, Channels};

use super::{Codec, CodecError, CodecSpec, check_frame, check_room};
use crate::media::frame_samples;

/// libopus encoder/decoder pair for one stream.
pub struct Opus {
    spec: CodecSpec,
    rate: u32,
    enc: Option<opus::Encoder>,
    dec: Option<opus::Decoder>,
    /// Decode scratch for packets longer than 20 ms (up to 120 ms).
    scratch: Vec<i16>,
}

fn opus_err(e: opus::Error) -> CodecError {
    CodecError::Opus(e.to_string())
}

impl Opus {
    /// An instance exchanging PCM at `rate` Hz (8/12/16/24/48 kHz).
    pub fn new(spec: CodecSpec, rate: u32) -> Result<Self, CodecError> {
        if !spec.kind.supports_rate(rate) {
            return Err(CodecError::UnsupportedRate {
                codec: "opus",
                rate,
            });
        }
        Ok(Opus {
            spec,
            rate,
            enc: None,
            dec: None,
            scratch: Vec::new(),
        })
    }

    fn encoder(&mut self) -> Result<&mut opus::Encoder, CodecError> {
        if self.enc.is_none() {
            let p = self.spec.opus;
            let narrow = self.rate <= 8000;
            let (complexity, bitrate) = if narrow {
                (p.narrowband_complexity, p.narrowband_bitrate)
            } else {
                (p.complexity, p.bitrate)
            };
            let application = if narrow && p.narrowband_celt {
                Application::LowDelay
            } else {
                Application::Voip
            };
            let mut e =
                opus::Encoder::new(self.rate, Channels::Mono, application).map_err(opus_err)?;
            e.set_complexity(complexity.min(10) as i32)
                .map_err(opus_err)?;
            e.set_bitrate(Bitrate::Bits(bitrate.clamp(6000, 510_000) as i32))
                .map_err(opus_err)?;
            e.set_inband_fec(p.fec).map_err(opus_err)?;
            e.set_packet_loss_perc(p.packet_loss_percent.min(100) as i32)
                .map_err(opus_err)?;
            self.enc = Some(e);
        }
        Ok(self.enc.as_mut().expect("just created"))
    }

    fn decoder(&mut self) -> Result<&mut opus::Decoder, CodecError> {
        if self.dec.is_none() {
            self.dec = Some(opus::Decoder::new(self.rate, Channels::Mono).map_err(opus_err)?);
            self.scratch = vec![0; frame_samples(self.rate) * 6];
        }
        Ok(self.dec.as_mut().expect("just created"))
    }
}

impl Codec for Opus {
    fn spec(&self) -> &CodecSpec {
        &self.spec
    }

    fn pcm_rate(&self) -> u32 {
        self.rate
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(pcm, frame_samples(self.rate))?;
        check_room(out, 1)?;
        self.encoder()?.encode(pcm, out).map_err(opus_err)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let frame = frame_samples(self.rate);
        check_room(out, frame)?;
        if payload.is_empty() {
            // An empty payload would mean "lost" to libopus; a sender never means that.
            return Err(CodecError::InvalidPayload("empty opus payload"));
        }
        self.decoder()?;
        let (dec, scratch) = (self.dec.as_mut().expect("created"), &mut self.scratch);
        // Decode into the 120 ms scratch when `out` cannot hold a long packet.
        if out.len() >= scratch.len() {
            return dec.decode(payload, out, false).map_err(opus_err);
        }
        let n = dec.decode(payload, scratch, false).map_err(opus_err)?;
        let n = n.min(out.len());
        out[..n].copy_from_slice(&scratch[..n]);
        Ok(n)
    }

    fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, CodecError> {
        let frame = frame_samples(self.rate);
        check_room(out, frame)?;
        let dec = self.decoder()?;
        // FEC: the next packet's LBRR data rebuilds the lost frame; libopus
        // falls back to PLC by itself when that packet carries none.
        if let Some(next) = next.filter(|p| !p.is_empty())
            && let Ok(n) = dec.decode(next, &mut out[..frame], true)
        {
            return Ok(n);
        }
        dec.decode(&[], &mut out[..frame], false).map_err(opus_err)
    }

    fn reset(&mut self) {
        if let Some(e) = self.enc.as_mut() {
            let _ = e.reset_state();
        }
        if let Some(d) = self.dec.as_mut() {
            let _ = d.reset_state();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dsp::{snr_db, speech_like};

    #[test]
    fn fec_recovers_lost_frames_better_than_plc() {
        let rate = 16_000;
        let n = frame_samples(rate);
        let spec = CodecSpec {
            opus: crate::media::codec::OpusParams {
                bitrate: 32_000,
                packet_loss_percent: 20,
                ..Default::default()
            },
            ..CodecSpec::opus(111)
        };
        let frames = 200;
        let input = speech_like(rate, n * frames, 7);
        let mut enc = Opus::new(spec, rate).unwrap();
        let packets: Vec<Vec<u8>> = input
            .chunks(n)
            .map(|f| enc.encode_vec(f).unwrap())
            .collect();
        let lost = |i: usize| i % 7 == 3;

        let run = |use_fec: bool| {
            let mut dec = Opus::new(spec, rate).unwrap();
            let mut out = vec![];
            let mut buf = vec![0i16; n];
            for (i, p) in packets.iter().enumerate() {
                if lost(i) {
                    let next = packets.get(i + 1).filter(|_| use_fec).map(Vec::as_slice);
                    dec.conceal(next, &mut buf).unwrap();
                } else {
                    dec.decode(p, &mut buf).unwrap();
                }
                out.extend_from_slice(&buf);
            }
            snr_db(&input, &out, n)
        };
        let (fec, plc) = (run(true), run(false));
        eprintln!("FEC {fec} dB, PLC {plc} dB");
        assert!(fec > plc + 1.0, "FEC {fec} dB should beat PLC {plc} dB");
    }

    #[test]
    fn decodes_long_packets_into_a_short_buffer() {
        let rate = 8000;
        let mut enc = opus::Encoder::new(rate, Channels::Mono, Application::Voip).unwrap();
        let pcm = vec![0i16; 480]; // 60 ms
        let mut pkt = [0u8; 400];
        let len = enc.encode(&pcm, &mut pkt).unwrap();
        let mut c = Opus::new(CodecSpec::opus(111), rate).unwrap();
        let mut out = [0i16; 160];
        assert_eq!(c.decode(&pkt[..len], &mut out).unwrap(), 160);
    }
}
