//! RTCP (RFC 3550 §6) as far as a media server needs it: receiver
//! statistics (§6.4.1, appendix A.3/A.8), building compound SR/RR + SDES
//! CNAME reports into a reused buffer, and reading the peer's SR (for
//! LSR/DLSR) and BYE.

/// One RTCP packet type.
pub const SR: u8 = 200;
/// Receiver report.
pub const RR: u8 = 201;
/// Source description.
pub const SDES: u8 = 202;
/// Goodbye.
pub const BYE: u8 = 203;

/// Reception statistics of the stream we receive (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Interarrival jitter, in timestamp units × 16 (A.8).
    jitter_q4: u32,
    last_transit: Option<i64>,
    /// Middle 32 bits of the NTP time of the last SR received.
    pub last_sr: u32,
    /// When that SR arrived, in ms of the leg's clock.
    pub last_sr_at_ms: Option<u64>,
}

impl ReceiverStats {
    /// Counts one packet: its (remapped) sequence number, its timestamp and
    /// its arrival time in timestamp units.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, arrival_ts: u32) {
        if !self.started {
            self.started = true;
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received = self.received.wrapping_add(1);
        let transit = i64::from(arrival_ts) - i64::from(timestamp);
        if let Some(last) = self.last_transit {
            // Wrap-safe difference of two 32-bit clocks.
            let d = ((transit - last) as i32).unsigned_abs();
            let j = self.jitter_q4 as i64 + i64::from(d) - ((i64::from(self.jitter_q4) + 8) >> 4);
            self.jitter_q4 = j.clamp(0, i64::from(u32::MAX)) as u32;
        }
        self.last_transit = Some(transit);
    }

    /// Packets received.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets lost so far (never negative: duplicates do not count).
    pub fn lost(&self) -> u32 {
        if !self.started {
            return 0;
        }
        let expected = self
            .extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1);
        expected.saturating_sub(self.received)
    }

    /// A report block body for the peer's `ssrc` (fraction lost since the
    /// last call, cumulative lost, highest seq, jitter, LSR, DLSR).
    pub fn report_block(&mut self, ssrc: u32, now_ms: u64) -> [u8; 24] {
        let expected = self
            .extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = (u64::from(lost_interval) << 8)
            .checked_div(u64::from(expected_interval))
            .map_or(0, |f| f.min(255) as u8);
        let lost = self.lost().min(0x7f_ffff);
        let dlsr = match self.last_sr_at_ms {
            Some(at) => ((now_ms.saturating_sub(at)) * 65536 / 1000) as u32,
            None => 0,
        };
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&ssrc.to_be_bytes());
        b[4] = fraction;
        b[5..8].copy_from_slice(&lost.to_be_bytes()[1..4]);
        b[8..12].copy_from_slice(&self.extended_max().to_be_bytes());
        b[12..16].copy_from_slice(&(self.jitter_q4 >> 4).to_be_bytes());
        b[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        b[20..24].copy_from_slice(&dlsr.to_be_bytes());
        b
    }
}

/// What we sent, for the sender report.
#[derive(Debug, Clone, Copy)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit fixed point) of now.
    pub ntp: u64,
    /// The RTP timestamp that corresponds to now.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// Builds a compound RTCP packet into `out` (cleared first): an SR when
/// `sender` is given, else an RR, with at most one report block, then SDES
/// with our CNAME.
pub fn build_report(
    out: &mut Vec<u8>,
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<[u8; 24]>,
    cname: &str,
) {
    out.clear();
    let count = u8::from(block.is_some());
    let words = match sender {
        Some(_) => 6 + 6 * usize::from(count),
        None => 1 + 6 * usize::from(count),
    };
    out.push(0x80 | count);
    out.push(if sender.is_some() { SR } else { RR });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b);
    }
    // SDES: one chunk, CNAME, END, padded to a word.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + name.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    out.push(0x81);
    out.push(SDES);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + (padded - chunk) + 1, 0);
}

/// What a received compound packet told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Middle 32 bits of the NTP time of an SR in it.
    pub sender_report: Option<u32>,
    /// It contained a BYE.
    pub bye: bool,
}

/// Walks a compound RTCP packet. Malformed parts end the walk; never panics.
pub fn parse(data: &[u8]) -> Received {
    let mut seen = Received::default();
    let mut rest = data;
    while rest.len() >= 4 && rest[0] >> 6 == 2 {
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let Some(packet) = rest.get(..len) else { break };
        match packet[1] {
            SR if packet.len() >= 28 => {
                let ntp = u64::from_be_bytes(packet[8..16].try_into().unwrap_or([0; 8]));
                seen.sender_report = Some((ntp >> 16) as u32);
            }
            BYE => seen.bye = true,
            _ => {}
        }
        rest = &rest[len..];
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_stats_count_loss_and_wrap() {
        let mut s = ReceiverStats::default();
        for seq in (65_530u16..=65_535).chain(0..10).filter(|&s| s != 3) {
            s.on_packet(seq, 0, 0);
        }
        assert_eq!(s.extended_max(), 65_536 + 9);
        assert_eq!(s.lost(), 1);
        let b = s.report_block(7, 0);
        assert_eq!(&b[0..4], &7u32.to_be_bytes());
        assert_eq!(b[4], 16); // 1 of 16 lost = 1/16 * 256
        assert_eq!(&b[5..8], &[0, 0, 1]);
    }

    #[test]
    fn jitter_grows_with_uneven_arrival() {
        let mut s = ReceiverStats::default();
        for i in 0..100u32 {
            let wobble = if i % 2 == 0 { 0 } else { 80 };
            s.on_packet(i as u16, i * 160, i * 160 + wobble);
        }
        let b = s.report_block(1, 0);
        let jitter = u32::from_be_bytes(b[12..16].try_into().unwrap());
        assert!((60..=90).contains(&jitter), "{jitter}");
    }

    #[test]
    fn reports_are_well_formed_and_parse_back() {
        let mut out = Vec::new();
        let sender = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_timestamp: 1,
            packets: 2,
            octets: 3,
        };
        build_report(&mut out, 42, Some(sender), Some([0; 24]), "sb@host");
        assert_eq!(out.len() % 4, 0);
        assert_eq!(out[1], SR);
        let first = (usize::from(u16::from_be_bytes([out[2], out[3]])) + 1) * 4;
        assert_eq!(first, 52);
        assert_eq!(out[first + 1], SDES);
        assert_eq!(parse(&out).sender_report, Some(0x0304_0506));
        build_report(&mut out, 42, None, None, "x");
        assert_eq!(out[1], RR);
        assert_eq!(out.len() % 4, 0);
        assert_eq!(parse(&out), Received::default());
        assert!(parse(&[0x81, BYE, 0, 1, 0, 0, 0, 1]).bye);
        for len in 0..40 {
            let _ = parse(&vec![0x80; len]);
        }
    }
}
