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
    let leg = RtpLeg::new(
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
    );
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
