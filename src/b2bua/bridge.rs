//! Bridged calls: the caller's leg (a browser's WebRTC leg, or a phone's
//! RTP leg) and a leg we place towards a trunk, both participants of one
//! mixer room. Two independent dialogs: the trunk sees our Call-ID, tags,
//! Contact and media address only (topology hiding).
//!
//! The caller's side is the same [`UasCall`] state machine as calls the
//! gateway answers itself, told when to answer; the trunk's side is a
//! [`UacCall`]. This driver wires them: a 180/183 from the trunk goes to the
//! caller, its answer answers the caller, a failure moves on to the next
//! trunk (dialplan `failover_on`), and a hang-up on either side ends the
//! other.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::call::{Action, CallEvent, CallState};
use super::cdr::{CallRecord, LegRecord};
use super::driver::{
    ALLOW, CallCount, Dialog, InviteServer, Prepared, build_response, prepare, random_hex,
    reanswer_webrtc, send_bye, sleep_until,
};
use super::uac::{UacAction, UacCall, UacEvent, UacState, caller_status};
use super::{B2bua, CONTACT_PREFIX, DialogKey, Peer};
use crate::auth::client::Challenge;
use crate::dialplan::FailoverOn;
use crate::media::engine::{Command, LegEvent, PortPair, RoomHandle};
use crate::media::leg::{Leg, LegStats};
use crate::media::room::{ParticipantId, RoomConfig};
use crate::media::rtp::{RtpLeg, RtpLegConfig};
use crate::media::sdp::{Capabilities, Direction, LocalMedia, Negotiated, SessionOrigin};
use crate::sip::outbound::{NextHop, Outbound};
use crate::sip::{
    Header, HeadersExt, Method, Request, SipMessage, StatusCode, ToTypedHeader, Transaction, Uri,
    Version,
};
use crate::trunks::{CallPermit, DtmfMode, EarlyMediaPolicy, Trunk};

/// Where a bridged call goes: the dialplan's trunk action, resolved.
#[derive(Debug, Clone)]
pub struct TrunkRoute {
    /// Trunk names, in failover order.
    pub trunks: Vec<String>,
    /// Outcomes that move on to the next trunk.
    pub failover_on: Vec<FailoverOn>,
    /// The number to call (after the dialplan's rewrites).
    pub number: String,
    /// The caller as the trunk should see it (before the trunk's policy).
    pub caller: Caller,
}

/// The calling party.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User part / number.
    pub user: String,
    /// Display name.
    pub display: Option<String>,
}

/// How a bridged call ended, for the dialplan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeOutcome {
    /// The caller got its final response (answered, cancelled, or hung up).
    Done,
    /// Every trunk failed before answer and the caller has no final
    /// response yet: the dialplan's `on_failure` may continue, or the
    /// status (mapped for the caller) goes up.
    Failed(u16, String),
}

/// Whether `status` (or a timeout: 408) moves on to the next trunk.
fn fails_over(rules: &[FailoverOn], status: u16) -> bool {
    rules.iter().any(|rule| match rule {
        FailoverOn::Code(code) => *code == status,
        FailoverOn::Class(class) => status / 100 == *class,
        FailoverOn::Timeout => status == 408,
    })
}

/// What the trunk leg's INVITE transaction reports to the call task.
enum InviteReport {
    /// A response of the INVITE with this CSeq.
    Response(u32, crate::sip::Response),
    /// The transaction of the INVITE with this CSeq ended (after its final
    /// response, or on timeout).
    Ended(u32),
}

/// The B-leg: our dialog with the trunk.
struct TrunkLeg {
    trunk: Arc<Trunk>,
    _permit: CallPermit,
    hop: NextHop,
    call_id: String,
    from_tag: String,
    from: String,
    to: String,
    to_tag: Option<String>,
    uri: Uri,
    remote_target: Option<Uri>,
    route_set: Vec<String>,
    contact: String,
    cseq: u32,
    invite: Request,
    offer_text: String,
    uac: UacCall,
    ports: Option<PortPair>,
    participant: ParticipantId,
    joined: bool,
    invite_reports: mpsc::UnboundedReceiver<InviteReport>,
    invite_tx: mpsc::UnboundedSender<InviteReport>,
    /// The challenge to answer next: (401, not 407), the challenge.
    last_challenge: Option<(bool, Challenge)>,
    server_name: String,
    codec: Option<String>,
}

impl TrunkLeg {
    fn key(&self) -> DialogKey {
        (self.call_id.clone(), self.from_tag.clone())
    }

