//! SDP tests on descriptions shaped like what real endpoints send
//! (`testdata/`: Chrome, Firefox, SIP.js and JsSIP in a browser, Asterisk,
//! a carrier SBC, a desk phone with video, RFC 4317's examples, RFC 2543
//! hold, SDES-SRTP), plus a mutation test: the parser must never panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::*;
use crate::media::codec::CodecKind;

const CHROME: &str = include_str!("testdata/chrome.sdp");
const FIREFOX: &str = include_str!("testdata/firefox.sdp");
const SIPJS: &str = include_str!("testdata/sipjs.sdp");
const JSSIP: &str = include_str!("testdata/jssip_lf_only.sdp");
const ASTERISK: &str = include_str!("testdata/asterisk.sdp");
const ASTERISK_HOLD: &str = include_str!("testdata/asterisk_hold.sdp");
const CARRIER: &str = include_str!("testdata/carrier.sdp");
const PHONE_VIDEO: &str = include_str!("testdata/phone_video.sdp");
const RFC4317: &str = include_str!("testdata/rfc4317_alice.sdp");
const RFC2543_HOLD: &str = include_str!("testdata/rfc2543_hold.sdp");
const IPV6_INACTIVE: &str = include_str!("testdata/ipv6_inactive.sdp");
const SDES: &str = include_str!("testdata/sdes_srtp.sdp");

const ALL: [&str; 12] = [
    CHROME,
    FIREFOX,
    SIPJS,
    JSSIP,
    ASTERISK,
    ASTERISK_HOLD,
    CARRIER,
    PHONE_VIDEO,
    RFC4317,
    RFC2543_HOLD,
    IPV6_INACTIVE,
    SDES,
];

fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(text.as_bytes()).expect("parses")
}

fn local() -> LocalMedia {
    LocalMedia {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        rtp_port: 20_000,
    }
}

fn answer_of(text: &str) -> Result<(SessionDescription, Negotiated), NegotiationError> {
    answer(
        &parse(text),
        &Capabilities::default(),
        local(),
        &mut SessionOrigin::new(),
    )
}

#[test]
fn every_sample_parses_and_round_trips() {
    for text in ALL {
        let sd = parse(text);
        let written = sd.to_string();
        let again = SessionDescription::parse(written.as_bytes()).expect("reparses");
        assert_eq!(sd, again, "round trip of\n{text}");
        assert!(written.ends_with("\r\n"));
    }
}

#[test]
fn chrome_offer_fields() {
    let sd = parse(CHROME);
    assert_eq!(sd.origin.session_id, "4611731400430051336");
    assert_eq!(sd.media.len(), 1);
    let m = &sd.media[0];
    assert_eq!(m.protocol, "UDP/TLS/RTP/SAVPF");
    assert_eq!(
        m.payload_types().collect::<Vec<_>>(),
        [111, 63, 9, 0, 8, 13, 110, 126]
    );
    assert_eq!(m.rtpmap(111).unwrap().channels, Some(2));
    assert_eq!(m.fmtp(111), Some("minptime=10;useinbandfec=1"));
    assert_eq!(m.rtcp(), Some((9, Some(IpAddr::from([0, 0, 0, 0])))));
    assert_eq!(sd.direction(0), Direction::SendRecv);
    assert_eq!(MediaTransport::of(&sd), MediaTransport::WebRtc);
}

#[test]
fn browser_offers_go_to_the_webrtc_leg_and_are_refused_by_the_rtp_answerer() {
    for text in [CHROME, FIREFOX, SIPJS, JSSIP] {
        assert_eq!(MediaTransport::of(&parse(text)), MediaTransport::WebRtc);
        assert!(matches!(
            answer_of(text),
            Err(NegotiationError::UnsupportedTransport(_))
        ));
    }
    assert_eq!(
        MediaTransport::of(&parse(SDES)),
        MediaTransport::Unsupported("RTP/SAVP".into())
    );
}

