//! SDP (RFC 8866) and the offer/answer model (RFC 3264), sans-IO.
//!
//! [`SessionDescription::parse`] reads what real endpoints send (browsers,
//! SIP.js/JsSIP, Asterisk, carriers): lenient about line order, `\n` vs
//! `\r\n`, unknown line types and attributes (kept and written back), never
//! panicking on any input, with explicit size limits. [`negotiate`] answers
//! an offer from our capabilities and builds our own offers.
//!
//! Why our own parser and not `rtc-sdp` 0.21 (the `sdp` crate of webrtc-rs):
//! that one follows RFC 4566's strict line order (it refuses, e.g., an `a=`
//! line before `c=` inside a media section, which SIP devices do send), and
//! allocates a typed struct per attribute; signalling needs only the handful
//! of fields below, and a parser of ~200 lines is easy to keep panic-free
//! (a mutation test feeds it 20k broken inputs).

pub mod negotiate;
#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use thiserror::Error;

pub use negotiate::{
    Capabilities, Direction, LocalMedia, MediaTransport, Negotiated, NegotiationError,
    SessionOrigin, answer, build_offer, codecs_of, process_answer,
};

/// Lines accepted at most in one description.
pub const MAX_LINES: usize = 2048;
/// Media sections accepted at most.
pub const MAX_MEDIA: usize = 32;
/// Bytes accepted at most.
pub const MAX_SIZE: usize = 64 * 1024;

/// Why a description could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// Empty, or not starting with `v=0`.
    #[error("not an SDP description (must start with v=0)")]
    NotSdp,
    /// Larger than the limits ([`MAX_SIZE`], [`MAX_LINES`], [`MAX_MEDIA`]).
    #[error("SDP too large")]
    TooLarge,
    /// Not UTF-8.
    #[error("SDP is not UTF-8")]
    Encoding,
    /// A line we need is malformed.
    #[error("bad SDP {0} line: {1}")]
    BadLine(&'static str, String),
    /// A mandatory line is missing.
    #[error("SDP without {0} line")]
    Missing(&'static str),
}

/// `c=` connection data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// The address as written (an IP address, or rarely a host name; a
    /// multicast `/ttl` suffix is kept).
    pub address: String,
}

impl Connection {
    /// A connection line for `ip`.
    pub fn for_ip(ip: IpAddr) -> Self {
        Connection {
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            address: ip.to_string(),
        }
    }

    /// The address as an IP, when it is one (`None` for host names).
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self.address.split('/').next().unwrap_or_default();
        addr.parse().ok()
    }
}

/// `o=` origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Username (`-` when none).
    pub username: String,
    /// Session id (digits, kept as text: browsers use 64-bit values).
    pub session_id: String,
    /// Session version (incremented on each change, RFC 3264 §8).
    pub session_version: u64,
    /// Connection data of the origin.
    pub connection: Connection,
}

/// An `a=` line: `name` or `name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute name.
    pub name: String,
    /// Its value, if it has one.
    pub value: Option<String>,
}

impl Attribute {
    /// `a=name:value`.
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    /// `a=name` (a flag).
    pub fn flag(name: &str) -> Self {
        Attribute {
            name: name.into(),
            value: None,
        }
    }
}

/// One `a=rtpmap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written (compare case-insensitively).
    pub encoding: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels, when given.
    pub channels: Option<u16>,
}

