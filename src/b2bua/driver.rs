//! The async driver of one B2BUA call: turns SIP transactions, leg events
//! and the clock into [`CallEvent`]s for the state machine, and carries out
//! its [`Action`]s (responses, BYE, room commands).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::call::{
    Action, CallEvent, CallState, RAck, RefreshOutcome, Reliability, SessionRequest, UasCall,
    allows_update,
};
use super::{B2bua, CONTACT_PREFIX, CallTarget, DialogKey, Peer};
use crate::media::engine::{Command, EngineError, LegEvent, LegSockets, RoomHandle};
use crate::media::leg::Leg;
use crate::media::room::{DtmfForwarding, ParticipantConfig, ParticipantId, RoomConfig};
use crate::media::rtp::{RtpLeg, RtpLegConfig};
use crate::media::sdp::{Direction, LocalMedia, MediaTransport, Negotiated, SessionDescription};
use crate::media::webrtc::WebRtcLeg;
use crate::sip::{
    Header, HeadersExt, Method, Request, Response, SipMessage, StatusCode, ToTypedHeader,
    Transaction, TransactionKey, TransactionRole, Version,
};

/// The INVITE server transaction as the B2BUA sees it. The proxy's
/// `Upstream` implements it; so can a test double.
pub trait InviteServer {
    /// The INVITE as received.
    fn original(&self) -> &Request;
    /// Sends a response on it.
    fn respond(&mut self, response: Response);
    /// The next request on it (CANCEL, ACK); `None` once it has ended.
    fn next_request(&mut self) -> impl std::future::Future<Output = Option<Request>> + Send;
}

/// Holds one unit of a gauge (calls, outgoing INVITEs) until dropped.
pub(super) struct CallCount(pub(super) Arc<crate::metrics::Gauge>);

impl Drop for CallCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The media of a call before it joins its room.
pub(super) struct Prepared {
    pub(super) leg: Box<dyn Leg>,
    pub(super) sockets: LegSockets,
    pub(super) config: ParticipantConfig,
}

pub(super) use crate::sip::random_hex;

/// One call's signalling context: what every response and our BYE need.
pub(super) struct Dialog {
    pub(super) invite: Request,
    pub(super) tag: String,
    pub(super) contact: String,
    pub(super) peer: Peer,
    pub(super) server_name: String,
    pub(super) bye_cseq: u32,
    /// Where our requests in the dialog go: the peer's Contact, from its
    /// INVITE and then from each target refresh (re-INVITE, UPDATE: RFC
    /// 3261 §12.2.2); the INVITE's Request-URI when it had none.
    pub(super) remote_target: Option<crate::sip::Uri>,
}

/// The URI of the first Contact header.
pub(super) fn contact_uri(headers: &crate::sip::Headers) -> Option<crate::sip::Uri> {
    let value = headers.iter().find_map(|h| match h {
        Header::Contact(c) => Some(c.value().to_string()),
        _ => None,
    })?;
    let uri = match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if end > start => value[start + 1..end].to_string(),
        _ => value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    crate::sip::Uri::try_from(uri.as_str()).ok()
}

/// Methods our B2BUA dialogs accept.
pub(super) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK";

/// A response to `request` as one side of a B2BUA dialog: our `tag` on To
/// when it has none, `contact` on dialog-creating and target-refreshing
/// responses, and an optional SDP body.
pub(super) fn build_response(
    request: &Request,
    status: u16,
    body: Option<String>,
    tag: &str,
    contact: &str,
    server_name: &str,
) -> Response {
    let mut headers: Vec<Header> = Vec::new();
    for h in request.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let value = to.value();
                if value.contains(";tag=") {
                    headers.push(h.clone());
                } else {
                    headers.push(Header::To(format!("{value};tag={tag}").into()));
                }
            }
            _ => {}
        }
    }
    // Dialog-creating and target-refreshing responses carry our Contact
    // (RFC 3261 §12.1.1, RFC 3311 §5.2 for UPDATE).
    let refreshes = request.method == Method::Invite
        || (request.method == Method::Update && (200..300).contains(&status));
    if refreshes && (101..300).contains(&status) {
        headers.push(Header::Contact(contact.to_string().into()));
    }
    if status == 200 || status == 405 || status == 501 {
        headers.push(Header::Allow(ALLOW.into()));
    }
    headers.push(Header::Server(server_name.to_string().into()));
    let body = body.map(String::into_bytes).unwrap_or_default();
    if !body.is_empty() {
        headers.push(Header::ContentType("application/sdp".into()));
    }
    headers.push(Header::ContentLength((body.len() as u32).into()));
    Response {
        status_code: StatusCode::from(status),
        wire_reason: None,
        version: Version::V2,
        headers: headers.into(),
        body,
    }
}

