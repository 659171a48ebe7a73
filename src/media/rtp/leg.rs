//! The plain RTP leg: RTP/AVP over UDP for SIP phones and trunks.
//!
//! **Symmetric RTP and the latching rule.** A peer behind NAT sends from an
//! address that is not the one in its SDP; we answer to wherever its media
//! really comes from. To keep a stranger from taking the stream over
//! ("RTP bleed"), a datagram is accepted only:
//! 1. from the address we are latched to; or
//! 2. from the address the peer's SDP names (signalling is authoritative:
//!    we latch there at once, e.g. after a re-INVITE moved the media); or
//! 3. from a new address while the current one has been silent for
//!    `relatch_after` (default 1 s; always true before the first packet),
//!    and only after a probation of [`PROBATION`] packets in sequence with
//!    one SSRC from it (RFC 3550 A.1 style). Then we latch there.
//!
//! When a renegotiation moves the SDP address (the 2xx after early media
//! from an announcement server, a re-INVITE), we send there at once, and
//! follow the latch again from the next accepted packet.
//!
//! Everything else is dropped and counted in [`LegStats::dropped`]. RTCP is
//! accepted from the latched RTP address's IP (or the SDP's) and answered to
//! where it came from.
//!
//! **Continuity.** A new SSRC (a transfer, a re-INVITE to another media
//! server) restarts the peer's sequence numbers and timestamps; the room's
//! jitter buffer would see a jump. The leg remaps every source onto one
//! continuous stream: the first packet of a new SSRC continues at the last
//! sequence number + 1 and the last timestamp + the time since, in clock
//! units.
//!
//! **Timeout.** No RTP or RTCP from the peer for `media_timeout` closes the
//! leg ([`LegClosed::MediaTimeout`]), except while the peer does not send
//! (it put us on hold: `sendonly`/`inactive` from us, `recvonly` from it is
//! fine), when the timer is suspended.

use std::any::Any;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::header::{self, HEADER_LEN};
use super::rtcp::{self, ReceiverStats, SenderInfo};
use crate::media::leg::{Leg, LegClosed, LegIo, LegStats};
use crate::media::room::{FrameRef, InPacket};
use crate::media::sdp::{Direction, Negotiated};

/// Packets in sequence a new source must send before we latch to it.
pub const PROBATION: u8 = 2;

/// Settings of an RTP leg.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct RtpLegConfig {
    // Per-packet fields first (`repr(C)`): see `RtpLeg`.
    /// Where the peer's SDP says it receives RTP (`None`: nowhere yet).
    pub remote_rtp: Option<SocketAddr>,
    /// Silence of the latched source before another may take over.
    pub relatch_after: Duration,
    /// No media for this long closes the leg.
    pub media_timeout: Duration,
    /// Our SSRC.
    pub ssrc: u32,
    /// RTP clock rate of the codec (8000 for G.711/G.722, 48000 for Opus).
    pub clock_rate: u32,
    /// Our direction: we send only when it includes sending.
    pub local_direction: Direction,
    /// Whether the peer sends (its direction includes sending).
    pub peer_sends: bool,
    /// Where its SDP says it receives RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// Mean interval between our RTCP reports (randomized ±50 %).
    pub rtcp_interval: Duration,
    /// Our RTCP CNAME.
    pub cname: String,
}

impl RtpLegConfig {
    /// Settings from a negotiation, random SSRC.
    pub fn from_negotiated(neg: &Negotiated, media_timeout: Duration) -> Self {
        RtpLegConfig {
            remote_rtp: neg.remote_rtp,
            remote_rtcp: neg.remote_rtcp,
            local_direction: neg.local_direction,
            peer_sends: neg.remote_direction.sends(),
            clock_rate: neg.codec.kind.clock_rate(),
            media_timeout,
            relatch_after: Duration::from_secs(1),
            rtcp_interval: Duration::from_secs(5),
            ssrc: rand::random(),
            cname: format!("switchboard-{:08x}", rand::random::<u32>()),
        }
    }
}