/// An `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub media: String,
    /// Transport port (0: rejected or disabled stream).
    pub port: u16,
    /// `/<number of ports>`, rarely used.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `UDP/TLS/RTP/SAVPF`, ...
    pub protocol: String,
    /// Formats (payload type numbers for RTP).
    pub formats: Vec<String>,
    /// `c=` of this section.
    pub connection: Option<Connection>,
    /// `b=` lines, as written.
    pub bandwidths: Vec<String>,
    /// `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Other lines (`i=`, `k=`), kept: (type letter, value).
    pub other: Vec<(char, String)>,
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`.
    pub origin: Origin,
    /// `s=` (`-` when the sender has nothing to say).
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<Connection>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<String>,
    /// `t=` lines (usually `0 0`).
    pub timing: Vec<String>,
    /// Session-level `a=` lines.
    pub attributes: Vec<Attribute>,
    /// Other session-level lines (`i=`, `u=`, `e=`, `p=`, `r=`, `z=`, `k=`).
    pub other: Vec<(char, String)>,
    /// The media sections, in order.
    pub media: Vec<MediaDescription>,
}

fn find<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

impl MediaDescription {
    /// The first attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find(&self.attributes, name)
    }

    /// The value of the first attribute named `name`.
    pub fn attribute_value(&self, name: &str) -> Option<&str> {
        self.attribute(name).and_then(|a| a.value.as_deref())
    }

    /// Every `a=rtpmap` that parses.
    pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap> + '_ {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("rtpmap"))
            .filter_map(|a| parse_rtpmap(a.value.as_deref()?))
    }

    /// The rtpmap of one payload type.
    pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
        self.rtpmaps().find(|m| m.payload_type == payload_type)
    }

    /// The `a=fmtp` parameters of one payload type.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("fmtp"))
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
                (pt.trim().parse::<u8>().ok() == Some(payload_type)).then_some(params.trim())
            })
    }

    /// The payload types of the `m=` line, those that are numbers.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }

    /// `a=ptime`, ms.
    pub fn ptime(&self) -> Option<u32> {
        self.attribute_value("ptime")?.trim().parse().ok()
    }

    /// The direction attribute of this section, if any.
    pub fn direction_attribute(&self) -> Option<Direction> {
        self.attributes
            .iter()
            .find_map(|a| Direction::from_attribute(&a.name))
    }

    /// `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605).
    pub fn rtcp(&self) -> Option<(u16, Option<IpAddr>)> {
        let value = self.attribute_value("rtcp")?;
        let mut parts = value.split_whitespace();
        let port = parts.next()?.parse().ok()?;
        let addr = parts.nth(2).and_then(|a| a.parse().ok());
        Some((port, addr))
    }
}

impl SessionDescription {
    /// The first session-level attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find(&self.attributes, name)
    }

    /// The direction of media section `index`: its own attribute, else the
    /// session's, else `sendrecv` (RFC 3264 §5.1).
    pub fn direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(MediaDescription::direction_attribute)
            .or_else(|| {
                self.attributes
                    .iter()
                    .find_map(|a| Direction::from_attribute(&a.name))
            })
            .unwrap_or(Direction::SendRecv)
    }

    /// The connection address that applies to media section `index`.
    pub fn connection_for(&self, index: usize) -> Option<&Connection> {
        self.media
            .get(index)
            .and_then(|m| m.connection.as_ref())
            .or(self.connection.as_ref())
    }

    /// Parses a description. Lenient (see the module documentation), bounded,
    /// never panics.
    pub fn parse(input: &[u8]) -> Result<SessionDescription, SdpError> {
        if input.len() > MAX_SIZE {
            return Err(SdpError::TooLarge);
        }
        let text = std::str::from_utf8(input).map_err(|_| SdpError::Encoding)?;
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.trim().is_empty());
        match lines.next() {
            Some(first) if first.trim() == "v=0" => {}
            _ => return Err(SdpError::NotSdp),
        }
        let mut origin = None;
        let mut sd = SessionDescription {
            origin: Origin {
                username: "-".into(),
                session_id: "0".into(),
                session_version: 0,
                connection: Connection::for_ip(IpAddr::from([0, 0, 0, 0])),
            },
            session_name: "-".into(),
            connection: None,
            bandwidths: Vec::new(),
            timing: Vec::new(),
            attributes: Vec::new(),
            other: Vec::new(),
            media: Vec::new(),
        };
        for (count, line) in lines.enumerate() {
            if count >= MAX_LINES {
                return Err(SdpError::TooLarge);
            }
            let mut chars = line.chars();
            let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
                // Not `x=...`: tolerated and dropped (some devices pad with junk).
                continue;
            };
            let value = chars.as_str();
            let in_media = !sd.media.is_empty();
            match kind {
                'm' => {
                    if sd.media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooLarge);
                    }
                    sd.media.push(parse_media(value)?);
                }
                'o' if !in_media => origin = Some(parse_origin(value)?),
                's' if !in_media => sd.session_name = value.to_string(),
                't' if !in_media => sd.timing.push(value.to_string()),
                'c' => {
                    let c = parse_connection(value)?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(c),
                        None => sd.connection = Some(c),
                    }
                }
                'b' => match sd.media.last_mut() {
                    Some(m) => m.bandwidths.push(value.to_string()),
                    None => sd.bandwidths.push(value.to_string()),
                },
                'a' => {
                    let attr = parse_attribute(value);
                    match sd.media.last_mut() {
                        Some(m) => m.attributes.push(attr),
                        None => sd.attributes.push(attr),
                    }
                }
                'v' => {}
                other => match sd.media.last_mut() {
                    Some(m) => m.other.push((other, value.to_string())),
                    None => sd.other.push((other, value.to_string())),
                },
            }
        }
        sd.origin = origin.ok_or(SdpError::Missing("o="))?;
        if sd.timing.is_empty() {
            sd.timing.push("0 0".into());
        }
        Ok(sd)
    }
}