/// Our final response to the caller's INVITE or to its refresh
/// (re-INVITE, UPDATE) settles the refresh ([`UasCall::session_answered`]),
/// and a 2xx says the session timer in force (RFC 4028 §9):
/// `Session-Expires` with the refresher, `Require: timer` when the caller
/// supports it.
pub(super) fn with_session_timer(
    mut response: Response,
    request: &Request,
    call: &mut UasCall,
    now: Instant,
) -> Response {
    if !matches!(request.method, Method::Invite | Method::Update) {
        return response;
    }
    let status = response.status_code.code();
    call.session_answered(status, now);
    if (200..300).contains(&status)
        && let Some((value, required)) = call.session_expires()
    {
        let mut headers: Vec<Header> = response.headers.iter().cloned().collect();
        // Before Content-Length, which build_response puts last.
        let at = headers.len().saturating_sub(1);
        headers.insert(at, Header::Other("Session-Expires".into(), value));
        if required {
            headers.insert(at + 1, Header::Require("timer".into()));
        }
        response.headers = headers.into();
    }
    response
}

/// Takes what the caller's INVITE, re-INVITE or UPDATE asks of the
/// session timer ([`UasCall::session_request`]); `Some` is the 422 to
/// refuse it with (its interval is below our `min_se`).
pub(super) fn take_session_request(
    call: &mut UasCall,
    dialog: &Dialog,
    request: &Request,
    min_se: u64,
) -> Option<Response> {
    let update = allows_update(request) || allows_update(&dialog.invite);
    let min = call
        .session_request(SessionRequest::of(request), min_se, update)
        .err()?;
    info!(min_se = min, "session interval too small: 422");
    let mut response = dialog.response(request, 422, None);
    response.status_code = StatusCode::Other(422, "Session Interval Too Small".into());
    let mut headers: Vec<Header> = response.headers.iter().cloned().collect();
    let at = headers.len().saturating_sub(1);
    headers.insert(at, Header::Other("Min-SE".into(), min.to_string()));
    response.headers = headers.into();
    Some(response)
}

/// Has `call` send its provisionals as the caller's INVITE asks (RFC 3262
/// 100rel), with a random first RSeq.
pub(super) fn set_reliability(call: &mut UasCall, invite: &Request) {
    let cseq = invite
        .cseq_header()
        .ok()
        .and_then(|c| c.seq().ok())
        .unwrap_or_default();
    // 1 to 2^30: far from 2^31 - 1, so RSeq never has to wrap.
    let first_rseq = rand::random::<u32>() % (1 << 30) + 1;
    call.set_reliability(Reliability::of(invite), cseq, first_rseq);
}

impl Dialog {
    /// The dialog of an INVITE we answer as a UAS towards `peer`: a fresh
    /// To-tag and our Contact `sip:sb-b2b-<tag>@<our address>`.
    pub(super) fn new(invite: Request, peer: Peer, server_name: String) -> Dialog {
        let tag = random_hex(6);
        let contact = format!(
            "<sip:{CONTACT_PREFIX}{tag}@{}{}>",
            peer.local,
            peer.kind.uri_param()
        );
        Dialog {
            remote_target: contact_uri(&invite.headers),
            invite,
            tag,
            contact,
            peer,
            server_name,
            bye_cseq: 0,
        }
    }

    /// A re-INVITE or UPDATE from the peer with a Contact moves the
    /// dialog's remote target (RFC 3261 §12.2.2, RFC 3311 §5.2).
    pub(super) fn refresh_target(&mut self, request: &Request) {
        if matches!(request.method, Method::Invite | Method::Update)
            && let Some(uri) = contact_uri(&request.headers)
        {
            self.remote_target = Some(uri);
        }
    }

    /// A response to `request` with our To-tag, Contact on dialog-creating
    /// and target-refreshing 2xx, and an optional SDP body.
    pub(super) fn response(
        &self,
        request: &Request,
        status: u16,
        body: Option<String>,
    ) -> Response {
        build_response(
            request,
            status,
            body,
            &self.tag,
            &self.contact,
            &self.server_name,
        )
    }

