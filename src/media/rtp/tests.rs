//! RTP leg tests, without sockets or sleeps: datagrams and `Instant`s in,
//! transmits and media packets out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::header::{self, HEADER_LEN};
use super::*;
use crate::media::leg::{Leg, LegClosed, LegIo};
use crate::media::room::{InPacket, OutFrame};
use crate::media::sdp::Direction;

#[derive(Default)]
struct Io {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    rtcp: Vec<(SocketAddr, Vec<u8>)>,
    media: Vec<(u8, u16, u32, Vec<u8>)>,
}

impl LegIo for Io {
    fn transmit(&mut self, to: SocketAddr, data: &[u8]) {
        self.sent.push((to, data.to_vec()));
    }
    fn media(&mut self, p: InPacket<'_>) {
        self.media
            .push((p.payload_type, p.seq, p.timestamp, p.payload.to_vec()));
    }
    fn transmit_rtcp(&mut self, to: SocketAddr, data: &[u8]) {
        self.rtcp.push((to, data.to_vec()));
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const SDP_ADDR: &str = "192.0.2.10:4000";
const NAT_ADDR: &str = "198.51.100.7:61000";
const EVIL: &str = "203.0.113.66:5555";

fn config() -> RtpLegConfig {
    RtpLegConfig {
        remote_rtp: Some(addr(SDP_ADDR)),
        remote_rtcp: Some(addr("192.0.2.10:4001")),
        local_direction: Direction::SendRecv,
        peer_sends: true,
        clock_rate: 8000,
        media_timeout: Duration::from_secs(10),
        relatch_after: Duration::from_secs(1),
        rtcp_interval: Duration::from_secs(5),
        ssrc: 0x5353_5353,
        cname: "test".into(),
    }
}

fn packet(ssrc: u32, seq: u16, ts: u32, pt: u8) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    header::write(&mut h, false, pt, seq, ts, ssrc);
    let mut p = h.to_vec();
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn frame(ts: u32) -> OutFrame {
    OutFrame {
        payload: Bytes::from_static(&[0xff; 160]),
        payload_type: 0,
        timestamp: ts,
        marker: false,
    }
}

#[test]
fn media_from_the_sdp_address_is_accepted_and_we_send_there() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    leg.send_frame(t0, frame(0).as_ref(), &mut io);
    assert_eq!(io.sent[0].0, addr(SDP_ADDR));
    let mut p = packet(7, 100, 1000, 0);
    leg.handle_datagram(t0, addr(SDP_ADDR), &mut p, &mut io);
    assert_eq!(io.media.len(), 1);
    assert_eq!(io.media[0].3.len(), 160);
    let sent = header::parse(&io.sent[0].1).unwrap();
    assert_eq!(sent.ssrc, 0x5353_5353);
    assert_eq!(leg.stats().packets_received, 1);
    assert_eq!(leg.stats().packets_sent, 1);
}

#[test]
fn a_natted_peer_is_latched_after_probation() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    let nat = addr(NAT_ADDR);
    leg.handle_datagram(t0, nat, &mut packet(7, 1, 0, 0), &mut io);
    assert!(
        io.media.is_empty(),
        "first packet of a new source is probation"
    );
    leg.handle_datagram(t0, nat, &mut packet(7, 2, 160, 0), &mut io);
    assert_eq!(io.media.len(), 1);
    assert_eq!(leg.destination(), Some(nat));
    leg.send_frame(t0, frame(0).as_ref(), &mut io);
    assert_eq!(io.sent.last().unwrap().0, nat);
}

#[test]
fn a_stranger_cannot_take_over_a_live_stream() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    let nat = addr(NAT_ADDR);
    for seq in 1..=3 {
        let at = t0 + Duration::from_millis(20 * u64::from(seq));
        leg.handle_datagram(at, nat, &mut packet(7, seq, 0, 0), &mut io);
    }
    let accepted = io.media.len();
    // A spray from elsewhere, in sequence, while the peer is still talking.
    for seq in 0..50u16 {
        let at = t0 + Duration::from_millis(60 + u64::from(seq));
        leg.handle_datagram(at, addr(EVIL), &mut packet(99, seq, 0, 0), &mut io);
    }
    assert_eq!(io.media.len(), accepted);
    assert_eq!(leg.destination(), Some(nat));
    assert_eq!(
        leg.stats().dropped,
        51,
        "the probation packet and the spray"
    );
    // After the peer has been silent for relatch_after, a new source that
    // passes probation takes over (the peer's NAT binding changed).
    let later = t0 + Duration::from_secs(2);
    leg.handle_datagram(later, addr(EVIL), &mut packet(99, 100, 0, 0), &mut io);
    leg.handle_datagram(later, addr(EVIL), &mut packet(99, 101, 160, 0), &mut io);
    assert_eq!(leg.destination(), Some(addr(EVIL)));
}