fn parse_origin(value: &str) -> Result<Origin, SdpError> {
    let bad = || SdpError::BadLine("o=", value.chars().take(80).collect());
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [username, session_id, version, _net, addr_type, address] = parts.as_slice() else {
        return Err(bad());
    };
    Ok(Origin {
        username: username.to_string(),
        session_id: session_id.to_string(),
        // Some devices send versions beyond u64 or with junk: read what we can.
        session_version: version.parse().unwrap_or(0),
        connection: Connection {
            addr_type: addr_type.to_string(),
            address: address.to_string(),
        },
    })
}

fn parse_connection(value: &str) -> Result<Connection, SdpError> {
    let mut parts = value.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_net), Some(addr_type), Some(address)) => Ok(Connection {
            addr_type: addr_type.to_string(),
            address: address.to_string(),
        }),
        _ => Err(SdpError::BadLine("c=", value.chars().take(80).collect())),
    }
}

fn parse_media(value: &str) -> Result<MediaDescription, SdpError> {
    let bad = || SdpError::BadLine("m=", value.chars().take(80).collect());
    let mut parts = value.split_whitespace();
    let media = parts.next().ok_or_else(bad)?.to_string();
    let port_text = parts.next().ok_or_else(bad)?;
    let (port, port_count) = match port_text.split_once('/') {
        Some((p, n)) => (p, Some(n.parse().map_err(|_| bad())?)),
        None => (port_text, None),
    };
    let port = port.parse().map_err(|_| bad())?;
    let protocol = parts.next().ok_or_else(bad)?.to_string();
    let formats: Vec<String> = parts.take(256).map(str::to_string).collect();
    Ok(MediaDescription {
        media,
        port,
        port_count,
        protocol,
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, v)) => Attribute {
            name: name.trim().to_string(),
            value: Some(v.to_string()),
        },
        None => Attribute {
            name: value.trim().to_string(),
            value: None,
        },
    }
}

/// Parses an rtpmap value: `<pt> <encoding>/<clock>[/<channels>]`.
pub fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.trim().split_once(' ')?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.trim().to_string();
    let clock_rate = parts.next()?.trim().parse().ok()?;
    let channels = parts.next().and_then(|c| c.trim().parse().ok());
    Some(RtpMap {
        payload_type: pt.parse().ok()?,
        encoding,
        clock_rate,
        channels,
    })
}

fn write_attrs(f: &mut fmt::Formatter<'_>, attrs: &[Attribute]) -> fmt::Result {
    for a in attrs {
        match &a.value {
            Some(v) => write!(f, "a={}:{}\r\n", a.name, v)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IN {} {}", self.addr_type, self.address)
    }
}

impl fmt::Display for SessionDescription {
    /// Serializes with CRLF line ends in RFC 8866 order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(
            f,
            "v=0\r\no={} {} {} {}\r\ns={}\r\n",
            o.username, o.session_id, o.session_version, o.connection, self.session_name
        )?;
        for (k, v) in self.other.iter().filter(|(k, _)| "iuep".contains(*k)) {
            write!(f, "{k}={v}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        for t in &self.timing {
            write!(f, "t={t}\r\n")?;
        }
        for (k, v) in self.other.iter().filter(|(k, _)| !"iuep".contains(*k)) {
            write!(f, "{k}={v}\r\n")?;
        }
        write_attrs(f, &self.attributes)?;
        for m in &self.media {
            let mut line = format!("{} {}", m.media, m.port);
            if let Some(n) = m.port_count {
                let _ = write!(line, "/{n}");
            }
            let _ = write!(line, " {}", m.protocol);
            for fmt in &m.formats {
                let _ = write!(line, " {fmt}");
            }
            write!(f, "m={line}\r\n")?;
            for (k, v) in m.other.iter().filter(|(k, _)| *k == 'i') {
                write!(f, "{k}={v}\r\n")?;
            }
            if let Some(c) = &m.connection {
                write!(f, "c={c}\r\n")?;
            }
            for b in &m.bandwidths {
                write!(f, "b={b}\r\n")?;
            }
            for (k, v) in m.other.iter().filter(|(k, _)| *k != 'i') {
                write!(f, "{k}={v}\r\n")?;
            }
            write_attrs(f, &m.attributes)?;
        }
        Ok(())
    }
}