    /// A provisional response to the INVITE (`status`, with `body`), made
    /// reliable (RFC 3262: `Require: 100rel`, `RSeq`) when `rseq` is set.
    pub(super) fn provisional(
        &self,
        status: u16,
        body: Option<String>,
        rseq: Option<u32>,
    ) -> Response {
        let mut response = self.response(&self.invite, status, body);
        if let Some(rseq) = rseq {
            let mut headers: Vec<Header> = response.headers.iter().cloned().collect();
            // Before Content-Length, which build_response puts last.
            let at = headers.len().saturating_sub(1);
            headers.insert(at, Header::Require("100rel".into()));
            headers.insert(at + 1, Header::Other("RSeq".into(), rseq.to_string()));
            response.headers = headers.into();
        }
        response
    }

    /// Our session refresh (RFC 4028 §9): UPDATE without a body, with our
    /// Contact (a target refresh request, RFC 3311 §5.1), the interval
    /// `session_expires` names us to refresh, and `Min-SE` when given.
    pub(super) fn session_refresh(
        &mut self,
        (session_expires, min_se): (String, Option<u64>),
    ) -> Request {
        let mut extra = vec![
            Header::Contact(self.contact.clone().into()),
            Header::Supported("timer".into()),
            Header::Other("Session-Expires".into(), session_expires),
        ];
        if let Some(min_se) = min_se {
            extra.push(Header::Other("Min-SE".into(), min_se.to_string()));
        }
        self.request(Method::Update, extra, None)
    }

    /// Our BYE (RFC 3261 §15.1.1): to the caller's Contact, along the
    /// Record-Route set it built, sent to where the INVITE came from.
    pub(super) fn bye(&mut self) -> Request {
        self.request(Method::Bye, Vec::new(), None)
    }

    /// A request of ours in this dialog (BYE, NOTIFY), with extra headers
    /// and an optional body (content type, text).
    pub(super) fn request(
        &mut self,
        method: Method,
        extra: Vec<Header>,
        body: Option<(&str, String)>,
    ) -> Request {
        self.bye_cseq += 1;
        let invite = &self.invite;
        let target = self
            .remote_target
            .clone()
            .unwrap_or_else(|| invite.uri.clone());
        let mut headers: Vec<Header> = vec![Header::Via(
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK-sbb{};rport",
                self.peer.kind.via_name(),
                self.peer.local,
                random_hex(8)
            )
            .into(),
        )];
        headers.push(Header::MaxForwards("70".into()));
        for h in invite.headers.iter() {
            match h {
                Header::From(from) => headers.push(Header::To(from.value().into())),
                Header::To(to) => {
                    let value = to.value();
                    let value = if value.contains(";tag=") {
                        value.to_string()
                    } else {
                        format!("{value};tag={}", self.tag)
                    };
                    headers.push(Header::From(value.into()));
                }
                Header::CallId(_) => headers.push(h.clone()),
                Header::RecordRoute(rr) => headers.push(Header::Route(rr.value().into())),
                _ => {}
            }
        }
        headers.push(Header::CSeq(format!("{} {method}", self.bye_cseq).into()));
        headers.push(Header::UserAgent(self.server_name.clone().into()));
        headers.extend(extra);
        let body = match body {
            Some((content_type, text)) => {
                headers.push(Header::ContentType(content_type.to_string().into()));
                text.into_bytes()
            }
            None => Vec::new(),
        };
        headers.push(Header::ContentLength((body.len() as u32).into()));
        Request {
            method,
            uri: target,
            version: Version::V2,
            headers: headers.into(),
            body,
        }
    }
}

/// A call ready to ring/answer: its state machine, our SDP answer, the
/// first actions, and its media.
pub(super) type Ready = (UasCall, String, Vec<Action>, Prepared);

