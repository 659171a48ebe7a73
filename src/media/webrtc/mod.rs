//! The WebRTC leg: a browser participant (ICE-lite, DTLS-SRTP, rtcp-mux,
//! BUNDLE, Opus/G.711/G.722, telephone-event) on one UDP socket.
//!
//! Built on the sans-IO core of webrtc-rs (`rtc` 0.21, the engine under the
//! async `webrtc` crate): an `RTCPeerConnection` that takes datagrams and
//! instants and returns datagrams, events and RTP packets. The leg adapts it
//! to [`Leg`]; the room task that owns the socket drives it. Why `rtc` and
//! not the async `webrtc::PeerConnection` (which binds its own sockets and
//! spawns tasks per connection): see `docs/webrtc.md`.
//!
//! The leg is ICE-lite with a single host candidate (the room socket's
//! address, or the configured advertised address for 1:1 NAT): the browser
//! runs the checks, and its candidates (including `.local` mDNS names, which
//! we cannot resolve) are not needed because we learn its address from the
//! checks themselves (peer-reflexive).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::SignatureScheme;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_G722, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT,
    MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::codec::{CodecKind, CodecSpec};
use super::leg::{Leg, LegClosed, LegIo, LegStats};
use super::room::{FrameRef, InPacket, ParticipantConfig};
use super::sdp::{Direction, SessionDescription};

/// RFC 6464 client-to-mixer audio level header extension.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Why a WebRTC leg could not be set up.
#[derive(Debug, Error)]
pub enum WebRtcError {
    /// The remote description was refused (malformed, no audio, no common codec...).
    #[error("remote SDP refused: {0}")]
    RemoteDescription(String),
    /// The offer has no audio codec we support.
    #[error("no common audio codec (we support opus, G722, PCMU, PCMA)")]
    NoCommonCodec,
    /// webrtc-rs refused something while building the connection.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// The DTLS certificate could not be generated.
    #[error("DTLS certificate: {0}")]
    Certificate(String),
}

fn rtc_err(e: impl std::fmt::Display) -> WebRtcError {
    WebRtcError::Rtc(e.to_string())
}

/// Settings shared by every WebRTC leg of a server (cheap to clone).
#[derive(Clone)]
pub struct WebRtcConfig {
    /// The DTLS certificate (one per process: generating one per call costs
    /// a key generation and changes nothing for security, as in browsers).
    pub certificate: RTCCertificate,
    /// Address written in our ICE candidate instead of the socket's (1:1 NAT).
    pub advertised_ip: Option<IpAddr>,
    /// Audio codecs we accept, in our order of preference.
    pub codecs: Vec<CodecKind>,
    /// Opus payload type used in our own offers.
    pub opus_payload_type: u8,
    /// How long ICE may stay `disconnected` before the leg counts as closed.
    pub disconnected_timeout: Duration,
    /// Ask the browser to encode Opus for at most this playback rate
    /// (`maxplaybackrate`, RFC 7587): 8000 when the other side is G.711, which
    /// halves the cost of the decoder and of our encoder. `None`: fullband.
    pub opus_max_playback_rate: Option<u32>,
}

impl WebRtcConfig {
    /// Defaults with a freshly generated ECDSA P-256 certificate.
    pub fn generate() -> Result<WebRtcConfig, WebRtcError> {
        let provider =
            rtc::crypto::default_provider().map_err(|e| WebRtcError::Certificate(e.to_string()))?;
        let params = CertificateParams::new(vec!["switchboard".to_owned()])
            .map_err(|e| WebRtcError::Certificate(e.to_string()))?;
        let certificate =
            RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
                .map_err(|e| WebRtcError::Certificate(e.to_string()))?;
        Ok(WebRtcConfig {
            certificate,
            advertised_ip: None,
            codecs: vec![
                CodecKind::Opus,
                CodecKind::G722,
                CodecKind::Pcmu,
                CodecKind::Pcma,
            ],
            opus_payload_type: 111,
            disconnected_timeout: Duration::from_secs(10),
            opus_max_playback_rate: None,
        })
    }
}

