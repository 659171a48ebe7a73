//! Bridged calls: the caller's leg (a browser's WebRTC leg, or a trunk's or
//! phone's RTP leg) and the legs we place (towards trunks, one after another
//! on failover; or towards browsers, all at once with WebRTC offers), both
//! sides participants of one mixer room. Independent dialogs: each side
//! sees our Call-ID, tags, Contact and media address only (topology hiding).
//!
//! The caller's side is the same [`super::call::UasCall`] state machine as
//! calls the gateway answers itself, told when to answer; each outgoing leg
//! is a [`UacCall`]. This driver wires them: a 180/183 goes to the caller,
//! the first answer wins (the other forks are cancelled) and answers the
//! caller, a failure moves on to the next trunk (dialplan `failover_on`),
//! and a hang-up on either side ends the other.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use super::call::{Action, CallEvent, CallState, RefreshOutcome, Replaces};
use super::cdr::{CallRecord, LegRecord, TransferRecord};
use super::driver::{
    ALLOW, CallCount, Dialog, InDialog, InviteServer, Prepared, build_response, contact_uri,
    negotiated_of, prepare, random_hex, reanswer_webrtc, respond_and_keep, send_bye, send_refresh,
    set_reliability, sleep_until, take_session_request, update_rtp_leg, webrtc_media,
    with_session_timer,
};
use super::uac::{UacAction, UacCall, UacEvent, UacState, caller_status};
use super::{B2bua, CONTACT_PREFIX, DialogKey, DialogSender, Peer};
use crate::auth::client::Challenge;
use crate::dialplan::FailoverOn;
use crate::media::engine::{
    Command, Detached, EngineError, Join, LegEvent, LegSockets, PortPair, RoomHandle,
};
use crate::media::leg::{Leg, LegStats};
use crate::media::room::{ParticipantId, RoomConfig};
use crate::media::rtp::{RtpLeg, RtpLegConfig};
use crate::media::sdp::{
    Capabilities, Direction, LocalMedia, Negotiated, SessionDescription, SessionOrigin,
};
use crate::media::webrtc::WebRtcLeg;
use crate::sip::acks::{AckGuard, ForkHandler, ack_for, ack_in_dialog};
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
    /// The trunk the call came from, when it did (trunk to trunk: transit).
    pub from_trunk: Option<String>,
}

/// The calling party.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User part / number.
    pub user: String,
    /// Display name.
    pub display: Option<String>,
    /// The caller asked for privacy (`Privacy: id`, `user` or `header`,
    /// RFC 3323/3325): an anonymous From everywhere, its identity only in
    /// P-Asserted-Identity towards trunks.
    pub private: bool,
    /// The identity a trusted trunk asserted (P-Asserted-Identity user),
    /// passed on to the next trunk instead of the From user.
    pub asserted: Option<String>,
}

/// One browser (registered binding) to ring with a WebRTC offer.
#[derive(Clone)]
pub struct BrowserTarget {
    /// The user's name (for the CDR and logs).
    pub user: String,
    /// Our domain for the user (To, From host).
    pub domain: String,
    /// The binding's Contact URI (Request-URI).
    pub uri: Uri,
    /// The flow to the browser.
    pub hop: NextHop,
    /// Path headers of the binding (Route set, RFC 3327).
    pub route: Vec<String>,
}

/// Browsers to ring at once; the first to answer takes the call.
#[derive(Clone)]
pub struct BrowserRoute {
    /// Every binding of the users the dialplan named.
    pub targets: Vec<BrowserTarget>,
    /// How long to ring before giving up (`NoAnswer`).
    pub ring_timeout: Duration,
    /// The caller as the browsers see it.
    pub caller: Caller,
    /// The number the caller dialled (for the CDR).
    pub callee: String,
    /// The trunk the call came from (for the CDR).
    pub from_trunk: Option<String>,
    /// Opus `maxplaybackrate` to ask of the browsers (8000 when the caller
    /// is G.711), `None` for the default.
    pub opus_max_playback_rate: Option<u32>,
}

/// What the outgoing side of a bridged call is.
#[derive(Clone)]
pub enum Destination {
    /// Trunks, one after another.
    Trunks(TrunkRoute),
    /// Browsers, all at once.
    Browsers(BrowserRoute),
}

/// How a bridged call ended, for the dialplan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeOutcome {
    /// The caller got its final response (answered, cancelled, or hung up).
    Done,
    /// Every leg failed before answer and the caller has no final response
    /// yet: the dialplan's `on_failure` may continue, or the status (mapped
    /// for the caller) goes up.
    Failed(u16, String),
    /// Nobody answered in time (browsers): `on_no_answer` may continue.
    NoAnswer,
}

/// Whether `status` (or a timeout: 408) moves on to the next trunk.
fn fails_over(rules: &[FailoverOn], status: u16) -> bool {
    rules.iter().any(|rule| match rule {
        FailoverOn::Code(code) => *code == status,
        FailoverOn::Class(class) => status / 100 == *class,
        FailoverOn::Timeout => status == 408,
    })
}

/// What an outgoing INVITE's transaction reports to the call task.
enum InviteReport {
    /// A response of the INVITE with this CSeq (boxed: the call's report
    /// channel allocates 32 slots at once).
    Response(u32, Box<crate::sip::Response>),
    /// The transaction of the INVITE with this CSeq ended (after its final
    /// response, or on timeout).
    Ended(u32),
}

/// Reports of every outgoing INVITE of a call, by leg.
type Reports = mpsc::UnboundedSender<(u64, InviteReport)>;

/// The media of an outgoing leg before it joins the room.
enum OutMedia {
    /// Plain RTP (trunks): the ports of our offer.
    Rtp(Option<PortPair>),
    /// WebRTC (browsers): the leg that made our offer, and its socket.
    WebRtc(Option<(Box<WebRtcLeg>, LegSockets)>),
}

/// An outgoing leg: our dialog with a trunk or a browser.
struct OutLeg {
    id: u64,
    trunk: Option<Arc<Trunk>>,
    _permit: Option<CallPermit>,
    /// Who it rings (trunk name or user), for logs and the CDR.
    label: String,
    /// Where requests in the dialog go (the INVITE's hop until
    /// [`follow_dialog`] moves it).
    hop: NextHop,
    /// Where the INVITE went: the base from which a fork's dialog is followed.
    invite_hop: NextHop,
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
    /// The CSeq number of our newest INVITE (its responses are the ones
    /// that count; a PRACK in the early dialog takes the next number).
    invite_cseq: u32,
    invite: Request,
    offer_text: String,
    uac: UacCall,
    media: OutMedia,
    participant: ParticipantId,
    joined: bool,
    /// The challenge to answer next: (401, not 407), the challenge.
    last_challenge: Option<(bool, Challenge)>,
    server_name: String,
    codec: Option<String>,
    /// The task running the newest INVITE's client transaction.
    invite_task: Option<tokio::task::AbortHandle>,
    /// Its INVITE was answered (2xx): once the leg is gone, its client
    /// transaction has nothing left to do (see `Drop`).
    answered: bool,
    /// Keeps the ACK of the 2xx for its retransmissions while the leg lives.
    ack: Option<AckGuard<NextHop>>,
    /// A leg placed for a blind transfer (REFER) of the caller's party.
    transfer: bool,
    /// The session interval we offer (RFC 4028), s; 0: no session timer.
    /// Raised by a 422's Min-SE.
    session_expires: u32,
    /// The Min-SE we send, s.
    min_se: u32,
    /// The caller's number for P-Asserted-Identity (RFC 3325), when the
    /// trunk's policy asserts or hides it: the fixed number, else the caller's.
    asserted: Option<String>,
    /// The caller asked for privacy: anonymous From, `Privacy: id` and the
    /// identity asserted, whatever the trunk's policy.
    private: bool,
}

impl OutLeg {
    fn key(&self) -> DialogKey {
        (self.call_id.clone(), self.from_tag.clone())
    }

