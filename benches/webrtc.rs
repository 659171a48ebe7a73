//! What a browser participant costs on our side: the WebRTC leg (SRTP, RTCP,
//! ICE consent) plus the room, per 20 ms, for a transcoded Opus↔PCMU call.
//!
//! The "browser" is a second webrtc-rs peer connection (full ICE, DTLS
//! client) in the same process; datagrams cross in memory and the clock is
//! simulated, so only CPU is measured. Only our side's work is timed: the
//! leg's `handle_datagram` (SRTP decrypt, interceptors) and `send_frame`
//! (SRTP encrypt), the room's push and tick (jitter buffers, Opus decode,
//! PCMU encode and back). Run: `cargo bench --bench webrtc` (results in
//! docs/benchmarks.md, section "Media").

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use switchboard::media::webrtc::{WebRtcConfig, WebRtcLeg};
use switchboard::media::{
    CodecSpec, InPacket, Leg, LegIo, OutFrame, ParticipantConfig, ParticipantId, Room, RoomConfig,
};

const OURS: &str = "10.0.0.1:5000";
const BROWSER: &str = "10.0.0.2:6000";

#[derive(Default)]
struct Wire {
    to_browser: Vec<Vec<u8>>,
    media: Vec<(u8, u16, u32, bool, Vec<u8>)>,
}

impl LegIo for Wire {
    fn transmit(&mut self, _to: SocketAddr, data: &[u8]) {
        self.to_browser.push(data.to_vec());
    }
    fn media(&mut self, p: InPacket<'_>) {
        self.media.push((
            p.payload_type,
            p.seq,
            p.timestamp,
            p.marker,
            p.payload.to_vec(),
        ));
    }
}

fn browser(now: Instant) -> (RTCPeerConnection, u32) {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)
        .unwrap();
    let ssrc = 0x1234_5678;
    pc.add_track(MediaStreamTrack::new(
        "b".into(),
        "b-audio".into(),
        "b-audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    ))
    .unwrap();
    let addr: SocketAddr = BROWSER.parse().unwrap();
    let cand = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap())
        .unwrap();
    (pc, ssrc)
}

fn to_leg(b: &mut RTCPeerConnection, leg: &mut WebRtcLeg, now: Instant, wire: &mut Wire) -> f64 {
    let mut spent = 0.0;
    let from: SocketAddr = BROWSER.parse().unwrap();
    while let Some(out) = b.poll_write() {
        let mut data = out.message.to_vec();
        let t = Instant::now();
        leg.handle_datagram(now, from, &mut data, wire);
        spent += t.elapsed().as_secs_f64();
    }
    spent
}

fn to_browser(b: &mut RTCPeerConnection, now: Instant, wire: &mut Wire) {
    let (ours, theirs): (SocketAddr, SocketAddr) =
        (OURS.parse().unwrap(), BROWSER.parse().unwrap());
    for d in wire.to_browser.drain(..) {
        let _ = b.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: theirs,
                peer_addr: ours,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(&d[..]),
        });
    }
    while b.poll_read().is_some() {}
    while b.poll_event().is_some() {}
}