/// What negotiation settled for the leg: feed it to `Room::add_participant`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negotiated {
    /// Codec, telephone-event and initial timestamp for the room.
    pub participant: ParticipantConfig,
    /// The RFC 6464 audio level extension id, when the browser agreed to send it.
    pub audio_level_ext: Option<u8>,
}

/// One browser participant. See the module documentation.
pub struct WebRtcLeg {
    pc: RTCPeerConnection,
    local: SocketAddr,
    sender: RTCRtpSenderId,
    ssrc: u32,
    seq: u16,
    negotiated: Option<Negotiated>,
    stats: LegStats,
    last_in_seq: Option<u16>,
    closed: Option<LegClosed>,
    disconnected_since: Option<Instant>,
    disconnected_timeout: Duration,
    connected: bool,
    /// The connection's next deadline, cached after every drain (its
    /// `poll_timeout` needs `&mut`).
    next_timeout: Option<Instant>,
    opus_max_playback_rate: Option<u32>,
    /// Our DTLS role as first negotiated (`active` or `passive`): every
    /// later answer must repeat it (RFC 5763 §6.6).
    setup: Option<&'static str>,
    /// Where received datagrams and relayed payloads are copied for `rtc`.
    pool: Pool,
}

/// Bytes of one block reused by a [`Pool`]: about a hundred datagrams.
const POOL_BLOCK: usize = 16 * 1024;

/// Reused storage for the buffers `rtc` takes by value (a received datagram,
/// a relayed payload): each copy is split off one block, and the block is
/// taken back once `rtc` has dropped every piece of it (it keeps none: no
/// NACK buffer for audio). Steady traffic allocates a block now and then,
/// not a buffer per packet.
struct Pool(BytesMut);

impl Pool {
    fn new() -> Pool {
        Pool(BytesMut::with_capacity(POOL_BLOCK))
    }

    /// `data` in a buffer of its own, carved from the block.
    fn copy(&mut self, data: &[u8]) -> BytesMut {
        // Enough room left: nothing happens. Else the block is reclaimed
        // when no piece of it is alive, or a new one is taken.
        self.0.reserve(data.len());
        self.0.extend_from_slice(data);
        self.0.split()
    }
}

/// The `a=setup:` value of an SDP (the first one).
fn setup_of(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=setup:"))
        .map(str::trim)
}