    /// A new INVITE (first, or with credentials) on this dialog.
    fn build_invite(&mut self, authorization: Option<Header>) -> Request {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        // A new INVITE: a new early dialog (or none yet).
        self.to_tag = None;
        self.remote_target = None;
        self.route_set.clear();
        let mut headers = vec![
            new_via(&self.hop),
            Header::MaxForwards("70".into()),
            Header::From(self.from.clone().into()),
            Header::To(self.to.clone().into()),
            Header::CallId(self.call_id.clone().into()),
            Header::CSeq(format!("{} INVITE", self.cseq).into()),
            Header::Contact(self.contact.clone().into()),
            Header::Allow(ALLOW.into()),
            Header::UserAgent(self.server_name.clone().into()),
        ];
        if let Some(trunk) = &self.trunk {
            // RFC 3262: the trunk may send its 18x reliably (we PRACK them).
            let supported = if self.session_expires > 0 {
                "100rel, timer"
            } else {
                "100rel"
            };
            headers.push(Header::Supported(supported.into()));
            if self.session_expires > 0 {
                // RFC 4028: we offer to refresh the session ourselves.
                headers.push(Header::Other(
                    "Session-Expires".into(),
                    format!("{};refresher=uac", self.session_expires),
                ));
                headers.push(Header::Other("Min-SE".into(), self.min_se.to_string()));
            }
            let policy = &trunk.config.caller_id;
            let hidden = policy.anonymous || self.private;
            if hidden {
                headers.push(Header::Other("Privacy".into(), "id".into()));
            }
            if (policy.asserted_identity || hidden)
                && let Some(number) = self.asserted.as_deref()
            {
                headers.push(Header::Other(
                    "P-Asserted-Identity".into(),
                    format!(
                        "<sip:{}@{}>",
                        trunk.config.format_number(number),
                        trunk.config.domain()
                    ),
                ));
            }
        }
        for route in &self.route_set {
            headers.push(Header::Route(route.clone().into()));
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

    /// Takes a 422's `Min-SE` (RFC 4028 §6): true when it is larger than
    /// what we offered and at most a day, so that the INVITE can be sent
    /// again with it.
    fn accept_min_se(&mut self, response: &crate::sip::Response) -> bool {
        let min_se = response.headers.iter().find_map(|h| {
            let text = h.to_string();
            let (name, value) = text.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("min-se")
                .then(|| value.split(';').next()?.trim().parse::<u32>().ok())
                .flatten()
        });
        match min_se {
            Some(v) if self.session_expires > 0 && v > self.session_expires && v <= 86_400 => {
                self.session_expires = v;
                self.min_se = v;
                true
            }
            _ => false,
        }
    }

    /// An in-dialog request (BYE, INFO) after the trunk answered.
    fn in_dialog(&mut self, method: Method, body: Option<(&str, String)>) -> Request {
        self.cseq += 1;
        let mut headers = vec![new_via(&self.hop)];
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
    /// Record-Route set (reversed, RFC 3261 §12.1.2). A forking proxy's
    /// responses may come from several dialogs: the latest provisional's
    /// is followed (a PRACK goes to the dialog it acknowledges), the first
    /// 2xx's is the call's. Returns `false` for a response of another
    /// dialog once a 2xx settled ours (a second fork answering: hang it up).
    fn learn(&mut self, response: &crate::sip::Response) -> bool {
        let code = response.status_code.code();
        // Only a 1xx or 2xx makes a dialog (a 407's To tag is no dialog's).
        if !(101..300).contains(&code) {
            return true;
        }
        let tag = response
            .to_header()
            .ok()
            .and_then(|to| to.typed().ok())
            .and_then(|to| {
                to.params.iter().find_map(|p| match p {
                    crate::sip::Param::Tag(t) => Some(t.value().to_string()),
                    _ => None,
                })
            });
        if tag.is_some() && tag != self.to_tag {
            if self.answered {
                return false;
            }
            // Another early dialog, or the answer from another fork.
            self.to_tag = tag;
            self.remote_target = None;
            self.route_set.clear();
        }
        if self.to_tag.is_some() {
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
            // The 2xx settles the route set, an empty one included (RFC
            // 3261 §13.2.2.4): an early dialog's is only provisional.
            if !routes.is_empty() || (200..300).contains(&code) {
                routes.reverse();
                self.route_set = routes;
            }
        }
        true
    }

    /// Where the trunk's dialog wants our in-dialog requests (RFC 3261
    /// §12.2.1.1): the first Record-Route entry's host, else the remote
    /// target's (its Contact), as host and port. `None` when they stay on
    /// the INVITE's hop: through an outbound proxy (it routes the dialog),
    /// over TLS (the connection is verified for the trunk's name), towards
    /// browsers, or when nothing is known.
    fn dialog_destination(&self) -> Option<(String, u16)> {
        let trunk = self.trunk.as_ref()?;
        if trunk.config.outbound_proxy.is_some() || self.hop.kind == crate::sip::TransportKind::Tls
        {
            return None;
        }
        let uri = match self.route_set.first() {
            Some(route) => {
                let inner = match (route.find('<'), route.find('>')) {
                    (Some(a), Some(b)) if a < b => &route[a + 1..b],
                    _ => route.as_str(),
                };
                Uri::try_from(inner).ok()?
            }
            None => self.remote_target.clone()?,
        };
        let host = uri.host_with_port.host.to_string();
        let port = uri.host_with_port.port.map(|p| p.value()).unwrap_or(5060);
        Some((host, port))
    }

    /// The ACK of the 2xx that settled the dialog (RFC 3261 §13.2.2.4):
    /// to its remote target along its route set, CSeq of the INVITE.
    fn ack(&self) -> Request {
        let target = self
            .remote_target
            .clone()
            .unwrap_or_else(|| self.uri.clone());
        ack_for(
            &self.invite,
            self.to_tag.as_deref().unwrap_or_default(),
            target,
            &self.route_set,
        )
    }

    /// The ACK and a BYE for the dialog of `response` (a 2xx from a fork
    /// other than the one that answered first, RFC 3261 §13.2.2.4), and
    /// where that dialog's requests go ([`OutLeg::dialog_destination`]).
    fn ack_and_bye_for_fork(
        &mut self,
        response: &crate::sip::Response,
    ) -> (Request, Request, Option<(String, u16)>) {
        let ours = (
            self.to_tag.take(),
            self.remote_target.take(),
            std::mem::take(&mut self.route_set),
            self.answered,
        );
        self.answered = false;
        self.learn(response);
        let ack = self.ack();
        let bye = self.in_dialog(Method::Bye, None);
        let destination = self.dialog_destination();
        (
            self.to_tag,
            self.remote_target,
            self.route_set,
            self.answered,
        ) = ours;
        (ack, bye, destination)
    }

    /// A response to an in-dialog request from the trunk.
    fn response(
        &self,
        request: &Request,
        status: u16,
        body: Option<String>,
    ) -> crate::sip::Response {
        let mut response = build_response(
            request,
            status,
            body,
            &self.from_tag,
            &self.contact,
            &self.server_name,
        );
        // A refresh (re-INVITE or UPDATE) answered while a session timer
        // runs says it goes on (RFC 4028 §9): without it the peer takes the
        // timer as off. The refresher is named for that transaction.
        if (200..300).contains(&status)
            && matches!(request.method, Method::Invite | Method::Update)
            && let Some((interval, we_refresh)) = self.uac.session()
        {
            let refresher = if we_refresh { "uas" } else { "uac" };
            response.headers.push(Header::Other(
                "Session-Expires".into(),
                format!("{};refresher={refresher}", interval.as_secs()),
            ));
            response
                .headers
                .push(Header::Other("Require".into(), "timer".into()));
        }
        response
    }
}

/// The session timer a 2xx settled (RFC 4028 §7.4): its interval, and
/// whether we (the UAC) refresh. `None` when it has no Session-Expires.
fn session_timer(response: &crate::sip::Response) -> Option<(Duration, bool)> {
    let value = response.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("session-expires") || name.eq_ignore_ascii_case("x"))
            .then(|| value.trim().to_string())
    })?;
    let mut parts = value.split(';');
    let seconds: u64 = parts.next()?.trim().parse().ok()?;
    let we_refresh = !parts.any(|p| p.trim().eq_ignore_ascii_case("refresher=uas"));
    // RFC 4028 says at least 90 s (Min-SE); a shorter interval from a peer is
    // honoured anyway (refreshing more often is harmless).
    (seconds >= 2).then(|| (Duration::from_secs(seconds), we_refresh))
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

/// The parts of an outgoing leg every kind shares.
#[allow(clippy::too_many_arguments)]
fn new_out_leg(
    b2bua: &Arc<B2bua>,
    id: u64,
    label: String,
    hop: NextHop,
    uri: Uri,
    from: String,
    from_tag: String,
    to: String,
    offer_text: String,
    uac: UacCall,
    media: OutMedia,
) -> OutLeg {
    let contact = format!(
        "<sip:{CONTACT_PREFIX}{from_tag}@{}{}>",
        hop.contact,
        hop.kind.uri_param()
    );
    OutLeg {
        id,
        trunk: None,
        _permit: None,
        label,
        invite_hop: hop.clone(),
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
        invite_cseq: 0,
        invite: Request {
            method: Method::Invite,
            uri,
            version: Version::V2,
            headers: Vec::<Header>::new().into(),
            body: Vec::new(),
        },
        offer_text,
        uac,
        media,
        participant: b2bua.engine.participant_id(),
        joined: false,
        last_challenge: None,
        server_name: b2bua.core.server_name().to_string(),
        codec: None,
        invite_task: None,
        answered: false,
        ack: None,
        transfer: false,
        session_expires: 0,
        asserted: None,
        private: false,
        min_se: 90,
    }
}

/// Starts a leg towards `trunk_name`: checks and takes a call slot,
/// resolves and connects, allocates media ports, sends the INVITE.
async fn start_trunk_leg(
    b2bua: &Arc<B2bua>,
    id: u64,
    trunk_name: &str,
    route: &TrunkRoute,
    reports: &Reports,
) -> Result<OutLeg, (u16, String)> {
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
    let tls = match cfg.transport {
        crate::trunks::TrunkTransport::Tls => {
            Some(trunk.tls_client().map_err(|e| (503, e.to_string()))?)
        }
        _ => None,
    };
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
    let domain = cfg.domain().to_string();
    let uri_host = if cfg.domain.is_none() && cfg.port() != cfg.transport.default_port() {
        format!("{domain}:{}", cfg.port())
    } else {
        domain.clone()
    };
    let number = cfg.format_number(&route.number);
    let uri_text = format!("sip:{number}@{uri_host}{}", hop.kind.uri_param());
    let uri = Uri::try_from(uri_text.as_str()).map_err(|_| (484, "bad number".to_string()))?;
    let policy = &cfg.caller_id;
    let from_host = if cfg.register.is_some() {
        domain.clone()
    } else {
        hop.local.ip().to_string()
    };
    let from = if policy.anonymous || route.caller.private {
        format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={from_tag}")
    } else {
        let user = policy
            .number
            .clone()
            .unwrap_or_else(|| route.caller.user.clone());
        let display = policy.name.clone().or_else(|| route.caller.display.clone());
        from_header(&cfg.format_number(&user), display, &from_host, &from_tag)
    };
    let to = format!("<sip:{number}@{uri_host}>");
    let mut leg = new_out_leg(
        b2bua,
        id,
        trunk.name().to_string(),
        hop,
        uri,
        from,
        from_tag,
        to,
        offer.to_string(),
        UacCall::new(offer),
        OutMedia::Rtp(Some(ports)),
    );
    leg.session_expires = trunk.config.session_expires;
    leg.asserted = Some(policy.number.clone().unwrap_or_else(|| {
        route
            .caller
            .asserted
            .clone()
            .unwrap_or_else(|| route.caller.user.clone())
    }));
    leg.private = route.caller.private;
    leg.trunk = Some(trunk.clone());
    leg._permit = Some(permit);
    leg.uac.expect_response_by(
        Instant::now() + Duration::from_secs(u64::from(cfg.response_timeout.max(1))),
    );
    let invite = leg.build_invite(None);
    send_invite(b2bua, &mut leg, invite, reports).map_err(|e| (503, e))?;
    info!(trunk = %trunk.name(), to = %leg.uri, call_id = %leg.call_id, "trunk leg: INVITE sent");
    Ok(leg)
}

/// Moves a trunk leg's hop to where its dialog wants our requests
/// ([`OutLeg::dialog_destination`]): a carrier whose Contact names another
/// node than the address we sent the INVITE to gets its BYE there. Names
/// are resolved for at most 2 s; a failure keeps the hop.
async fn follow_dialog(b2bua: &Arc<B2bua>, leg: &mut OutLeg) {
    let Some(destination) = leg.dialog_destination() else {
        return;
    };
    if let Some(hop) = dialog_hop(b2bua, &leg.label, destination, &leg.hop).await {
        info!(leg = %leg.label, addr = %hop.remote, "in-dialog requests go where the trunk's dialog says");
        leg.hop = hop;
    }
}

/// ACKs a second fork's 2xx and hangs that fork up, where its own dialog
/// says (RFC 3261 §13.2.2.4): `destination`, followed from the INVITE's
/// hop `base` as the first fork's was, else `base`. The ACK joins the
/// leg's (kept by its guard) for the 2xx's retransmissions.
async fn end_fork(
    b2bua: Arc<B2bua>,
    label: String,
    base: NextHop,
    (ack, mut bye): (Request, Request),
    destination: Option<(String, u16)>,
) {
    let hop = match destination {
        Some(d) => dialog_hop(&b2bua, &label, d, &base).await,
        None => None,
    }
    .unwrap_or(base);
    let _ = b2bua.core.send_ack(ack, &hop).await;
    // The BYE was written for the leg's hop: its Via is this hop's.
    if let Some(via) = bye.headers.iter_mut().find(|h| matches!(h, Header::Via(_))) {
        *via = new_via(&hop);
    }
    send_in_dialog(&b2bua.outbound, &hop, bye, None);
}

/// Our Via for a new request of a leg sent on `hop` (a new branch).
fn new_via(hop: &NextHop) -> Header {
    Header::Via(
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK-sbt{};rport",
            hop.kind.via_name(),
            hop.local,
            random_hex(8)
        )
        .into(),
    )
}

/// The hop to `destination` (a dialog's first route or remote target),
/// when it should replace `base`: `None` when it is `base`'s peer, cannot be
/// resolved or reached, or is a private address named by a public trunk
/// (behind NAT: its requests come from where we sent the INVITE, and so go
/// ours).
async fn dialog_hop(
    b2bua: &Arc<B2bua>,
    label: &str,
    (host, port): (String, u16),
    base: &NextHop,
) -> Option<NextHop> {
    let resolved =
        tokio::time::timeout(Duration::from_secs(2), Outbound::resolve(&host, port)).await;
    let Some(addr) = resolved
        .ok()
        .and_then(Result::ok)
        .and_then(|a| a.first().copied())
    else {
        warn!(leg = %label, %host, "cannot resolve the trunk's Contact: in-dialog requests stay on the INVITE's hop");
        return None;
    };
    if addr == base.remote
        || addr.port() == 0
        || addr.ip().is_unspecified()
        || addr.ip().is_multicast()
    {
        return None;
    }
    if crate::sip::advertise::is_private(addr.ip())
        && !crate::sip::advertise::is_private(base.remote.ip())
    {
        debug!(leg = %label, %addr, "the trunk's Contact is private: not followed");
        return None;
    }
    match b2bua.outbound.hop(base.kind, addr, None).await {
        Ok(hop) => Some(hop),
        Err(e) => {
            warn!(leg = %label, %addr, error = %e, "cannot reach the trunk's Contact");
            None
        }
    }
}

/// A From header value with an optional display name (quotes and line
/// breaks removed).
fn from_header(user: &str, display: Option<String>, host: &str, tag: &str) -> String {
    let display = display
        .filter(|d| !d.is_empty())
        .map(|d| format!("\"{}\" ", d.replace(['"', '\\', '\r', '\n'], "")))
        .unwrap_or_default();
    format!("{display}<sip:{user}@{host}>;tag={tag}")
}