    /// A new INVITE (first, or with credentials) on this dialog.
    fn build_invite(&mut self, authorization: Option<Header>) -> Request {
        self.cseq += 1;
        let mut headers = vec![
            Header::Via(
                format!(
                    "SIP/2.0/{} {};branch=z9hG4bK-sbt{};rport",
                    self.hop.kind.via_name(),
                    self.hop.local,
                    random_hex(8)
                )
                .into(),
            ),
            Header::MaxForwards("70".into()),
            Header::From(self.from.clone().into()),
            Header::To(self.to.clone().into()),
            Header::CallId(self.call_id.clone().into()),
            Header::CSeq(format!("{} INVITE", self.cseq).into()),
            Header::Contact(self.contact.clone().into()),
            Header::Allow(ALLOW.into()),
            Header::UserAgent(self.server_name.clone().into()),
        ];
        let policy = &self.trunk.config.caller_id;
        if policy.anonymous {
            headers.push(Header::Other("Privacy".into(), "id".into()));
        }
        if (policy.asserted_identity || policy.anonymous)
            && let Some(number) = policy.number.as_deref()
        {
            headers.push(Header::Other(
                "P-Asserted-Identity".into(),
                format!(
                    "<sip:{}@{}>",
                    self.trunk.config.format_number(number),
                    self.trunk.config.domain()
                ),
            ));
        }
        if let Some(h) = authorization {
            headers.push(h);
        }
        headers.push(Header::ContentType("application/sdp".into()));
        headers.push(Header::ContentLength((self.offer_text.len() as u32).into()));
        let request = Request {
            method: Method::Invite,
            uri: self.uri.clone(),
            version: Version::V2,
            headers: headers.into(),
            body: self.offer_text.clone().into_bytes(),
        };
        self.invite = request.clone();
        request
    }

    /// An in-dialog request (BYE, INFO) after the trunk answered.
    fn in_dialog(&mut self, method: Method, body: Option<(&str, String)>) -> Request {
        self.cseq += 1;
        let mut headers = vec![Header::Via(
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK-sbt{};rport",
                self.hop.kind.via_name(),
                self.hop.local,
                random_hex(8)
            )
            .into(),
        )];
        for route in &self.route_set {
            headers.push(Header::Route(route.clone().into()));
        }
        headers.push(Header::MaxForwards("70".into()));
        headers.push(Header::From(self.from.clone().into()));
        let to = match &self.to_tag {
            Some(tag) => format!("{};tag={tag}", self.to),
            None => self.to.clone(),
        };
        headers.push(Header::To(to.into()));
        headers.push(Header::CallId(self.call_id.clone().into()));
        headers.push(Header::CSeq(format!("{} {method}", self.cseq).into()));
        headers.push(Header::UserAgent(self.server_name.clone().into()));
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
            uri: self
                .remote_target
                .clone()
                .unwrap_or_else(|| self.uri.clone()),
            version: Version::V2,
            headers: headers.into(),
            body,
        }
    }

    /// Learns the dialog from a response: the trunk's tag, Contact and
    /// Record-Route set (reversed, RFC 3261 §12.1.2).
    fn learn(&mut self, response: &crate::sip::Response) {
        if self.to_tag.is_none()
            && let Ok(to) = response.to_header()
            && let Ok(to) = to.typed()
        {
            self.to_tag = to.params.iter().find_map(|p| match p {
                crate::sip::Param::Tag(t) => Some(t.value().to_string()),
                _ => None,
            });
        }
        let code = response.status_code.code();
        if (101..300).contains(&code) && self.to_tag.is_some() {
            if let Some(uri) = contact_uri(&response.headers) {
                self.remote_target = Some(uri);
            }
            let mut routes: Vec<String> = response
                .headers
                .iter()
                .filter_map(|h| match h {
                    Header::RecordRoute(rr) => Some(rr.value().to_string()),
                    _ => None,
                })
                .flat_map(|v| split_header_list(&v))
                .collect();
            if !routes.is_empty() {
                routes.reverse();
                self.route_set = routes;
            }
        }
    }

    /// A response to an in-dialog request from the trunk.
    fn response(
        &self,
        request: &Request,
        status: u16,
        body: Option<String>,
    ) -> crate::sip::Response {
        build_response(
            request,
            status,
            body,
            &self.from_tag,
            &self.contact,
            &self.server_name,
        )
    }
}

/// Splits a comma-separated header value list, respecting `<...>` and quotes.
fn split_header_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(value[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = value[start..].trim();
    if !last.is_empty() {
        out.push(last.to_string());
    }
    out
}

/// The URI of the first Contact header.
fn contact_uri(headers: &crate::sip::Headers) -> Option<Uri> {
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
    Uri::try_from(uri.as_str()).ok()
}

fn header_values(headers: &crate::sip::Headers, www: bool) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::WwwAuthenticate(v) if www => Some(v.value().to_string()),
            Header::ProxyAuthenticate(v) if !www => Some(v.value().to_string()),
            _ => None,
        })
        .collect()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Starts the B-leg on `trunk_name`: checks and takes a call slot,
