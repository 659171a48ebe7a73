//! The stateful proxy (RFC 3261 §16) for calls and messages between local
//! users: authenticates the caller (407), looks up the callee's bindings,
//! forks to all of them in parallel, relays responses (first 2xx wins, the
//! others are CANCELed), propagates CANCEL, and Record-Routes with flow tokens
//! so that in-dialog requests come back through us and reach a browser over
//! its own WebSocket. Bodies (SDP) pass through untouched.

pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::prelude::ToTypedHeader;
use rsipstack::sip::{Param, Uri};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::TransactionEvent;
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::auth::authenticator::{Authenticator, Outcome};
use crate::directory::Directory;
use crate::registrar::service::{header_values, unix_now};
use crate::registrar::store::LocationStore;
use crate::registrar::{Binding, fork_order};
use crate::sip::{Header, HeadersExt, Method, Request, Response, SipConnection, SipCore, SipMessage, Source, StatusCode, Transaction, TransportKind};
use token::{Hop, TokenKey};

/// How long forked branches may ring before they are cancelled.
const RING_TIMEOUT: Duration = Duration::from_secs(120);

/// The proxy service, shared by all transactions.
pub struct Proxy {
    /// The SIP core.
    pub core: Arc<SipCore>,
    /// Bindings.
    pub store: Arc<dyn LocationStore>,
    /// Credentials checking (407).
    pub auth: Arc<Authenticator>,
    /// Flow token key.
    pub tokens: TokenKey,
    /// Our UDP socket, for UDP next hops.
    pub udp: Option<(SocketAddr, SipConnection)>,
}

/// A next hop resolved to something we can send on.
#[derive(Clone)]
struct Target {
    hop: Hop,
    connection: SipConnection,
    destination: Option<SipAddr>,
    kind: TransportKind,
    /// Our address on this leg (for Via and Record-Route).
    local: SocketAddr,
}

fn random_branch() -> String {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("z9hG4bK-sb{hex}")
}

fn transport_param(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => "",
        TransportKind::Tcp => ";transport=tcp",
        TransportKind::Tls => ";transport=tls",
        TransportKind::Ws => ";transport=ws",
        TransportKind::Wss => ";transport=wss",
    }
}

fn via_transport(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => "UDP",
        TransportKind::Tcp => "TCP",
        TransportKind::Tls => "TLS",
        TransportKind::Ws => "WS",
        TransportKind::Wss => "WSS",
    }
}

/// Removes the topmost Via value (ours) from a response; a Via header may
/// carry several comma-separated values.
fn pop_via(headers: &mut rsipstack::sip::Headers) {
    let Some(index) = headers.iter().position(|h| matches!(h, Header::Via(_))) else { return };
    let rest = match headers.iter().nth(index) {
        Some(Header::Via(via)) => split_first_value(via.value()).map(str::to_string),
        _ => None,
    };
    let mut all: Vec<Header> = headers.iter().cloned().collect();
    match rest {
        Some(rest) => all[index] = Header::Via(rest.into()),
        None => {
            all.remove(index);
        }
    }
    *headers = all.into();
}

/// The remainder of a comma-separated header value after its first element,
/// `None` when there is only one (commas inside quotes or <> do not count).
fn split_first_value(value: &str) -> Option<&str> {
    let (mut quoted, mut angle) = (false, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => return Some(value[i + 1..].trim()).filter(|r| !r.is_empty()),
            _ => {}
        }
    }
    None
}

/// Removes the first header that `is` selects.
fn remove_first(headers: &mut rsipstack::sip::Headers, is: impl Fn(&Header) -> bool) {
    let mut removed = false;
    headers.retain(|h| {
        if !removed && is(h) {
            removed = true;
            false
        } else {
            true
        }
    });
}

