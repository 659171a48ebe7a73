//! Media helpers for SIPp-driven tests: tone pcaps for `play_pcap_audio`,
//! an `AF_PACKET` capture of RTP on loopback (root), tone detection, and
//! the check that calls leave nothing behind.

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::media::codec::g711::{alaw_to_linear, linear_to_alaw, ulaw_to_linear};
use switchboard::media::dsp::goertzel;

use super::Server;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where [`port_window`] hands out ports: below the kernel's ephemeral
/// range (32768 and up by default), so nothing bound to port 0 (a SIP
/// socket, a client) lands in a window, and clear of the defaults
/// (`rtp_ports` 20000-29999, TURN relays 49152 and up).
const WINDOWS: std::ops::Range<u16> = 10_000..20_000;
/// Ports handed out so far by this test process (windows are consecutive).
static PORTS_TAKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A free window of `n` ports (even first) on 127.0.0.1 for the RTP range.
/// Windows never overlap within a test process, until the range wraps
/// (when the earliest tests are long over): tests that run at once are not
/// handed the same port (and test binaries run one at a time).
pub fn port_window(n: u16) -> (u16, u16) {
    let span = usize::from(n + n % 2);
    for _ in 0..2 * WINDOWS.len() / span {
        let offset = PORTS_TAKEN.fetch_add(span, Ordering::Relaxed) % WINDOWS.len();
        if offset + span > WINDOWS.len() {
            continue; // straddles the end of the range
        }
        let base = WINDOWS.start + offset as u16;
        let free = (base..base + n).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if free {
            return (base, base + n - 1);
        }
    }
    panic!("no free port window");
}

/// Writes a pcap (Ethernet/IPv4/UDP/RTP) of `seconds` of a PCMA tone at
/// `freq` Hz, 20 ms per packet, for SIPp's `play_pcap_audio`.
pub fn write_tone_pcap(path: &Path, freq: f32, seconds: u32) {
    write_tone_pcap_with(path, freq, seconds, 8);
}