/// resolves and connects, allocates media ports, sends the INVITE.
async fn start_trunk_leg(
    b2bua: &Arc<B2bua>,
    trunk_name: &str,
    route: &TrunkRoute,
) -> Result<TrunkLeg, (u16, String)> {
    let trunk = b2bua
        .trunks
        .get(trunk_name)
        .ok_or_else(|| (503, format!("unknown trunk {trunk_name}")))?;
    let permit = trunk
        .try_acquire(Instant::now())
        .map_err(|e| (503, format!("trunk {trunk_name}: {e}")))?;
    let cfg = &trunk.config;
    let (target_host, target_port) = match cfg.outbound_proxy.as_deref() {
        Some(proxy) => split_host_port(proxy, cfg.transport.default_port()),
        None => (cfg.host.clone(), cfg.port()),
    };
    let remote = *Outbound::resolve(&target_host, target_port)
        .await
        .map_err(|e| (503, e.to_string()))?
        .first()
        .ok_or((503, "no address".to_string()))?;
    let tls = crate::trunks::tls_client(cfg).map_err(|e| (503, e))?;
    let hop = b2bua
        .outbound
        .hop(cfg.transport.kind(), remote, tls.as_ref())
        .await
        .map_err(|e| (503, e.to_string()))?;
    let ports = b2bua
        .engine
        .allocate_ports()
        .map_err(|_| (503, "no media ports".to_string()))?;
    let local = LocalMedia {
        address: b2bua.engine.advertised_ip(hop.local.ip()),
        rtp_port: ports.rtp_port(),
    };
    // A trunk that takes DTMF as INFO gets no telephone-event: the room
    // would forward the caller's RFC 4733 events as well (every digit twice).
    let caps = Capabilities {
        codecs: cfg.codecs.clone(),
        telephone_event: cfg.dtmf == DtmfMode::Rfc4733,
        ..Capabilities::default()
    };
    let offer = crate::media::sdp::build_offer(
        &caps,
        local,
        Direction::SendRecv,
        &mut SessionOrigin::new(),
    );
    let from_tag = random_hex(6);
    let kind = hop.kind;
    let domain = cfg.domain().to_string();
    let uri_host = if cfg.domain.is_none() && cfg.port() != cfg.transport.default_port() {
        format!("{domain}:{}", cfg.port())
    } else {
        domain.clone()
    };
    let number = cfg.format_number(&route.number);
    let uri_text = format!("sip:{number}@{uri_host}{}", kind.uri_param());
    let uri = Uri::try_from(uri_text.as_str()).map_err(|_| (484, "bad number".to_string()))?;
    let policy = &cfg.caller_id;
    let from_host = if cfg.register.is_some() {
        domain.clone()
    } else {
        hop.local.ip().to_string()
    };
    let from = if policy.anonymous {
        format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={from_tag}")
    } else {
        let user = policy
            .number
            .clone()
            .unwrap_or_else(|| route.caller.user.clone());
        let user = cfg.format_number(&user);
        let display = policy.name.clone().or_else(|| route.caller.display.clone());
        let display = display
            .filter(|d| !d.is_empty())
            .map(|d| format!("\"{}\" ", d.replace(['"', '\\', '\r', '\n'], "")))
            .unwrap_or_default();
        format!("{display}<sip:{user}@{from_host}>;tag={from_tag}")
    };
    let to = format!("<sip:{number}@{uri_host}>");
    let contact = format!(
        "<sip:{CONTACT_PREFIX}{from_tag}@{}{}>",
        hop.contact,
        kind.uri_param()
    );
    let (invite_tx, invite_reports) = mpsc::unbounded_channel();
    let mut leg = TrunkLeg {
        trunk: trunk.clone(),
        _permit: permit,
        hop,
        call_id: random_hex(16),
        from_tag,
        from,
        to,
        to_tag: None,
        uri: uri.clone(),
        remote_target: None,
        route_set: Vec::new(),
        contact,
        cseq: 0,
        invite: Request {
            method: Method::Invite,
            uri: uri.clone(),
            version: Version::V2,
            headers: Vec::<Header>::new().into(),
            body: Vec::new(),
        },
        offer_text: offer.to_string(),
        uac: UacCall::new(offer),
        ports: Some(ports),
        participant: b2bua.engine.participant_id(),
        joined: false,
        invite_reports,
        invite_tx,
        last_challenge: None,
        server_name: b2bua.core.server_name().to_string(),
        codec: None,
    };
    let invite = leg.build_invite(None);
    send_invite(&b2bua.outbound, &leg, invite).map_err(|e| (503, e))?;
    info!(trunk = %trunk.name(), to = %leg.uri, call_id = %leg.call_id, "trunk leg: INVITE sent");
    Ok(leg)
}

/// `host[:port]` (IPv6 in brackets).
fn split_host_port(value: &str, default_port: u16) -> (String, u16) {
    let value = value.trim().trim_start_matches("sip:");
    if let Some(rest) = value.strip_prefix('[')
        && let Some((host, port)) = rest.split_once(']')
    {
        let port = port.trim_start_matches(':').parse().unwrap_or(default_port);
        return (host.to_string(), port);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (host.to_string(), port.parse().unwrap_or(default_port))
        }
        _ => (value.to_string(), default_port),
    }
}

/// Sends an INVITE on its own client transaction; its responses (and its
/// end) arrive on the leg's report channel.
fn send_invite(outbound: &Outbound, leg: &TrunkLeg, invite: Request) -> Result<(), String> {
    let mut client = outbound
        .client(invite, &leg.hop)
        .map_err(|e| e.to_string())?;
    let reports = leg.invite_tx.clone();
    let cseq = leg.cseq;
    tokio::spawn(
        async move {
            if let Err(e) = client.send().await {
                debug!(error = %e, "INVITE to trunk not sent");
            } else {
                while let Some(message) = client.receive().await {
                    if let SipMessage::Response(r) = message
                        && reports.send(InviteReport::Response(cseq, r)).is_err()
                    {
                        break;
                    }
                }
            }
            let _ = reports.send(InviteReport::Ended(cseq));
        }
        .in_current_span(),
    );
    Ok(())
}