/// Starts a leg towards one browser binding: a WebRTC offer (ICE-lite,
/// DTLS-SRTP, Opus and G.711) on a socket from the media range.
fn start_browser_leg(
    b2bua: &Arc<B2bua>,
    id: u64,
    target: &BrowserTarget,
    route: &BrowserRoute,
    reports: &Reports,
) -> Result<OutLeg, (u16, String)> {
    let media = webrtc_media(b2bua, target.hop.local, route.opus_max_playback_rate)
        .ok_or((503, "no media ports".to_string()))?;
    let (webrtc, offer) = WebRtcLeg::offer(media.local, &media.cfg, Instant::now())
        .map_err(|e| (500, e.to_string()))?;
    let parsed = SessionDescription::parse(offer.as_bytes()).map_err(|e| (500, e.to_string()))?;
    let sockets = media.sockets;
    let from_tag = random_hex(6);
    // A browser is no trusted party: a private caller stays anonymous.
    let from = if route.caller.private {
        format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={from_tag}")
    } else {
        from_header(
            &route.caller.user,
            route.caller.display.clone(),
            &target.domain,
            &from_tag,
        )
    };
    let to = format!("<sip:{}@{}>", target.user, target.domain);
    let mut leg = new_out_leg(
        b2bua,
        id,
        target.user.clone(),
        target.hop.clone(),
        target.uri.clone(),
        from,
        from_tag,
        to,
        offer,
        UacCall::new_answered_by_leg(parsed),
        OutMedia::WebRtc(Some((Box::new(webrtc), sockets))),
    );
    leg.route_set = target.route.clone();
    let invite = leg.build_invite(None);
    send_invite(b2bua, &mut leg, invite, reports).map_err(|e| (503, e))?;
    info!(user = %target.user, uri = %target.uri, call_id = %leg.call_id, "browser leg: INVITE sent");
    Ok(leg)
}

/// Applies a browser's SDP answer to its WebRTC leg: what the room needs.
fn accept_browser_answer(leg: &mut OutLeg, body: &[u8]) -> Result<Negotiated, u16> {
    let OutMedia::WebRtc(Some((webrtc, _))) = &mut leg.media else {
        return Err(500);
    };
    let text = std::str::from_utf8(body).map_err(|_| 488u16)?;
    webrtc.accept_answer(text, Instant::now()).map_err(|e| {
        info!(error = %e, "browser answer refused");
        488u16
    })?;
    Ok(negotiated_of(&webrtc.negotiated().ok_or(488u16)?))
}

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
fn send_invite(
    b2bua: &B2bua,
    leg: &mut OutLeg,
    invite: Request,
    reports: &Reports,
) -> Result<(), String> {
    let mut client = b2bua
        .outbound
        .client(invite, &leg.hop)
        .map_err(|e| e.to_string())?;
    let reports = reports.clone();
    let (cseq, id) = (leg.invite_cseq, leg.id);
    let invites = b2bua.engine.metrics().media.outgoing_invites.clone();
    invites.inc();
    let count = CallCount(invites);
    let task = tokio::spawn(
        async move {
            let _count = count;
            if let Err(e) = client.send().await {
                debug!(error = %e, "INVITE not sent");
            } else {
                while let Some(message) = client.receive().await {
                    if let SipMessage::Response(r) = message
                        && reports
                            .send((id, InviteReport::Response(cseq, Box::new(r))))
                            .is_err()
                    {
                        break;
                    }
                }
            }
            let _ = reports.send((id, InviteReport::Ended(cseq)));
        }
        .in_current_span(),
    );
    leg.invite_task = Some(task.abort_handle());
    Ok(())
}

impl Drop for OutLeg {
    /// An answered INVITE's client transaction ends at its 2xx (the ACK
    /// is ours, kept by `ack` while the leg lives); should its task still
    /// run when the leg goes, it is ended. An INVITE that failed keeps its
    /// transaction, which must still acknowledge retransmitted final
    /// responses.
    fn drop(&mut self) {
        if self.answered
            && let Some(task) = self.invite_task.take()
        {
            task.abort();
        }
    }
}

/// Sends a request on its own client transaction and forgets it; the final
/// status goes to `done` when given.
fn send_in_dialog(
    outbound: &Arc<Outbound>,
    hop: &NextHop,
    request: Request,
    done: Option<mpsc::UnboundedSender<(u16, Vec<u8>)>>,
) {
    let invite = (request.method == Method::Invite).then(|| request.clone());
    let client = outbound.client(request, hop);
    let (outbound, hop) = (outbound.clone(), hop.clone());
    tokio::spawn(
        async move {
            let mut done = done;
            let mut ack = None;
            if let Ok(mut client) = client
                && client.send().await.is_ok()
            {
                while let Some(message) = client.receive().await {
                    let SipMessage::Response(r) = message else {
                        continue;
                    };
                    let status = r.status_code.code();
                    if let Some(invite) = &invite
                        && (200..300).contains(&status)
                        && ack.is_none()
                    {
                        // A re-INVITE's 2xx: ACKed here, and again for its
                        // retransmissions while `ack` is kept.
                        let request = ack_in_dialog(invite, &r);
                        ack = outbound.core().send_ack(request, &hop).await;
                    }
                    if status >= 200
                        && let Some(done) = done.take()
                    {
                        let _ = done.send((status, r.body));
                    }
                }
            }
            if let Some(done) = done {
                let _ = done.send((408, Vec::new()));
            }
            if ack.is_some() {
                // The peer retransmits its 2xx for up to 64·T1.
                tokio::time::sleep(Duration::from_secs(32)).await;
            }
        }
        .in_current_span(),
    );
}

/// Bridges the caller's INVITE to `destination` and runs the call to its
/// end. `invite` is the caller's INVITE server transaction (100 Trying sent).
pub async fn bridge<S: InviteServer>(
    b2bua: &Arc<B2bua>,
    invite: &mut S,
    destination: Destination,
    peer: Peer,
) -> BridgeOutcome {
    let request = invite.original().clone();
    let call_id = request
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    let span = info_span!("bridge", call_id = %call_id);
    let mut call = Bridge::new(b2bua.clone(), destination, peer, request, call_id);
    call.run(invite).instrument(span).await
}

/// What another bridged call can ask of this one.
pub(super) enum Control {
    /// Hand the answered outgoing leg (its dialog and its media) to the
    /// caller's other call, which takes it over: this call is replaced
    /// (attended transfer, RFC 3891 `Replaces` in a REFER).
    HandOver(oneshot::Sender<Option<HandOver>>),
}

/// An answered outgoing leg moving from one call to another.
pub(super) struct HandOver {
    leg: OutLeg,
    media: Detached,
}

/// One bridged call's state, owned by its task.
struct Bridge {
    b2bua: Arc<B2bua>,
    destination: Destination,
    peer: Peer,
    request: Request,
    a_call_id: String,
    /// Outgoing legs still alive (several while forking to browsers).
    legs: Vec<OutLeg>,
    /// The leg that answered.
    winner: Option<u64>,
    next_id: u64,
    /// Trunks not tried yet.
    trunks_left: std::vec::IntoIter<String>,
    last_failure: (u16, String),
    early_sent: bool,
    ringing_sent: bool,
    end_reason: String,
    /// Completed transfers, for the CDR.
    transfers: Vec<TransferRecord>,
    answered_at: Option<f64>,
    out_label: Option<String>,
    out_codec: Option<String>,
    a_stats: Option<Box<LegStats>>,
    b_stats: Option<Box<LegStats>>,
    ring_deadline: Option<Instant>,
    no_answer: bool,
    /// A blind transfer is being placed (its legs are marked `transfer`).
    transferring: bool,
    /// The caller transferred its party away: the call goes on without it.
    transferred: bool,
    /// The hold tone playing in the room while a browser holds.
    hold_player: Option<ParticipantId>,
    /// The answered callee that asked (REFER) for the caller to be
    /// transferred; its transfer legs are being placed.
    callee_transfer: Option<u64>,
}

impl Bridge {
    fn new(
        b2bua: Arc<B2bua>,
        destination: Destination,
        peer: Peer,
        request: Request,
        a_call_id: String,
    ) -> Bridge {
        let trunks = match &destination {
            Destination::Trunks(route) => route.trunks.clone(),
            Destination::Browsers(_) => Vec::new(),
        };
        Bridge {
            b2bua,
            destination,
            peer,
            request,
            a_call_id,
            legs: Vec::new(),
            winner: None,
            next_id: 0,
            trunks_left: trunks.into_iter(),
            last_failure: (503, "no route available".into()),
            early_sent: false,
            ringing_sent: false,
            end_reason: String::from("unknown"),
            transfers: Vec::new(),
            answered_at: None,
            out_label: None,
            out_codec: None,
            a_stats: None,
            b_stats: None,
            ring_deadline: None,
            no_answer: false,
            transferring: false,
            transferred: false,
            hold_player: None,
            callee_transfer: None,
        }
    }

    /// A browser leg went on hold (or came back): the other party hears the
    /// hold tone meanwhile (`media.hold_tone`).
    async fn hold_tone(&mut self, room: &RoomHandle, hold: bool) {
        if hold && self.hold_player.is_none() && self.b2bua.engine.config().hold_tone {
            let id = self.b2bua.engine.participant_id();
            let tone = Box::new(crate::media::tone::Tone::hold());
            if room.send(Command::Play(id, tone)).await.is_ok() {
                self.hold_player = Some(id);
            }
        } else if !hold && let Some(id) = self.hold_player.take() {
            let _ = room.send(Command::Remove(id)).await;
        }
    }

    fn leg(&mut self, id: u64) -> Option<&mut OutLeg> {
        self.legs.iter_mut().find(|l| l.id == id)
    }

    /// Starts the next trunk (failover) or every browser (fork); false when
    /// nothing could be started.
    async fn start_legs(&mut self, reports: &Reports, dialogs: &DialogSender) -> bool {
        match self.destination.clone() {
            Destination::Trunks(route) => {
                for name in self.trunks_left.by_ref() {
                    self.next_id += 1;
                    match start_trunk_leg(&self.b2bua, self.next_id, &name, &route, reports).await {
                        Ok(leg) => {
                            self.b2bua.register(leg.key(), dialogs.clone());
                            self.out_label = Some(name);
                            self.legs.push(leg);
                            return true;
                        }
                        Err((status, reason)) => {
                            info!(trunk = %name, status, %reason, "trunk skipped");
                            self.last_failure = (status, reason);
                        }
                    }
                }
                false
            }
            Destination::Browsers(route) => {
                if self.next_id > 0 {
                    return false;
                }
                for target in &route.targets {
                    self.next_id += 1;
                    match start_browser_leg(&self.b2bua, self.next_id, target, &route, reports) {
                        Ok(leg) => {
                            self.b2bua.register(leg.key(), dialogs.clone());
                            self.legs.push(leg);
                        }
                        Err((status, reason)) => {
                            info!(user = %target.user, status, %reason, "browser not rung");
                            self.last_failure = (status, reason);
                        }
                    }
                }
                if !self.legs.is_empty() {
                    self.ring_deadline = Some(Instant::now() + route.ring_timeout);
                    self.last_failure = (480, "nobody answered".into());
                }
                !self.legs.is_empty()
            }
        }
    }