/// `sdp` with every `a=setup:` line saying `role`.
fn with_setup(sdp: &str, role: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("a=setup:") {
            out.push_str("a=setup:");
            out.push_str(role);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

impl WebRtcLeg {
    /// Answers a browser's `offer`; `local` is the address of the UDP socket
    /// the room task owns for this leg. Returns the leg and our answer SDP.
    pub fn answer(
        offer: &str,
        local: SocketAddr,
        cfg: &WebRtcConfig,
        now: Instant,
    ) -> Result<(WebRtcLeg, String), WebRtcError> {
        let mut leg = WebRtcLeg::new(local, cfg, now)?;
        let offer = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| WebRtcError::RemoteDescription(e.to_string()))?;
        leg.pc
            .set_remote_description(now, offer)
            .map_err(|e| WebRtcError::RemoteDescription(e.to_string()))?;
        leg.add_host_candidate(cfg)?;
        let answer = leg.pc.create_answer(None).map_err(rtc_err)?;
        leg.pc.set_local_description(now, answer).map_err(rtc_err)?;
        let sdp = leg
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| rtc_err("no local description"))?;
        let sdp = tidy_answer(&sdp, cfg.opus_max_playback_rate);
        leg.negotiated = Some(negotiated_from_answer(&sdp).ok_or(WebRtcError::NoCommonCodec)?);
        leg.setup = match setup_of(&sdp) {
            Some("passive") => Some("passive"),
            _ => Some("active"),
        };
        Ok((leg, sdp))
    }

    /// Makes an offer (for calling a browser). Complete it with
    /// [`WebRtcLeg::accept_answer`].
    pub fn offer(
        local: SocketAddr,
        cfg: &WebRtcConfig,
        now: Instant,
    ) -> Result<(WebRtcLeg, String), WebRtcError> {
        let mut leg = WebRtcLeg::new(local, cfg, now)?;
        // The track's codec became the transceiver's only preference: offer
        // every registered codec instead (an empty list means "all").
        let transceivers: Vec<_> = leg.pc.get_transceivers().collect();
        for id in transceivers {
            if let Some(mut t) = leg.pc.rtp_transceiver(id) {
                t.set_codec_preferences(Vec::new()).map_err(rtc_err)?;
            }
        }
        leg.add_host_candidate(cfg)?;
        let offer = leg.pc.create_offer(None).map_err(rtc_err)?;
        leg.pc.set_local_description(now, offer).map_err(rtc_err)?;
        let sdp = leg
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| rtc_err("no local description"))?;
        Ok((leg, sdp))
    }

    /// Applies the browser's answer to our offer.
    pub fn accept_answer(&mut self, answer: &str, now: Instant) -> Result<(), WebRtcError> {
        let desc = RTCSessionDescription::answer(answer.to_owned())
            .map_err(|e| WebRtcError::RemoteDescription(e.to_string()))?;
        self.pc
            .set_remote_description(now, desc)
            .map_err(|e| WebRtcError::RemoteDescription(e.to_string()))?;
        self.negotiated = Some(negotiated_from_answer(answer).ok_or(WebRtcError::NoCommonCodec)?);
        // We offered actpass: the browser's answer picks the roles.
        self.setup = match setup_of(answer) {
            Some("passive") => Some("active"),
            _ => Some("passive"),
        };
        Ok(())
    }

    /// Answers a re-offer from the browser (hold, resume, ICE restart) on
    /// the same connection: same DTLS role and certificate, ICE credentials
    /// kept unless the browser restarts ICE (RFC 5763 §6.6, RFC 8839).
    /// Returns our answer; the codec stays the one negotiated first.
    pub fn reanswer(&mut self, offer: &str, now: Instant) -> Result<String, WebRtcError> {
        let desc = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| WebRtcError::RemoteDescription(e.to_string()))?;
        self.pc
            .set_remote_description(now, desc)
            .map_err(|e| WebRtcError::RemoteDescription(e.to_string()))?;
        let answer = self.pc.create_answer(None).map_err(rtc_err)?;
        self.pc
            .set_local_description(now, answer)
            .map_err(rtc_err)?;
        let sdp = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| rtc_err("no local description"))?;
        self.next_timeout = self.pc.poll_timeout();
        let sdp = tidy_answer(&sdp, self.opus_max_playback_rate);
        // webrtc-rs answers `active` whatever the connection's DTLS role;
        // a browser we called (it answered `active`) would refuse that.
        let sdp = match self.setup {
            Some(role) => with_setup(&sdp, role),
            None => sdp,
        };
        Ok(answer_direction(&sdp, offer))
    }
}