/// Sends a request on its own client transaction and forgets it; the final
/// status goes to `done` when given.
fn send_in_dialog(
    outbound: &Arc<Outbound>,
    hop: &NextHop,
    request: Request,
    done: Option<mpsc::UnboundedSender<u16>>,
) {
    let client = outbound.client(request, hop);
    tokio::spawn(
        async move {
            let mut status = 408;
            if let Ok(mut client) = client
                && client.send().await.is_ok()
            {
                while let Some(message) = client.receive().await {
                    if let SipMessage::Response(r) = message
                        && r.status_code.code() >= 200
                    {
                        status = r.status_code.code();
                    }
                }
            }
            if let Some(done) = done {
                let _ = done.send(status);
            }
        }
        .in_current_span(),
    );
}

async fn recv_invite_report(leg: &mut Option<TrunkLeg>) -> Option<InviteReport> {
    match leg {
        Some(leg) => leg.invite_reports.recv().await,
        None => std::future::pending().await,
    }
}

/// Bridges the caller's INVITE to the trunks of `route`, in order, and runs
/// the call to its end. `invite` is the caller's INVITE server transaction
/// (100 Trying sent).
pub async fn bridge<S: InviteServer>(
    b2bua: &Arc<B2bua>,
    invite: &mut S,
    route: TrunkRoute,
    peer: Peer,
) -> BridgeOutcome {
    let request = invite.original().clone();
    let call_id = request
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    let span = info_span!("bridge", call_id = %call_id);
    bridge_inner(b2bua, invite, route, peer, request, call_id)
        .instrument(span)
        .await
}

