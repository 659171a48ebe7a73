//! The offer/answer model (RFC 3264) for audio: answering an offer from our
//! capabilities, building our own offers, and reading the answer to one.
//!
//! Rules, in short:
//! - The answer has as many `m=` lines as the offer, in the same order
//!   (§6). We accept the first audio stream that is RTP/AVP(F) with a port
//!   and a codec in common; every other stream is refused with port 0.
//! - Codec: the first of *our* preferences that the offer lists. We answer
//!   exactly one codec (plus telephone-event): a participant has one codec
//!   for the life of its room, so the peer must not switch mid-call.
//!   Dynamic payload types are answered with the offerer's numbers (§6.1).
//! - telephone-event: the offered one at the codec's clock rate (8000 next
//!   to G.711/G.722, 48000 next to Opus), else any offered one.
//! - Direction (§6.1): sendonly ↔ recvonly, inactive → inactive,
//!   sendrecv → sendrecv. `c=0.0.0.0` (RFC 2543 hold) counts as sendonly.
//! - RTCP: on port+1 (no rtcp-mux for RTP/AVP); the peer's `a=rtcp`
//!   (RFC 3605) is honoured.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::{Attribute, Connection, MediaDescription, Origin, SessionDescription};
use crate::media::codec::{CodecKind, CodecSpec};
use crate::media::room::{ParticipantConfig, TelephoneEventSpec};

/// A media direction attribute (RFC 3264 §5.1), seen from the side that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sends and receives.
    SendRecv,
    /// Only sends (it puts the other side on hold).
    SendOnly,
    /// Only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The direction named by an attribute name, if it is one.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        match name.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answerer that is willing to do anything answers
    /// with (§6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side that wrote it sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote it receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Which kind of leg an offer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaTransport {
    /// Plain RTP (`RTP/AVP`, `RTP/AVPF`): the RTP leg.
    Rtp,
    /// DTLS-SRTP (`UDP/TLS/RTP/SAVPF` and friends): the WebRTC leg.
    WebRtc,
    /// Nothing we can carry (SDES `RTP/SAVP`, no audio, ...).
    Unsupported(String),
}

impl MediaTransport {
    /// Classifies an offer by its first audio stream that has a port.
    pub fn of(offer: &SessionDescription) -> MediaTransport {
        let Some(m) = offer
            .media
            .iter()
            .find(|m| m.media.eq_ignore_ascii_case("audio") && m.port != 0)
        else {
            return MediaTransport::Unsupported("no audio stream".into());
        };
        let proto = m.protocol.to_ascii_uppercase();
        match proto.as_str() {
            "RTP/AVP" | "RTP/AVPF" => MediaTransport::Rtp,
            "UDP/TLS/RTP/SAVPF" | "UDP/TLS/RTP/SAVP" | "TCP/DTLS/RTP/SAVPF" => {
                MediaTransport::WebRtc
            }
            _ => MediaTransport::Unsupported(m.protocol.clone()),
        }
    }
}

/// What we can do, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Codecs, most preferred first.
    pub codecs: Vec<CodecKind>,
    /// Offer / accept RFC 4733 telephone-event.
    pub telephone_event: bool,
    /// Packet time we send and ask for, ms.
    pub ptime: u32,
}

impl Default for Capabilities {
    /// PCMU, PCMA, G.722, Opus; telephone-event; 20 ms. G.711 first: it is
    /// what trunks and phones agree on, and relays without transcoding.
    fn default() -> Self {
        Capabilities {
            codecs: vec![
                CodecKind::Pcmu,
                CodecKind::Pcma,
                CodecKind::G722,
                CodecKind::Opus,
            ],
            telephone_event: true,
            ptime: 20,
        }
    }
}

/// Our side of a stream: where we receive RTP (RTCP on the next port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address we advertise (`c=`, `o=`).
    pub address: IpAddr,
    /// Our RTP port (even); RTCP is on `rtp_port + 1`.
    pub rtp_port: u16,
}

/// The `o=` line of one side of a session: its id stays, its version goes up
/// each time the description changes (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOrigin {
    /// Session id.
    pub id: u64,
    /// Current version.
    pub version: u64,
    last: Option<SessionDescription>,
}

impl SessionOrigin {
    /// A new session with a random id.
    pub fn new() -> Self {
        let id = u64::from(rand::random::<u32>()) + 1;
        SessionOrigin {
            id,
            version: id,
            last: None,
        }
    }