/// Chooses and builds the media leg for an offer (none: a delayed offer,
/// RTP with our offer in the 2xx and its answer in the ACK).
pub(super) fn prepare(
    b2bua: &B2bua,
    offer: &[u8],
    peer: &Peer,
    answer_delay: Duration,
    now: Instant,
    opus_max_playback_rate: Option<u32>,
) -> Result<Ready, (u16, &'static str)> {
    let delayed = offer.trim_ascii().is_empty();
    let transport = if delayed {
        MediaTransport::Rtp
    } else {
        let parsed = SessionDescription::parse(offer).map_err(|_| (488, "Bad SDP"))?;
        MediaTransport::of(&parsed)
    };
    match transport {
        MediaTransport::Rtp => {}
        // ---- THE LEG CHOICE POINT --------------------------------------
        // Browsers offer DTLS-SRTP: their leg is a WebRTC leg.
        MediaTransport::WebRtc => {
            return prepare_webrtc(
                b2bua,
                offer,
                peer,
                answer_delay,
                now,
                opus_max_playback_rate,
            );
        }
        MediaTransport::Unsupported(_) => return Err((488, "Not Acceptable Here")),
    }
    let ports = b2bua
        .engine
        .allocate_ports()
        .map_err(|_| (503, "No Media Ports"))?;
    let local = LocalMedia {
        address: b2bua.engine.advertised_ip(peer.local.ip()),
        rtp_port: ports.rtp_port(),
    };
    let caps = b2bua.caps.clone();
    let started = if delayed {
        UasCall::offering(caps, local, answer_delay, now)
    } else {
        UasCall::new(offer, caps, local, answer_delay, now)
    };
    let (call, answer, actions) = started.map_err(|status| (status, "Not Acceptable Here"))?;
    let negotiated = call.negotiated().clone();
    let leg = RtpLeg::new(
        RtpLegConfig::from_negotiated(&negotiated, b2bua.engine.config().media_timeout()),
        now,
    );
    let prepared = Prepared {
        leg: Box::new(leg),
        sockets: ports.into(),
        config: negotiated.participant_config(),
    };
    Ok((call, answer, actions, prepared))
}

/// The WebRTC branch of [`prepare`]: the leg answers the browser's offer
/// (ICE-lite, DTLS-SRTP) on a socket from the media port range.
fn prepare_webrtc(
    b2bua: &B2bua,
    offer: &[u8],
    peer: &Peer,
    answer_delay: Duration,
    now: Instant,
    opus_max_playback_rate: Option<u32>,
) -> Result<Ready, (u16, &'static str)> {
    let offer = std::str::from_utf8(offer).map_err(|_| (488, "Bad SDP"))?;
    let media =
        webrtc_media(b2bua, peer.local, opus_max_playback_rate).ok_or((503, "No Media Ports"))?;
    let (leg, answer) = WebRtcLeg::answer(offer, media.local, &media.cfg, now).map_err(|e| {
        info!(error = %e, "WebRTC offer refused");
        (488, "Not Acceptable Here")
    })?;
    let webrtc = leg.negotiated().ok_or((488, "Not Acceptable Here"))?;
    let local = LocalMedia {
        address: media.advertised,
        rtp_port: media.local.port(),
    };
    let (call, actions) = UasCall::with_leg_answer(
        negotiated_of(&webrtc),
        b2bua.caps.clone(),
        local,
        answer_delay,
        now,
    );
    let sockets = media.sockets;
    let prepared = Prepared {
        leg: Box::new(leg),
        sockets,
        config: webrtc.participant,
    };
    Ok((call, answer, actions, prepared))
}

/// A socket from the media range and the settings of a WebRTC leg facing a
/// peer we reach from `signalling_local`.
pub(super) struct WebRtcMedia {
    /// The leg's own address: the socket's, made concrete when it is bound
    /// to a wildcard (the candidate carries `advertised`).
    pub(super) local: std::net::SocketAddr,
    /// The address in our ICE candidate and SDP.
    pub(super) advertised: std::net::IpAddr,
    /// The leg's settings: advertised address, `maxplaybackrate`.
    pub(super) cfg: crate::media::webrtc::WebRtcConfig,
    /// The socket (rtcp-mux: one) and its port lease.
    pub(super) sockets: LegSockets,
}

/// Allocates [`WebRtcMedia`]; `None` when the port range is exhausted.
pub(super) fn webrtc_media(
    b2bua: &B2bua,
    signalling_local: std::net::SocketAddr,
    opus_max_playback_rate: Option<u32>,
) -> Option<WebRtcMedia> {
    let ports = b2bua.engine.allocate_ports().ok()?;
    let bound = ports.rtp.local_addr().ok()?;
    let local_ip = if bound.ip().is_unspecified() {
        signalling_local.ip()
    } else {
        bound.ip()
    };
    let advertised = b2bua.engine.advertised_ip(signalling_local.ip());
    let mut cfg = (*b2bua.webrtc).clone();
    cfg.advertised_ip = Some(advertised);
    if opus_max_playback_rate.is_some() {
        cfg.opus_max_playback_rate = opus_max_playback_rate;
    }
    Some(WebRtcMedia {
        local: std::net::SocketAddr::new(local_ip, bound.port()),
        advertised,
        cfg,
        sockets: LegSockets {
            main: ports.rtp,
            rtcp: None,
            lease: Some(ports.lease),
        },
    })
}