    async fn run<S: InviteServer>(&mut self, invite: &mut S) -> BridgeOutcome {
        let b2bua = self.b2bua.clone();
        let metrics = b2bua.engine.metrics().clone();
        metrics.media.calls.inc();
        let count = CallCount(metrics.media.calls.clone());
        let started = now_unix();
        let request = self.request.clone();
        let peer = self.peer.clone();
        let mut dialog = Dialog::new(
            request.clone(),
            peer.clone(),
            b2bua.core.server_name().to_string(),
        );
        // The caller's media leg is prepared once and kept across failover.
        let (mut a, answer_sdp, _ring, prepared) = match prepare(
            &b2bua,
            &request.body,
            &peer,
            Duration::from_secs(1),
            Instant::now(),
            self.playback_rate_towards_caller(),
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
        set_reliability(&mut a, &request);
        let min_se = b2bua.core.limits().min_session_expires_secs;
        if let Some(refusal) = take_session_request(&mut a, &dialog, &request, min_se) {
            invite.respond(refusal);
            return BridgeOutcome::Done;
        }
        if let Destination::Browsers(route) = &mut self.destination {
            // Browsers need not send more than the caller's codec carries.
            route.opus_max_playback_rate = match a.negotiated().codec.kind {
                // A delayed offer: the caller's codec is not known yet.
                _ if a.offers_late() => None,
                crate::media::codec::CodecKind::Pcmu | crate::media::codec::CodecKind::Pcma => {
                    Some(8_000)
                }
                crate::media::codec::CodecKind::G722 => Some(16_000),
                crate::media::codec::CodecKind::Opus => None,
            };
        }
        let room = match b2bua.engine.create_room(RoomConfig {
            // Two parties, and a third while a transfer target is joining.
            max_participants: 3,
            ..RoomConfig::default()
        }) {
            Ok(room) => room,
            Err(e) => {
                warn!(error = %e, "no room for the call");
                let mut response = dialog.response(&request, 503, None);
                response.status_code =
                    StatusCode::Other(503, "Media Services Not Available".into());
                invite.respond(response);
                return BridgeOutcome::Done;
            }
        };
        let a_key: DialogKey = (self.a_call_id.clone(), dialog.tag.clone());
        let (dialog_tx, mut dialog_rx) = mpsc::unbounded_channel::<Box<Transaction>>();
        b2bua.register(a_key.clone(), dialog_tx.clone());
        let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Control>();
        let (notified_tx, mut notified_rx) = mpsc::unbounded_channel::<u64>();
        b2bua.register_control(a_key.clone(), control_tx);
        let (reports_tx, mut reports_rx) = mpsc::unbounded_channel::<(u64, InviteReport)>();
        let a_id = b2bua.engine.participant_id();
        let (a_leg_tx, mut a_leg_rx) = mpsc::unbounded_channel::<LegEvent>();
        let (b_leg_tx, mut b_leg_rx) = mpsc::unbounded_channel::<LegEvent>();
        let (a_bye_tx, mut a_bye_rx) = mpsc::unbounded_channel::<u16>();
        let (a_refresh_tx, mut a_refresh_rx) = mpsc::unbounded_channel::<RefreshOutcome>();
        let (b_bye_tx, mut b_bye_rx) = mpsc::unbounded_channel::<(u64, u16)>();
        let (refresh_tx, mut refresh_rx) = mpsc::unbounded_channel::<(u64, u16, Vec<u8>)>();
        let mut caller = CallerJoin {
            id: a_id,
            prepared: Some(prepared),
            joined: false,
            events: a_leg_tx,
        };
        let mut a_pending: Option<Transaction> = None;
        let mut b_pending: Option<(u64, Transaction)> = None;
        let mut invite_open = true;
        let mut outcome: Option<BridgeOutcome> = None;
        let mut a_queue: std::collections::VecDeque<Action> = Default::default();
        let mut b_queue: std::collections::VecDeque<(u64, UacAction)> = Default::default();
        let mut need_legs = true;

        loop {
            // Start (or restart, on failover) the outgoing side while the caller waits.
            if need_legs && a.state() == CallState::Ringing {
                need_legs = false;
                if !self.start_legs(&reports_tx, &dialog_tx).await {
                    let (status, reason) = self.last_failure.clone();
                    info!(status, %reason, "no outgoing leg could be placed");
                    outcome = Some(BridgeOutcome::Failed(status, reason));
                    break;
                }
            }
            // The outgoing legs' actions.
            let mut callee_transfer_asked: Option<(u64, String)> = None;
            let mut callee_attended_asked: Option<(u64, Replaces)> = None;
            while let Some((id, action)) = b_queue.pop_front() {
                // A callee transfer that ended: (transferor leg, NOTIFY status, hang it up).
                let mut callee_transfer_done: Option<(u64, String, bool)> = None;
                let replaced_participant = self
                    .callee_transfer
                    .and_then(|o| self.legs.iter().find(|l| l.id == o))
                    .map(|l| l.participant);
                let alive = self.legs_alive();
                let early_policy_forward = self
                    .leg(id)
                    .and_then(|l| l.trunk.as_ref())
                    .is_some_and(|t| t.config.early_media == EarlyMediaPolicy::Forward);
                let winner = self.winner;
                let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) else {
                    continue;
                };
                // Early media will be connected right after this provisional:
                // the caller gets one 183, with our answer, instead of two.
                let early_media_follows = early_policy_forward
                    && alive == 1
                    && matches!(b_queue.front(), Some((next, UacAction::EarlyMedia(_))) if *next == id);
                match action {
                    UacAction::Progress(_) | UacAction::EarlyMedia(_) if leg.transfer => {}
                    UacAction::Progress(status) => {
                        let superseded = self.early_sent
                            || (status == 180 && self.ringing_sent)
                            || (status == 183 && early_media_follows);
                        if a.state() == CallState::Ringing && !superseded {
                            self.ringing_sent |= status == 180;
                            a_queue.extend(a.handle(
                                CallEvent::Progress { status, sdp: false },
                                Instant::now(),
                            ));
                        }
                    }
                    UacAction::EarlyMedia(neg) => {
                        if early_policy_forward && a.state() == CallState::Ringing && alive == 1 {
                            let (joined_b, joined_a) =
                                join_pair(&b2bua, &room, leg, &neg, &b_leg_tx, &mut caller).await;
                            // A caller whose INVITE had no offer gets none early.
                            let sdp = joined_b && joined_a && !a.offers_late();
                            if sdp {
                                self.early_sent = true;
                                info!("early media from the trunk");
                            }
                            // Without media, at least the progress.
                            a_queue.extend(
                                a.handle(CallEvent::Progress { status: 183, sdp }, Instant::now()),
                            );
                        }
                    }
                    UacAction::Answered(neg) if leg.transfer && self.callee_transfer.is_some() => {
                        // The transfer target answered: it takes the callee's place.
                        let old = self.callee_transfer.take().unwrap_or_default();
                        if let Some(p) = replaced_participant {
                            let _ = room.send(Command::Remove(p)).await;
                        }
                        leg.transfer = false;
                        self.out_codec = Some(neg.codec.kind.name().to_string());
                        leg.codec = self.out_codec.clone();
                        join_out_leg(&b2bua, &room, leg, &neg, &b_leg_tx).await;
                        info!(leg = %leg.label, "transfer by the callee answered");
                        self.out_label = Some(leg.label.clone());
                        let t = TransferRecord::new(now_unix(), "blind", "callee", &leg.label);
                        self.end_reason = t.end_reason();
                        self.transfers.push(t);
                        self.winner = Some(id);
                        callee_transfer_done = Some((old, "200 OK".into(), true));
                        hang_up_other_transfer_legs(&mut self.legs, id, &mut b_queue);
                    }
                    UacAction::Failed(status) if leg.transfer && self.callee_transfer.is_some() => {
                        info!(leg = %leg.label, status, "transfer leg (by the callee) failed");
                        let others = self
                            .legs
                            .iter()
                            .filter(|l| {
                                l.transfer && l.id != id && l.uac.state() != UacState::Ended
                            })
                            .count();
                        if others == 0
                            && let Some(old) = self.callee_transfer.take()
                        {
                            let reason = StatusCode::from(status).to_string();
                            callee_transfer_done = Some((old, format!("{status} {reason}"), false));
                        }
                    }
                    UacAction::RemoteHangup
                        if !self.transferred && winner.is_some_and(|w| w != id) =>
                    {
                        // A callee that transferred the caller away hung up.
                        debug!(leg = %leg.label, "a replaced callee hung up");
                    }
                    UacAction::Transfer(target) => {
                        callee_transfer_asked = Some((id, target));
                    }
                    UacAction::AttendedTransfer(replaces) => {
                        callee_attended_asked = Some((id, replaces));
                    }
                    UacAction::Answered(neg) if leg.transfer => {
                        if self.transferred {
                            b_queue.extend(
                                leg.uac
                                    .handle(UacEvent::Hangup, Instant::now())
                                    .into_iter()
                                    .map(|x| (id, x)),
                            );
                            continue;
                        }
                        // The transfer target answered: it takes the caller's place.
                        let _ = room.send(Command::Remove(a_id)).await;
                        join_out_leg(&b2bua, &room, leg, &neg, &b_leg_tx).await;
                        info!(leg = %leg.label, "transfer answered");
                        self.transferred = true;
                        self.transferring = false;
                        let t = TransferRecord::new(now_unix(), "blind", "caller", &leg.label);
                        self.end_reason = t.end_reason();
                        self.transfers.push(t);
                        notify_transfer(&b2bua, &mut dialog, &peer, "200 OK", true);
                        // The transferor (who may have held) is gone: no hold tone.
                        self.hold_tone(&room, false).await;
                        hang_up_other_transfer_legs(&mut self.legs, id, &mut b_queue);
                    }
                    UacAction::Failed(status) if leg.transfer => {
                        info!(leg = %leg.label, status, "transfer leg failed");
                        let others = self
                            .legs
                            .iter()
                            .filter(|l| {
                                l.transfer && l.id != id && l.uac.state() != UacState::Ended
                            })
                            .count();
                        if others == 0 && self.transferring {
                            self.transferring = false;
                            let reason = StatusCode::from(status).to_string();
                            notify_transfer(
                                &b2bua,
                                &mut dialog,
                                &peer,
                                &format!("{status} {reason}"),
                                true,
                            );
                        }
                    }
                    UacAction::RemoteHangup if self.transferred => {
                        // After a transfer the two remaining parties end together.
                        self.end_reason = format!("{} hung up after transfer", leg.label);
                        for other in self.legs.iter_mut().filter(|l| l.id != id) {
                            let other_id = other.id;
                            b_queue.extend(
                                other
                                    .uac
                                    .handle(UacEvent::Hangup, Instant::now())
                                    .into_iter()
                                    .map(|x| (other_id, x)),
                            );
                        }
                    }
                    UacAction::Answered(neg) => {
                        if winner.is_some_and(|w| w != id) || a.state() != CallState::Ringing {
                            // Another fork won, or the caller is gone: hang this one up.
                            b_queue.extend(
                                leg.uac
                                    .handle(UacEvent::Hangup, Instant::now())
                                    .into_iter()
                                    .map(|x| (id, x)),
                            );
                            continue;
                        }
                        self.winner = Some(id);
                        self.out_codec = Some(neg.codec.kind.name().to_string());
                        self.out_label = Some(leg.label.clone());
                        leg.codec = self.out_codec.clone();
                        // The caller joins with it (its 200 OK follows at
                        // `Action::Answer`, where its join is then done).
                        join_pair(&b2bua, &room, leg, &neg, &b_leg_tx, &mut caller).await;
                        self.answered_at = Some(now_unix());
                        info!(leg = %leg.label, codec = %neg.codec.kind.name(), "answered");
                        a_queue.extend(a.handle(CallEvent::Answer, Instant::now()));
                        // The other forks are cancelled.
                        for other in self.legs.iter_mut().filter(|l| l.id != id) {
                            let other_id = other.id;
                            b_queue.extend(
                                other
                                    .uac
                                    .handle(UacEvent::Hangup, Instant::now())
                                    .into_iter()
                                    .map(|x| (other_id, x)),
                            );
                        }
                    }
                    UacAction::SendAck => {
                        // Ours to send, where the dialog says (the hop
                        // `follow_dialog` chose); the SIP core sends it
                        // again for a retransmitted 2xx.
                        let ack = leg.ack();
                        if let Some(guard) = b2bua.core.send_ack(ack, &leg.hop).await {
                            leg.ack = Some(guard);
                        }
                    }
                    UacAction::SendAuthenticated => {
                        if !resend_with_credentials(&b2bua, leg, &reports_tx) {
                            b_queue.extend(
                                leg.uac
                                    .handle(UacEvent::Failure(403), Instant::now())
                                    .into_iter()
                                    .map(|x| (id, x)),
                            );
                        }
                    }
                    UacAction::SendWithLongerInterval => {
                        let invite = leg.build_invite(None);
                        info!(leg = %leg.label, interval = leg.session_expires, "INVITE again with the interval the trunk asked for (422)");
                        if send_invite(&b2bua, leg, invite, &reports_tx).is_err() {
                            b_queue.extend(
                                leg.uac
                                    .handle(UacEvent::Failure(422), Instant::now())
                                    .into_iter()
                                    .map(|x| (id, x)),
                            );
                        }
                    }
                    UacAction::SendPrack(rseq) => {
                        let mut prack = leg.in_dialog(Method::PRack, None);
                        let rack = format!("{rseq} {} INVITE", leg.invite_cseq);
                        prack.headers.push(Header::Other("RAck".into(), rack));
                        debug!(leg = %leg.label, rseq, "PRACK");
                        send_in_dialog(&b2bua.outbound, &leg.hop, prack, None);
                    }
                    UacAction::SendCancel => {
                        let cancel = crate::proxy::make_cancel(&leg.invite);
                        send_in_dialog(&b2bua.outbound, &leg.hop, cancel, None);
                    }
                    UacAction::SendRefresh => {
                        let offer = leg
                            .uac
                            .refresh_offer()
                            .map_or_else(|| leg.offer_text.clone(), str::to_owned);
                        let mut refresh =
                            leg.in_dialog(Method::Invite, Some(("application/sdp", offer)));
                        let interval = if leg.session_expires > 0 {
                            leg.session_expires
                        } else {
                            1800
                        };
                        refresh
                            .headers
                            .push(Header::Contact(leg.contact.clone().into()));
                        refresh.headers.push(Header::Supported("timer".into()));
                        refresh.headers.push(Header::Other(
                            "Session-Expires".into(),
                            format!("{interval};refresher=uac"),
                        ));
                        let (tx, leg_id) = (refresh_tx.clone(), id);
                        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
                        send_in_dialog(&b2bua.outbound, &leg.hop, refresh, Some(done_tx));
                        tokio::spawn(async move {
                            if let Some((status, body)) = done_rx.recv().await {
                                let _ = tx.send((leg_id, status, body));
                            }
                        });
                        debug!(leg = %leg.label, "session refresh sent");
                    }
                    UacAction::SendBye => {
                        let bye = leg.in_dialog(Method::Bye, None);
                        let (tx, leg_id) = (b_bye_tx.clone(), id);
                        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
                        send_in_dialog(&b2bua.outbound, &leg.hop, bye, Some(done_tx));
                        tokio::spawn(async move {
                            if let Some((status, _)) = done_rx.recv().await {
                                let _ = tx.send((leg_id, status));
                            }
                        });
                    }
                    UacAction::Failed(status) => {
                        info!(leg = %leg.label, status, "outgoing leg failed");
                        let better = crate::proxy::better(status, self.last_failure.0);
                        if better || matches!(self.destination, Destination::Trunks(_)) {
                            self.last_failure =
                                (status, format!("{} answered {status}", leg.label));
                        }
                        if winner.is_none()
                            && self.legs_alive_except(id) == 0
                            && a.state() == CallState::Ringing
                        {
                            let failover = match &self.destination {
                                Destination::Trunks(route) => {
                                    !self.early_sent && fails_over(&route.failover_on, status)
                                }
                                Destination::Browsers(_) => false,
                            };
                            if failover {
                                need_legs = true;
                            } else if matches!(self.destination, Destination::Trunks(_))
                                || status >= 600
                            {
                                let (code, _) = caller_status(self.last_failure.0);
                                self.end_reason = format!("failed {}", self.last_failure.0);
                                a_queue.extend(a.handle(CallEvent::Reject(code), Instant::now()));
                            } else {
                                // Browsers: let the dialplan decide (on_failure).
                                let (status, reason) = self.last_failure.clone();
                                outcome = Some(BridgeOutcome::Failed(status, reason));
                            }
                        }
                    }
                    UacAction::Reply(status, body) => {
                        if let Some((_, tx)) = b_pending.take() {
                            let response = leg.response(&tx.original, status, body);
                            respond_and_keep(tx, response).await;
                        }
                    }
                    UacAction::Renegotiate(neg) => {
                        update_rtp_leg(&room, leg.participant, &neg).await;
                        leg.codec = Some(neg.codec.kind.name().to_string());
                        if self.winner == Some(id) {
                            self.out_codec = leg.codec.clone();
                        }
                        let _ = room
                            .send(Command::Hold(leg.participant, neg.on_hold()))
                            .await;
                        info!(hold = neg.on_hold(), "media renegotiated with the callee");
                    }
                    UacAction::RenegotiateLeg { offer, hold } => {
                        let participant = leg.participant;
                        let reply = match reanswer_webrtc(&room, participant, offer).await {
                            Some(sdp) => {
                                let _ = room.send(Command::Hold(participant, hold)).await;
                                info!(hold, "re-INVITE from the browser");
                                self.hold_tone(&room, hold).await;
                                UacAction::Reply(200, Some(sdp))
                            }
                            None => UacAction::Reply(488, None),
                        };
                        b_queue.push_front((id, reply));
                    }
                    UacAction::Dtmf(digit, ms) => {
                        // INFO from the callee: to the caller as RFC 4733.
                        let _ = room.send(Command::Dtmf(leg.participant, digit, ms)).await;
                    }
                    UacAction::RemoteHangup => {
                        self.end_reason = "callee hung up".into();
                        a_queue.extend(a.handle(CallEvent::Hangup, Instant::now()));
                    }
                    UacAction::Release => {}
                }
                if let Some((old, status, hang_up)) = callee_transfer_done
                    && let Some(leg) = self.legs.iter_mut().find(|l| l.id == old)
                {
                    // After a success the replaced callee is hung up once its
                    // NOTIFY is answered (unless it hangs up first).
                    let then = hang_up.then(|| notified_tx.clone());
                    notify_leg_then(&b2bua, leg, &status, true, then);
                    if hang_up {
                        leg.joined = false;
                    }
                }
            }
            if let Some((id, target)) = callee_transfer_asked.take() {
                self.start_callee_transfer(id, &target, &reports_tx, &dialog_tx)
                    .await;
            }
            if let Some((id, replaces)) = callee_attended_asked.take() {
                let ours = Joined {
                    room: &room,
                    caller: a_id,
                    dialogs: &dialog_tx,
                    events: &b_leg_tx,
                };
                self.callee_attended_transfer(id, &replaces, &ours, &notified_tx, &mut b_queue)
                    .await;
            }
            if outcome.is_some() {
                break;
            }
            // A request the state machine had no answer for still gets one.
            if let Some((_, mut tx)) = b_pending.take() {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
            // Forget legs that ended (a failover starts a fresh one).
            let mut i = 0;
            while i < self.legs.len() {
                if self.legs[i].uac.state() == UacState::Ended {
                    let leg = self.legs.swap_remove(i);
                    b2bua.unregister(&leg.key());
                    if leg.joined {
                        let _ = room.send(Command::Remove(leg.participant)).await;
                    }
                } else {
                    i += 1;
                }
            }
            if need_legs && a.state() == CallState::Ringing {
                continue;
            }
            // The caller's actions.
            while let Some(action) = a_queue.pop_front() {
                match action {
                    Action::Ring => {}
                    Action::Provisional { status, sdp, rseq } => {
                        if rseq.is_some() {
                            debug!(status, sdp, ?rseq, "reliable provisional to the caller");
                        }
                        invite.respond(dialog.provisional(
                            status,
                            sdp.then(|| answer_sdp.clone()),
                            rseq,
                        ));
                    }
                    Action::Answer => {
                        if caller.join(&room).await {
                            // After a reliable answer (PRACKed) the 2xx
                            // carries no SDP: the offer/answer exchange is
                            // complete (RFC 3261 §13.2.1, RFC 6337 §3.1).
                            let body = (!a.answered_early()).then(|| answer_sdp.clone());
                            let response = dialog.response(&request, 200, body);
                            invite.respond(with_session_timer(
                                response,
                                &request,
                                &mut a,
                                Instant::now(),
                            ));
                        } else {
                            invite.respond(dialog.response(&request, 500, None));
                            a_queue.extend(a.handle(CallEvent::AnswerFailed, Instant::now()));
                            self.end_reason = "caller media failed".into();
                            self.hang_up_legs(&mut b_queue);
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
                        if let Some(tx) = a_pending.take() {
                            let response = dialog.response(&tx.original, status, body);
                            let response =
                                with_session_timer(response, &tx.original, &mut a, Instant::now());
                            respond_and_keep(tx, response).await;
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
                                self.hold_tone(&room, hold).await;
                            }
                            None => a_queue.push_front(Action::Reply(488, None)),
                        }
                    }
                    Action::Dtmf(digit, ms) => {
                        // INFO from the caller: to the callee in its DTMF mode.
                        if !self.info_dtmf_to_callee(digit, ms) {
                            let _ = room.send(Command::Dtmf(a_id, digit, ms)).await;
                        }
                    }
                    Action::SendBye => {
                        if a.session_expired() {
                            info!("the caller's session expired (RFC 4028): BYE");
                            self.end_reason = "caller session expired".into();
                        }
                        send_bye(&dialog.bye(), &peer, &b2bua.core, a_bye_tx.clone())
                    }
                    Action::SendRefresh => {
                        if let Some(value) = a.refresh_session_expires() {
                            debug!("session refresh to the caller (UPDATE)");
                            let update = dialog.session_refresh(value);
                            send_refresh(&update, &peer, &b2bua.core, a_refresh_tx.clone());
                        }
                    }
                    Action::Transfer(target) => {
                        self.start_transfer(&target, &reports_tx, &dialog_tx, &mut dialog)
                            .await;
                    }
                    Action::AttendedTransfer(replaces) => {
                        let ours = Joined {
                            room: &room,
                            caller: a_id,
                            dialogs: &dialog_tx,
                            events: &b_leg_tx,
                        };
                        self.attended_transfer(&replaces, &ours, &mut dialog, &mut b_queue)
                            .await;
                    }
                    Action::Release => {}
                }
            }
            if let Some(mut tx) = a_pending.take() {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
            if self.transferred
                && self.legs.is_empty()
                && matches!(a.state(), CallState::AwaitingAck | CallState::Confirmed)
            {
                // Both remaining parties are gone while the transferor is
                // still connected (it did not hang up after the NOTIFY).
                a_queue.extend(a.handle(CallEvent::Hangup, Instant::now()));
                continue;
            }
            if a.state() == CallState::Ended && self.transferred {
                if self.legs.is_empty() {
                    break;
                }
            } else if a.state() == CallState::Ended {
                if self.legs.iter().any(|l| !l.uac.hanging_up()) {
                    if self.end_reason == "unknown" {
                        self.end_reason = "caller hung up".into();
                    }
                    self.hang_up_legs(&mut b_queue);
                    continue;
                }
                if self.legs.is_empty() {
                    break;
                }
            }
            if !b_queue.is_empty() || !a_queue.is_empty() {
                // Actions queued after their queue was drained (a transfer
                // that failed hangs a leg up): run them before waiting.
                continue;
            }
            let a_deadline = a.deadline();
            let b_deadline = self.legs.iter().filter_map(|l| l.uac.deadline()).min();
            let ring_deadline = self
                .ring_deadline
                .filter(|_| self.winner.is_none() && a.state() == CallState::Ringing);
            tokio::select! {
                next = invite.next_request(), if invite_open => {
                    let now = Instant::now();
                    let event = match next {
                        Some(r) if r.method == Method::Ack && !r.body.is_empty() => {
                            // A delayed offer's answer.
                            a_queue.extend(a.handle(CallEvent::AckWithSdp(&r.body), now));
                            continue;
                        }
                        Some(r) if r.method == Method::Ack => CallEvent::Ack,
                        Some(r) if r.method == Method::Cancel => {
                            self.end_reason = "caller cancelled".into();
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
                    let request = InDialog::of(&tx.original);
                    let call_id = tx.original.call_id_header().map(|h| h.value().to_string()).unwrap_or_default();
                    if call_id != self.a_call_id {
                        let Some(leg) = self.legs.iter_mut().find(|l| l.call_id == call_id) else {
                            let mut tx = tx;
                            let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                            continue;
                        };
                        let id = leg.id;
                        // A target refresh (RFC 3261 §12.2.2) moves where
                        // our requests in this dialog go.
                        if leg.to_tag.is_some()
                            && matches!(request.method(), Method::Invite | Method::Update)
                            && let Some(uri) = contact_uri(&tx.original.headers)
                        {
                            leg.remote_target = Some(uri);
                            if leg.answered {
                                follow_dialog(&b2bua, leg).await;
                            }
                        }
                        b_pending = Some((id, *tx));
                        b_queue.extend(leg.uac.handle(request.uac_event(), now).into_iter().map(|x| (id, x)));
                    } else {
                        dialog.refresh_target(&tx.original);
                        if matches!(request.method(), Method::Invite | Method::Update)
                            && matches!(a.state(), CallState::AwaitingAck | CallState::Confirmed)
                            && let Some(refusal) = take_session_request(&mut a, &dialog, &tx.original, min_se)
                        {
                            respond_and_keep(*tx, refusal).await;
                            continue;
                        }
                        a_pending = Some(*tx);
                        if request.method() == Method::Bye {
                            self.end_reason = "caller hung up".into();
                        }
                        a_queue.extend(a.handle(request.call_event(), now));
                    }
                }
                Some((id, report)) = reports_rx.recv() => {
                    let now = Instant::now();
                    let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) else { continue };
                    match report {
                        InviteReport::Response(cseq, _) | InviteReport::Ended(cseq) if cseq != leg.invite_cseq => {
                            // From an INVITE we already replaced (answered challenge).
                        }
                        InviteReport::Response(_, response) => {
                            let status = response.status_code.code();
                            if !leg.learn(&response) {
                                if (200..300).contains(&status) {
                                    info!(leg = %leg.label, "a second fork answered: ACK, BYE");
                                    let (ack, bye, destination) = leg.ack_and_bye_for_fork(&response);
                                    // Off the call's loop: finding the hop
                                    // may wait on DNS or a connection.
                                    tokio::spawn(end_fork(
                                        b2bua.clone(),
                                        leg.label.clone(),
                                        leg.invite_hop.clone(),
                                        (ack, bye),
                                        destination,
                                    ));
                                }
                                continue;
                            }
                            let body = response.body.clone();
                            let sdp = (!body.is_empty()).then_some(body.as_slice());
                            let event = match status {
                                100 => UacEvent::Trying,
                                101..=199 => match reliable_rseq(&response) {
                                    Some(rseq) => UacEvent::ReliableProvisional(status, sdp, rseq),
                                    None => UacEvent::Provisional(status, sdp),
                                },
                                200..=299 if matches!(leg.media, OutMedia::WebRtc(_)) => {
                                    UacEvent::Accepted(accept_browser_answer(leg, &body))
                                }
                                200..=299 => UacEvent::Success(sdp),
                                401 | 407 if can_authenticate(leg, &response) => UacEvent::Challenge,
                                422 if leg.accept_min_se(&response) => UacEvent::IntervalTooSmall,
                                _ => UacEvent::Failure(status),
                            };
                            b_queue.extend(leg.uac.handle(event, now).into_iter().map(|x| (id, x)));
                            let answered = (200..300).contains(&status);
                            if answered && !leg.answered {
                                // From here the transaction is gone: the SIP
                                // core hands us a 2xx of another fork (even
                                // while `follow_dialog` waits on DNS or a
                                // connection) and keeps our ACK.
                                let reports = reports_tx.clone();
                                let cseq = leg.invite_cseq;
                                let forks: ForkHandler = Arc::new(move |r| {
                                    let _ = reports.send((id, InviteReport::Response(cseq, Box::new(r))));
                                });
                                if let Some(guard) = b2bua.core.expect_ack(&response, forks) {
                                    leg.ack = Some(guard);
                                }
                                follow_dialog(&b2bua, leg).await;
                            }
                            leg.answered |= answered;
                            if answered
                                && let Some((interval, we_refresh)) = session_timer(&response)
                            {
                                info!(leg = %leg.label, interval = interval.as_secs(), we_refresh, "session timer");
                                leg.uac.start_session_timer(interval, we_refresh, now);
                            }
                        }
                        InviteReport::Ended(_) => {
                            // The newest INVITE's transaction ended without a
                            // final answer: Timer B.
                            if matches!(leg.uac.state(), UacState::Calling | UacState::Proceeding | UacState::Cancelling) {
                                b_queue.extend(leg.uac.handle(UacEvent::Timeout, now).into_iter().map(|x| (id, x)));
                            }
                        }
                    }
                }
                Some(event) = a_leg_rx.recv() => {
                    match event {
                        LegEvent::Closed(reason, stats) => {
                            info!(?reason, "caller's media closed");
                            self.a_stats = Some(stats);
                            self.end_reason = format!("caller media: {reason:?}");
                            a_queue.extend(a.handle(CallEvent::LegClosed(*reason), Instant::now()));
                            self.hang_up_legs(&mut b_queue);
                        }
                        LegEvent::Removed(stats) => self.a_stats = Some(stats),
                        LegEvent::Dtmf { digit, duration_ms } => {
                            debug!(%digit, duration_ms, "DTMF from the caller");
                            self.info_dtmf_to_callee(digit, duration_ms);
                        }
                    }
                }
                Some(event) = b_leg_rx.recv() => {
                    match event {
                        LegEvent::Closed(reason, stats) => {
                            info!(?reason, "callee's media closed");
                            self.b_stats = Some(stats);
                            self.end_reason = format!("callee media: {reason:?}");
                            for leg in self.legs.iter_mut().filter(|l| l.joined) {
                                leg.joined = false;
                            }
                            self.hang_up_legs(&mut b_queue);
                            a_queue.extend(a.handle(CallEvent::Hangup, Instant::now()));
                        }
                        LegEvent::Removed(stats) => self.b_stats = Some(stats),
                        LegEvent::Dtmf { digit, duration_ms } => debug!(%digit, duration_ms, "DTMF from the callee"),
                    }
                }
                Some(status) = a_bye_rx.recv() => {
                    a_queue.extend(a.handle(CallEvent::ByeDone(status), Instant::now()));
                }
                Some(outcome) = a_refresh_rx.recv() => {
                    debug!(status = outcome.status, "the caller answered our session refresh");
                    a_queue.extend(a.handle(CallEvent::RefreshDone(outcome), Instant::now()));
                }
                Some(id) = notified_rx.recv() => {
                    // The replaced callee has its last NOTIFY: hang it up.
                    if let Some(leg) = self.leg(id)
                        && leg.uac.state() == UacState::Confirmed
                    {
                        b_queue.extend(leg.uac.handle(UacEvent::Hangup, Instant::now()).into_iter().map(|x| (id, x)));
                    }
                }
                Some(control) = control_rx.recv() => {
                    let Control::HandOver(reply) = control;
                    let handed = if a.state() == CallState::Confirmed {
                        self.hand_over(&room).await
                    } else {
                        None
                    };
                    let given = handed.is_some();
                    if let Err(Some(back)) = reply.send(handed) {
                        // The other call gave up waiting: end the leg here.
                        let mut leg = back.leg;
                        leg.joined = false;
                        let id = leg.id;
                        b_queue.extend(leg.uac.handle(UacEvent::Hangup, Instant::now()).into_iter().map(|x| (id, x)));
                        self.legs.push(leg);
                    }
                    if given {
                        info!("replaced by the caller's other call (attended transfer)");
                        self.end_reason = "replaced (attended transfer)".into();
                        a_queue.extend(a.handle(CallEvent::Hangup, Instant::now()));
                    }
                }
                Some((id, status, body)) = refresh_rx.recv() => {
                    if let Some(leg) = self.leg(id) {
                        debug!(leg = %leg.label, status, answer = body.len(), "session refresh answered");
                        let answer = (!body.is_empty()).then_some(body.as_slice());
                        b_queue.extend(leg.uac.handle(UacEvent::RefreshDone(status, answer), Instant::now()).into_iter().map(|x| (id, x)));
                    }
                }
                Some((id, status)) = b_bye_rx.recv() => {
                    if let Some(leg) = self.leg(id) {
                        b_queue.extend(leg.uac.handle(UacEvent::ByeDone(status), Instant::now()).into_iter().map(|x| (id, x)));
                    }
                }
                _ = sleep_until(a_deadline), if a_deadline.is_some() => {
                    let ringing = a.state() == CallState::Ringing;
                    a_queue.extend(a.handle(CallEvent::Timer, Instant::now()));
                    if ringing && a.state() == CallState::Ended {
                        info!("the caller never acknowledged our reliable provisional (PRACK)");
                        self.end_reason = "no PRACK from the caller".into();
                    }
                }
                _ = sleep_until(b_deadline), if b_deadline.is_some() => {
                    let now = Instant::now();
                    for leg in self.legs.iter_mut().filter(|l| l.uac.deadline().is_some_and(|d| d <= now)) {
                        let id = leg.id;
                        let calling = leg.uac.state() == UacState::Calling;
                        b_queue.extend(leg.uac.handle(UacEvent::Timer, now).into_iter().map(|x| (id, x)));
                        if calling && leg.uac.state() == UacState::Ended {
                            // Stop retransmitting to a peer that never answered.
                            if let Some(task) = leg.invite_task.take() {
                                task.abort();
                            }
                        }
                    }
                }
                _ = sleep_until(ring_deadline), if ring_deadline.is_some() => {
                    info!("nobody answered in time");
                    self.ring_deadline = None;
                    self.no_answer = true;
                    self.end_reason = "no answer".into();
                    self.hang_up_legs(&mut b_queue);
                }
            }
            if self.no_answer && self.legs.is_empty() && a.state() == CallState::Ringing {
                outcome = Some(BridgeOutcome::NoAnswer);
                break;
            }
        }

        // Tear down: the caller's media if it never joined, legs a failure
        // left, the caller's dialog, the room.
        drop(caller.prepared.take());
        for leg in self.legs.drain(..) {
            b2bua.unregister(&leg.key());
        }
        b2bua.unregister(&a_key);
        b2bua.unregister_control(&a_key);
        let _ = room.send(Command::Close).await;
        // Final counters arrive as `Removed` events when the room closes.
        let a_joined = caller.joined;
        drop(caller);
        drop(b_leg_tx);
        let (mut a_stats, mut b_stats) = (self.a_stats.take(), self.b_stats.take());
        let collect = async {
            while (a_joined && a_stats.is_none()) || (self.winner.is_some() && b_stats.is_none()) {
                tokio::select! {
                    Some(LegEvent::Removed(s) | LegEvent::Closed(_, s)) = a_leg_rx.recv(), if a_stats.is_none() => a_stats = Some(s),
                    Some(LegEvent::Removed(s) | LegEvent::Closed(_, s)) = b_leg_rx.recv(), if b_stats.is_none() => b_stats = Some(s),
                    else => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), collect).await;
        dialog_rx.close();
        while let Some(mut tx) = dialog_rx.recv().await {
            let response = dialog.response(&tx.original, 481, None);
            let _ = tx.respond(response).await;
        }
        let ended = now_unix();
        match &outcome {
            Some(BridgeOutcome::Failed(_, reason)) => self.end_reason = format!("failed: {reason}"),
            Some(BridgeOutcome::NoAnswer) => self.end_reason = "no answer".into(),
            _ => {}
        }
        let (caller, callee, trunk, from_trunk, direction, out_role) = match &self.destination {
            Destination::Trunks(route) => (
                &route.caller,
                route.number.clone(),
                self.out_label.clone(),
                route.from_trunk.clone(),
                if route.from_trunk.is_some() {
                    "transit"
                } else {
                    "outbound"
                },
                "trunk",
            ),
            Destination::Browsers(route) => (
                &route.caller,
                route.callee.clone(),
                route.from_trunk.clone(),
                None,
                if route.from_trunk.is_some() {
                    "inbound"
                } else {
                    "internal"
                },
                "callee",
            ),
        };
        b2bua.cdr.write(CallRecord {
            call_id: self.a_call_id.clone(),
            caller: caller.user.clone(),
            caller_asserted: caller.asserted.clone(),
            caller_private: caller.private,
            callee,
            trunk,
            from_trunk,
            direction,
            start: started,
            answer: self.answered_at,
            end: ended,
            duration: self.answered_at.map(|t| ended - t).unwrap_or(0.0),
            end_reason: self.end_reason.clone(),
            status: if self.answered_at.is_some() {
                200
            } else {
                self.last_failure.0
            },
            legs: vec![
                // What the caller's leg speaks last (a re-INVITE, or the
                // ACK's answer to a delayed offer, may have moved it).
                LegRecord::new(
                    "caller",
                    Some(a.negotiated().codec.kind.name().to_string()),
                    a_stats.map(|s| *s),
                ),
                LegRecord::new(out_role, self.out_codec.clone(), b_stats.map(|s| *s)),
            ],
            transfers: std::mem::take(&mut self.transfers),
        });
        info!(reason = %self.end_reason, "bridged call ended");
        match outcome {
            Some(outcome @ (BridgeOutcome::Failed(..) | BridgeOutcome::NoAnswer)) => outcome,
            _ => {
                // The call is over; its INVITE transaction still absorbs the
                // ACK and retransmits finals (Timer I, T4 after the ACK).
                drop(count);
                while invite.next_request().await.is_some() {}
                BridgeOutcome::Done
            }
        }
    }

    /// Places the legs of a blind transfer to `target` (REFER from the
    /// caller): routed by the dialplan as a call from the caller would be.
    async fn start_transfer(
        &mut self,
        target: &str,
        reports: &Reports,
        dialogs: &DialogSender,
        dialog: &mut Dialog,
    ) {
        let b2bua = self.b2bua.clone();
        if self.winner.is_none() || self.transferring || self.transferred {
            notify_transfer(&b2bua, dialog, &self.peer, "503 Service Unavailable", true);
            return;
        }
        let user = Uri::try_from(target)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_else(|| target.trim_start_matches("tel:").to_string());
        let transferor = self
            .request
            .from_header()
            .ok()
            .and_then(|h| h.typed().ok())
            .and_then(|f| f.uri.user().map(str::to_string))
            .unwrap_or_default();
        let Some(destination) = b2bua.route_transfer(&user, &transferor) else {
            info!(%target, "transfer target has no route");
            notify_transfer(&b2bua, dialog, &self.peer, "404 Not Found", true);
            return;
        };
        info!(%target, "blind transfer");
        notify_transfer(&b2bua, dialog, &self.peer, "100 Trying", false);
        if self
            .place_transfer_legs(&destination, reports, dialogs)
            .await
            == 0
        {
            notify_transfer(&b2bua, dialog, &self.peer, "503 Service Unavailable", true);
        } else {
            self.transferring = true;
        }
    }

    /// Places the outgoing legs of a transfer (marked `transfer`): the
    /// first trunk that takes it, or every browser of the target; how many.
    async fn place_transfer_legs(
        &mut self,
        destination: &Destination,
        reports: &Reports,
        dialogs: &DialogSender,
    ) -> usize {
        let b2bua = self.b2bua.clone();
        let mut started = 0;
        match destination {
            Destination::Trunks(route) => {
                for name in &route.trunks {
                    self.next_id += 1;
                    if let Ok(mut leg) =
                        start_trunk_leg(&b2bua, self.next_id, name, route, reports).await
                    {
                        leg.transfer = true;
                        b2bua.register(leg.key(), dialogs.clone());
                        self.legs.push(leg);
                        started += 1;
                        break;
                    }
                }
            }
            Destination::Browsers(route) => {
                for target in &route.targets {
                    self.next_id += 1;
                    if let Ok(mut leg) =
                        start_browser_leg(&b2bua, self.next_id, target, route, reports)
                    {
                        leg.transfer = true;
                        b2bua.register(leg.key(), dialogs.clone());
                        self.legs.push(leg);
                        started += 1;
                    }
                }
            }
        }
        started
    }

    /// Blind transfer asked by the answered callee `id` (REFER on our
    /// dialog with it): the caller is connected to `target` instead, routed
    /// as a call from the callee; NOTIFYs go to the callee.
    async fn start_callee_transfer(
        &mut self,
        id: u64,
        target: &str,
        reports: &Reports,
        dialogs: &DialogSender,
    ) {
        let b2bua = self.b2bua.clone();
        let busy = self.winner != Some(id)
            || self.transferring
            || self.transferred
            || self.callee_transfer.is_some();
        let transferor = self.leg(id).map(|l| l.label.clone()).unwrap_or_default();
        let user = Uri::try_from(target)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_else(|| target.trim_start_matches("tel:").to_string());
        let destination = if busy {
            None
        } else {
            b2bua.route_transfer(&user, &transferor)
        };
        let Some(destination) = destination else {
            let status = if busy {
                "503 Service Unavailable"
            } else {
                "404 Not Found"
            };
            info!(%target, status, "transfer by the callee refused");
            if let Some(leg) = self.leg(id) {
                notify_leg(&b2bua, leg, status, true);
            }
            return;
        };
        info!(%target, callee = %transferor, "blind transfer by the callee");
        if let Some(leg) = self.leg(id) {
            notify_leg(&b2bua, leg, "100 Trying", false);
        }
        if self
            .place_transfer_legs(&destination, reports, dialogs)
            .await
            == 0
        {
            if let Some(leg) = self.leg(id) {
                notify_leg(&b2bua, leg, "503 Service Unavailable", true);
            }
        } else {
            self.callee_transfer = Some(id);
        }
    }

    /// Gives the answered outgoing leg away (see [`Control::HandOver`]):
    /// its media leaves our room with its leg open, its dialog leaves our
    /// table. `None` when there is no answered leg to give.
    async fn hand_over(&mut self, room: &RoomHandle) -> Option<HandOver> {
        if self.transferring || self.transferred {
            return None;
        }
        let winner = self.winner?;
        let i = self
            .legs
            .iter()
            .position(|l| l.id == winner && l.joined && l.uac.state() == UacState::Confirmed)?;
        let media = room.detach(self.legs[i].participant).await.ok()??;
        let leg = self.legs.swap_remove(i);
        self.b2bua.unregister(&leg.key());
        self.winner = None;
        Some(HandOver { leg, media })
    }

    /// Attended transfer (REFER with `Replaces`): takes over the answered
    /// party of the caller's other call (the dialog `replaces` names) and
    /// connects it with ours in our room; the caller leaves both calls.
    async fn attended_transfer(
        &mut self,
        replaces: &Replaces,
        ours: &Joined<'_>,
        dialog: &mut Dialog,
        b_queue: &mut std::collections::VecDeque<(u64, UacAction)>,
    ) {
        let b2bua = self.b2bua.clone();
        if self.winner.is_none() || self.transferring || self.transferred {
            notify_transfer(&b2bua, dialog, &self.peer, "503 Service Unavailable", true);
            return;
        }
        let Some(other) = self.other_call(replaces) else {
            let status = "481 Call/Transaction Does Not Exist";
            notify_transfer(&b2bua, dialog, &self.peer, status, true);
            return;
        };
        notify_transfer(&b2bua, dialog, &self.peer, "100 Trying", false);
        let Some(handed) = ask_hand_over(other, replaces).await else {
            notify_transfer(&b2bua, dialog, &self.peer, "503 Service Unavailable", true);
            return;
        };
        let Some((_, label)) = self.adopt(handed, true, ours, b_queue).await else {
            notify_transfer(&b2bua, dialog, &self.peer, "503 Service Unavailable", true);
            return;
        };
        let _ = ours.room.send(Command::Remove(ours.caller)).await;
        // The transferor held this call first: its hold tone goes with it.
        self.hold_tone(ours.room, false).await;
        self.transferred = true;
        let t = TransferRecord::new(now_unix(), "attended", "caller", &label);
        self.end_reason = t.end_reason();
        self.transfers.push(t);
        info!(leg = %label, "attended transfer: the two parties are connected");
        notify_transfer(&b2bua, dialog, &self.peer, "200 OK", true);
    }

    /// Takes a party handed over by another call ([`Control::HandOver`])
    /// into this one: a leg id of ours, our dialog table, our room. Its id
    /// and label; `None` (and the party hung up) when it cannot join.
    async fn adopt(
        &mut self,
        handed: HandOver,
        transfer: bool,
        ours: &Joined<'_>,
        b_queue: &mut std::collections::VecDeque<(u64, UacAction)>,
    ) -> Option<(u64, String)> {
        let HandOver { mut leg, media } = handed;
        self.next_id += 1;
        leg.id = self.next_id;
        leg.transfer = transfer;
        self.b2bua.register(leg.key(), ours.dialogs.clone());
        let label = leg.label.clone();
        let joined = ours
            .room
            .add(
                leg.participant,
                media.leg,
                media.sockets,
                media.config,
                Some(ours.events.clone()),
            )
            .await;
        let id = leg.id;
        let adopted = match joined {
            Ok(()) => Some((id, label)),
            Err(e) => {
                warn!(error = %e, leg = %label, "attended transfer: the party could not join");
                leg.joined = false;
                b_queue.extend(
                    leg.uac
                        .handle(UacEvent::Hangup, Instant::now())
                        .into_iter()
                        .map(|x| (id, x)),
                );
                None
            }
        };
        self.legs.push(leg);
        adopted
    }

    /// The transferor's other call, the one whose dialog `replaces` names
    /// (never this one); `None` when there is no such call.
    fn other_call(&self, replaces: &Replaces) -> Option<mpsc::UnboundedSender<Control>> {
        let other = (replaces.call_id != self.a_call_id)
            .then(|| {
                self.b2bua
                    .control_of(&replaces.call_id, [&replaces.to_tag, &replaces.from_tag])
            })
            .flatten();
        if other.is_none() {
            info!(call_id = %replaces.call_id, "attended transfer: no such call");
        }
        other
    }

    /// Attended transfer by the answered callee `id` (REFER with
    /// `Replaces` on our dialog with it): the answered party of its other
    /// call (the dialog `replaces` names, one it placed through us) takes
    /// its place in our room, and becomes this call's callee; the
    /// transferor gets NOTIFYs and then a BYE, its other call ends.
    async fn callee_attended_transfer(
        &mut self,
        id: u64,
        replaces: &Replaces,
        ours: &Joined<'_>,
        notified: &mpsc::UnboundedSender<u64>,
        b_queue: &mut std::collections::VecDeque<(u64, UacAction)>,
    ) {
        let b2bua = self.b2bua.clone();
        let busy = self.winner != Some(id)
            || self.transferring
            || self.transferred
            || self.callee_transfer.is_some();
        let other = if busy {
            None
        } else {
            self.other_call(replaces)
        };
        let Some(other) = other else {
            let status = if busy {
                "503 Service Unavailable"
            } else {
                "481 Call/Transaction Does Not Exist"
            };
            if let Some(leg) = self.leg(id) {
                notify_leg(&b2bua, leg, status, true);
            }
            return;
        };
        if let Some(leg) = self.leg(id) {
            notify_leg(&b2bua, leg, "100 Trying", false);
        }
        let handed = match ask_hand_over(other, replaces).await {
            Some(handed) => self.adopt(handed, false, ours, b_queue).await,
            None => None,
        };
        let Some((new_id, label)) = handed else {
            if let Some(leg) = self.leg(id) {
                notify_leg(&b2bua, leg, "503 Service Unavailable", true);
            }
            return;
        };
        // The transferor leaves: out of the room, NOTIFY 200, then BYE.
        if let Some(old) = self.leg(id) {
            let _ = ours.room.send(Command::Remove(old.participant)).await;
            notify_leg_then(&b2bua, old, "200 OK", true, Some(notified.clone()));
            old.joined = false;
        }
        // It held this call first: its hold tone goes with it.
        self.hold_tone(ours.room, false).await;
        info!(leg = %label, "attended transfer by the callee: the two parties are connected");
        self.out_codec = self.leg(new_id).and_then(|l| l.codec.clone());
        let t = TransferRecord::new(now_unix(), "attended", "callee", &label);
        self.end_reason = t.end_reason();
        self.transfers.push(t);
        self.out_label = Some(label);
        self.winner = Some(new_id);
    }

    /// The Opus `maxplaybackrate` to ask of a browser caller: what the
    /// trunks can carry (8 kHz for G.711, 16 kHz with G.722), so that the
    /// browser encodes, and we decode, no more than can be heard.
    fn playback_rate_towards_caller(&self) -> Option<u32> {
        let Destination::Trunks(route) = &self.destination else {
            return None;
        };
        let wideband = route.trunks.iter().any(|name| {
            self.b2bua.trunks.get(name).is_none_or(|t| {
                t.config.codecs.iter().any(|c| {
                    !matches!(
                        c,
                        crate::media::codec::CodecKind::Pcmu | crate::media::codec::CodecKind::Pcma
                    )
                })
            })
        });
        Some(if wideband { 16_000 } else { 8_000 })
    }

    /// Sends a digit to the answered callee as SIP INFO when its trunk wants
    /// DTMF that way; false when it does not (the room sends RFC 4733).
    fn info_dtmf_to_callee(&mut self, digit: char, ms: u32) -> bool {
        let winner = self.winner;
        let Some(leg) = self.legs.iter_mut().find(|l| Some(l.id) == winner) else {
            return false;
        };
        let info_trunk = leg
            .trunk
            .as_ref()
            .is_some_and(|t| t.config.dtmf == DtmfMode::Info);
        if !info_trunk || leg.uac.state() != UacState::Confirmed {
            return info_trunk;
        }
        let body = format!("Signal={digit}\r\nDuration={ms}\r\n");
        let info = leg.in_dialog(Method::Info, Some(("application/dtmf-relay", body)));
        send_in_dialog(&self.b2bua.outbound, &leg.hop, info, None);
        true
    }

    /// Legs still ringing or talking, other than `id`.
    fn legs_alive_except(&self, id: u64) -> usize {
        self.legs
            .iter()
            .filter(|l| {
                l.id != id
                    && matches!(
                        l.uac.state(),
                        UacState::Calling | UacState::Proceeding | UacState::Confirmed
                    )
            })
            .count()
    }

    /// Legs still ringing or talking.
    fn legs_alive(&self) -> usize {
        self.legs_alive_except(u64::MAX)
    }

    /// Hangs up (CANCEL or BYE) every outgoing leg.
    fn hang_up_legs(&mut self, queue: &mut std::collections::VecDeque<(u64, UacAction)>) {
        let now = Instant::now();
        for leg in &mut self.legs {
            let id = leg.id;
            queue.extend(
                leg.uac
                    .handle(UacEvent::Hangup, now)
                    .into_iter()
                    .map(|x| (id, x)),
            );
        }
    }
}

/// The `RSeq` of a reliable provisional response (`Require: 100rel`,
/// RFC 3262), `None` for an unreliable one.
fn reliable_rseq(response: &crate::sip::Response) -> Option<u32> {
    let required = response.headers.iter().any(|h| {
        h.name().eq_ignore_ascii_case("Require")
            && h.value()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
    });
    if !required {
        return None;
    }
    response
        .headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("RSeq"))
        .and_then(|h| h.value().trim().parse().ok())
}

/// Asks the call behind `other` to hand over its answered party
/// ([`Control::HandOver`]), waiting at most 5 s.
async fn ask_hand_over(
    other: mpsc::UnboundedSender<Control>,
    replaces: &Replaces,
) -> Option<HandOver> {
    let (tx, mut rx) = oneshot::channel();
    let handed = match other.send(Control::HandOver(tx)) {
        Ok(()) => match tokio::time::timeout(Duration::from_secs(5), &mut rx).await {
            Ok(result) => result.ok().flatten(),
            // Closed first: a party handed over at the last moment is taken,
            // not dropped with the receiver (its dialog would get no BYE).
            Err(_) => {
                rx.close();
                rx.try_recv().ok().flatten()
            }
        },
        Err(_) => None,
    };
    if handed.is_none() {
        info!(call_id = %replaces.call_id, "attended transfer: the other call has no party to give");
    }
    handed
}

/// Our side of a call, as a transfer needs it.
struct Joined<'a> {
    room: &'a RoomHandle,
    /// The caller's participant.
    caller: ParticipantId,
    /// Where in-dialog requests of our legs go.
    dialogs: &'a DialogSender,
    /// Where the outgoing legs' media events go.
    events: &'a mpsc::UnboundedSender<LegEvent>,
}

/// Hangs up (CANCEL or BYE) the transfer legs other than `id`, the one
/// that answered.
fn hang_up_other_transfer_legs(
    legs: &mut [OutLeg],
    id: u64,
    queue: &mut std::collections::VecDeque<(u64, UacAction)>,
) {
    let now = Instant::now();
    for other in legs.iter_mut().filter(|l| l.transfer && l.id != id) {
        let other_id = other.id;
        queue.extend(
            other
                .uac
                .handle(UacEvent::Hangup, now)
                .into_iter()
                .map(|x| (other_id, x)),
        );
    }
}

/// Reports a transfer's progress to the callee that asked for it (NOTIFY
/// on our dialog with it, message/sipfrag); `last` ends the subscription.
fn notify_leg(b2bua: &Arc<B2bua>, leg: &mut OutLeg, status: &str, last: bool) {
    notify_leg_then(b2bua, leg, status, last, None);
}

/// [`notify_leg`], then (when the NOTIFY has its final response) reports
/// the leg on `then`: our BYE must not overtake our last NOTIFY.
fn notify_leg_then(
    b2bua: &Arc<B2bua>,
    leg: &mut OutLeg,
    status: &str,
    last: bool,
    then: Option<mpsc::UnboundedSender<u64>>,
) {
    let state = if last {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    let mut notify = leg.in_dialog(
        Method::Notify,
        Some((
            "message/sipfrag;version=2.0",
            format!("SIP/2.0 {status}\r\n"),
        )),
    );
    notify
        .headers
        .push(Header::Other("Event".into(), "refer".into()));
    notify
        .headers
        .push(Header::Other("Subscription-State".into(), state.into()));
    notify
        .headers
        .push(Header::Contact(leg.contact.clone().into()));
    let done = then.map(|then| {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let id = leg.id;
        tokio::spawn(async move {
            let _ = rx.recv().await;
            let _ = then.send(id);
        });
        tx
    });
    send_in_dialog(&b2bua.outbound, &leg.hop, notify, done);
}

/// Reports a transfer's progress to the caller (RFC 3515 NOTIFY with a
/// message/sipfrag status line); `last` ends the implicit subscription.
fn notify_transfer(b2bua: &Arc<B2bua>, dialog: &mut Dialog, peer: &Peer, status: &str, last: bool) {
    let state = if last {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    let notify = dialog.request(
        Method::Notify,
        vec![
            Header::Other("Event".into(), "refer".into()),
            Header::Other("Subscription-State".into(), state.into()),
        ],
        Some((
            "message/sipfrag;version=2.0",
            format!("SIP/2.0 {status}\r\n"),
        )),
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    send_bye(&notify, peer, &b2bua.core, tx);
}

/// Whether a 401/407 can be answered (credentials configured for its
/// realm); keeps the challenge for [`resend_with_credentials`].
fn can_authenticate(leg: &mut OutLeg, response: &crate::sip::Response) -> bool {
    let Some(creds) = leg.trunk.as_ref().and_then(|t| t.config.credentials()) else {
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
fn resend_with_credentials(b2bua: &Arc<B2bua>, leg: &mut OutLeg, reports: &Reports) -> bool {
    let Some(creds) = leg.trunk.as_ref().and_then(|t| t.config.credentials()) else {
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
    send_invite(b2bua, leg, invite, reports).is_ok()
}

/// Adds an outgoing leg to the room: a trunk's as a plain RTP participant
/// with what was negotiated, a browser's WebRTC leg with what it accepted.
async fn join_out_leg(
    b2bua: &Arc<B2bua>,
    room: &RoomHandle,
    leg: &mut OutLeg,
    neg: &Negotiated,
    events: &mpsc::UnboundedSender<LegEvent>,
) -> bool {
    if leg.joined {
        // Only a trunk's RTP leg joins early (a 183 with SDP); a browser's
        // WebRTC leg keeps what it negotiated itself.
        if matches!(leg.media, OutMedia::Rtp(_)) {
            update_rtp_leg(room, leg.participant, neg).await;
        }
        return true;
    }
    let Some(join) = out_leg_join(b2bua, leg, neg, events) else {
        return false;
    };
    let done = room
        .add(join.id, join.leg, join.sockets, join.config, join.events)
        .await;
    out_leg_joined(leg, done)
}

/// What adds an outgoing leg (not yet in) to the room: its media, built
/// from the trunk's SDP or the browser's prepared WebRTC leg.
fn out_leg_join(
    b2bua: &Arc<B2bua>,
    leg: &mut OutLeg,
    neg: &Negotiated,
    events: &mpsc::UnboundedSender<LegEvent>,
) -> Option<Join> {
    // A browser's WebRTC leg knows what it accepted; a trunk's is the SDP's.
    let config = match &leg.media {
        OutMedia::WebRtc(Some((webrtc, _))) => webrtc.negotiated().map(|n| n.participant),
        _ => None,
    }
    .unwrap_or_else(|| neg.participant_config());
    let (media, sockets): (Box<dyn Leg>, LegSockets) = match &mut leg.media {
        OutMedia::Rtp(ports) => {
            let ports = ports.take()?;
            let rtp = RtpLeg::new(
                RtpLegConfig::from_negotiated(neg, b2bua.engine.config().media_timeout()),
                Instant::now(),
            );
            (Box::new(rtp), ports.into())
        }
        OutMedia::WebRtc(prepared) => {
            let (webrtc, sockets) = prepared.take()?;
            (webrtc, sockets)
        }
    };
    Some(Join {
        id: leg.participant,
        leg: media,
        sockets,
        config,
        events: Some(events.clone()),
    })
}

/// Records how an outgoing leg's join went.
fn out_leg_joined(leg: &mut OutLeg, done: Result<(), EngineError>) -> bool {
    match done {
        Ok(()) => {
            leg.joined = true;
            true
        }
        Err(e) => {
            warn!(error = %e, leg = %leg.label, "outgoing leg could not join the room");
            false
        }
    }
}

/// The caller's side of the call's media: its prepared leg until it joins
/// the room, and the channel its leg reports on.
struct CallerJoin {
    id: ParticipantId,
    prepared: Option<Prepared>,
    joined: bool,
    events: mpsc::UnboundedSender<LegEvent>,
}

impl CallerJoin {
    /// Adds the prepared leg to the room (once). Whether it is in.
    async fn join(&mut self, room: &RoomHandle) -> bool {
        if self.joined {
            return true;
        }
        let Some(p) = self.prepared.take() else {
            return false;
        };
        let done = room
            .add(
                self.id,
                p.leg,
                p.sockets,
                p.config,
                Some(self.events.clone()),
            )
            .await;
        self.record(done)
    }

    /// The prepared leg as a join for [`RoomHandle::add_all`], taken.
    fn take_join(&mut self) -> Option<Join> {
        let p = self.prepared.take()?;
        Some(Join {
            id: self.id,
            leg: p.leg,
            sockets: p.sockets,
            config: p.config,
            events: Some(self.events.clone()),
        })
    }

    /// Records how the join went.
    fn record(&mut self, done: Result<(), EngineError>) -> bool {
        match done {
            Ok(()) => {
                self.joined = true;
                true
            }
            Err(e) => {
                warn!(error = %e, "caller could not join the room");
                false
            }
        }
    }
}

/// The answering (or early-media) outgoing leg and the caller, each
/// joined if not in yet: both in one command when both are new, so that
/// no tick runs while one of them is alone in the room (it would be sent
/// the silence of an empty mix). Whether each is in.
async fn join_pair(
    b2bua: &Arc<B2bua>,
    room: &RoomHandle,
    leg: &mut OutLeg,
    neg: &Negotiated,
    b_events: &mpsc::UnboundedSender<LegEvent>,
    caller: &mut CallerJoin,
) -> (bool, bool) {
    if leg.joined || caller.joined || caller.prepared.is_none() {
        let b = join_out_leg(b2bua, room, leg, neg, b_events).await;
        let a = caller.join(room).await;
        return (b, a);
    }
    let (Some(a_join), Some(b_join)) =
        (caller.take_join(), out_leg_join(b2bua, leg, neg, b_events))
    else {
        return (false, false);
    };
    let mut done = room
        .add_all(vec![b_join, a_join].into_boxed_slice())
        .await
        .into_iter();
    let b = out_leg_joined(leg, done.next().unwrap_or(Err(EngineError::RoomGone)));
    let a = caller.record(done.next().unwrap_or(Err(EngineError::RoomGone)));
    if a && !b {
        // The caller alone would be answered into silence: out again, so
        // that its answer fails ("caller media failed", a 500) as when it
        // joined after the callee's failed join.
        let _ = room.send(Command::Remove(caller.id)).await;
        caller.joined = false;
        return (false, false);
    }
    (b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokio channel allocates 32 slots of its item when created: the
    /// items of a call's channels and of a room's commands stay small
    /// (a `Transaction` by value made one block ~29 KB per call).
    #[test]
    fn channel_items_stay_small() {
        use std::mem::size_of;
        fn item_size<T>(_: &mpsc::UnboundedSender<T>) -> usize {
            size_of::<T>()
        }
        let dialogs: DialogSender = mpsc::unbounded_channel().0;
        assert!(item_size(&dialogs) <= 8, "{}", item_size(&dialogs));
        assert!(
            size_of::<(u64, InviteReport)>() <= 32,
            "{}",
            size_of::<(u64, InviteReport)>()
        );
        assert!(size_of::<Command>() <= 32, "{}", size_of::<Command>());
        // Two per call (one per leg); 72 bytes before the counters were boxed.
        assert!(size_of::<LegEvent>() <= 24, "{}", size_of::<LegEvent>());
    }

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