/// [`write_tone_pcap`] in PCMU (`payload_type` 0) or PCMA (8).
pub fn write_tone_pcap_with(path: &Path, freq: f32, seconds: u32, payload_type: u8) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    let packets = seconds * 50;
    for k in 0..packets {
        let mut rtp = vec![0x80, payload_type];
        rtp.extend_from_slice(&(k as u16).to_be_bytes());
        rtp.extend_from_slice(&(k * 160).to_be_bytes());
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        for n in 0..160 {
            let t = (k * 160 + n) as f32 / 8000.0;
            let s = (8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16;
            rtp.push(if payload_type == 0 {
                switchboard::media::codec::g711::linear_to_ulaw(s)
            } else {
                linear_to_alaw(s)
            });
        }
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let us = u64::from(k) * 20_000;
        out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

/// Captures, on `lo`, the PCMA payloads of RTP sent from a port in `from`
/// to `to_port`, until stopped (an [`RtpCapture`] keeping payload type 8).
pub struct Capture(RtpCapture);

impl Capture {
    /// Starts capturing (needs root).
    pub fn start(from: (u16, u16), to_port: u16) -> Capture {
        Capture(RtpCapture::start(from, to_port))
    }

    /// Stops and returns the PCMA payloads with their kernel receive times
    /// (ms since the Unix epoch), in arrival order.
    pub fn finish_timed(self) -> Vec<(u64, Vec<u8>)> {
        self.0
            .finish()
            .into_iter()
            .filter(|p| p.payload_type == 8)
            .map(|p| (p.at_ms, p.payload))
            .collect()
    }

    /// Stops and returns the PCMA payloads in arrival order.
    pub fn finish(self) -> Vec<Vec<u8>> {
        self.finish_timed().into_iter().map(|(_, p)| p).collect()
    }
}

/// How many captured 20 ms frames carry `freq` clearly (its Goertzel power
/// is most of the frame's energy).
pub fn frames_with_tone(payloads: &[Vec<u8>], freq: f32) -> usize {
    frames_hearing(payloads, freq, 0.5)
}

/// Whether a frame of 8 kHz PCM is loud (mean square above 10^5) and
/// carries `freq` as at least `share` of its energy.
fn has_tone(pcm: &[i16], freq: f32, share: f32) -> bool {
    let energy = pcm
        .iter()
        .map(|&s| f32::from(s) * f32::from(s))
        .sum::<f32>()
        / pcm.len().max(1) as f32;
    energy > 1.0e5 && goertzel(pcm, 8000, freq) * 2.0 > share * energy
}

/// How many frames carry `freq` as at least `share` of their energy (a
/// tone among others in a mix: three equal tones have about a third each).
pub fn frames_hearing(payloads: &[Vec<u8>], freq: f32, share: f32) -> usize {
    payloads
        .iter()
        .filter(|p| {
            let pcm: Vec<i16> = p.iter().map(|&b| alaw_to_linear(b)).collect();
            has_tone(&pcm, freq, share)
        })
        .count()
}

/// How many PCMU packets (payload type 0) carry `freq` as most of their
/// energy.
pub fn pcmu_frames_with_tone(packets: &[RtpPacket], freq: f32) -> usize {
    pcmu_frames_hearing(packets, freq, 0.5)
}

/// How many PCMU packets carry `freq` as at least `share` of their energy.
pub fn pcmu_frames_hearing(packets: &[RtpPacket], freq: f32, share: f32) -> usize {
    packets
        .iter()
        .filter(|p| p.payload_type == 0)
        .filter(|p| {
            let pcm: Vec<i16> = p.payload.iter().map(|&b| ulaw_to_linear(b)).collect();
            has_tone(&pcm, freq, share)
        })
        .count()
}

pub fn wait(mut child: Child, work: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if !status.success() {
                let mut details = String::new();
                for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name.ends_with(".log") {
                        details
                            .push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                    }
                }
                panic!("{what} failed ({status}):\n{details}");
            }
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free even media port for SIPp (it uses the next ones for RTCP/video):
/// a window of four of [`port_window`]'s.
pub fn media_port() -> u16 {
    port_window(4).0
}

/// Every call, room, leg and port is gone (polls for up to 5 s).
pub fn assert_nothing_left(server: &Server) {
    let names = [
        "switchboard_b2bua_calls",
        "switchboard_media_rooms",
        "switchboard_media_legs",
        "switchboard_media_ports",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let values: Vec<u64> = names.iter().map(|n| server.metric(n)).collect();
        if values.iter().all(|&v| v == 0) {
            return;
        }
        if Instant::now() > deadline {
            panic!("left over after the call: {names:?} = {values:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After an answered call: its outgoing INVITE's client transaction ended
/// with the call, not 32 s later (RFC 6026's wait for retransmitted 2xx
/// kept the task and ~20 KB per call alive that long). Not for calls with
/// a failed INVITE (challenge, failover): those transactions rightly stay
/// for Timer D, and the gauge counts them.
pub fn assert_answered_invites_ended(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("switchboard_b2bua_outgoing_invites") != 0 {
        assert!(
            Instant::now() < deadline,
            "an answered INVITE's transaction outlived its call by 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One RTP packet seen by an [`RtpCapture`].
#[derive(Debug, Clone)]
pub struct RtpPacket {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    /// When the kernel saw it (SIOCGSTAMP), ms since the Unix epoch: a
    /// capture thread starved on a loaded machine still times packets right.
    pub at_ms: u64,
}

/// The kernel's receive time of the last packet read from `socket`, ms
/// since the Unix epoch (now, if the kernel cannot say).
fn kernel_stamp_ms(socket: &socket2::Socket) -> u64 {
    use std::os::fd::AsRawFd;
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // linux/sockios.h (the libc crate does not export it).
    const SIOCGSTAMP: u64 = 0x8906;
    // SAFETY: SIOCGSTAMP writes one timeval into `tv`, which outlives the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSTAMP as _, &mut tv) };
    if rc == 0 {
        tv.tv_sec as u64 * 1000 + tv.tv_usec as u64 / 1000
    } else {
        now_ms()
    }
}

/// Wall-clock time, ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Captures, on `lo`, every RTP packet (any payload type, e.g.
/// RFC 4733 telephone-event) with its header fields.
pub struct RtpCapture {
    stop: Arc<AtomicBool>,
    packets: Arc<Mutex<Vec<RtpPacket>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtpCapture {
    /// Captures, on `lo`, RTP sent from a port in `from` to `to_port`.
    pub fn start(from: (u16, u16), to_port: u16) -> RtpCapture {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(0x0800u16.to_be()))),
        )
        .expect("AF_PACKET socket (root)");
        socket.bind_device(Some(b"lo")).expect("bind to lo");
        // Only unfragmented UDP to `to_port` reaches the socket: a busy
        // loopback (pages, bundles, other tests) must not fill its buffer
        // and drop the RTP the test counts.
        use socket2::SockFilter;
        let filter = [
            SockFilter::new(0x30, 0, 0, 9),                  // ldb [9] (protocol)
            SockFilter::new(0x15, 0, 6, 17),                 // jeq UDP
            SockFilter::new(0x28, 0, 0, 6),                  // ldh [6] (fragment)
            SockFilter::new(0x45, 4, 0, 0x1fff),             // jset offset: drop
            SockFilter::new(0xb1, 0, 0, 0),                  // ldxb 4*([0]&0xf)
            SockFilter::new(0x48, 0, 0, 2),                  // ldh [x+2] (dport)
            SockFilter::new(0x15, 0, 1, u32::from(to_port)), // jeq to_port
            SockFilter::new(0x06, 0, 0, 0xffff),             // accept
            SockFilter::new(0x06, 0, 0, 0),                  // drop
        ];
        socket
            .attach_filter(&filter)
            .expect("attach the capture filter");
        let _ = socket.set_recv_buffer_size(4 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, packets) = (stop.clone(), packets.clone());
            std::thread::spawn(move || {
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    let at_ms = kernel_stamp_ms(&socket);
                    // SAFETY: recv initialised the first n bytes.
                    let data: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if data.len() < 28 || data[9] != 17 {
                        continue;
                    }
                    let ihl = usize::from(data[0] & 0x0f) * 4;
                    let Some(udp) = data.get(ihl..) else { continue };
                    if udp.len() < 8 + 12 {
                        continue;
                    }
                    let sport = u16::from_be_bytes([udp[0], udp[1]]);
                    let dport = u16::from_be_bytes([udp[2], udp[3]]);
                    let rtp = &udp[8..];
                    if dport != to_port || !(from.0..=from.1).contains(&sport) || rtp[0] >> 6 != 2 {
                        continue;
                    }
                    let header = 12 + 4 * usize::from(rtp[0] & 0x0f);
                    let Some(payload) = rtp.get(header..) else {
                        continue;
                    };
                    packets.lock().unwrap().push(RtpPacket {
                        payload_type: rtp[1] & 0x7f,
                        marker: rtp[1] & 0x80 != 0,
                        seq: u16::from_be_bytes([rtp[2], rtp[3]]),
                        timestamp: u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]),
                        ssrc: u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]),
                        payload: payload.to_vec(),
                        at_ms,
                    });
                }
            })
        };
        RtpCapture {
            stop,
            packets,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<RtpPacket> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.packets.lock().unwrap())
    }
}

/// One DTMF event as RFC 4733 packets carried it: all packets with the same
/// RTP timestamp (and payload type) are one event.
#[derive(Debug, Clone, PartialEq)]
pub struct DtmfEvent {
    /// The digit (0-9, *, #, A-D), or '?' for another event code.
    pub digit: char,
    /// The largest duration field seen, in RTP clock units.
    pub duration: u16,
    /// Whether a packet with the E (end) bit arrived.
    pub ended: bool,
    /// Whether the first packet had the RTP marker bit.
    pub marker: bool,
    /// Packets carrying the event (including end retransmissions).
    pub packets: usize,
}

/// Groups the telephone-event packets (`payload_type`) into events, in order.
pub fn dtmf_events(packets: &[RtpPacket], payload_type: u8) -> Vec<DtmfEvent> {
    let mut events: Vec<(u32, DtmfEvent)> = Vec::new();
    for p in packets.iter().filter(|p| p.payload_type == payload_type) {
        if p.payload.len() < 4 {
            continue;
        }
        let digit = match p.payload[0] {
            e @ 0..=9 => char::from(b'0' + e),
            10 => '*',
            11 => '#',
            e @ 12..=15 => char::from(b'A' + e - 12),
            _ => '?',
        };
        let ended = p.payload[1] & 0x80 != 0;
        let duration = u16::from_be_bytes([p.payload[2], p.payload[3]]);
        match events.iter_mut().find(|(ts, _)| *ts == p.timestamp) {
            Some((_, e)) => {
                e.duration = e.duration.max(duration);
                e.ended |= ended;
                e.packets += 1;
            }
            None => events.push((
                p.timestamp,
                DtmfEvent {
                    digit,
                    duration,
                    ended,
                    marker: p.marker,
                    packets: 1,
                },
            )),
        }
    }
    events.into_iter().map(|(_, e)| e).collect()
}