#[test]
fn asterisk_offer_gets_pcmu_and_telephone_event_in_our_order() {
    let (ans, neg) = answer_of(ASTERISK).unwrap();
    assert_eq!(neg.codec.kind, CodecKind::Pcmu);
    assert_eq!(neg.telephone_event.map(|t| t.payload_type), Some(101));
    assert_eq!(
        neg.remote_rtp,
        Some("198.51.100.20:17424".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        neg.remote_rtcp,
        Some("198.51.100.20:17425".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(neg.remote_ptime, Some(20));
    let m = &ans.media[0];
    assert_eq!(m.port, 20_000);
    assert_eq!(m.protocol, "RTP/AVP");
    assert_eq!(m.formats, ["0", "101"]);
    assert_eq!(m.fmtp(101), Some("0-16"));
    assert_eq!(m.ptime(), Some(20));
    assert_eq!(m.direction_attribute(), Some(Direction::SendRecv));
    assert_eq!(
        ans.connection.as_ref().and_then(Connection::ip),
        Some(local().address)
    );
    let text = ans.to_string();
    assert!(text.starts_with("v=0\r\no=- "), "{text}");
    assert!(text.contains("c=IN IP4 192.0.2.1\r\n"), "{text}");
    assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
}

#[test]
fn our_preference_wins_over_the_offer_order() {
    // The phone prefers G.722, then PCMA; we prefer PCMU.
    let (_, neg) = answer_of(PHONE_VIDEO).unwrap();
    assert_eq!(neg.codec.kind, CodecKind::Pcmu);
    let caps = Capabilities {
        codecs: vec![CodecKind::G722, CodecKind::Pcmu],
        ..Capabilities::default()
    };
    let (_, neg) = answer(
        &parse(PHONE_VIDEO),
        &caps,
        local(),
        &mut SessionOrigin::new(),
    )
    .unwrap();
    assert_eq!(neg.codec.kind, CodecKind::G722);
    // Dynamic telephone-event PT echoed; a=rtcp honoured (other port and address).
    assert_eq!(neg.telephone_event.map(|t| t.payload_type), Some(96));
    assert_eq!(
        neg.remote_rtcp,
        Some("192.0.2.78:16391".parse::<SocketAddr>().unwrap())
    );
}

#[test]
fn unsupported_streams_are_refused_with_port_zero_in_order() {
    let (ans, neg) = answer_of(PHONE_VIDEO).unwrap();
    assert_eq!(ans.media.len(), 2);
    assert_eq!(neg.media_index, 0);
    assert_eq!(ans.media[1].media, "video");
    assert_eq!(ans.media[1].port, 0);
    assert_eq!(ans.media[1].formats, ["99"]);
    assert!(ans.media[1].attributes.is_empty());
    // RFC 4317: audio with PCMU, video refused; the host-name c= gives no address.
    let (ans, neg) = answer_of(RFC4317).unwrap();
    assert_eq!(neg.codec.kind, CodecKind::Pcmu);
    assert_eq!(neg.remote_rtp, None);
    assert_eq!(ans.media[1].port, 0);
}

#[test]
fn carrier_g729_first_falls_back_to_g711() {
    let (ans, neg) = answer_of(CARRIER).unwrap();
    assert_eq!(neg.codec.kind, CodecKind::Pcmu);
    assert_eq!(ans.media[0].fmtp(101), Some("0-15"));
    // Media-level c= absent: the session-level one applies.
    assert_eq!(
        neg.remote_rtp,
        Some("203.0.113.131:31512".parse::<SocketAddr>().unwrap())
    );
}

#[test]
fn no_common_codec_is_488() {
    let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18 3\r\na=rtpmap:18 G729/8000\r\n";
    let err = answer_of(offer).unwrap_err();
    assert_eq!(err, NegotiationError::NoCommonCodec);
    assert_eq!(err.status(), 488);
    let video_only =
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\nm=video 4000 RTP/AVP 31\r\n";
    assert_eq!(
        answer_of(video_only).unwrap_err(),
        NegotiationError::NoAudio
    );
}

#[test]
fn hold_directions_are_answered_in_reverse() {
    let (ans, neg) = answer_of(ASTERISK_HOLD).unwrap();
    assert_eq!(neg.remote_direction, Direction::SendOnly);
    assert_eq!(neg.local_direction, Direction::RecvOnly);
    assert!(neg.on_hold());
    assert_eq!(
        ans.media[0].direction_attribute(),
        Some(Direction::RecvOnly)
    );

    // RFC 2543 hold: c=0.0.0.0 means "do not send to me".
    let (ans, neg) = answer_of(RFC2543_HOLD).unwrap();
    assert_eq!(neg.remote_rtp, None);
    assert!(neg.on_hold());
    assert_eq!(
        ans.media[0].direction_attribute(),
        Some(Direction::RecvOnly)
    );

    // inactive → inactive; Opus with telephone-event/48000 (IPv6).
    let (ans, neg) = answer_of(IPV6_INACTIVE).unwrap();
    assert_eq!(neg.local_direction, Direction::Inactive);
    assert_eq!(neg.codec.kind, CodecKind::Pcmu);
    assert_eq!(neg.telephone_event.map(|t| t.payload_type), Some(98));
    assert_eq!(
        neg.remote_rtp,
        Some("[2001:db8::10]:9000".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        ans.media[0].direction_attribute(),
        Some(Direction::Inactive)
    );

    // recvonly → sendonly, a session-level attribute applies to every stream.
    let offer = ASTERISK
        .replace("a=sendrecv\r\n", "")
        .replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
    let (_, neg) = answer_of(&offer).unwrap();
    assert_eq!(neg.local_direction, Direction::SendOnly);
    assert!(!neg.on_hold());
}

#[test]
fn opus_over_plain_rtp_uses_the_48k_telephone_event() {
    let caps = Capabilities {
        codecs: vec![CodecKind::Opus],
        ..Capabilities::default()
    };
    let (ans, neg) = answer(
        &parse(IPV6_INACTIVE),
        &caps,
        local(),
        &mut SessionOrigin::new(),
    )
    .unwrap();
    assert_eq!(neg.codec.kind, CodecKind::Opus);
    assert_eq!(neg.codec.payload_type, 96);
    assert_eq!(neg.telephone_event.map(|t| t.clock_rate), Some(48_000));
    assert_eq!(ans.media[0].formats, ["96", "97"]);
}

#[test]
fn origin_version_moves_only_when_the_answer_changes() {
    let mut origin = SessionOrigin::new();
    let caps = Capabilities::default();
    let (a1, _) = answer(&parse(ASTERISK), &caps, local(), &mut origin).unwrap();
    let (a2, _) = answer(&parse(ASTERISK), &caps, local(), &mut origin).unwrap();
    assert_eq!(a1.origin.session_version, a2.origin.session_version);
    let (a3, _) = answer(&parse(ASTERISK_HOLD), &caps, local(), &mut origin).unwrap();
    assert_eq!(a3.origin.session_version, a1.origin.session_version + 1);
    assert_eq!(a3.origin.session_id, a1.origin.session_id);
}

#[test]
fn our_offer_and_its_answer() {
    let mut origin = SessionOrigin::new();
    let caps = Capabilities {
        codecs: vec![CodecKind::Pcmu, CodecKind::Pcma, CodecKind::G722],
        ..Capabilities::default()
    };
    let offer = build_offer(&caps, local(), Direction::SendRecv, &mut origin);
    let text = offer.to_string();
    assert!(
        text.contains("m=audio 20000 RTP/AVP 0 8 9 101\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtpmap:101 telephone-event/8000\r\n"),
        "{text}"
    );
    assert!(text.contains("a=fmtp:101 0-16\r\n"), "{text}");
    assert!(text.contains("a=ptime:20\r\n"), "{text}");
    // Answered by "the other side" with our own answerer: PCMA preferred there.
    let theirs = Capabilities {
        codecs: vec![CodecKind::Pcma],
        ..Capabilities::default()
    };
    let far = LocalMedia {
        address: IpAddr::from([198, 51, 100, 1]),
        rtp_port: 30_000,
    };
    let (ans, _) = answer(&offer, &theirs, far, &mut SessionOrigin::new()).unwrap();
    let neg = process_answer(&offer, &ans).unwrap();
    assert_eq!(neg.codec.kind, CodecKind::Pcma);
    assert_eq!(neg.telephone_event.map(|t| t.payload_type), Some(101));
    assert_eq!(
        neg.telephone_event.map(|t| t.receive_payload_type),
        Some(101)
    );
    // An answerer that renumbers telephone-event (100): we send with its
    // number and still take events with the one we offered (RFC 3264 §5.1;
    // both were once taken from the answer).
    let renumbered = ans
        .to_string()
        .replace(" 101", " 100")
        .replace(":101", ":100");
    let renumbered = SessionDescription::parse(renumbered.as_bytes()).unwrap();
    let neg = process_answer(&offer, &renumbered).unwrap();
    let te = neg.telephone_event.unwrap();
    assert_eq!((te.payload_type, te.receive_payload_type), (100, 101));
    assert_eq!(
        neg.remote_rtp,
        Some("198.51.100.1:30000".parse::<SocketAddr>().unwrap())
    );
}

#[test]
fn malformed_descriptions_are_errors() {
    for bad in [
        "",
        "hello",
        "v=1\r\n",
        "v=0\r\ns=-\r\n",
        "v=0\r\no=- 1\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN\r\n",
    ] {
        assert!(
            SessionDescription::parse(bad.as_bytes()).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        SessionDescription::parse(&[0xff, 0xfe]),
        Err(SdpError::Encoding)
    );
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_LINES + 1));
    assert_eq!(
        SessionDescription::parse(huge.as_bytes()),
        Err(SdpError::TooLarge)
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tokens: [&[u8]; 12] = [
        b"\r\n",
        b"=",
        b":",
        b"/",
        b" ",
        b"m=audio ",
        b"a=rtpmap:",
        b"c=IN IP4 ",
        b"65536",
        b"0.0.0.0",
        b"\xff",
        b"a=rtcp:",
    ];
    let caps = Capabilities::default();
    for round in 0..20_000 {
        let base = ALL[round % ALL.len()].as_bytes();
        let mut data = base.to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(data.len() + 1);
            match rng.below(4) {
                0 => {
                    let end = (at + rng.below(40)).min(data.len());
                    data.drain(at..end);
                }
                1 => {
                    let token = tokens[rng.below(tokens.len())];
                    data.splice(at..at, token.iter().copied());
                }
                2 if at < data.len() => data[at] = rng.next() as u8,
                _ => data.truncate(at),
            }
        }
        if let Ok(sd) = SessionDescription::parse(&data) {
            let _ = sd.to_string();
            let _ = MediaTransport::of(&sd);
            if let Ok((ans, _)) = answer(&sd, &caps, local(), &mut SessionOrigin::new()) {
                let _ = process_answer(&ans, &sd);
            }
        }
    }
}