async fn bridge_inner<S: InviteServer>(
    b2bua: &Arc<B2bua>,
    invite: &mut S,
    route: TrunkRoute,
    peer: Peer,
    request: Request,
    a_call_id: String,
) -> BridgeOutcome {
    let metrics = b2bua.engine.metrics().clone();
    metrics.media.calls.inc();
    let _count = CallCount(metrics.media.calls.clone());
    let started = now_unix();
    let mut dialog = Dialog {
        tag: random_hex(6),
        contact: String::new(),
        invite: request.clone(),
        peer: peer.clone(),
        server_name: b2bua.core.server_name().to_string(),
        bye_cseq: 0,
    };
    dialog.contact = format!(
        "<sip:{CONTACT_PREFIX}{}@{}{}>",
        dialog.tag,
        peer.local,
        peer.kind.uri_param()
    );
    let now = Instant::now();
    // The caller's media leg is prepared once and kept across failover.
    let (mut a, answer_sdp, _ring, prepared) = match prepare(
        b2bua,
        &request.body,
        &peer,
        std::time::Duration::from_secs(1),
        now,
    ) {
        Ok(ready) => ready,
        Err((status, reason)) => {
            info!(status, reason, "bridged call refused");
            let mut response = dialog.response(&request, status, None);
            response.status_code = StatusCode::Other(status, reason.into());
            invite.respond(response);
            return BridgeOutcome::Done;
        }
    };
    a.wait_for_answer();
    let a_codec = a.negotiated().codec.kind.name().to_string();
    let room = match b2bua.engine.create_room(RoomConfig {
        max_participants: 2,
        ..RoomConfig::default()
    }) {
        Ok(room) => room,
        Err(e) => {
            warn!(error = %e, "no room for the call");
            let mut response = dialog.response(&request, 503, None);
            response.status_code = StatusCode::Other(503, "Media Services Not Available".into());
            invite.respond(response);
            return BridgeOutcome::Done;
        }
    };
    let a_key: DialogKey = (a_call_id.clone(), dialog.tag.clone());
    let (dialog_tx, mut dialog_rx) = mpsc::unbounded_channel::<Transaction>();
    b2bua.register(a_key.clone(), dialog_tx.clone());
    let a_id = b2bua.engine.participant_id();
    let (a_leg_tx, mut a_leg_rx) = mpsc::unbounded_channel::<LegEvent>();
    let (b_leg_tx, mut b_leg_rx) = mpsc::unbounded_channel::<LegEvent>();
    let (a_bye_tx, mut a_bye_rx) = mpsc::unbounded_channel::<u16>();
    let (b_bye_tx, mut b_bye_rx) = mpsc::unbounded_channel::<u16>();
    let mut a_prepared: Option<Prepared> = Some(prepared);
    let mut a_joined = false;
    let mut a_pending: Option<Transaction> = None;
    let mut b_pending: Option<Transaction> = None;
    let mut invite_open = true;
    let mut trunks = route.trunks.clone().into_iter();
    let mut b: Option<TrunkLeg> = None;
    let mut last_failure: (u16, String) = (503, "no trunk available".into());
    let mut answered_at: Option<f64> = None;
    let mut early_sent = false;
    let mut end_reason = String::from("unknown");
    let mut trunk_used: Option<String> = None;
    let mut b_codec: Option<String> = None;
    let mut a_stats: Option<LegStats> = None;
    let mut b_stats: Option<LegStats> = None;
    let mut outcome: Option<BridgeOutcome> = None;
    let mut a_queue: std::collections::VecDeque<Action> = Default::default();
    let mut b_queue: std::collections::VecDeque<UacAction> = Default::default();
    let mut need_next_trunk = true;

    loop {
        // Start (or restart) the trunk leg while the caller still waits.
        while need_next_trunk && a.state() == CallState::Ringing {
            need_next_trunk = false;
            let Some(name) = trunks.next() else {
                let (status, reason) = last_failure.clone();
                info!(status, %reason, "every trunk failed");
                outcome = Some(BridgeOutcome::Failed(status, reason));
                break;
            };
            match start_trunk_leg(b2bua, &name, &route).await {
                Ok(leg) => {
                    b2bua.register(leg.key(), dialog_tx.clone());
                    trunk_used = Some(name);
                    b = Some(leg);
                }
                Err((status, reason)) => {
                    info!(trunk = %name, status, %reason, "trunk skipped");
                    last_failure = (status, reason);
                    need_next_trunk = true;
                }
            }
        }
        if outcome.is_some() {
            break;
        }
        // The trunk leg's actions.
        while let Some(action) = b_queue.pop_front() {
            let Some(leg) = b.as_mut() else { break };
            match action {
                UacAction::Progress(status) => {
                    if a.state() == CallState::Ringing && !early_sent {
                        invite.respond(dialog.response(&request, status, None));
                    }
                }
                UacAction::EarlyMedia(neg) => {
                    if leg.trunk.config.early_media == EarlyMediaPolicy::Forward
                        && a.state() == CallState::Ringing
                    {
                        let joined_b = join_trunk_leg(b2bua, &room, leg, &neg, &b_leg_tx).await;
                        let joined_a =
                            join_caller(&room, a_id, &mut a_prepared, &mut a_joined, &a_leg_tx)
                                .await;
                        if joined_b && joined_a {
                            early_sent = true;
                            invite.respond(dialog.response(
                                &request,
                                183,
                                Some(answer_sdp.clone()),
                            ));
                            info!("early media from the trunk");
                        }
                    }
                }
                UacAction::Answered(neg) => {
                    b_codec = Some(neg.codec.kind.name().to_string());
                    leg.codec = b_codec.clone();
                    if leg.joined {
                        update_rtp_leg(&room, leg.participant, &neg).await;
                    } else {
                        join_trunk_leg(b2bua, &room, leg, &neg, &b_leg_tx).await;
                    }
                    answered_at = Some(now_unix());
                    info!(codec = %neg.codec.kind.name(), "trunk answered");
                    a_queue.extend(a.handle(CallEvent::Answer, Instant::now()));
                }
                UacAction::SendAck => {
                    // The transaction layer ACKs the 2xx (and its retransmissions).
                }
                UacAction::SendAuthenticated => {
                    let resent = resend_with_credentials(b2bua, leg);
                    if !resent {
                        b_queue.extend(leg.uac.handle(UacEvent::Failure(403), Instant::now()));
                    }
                }
                UacAction::SendCancel => {
                    let cancel = crate::proxy::make_cancel(&leg.invite);
                    send_in_dialog(&b2bua.outbound, &leg.hop, cancel, None);
                }
                UacAction::SendBye => {
                    let bye = leg.in_dialog(Method::Bye, None);
                    send_in_dialog(&b2bua.outbound, &leg.hop, bye, Some(b_bye_tx.clone()));
                }
                UacAction::Failed(status) => {
                    info!(trunk = %leg.trunk.name(), status, "trunk leg failed");
                    last_failure = (
                        status,
                        format!("trunk {} answered {status}", leg.trunk.name()),
                    );
                    if a.state() == CallState::Ringing
                        && !early_sent
                        && fails_over(&route.failover_on, status)
                    {
                        need_next_trunk = true;
                    } else if a.state() == CallState::Ringing {
                        let (code, _) = caller_status(status);
                        end_reason = format!("trunk {status}");
                        a_queue.extend(a.handle(CallEvent::Reject(code), Instant::now()));
                    }
                }
                UacAction::Reply(status, body) => {
                    if let Some(mut tx) = b_pending.take() {
                        let response = leg.response(&tx.original, status, body);
                        let _ = tx.respond(response).await;
                        tokio::spawn(async move { while tx.receive().await.is_some() {} });
                    }
                }
                UacAction::Renegotiate(neg) => {
                    update_rtp_leg(&room, leg.participant, &neg).await;
                    let _ = room
                        .send(Command::Hold(leg.participant, neg.on_hold()))
                        .await;
                    info!(hold = neg.on_hold(), "re-INVITE from the trunk");
                }
                UacAction::Dtmf(digit, ms) => {
                    // INFO from the trunk: to the caller as RFC 4733.
                    let _ = room.send(Command::Dtmf(leg.participant, digit, ms)).await;
                }
                UacAction::RemoteHangup => {
                    end_reason = "trunk hung up".into();
                    a_queue.extend(a.handle(CallEvent::Hangup, Instant::now()));
                }
                UacAction::Release => {}
            }
        }
        // The trunk leg ended: forget it (a failover starts a fresh one).
        if b.as_ref()
            .is_some_and(|leg| leg.uac.state() == UacState::Ended)
        {
            if let Some(leg) = b.take() {
                b2bua.unregister(&leg.key());
                if leg.joined {
                    let _ = room.send(Command::Remove(leg.participant)).await;
                }
            }
            continue;
        }
        // The caller's actions.
        while let Some(action) = a_queue.pop_front() {
            match action {
                Action::Ring => {}
                Action::Answer => {
                    if join_caller(&room, a_id, &mut a_prepared, &mut a_joined, &a_leg_tx).await {
                        invite.respond(dialog.response(&request, 200, Some(answer_sdp.clone())));
                    } else {
                        invite.respond(dialog.response(&request, 500, None));
                        a.handle(CallEvent::Cancel, Instant::now());
                        end_reason = "caller media failed".into();
                        if let Some(leg) = b.as_mut() {
                            b_queue.extend(leg.uac.handle(UacEvent::Hangup, Instant::now()));
                        }
                    }
                }
                Action::RejectInvite(status) => {
                    let mut response = dialog.response(&request, status, None);
                    if status == 487 {
                        response.status_code = StatusCode::RequestTerminated;
                    }
                    invite.respond(response);
                }
                Action::Reply(status, body) => {
                    if let Some(mut tx) = a_pending.take() {
                        let response = dialog.response(&tx.original, status, body);
                        let _ = tx.respond(response).await;
                        tokio::spawn(async move { while tx.receive().await.is_some() {} });
                    }
                }
                Action::Renegotiate(neg) => {
                    update_rtp_leg(&room, a_id, &neg).await;
                    let _ = room.send(Command::Hold(a_id, neg.on_hold())).await;
                    info!(hold = neg.on_hold(), "re-INVITE from the caller");
                }
                Action::RenegotiateLeg { offer, hold } => {
                    match reanswer_webrtc(&room, a_id, offer).await {
                        Some(sdp) => {
                            a_queue.push_front(Action::Reply(200, Some(sdp)));
                            let _ = room.send(Command::Hold(a_id, hold)).await;
                            info!(hold, "re-INVITE from the browser");
                        }
                        None => a_queue.push_front(Action::Reply(488, None)),
                    }
                }
                Action::Dtmf(digit, ms) => {
                    // INFO from the caller: to the trunk in its DTMF mode.
                    match b.as_mut() {
                        Some(leg) if leg.trunk.config.dtmf == DtmfMode::Info => {
                            let body = format!("Signal={digit}\r\nDuration={ms}\r\n");
                            let info =
                                leg.in_dialog(Method::Info, Some(("application/dtmf-relay", body)));
                            send_in_dialog(&b2bua.outbound, &leg.hop, info, None);
                        }
                        _ => {
                            let _ = room.send(Command::Dtmf(a_id, digit, ms)).await;
                        }
                    }
                }
                Action::SendBye => send_bye(&dialog.bye(), &peer, &b2bua.core, a_bye_tx.clone()),
                Action::Release => {}
            }
        }
        if a.state() == CallState::Ended {
            if let Some(leg) = b.as_mut()
                && !matches!(leg.uac.state(), UacState::Ending | UacState::Cancelling)
            {
                if end_reason == "unknown" {
                    end_reason = "caller hung up".into();
                }
                b_queue.extend(leg.uac.handle(UacEvent::Hangup, Instant::now()));
                continue;
            }
            if b.is_none() {
                break;
            }
        }
        let a_deadline = a.deadline();
        let b_deadline = b.as_ref().and_then(|leg| leg.uac.deadline());
        tokio::select! {
            next = invite.next_request(), if invite_open => {
                let now = Instant::now();
                let event = match next {
                    Some(r) if r.method == Method::Ack => CallEvent::Ack,
                    Some(r) if r.method == Method::Cancel => {
                        end_reason = "caller cancelled".into();
                        CallEvent::Cancel
                    }
                    Some(_) => continue,
                    None => {
                        invite_open = false;
                        if a.state() != CallState::AwaitingAck {
                            continue;
                        }
                        CallEvent::AckTimeout
                    }
                };
                a_queue.extend(a.handle(event, now));
            }
            Some(tx) = dialog_rx.recv() => {
                let now = Instant::now();
                let content_type = tx.original.headers.iter().find_map(|h| match h {
                    Header::ContentType(ct) => Some(ct.value().to_string()),
                    _ => None,
                }).unwrap_or_default();
                let body = tx.original.body.clone();
                let method = tx.original.method;
                let from_trunk = tx
                    .original
                    .call_id_header()
                    .is_ok_and(|h| h.value() != a_call_id);
                if from_trunk {
                    let Some(leg) = b.as_mut() else {
                        let mut tx = tx;
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                        continue;
                    };
                    b_pending = Some(tx);
                    let event = match method {
                        Method::Bye => UacEvent::Bye,
                        Method::Invite | Method::Update => UacEvent::ReInvite(&body),
                        Method::Info => UacEvent::Info(&content_type, &body),
                        Method::Options => UacEvent::Options,
                        _ => UacEvent::Other,
                    };
                    b_queue.extend(leg.uac.handle(event, now));
                } else {
                    a_pending = Some(tx);
                    let event = match method {
                        Method::Bye => {
                            end_reason = "caller hung up".into();
                            CallEvent::Bye
                        }
                        Method::Invite | Method::Update => CallEvent::ReInvite(&body),
                        Method::Info => CallEvent::Info(&content_type, &body),
                        Method::Options => CallEvent::Options,
                        _ => CallEvent::Other,
                    };
                    a_queue.extend(a.handle(event, now));
                }
            }
            report = recv_invite_report(&mut b) => {
                let now = Instant::now();
                let Some(leg) = b.as_mut() else { continue };
                match report {
                    Some(InviteReport::Response(cseq, _) | InviteReport::Ended(cseq)) if cseq != leg.cseq => {
                        // From an INVITE we already replaced (answered challenge).
                    }
                    Some(InviteReport::Response(_, response)) => {
                        leg.learn(&response);
                        let status = response.status_code.code();
                        let body = response.body.clone();
                        let body = (!body.is_empty()).then_some(body.as_slice());
                        let event = match status {
                            100 => continue,
                            101..=199 => UacEvent::Provisional(status, body),
                            200..=299 => UacEvent::Success(body),
                            401 | 407 if can_authenticate(leg, &response) => UacEvent::Challenge,
                            _ => UacEvent::Failure(status),
                        };
                        b_queue.extend(leg.uac.handle(event, now));
                    }
                    Some(InviteReport::Ended(_)) | None => {
                        // The newest INVITE's transaction ended without a
                        // final answer: Timer B.
                        if matches!(leg.uac.state(), UacState::Calling | UacState::Proceeding | UacState::Cancelling) {
                            b_queue.extend(leg.uac.handle(UacEvent::Timeout, now));
                        }
                    }
                }
            }
            Some(event) = a_leg_rx.recv() => {
                match event {
                    LegEvent::Closed(reason, stats) => {
                        info!(?reason, "caller's media closed");
                        a_stats = Some(stats);
                        end_reason = format!("caller media: {reason:?}");
                        a_queue.extend(a.handle(CallEvent::LegClosed(reason), Instant::now()));
                        if let Some(leg) = b.as_mut() {
                            b_queue.extend(leg.uac.handle(UacEvent::Hangup, Instant::now()));
                        }
                    }
                    LegEvent::Removed(stats) => a_stats = Some(stats),
                    LegEvent::Dtmf { digit, duration_ms } => {
                        debug!(%digit, duration_ms, "DTMF from the caller");
                        if let Some(leg) = b.as_mut()
                            && leg.trunk.config.dtmf == DtmfMode::Info
                            && leg.uac.state() == UacState::Confirmed
                        {
                            let body = format!("Signal={digit}\r\nDuration={duration_ms}\r\n");
                            let info = leg.in_dialog(Method::Info, Some(("application/dtmf-relay", body)));
                            send_in_dialog(&b2bua.outbound, &leg.hop, info, None);
                        }
                    }
                }
            }
            Some(event) = b_leg_rx.recv() => {
                match event {
                    LegEvent::Closed(reason, stats) => {
                        info!(?reason, "trunk media closed");
                        b_stats = Some(stats);
                        end_reason = format!("trunk media: {reason:?}");
                        if let Some(leg) = b.as_mut() {
                            leg.joined = false;
                            b_queue.extend(leg.uac.handle(UacEvent::Hangup, Instant::now()));
                        }
                        a_queue.extend(a.handle(CallEvent::Hangup, Instant::now()));
                    }
                    LegEvent::Removed(stats) => b_stats = Some(stats),
                    LegEvent::Dtmf { digit, duration_ms } => debug!(%digit, duration_ms, "DTMF from the trunk"),
                }
            }
            Some(status) = a_bye_rx.recv() => {
                a_queue.extend(a.handle(CallEvent::ByeDone(status), Instant::now()));
            }
            Some(status) = b_bye_rx.recv() => {
                if let Some(leg) = b.as_mut() {
                    b_queue.extend(leg.uac.handle(UacEvent::ByeDone(status), Instant::now()));
                }
            }
            _ = sleep_until(a_deadline), if a_deadline.is_some() => {
                a_queue.extend(a.handle(CallEvent::Timer, Instant::now()));
            }
            _ = sleep_until(b_deadline), if b_deadline.is_some() => {
                if let Some(leg) = b.as_mut() {
                    b_queue.extend(leg.uac.handle(UacEvent::Timer, Instant::now()));
                }
            }
        }
    }

    // Tear down: the caller's media if it never joined, the trunk leg (if a
    // failure left one), the caller's dialog, the room.
    drop(a_prepared.take());
    if let Some(leg) = b.take() {
        b2bua.unregister(&leg.key());
    }
    b2bua.unregister(&a_key);
    let _ = room.send(Command::Close).await;
    // Final counters arrive as `Removed` events when the room closes.
    let collect = async {
        while a_stats.is_none() || b_stats.is_none() {
            tokio::select! {
                Some(LegEvent::Removed(s) | LegEvent::Closed(_, s)) = a_leg_rx.recv(), if a_joined && a_stats.is_none() => a_stats = Some(s),
                Some(LegEvent::Removed(s) | LegEvent::Closed(_, s)) = b_leg_rx.recv(), if b_stats.is_none() => b_stats = Some(s),
                else => break,
            }
        }
    };
    drop(a_leg_tx);
    drop(b_leg_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), collect).await;
    dialog_rx.close();
    while let Some(mut tx) = dialog_rx.recv().await {
        let response = dialog.response(&tx.original, 481, None);
        let _ = tx.respond(response).await;
    }
    let ended = now_unix();
    let failed = matches!(outcome, Some(BridgeOutcome::Failed(..)));
    if failed {
        end_reason = format!("failed: {}", last_failure.1);
    }
    b2bua.cdr.write(CallRecord {
        call_id: a_call_id.clone(),
        caller: route.caller.user.clone(),
        callee: route.number.clone(),
        trunk: trunk_used,
        direction: "outbound",
        start: started,
        answer: answered_at,
        end: ended,
        duration: answered_at.map(|t| ended - t).unwrap_or(0.0),
        end_reason: end_reason.clone(),
        status: if answered_at.is_some() {
            200
        } else {
            last_failure.0
        },
        legs: vec![
            LegRecord::new("caller", Some(a_codec), a_stats),
            LegRecord::new("trunk", b_codec, b_stats),
        ],
    });
    info!(reason = %end_reason, "bridged call ended");
    match outcome {
        Some(outcome @ BridgeOutcome::Failed(..)) => outcome,
        _ => {
            // Let the INVITE transaction finish (absorb ACK / retransmit finals).
            while invite.next_request().await.is_some() {}
            BridgeOutcome::Done
        }
    }
}

