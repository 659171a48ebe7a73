use super::*;

/// Chromium 13x's offer (audio only, trimmed ICE candidates), as SIP.js sends it.
const CHROME_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=candidate:1 1 udp 2113937151 8f1c1b1e-7b8a-4c35-9e3c-0d6b1c1f6a2e.local 54321 typ host generation 0 network-cost 999\r\na=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=ice-options:trickle\r\na=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:AD:30:BC:BD:F1:9C:02\r\na=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\na=msid:stream track\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:1001 cname:abcd\r\na=ssrc:1001 msid:stream track\r\n";

fn local() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

#[test]
fn answers_a_chrome_offer_with_opus_and_telephone_event_48k() {
    let cfg = WebRtcConfig::generate().unwrap();
    let (leg, answer) = WebRtcLeg::answer(CHROME_OFFER, local(), &cfg, Instant::now()).unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("UDP/TLS/RTP/SAVPF"), "{answer}");
    assert!(answer.contains("a=fingerprint:sha-256"), "{answer}");
    assert!(answer.contains("127.0.0.1 40000 typ host"), "{answer}");
    let n = leg.negotiated().unwrap();
    assert_eq!(n.participant.codec.kind, CodecKind::Opus);
    assert_eq!(n.participant.codec.payload_type, 111);
    let te = n.participant.telephone_event.unwrap();
    assert_eq!((te.payload_type, te.clock_rate), (110, 48_000));
}

#[test]
fn pcmu_only_offer_gets_pcmu_with_telephone_event_8k() {
    let offer = CHROME_OFFER.replace(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0 126",
    );
    let cfg = WebRtcConfig::generate().unwrap();
    let (leg, _answer) = WebRtcLeg::answer(&offer, local(), &cfg, Instant::now()).unwrap();
    let n = leg.negotiated().unwrap();
    assert_eq!(n.participant.codec.kind, CodecKind::Pcmu);
    let te = n.participant.telephone_event.unwrap();
    assert_eq!((te.payload_type, te.clock_rate), (126, 8000));
}

#[test]
fn advertised_address_goes_in_the_candidate() {
    let mut cfg = WebRtcConfig::generate().unwrap();
    cfg.advertised_ip = Some("203.0.113.7".parse().unwrap());
    let (_leg, answer) = WebRtcLeg::answer(CHROME_OFFER, local(), &cfg, Instant::now()).unwrap();
    assert!(answer.contains("203.0.113.7 40000 typ host"), "{answer}");
}