/// Sets our audio direction to the RFC 3264 §6.1 answer to the offer's
/// (webrtc-rs 0.21 answers `sendrecv` to a `sendonly` hold offer, which
/// browsers refuse): sendonly → recvonly, recvonly → sendonly, inactive →
/// inactive, sendrecv → sendrecv.
pub fn answer_direction(answer: &str, offer: &str) -> String {
    let want = SessionDescription::parse(offer.as_bytes())
        .ok()
        .and_then(|d| {
            let index = d
                .media
                .iter()
                .position(|m| m.media.eq_ignore_ascii_case("audio"))?;
            Some(d.direction(index))
        })
        .unwrap_or(Direction::SendRecv)
        .answer()
        .as_str();
    let mut in_audio = false;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            in_audio = line.starts_with("m=audio");
        }
        let is_dir = ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(&line);
        if in_audio && is_dir {
            out.push_str("a=");
            out.push_str(want);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

impl WebRtcLeg {
    /// What was negotiated (after [`WebRtcLeg::answer`] or [`WebRtcLeg::accept_answer`]).
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.negotiated
    }

    /// Whether ICE and DTLS are up (media can flow).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn new(local: SocketAddr, cfg: &WebRtcConfig, now: Instant) -> Result<WebRtcLeg, WebRtcError> {
        let mut media = MediaEngine::default();
        let opus_fmtp = match cfg.opus_max_playback_rate {
            Some(rate) => format!(
                "minptime=10;useinbandfec=1;maxplaybackrate={rate};sprop-maxcapturerate={rate}"
            ),
            None => "minptime=10;useinbandfec=1".to_owned(),
        };
        for kind in &cfg.codecs {
            let (mime, rate, channels, fmtp, pt) = match kind {
                CodecKind::Opus => (
                    MIME_TYPE_OPUS,
                    48_000,
                    2,
                    opus_fmtp.as_str(),
                    cfg.opus_payload_type,
                ),
                CodecKind::G722 => (MIME_TYPE_G722, 8000, 0, "", 9),
                CodecKind::Pcmu => (MIME_TYPE_PCMU, 8000, 0, "", 0),
                CodecKind::Pcma => (MIME_TYPE_PCMA, 8000, 0, "", 8),
            };
            media
                .register_codec(codec(mime, rate, channels, fmtp, pt), RtpCodecKind::Audio)
                .map_err(rtc_err)?;
        }
        for (rate, pt) in [(48_000, 110), (8000, 126)] {
            media
                .register_codec(
                    codec(MIME_TYPE_TELEPHONE_EVENT, rate, 0, "0-15", pt),
                    RtpCodecKind::Audio,
                )
                .map_err(rtc_err)?;
        }
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(rtc_err)?;
        // Audio needs RTCP sender/receiver reports only: no NACK (a late
        // audio packet is useless), no transport-wide congestion control (a
        // fixed-rate voice stream).
        let registry = configure_rtcp_reports(Registry::new());
        let setting = SettingEngineBuilder::new().with_lite(true).build();
        let config = RTCConfigurationBuilder::new()
            .with_certificates(vec![cfg.certificate.clone()])
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(config)
            .with_setting_engine(setting)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(rtc_err)?;
        let ssrc: u32 = rand::random();
        let first = cfg.codecs.first().copied().unwrap_or(CodecKind::Opus);
        let track = MediaStreamTrack::new(
            "switchboard".to_owned(),
            "switchboard-audio".to_owned(),
            "switchboard-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: match first {
                    CodecKind::Opus => codec(MIME_TYPE_OPUS, 48_000, 2, "", 0).rtp_codec,
                    CodecKind::G722 => codec(MIME_TYPE_G722, 8000, 0, "", 0).rtp_codec,
                    CodecKind::Pcmu => codec(MIME_TYPE_PCMU, 8000, 0, "", 0).rtp_codec,
                    CodecKind::Pcma => codec(MIME_TYPE_PCMA, 8000, 0, "", 0).rtp_codec,
                },
                ..Default::default()
            }],
        );
        let sender = pc.add_track(track).map_err(rtc_err)?;
        Ok(WebRtcLeg {
            pc,
            local,
            sender,
            ssrc,
            seq: rand::random(),
            negotiated: None,
            stats: LegStats::default(),
            last_in_seq: None,
            closed: None,
            disconnected_since: None,
            disconnected_timeout: cfg.disconnected_timeout,
            connected: false,
            next_timeout: None,
            opus_max_playback_rate: cfg.opus_max_playback_rate,
            setup: None,
            pool: Pool::new(),
        })
    }

    fn add_host_candidate(&mut self, cfg: &WebRtcConfig) -> Result<(), WebRtcError> {
        let ip = cfg.advertised_ip.unwrap_or(self.local.ip());
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: ip.to_string(),
                port: self.local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(rtc_err)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(rtc_err)?;
        self.pc.add_local_candidate(init).map_err(rtc_err)?;
        Ok(())
    }

    /// Hands everything the connection queued to the driver and the room.
    fn drain(&mut self, now: Instant, io: &mut dyn LegIo) {
        self.drain_inner(now, io);
        self.next_timeout = self.pc.poll_timeout();
    }

    fn drain_inner(&mut self, now: Instant, io: &mut dyn LegIo) {
        while let Some(out) = self.pc.poll_write() {
            io.transmit(out.transport.peer_addr, &out.message);
        }
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                    debug!(%state, "ICE connection state");
                    match state {
                        RTCIceConnectionState::Disconnected => {
                            self.disconnected_since.get_or_insert(now);
                        }
                        RTCIceConnectionState::Failed => {
                            self.closed = Some(LegClosed::TransportFailed("ICE failed".into()));
                        }
                        _ => self.disconnected_since = None,
                    }
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    info!(%state, "WebRTC connection state");
                    match state {
                        RTCPeerConnectionState::Connected => self.connected = true,
                        RTCPeerConnectionState::Failed => {
                            self.closed = Some(LegClosed::TransportFailed(
                                "ICE/DTLS connection failed".into(),
                            ))
                        }
                        RTCPeerConnectionState::Closed => {
                            self.closed.get_or_insert(LegClosed::ClosedByPeer);
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let level_ext = self.negotiated.and_then(|n| n.audio_level_ext);
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            let RTCMessage::RtpPacket(_, pkt) = message else {
                continue;
            };
            let h = &pkt.header;
            if let Some(last) = self.last_in_seq {
                let gap = h.sequence_number.wrapping_sub(last);
                if (2..1000).contains(&gap) {
                    self.stats.packets_lost += u64::from(gap - 1);
                }
            }
            self.last_in_seq = Some(h.sequence_number);
            self.stats.packets_received += 1;
            self.stats.bytes_received += pkt.payload.len() as u64;
            let audio_level = level_ext
                .and_then(|id| h.get_extension(id))
                .and_then(|b| b.first().map(|v| v & 0x7f));
            io.media(InPacket {
                payload_type: h.payload_type,
                seq: h.sequence_number,
                timestamp: h.timestamp,
                marker: h.marker,
                payload: &pkt.payload,
                audio_level,
            });
        }
    }
}