/// Whether a 401/407 can be answered (credentials configured for its
/// realm); keeps the challenge for [`resend_with_credentials`].
fn can_authenticate(leg: &mut TrunkLeg, response: &crate::sip::Response) -> bool {
    let Some(creds) = leg.trunk.config.credentials() else {
        return false;
    };
    let www = response.status_code.code() == 401;
    let values = header_values(&response.headers, www);
    let Some(challenge) = Challenge::best(values.iter().map(String::as_str)) else {
        return false;
    };
    if creds.realm.as_deref().is_some_and(|r| r != challenge.realm) {
        return false;
    }
    leg.last_challenge = Some((www, challenge));
    true
}

/// Resends the INVITE with an Authorization answering the last challenge.
fn resend_with_credentials(b2bua: &Arc<B2bua>, leg: &mut TrunkLeg) -> bool {
    let Some(creds) = leg.trunk.config.credentials() else {
        return false;
    };
    let Some((www, challenge)) = leg.last_challenge.take() else {
        return false;
    };
    let value = challenge.authorization(
        &creds.username,
        &creds.password,
        "INVITE",
        &leg.uri.to_string(),
        1,
        &random_hex(8),
    );
    let header = if www {
        Header::Authorization(value.into())
    } else {
        Header::ProxyAuthorization(value.into())
    };
    let invite = leg.build_invite(Some(header));
    send_invite(&b2bua.outbound, leg, invite).is_ok()
}