/// What a WebRTC leg negotiated, as the call state machines see it (the
/// leg owns addresses and directions).
pub(super) fn negotiated_of(webrtc: &crate::media::webrtc::Negotiated) -> Negotiated {
    Negotiated {
        media_index: 0,
        codec: webrtc.participant.codec,
        telephone_event: webrtc.participant.telephone_event,
        remote_rtp: None,
        remote_rtcp: None,
        remote_direction: Direction::SendRecv,
        local_direction: Direction::SendRecv,
        remote_ptime: None,
    }
}

/// Has the participant's WebRTC leg answer a re-offer, inside the room task.
pub(super) async fn reanswer_webrtc(
    room: &RoomHandle,
    participant: ParticipantId,
    offer: String,
) -> Option<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let now = Instant::now();
    room.send(Command::UpdateLeg(
        participant,
        Box::new(move |leg: &mut dyn Leg| {
            let answer = leg
                .as_any_mut()
                .and_then(|a| a.downcast_mut::<WebRtcLeg>())
                .and_then(|w| match w.reanswer(&offer, now) {
                    Ok(sdp) => Some(sdp),
                    Err(e) => {
                        info!(error = %e, "WebRTC re-offer refused");
                        None
                    }
                });
            let _ = tx.send(answer);
        }),
    ))
    .await
    .ok()?;
    rx.await.ok().flatten()
}

/// Joins the call's room: an echo room of its own, or the named conference.
async fn join(
    b2bua: &B2bua,
    target: &CallTarget,
    id: ParticipantId,
    prepared: Prepared,
    events: mpsc::UnboundedSender<LegEvent>,
) -> Result<RoomHandle, EngineError> {
    let engine = &b2bua.engine;
    let room = match target {
        CallTarget::Echo => engine.create_room(RoomConfig {
            echo_delay_ms: Some(engine.config().echo_delay_ms),
            max_participants: 1,
            ..RoomConfig::default()
        })?,
        CallTarget::Conference(name) => engine.named_room(
            name,
            RoomConfig {
                join_beep: true,
                max_participants: engine.config().max_room_size,
                dtmf_forwarding: DtmfForwarding::Never,
                ..RoomConfig::default()
            },
        )?,
    };
    room.add(
        id,
        prepared.leg,
        prepared.sockets,
        prepared.config,
        Some(events),
    )
    .await?;
    Ok(room)
}