impl Proxy {
    /// Resolves a hop to a connection; `None` when its flow has closed.
    fn target(&self, hop: Hop) -> Option<Target> {
        match hop {
            Hop::Flow(id) => {
                let flow = self.core.connections().flow(id)?;
                Some(Target { hop, connection: flow.connection, destination: None, kind: flow.kind, local: flow.local })
            }
            Hop::Udp(addr) => {
                let (local, connection) = self.udp.clone()?;
                Some(Target {
                    hop,
                    connection,
                    destination: Some(SipAddr { r#type: Some(rsipstack::sip::Transport::Udp), addr: addr.into() }),
                    kind: TransportKind::Udp,
                    local,
                })
            }
        }
    }

    /// The hop a request arrived from.
    fn hop_of(source: &Source) -> Hop {
        match source.flow {
            Some(id) => Hop::Flow(id),
            None => Hop::Udp(source.remote),
        }
    }

    fn record_route(&self, hop: Hop, leg: &Target) -> Header {
        let token = self.tokens.encode(hop);
        Header::RecordRoute(format!("<sip:{token}@{}{};lr>", leg.local, transport_param(leg.kind)).into())
    }

    /// Prepares `request` for sending on `leg`: our Via on top, Max-Forwards down by one.
    fn prepare(&self, mut request: Request, leg: &Target) -> Result<Request, StatusCode> {
        let max_forwards = header_values(&request, |h| match h {
            Header::MaxForwards(m) => Some(m.value()),
            _ => None,
        })
        .first()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(70);
        if max_forwards == 0 {
            return Err(StatusCode::TooManyHops);
        }
        request.headers.retain(|h| !matches!(h, Header::MaxForwards(_)));
        let via = Header::Via(format!("SIP/2.0/{} {};branch={};rport", via_transport(leg.kind), leg.local, random_branch()).into());
        let mut headers = vec![via];
        headers.extend(request.headers.iter().cloned());
        headers.push(Header::MaxForwards((max_forwards - 1).to_string().into()));
        request.headers = headers.into();
        Ok(request)
    }

    /// Sends a request statelessly (ACK for 2xx).
    async fn send_stateless(&self, request: Request, leg: &Target) {
        if let Err(e) = leg.connection.send(SipMessage::Request(request), leg.destination.as_ref()).await {
            debug!(error = %e, "stateless forward failed");
        }
    }

    /// Handles a request that starts a dialog or stands alone (INVITE, MESSAGE, ...)
    /// addressed to a local user.
    pub async fn initial(self: Arc<Self>, directory: Arc<Directory>, mut server: Transaction, source: Source) {
        let request = server.original.clone();
        let method = request.method;
        let now = unix_now();
        // The caller must be one of our users, authenticated.
        let from = match request.from_header().and_then(|h| h.typed()) {
            Ok(from) => from,
            Err(_) => return reply(&mut server, StatusCode::BadRequest).await,
        };
        let Some(caller_realm) = directory.domain_of(&from.uri.host_with_port.host.to_string()) else {
            return reply(&mut server, StatusCode::Forbidden).await;
        };
        let credentials = header_values(&request, |h| match h {
            Header::ProxyAuthorization(a) => Some(a.value()),
            _ => None,
        });
        let caller_user = from.uri.user().unwrap_or_default().to_string();
        match self.auth.check(&directory, &caller_realm, &method.to_string(), &credentials, Some(&caller_user), source.remote.ip(), now) {
            Outcome::Authenticated(_) => {}
            Outcome::Banned => return reply(&mut server, StatusCode::Forbidden).await,
            Outcome::Challenge { stale } => {
                let headers = self.auth.challenges(&caller_realm, stale, now).into_iter().map(|c| Header::ProxyAuthenticate(c.into())).collect();
                let _ = server.reply_with(StatusCode::ProxyAuthenticationRequired, headers, None).await;
                return drain(server).await;
            }
        }
        // The callee.
        let host = request.uri.host_with_port.host.to_string();
        let Some(callee_realm) = directory.domain_of(&host) else {
            // No relaying to foreign domains.
            return reply(&mut server, StatusCode::Forbidden).await;
        };
        let Some(callee) = request.uri.user().and_then(|u| directory.user(&callee_realm, u)) else {
            return reply(&mut server, StatusCode::NotFound).await;
        };
        let mut bindings: Vec<Binding> = self.store.lookup(&callee.aor(), now);
        fork_order(&mut bindings);
        let targets: Vec<(Binding, Target)> = bindings
            .into_iter()
            .filter_map(|b| {
                let hop = match b.flow {
                    Some(id) => Hop::Flow(id),
                    None => Hop::Udp(b.source),
                };
                self.target(hop).map(|t| (b, t))
            })
            .collect();
        if targets.is_empty() {
            info!(callee = %callee.aor(), "no live binding");
            return reply(&mut server, StatusCode::TemporarilyUnavailable).await;
        }
        if method == Method::Invite {
            let _ = server.send_trying().await;
        }
        let caller_hop = Self::hop_of(&source);
        let mut branches = Vec::new();
        for (binding, leg) in targets {
            let mut forwarded = request.clone();
            forwarded.headers.retain(|h| !matches!(h, Header::ProxyAuthorization(_)));
            match Uri::try_from(binding.uri.as_str()) {
                Ok(uri) => forwarded.uri = uri,
                Err(_) => continue,
            }
            if method == Method::Invite {
                // Two Record-Routes: the top one faces the callee, the lower one the caller.
                let caller_leg = self.target(caller_hop).unwrap_or_else(|| leg.clone());
                let mut headers = vec![self.record_route(leg.hop, &leg), self.record_route(caller_hop, &caller_leg)];
                headers.extend(forwarded.headers.iter().cloned());
                forwarded.headers = headers.into();
            }
            for path in binding.path.iter().rev() {
                let mut headers = vec![Header::Route(path.clone().into())];
                headers.extend(forwarded.headers.iter().cloned());
                forwarded.headers = headers.into();
            }
            match self.prepare(forwarded, &leg) {
                Ok(prepared) => branches.push((prepared, leg)),
                Err(status) => return reply(&mut server, status).await,
            }
        }
        info!(callee = %callee.aor(), branches = branches.len(), "forking");
        self.relay(server, branches, Some(RING_TIMEOUT)).await;
    }

    /// Handles a request inside a dialog we Record-Routed (BYE, re-INVITE, INFO,
    /// UPDATE, MESSAGE, NOTIFY, ...): pops our Route entries and follows the
    /// flow token of the last one.
    pub async fn in_dialog(self: Arc<Self>, mut server: Transaction, _source: Source) {
        let mut request = server.original.clone();
        let Some(hop) = self.pop_own_routes(&mut request) else {
            return reply(&mut server, StatusCode::CallTransactionDoesNotExist).await;
        };
        let Some(leg) = self.target(hop) else {
            return reply(&mut server, StatusCode::TemporarilyUnavailable).await;
        };
        match self.prepare(request, &leg) {
            Ok(prepared) => self.relay(server, vec![(prepared, leg)], None).await,
            Err(status) => reply(&mut server, status).await,
        }
    }

    /// Removes the Route entries that carry our flow tokens from the top of the
    /// route set; returns the hop named by the last of them.
    fn pop_own_routes(&self, request: &mut Request) -> Option<Hop> {
        let mut hop = None;
        loop {
            let Some(first_route) = request.headers.iter().find_map(|h| match h {
                Header::Route(r) => Some(r.value().to_string()),
                _ => None,
            }) else {
                break;
            };
            // A Route header may hold several comma-separated entries.
            let mut entries: Vec<&str> = first_route.split(',').map(str::trim).collect();
            let Some(top) = entries.first().map(|t| t.trim_start_matches('<')) else { break };
            let user = top.split_once(':').map(|(_, rest)| rest).and_then(|rest| rest.split_once('@')).map(|(user, _)| user);
            match user.and_then(|u| self.tokens.decode(u)) {
                Some(found) => {
                    hop = Some(found);
                    entries.remove(0);
                    remove_first(&mut request.headers, |h| matches!(h, Header::Route(_)));
                    if !entries.is_empty() {
                        let mut headers = vec![Header::Route(entries.join(", ").into())];
                        // Keep the rest in front of the other Route headers.
                        let mut rest: Vec<Header> = request.headers.iter().cloned().collect();
                        let position = rest.iter().position(|h| matches!(h, Header::Route(_))).unwrap_or(rest.len());
                        let tail = rest.split_off(position);
                        headers.splice(0..0, rest);
                        headers.extend(tail);
                        request.headers = headers.into();
                    }
                }
                None => break,
            }
        }
        hop
    }

    /// Forwards an ACK for a 2xx that arrived on our server transaction.
    async fn forward_ack(&self, mut ack: Request) {
        let Some(hop) = self.pop_own_routes(&mut ack) else { return };
        let Some(leg) = self.target(hop) else { return };
        if let Ok(ack) = self.prepare(ack, &leg) {
            self.send_stateless(ack, &leg).await;
        }
    }

    /// Sends `branches` as client transactions and relays their responses to
    /// `server` (RFC 3261 §16.7): provisional responses go up at once, the first
    /// 2xx goes up and cancels the others, else the best final response goes up
    /// when all branches are done.
    async fn relay(self: Arc<Self>, mut server: Transaction, branches: Vec<(Request, Target)>, ring_timeout: Option<Duration>) {
        enum Event {
            Upstream(Request),
            UpstreamDone,
            Response(usize, Response),
            BranchDone(usize),
        }
        let method = server.original.method;
        let (events, mut rx) = mpsc::unbounded_channel::<Event>();
        let respond = server.tu_sender.clone();
        let endpoint = server.endpoint_inner.clone();
        let original_vias: Vec<Header> = server.original.headers.iter().filter(|h| matches!(h, Header::Via(_))).cloned().collect();

        struct Branch {
            request: Request,
            leg: Target,
            provisional: bool,
            final_status: Option<u16>,
            done: bool,
            cancel_wanted: bool,
            cancelled: bool,
        }
        let mut state: Vec<Branch> = Vec::new();
        for (index, (request, leg)) in branches.into_iter().enumerate() {
            let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else { continue };
            let mut client = Transaction::new_client(key, request.clone(), endpoint.clone(), Some(leg.connection.clone()));
            client.destination = leg.destination.clone();
            let events = events.clone();
            tokio::spawn(async move {
                if let Err(e) = client.send().await {
                    debug!(error = %e, "branch send failed");
                }
                while let Some(message) = client.receive().await {
                    if let SipMessage::Response(response) = message {
                        let _ = events.send(Event::Response(index, response));
                    }
                }
                let _ = events.send(Event::BranchDone(index));
            });
            state.push(Branch { request, leg, provisional: false, final_status: None, done: false, cancel_wanted: false, cancelled: false });
        }
        {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(message) = server.receive().await {
                    if let SipMessage::Request(request) = message {
                        let _ = events.send(Event::Upstream(request));
                    }
                }
                let _ = events.send(Event::UpstreamDone);
            });
        }
        drop(events);

        let mut answered = false; // a final response went upstream
        let mut best: Option<Response> = None;
        let mut upstream_done = false;
        let deadline = ring_timeout.map(|t| tokio::time::Instant::now() + t);
        // The upstream Via set is the original request's (with received/rport),
        // whatever the downstream peer echoed (some answer a CANCEL-induced 487
        // with the CANCEL's Via).
        let upstream_vias = original_vias;
        let forward_up = |mut response: Response| {
            pop_via(&mut response.headers);
            let position = response.headers.iter().position(|h| matches!(h, Header::Via(_))).unwrap_or(0);
            let mut headers: Vec<Header> = response.headers.iter().filter(|h| !matches!(h, Header::Via(_))).cloned().collect();
            headers.splice(position.min(headers.len())..position.min(headers.len()), upstream_vias.iter().cloned());
            response.headers = headers.into();
            let _ = respond.send(TransactionEvent::Respond(response));
        };

        loop {
            if upstream_done && state.iter().all(|b| b.done) {
                break;
            }
            let event = match deadline.filter(|_| !answered) {
                Some(deadline) => tokio::select! {
                    event = rx.recv() => event,
                    _ = tokio::time::sleep_until(deadline) => {
                        for branch in state.iter_mut().filter(|b| b.final_status.is_none()) {
                            branch.cancel_wanted = true;
                        }
                        self.send_cancels(&mut state.iter_mut().map(|b| (&b.request, &b.leg, b.provisional, &mut b.cancel_wanted, &mut b.cancelled)).collect::<Vec<_>>(), &endpoint).await;
                        if best.is_none() {
                            if let Some(first) = state.first() {
                                best = Some(self.local_response(&first.request, StatusCode::TemporarilyUnavailable));
                            }
                        }
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(event) = event else { break };
            match &event {
                Event::Response(i, r) => debug!(branch = i, status = r.status_code.code(), "branch response"),
                Event::Upstream(r) => debug!(method = %r.method, "upstream request"),
                Event::UpstreamDone => debug!("upstream transaction ended"),
                Event::BranchDone(i) => debug!(branch = i, "branch ended"),
            }
            match event {
                Event::Upstream(request) => match request.method {
                    Method::Cancel => {
                        for branch in state.iter_mut().filter(|b| b.final_status.is_none()) {
                            branch.cancel_wanted = true;
                        }
                        self.send_cancels(&mut state.iter_mut().map(|b| (&b.request, &b.leg, b.provisional, &mut b.cancel_wanted, &mut b.cancelled)).collect::<Vec<_>>(), &endpoint).await;
                    }
                    Method::Ack => self.forward_ack(request).await,
                    _ => {}
                },
                Event::UpstreamDone => upstream_done = true,
                Event::BranchDone(index) => {
                    if let Some(branch) = state.get_mut(index) {
                        branch.done = true;
                        if branch.final_status.is_none() {
                            branch.final_status = Some(408);
                            if best.is_none() {
                                best = Some(self.local_response(&branch.request, StatusCode::RequestTimeout));
                            }
                        }
                    }
                }
                Event::Response(index, response) => {
                    let code = response.status_code.code();
                    let Some(branch) = state.get_mut(index) else { continue };
                    if code < 200 {
                        branch.provisional = true;
                        if code > 100 && !answered {
                            forward_up(response);
                        }
                    } else if code < 300 {
                        branch.final_status = Some(code);
                        // Every 2xx goes up (and retransmissions of it), RFC 3261 §16.7 step 5.
                        forward_up(response);
                        if !answered {
                            answered = true;
                            for other in state.iter_mut().filter(|b| b.final_status.is_none()) {
                                other.cancel_wanted = true;
                            }
                        }
                    } else if branch.final_status.is_none() {
                        branch.final_status = Some(code);
                        if best.as_ref().is_none_or(|b| better(code, b.status_code.code())) {
                            best = Some(response);
                        }
                    }
                    self.send_cancels(&mut state.iter_mut().map(|b| (&b.request, &b.leg, b.provisional, &mut b.cancel_wanted, &mut b.cancelled)).collect::<Vec<_>>(), &endpoint).await;
                }
            }
            if !answered && state.iter().all(|b| b.final_status.is_some()) {
                if let Some(response) = best.take() {
                    answered = true;
                    forward_up(response);
                }
            }
        }
        debug!(%method, "relay finished");
    }

    /// Sends CANCEL on branches that want it and have had a provisional response.
    async fn send_cancels(&self, branches: &mut [(&Request, &Target, bool, &mut bool, &mut bool)], endpoint: &Arc<rsipstack::transaction::endpoint::EndpointInner>) {
        for (request, leg, provisional, wanted, cancelled) in branches.iter_mut() {
            if !**wanted || **cancelled || !*provisional || request.method != Method::Invite {
                continue;
            }
            **cancelled = true;
            let cancel = make_cancel(request);
            let Ok(key) = TransactionKey::from_request(&cancel, TransactionRole::Client) else { continue };
            let mut client = Transaction::new_client(key, cancel, endpoint.clone(), Some(leg.connection.clone()));
            client.destination = leg.destination.clone();
            tokio::spawn(async move {
                if client.send().await.is_ok() {
                    while client.receive().await.is_some() {}
                }
            });
        }
    }

    fn local_response(&self, request: &Request, status: StatusCode) -> Response {
        let mut response = Response {
            status_code: status,
            wire_reason: None,
            version: rsipstack::sip::Version::V2,
            headers: request
                .headers
                .iter()
                .filter(|h| matches!(h, Header::Via(_) | Header::From(_) | Header::To(_) | Header::CallId(_) | Header::CSeq(_)))
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            body: vec![],
        };
        response.headers.push(Header::ContentLength(0u32.into()));
        response
    }
}

/// RFC 3261 §16.7 step 6, simplified: 6xx beats everything, then the lowest class.
fn better(candidate: u16, current: u16) -> bool {
    match (candidate / 100, current / 100) {
        (6, 6) => false,
        (6, _) => true,
        (_, 6) => false,
        (a, b) if a != b => a < b,
        _ => false,
    }
}

/// A CANCEL for a forwarded INVITE (RFC 3261 §9.1): same Request-URI, Call-ID,
/// From, To, CSeq number and top Via; Route copied.
fn make_cancel(invite: &Request) -> Request {
    let mut headers: Vec<Header> = Vec::new();
    if let Some(via) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(via.clone());
    }
    for header in invite.headers.iter() {
        match header {
            Header::Route(_) | Header::From(_) | Header::To(_) | Header::CallId(_) | Header::MaxForwards(_) => headers.push(header.clone()),
            Header::CSeq(cseq) => {
                let number = cseq.value().split_whitespace().next().unwrap_or("1").to_string();
                headers.push(Header::CSeq(format!("{number} CANCEL").into()));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(0u32.into()));
    Request { method: Method::Cancel, uri: invite.uri.clone(), version: rsipstack::sip::Version::V2, headers: headers.into(), body: vec![] }
}

/// Answers and keeps the server transaction alive until it ends (INVITE: to
/// retransmit the final response and absorb the ACK).
async fn reply(server: &mut Transaction, status: StatusCode) {
    if let Err(e) = server.reply(status).await {
        warn!(error = %e, "could not answer");
    }
    while server.receive().await.is_some() {}
}

async fn drain(mut server: Transaction) {
    while server.receive().await.is_some() {}
}

/// Whether a request is inside a dialog (has a To tag).
pub fn is_in_dialog(request: &Request) -> bool {
    request.to_header().ok().and_then(|to| to.typed().ok()).is_some_and(|to| to.params.iter().any(|p| matches!(p, Param::Tag(_))))
}