/// Which source we take media from.
#[derive(Debug, Default)]
struct Latch {
    addr: Option<SocketAddr>,
    last_seen: Option<Instant>,
    /// A new source on probation: address, SSRC, expected next seq, count.
    candidate: Option<(SocketAddr, u32, u16, u8)>,
    /// The SDP moved the media: send to the SDP's address until media
    /// comes from there, from a new source (probation), or keeps coming
    /// from the old one for [`STALE_PACKETS`] packets (a NATed peer whose
    /// private address changed; an announcement's trailing packets do not
    /// take the stream back).
    stale: bool,
    stale_packets: u8,
    /// The last RTP address an SDP gave.
    sdp_addr: Option<SocketAddr>,
}

/// Packets from the old latched source that end [`Latch::stale`].
const STALE_PACKETS: u8 = 10;

/// Maps every incoming SSRC onto one continuous sequence/timestamp space.
#[derive(Debug, Default)]
struct Remap {
    ssrc: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
}

impl Remap {
    fn map(&mut self, ssrc: u32, seq: u16, ts: u32, now: Instant, clock: u32) -> (u16, u32) {
        if self.ssrc != Some(ssrc) {
            if let (Some(_), Some(at)) = (self.ssrc, self.last_at) {
                let frame = clock / 50;
                let elapsed = now.saturating_duration_since(at).as_millis() as u64;
                let ticks = ((elapsed * u64::from(clock) / 1000) as u32).max(frame);
                self.seq_offset = self.last_seq.wrapping_add(1).wrapping_sub(seq);
                self.ts_offset = self.last_ts.wrapping_add(ticks).wrapping_sub(ts);
            }
            self.ssrc = Some(ssrc);
            self.last_seq = seq.wrapping_add(self.seq_offset).wrapping_sub(1);
            self.last_ts = ts.wrapping_add(self.ts_offset);
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        let newer = out_seq.wrapping_sub(self.last_seq);
        if newer != 0 && newer < 0x8000 {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
            self.last_at = Some(now);
        }
        (out_seq, out_ts)
    }
}

/// A plain RTP/AVP leg. See the module documentation.
#[repr(C, align(64))]
pub struct RtpLeg {
    // What every packet reads or writes comes first (`repr(C)`), so a
    // packet touches the leg's first few cache lines only.
    closed: Option<LegClosed>,
    latch: Latch,
    created: Instant,
    last_heard: Instant,
    next_rtcp: Instant,
    last_sent_ts: Option<(u32, Instant)>,
    stats: LegStats,
    remap: Remap,
    rx: ReceiverStats,
    peer_ssrc: Option<u32>,
    out_seq: u16,
    cfg: RtpLegConfig,
    wallclock: SystemTime,
    rtcp_dest: Option<SocketAddr>,
    /// RTCP reports are built here (RTP goes out through `LegIo::transmit_parts`).
    tx: Vec<u8>,
}

impl RtpLeg {
    /// A leg created at `now`.
    pub fn new(cfg: RtpLegConfig, now: Instant) -> RtpLeg {
        let first_rtcp = now + cfg.rtcp_interval / 2;
        RtpLeg {
            rtcp_dest: cfg.remote_rtcp,
            created: now,
            wallclock: SystemTime::now(),
            latch: Latch {
                sdp_addr: cfg.remote_rtp,
                ..Latch::default()
            },
            remap: Remap::default(),
            rx: ReceiverStats::default(),
            peer_ssrc: None,
            stats: LegStats::default(),
            out_seq: rand::random(),
            last_sent_ts: None,
            last_heard: now,
            next_rtcp: first_rtcp,
            closed: None,
            tx: Vec::new(),
            cfg,
        }
    }