/// Answers an INVITE the dialplan sent to `target` and runs the call to
/// its end. `invite` is the INVITE's server transaction (100 Trying sent).
pub async fn answer<S: InviteServer>(
    b2bua: &Arc<B2bua>,
    invite: &mut S,
    target: CallTarget,
    peer: Peer,
    answer_delay: Duration,
) {
    let metrics = b2bua.engine.metrics().clone();
    metrics.media.calls.inc();
    let count = CallCount(metrics.media.calls.clone());
    let request = invite.original().clone();
    let mut dialog = Dialog::new(
        request.clone(),
        peer.clone(),
        b2bua.core.server_name().to_string(),
    );
    let now = Instant::now();
    let (mut call, answer_sdp, actions, prepared) =
        match prepare(b2bua, &request.body, &peer, answer_delay, now, None) {
            Ok(ready) => ready,
            Err((status, reason)) => {
                info!(status, reason, ?target, "B2BUA call refused");
                let mut response = dialog.response(&request, status, None);
                response.status_code = StatusCode::Other(status, reason.into());
                invite.respond(response);
                drop(count);
                while invite.next_request().await.is_some() {}
                return;
            }
        };
    set_reliability(&mut call, &request);
    let min_se = b2bua.core.limits().min_session_expires_secs;
    if let Some(refusal) = take_session_request(&mut call, &dialog, &request, min_se) {
        invite.respond(refusal);
        drop(count);
        while invite.next_request().await.is_some() {}
        return;
    }
    let Ok(call_id) = request.call_id_header().map(|h| h.value().to_string()) else {
        return;
    };
    let key: DialogKey = (call_id, dialog.tag.clone());
    let (dialog_tx, mut dialog_rx) = mpsc::unbounded_channel::<Box<Transaction>>();
    b2bua.register(key.clone(), dialog_tx);
    let (leg_tx, mut leg_rx) = mpsc::unbounded_channel::<LegEvent>();
    let (bye_tx, mut bye_rx) = mpsc::unbounded_channel::<u16>();
    let (refresh_tx, mut refresh_rx) = mpsc::unbounded_channel::<RefreshOutcome>();
    let participant = b2bua.engine.participant_id();
    let mut prepared = Some(prepared);
    let mut room: Option<RoomHandle> = None;
    let mut pending: Option<Transaction> = None;
    let mut invite_open = true;
    let mut queue: std::collections::VecDeque<Action> = actions.into();
    info!(?target, codec = ?call.negotiated().codec.kind, "B2BUA call");

    loop {
        // Carry out what the state machine asked for.
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Ring => queue.extend(call.handle(
                    CallEvent::Progress {
                        status: 180,
                        sdp: false,
                    },
                    Instant::now(),
                )),
                Action::Provisional { status, sdp, rseq } => invite.respond(dialog.provisional(
                    status,
                    sdp.then(|| answer_sdp.clone()),
                    rseq,
                )),
                Action::Answer => {
                    let joined = match prepared.take() {
                        Some(p) => join(b2bua, &target, participant, p, leg_tx.clone()).await,
                        None => Err(EngineError::RoomGone),
                    };
                    match joined {
                        Ok(handle) => {
                            let label = caller_label(&request);
                            let _ = handle.send(Command::Label(participant, label)).await;
                            room = Some(handle);
                            let body = (!call.answered_early()).then(|| answer_sdp.clone());
                            let response = dialog.response(&request, 200, body);
                            invite.respond(with_session_timer(
                                response,
                                &request,
                                &mut call,
                                Instant::now(),
                            ));
                        }
                        Err(e) => {
                            warn!(error = %e, "could not join the room");
                            let mut response = dialog.response(&request, 503, None);
                            response.status_code =
                                StatusCode::Other(503, "Media Services Not Available".into());
                            invite.respond(response);
                            queue.extend(call.handle(CallEvent::AnswerFailed, Instant::now()));
                        }
                    }
                }
                Action::RejectInvite(status) => {
                    invite.respond(dialog.response(&request, status, None))
                }
                Action::Reply(status, body) => {
                    if let Some(tx) = pending.take() {
                        let response = dialog.response(&tx.original, status, body);
                        let response =
                            with_session_timer(response, &tx.original, &mut call, Instant::now());
                        respond_and_keep(tx, response).await;
                    }
                }
                Action::Renegotiate(neg) => {
                    if let Some(room) = &room {
                        update_rtp_leg(room, participant, &neg).await;
                        let _ = room.send(Command::Hold(participant, neg.on_hold())).await;
                        info!(hold = neg.on_hold(), "re-INVITE");
                    }
                }
                Action::RenegotiateLeg { offer, hold } => {
                    let answer = match &room {
                        Some(room) => reanswer_webrtc(room, participant, offer).await,
                        None => None,
                    };
                    match answer {
                        Some(sdp) => {
                            queue.push_front(Action::Reply(200, Some(sdp)));
                            if let Some(room) = &room {
                                let _ = room.send(Command::Hold(participant, hold)).await;
                            }
                            info!(hold, "re-INVITE (WebRTC)");
                        }
                        None => queue.push_front(Action::Reply(488, None)),
                    }
                }
                Action::Dtmf(digit, ms) => {
                    if let Some(room) = &room {
                        let _ = room.send(Command::Dtmf(participant, digit, ms)).await;
                    }
                }
                Action::SendBye => {
                    if call.session_expired() {
                        info!("session expired (RFC 4028): BYE");
                    }
                    send_bye(&dialog.bye(), &peer, &b2bua.core, bye_tx.clone())
                }
                Action::SendRefresh => {
                    if let Some(value) = call.refresh_session_expires() {
                        debug!("session refresh (UPDATE)");
                        let update = dialog.session_refresh(value);
                        send_refresh(&update, &peer, &b2bua.core, refresh_tx.clone());
                    }
                }
                Action::Transfer(_) | Action::AttendedTransfer(_) => {
                    // Calls the gateway answers itself have nobody to transfer.
                }
                Action::Release => {}
            }
        }
        if call.state() == CallState::Ended {
            break;
        }
        let deadline = call.deadline();
        let event_now;
        tokio::select! {
            request = invite.next_request(), if invite_open => {
                event_now = Instant::now();
                let event = match request {
                    Some(r) if r.method == Method::Ack && !r.body.is_empty() => {
                        // A delayed offer's answer.
                        let actions = call.handle(CallEvent::AckWithSdp(&r.body), event_now);
                        queue.extend(actions);
                        continue;
                    }
                    Some(r) if r.method == Method::Ack => CallEvent::Ack,
                    Some(r) if r.method == Method::Cancel => CallEvent::Cancel,
                    Some(_) => continue,
                    None => {
                        // The INVITE transaction is over: stop polling it.
                        invite_open = false;
                        if call.state() != CallState::AwaitingAck {
                            continue;
                        }
                        CallEvent::AckTimeout
                    }
                };
                queue.extend(call.handle(event, event_now));
            }
            Some(tx) = dialog_rx.recv() => {
                event_now = Instant::now();
                let request = InDialog::of(&tx.original);
                dialog.refresh_target(&tx.original);
                if matches!(request.method(), Method::Invite | Method::Update)
                    && matches!(call.state(), CallState::AwaitingAck | CallState::Confirmed)
                    && let Some(refusal) = take_session_request(&mut call, &dialog, &tx.original, min_se)
                {
                    respond_and_keep(*tx, refusal).await;
                    continue;
                }
                pending = Some(*tx);
                queue.extend(call.handle(request.call_event(), event_now));
            }
            Some(event) = leg_rx.recv() => {
                event_now = Instant::now();
                match event {
                    LegEvent::Closed(reason, stats) => {
                        info!(?reason, received = stats.packets_received, sent = stats.packets_sent, "media leg closed");
                        queue.extend(call.handle(CallEvent::LegClosed(*reason), event_now));
                    }
                    LegEvent::Dtmf { digit, duration_ms } => debug!(%digit, duration_ms, "DTMF"),
                    LegEvent::Removed(_) => {
                        // Removed by someone else (the admin API): hang up.
                        info!("removed from the room");
                        room = None;
                        queue.extend(call.handle(CallEvent::Hangup, event_now));
                    }
                }
            }
            Some(status) = bye_rx.recv() => {
                queue.extend(call.handle(CallEvent::ByeDone(status), Instant::now()));
            }
            Some(outcome) = refresh_rx.recv() => {
                debug!(status = outcome.status, "session refresh answered");
                queue.extend(call.handle(CallEvent::RefreshDone(outcome), Instant::now()));
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                queue.extend(call.handle(CallEvent::Timer, Instant::now()));
            }
        }
    }
    b2bua.unregister(&key);
    if let Some(room) = &room {
        let _ = room.send(Command::Remove(participant)).await;
    }
    // Answer what raced the end (a BYE after ours).
    dialog_rx.close();
    while let Some(mut tx) = dialog_rx.recv().await {
        let response = dialog.response(&tx.original, 481, None);
        let _ = tx.respond(response).await;
    }
    // The call is over; let the INVITE transaction finish (absorb the ACK,
    // retransmit 487) without counting it as a call.
    drop(count);
    while invite.next_request().await.is_some() {}
    info!("B2BUA call ended");
}

