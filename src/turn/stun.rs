//! The STUN message codec (RFC 8489 §5–§14) with the TURN attributes of
//! RFC 8656 §18, and the ChannelData framing of RFC 8656 §12.4.
//!
//! Parsing is zero-copy: a [`Message`] borrows the datagram and attribute
//! values are slices of it. Building writes into one `Vec` ([`Builder`]).
//! Nothing here allocates per attribute, so a Send indication costs one pass
//! over its bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use md5::Digest as _;

/// The fixed magic cookie of RFC 5389 and later.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// XOR mask of FINGERPRINT ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// STUN and TURN methods.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656 §7).
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh (RFC 8656 §8).
    pub const REFRESH: u16 = 0x004;
    /// Send indication (RFC 8656 §11).
    pub const SEND: u16 = 0x006;
    /// Data indication (RFC 8656 §11).
    pub const DATA: u16 = 0x007;
    /// CreatePermission (RFC 8656 §10).
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind (RFC 8656 §12).
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types we read or write.
pub mod attr {
    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// PADDING (RFC 5780).
    pub const PADDING: u16 = 0x0026;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request.
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than a header, or than its length field says.
    #[error("truncated STUN message")]
    Truncated,
    /// Not STUN (first bits, magic cookie or alignment).
    #[error("not a STUN message")]
    NotStun,
    /// An attribute runs past the end of the message.
    #[error("malformed STUN attribute")]
    BadAttribute,
}

/// A parsed STUN message borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    /// The method (12 bits).
    pub method: u16,
    /// The class.
    pub class: Class,
    /// The transaction id.
    pub transaction: [u8; 12],
}

/// The type field for `method` and `class` (RFC 8489 §5).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