#[test]
fn the_sdp_address_always_wins_at_once() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    let nat = addr(NAT_ADDR);
    leg.handle_datagram(t0, nat, &mut packet(7, 1, 0, 0), &mut io);
    leg.handle_datagram(t0, nat, &mut packet(7, 2, 160, 0), &mut io);
    assert_eq!(leg.destination(), Some(nat));
    leg.handle_datagram(t0, addr(SDP_ADDR), &mut packet(8, 1, 0, 0), &mut io);
    assert_eq!(leg.destination(), Some(addr(SDP_ADDR)));
}

/// The answer after early media (or a re-INVITE) moves the media: we send
/// to the new SDP address at once, not to the source we had latched (the
/// announcement server), until media is accepted again.
#[test]
fn a_new_sdp_address_is_where_we_send_until_media_comes() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    let nat = addr(NAT_ADDR);
    leg.handle_datagram(t0, nat, &mut packet(7, 1, 0, 0), &mut io);
    leg.handle_datagram(t0, nat, &mut packet(7, 2, 160, 0), &mut io);
    assert_eq!(leg.destination(), Some(nat));
    let moved = addr("192.0.2.20:5000");
    let neg = crate::media::sdp::Negotiated {
        media_index: 0,
        codec: crate::media::codec::CodecSpec::pcma(),
        telephone_event: None,
        remote_rtp: Some(moved),
        remote_rtcp: None,
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        remote_ptime: None,
    };
    leg.update(&neg, t0);
    assert_eq!(leg.destination(), Some(moved));
    leg.send_frame(t0, frame(0).as_ref(), &mut io);
    assert_eq!(io.sent.last().unwrap().0, moved);
    // The same description again (a refresh) changes nothing.
    leg.update(&neg, t0);
    // Media from the new address confirms it.
    leg.handle_datagram(t0, moved, &mut packet(9, 1, 0, 8), &mut io);
    assert_eq!(leg.destination(), Some(moved));
    // A NATed peer whose SDP moved is followed back once its media keeps
    // coming from its (known) public address; a few trailing packets from
    // there (an announcement server's) do not take the stream back.
    let back = crate::media::sdp::Negotiated {
        remote_rtp: Some(addr(SDP_ADDR)),
        ..neg.clone()
    };
    leg.update(&back, t0);
    assert_eq!(leg.destination(), Some(addr(SDP_ADDR)));
    for seq in 2..11 {
        leg.handle_datagram(
            t0,
            moved,
            &mut packet(9, seq, 160 * u32::from(seq), 8),
            &mut io,
        );
        assert_eq!(leg.destination(), Some(addr(SDP_ADDR)), "packet {seq}");
    }
    leg.handle_datagram(t0, moved, &mut packet(9, 11, 1760, 8), &mut io);
    assert_eq!(leg.destination(), Some(moved));
    // Hold with c=0.0.0.0 (no address), then resume at the same address:
    // nothing moved, the latch stays.
    leg.update(
        &crate::media::sdp::Negotiated {
            remote_rtp: None,
            ..back.clone()
        },
        t0,
    );
    leg.update(&back, t0);
    assert_eq!(leg.destination(), Some(moved));
}

#[test]
fn a_new_ssrc_continues_the_sequence_and_timeline() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    let src = addr(SDP_ADDR);
    for i in 0..5u16 {
        let at = t0 + Duration::from_millis(20 * u64::from(i));
        leg.handle_datagram(
            at,
            src,
            &mut packet(1, 1000 + i, 50_000 + 160 * u32::from(i), 0),
            &mut io,
        );
    }
    // Transfer: another SSRC, unrelated numbers, 100 ms after the last packet.
    let at = t0 + Duration::from_millis(180);
    leg.handle_datagram(at, src, &mut packet(2, 7, 999_999, 0), &mut io);
    leg.handle_datagram(
        at + Duration::from_millis(20),
        src,
        &mut packet(2, 8, 999_999 + 160, 0),
        &mut io,
    );
    let seqs: Vec<u16> = io.media.iter().map(|m| m.1).collect();
    assert_eq!(seqs, [1000, 1001, 1002, 1003, 1004, 1005, 1006]);
    let ts: Vec<u32> = io.media.iter().map(|m| m.2).collect();
    assert_eq!(
        ts[5],
        50_000 + 4 * 160 + 800,
        "100 ms later on the 8 kHz clock"
    );
    assert_eq!(ts[6], ts[5] + 160);
    // Reordered packet of the new source maps consistently.
    leg.handle_datagram(at, src, &mut packet(2, 6, 999_999 - 160, 0), &mut io);
    assert_eq!(io.media.last().unwrap().1, 1004u16.wrapping_add(0));
    assert_eq!(leg.stats().packets_lost, 0);
}