/// Who a conference participant is: the user (or number) of the From URI.
fn caller_label(request: &Request) -> String {
    request
        .from_header()
        .ok()
        .and_then(|h| h.typed().ok())
        .and_then(|f| f.uri.user().map(str::to_string))
        .unwrap_or_default()
}

/// An in-dialog request, read once for the state machines.
pub(super) struct InDialog {
    method: Method,
    content_type: String,
    body: Vec<u8>,
    refer_to: String,
    rack: Option<RAck>,
}

impl InDialog {
    /// Reads what the state machines need from `request`.
    pub(super) fn of(request: &Request) -> InDialog {
        InDialog {
            method: request.method,
            content_type: request
                .headers
                .iter()
                .find_map(|h| match h {
                    Header::ContentType(ct) => Some(ct.value().to_string()),
                    _ => None,
                })
                .unwrap_or_default(),
            body: request.body.clone(),
            refer_to: super::call::refer_to(request).unwrap_or_default(),
            rack: request
                .headers
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case("RAck"))
                .and_then(|h| RAck::parse(h.value())),
        }
    }

    /// The request's method.
    pub(super) fn method(&self) -> Method {
        self.method
    }

    /// As an event for the answering side ([`UasCall`]).
    pub(super) fn call_event(&self) -> CallEvent<'_> {
        match self.method {
            Method::Bye => CallEvent::Bye,
            Method::Update if self.body.is_empty() => CallEvent::Refresh,
            Method::Invite | Method::Update => CallEvent::ReInvite(&self.body),
            Method::Info => CallEvent::Info(&self.content_type, &self.body),
            Method::Options => CallEvent::Options,
            Method::Refer => CallEvent::Refer(&self.refer_to),
            Method::PRack => CallEvent::Prack(self.rack.clone()),
            _ => CallEvent::Other,
        }
    }

    /// As an event for a leg we placed ([`super::uac::UacCall`]).
    pub(super) fn uac_event(&self) -> super::uac::UacEvent<'_> {
        use super::uac::UacEvent;
        match self.method {
            Method::Bye => UacEvent::Bye,
            Method::Update if self.body.is_empty() => UacEvent::Refresh,
            Method::Invite | Method::Update => UacEvent::ReInvite(&self.body),
            Method::Info => UacEvent::Info(&self.content_type, &self.body),
            Method::Options => UacEvent::Options,
            Method::Refer => UacEvent::Refer(&self.refer_to),
            _ => UacEvent::Other,
        }
    }
}