fn codec(mime: &str, rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// Repairs what webrtc-rs 0.21 gets wrong in an answer and adds what it
/// cannot express:
/// - its codec matching ignores clock rates, so an offer with both
///   `telephone-event/48000` and `/8000` gets the 48 kHz one twice (same
///   payload type listed twice): duplicates are dropped, which leaves the
///   one that matches Opus;
/// - it answers with the offerer's Opus `fmtp`; ours may add
///   `maxplaybackrate` (RFC 7587) to ask for narrowband Opus.
///
/// The connection's own state is unaffected: formats and fmtp only tell the
/// browser what to send.
pub fn tidy_answer(sdp: &str, opus_max_playback_rate: Option<u32>) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut seen: Vec<&str> = Vec::new();
    let mut opus_pts: Vec<String> = Vec::new();
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            seen.clear();
            let mut parts: Vec<&str> = line.split(' ').collect();
            if parts.len() > 3 {
                let mut formats: Vec<&str> = Vec::new();
                for f in parts.drain(3..) {
                    if !formats.contains(&f) {
                        formats.push(f);
                    }
                }
                parts.extend(formats);
            }
            out.push_str(&parts.join(" "));
            out.push_str("\r\n");
            continue;
        }
        if line.starts_with("a=rtpmap:") || line.starts_with("a=fmtp:") {
            if seen.contains(&line) {
                continue;
            }
            seen.push(line);
        }
        if let Some(rest) = line.strip_prefix("a=rtpmap:")
            && let Some((pt, enc)) = rest.split_once(' ')
            && enc.to_ascii_lowercase().starts_with("opus/")
        {
            opus_pts.push(pt.to_owned());
        }
        out.push_str(line);
        if let (Some(rate), Some(rest)) = (opus_max_playback_rate, line.strip_prefix("a=fmtp:"))
            && let Some((pt, params)) = rest.split_once(' ')
            && opus_pts.iter().any(|p| p == pt)
            && !params.contains("maxplaybackrate")
        {
            out.push_str(&format!(
                ";maxplaybackrate={rate};sprop-maxcapturerate={rate}"
            ));
        }
        out.push_str("\r\n");
    }
    out
}

