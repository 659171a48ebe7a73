//! The WebRTC leg against a real Chromium (Debian's, driven by playwright-core):
//! the page offers Opus with its fake microphone (a 440 Hz tone), the leg
//! answers in-process, and an echo room sends the page its own audio back. The
//! page checks with getStats and a WebAudio analyser that it receives its own
//! tone. No SIP: the offer and answer cross through the harness' stdout/stdin.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::repo;
use switchboard::media::webrtc::{WebRtcConfig, WebRtcLeg};
use switchboard::media::{InPacket, Leg, LegIo, ParticipantId, Room, RoomConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::Command;

/// A minimal driver for one leg in one room (the server's room task does the same).
struct Io<'a> {
    socket: &'a UdpSocket,
    room: &'a mut Room,
    now_ms: u64,
    media_in: u64,
}

impl LegIo for Io<'_> {
    fn transmit(&mut self, to: SocketAddr, data: &[u8]) {
        let _ = self.socket.try_send_to(data, to);
    }
    fn media(&mut self, pkt: InPacket<'_>) {
        self.media_in += 1;
        let _ = self.room.push_packet(ParticipantId(1), pkt, self.now_ms);
    }
}

async fn scenario(name: &str) {
    let browser = repo().join("interop-tests").join("browser");
    let mut child = Command::new("node")
        .arg(browser.join("run.mjs"))
        .args(["--scenario", name, "--timeout", "60", "--talk", "3"])
        .current_dir(&browser)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (apt-get install nodejs npm; see interop-tests/run.sh)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut transcript = String::new();

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let cfg = WebRtcConfig::generate().unwrap();
    let mut room = Room::new(RoomConfig {
        echo_delay_ms: Some(100),
        ..RoomConfig::default()
    })
    .unwrap();
    let mut leg: Option<WebRtcLeg> = None;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut buf = vec![0u8; 2048];
    let mut media_in = 0u64;
    let status = loop {
        let deadline = leg
            .as_ref()
            .and_then(|l| l.poll_timeout())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            line = lines.next_line() => match line.unwrap() {
                Some(line) => {
                    if let Some(offer) = line.strip_prefix("OFFER ") {
                        let offer: String = serde_json::from_str(offer).unwrap();
                        let (l, answer) = WebRtcLeg::answer(&offer, local, &cfg, Instant::now())
                            .unwrap_or_else(|e| panic!("answer failed: {e}\n{offer}"));
                        let n = l.negotiated().unwrap();
                        room.add_participant(ParticipantId(1), n.participant).unwrap();
                        leg = Some(l);
                        let msg = format!("ANSWER {}\n", serde_json::to_string(&answer).unwrap());
                        stdin.write_all(msg.as_bytes()).await.unwrap();
                        stdin.flush().await.unwrap();
                    } else {
                        transcript.push_str(&line);
                        transcript.push('\n');
                    }
                }
                None => break child.wait().await.unwrap(),
            },
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r.unwrap();
                if let Some(l) = leg.as_mut() {
                    let now_ms = start.elapsed().as_millis() as u64;
                    let mut io = Io { socket: &socket, room: &mut room, now_ms, media_in: 0 };
                    l.handle_datagram(Instant::now(), from, &mut buf[..n], &mut io);
                    media_in += io.media_in;
                }
            }
            _ = tick.tick() => {
                let now_ms = start.elapsed().as_millis() as u64;
                let frames: Vec<_> = room.tick(now_ms).collect();
                if let Some(l) = leg.as_mut() {
                    let mut io = Io { socket: &socket, room: &mut room, now_ms, media_in: 0 };
                    for (_, frame) in &frames {
                        l.send_frame(Instant::now(), frame.as_ref(), &mut io);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if let Some(l) = leg.as_mut() {
                    let now_ms = start.elapsed().as_millis() as u64;
                    let mut io = Io { socket: &socket, room: &mut room, now_ms, media_in: 0 };
                    l.handle_timeout(Instant::now(), &mut io);
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "scenario hung:\n{transcript}"
        );
    };
    let stats = leg.as_ref().map(|l| l.stats());
    assert!(
        status.success(),
        "browser scenario {name} failed (leg stats {stats:?}, {media_in} media packets)\n{transcript}"
    );
    assert!(transcript.contains(&format!("PASS {name}")), "{transcript}");
    eprintln!("{transcript}");
    let stats = stats.unwrap();
    eprintln!("leg stats: {stats:?}");
    assert!(
        stats.packets_received > 50 && stats.packets_sent > 50,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_hears_its_own_tone_through_an_echo_room() {
    scenario("webrtc-echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_mdns_candidates_connects() {
    scenario("webrtc-mdns").await;
}