    /// Applies a renegotiation (re-INVITE, or the 2xx after an early
    /// answer): new SDP address, codec clock, directions. A new SDP address
    /// is where we send from now on (signalling is authoritative), until
    /// its media comes from elsewhere.
    pub fn update(&mut self, neg: &Negotiated, now: Instant) {
        let was_sending = self.cfg.peer_sends;
        // Moved: compared with the last address the SDP gave (a hold with
        // c=0.0.0.0 gives none; its resume moves nothing).
        if neg.remote_rtp.is_some() && neg.remote_rtp != self.latch.sdp_addr {
            if self.latch.sdp_addr.is_some() {
                self.latch.stale = true;
                self.latch.stale_packets = 0;
            }
            self.latch.sdp_addr = neg.remote_rtp;
        }
        self.cfg.clock_rate = neg.codec.kind.clock_rate();
        self.cfg.remote_rtp = neg.remote_rtp;
        self.cfg.remote_rtcp = neg.remote_rtcp;
        self.cfg.local_direction = neg.local_direction;
        self.cfg.peer_sends = neg.remote_direction.sends();
        if self.cfg.peer_sends && !was_sending {
            self.last_heard = now;
        }
        if self.rtcp_dest.is_none() {
            self.rtcp_dest = neg.remote_rtcp;
        }
    }

    /// Where we send RTP now: the latched source, else the SDP address.
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.latch.stale {
            return self.cfg.remote_rtp.or(self.latch.addr);
        }
        self.latch.addr.or(self.cfg.remote_rtp)
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.cfg.ssrc
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_millis() as u64
    }

    /// Rule 1–3 of the module documentation.
    fn accept(&mut self, from: SocketAddr, ssrc: u32, seq: u16, now: Instant) -> bool {
        let latch = &mut self.latch;
        if latch.addr == Some(from) || self.cfg.remote_rtp == Some(from) {
            latch.addr = Some(from);
            latch.last_seen = Some(now);
            latch.candidate = None;
            if latch.stale {
                latch.stale_packets = latch.stale_packets.saturating_add(1);
                if self.cfg.remote_rtp == Some(from) || latch.stale_packets >= STALE_PACKETS {
                    latch.stale = false;
                }
            }
            return true;
        }
        let silent = latch
            .last_seen
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.relatch_after);
        if !silent {
            return false;
        }
        let count = match latch.candidate {
            Some((addr, s, next, n)) if addr == from && s == ssrc && next == seq => n + 1,
            _ => 1,
        };
        if count >= PROBATION {
            latch.addr = Some(from);
            latch.last_seen = Some(now);
            latch.candidate = None;
            latch.stale = false;
            // RTCP follows the new source's IP unless the SDP says otherwise.
            if self.rtcp_dest.is_none_or(|d| d.ip() != from.ip()) {
                self.rtcp_dest = Some(SocketAddr::new(from.ip(), from.port().wrapping_add(1)));
            }
            true
        } else {
            latch.candidate = Some((from, ssrc, seq.wrapping_add(1), count));
            false
        }
    }

    fn on_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let known = self.latch.addr.map(|a| a.ip()) == Some(from.ip())
            || self.cfg.remote_rtcp.map(|a| a.ip()) == Some(from.ip())
            || self.cfg.remote_rtp.map(|a| a.ip()) == Some(from.ip());
        if !known {
            self.stats.dropped += 1;
            return;
        }
        self.rtcp_dest = Some(from);
        self.last_heard = now;
        let seen = rtcp::parse(data);
        if let Some(lsr) = seen.sender_report {
            self.rx.last_sr = lsr;
            self.rx.last_sr_at_ms = Some(self.ms(now));
        }
        // An RTCP BYE is not a hang-up for SIP peers (they send one when
        // they switch streams); signalling ends the call.
    }

    fn ntp(&self, now: Instant) -> u64 {
        let since = self
            .wallclock
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + now.saturating_duration_since(self.created);
        let secs = since.as_secs() + 2_208_988_800;
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }

    fn send_report(&mut self, now: Instant, io: &mut dyn LegIo) {
        let Some(dest) = self.rtcp_dest else { return };
        let sender = self.last_sent_ts.map(|(ts, at)| {
            let elapsed = now.saturating_duration_since(at).as_millis() as u64;
            SenderInfo {
                ntp: self.ntp(now),
                rtp_timestamp: ts
                    .wrapping_add((elapsed * u64::from(self.cfg.clock_rate) / 1000) as u32),
                packets: self.stats.packets_sent as u32,
                octets: self.stats.bytes_sent as u32,
            }
        });
        let now_ms = self.ms(now);
        let block = self
            .peer_ssrc
            .map(|ssrc| self.rx.report_block(ssrc, now_ms));
        rtcp::build_report(&mut self.tx, self.cfg.ssrc, sender, block, &self.cfg.cname);
        io.transmit_rtcp(dest, &self.tx);
    }

    fn timeout_at(&self) -> Option<Instant> {
        (self.cfg.peer_sends && self.closed.is_none())
            .then(|| self.last_heard + self.cfg.media_timeout)
    }
}