/// Reads the settled codec, telephone-event and audio-level id from an
/// answer (ours or the browser's): the first audio format of the first
/// audio m-line is the one both sides send.
pub fn negotiated_from_answer(sdp: &str) -> Option<Negotiated> {
    let desc = SessionDescription::parse(sdp.as_bytes()).ok()?;
    let audio = desc
        .media
        .iter()
        .find(|m| m.media.eq_ignore_ascii_case("audio") && m.port != 0)?;
    // Static payload types may come without an rtpmap.
    let lookup = |pt: u8| -> Option<(String, u32)> {
        match audio.rtpmap(pt) {
            Some(map) => Some((map.encoding.to_ascii_lowercase(), map.clock_rate)),
            None => match pt {
                0 => Some(("pcmu".into(), 8000)),
                8 => Some(("pcma".into(), 8000)),
                9 => Some(("g722".into(), 8000)),
                _ => None,
            },
        }
    };
    let spec = audio.payload_types().find_map(|pt| {
        let (name, _) = lookup(pt)?;
        match name.as_str() {
            "opus" => Some(CodecSpec::opus(pt)),
            "pcmu" => Some(CodecSpec::with_pt(CodecKind::Pcmu, pt)),
            "pcma" => Some(CodecSpec::with_pt(CodecKind::Pcma, pt)),
            "g722" => Some(CodecSpec::with_pt(CodecKind::G722, pt)),
            _ => None,
        }
    })?;
    let mut participant = ParticipantConfig::new(spec);
    participant.initial_timestamp = rand::random();
    let te_rate = spec.kind.clock_rate();
    let te = audio.payload_types().find(|&pt| {
        lookup(pt).is_some_and(|(name, rate)| name == "telephone-event" && rate == te_rate)
    });
    if let Some(pt) = te {
        participant = participant.with_telephone_event(pt, te_rate);
    }
    let audio_level_ext = audio
        .attributes
        .iter()
        .filter(|a| a.name.eq_ignore_ascii_case("extmap"))
        .filter_map(|a| a.value.as_deref())
        .find_map(|v| {
            let mut it = v.split_whitespace();
            let (id, uri) = (it.next()?, it.next()?);
            (uri == AUDIO_LEVEL_URI).then(|| id.split('/').next()?.parse().ok())?
        });
    Some(Negotiated {
        participant,
        audio_level_ext,
    })
}

impl Leg for WebRtcLeg {
    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
        io: &mut dyn LegIo,
    ) {
        let read = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: self.pool.copy(data),
        });
        if let Err(e) = read {
            self.stats.dropped += 1;
            debug!(%from, error = %e, "WebRTC datagram dropped");
        }
        self.drain(now, io);
    }

    fn send_frame(&mut self, now: Instant, frame: FrameRef<'_>, io: &mut dyn LegIo) {
        if !self.connected {
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: frame.marker,
                payload_type: frame.payload_type,
                sequence_number: self.seq,
                timestamp: frame.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            // A mix is shared; a relayed payload is copied into the pool.
            payload: match frame.shared() {
                Some(bytes) => bytes.clone(),
                None => self.pool.copy(frame.payload()).freeze(),
            },
        };
        let len = frame.payload().len() as u64;
        match self.pc.rtp_sender(self.sender) {
            Some(mut sender) => match sender.write_rtp(now, packet) {
                Ok(()) => {
                    self.stats.packets_sent += 1;
                    self.stats.bytes_sent += len;
                }
                Err(e) => warn!(error = %e, pt = frame.payload_type, "RTP not sent"),
            },
            None => warn!("WebRTC leg lost its sender"),
        }
        self.drain(now, io);
    }

    fn handle_timeout(&mut self, now: Instant, io: &mut dyn LegIo) {
        if let Err(e) = self.pc.handle_timeout(now) {
            debug!(error = %e, "WebRTC timeout handling");
        }
        if let Some(since) = self.disconnected_since
            && now.duration_since(since) >= self.disconnected_timeout
        {
            self.closed
                .get_or_insert(LegClosed::TransportFailed("ICE disconnected".into()));
        }
        self.drain(now, io);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = self.next_timeout;
        match self.disconnected_since {
            Some(since) => {
                let d = since + self.disconnected_timeout;
                Some(t.map_or(d, |t| t.min(d)))
            }
            None => t,
        }
    }

    fn stats(&self) -> LegStats {
        self.stats
    }

    fn closed(&self) -> Option<LegClosed> {
        self.closed.clone()
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

impl Drop for WebRtcLeg {
    fn drop(&mut self) {
        let _ = self.pc.close();
    }
}

/// Shared handle on the process's WebRTC settings.
pub type SharedWebRtcConfig = Arc<WebRtcConfig>;

#[cfg(test)]
mod tests;