#[test]
fn garbage_is_dropped_and_an_echo_of_our_own_stream_is_heard() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    leg.handle_datagram(t0, addr(SDP_ADDR), &mut [1, 2, 3], &mut io);
    assert!(io.media.is_empty());
    assert_eq!(leg.stats().dropped, 1);
    // A peer echoing RTP (SIPp -rtp_echo) sends our SSRC back: still media.
    leg.handle_datagram(
        t0,
        addr(SDP_ADDR),
        &mut packet(0x5353_5353, 1, 0, 0),
        &mut io,
    );
    assert_eq!(io.media.len(), 1);
}

#[test]
fn media_timeout_closes_the_leg_but_not_on_hold() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    leg.handle_datagram(t0, addr(SDP_ADDR), &mut packet(7, 1, 0, 0), &mut io);
    let deadline = leg.poll_timeout().unwrap();
    assert!(deadline <= t0 + Duration::from_secs(10));
    // Drive timeouts as the room task would: RTCP reports come first.
    let mut now = t0;
    while leg.closed().is_none() {
        now = leg.poll_timeout().unwrap();
        leg.handle_timeout(now, &mut io);
    }
    assert_eq!(leg.closed(), Some(LegClosed::MediaTimeout));
    assert_eq!(now, t0 + Duration::from_secs(10));
    assert!(!io.rtcp.is_empty(), "RTCP reports went out meanwhile");
    assert_eq!(io.rtcp[0].0, addr("192.0.2.10:4001"));
    assert_eq!(leg.poll_timeout(), None);

    // The peer put us on hold (it does not send): no timeout.
    let mut cfg = config();
    cfg.peer_sends = false;
    let mut leg = RtpLeg::new(cfg, t0);
    let mut now = t0;
    for _ in 0..100 {
        now = leg.poll_timeout().unwrap();
        leg.handle_timeout(now, &mut io);
    }
    assert!(now > t0 + Duration::from_secs(60));
    assert_eq!(leg.closed(), None);
}

#[test]
fn rtcp_keeps_the_leg_alive_and_reports_are_sr_after_sending() {
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    let mut io = Io::default();
    let mut sr = Vec::new();
    super::rtcp::build_report(&mut sr, 7, None, None, "peer");
    leg.handle_datagram(
        t0 + Duration::from_secs(9),
        addr("192.0.2.10:4001"),
        &mut sr,
        &mut io,
    );
    leg.handle_timeout(t0 + Duration::from_secs(10), &mut io);
    assert_eq!(leg.closed(), None);
    leg.send_frame(t0, frame(0).as_ref(), &mut io);
    io.rtcp.clear();
    let next = leg.poll_timeout().unwrap();
    leg.handle_timeout(next, &mut io);
    let report = &io.rtcp.last().expect("a report").1;
    assert_eq!(report[1], super::rtcp::SR);
    // RTCP from a stranger is ignored.
    let dropped = leg.stats().dropped;
    leg.handle_datagram(t0, addr(EVIL), &mut sr, &mut io);
    assert_eq!(leg.stats().dropped, dropped + 1);
}

#[test]
fn hold_directions_stop_sending() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.local_direction = Direction::RecvOnly;
    let mut leg = RtpLeg::new(cfg, t0);
    let mut io = Io::default();
    leg.send_frame(t0, frame(0).as_ref(), &mut io);
    assert!(io.sent.is_empty());
}

#[test]
fn header_write_is_allocation_free_per_packet() {
    // The transmit buffer is allocated once; sending many frames reuses it.
    let t0 = Instant::now();
    let mut leg = RtpLeg::new(config(), t0);
    struct Count(usize);
    impl LegIo for Count {
        fn transmit(&mut self, _: SocketAddr, d: &[u8]) {
            self.0 += d.len();
        }
        fn media(&mut self, _: InPacket<'_>) {}
    }
    let mut io = Count(0);
    let f = frame(0);
    for _ in 0..1000 {
        leg.send_frame(t0, f.as_ref(), &mut io);
    }
    assert_eq!(io.0, 1000 * 172);
}