fn main() {
    let frames: usize = std::env::var("FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    // Real Opus from the "browser" (libopus defaults, as Chromium), PCMU from the trunk.
    let tone: Vec<i16> = (0..960 * frames)
        .map(|i| ((i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0).sin() * 8000.0) as i16)
        .collect();
    let mut enc = CodecSpec::opus(111).build(48_000).unwrap();
    let fullband: Vec<Bytes> = tone
        .chunks_exact(960)
        .map(|f| Bytes::from(enc.encode_vec(f).unwrap()))
        .collect();
    let tone8: Vec<i16> = tone.iter().step_by(6).copied().collect();
    // A browser told maxplaybackrate=8000 sends SILK narrowband.
    let mut browser_nb = CodecSpec::opus(111);
    browser_nb.opus.narrowband_celt = false;
    browser_nb.opus.narrowband_complexity = 1; // as before this change
    let mut enc = browser_nb.build(8000).unwrap();
    let narrowband: Vec<Bytes> = tone8
        .chunks_exact(160)
        .map(|f| Bytes::from(enc.encode_vec(f).unwrap()))
        .collect();
    let mut pcmu = CodecSpec::pcmu().build(8000).unwrap();
    let ulaw: Vec<Vec<u8>> = tone8
        .chunks_exact(160)
        .map(|f| pcmu.encode_vec(f).unwrap())
        .collect();
    println!("| part (per 20 ms, one browser leg) | browser sends | µs | % of one core |");
    println!("|---|---|---|---|");
    for (label, opus) in [
        ("fullband Opus", &fullband),
        ("narrowband Opus (maxplaybackrate=8000)", &narrowband),
    ] {
        run(frames, label, opus, &ulaw);
    }
}

fn run(frames: usize, label: &str, opus: &[Bytes], ulaw: &[Vec<u8>]) {
    let start = Instant::now();
    let mut now = start;
    let cfg = WebRtcConfig::generate().unwrap();
    let (mut b, ssrc) = browser(now);
    let offer = b.create_offer(None).unwrap();
    b.set_local_description(now, offer).unwrap();
    let offer = b.local_description().unwrap().sdp;
    let (mut leg, answer) = WebRtcLeg::answer(&offer, OURS.parse().unwrap(), &cfg, now).unwrap();
    b.set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
        .unwrap();
    let mut wire = Wire::default();
    // Connect: ICE checks and DTLS handshake, simulated clock.
    let mut after = 0;
    for _ in 0..2000 {
        now += Duration::from_millis(5);
        let _ = b.handle_timeout(now);
        leg.handle_timeout(now, &mut wire);
        to_leg(&mut b, &mut leg, now, &mut wire);
        to_browser(&mut b, now, &mut wire);
        // The browser side finishes DTLS a round trip later.
        if leg.is_connected() {
            after += 1;
            if after > 20 {
                break;
            }
        }
    }
    assert!(leg.is_connected(), "no connection in the simulation");
    let neg = leg.negotiated().unwrap();

    let mut room = Room::new(RoomConfig::default()).unwrap();
    let mut participant = neg.participant;
    if let Ok(v) = std::env::var("NB_COMPLEXITY") {
        participant.codec.opus.narrowband_complexity = v.parse().unwrap();
    }
    if std::env::var("NO_FEC").is_ok() {
        participant.codec.opus.fec = false;
    }
    if std::env::var("NB_SILK").is_ok() {
        participant.codec.opus.narrowband_celt = false;
    }
    room.add_participant(ParticipantId(1), participant).unwrap();
    room.add_participant(ParticipantId(2), ParticipantConfig::new(CodecSpec::pcmu()))
        .unwrap();
    let (mut t_in, mut t_out, mut t_room, mut t_timeout) = (0.0, 0.0, 0.0, 0.0);
    let t_ms = |now: Instant| (now - start).as_millis() as u64;
    for k in 0..frames {
        now += Duration::from_millis(20);
        // Browser → us.
        let pkt = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: k as u16,
                timestamp: (k * 960) as u32,
                ssrc,
                ..Default::default()
            },
            payload: opus[k].clone(),
        };
        let sender = b.get_senders().next().unwrap();
        b.rtp_sender(sender).unwrap().write_rtp(now, pkt).unwrap();
        t_in += to_leg(&mut b, &mut leg, now, &mut wire);
        let t = Instant::now();
        for (pt, seq, ts, marker, payload) in wire.media.drain(..) {
            let _ = room.push_packet(
                ParticipantId(1),
                InPacket {
                    payload_type: pt,
                    seq,
                    timestamp: ts,
                    marker,
                    payload: &payload,
                    audio_level: None,
                },
                t_ms(now),
            );
        }
        let _ = room.push_packet(
            ParticipantId(2),
            InPacket {
                payload_type: 0,
                seq: k as u16,
                timestamp: (k * 160) as u32,
                marker: k == 0,
                payload: &ulaw[k],
                audio_level: None,
            },
            t_ms(now),
        );
        let out: Vec<(ParticipantId, OutFrame)> = room.tick(t_ms(now)).collect();
        t_room += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (who, frame) in &out {
            if *who == ParticipantId(1) {
                leg.send_frame(now, frame.as_ref(), &mut wire);
            } else {
                black_box(frame);
            }
        }
        if leg.poll_timeout().is_some_and(|d| d <= now) {
            let t2 = Instant::now();
            leg.handle_timeout(now, &mut wire);
            t_timeout += t2.elapsed().as_secs_f64();
        }
        t_out += t.elapsed().as_secs_f64();
        let _ = b.handle_timeout(now);
        to_browser(&mut b, now, &mut wire);
    }
    let per = |s: f64| s * 1e6 / frames as f64;
    let stats = leg.stats();
    assert_eq!(stats.packets_received, frames as u64, "{stats:?}");
    for (name, v) in [
        (
            "leg receive: SRTP decrypt + interceptors (`handle_datagram`)",
            per(t_in),
        ),
        (
            "leg send: SRTP encrypt + interceptors (`send_frame`, timeouts)",
            per(t_out),
        ),
        (
            "  of which timeouts (RTCP reports, ICE consent)",
            per(t_timeout),
        ),
        (
            "room: push both + tick (Opus decode/encode, PCMU)",
            per(t_room),
        ),
        (
            "total: transcoded browser↔PCMU call, our side, without UDP syscalls",
            per(t_in + t_out + t_room),
        ),
    ] {
        println!("| {name} | {label} | {v:.1} | {:.3} |", v / 200.0);
    }
}