    /// The session `sd` (our own last description) started: its id and
    /// version continue (RFC 3264 §8: the id never changes, the version
    /// goes up by one with each change).
    pub fn continuing(sd: &SessionDescription) -> Self {
        match sd.origin.session_id.parse::<u64>() {
            Ok(id) => SessionOrigin {
                id,
                version: sd.origin.session_version,
                last: Some(sd.clone()),
            },
            Err(_) => SessionOrigin::new(),
        }
    }

    /// Sets `sd`'s origin: same version as last time when nothing changed,
    /// the next one otherwise.
    pub fn stamp(&mut self, sd: &mut SessionDescription, address: IpAddr) {
        sd.origin = Origin {
            username: "-".into(),
            session_id: self.id.to_string(),
            session_version: self.version,
            connection: Connection::for_ip(address),
        };
        if let Some(last) = &self.last
            && last != sd
        {
            self.version += 1;
            sd.origin.session_version = self.version;
        }
        self.last = Some(sd.clone());
    }
}

impl Default for SessionOrigin {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of a negotiation, for the leg and the room.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    /// Index of the accepted `m=` line.
    pub media_index: usize,
    /// The codec, on the payload type both sides use.
    pub codec: CodecSpec,
    /// telephone-event, when both sides have it.
    pub telephone_event: Option<TelephoneEventSpec>,
    /// Where the peer wants RTP (`None`: on hold with `c=0.0.0.0`, port 0,
    /// or a host name).
    pub remote_rtp: Option<SocketAddr>,
    /// Where the peer wants RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// The peer's direction, as it wrote it (`c=0.0.0.0` → sendonly).
    pub remote_direction: Direction,
    /// Our direction.
    pub local_direction: Direction,
    /// The peer's `a=ptime`, ms.
    pub remote_ptime: Option<u32>,
}

impl Negotiated {
    /// The room participant settings for this stream.
    pub fn participant_config(&self) -> ParticipantConfig {
        ParticipantConfig {
            codec: self.codec,
            telephone_event: self.telephone_event,
            jitter: None,
            initial_timestamp: rand::random(),
        }
    }

    /// Whether the peer put us on hold (it does not want to receive).
    pub fn on_hold(&self) -> bool {
        !self.remote_direction.receives()
    }
}

/// Why no stream could be agreed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// No audio stream with a port.
    #[error("no audio stream offered")]
    NoAudio,
    /// No codec in common.
    #[error("no codec in common")]
    NoCommonCodec,
    /// The transport (profile) is not one this leg speaks.
    #[error("unsupported media transport {0}")]
    UnsupportedTransport(String),
}

impl NegotiationError {
    /// The SIP status that reports it: 488 Not Acceptable Here.
    pub fn status(&self) -> u16 {
        488
    }
}

fn is_plain_rtp(m: &MediaDescription) -> bool {
    m.protocol.eq_ignore_ascii_case("RTP/AVP") || m.protocol.eq_ignore_ascii_case("RTP/AVPF")
}

/// The payload type `m` uses for `kind`, if it lists it.
fn find_codec(m: &MediaDescription, kind: CodecKind) -> Option<u8> {
    m.payload_types().find(|&pt| match m.rtpmap(pt) {
        Some(map) => {
            map.encoding.eq_ignore_ascii_case(kind.name()) && map.clock_rate == kind.clock_rate()
        }
        None => kind.static_payload_type() == Some(pt),
    })
}

/// The telephone-event of `m` that suits a codec at `clock` Hz.
fn find_telephone_event(m: &MediaDescription, clock: u32) -> Option<TelephoneEventSpec> {
    let events: Vec<TelephoneEventSpec> = m
        .payload_types()
        .filter_map(|pt| m.rtpmap(pt))
        .filter(|map| map.encoding.eq_ignore_ascii_case("telephone-event"))
        .map(|map| TelephoneEventSpec {
            payload_type: map.payload_type,
            receive_payload_type: map.payload_type,
            clock_rate: map.clock_rate,
        })
        .collect();
    events
        .iter()
        .find(|e| e.clock_rate == clock)
        .or_else(|| events.iter().find(|e| e.clock_rate == 8000))
        .or(events.first())
        .copied()
}

fn codec_spec(kind: CodecKind, pt: u8) -> CodecSpec {
    CodecSpec::with_pt(kind, pt)
}

fn rtpmap_value(kind: CodecKind, pt: u8) -> String {
    match kind {
        CodecKind::Opus => format!("{pt} opus/48000/2"),
        other => format!("{pt} {}/{}", other.name(), other.clock_rate()),
    }
}