#[test]
fn garbage_offers_are_refused_without_panic() {
    let cfg = WebRtcConfig::generate().unwrap();
    for bad in [
        "",
        "v=0",
        "hello\r\nworld",
        &CHROME_OFFER[..200],
        &CHROME_OFFER.replace("m=audio", "m=video"),
    ] {
        assert!(
            WebRtcLeg::answer(bad, local(), &cfg, Instant::now()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn makes_an_offer_a_browser_can_answer() {
    let cfg = WebRtcConfig::generate().unwrap();
    let (_leg, offer) = WebRtcLeg::offer(local(), &cfg, Instant::now()).unwrap();
    assert!(offer.contains("m=audio"), "{offer}");
    assert!(offer.contains("opus/48000/2"), "{offer}");
    assert!(offer.contains("telephone-event/8000"), "{offer}");
    assert!(offer.contains("a=setup:actpass"), "{offer}");
}

#[test]
fn narrowband_opus_is_requested_when_configured() {
    let mut cfg = WebRtcConfig::generate().unwrap();
    cfg.opus_max_playback_rate = Some(8000);
    let (leg, answer) = WebRtcLeg::answer(CHROME_OFFER, local(), &cfg, Instant::now()).unwrap();
    assert!(answer.contains("maxplaybackrate=8000"), "{answer}");
    assert_eq!(
        leg.negotiated().unwrap().participant.codec.kind,
        CodecKind::Opus
    );
}

#[test]
fn answer_asks_for_rfc6464_audio_levels() {
    let cfg = WebRtcConfig::generate().unwrap();
    let (leg, answer) = WebRtcLeg::answer(CHROME_OFFER, local(), &cfg, Instant::now()).unwrap();
    assert!(answer.contains("ssrc-audio-level"), "{answer}");
    assert_eq!(leg.negotiated().unwrap().audio_level_ext, Some(1));
}

#[test]
fn both_telephone_events_offered_are_answered_once() {
    let cfg = WebRtcConfig::generate().unwrap();
    let (_leg, answer) = WebRtcLeg::answer(CHROME_OFFER, local(), &cfg, Instant::now()).unwrap();
    let m = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    let formats: Vec<&str> = m.split_whitespace().skip(3).collect();
    let mut dedup = formats.clone();
    dedup.dedup();
    assert_eq!(formats, dedup, "{m}");
    assert_eq!(
        answer.matches("telephone-event/48000").count(),
        1,
        "{answer}"
    );
}

/// RFC 5763 §6.6: a re-offer (hold) keeps our DTLS role, ICE credentials and
/// certificate; the direction answers the browser's.
#[test]
fn reanswer_keeps_dtls_role_and_ice_credentials() {
    let cfg = WebRtcConfig::generate().unwrap();
    let now = Instant::now();
    let (mut leg, first) = WebRtcLeg::answer(CHROME_OFFER, local(), &cfg, now).unwrap();
    let hold = CHROME_OFFER.replace("a=sendrecv", "a=sendonly");
    let second = leg.reanswer(&hold, now).unwrap();
    let attr = |sdp: &str, name: &str| -> Vec<String> {
        sdp.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.trim().to_owned())
            .collect()
    };
    for name in ["a=setup:", "a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"] {
        assert_eq!(
            attr(&first, name),
            attr(&second, name),
            "{name}\n{first}\n{second}"
        );
    }
    assert!(second.contains("a=recvonly"), "{second}");
}

/// A browser we called answered `a=setup:active` (it is the DTLS client):
/// our answers to its re-offers say `passive` (webrtc-rs writes `active`
/// in every answer, and Chromium then refuses the answer: "Failed to set
/// SSL role for the transport"), while ICE credentials stay the same.
#[test]
fn reanswer_to_a_browser_we_called_stays_passive() {
    let cfg = WebRtcConfig::generate().unwrap();
    let now = Instant::now();
    let (mut leg, offer) = WebRtcLeg::offer(local(), &cfg, now).unwrap();
    // The "browser": another connection answering our offer, as the DTLS client.
    let (_browser, answer) = WebRtcLeg::answer(&offer, local(), &cfg, now).unwrap();
    assert!(answer.contains("a=setup:active"), "{answer}");
    leg.accept_answer(&answer, now).unwrap();
    let hold = answer
        .replace("a=setup:active", "a=setup:actpass")
        .replace("a=sendrecv", "a=sendonly");
    let ours = leg.reanswer(&hold, now).unwrap();
    assert!(ours.contains("a=setup:passive"), "{ours}");
    assert!(!ours.contains("a=setup:active"), "{ours}");
    assert!(ours.contains("a=recvonly"), "{ours}");
    let ufrag = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=ice-ufrag:"))
            .map(str::to_owned)
    };
    assert_eq!(ufrag(&offer), ufrag(&ours));
}

#[test]
fn the_pool_reuses_its_block_once_every_piece_is_dropped() {
    let mut pool = Pool::new();
    let block = pool.0.as_ptr() as usize;
    let within = |p: *const u8| (block..block + POOL_BLOCK).contains(&(p as usize));
    // Pieces come from one block, each with its own bytes.
    let a = pool.copy(&[1; 200]);
    let b = pool.copy(&[2; 200]);
    assert!(within(a.as_ptr()) && within(b.as_ptr()));
    assert_eq!((&a[..3], &b[..3]), (&[1u8, 1, 1][..], &[2u8, 2, 2][..]));
    drop((a, b));
    // Steady traffic, each piece dropped before the next (as `rtc` does):
    // the block is taken back, never a new one.
    for i in 0..10 * POOL_BLOCK / 200 {
        let piece = pool.copy(&[i as u8; 200]);
        assert!(within(piece.as_ptr()), "packet {i} left the block");
        assert_eq!(piece[199], i as u8);
    }
    // A piece still held keeps its block: the pool moves to a new one and
    // the held bytes stay intact.
    let held = pool.copy(&[7; 200]);
    let mut moved = false;
    for i in 0..2 * POOL_BLOCK / 200 {
        let piece = pool.copy(&[i as u8; 200]);
        moved |= !within(piece.as_ptr());
    }
    assert!(moved, "a block with a live piece was taken back");
    assert!(within(held.as_ptr()));
    assert_eq!(&held[..], &[7u8; 200][..]);
}