/// Adds the trunk leg to the room as a plain RTP participant.
async fn join_trunk_leg(
    b2bua: &Arc<B2bua>,
    room: &RoomHandle,
    leg: &mut TrunkLeg,
    neg: &Negotiated,
    events: &mpsc::UnboundedSender<LegEvent>,
) -> bool {
    if leg.joined {
        update_rtp_leg(room, leg.participant, neg).await;
        return true;
    }
    let Some(ports) = leg.ports.take() else {
        return false;
    };
    let rtp = RtpLeg::new(
        RtpLegConfig::from_negotiated(neg, b2bua.engine.config().media_timeout()),
        Instant::now(),
    );
    match room
        .add(
            leg.participant,
            Box::new(rtp),
            ports.into(),
            neg.participant_config(),
            Some(events.clone()),
        )
        .await
    {
        Ok(()) => {
            leg.joined = true;
            true
        }
        Err(e) => {
            warn!(error = %e, "trunk leg could not join the room");
            false
        }
    }
}

/// Adds the caller's prepared leg to the room (once).
async fn join_caller(
    room: &RoomHandle,
    id: ParticipantId,
    prepared: &mut Option<Prepared>,
    joined: &mut bool,
    events: &mpsc::UnboundedSender<LegEvent>,
) -> bool {
    if *joined {
        return true;
    }
    let Some(p) = prepared.take() else {
        return false;
    };
    match room
        .add(id, p.leg, p.sockets, p.config, Some(events.clone()))
        .await
    {
        Ok(()) => {
            *joined = true;
            true
        }
        Err(e) => {
            warn!(error = %e, "caller could not join the room");
            false
        }
    }
}

/// Points a participant's RTP leg at a renegotiated address/direction.
async fn update_rtp_leg(room: &RoomHandle, id: ParticipantId, neg: &Negotiated) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_rules() {
        let rules = [
            FailoverOn::Code(503),
            FailoverOn::Class(6),
            FailoverOn::Timeout,
        ];
        assert!(fails_over(&rules, 503));
        assert!(fails_over(&rules, 603));
        assert!(fails_over(&rules, 408));
        assert!(!fails_over(&rules, 486));
        assert!(!fails_over(&rules, 500));
    }

    #[test]
    fn host_port_and_header_lists() {
        assert_eq!(
            split_host_port("10.0.0.1:5080", 5060),
            ("10.0.0.1".into(), 5080)
        );
        assert_eq!(
            split_host_port("proxy.example", 5060),
            ("proxy.example".into(), 5060)
        );
        assert_eq!(split_host_port("[::1]:5070", 5060), ("::1".into(), 5070));
        assert_eq!(
            split_header_list("<sip:a;lr>, \"x,y\" <sip:b>,<sip:c>"),
            ["<sip:a;lr>", "\"x,y\" <sip:b>", "<sip:c>"]
        );
    }
}
