//! The media threads with real sockets on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{LegEvent, MediaConfig, MediaEngine, RoomHandle};
use crate::media::codec::CodecSpec;
use crate::media::rtp::{RtpLeg, RtpLegConfig};
use crate::media::sdp::Direction;
use crate::media::{ParticipantConfig, ParticipantId, RoomConfig};
use crate::metrics::Metrics;

fn engine(threads: usize) -> (Arc<MediaEngine>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let cfg = MediaConfig {
        bind: [127, 0, 0, 1].into(),
        rtp_ports: "47000-47999".into(),
        threads,
        ..MediaConfig::default()
    };
    (MediaEngine::new(cfg, metrics.clone()).unwrap(), metrics)
}

/// A PCMU RTP leg facing `phone`.
fn rtp_leg(phone: &UdpSocket, id: u64) -> RtpLeg {
    RtpLeg::new(
        RtpLegConfig {
            remote_rtp: Some(phone.local_addr().unwrap()),
            remote_rtcp: None,
            local_direction: Direction::SendRecv,
            peer_sends: true,
            clock_rate: 8000,
            media_timeout: Duration::from_secs(60),
            relatch_after: Duration::from_secs(1),
            rtcp_interval: Duration::from_secs(5),
            ssrc: 0x1234_0000 + id as u32,
            cname: "test".into(),
        },
        Instant::now(),
    )
}

/// Adds an RTP leg facing a new phone socket; returns the phone and where
/// it sends to.
async fn add_leg(
    engine: &MediaEngine,
    room: &RoomHandle,
    id: u64,
    events: Option<mpsc::UnboundedSender<LegEvent>>,
) -> (UdpSocket, SocketAddr) {
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ports = engine.allocate_ports().unwrap();
    let to = ports.rtp.local_addr().unwrap();
    let leg = rtp_leg(&phone, id);
    room.add(
        ParticipantId(id),
        Box::new(leg),
        ports.into(),
        ParticipantConfig::new(CodecSpec::pcmu()),
        events,
    )
    .await
    .unwrap();
    (phone, to)
}

fn rtp(seq: u16) -> [u8; 172] {
    let mut p = [0xffu8; 172];
    p[0] = 0x80;
    p[1] = 0;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
    p
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Level-triggered, one datagram per wake-up: a burst still all gets
/// through (an edge-triggered loop reading once per event would strand it).
#[tokio::test]
async fn a_burst_is_relayed_whole() {
    let (engine, _) = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let (a, to_a) = add_leg(&engine, &room, 1, None).await;
    let (b, _) = add_leg(&engine, &room, 2, None).await;
    b.set_nonblocking(true).unwrap();
    let mut seen = [false; 100];
    let take = |b: &UdpSocket, seen: &mut [bool; 100]| {
        let mut buf = [0u8; 2048];
        while let Ok(n) = b.recv(&mut buf) {
            if n == 172 {
                seen[usize::from(buf[12]).min(99)] = true;
            }
        }
    };
    // Paced first: the room decides to relay at a tick.
    for seq in 0..25u16 {
        let mut p = rtp(seq);
        p[12] = seq as u8;
        a.send_to(&p, to_a).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        take(&b, &mut seen);
    }
    for seq in 25..65u16 {
        let mut p = rtp(seq);
        p[12] = seq as u8;
        a.send_to(&p, to_a).unwrap();
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end && !seen[25..65].iter().all(|&s| s) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        take(&b, &mut seen);
    }
    let missing: Vec<usize> = (25..65).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "burst packets not relayed: {missing:?}");
}

/// The room's channel wakes its thread when the last handle goes.
#[tokio::test]
async fn a_room_ends_when_its_last_handle_is_dropped() {
    let (engine, metrics) = engine(2);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let (_phone, _) = add_leg(&engine, &room, 1, None).await;
    assert_eq!(metrics.media.rooms.get(), 1);
    assert_eq!(metrics.media.legs.get(), 1);
    drop(room);
    until("the room to end", || metrics.media.rooms.get() == 0).await;
    assert_eq!(metrics.media.legs.get(), 0);
}

/// Dropping the engine stops its threads, which end their rooms and tell
/// each leg's owner.
#[tokio::test]
async fn dropping_the_engine_ends_its_rooms() {
    let (engine, metrics) = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_phone, _) = add_leg(&engine, &room, 1, Some(tx)).await;
    drop(engine);
    // The drop joined the thread: the room is over already.
    assert_eq!(metrics.media.rooms.get(), 0);
    assert!(matches!(rx.try_recv(), Ok(LegEvent::Removed(_))));
    assert!(room.is_closed());
}

/// A panic inside one room ends that room only: the thread's other rooms
/// go on, and new rooms still start on it.
#[tokio::test]
async fn a_panicking_room_ends_alone() {
    let (engine, metrics) = engine(1);
    let doomed = engine.create_room(RoomConfig::default()).unwrap();
    let (_p, _) = add_leg(&engine, &doomed, 1, None).await;
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let (a, to_a) = add_leg(&engine, &room, 1, None).await;
    let (b, _) = add_leg(&engine, &room, 2, None).await;
    let update: super::LegUpdate = Box::new(|_| panic!("a bug in a leg"));
    doomed
        .send(super::Command::UpdateLeg(ParticipantId(1), update))
        .await
        .unwrap();
    until("the panicking room to end", || doomed.is_closed()).await;
    until("the gauges", || {
        metrics.media.rooms.get() == 1 && metrics.media.legs.get() == 2
    })
    .await;
    // The other room still relays.
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    let mut relayed = false;
    for seq in 0..25u16 {
        a.send_to(&rtp(seq), to_a).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.set_nonblocking(true).unwrap();
        relayed |= b.recv(&mut buf).is_ok();
    }
    assert!(relayed, "the other room stopped");
    // And the thread takes new rooms.
    let fresh = engine.create_room(RoomConfig::default()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), add_leg(&engine, &fresh, 1, None))
        .await
        .expect("a new room on the same thread");
}