/// Where the peer of media section `index` wants RTP and RTCP.
fn remote_addresses(
    sd: &SessionDescription,
    index: usize,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(m) = sd.media.get(index) else {
        return (None, None);
    };
    let ip = sd
        .connection_for(index)
        .and_then(Connection::ip)
        .filter(|ip| !ip.is_unspecified());
    let (Some(ip), true) = (ip, m.port != 0) else {
        return (None, None);
    };
    let rtp = SocketAddr::new(ip, m.port);
    let rtcp = match m.rtcp() {
        Some((port, addr)) => SocketAddr::new(addr.unwrap_or(ip), port),
        None if m.attribute("rtcp-mux").is_some() => rtp,
        None => SocketAddr::new(ip, m.port.saturating_add(1)),
    };
    (Some(rtp), Some(rtcp))
}

/// The peer's direction for section `index`, with RFC 2543 hold folded in.
fn remote_direction(sd: &SessionDescription, index: usize) -> Direction {
    let direction = sd.direction(index);
    let zero = sd
        .connection_for(index)
        .and_then(Connection::ip)
        .is_some_and(|ip| ip.is_unspecified());
    match (zero, direction) {
        (true, Direction::SendRecv) => Direction::SendOnly,
        (true, Direction::RecvOnly) => Direction::Inactive,
        (_, d) => d,
    }
}

fn session_skeleton(local: LocalMedia) -> SessionDescription {
    SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: "0".into(),
            session_version: 0,
            connection: Connection::for_ip(local.address),
        },
        session_name: "-".into(),
        connection: Some(Connection::for_ip(local.address)),
        bandwidths: Vec::new(),
        timing: vec!["0 0".into()],
        attributes: Vec::new(),
        other: Vec::new(),
        media: Vec::new(),
    }
}

fn rejected(m: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media: m.media.clone(),
        port: 0,
        port_count: None,
        protocol: m.protocol.clone(),
        formats: m.formats.first().cloned().into_iter().collect(),
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    }
}

/// Answers `offer` (RFC 3264 §6) for a plain RTP leg at `local`.
pub fn answer(
    offer: &SessionDescription,
    caps: &Capabilities,
    local: LocalMedia,
    origin: &mut SessionOrigin,
) -> Result<(SessionDescription, Negotiated), NegotiationError> {
    let mut chosen: Option<(usize, CodecSpec, Option<TelephoneEventSpec>)> = None;
    let mut saw_audio = false;
    let mut saw_transport = None;
    for (index, m) in offer.media.iter().enumerate() {
        if !m.media.eq_ignore_ascii_case("audio") || m.port == 0 {
            continue;
        }
        saw_audio = true;
        if !is_plain_rtp(m) {
            saw_transport.get_or_insert_with(|| m.protocol.clone());
            continue;
        }
        let Some((kind, pt)) = caps
            .codecs
            .iter()
            .find_map(|&kind| find_codec(m, kind).map(|pt| (kind, pt)))
        else {
            continue;
        };
        let te = caps
            .telephone_event
            .then(|| find_telephone_event(m, kind.clock_rate()))
            .flatten();
        chosen = Some((index, codec_spec(kind, pt), te));
        break;
    }
    let Some((index, codec, te)) = chosen else {
        return Err(match (saw_audio, saw_transport) {
            (false, _) => NegotiationError::NoAudio,
            (true, Some(t)) if !offer.media.iter().any(is_plain_rtp) => {
                NegotiationError::UnsupportedTransport(t)
            }
            _ => NegotiationError::NoCommonCodec,
        });
    };
    let offered = &offer.media[index];
    let remote_dir = remote_direction(offer, index);
    let local_dir = remote_dir.answer();
    let mut sd = session_skeleton(local);
    for (i, m) in offer.media.iter().enumerate() {
        if i != index {
            sd.media.push(rejected(m));
            continue;
        }
        let mut formats = vec![codec.payload_type.to_string()];
        let mut attributes = vec![Attribute::new(
            "rtpmap",
            rtpmap_value(codec.kind, codec.payload_type),
        )];
        if codec.kind == CodecKind::Opus {
            attributes.push(Attribute::new(
                "fmtp",
                format!("{} useinbandfec=1", codec.payload_type),
            ));
        }
        if let Some(te) = te {
            formats.push(te.payload_type.to_string());
            attributes.push(Attribute::new(
                "rtpmap",
                format!("{} telephone-event/{}", te.payload_type, te.clock_rate),
            ));
            let events = offered
                .fmtp(te.payload_type)
                .filter(|f| !f.is_empty())
                .unwrap_or("0-15");
            attributes.push(Attribute::new(
                "fmtp",
                format!("{} {events}", te.payload_type),
            ));
        }
        attributes.push(Attribute::new("ptime", caps.ptime.to_string()));
        attributes.push(Attribute::flag(local_dir.as_str()));
        sd.media.push(MediaDescription {
            media: m.media.clone(),
            port: local.rtp_port,
            port_count: None,
            protocol: m.protocol.clone(),
            formats,
            connection: None,
            bandwidths: Vec::new(),
            attributes,
            other: Vec::new(),
        });
    }
    origin.stamp(&mut sd, local.address);
    let (remote_rtp, remote_rtcp) = remote_addresses(offer, index);
    Ok((
        sd,
        Negotiated {
            media_index: index,
            codec,
            telephone_event: te,
            remote_rtp,
            remote_rtcp,
            remote_direction: remote_dir,
            local_direction: local_dir,
            remote_ptime: offered.ptime(),
        },
    ))
}

