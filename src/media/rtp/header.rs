//! RTP fixed header (RFC 3550 §5.1): parse and write without allocating.
//!
//! Our own 40 lines instead of `rtc-rtp`'s `Packet::unmarshal`, which copies
//! the payload into a `Bytes` and the CSRCs/extensions into `Vec`s per
//! packet: here parsing returns offsets into the caller's buffer and writing
//! fills a 12-byte array.

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;

/// A parsed RTP header; the payload is `data[payload_start..payload_end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Where the payload starts (after CSRCs and the extension).
    pub payload_start: usize,
    /// Where it ends (before padding).
    pub payload_end: usize,
    /// RFC 6464 audio level (−dBov), when a one-byte extension with
    /// `audio_level_id` carried one.
    pub audio_level: Option<u8>,
}

/// Whether a datagram is RTCP rather than RTP (RFC 5761 §4: payload type
/// byte 192–223 is RTCP).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

/// Parses an RTP header. `None` for anything that is not RTP version 2 with
/// a consistent length. Never panics.
pub fn parse(data: &[u8]) -> Option<RtpHeader> {
    let b0 = *data.first()?;
    if data.len() < HEADER_LEN || b0 >> 6 != 2 {
        return None;
    }
    let b1 = data[1];
    let csrc = usize::from(b0 & 0x0f);
    let mut start = HEADER_LEN + 4 * csrc;
    if b0 & 0x10 != 0 {
        let ext = data.get(start..start + 4)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        start += 4 + 4 * words;
    }
    let mut end = data.len();
    if b0 & 0x20 != 0 {
        let pad = usize::from(*data.last()?);
        end = end.checked_sub(pad)?;
    }
    if start > end || pad_invalid(b0, data, start) {
        return None;
    }
    Some(RtpHeader {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        seq: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        payload_start: start,
        payload_end: end,
        audio_level: None,
    })
}

fn pad_invalid(b0: u8, data: &[u8], start: usize) -> bool {
    b0 & 0x20 != 0
        && data
            .last()
            .is_some_and(|&p| p == 0 || usize::from(p) > data.len() - start)
}

/// Writes a fixed header (no CSRC, no extension, no padding).
pub fn write(
    out: &mut [u8; HEADER_LEN],
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | (payload_type & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let mut h = [0u8; HEADER_LEN];
        write(&mut h, true, 8, 65535, 0xdead_beef, 0x0102_0304);
        let mut packet = h.to_vec();
        packet.extend_from_slice(&[0xd5; 160]);
        let p = parse(&packet).unwrap();
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.seq, p.timestamp, p.ssrc),
            (8, 65535, 0xdead_beef, 0x0102_0304)
        );
        assert_eq!((p.payload_start, p.payload_end), (12, 172));
        assert!(!is_rtcp(&packet));
    }

    #[test]
    fn csrc_extension_and_padding() {
        // V=2, P=1, X=1, CC=1
        let mut packet = vec![0xb1, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        packet.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x80, 0, 0]); // one-byte ext, 1 word
        packet.extend_from_slice(&[1, 2, 3]); // payload
        packet.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = parse(&packet).unwrap();
        assert_eq!(&packet[p.payload_start..p.payload_end], &[1, 2, 3]);
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        assert!(parse(&[]).is_none());
        assert!(parse(&[0x80; 11]).is_none());
        assert!(parse(&[0x40; 20]).is_none()); // version 1
        assert!(parse(&[0x8f; 20]).is_none()); // 15 CSRCs do not fit
        assert!(parse(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]).is_none());
        let mut padded = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 200];
        assert!(parse(&padded).is_none());
        padded[13] = 0;
        assert!(parse(&padded).is_none());
        let mut seed = 1u32;
        for len in 0..64 {
            for _ in 0..200 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect();
                if let Some(p) = parse(&data) {
                    assert!(p.payload_start <= p.payload_end && p.payload_end <= data.len());
                }
                let _ = is_rtcp(&data);
            }
        }
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
    }
}