#[test]
fn coalescing_longer_than_a_frame_is_refused() {
    let cfg = MediaConfig {
        coalesce_us: 20_001,
        ..MediaConfig::default()
    };
    assert!(cfg.validate().unwrap_err().contains("media.coalesce_us"));
    let cfg = MediaConfig {
        coalesce_us: 20_000,
        ..MediaConfig::default()
    };
    assert!(cfg.validate().is_ok());
}

/// A leg that gives the room two packets from one datagram, as a WebRTC
/// leg can: a datagram starting 0xAA is a DTMF end packet followed by an
/// audio packet whose payload starts 0x42; any other, one audio packet.
struct TwoAtOnce {
    seq: u16,
}

impl crate::media::leg::Leg for TwoAtOnce {
    fn handle_datagram(
        &mut self,
        _now: Instant,
        _from: SocketAddr,
        data: &mut [u8],
        io: &mut dyn crate::media::leg::LegIo,
    ) {
        let audio_first = [0x42u8; 160];
        let audio = [0xffu8; 160];
        let ts = u32::from(self.seq) * 160;
        let mut push = |pt: u8, ts: u32, payload: &[u8]| {
            self.seq = self.seq.wrapping_add(1);
            io.media(crate::media::InPacket {
                payload_type: pt,
                seq: self.seq,
                timestamp: ts,
                marker: false,
                payload,
                audio_level: None,
            });
        };
        if data.first() == Some(&0xAA) {
            // Event 5, end, volume 10, 800 samples.
            push(101, ts, &[5, 0x80 | 10, 0x03, 0x20]);
            push(0, ts + 160, &audio_first);
        } else {
            push(0, ts, &audio);
        }
    }

    fn send_frame(
        &mut self,
        _now: Instant,
        _frame: crate::media::FrameRef<'_>,
        _io: &mut dyn crate::media::leg::LegIo,
    ) {
    }

    fn handle_timeout(&mut self, _now: Instant, _io: &mut dyn crate::media::leg::LegIo) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn stats(&self) -> crate::media::leg::LegStats {
        crate::media::leg::LegStats::default()
    }

    fn closed(&self) -> Option<crate::media::leg::LegClosed> {
        None
    }
}

/// Frames leave in the order the room produced them: a relayed packet does
/// not overtake a DTMF packet queued before it from the same datagram.
#[tokio::test]
async fn relayed_audio_does_not_overtake_queued_dtmf() {
    let (engine, _) = engine(1);
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let codec = || ParticipantConfig::new(CodecSpec::pcmu()).with_telephone_event(101, 8000);
    let ports = engine.allocate_ports().unwrap();
    let to_a = ports.rtp.local_addr().unwrap();
    room.add(
        ParticipantId(1),
        Box::new(TwoAtOnce { seq: 0 }),
        ports.into(),
        codec(),
        None,
    )
    .await
    .unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ports = engine.allocate_ports().unwrap();
    let leg = rtp_leg(&b, 2);
    room.add(ParticipantId(2), Box::new(leg), ports.into(), codec(), None)
        .await
        .unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    let mut got: Vec<(u8, u8)> = Vec::new();
    let take = |got: &mut Vec<(u8, u8)>| {
        let mut buf = [0u8; 2048];
        while let Ok(n) = b.recv(&mut buf) {
            if n > 12 {
                got.push((buf[1] & 0x7f, buf[12]));
            }
        }
    };
    // Paced audio first: the room decides to relay at a tick.
    for _ in 0..10 {
        a.send_to(&[0u8; 4], to_a).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        take(&mut got);
    }
    got.clear();
    a.send_to(&[0xAA; 4], to_a).unwrap();
    until("the DTMF packet and the audio after it", || {
        take(&mut got);
        got.iter().any(|&(pt, first)| pt == 0 && first == 0x42)
    })
    .await;
    let dtmf = got.iter().position(|&(pt, _)| pt == 101);
    let audio = got.iter().position(|&(pt, first)| pt == 0 && first == 0x42);
    assert!(
        matches!((dtmf, audio), (Some(d), Some(a)) if d < a),
        "order at the far end (payload type, first payload byte): {got:?}"
    );
}

/// A call's two legs join in one command: no tick finds one of them alone,
/// so neither is sent the silence of an empty mix before the other speaks
/// (a leg alone is: that is what `add_all` avoids).
#[tokio::test]
async fn legs_added_together_get_nothing_before_the_other_speaks() {
    let (engine, _) = engine(1);
    let quiet = |phone: &UdpSocket| {
        phone.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        std::iter::from_fn(|| phone.recv(&mut buf).ok()).count()
    };
    // Alone: a frame every tick.
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let (alone, _) = add_leg(&engine, &room, 1, None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(quiet(&alone) >= 3, "a leg alone hears the mix's silence");
    // Together: nothing until one of them sends.
    let room = engine.create_room(RoomConfig::default()).unwrap();
    let mut joins = Vec::new();
    let mut phones = Vec::new();
    for id in 1..=2u64 {
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ports = engine.allocate_ports().unwrap();
        joins.push(super::Join {
            id: ParticipantId(id),
            leg: Box::new(rtp_leg(&phone, id)),
            sockets: ports.into(),
            config: ParticipantConfig::new(CodecSpec::pcmu()),
            events: None,
        });
        phones.push(phone);
    }
    for done in room.add_all(joins.into_boxed_slice()).await {
        done.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(quiet(&phones[0]) + quiet(&phones[1]), 0);
}