impl Leg for RtpLeg {
    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
        io: &mut dyn LegIo,
    ) {
        if self.closed.is_some() {
            return;
        }
        if header::is_rtcp(data) {
            return self.on_rtcp(now, from, data);
        }
        let Some(h) = header::parse(data) else {
            self.stats.dropped += 1;
            return;
        };
        // Our own SSRC coming back is accepted: media servers and test
        // peers that echo RTP (SIPp -rtp_echo) reflect packets unchanged,
        // and what the peer sends is what the caller must hear.
        if !self.accept(from, h.ssrc, h.seq, now) {
            // A source we do not trust.
            self.stats.dropped += 1;
            return;
        }
        self.last_heard = now;
        let (seq, timestamp) = self
            .remap
            .map(h.ssrc, h.seq, h.timestamp, now, self.cfg.clock_rate);
        let arrival = (self.ms(now) * u64::from(self.cfg.clock_rate) / 1000) as u32;
        self.rx.on_packet(seq, timestamp, arrival);
        self.peer_ssrc = Some(h.ssrc);
        let payload = &data[h.payload_start..h.payload_end];
        self.stats.packets_received += 1;
        self.stats.bytes_received += payload.len() as u64;
        self.stats.packets_lost = u64::from(self.rx.lost());
        io.media(InPacket {
            payload_type: h.payload_type,
            seq,
            timestamp,
            marker: h.marker,
            payload,
            audio_level: None,
        });
    }

    fn send_frame(&mut self, now: Instant, frame: FrameRef<'_>, io: &mut dyn LegIo) {
        if self.closed.is_some() || !self.cfg.local_direction.sends() {
            return;
        }
        let Some(dest) = self.destination() else {
            return;
        };
        let mut h = [0u8; HEADER_LEN];
        header::write(
            &mut h,
            frame.marker,
            frame.payload_type,
            self.out_seq,
            frame.timestamp,
            self.cfg.ssrc,
        );
        self.out_seq = self.out_seq.wrapping_add(1);
        io.transmit_parts(dest, &h, frame.payload());
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += frame.payload().len() as u64;
        self.last_sent_ts = Some((frame.timestamp, now));
    }

    fn handle_timeout(&mut self, now: Instant, io: &mut dyn LegIo) {
        if self.closed.is_some() {
            return;
        }
        if self.timeout_at().is_some_and(|t| now >= t) {
            self.closed = Some(LegClosed::MediaTimeout);
            return;
        }
        if now >= self.next_rtcp {
            self.send_report(now, io);
            // RFC 3550 §6.3.1: randomize over [0.5, 1.5] × the interval.
            let spread = self.cfg.rtcp_interval.as_millis() as u64;
            let jitter = u64::from(rand::random::<u16>()) * spread / 65_536;
            self.next_rtcp = now + Duration::from_millis(spread / 2 + jitter);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        Some(match self.timeout_at() {
            Some(t) => t.min(self.next_rtcp),
            None => self.next_rtcp,
        })
    }

    fn stats(&self) -> LegStats {
        self.stats
    }

    fn closed(&self) -> Option<LegClosed> {
        self.closed.clone()
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(self)
    }
}