/// Our own offer (for a call we place, e.g. to a trunk): one RTP/AVP audio
/// stream with `caps.codecs` on their static payload types (Opus on 111),
/// telephone-event/8000 on 101, `ptime`, and `direction`.
pub fn build_offer(
    caps: &Capabilities,
    local: LocalMedia,
    direction: Direction,
    origin: &mut SessionOrigin,
) -> SessionDescription {
    let mut sd = session_skeleton(local);
    let mut formats = Vec::new();
    let mut attributes = Vec::new();
    for &kind in &caps.codecs {
        let pt = kind.static_payload_type().unwrap_or(111);
        formats.push(pt.to_string());
        attributes.push(Attribute::new("rtpmap", rtpmap_value(kind, pt)));
    }
    if caps.telephone_event {
        formats.push("101".into());
        attributes.push(Attribute::new("rtpmap", "101 telephone-event/8000"));
        attributes.push(Attribute::new("fmtp", "101 0-16"));
    }
    attributes.push(Attribute::new("ptime", caps.ptime.to_string()));
    attributes.push(Attribute::flag(direction.as_str()));
    sd.media.push(MediaDescription {
        media: "audio".into(),
        port: local.rtp_port,
        port_count: None,
        protocol: "RTP/AVP".into(),
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes,
        other: Vec::new(),
    });
    origin.stamp(&mut sd, local.address);
    sd
}

/// The codecs of `sd`'s first audio stream that we know, in its order.
pub fn codecs_of(sd: &SessionDescription) -> Vec<CodecKind> {
    let Some(m) = sd
        .media
        .iter()
        .find(|m| m.media.eq_ignore_ascii_case("audio"))
    else {
        return Vec::new();
    };
    m.payload_types()
        .filter_map(|pt| {
            CodecKind::ALL
                .into_iter()
                .find(|&kind| find_codec(m, kind) == Some(pt))
        })
        .collect()
}

/// Reads the answer to an offer we made with [`build_offer`].
pub fn process_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<Negotiated, NegotiationError> {
    let index = our_offer
        .media
        .iter()
        .position(|m| m.media.eq_ignore_ascii_case("audio"))
        .ok_or(NegotiationError::NoAudio)?;
    let (ours, theirs) = match (our_offer.media.get(index), answer.media.get(index)) {
        (Some(o), Some(t)) if t.port != 0 => (o, t),
        _ => return Err(NegotiationError::NoCommonCodec),
    };
    // The answerer's order wins among what we offered.
    let (kind, pt) = theirs
        .payload_types()
        .find_map(|pt| {
            CodecKind::ALL
                .into_iter()
                .find(|&kind| {
                    find_codec(theirs, kind) == Some(pt) && find_codec(ours, kind).is_some()
                })
                .map(|kind| (kind, pt))
        })
        .ok_or(NegotiationError::NoCommonCodec)?;
    // We send with the answer's number and receive with our offer's (RFC
    // 3264 §5.1): they differ when the answerer renumbered it.
    let te = find_telephone_event(theirs, kind.clock_rate()).and_then(|te| {
        let offered = find_telephone_event(ours, te.clock_rate)?;
        Some(TelephoneEventSpec {
            receive_payload_type: offered.payload_type,
            ..te
        })
    });
    let (remote_rtp, remote_rtcp) = remote_addresses(answer, index);
    let remote_dir = remote_direction(answer, index);
    Ok(Negotiated {
        media_index: index,
        codec: codec_spec(kind, pt),
        telephone_event: te,
        remote_rtp,
        remote_rtcp,
        remote_direction: remote_dir,
        local_direction: our_offer.direction(index),
        remote_ptime: theirs.ptime(),
    })
}