/// Sends the response to an in-dialog request and keeps its transaction
/// alive to retransmit it (and absorb the ACK of a re-INVITE).
pub(super) async fn respond_and_keep(mut tx: Transaction, response: Response) {
    let _ = tx.respond(response).await;
    tokio::spawn(async move { while tx.receive().await.is_some() {} });
}

/// Points a participant's RTP leg at a renegotiated address/direction.
pub(super) async fn update_rtp_leg(room: &RoomHandle, id: ParticipantId, neg: &Negotiated) {
    let update = neg.clone();
    let now = Instant::now();
    let _ = room
        .send(Command::UpdateLeg(
            id,
            Box::new(move |leg: &mut dyn Leg| {
                if let Some(rtp) = leg.as_any_mut().and_then(|a| a.downcast_mut::<RtpLeg>()) {
                    rtp.update(&update, now);
                }
            }),
        ))
        .await;
    // The codec or its payload types may have moved too (a 2xx answering
    // differently from the 183, a re-INVITE switching codec).
    let _ = room
        .send(Command::Reconfigure(id, Box::new(neg.participant_config())))
        .await;
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends BYE on a client transaction of its own; reports the final status
/// (408 when it timed out).
pub(super) fn send_bye(
    bye: &Request,
    peer: &Peer,
    core: &Arc<crate::sip::SipCore>,
    done: mpsc::UnboundedSender<u16>,
) {
    send_reporting(bye, peer, core, done, |r| r.status_code.code(), 408);
}

/// Sends our session refresh (UPDATE) to the caller the way [`send_bye`]
/// sends a BYE; `done` gets what its final response says of the timer.
pub(super) fn send_refresh(
    update: &Request,
    peer: &Peer,
    core: &Arc<crate::sip::SipCore>,
    done: mpsc::UnboundedSender<RefreshOutcome>,
) {
    send_reporting(
        update,
        peer,
        core,
        done,
        RefreshOutcome::of,
        RefreshOutcome::status(408),
    );
}

/// Sends an in-dialog request of ours to the caller; `done` gets `read` of
/// the first final response, or `timeout` when none came.
fn send_reporting<T: Send + 'static>(
    request: &Request,
    peer: &Peer,
    core: &Arc<crate::sip::SipCore>,
    done: mpsc::UnboundedSender<T>,
    read: fn(&Response) -> T,
    timeout: T,
) {
    let Ok(key) = TransactionKey::from_request(request, TransactionRole::Client) else {
        let _ = done.send(timeout);
        return;
    };
    let mut client = Transaction::new_client(
        key,
        request.clone(),
        core.transaction_layer().clone(),
        Some(peer.connection.clone()),
    );
    client.destination = peer.destination.clone();
    tokio::spawn(async move {
        let mut done = Some(done);
        if client.send().await.is_ok() {
            while let Some(message) = client.receive().await {
                if let SipMessage::Response(r) = message
                    && r.status_code.code() >= 200
                    && let Some(done) = done.take()
                {
                    // At once: the transaction lingers (Timer K, 5 s over
                    // UDP) to absorb retransmitted responses.
                    let _ = done.send(read(&r));
                }
            }
        }
        if let Some(done) = done {
            let _ = done.send(timeout);
        }
    });
}