impl<'a> Message<'a> {
    /// Parses exactly one message occupying all of `raw`.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        if raw.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let typ = u16::from_be_bytes([raw[0], raw[1]]);
        let len = u16::from_be_bytes([raw[2], raw[3]]) as usize;
        let cookie = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if typ & 0xC000 != 0 || cookie != MAGIC_COOKIE || !len.is_multiple_of(4) {
            return Err(ParseError::NotStun);
        }
        if raw.len() != HEADER_LEN + len {
            return Err(ParseError::Truncated);
        }
        let method = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2);
        let class = match ((typ >> 4) & 1) | ((typ >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&raw[8..20]);
        let message = Message {
            raw,
            method,
            class,
            transaction,
        };
        // Validate the attribute layout once, so later walks cannot fail.
        let mut offset = HEADER_LEN;
        while offset < raw.len() {
            if offset + 4 > raw.len() {
                return Err(ParseError::BadAttribute);
            }
            let alen = u16::from_be_bytes([raw[offset + 2], raw[offset + 3]]) as usize;
            let next = offset + 4 + padded(alen);
            if next > raw.len() {
                return Err(ParseError::BadAttribute);
            }
            offset = next;
        }
        Ok(message)
    }

    /// The message's bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Every attribute as (type, value, offset of its header), in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            raw: self.raw,
            offset: HEADER_LEN,
        }
    }

    /// The first attribute of `typ` that precedes MESSAGE-INTEGRITY
    /// (attributes after it are ignored, RFC 8489 §14.5), or FINGERPRINT.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        for (t, value, _) in self.attributes() {
            if t == typ {
                return Some(value);
            }
            if t == attr::MESSAGE_INTEGRITY && typ != attr::FINGERPRINT {
                return None;
            }
        }
        None
    }

    /// Every value of a repeatable attribute (XOR-PEER-ADDRESS).
    pub fn get_all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attributes()
            .take_while(|(t, _, _)| *t != attr::MESSAGE_INTEGRITY)
            .filter(move |(t, _, _)| *t == typ)
            .map(|(_, v, _)| v)
    }

    /// A UTF-8 text attribute.
    pub fn text(&self, typ: u16) -> Option<&'a str> {
        self.get(typ).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn u32(&self, typ: u16) -> Option<u32> {
        let v = self.get(typ)?;
        (v.len() == 4).then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    /// An XOR-encoded address attribute.
    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(typ)?, &self.transaction)
    }

    /// Whether a FINGERPRINT, if present, is correct (a wrong one means the
    /// datagram is not STUN meant for us and must be dropped).
    pub fn fingerprint_ok(&self) -> bool {
        for (t, value, offset) in self.attributes() {
            if t == attr::FINGERPRINT {
                if value.len() != 4 {
                    return false;
                }
                let expected = crc32(&self.raw[..offset]) ^ FINGERPRINT_XOR;
                return value == expected.to_be_bytes();
            }
        }
        true
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`. `None` when the
    /// message has none.
    pub fn integrity_ok(&self, key: &[u8]) -> Option<bool> {
        let (value, offset) = self
            .attributes()
            .find(|(t, _, _)| *t == attr::MESSAGE_INTEGRITY)
            .map(|(_, v, o)| (v, o))?;
        if value.len() != 20 {
            return Some(false);
        }
        let mac = hmac_sha1_with_length(key, &self.raw[..offset], offset + 24 - HEADER_LEN);
        Some(subtle::ConstantTimeEq::ct_eq(&mac[..], value).into())
    }

    /// Comprehension-required attributes (type < 0x8000) not in `known`,
    /// before MESSAGE-INTEGRITY.
    pub fn unknown_required(&self, known: &[u16]) -> Vec<u16> {
        self.attributes()
            .take_while(|(t, _, _)| *t != attr::MESSAGE_INTEGRITY)
            .map(|(t, _, _)| t)
            .filter(|t| *t < 0x8000 && !known.contains(t))
            .collect()
    }
}

/// Iterator over a message's attributes.
pub struct Attributes<'a> {
    raw: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8], usize);
    fn next(&mut self) -> Option<Self::Item> {
        let o = self.offset;
        if o + 4 > self.raw.len() {
            return None;
        }
        let typ = u16::from_be_bytes([self.raw[o], self.raw[o + 1]]);
        let len = u16::from_be_bytes([self.raw[o + 2], self.raw[o + 3]]) as usize;
        let end = (o + 4 + len).min(self.raw.len());
        self.offset = o + 4 + padded(len);
        Some((typ, &self.raw[o + 4..end], o))
    }
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

fn hmac_sha1_with_length(key: &[u8], prefix: &[u8], length: usize) -> [u8; 20] {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&prefix[..2]);
    mac.update(&(length as u16).to_be_bytes());
    mac.update(&prefix[4..]);
    mac.finalize().into_bytes().into()
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = md5::Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// Decodes an XOR-MAPPED/PEER/RELAYED-ADDRESS value.
pub fn decode_xor_address(v: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (v[1], v.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            for i in 0..16 {
                let mask = if i < 4 { cookie[i] } else { transaction[i - 4] };
                ip[i] = v[4 + i] ^ mask;
            }
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    }
}

/// Builds one STUN message into a `Vec`.
pub struct Builder {
    buf: Vec<u8>,
    transaction: [u8; 12],
}

impl Builder {
    /// Starts a message with room for `capacity` bytes of attributes.
    pub fn new(method: u16, class: Class, transaction: [u8; 12], capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction);
        Builder { buf, transaction }
    }

    /// Appends an attribute (padded to 4 bytes).
    pub fn add(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = padded(value.len()) - value.len();
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.set_length();
        self
    }

    /// Appends a 32-bit attribute.
    pub fn add_u32(&mut self, typ: u16, value: u32) -> &mut Self {
        self.add(typ, &value.to_be_bytes())
    }

    /// Appends a plain (non-XOR) address attribute (MAPPED-ADDRESS, RESPONSE-ORIGIN).
    pub fn add_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&addr.port().to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 0x01;
                v[4..8].copy_from_slice(&ip.octets());
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 0x02;
                v[4..20].copy_from_slice(&ip.octets());
                20
            }
        };
        self.add(typ, &v[..len])
    }

    /// Appends an XOR-encoded address attribute.
    pub fn add_xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let cookie = MAGIC_COOKIE.to_be_bytes();
        v[2..4].copy_from_slice(&(addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 0x01;
                for (i, b) in ip.octets().iter().enumerate() {
                    v[4 + i] = b ^ cookie[i];
                }
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 0x02;
                for (i, b) in ip.octets().iter().enumerate() {
                    let mask = if i < 4 {
                        cookie[i]
                    } else {
                        self.transaction[i - 4]
                    };
                    v[4 + i] = b ^ mask;
                }
                20
            }
        };
        self.add(typ, &v[..len])
    }

    /// Appends ERROR-CODE with `code` (300–699) and its reason phrase.
    pub fn add_error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.add(attr::ERROR_CODE, &v)
    }

    fn set_length(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends MESSAGE-INTEGRITY with `key`.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let length = self.buf.len() + 24 - HEADER_LEN;
        let mac = hmac_sha1_with_length(key, &self.buf, length);
        self.add(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// Appends FINGERPRINT and returns the message.
    pub fn fingerprint(mut self) -> Vec<u8> {
        let length = self.buf.len() + 8 - HEADER_LEN;
        self.buf[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        let crc = crc32(&self.buf) ^ FINGERPRINT_XOR;
        self.add_u32(attr::FINGERPRINT, crc);
        self.buf
    }

    /// The message without FINGERPRINT.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Whether the first bytes are a ChannelData header (first two bits 01).
pub fn is_channel_data(b: &[u8]) -> bool {
    b.first().is_some_and(|b| b & 0xC0 == 0x40)
}

/// Parses a ChannelData message: (channel number, payload). Over UDP the
/// datagram may carry padding after the payload.
pub fn parse_channel_data(b: &[u8]) -> Option<(u16, &[u8])> {
    if b.len() < 4 {
        return None;
    }
    let channel = u16::from_be_bytes([b[0], b[1]]);
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    if !(0x4000..=0x7FFF).contains(&channel) || b.len() < 4 + len {
        return None;
    }
    Some((channel, &b[4..4 + len]))
}

/// The length of the first complete STUN or ChannelData frame in a stream
/// buffer (ChannelData padded to 4 bytes, RFC 8656 §12.5), `Ok(None)` when
/// more bytes are needed, or an error when the stream is not TURN.
pub fn stream_frame_len(b: &[u8]) -> Result<Option<usize>, ParseError> {
    if b.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let total = match b[0] & 0xC0 {
        0x00 => HEADER_LEN + len,
        0x40 => 4 + padded(len),
        _ => return Err(ParseError::NotStun),
    };
    Ok((b.len() >= total).then_some(total))
}

/// CRC-32 (IEEE 802.3), as FINGERPRINT needs.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5769 §2.1: sample request with short-term integrity and fingerprint.
    #[test]
    fn rfc5769_request_vector() {
        let raw = hex("000100582112a442b7e7a701bc34d686fa87dfae\
            802200105354554e207465737420636c69656e74\
            002400046e0001ff\
            80290008932ff9b151263b36\
            000600096576746a3a68367659202020\
            000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
            80280004e57a3bcf");
        let m = Message::parse(&raw).unwrap();
        assert_eq!((m.method, m.class), (method::BINDING, Class::Request));
        assert_eq!(m.text(attr::USERNAME), Some("evtj:h6vY"));
        assert!(m.fingerprint_ok());
        assert_eq!(m.integrity_ok(b"VOkJxbRl1RmTxUk/WvJxBt"), Some(true));
        assert_eq!(m.integrity_ok(b"wrong"), Some(false));
    }

    /// RFC 5769 §2.2: IPv4 response with XOR-MAPPED-ADDRESS.
    #[test]
    fn rfc5769_ipv4_response_vector() {
        let raw = hex("0101003c2112a442b7e7a701bc34d686fa87dfae\
            8022000b7465737420766563746f7220\
            002000080001a147e112a643\
            000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
            80280004c07d4c96");
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.class, Class::Success);
        assert_eq!(
            m.xor_address(attr::XOR_MAPPED_ADDRESS),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(m.fingerprint_ok());
        assert_eq!(m.integrity_ok(b"VOkJxbRl1RmTxUk/WvJxBt"), Some(true));
        // Rebuilding it byte for byte proves the builder's XOR, integrity and fingerprint.
        let mut b = Builder::new(method::BINDING, Class::Success, m.transaction, 64);
        b.add(attr::SOFTWARE, b"test vector");
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap());
        b.integrity(b"VOkJxbRl1RmTxUk/WvJxBt");
        let mut built = b.fingerprint();
        // The vector pads SOFTWARE with a space (0x20); we pad with zeros.
        built[20 + 4 + 11] = 0x20;
        assert_eq!(built.len(), raw.len());
        assert_eq!(&built[..raw.len() - 32], &raw[..raw.len() - 32]);
    }

    /// RFC 5769 §2.3: IPv6 response.
    #[test]
    fn rfc5769_ipv6_response_vector() {
        let raw = hex("010100482112a442b7e7a701bc34d686fa87dfae\
            8022000b7465737420766563746f7220\
            002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9\
            00080014a382954e4be67bf11784c97c8292c275bfe3ed41\
            80280004c8fb0b4c");
        let m = Message::parse(&raw).unwrap();
        assert_eq!(
            m.xor_address(attr::XOR_MAPPED_ADDRESS),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert!(m.fingerprint_ok());
        assert_eq!(m.integrity_ok(b"VOkJxbRl1RmTxUk/WvJxBt"), Some(true));
    }

    /// RFC 5769 §2.4: long-term credentials (key = MD5(user:realm:pass)).
    #[test]
    fn rfc5769_long_term_vector() {
        let raw = hex("000100602112a44278ad3433c6ad72c029da412e\
            00060012e3839ee38388e383aae38383e382afe382b90000\
            0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f726700\
            00080014f67024656dd64a3e02b8e0712e85c9a28ca89666");
        let m = Message::parse(&raw).unwrap();
        let user = m.text(attr::USERNAME).unwrap();
        let realm = m.text(attr::REALM).unwrap();
        assert_eq!(realm, "example.org");
        let key = long_term_key(user, realm, "TheMatrIX");
        assert_eq!(m.integrity_ok(&key), Some(true));
    }

    #[test]
    fn malformed_input_is_refused_without_panic() {
        assert_eq!(
            Message::parse(&[0u8; 4]).unwrap_err(),
            ParseError::Truncated
        );
        let mut raw = Builder::new(method::BINDING, Class::Request, [7; 12], 8)
            .add_u32(attr::LIFETIME, 5)
            .buf
            .clone();
        raw[22] = 0; // attribute length 0x0004 -> 0x0000.. still valid
        raw[23] = 200; // now runs past the end
        assert_eq!(Message::parse(&raw).unwrap_err(), ParseError::BadAttribute);
        raw[4] = 0; // cookie
        assert_eq!(Message::parse(&raw).unwrap_err(), ParseError::NotStun);
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = Message::parse(&junk);
            let _ = parse_channel_data(&junk);
            let _ = stream_frame_len(&junk);
        }
    }

    #[test]
    fn channel_data_framing() {
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0, 2, 9, 8, 0, 0]),
            Some((0x4000, &[9u8, 8][..]))
        );
        assert_eq!(parse_channel_data(&[0x40, 0x00, 0, 5, 1]), None);
        assert_eq!(stream_frame_len(&[0x40, 0x01, 0, 5, 1]), Ok(None));
        assert_eq!(
            stream_frame_len(&[0x40, 0x01, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]),
            Ok(Some(12))
        );
        assert_eq!(stream_frame_len(&[0xff, 0, 0, 0]), Err(ParseError::NotStun));
    }

    #[test]
    fn type_bits_round_trip() {
        assert_eq!(message_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
        for m in [1u16, 3, 4, 6, 7, 8, 9, 0xABC] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let b = Builder::new(m, c, [1; 12], 0).finish();
                let p = Message::parse(&b).unwrap();
                assert_eq!((p.method, p.class), (m, c));
            }
        }
    }
}
