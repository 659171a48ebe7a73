//! The stateful proxy (RFC 3261 §16) for calls and messages between local
//! users: authenticates the caller (407), looks up the callee's bindings,
//! forks to all of them in parallel, relays responses (first 2xx wins, the
//! others are CANCELed), propagates CANCEL, and Record-Routes with flow tokens
//! so that in-dialog requests come back through us and reach a browser over
//! its own WebSocket. Bodies (SDP) pass through untouched.

pub mod relay;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::auth::authenticator::{Authenticator, Outcome};
use crate::b2bua::bridge::{
    BridgeOutcome, BrowserRoute, BrowserTarget, Caller, Destination, TrunkRoute,
};
use crate::b2bua::{B2bua, CallTarget, Peer};
use crate::dialplan::{Action, CallContext, Decision, Plan, SourceKind};
use crate::directory::Directory;
use crate::registrar::service::{header_values, unix_now};
use crate::registrar::store::LocationStore;
use crate::registrar::{Binding, fork_order};
use crate::routing::Routing;
use crate::sip::{
    Header, HeadersExt, Method, Param, Request, Response, SipAddr, SipConnection, SipCore,
    SipMessage, Source, StatusCode, ToTypedHeader, Transaction, TransportKind, Uri,
};
use crate::trunks::LimitRefused;
use relay::Upstream;
use token::{Hop, TokenKey};

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
    /// The dialplan that routes every INVITE.
    pub routing: Arc<Routing>,
    /// Calls the gateway answers itself (echo, conference); `None`: 503.
    pub b2bua: Option<Arc<B2bua>>,
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

/// Removes the topmost Via value (ours) from a response; a Via header may
/// carry several comma-separated values.
pub(crate) fn pop_via(headers: &mut crate::sip::Headers) {
    let Some(index) = headers.iter().position(|h| matches!(h, Header::Via(_))) else {
        return;
    };
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
            ',' if !quoted && !angle => {
                return Some(value[i + 1..].trim()).filter(|r| !r.is_empty());
            }
            _ => {}
        }
    }
    None
}

/// Removes the first header that `is` selects.
fn remove_first(headers: &mut crate::sip::Headers, is: impl Fn(&Header) -> bool) {
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
                Some(Target {
                    hop,
                    connection: flow.connection,
                    destination: None,
                    kind: flow.kind,
                    local: self.core.advertised(flow.local, flow.remote.ip()),
                })
            }
            Hop::Udp(addr) => {
                let (local, connection) = self.udp.clone()?;
                Some(Target {
                    hop,
                    connection,
                    destination: Some(SipAddr {
                        r#type: Some(crate::sip::Transport::Udp),
                        addr: addr.into(),
                    }),
                    kind: TransportKind::Udp,
                    local: self.core.advertised(local, addr.ip()),
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
        Header::RecordRoute(
            format!("<sip:{token}@{}{};lr>", leg.local, leg.kind.uri_param()).into(),
        )
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
        request
            .headers
            .retain(|h| !matches!(h, Header::MaxForwards(_)));
        let via = Header::Via(
            format!(
                "SIP/2.0/{} {};branch={};rport",
                leg.kind.via_name(),
                leg.local,
                random_branch()
            )
            .into(),
        );
        let mut headers = vec![via];
        headers.extend(request.headers.iter().cloned());
        headers.push(Header::MaxForwards((max_forwards - 1).to_string().into()));
        request.headers = headers.into();
        Ok(request)
    }

    /// Sends a request statelessly (ACK for 2xx).
    async fn send_stateless(&self, request: Request, leg: &Target) {
        if let Err(e) = leg
            .connection
            .send(SipMessage::Request(request), leg.destination.as_ref())
            .await
        {
            debug!(error = %e, "stateless forward failed");
        }
    }

    /// Handles a request that starts a dialog or stands alone (INVITE, MESSAGE, ...)
    /// addressed to a local user.
    pub async fn initial(
        self: Arc<Self>,
        directory: Arc<Directory>,
        mut server: Transaction,
        source: Source,
    ) {
        let request = server.original.clone();
        let method = request.method;
        let now = unix_now();
        // The caller must be one of our users, authenticated.
        let from = match request.from_header().and_then(|h| h.typed()) {
            Ok(from) => from,
            Err(_) => return reply(&mut server, StatusCode::BadRequest).await,
        };
        let from_trunk = if method == Method::Invite {
            self.b2bua
                .as_ref()
                .and_then(|b| b.trunks.identify_request(source.kind, source.remote))
        } else {
            None
        };
        if let Some(trunk) = from_trunk {
            // A call from a carrier: trusted by address (IP authentication),
            // routed by the dialplan with the trunk as its source.
            return self
                .from_trunk(directory, server, source, trunk, &from)
                .await;
        }
        let Some(caller_realm) = directory.domain_of(&from.uri.host_with_port.host.to_string())
        else {
            return reply(&mut server, StatusCode::Forbidden).await;
        };
        let credentials = header_values(&request, |h| match h {
            Header::ProxyAuthorization(a) => Some(a.value()),
            _ => None,
        });
        let caller_user = from.uri.user().unwrap_or_default().to_string();
        let caller = match self.auth.check(
            &directory,
            &caller_realm,
            &method.to_string(),
            &credentials,
            Some(&caller_user),
            source.remote.ip(),
            now,
        ) {
            Outcome::Authenticated(user) => Some(user),
            Outcome::Banned => return reply(&mut server, StatusCode::Forbidden).await,
            Outcome::Challenge { stale } => {
                let headers = self
                    .auth
                    .challenges(&caller_realm, stale, now)
                    .into_iter()
                    .map(|c| Header::ProxyAuthenticate(c.into()))
                    .collect();
                let _ = server
                    .reply_with(StatusCode::ProxyAuthenticationRequired, headers, None)
                    .await;
                return drain(server).await;
            }
        };
        let caller = match &caller {
            Some(user) => user.clone(),
            None => return reply(&mut server, StatusCode::Forbidden).await,
        };
        let caller_hop = Self::hop_of(&source);
        if method != Method::Invite {
            // MESSAGE goes straight to the user it names.
            let host = request.uri.host_with_port.host.to_string();
            let Some(realm) = directory.domain_of(&host) else {
                return reply(&mut server, StatusCode::Forbidden).await;
            };
            let Some(callee) = request.uri.user().and_then(|u| directory.user(&realm, u)) else {
                return reply(&mut server, StatusCode::NotFound).await;
            };
            let branches = self.branches_for(
                std::slice::from_ref(&callee.username),
                &realm,
                &directory,
                &request,
                caller_hop,
                None,
                now,
            );
            if branches.is_empty() {
                return reply(&mut server, StatusCode::TemporarilyUnavailable).await;
            }
            let mut upstream = Upstream::new(server);
            match self.relay(&mut upstream, branches, None).await {
                relay::Outcome::Failed(response) => upstream.forward(response),
                relay::Outcome::Cancelled | relay::Outcome::NoAnswer => {
                    upstream.reply(487, "Request Terminated")
                }
                relay::Outcome::Answered => {}
            }
            return upstream.finish(&self).await;
        }
        // Every INVITE is routed by the dialplan version in force now; the call
        // keeps that version to its end.
        let dialplan = self.routing.current();
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter_map(|h| {
                h.to_string()
                    .split_once(':')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let to_user = request.uri.user().unwrap_or_default().to_string();
        let context = CallContext {
            to: &to_user,
            from: &caller_user,
            from_display: from.display_name.as_deref(),
            caller_groups: &caller.groups,
            source: SourceKind::Local {
                user: caller_user.clone(),
            },
            source_ip: source.remote.ip(),
            transport: source.kind.as_str(),
            headers: &headers,
            now,
        };
        let Some(decision) = dialplan.route(&context) else {
            info!(to = %to_user, "no dialplan rule matched");
            return reply_with_reason(&mut server, 404, "No Route").await;
        };
        info!(rule = %decision.rule, to = %decision.to, "dialplan decision");
        let _ = server.send_trying().await;
        let mut upstream = Upstream::new(server);
        let realm = directory
            .domain_of(&request.uri.host_with_port.host.to_string())
            .unwrap_or_else(|| caller_realm.clone());
        self.execute(
            &mut upstream,
            &decision,
            &realm,
            &directory,
            &request,
            caller_hop,
            now,
            None,
        )
        .await;
        upstream.finish(&self).await;
    }

    /// An INVITE from a trunk: the called number (Request-URI, or To when
    /// the Request-URI is our registration's Contact user) and the caller
    /// are normalised with the trunk's number format, the dialplan routes
    /// it with the trunk as source, and every action goes through the B2BUA.
    async fn from_trunk(
        self: Arc<Self>,
        directory: Arc<Directory>,
        mut server: Transaction,
        source: Source,
        trunk: Arc<crate::trunks::Trunk>,
        from: &rsipstack::sip::typed::From,
    ) {
        let request = server.original.clone();
        let now = unix_now();
        // Held until the call ends (the B2BUA runs it inside `execute`).
        let _permit = match trunk.try_acquire_inbound(std::time::Instant::now()) {
            Ok(permit) => permit,
            Err(refused) => {
                info!(trunk = %trunk.name(), %refused, "call from a trunk refused");
                let reason = match refused {
                    LimitRefused::Rate => "Trunk Call Rate Exceeded",
                    _ => "Trunk Call Limit Reached",
                };
                return reply_with_reason(&mut server, 503, reason).await;
            }
        };
        let cfg = &trunk.config;
        let mut called = request.uri.user().unwrap_or_default().to_string();
        if cfg.register.as_ref().is_some_and(|r| r.username == called)
            && let Ok(to) = request.to_header().and_then(|h| h.typed())
            && let Some(user) = to.uri.user()
        {
            called = user.to_string();
        }
        let called = cfg.normalize_number(&called);
        let caller_user = cfg.normalize_number(from.uri.user().unwrap_or_default());
        let Some(realm) = directory
            .domain_of(&request.uri.host_with_port.host.to_string())
            .or_else(|| directory.default_domain())
        else {
            return reply(&mut server, StatusCode::NotFound).await;
        };
        let dialplan = self.routing.current();
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter_map(|h| {
                h.to_string()
                    .split_once(':')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let context = CallContext {
            to: &called,
            from: &caller_user,
            from_display: from.display_name.as_deref(),
            caller_groups: &[],
            source: SourceKind::Trunk {
                name: trunk.name().to_string(),
            },
            source_ip: source.remote.ip(),
            transport: source.kind.as_str(),
            headers: &headers,
            now,
        };
        let Some(decision) = dialplan.route(&context) else {
            info!(to = %called, trunk = %trunk.name(), "no dialplan rule matched a call from a trunk");
            return reply_with_reason(&mut server, 404, "No Route").await;
        };
        info!(rule = %decision.rule, to = %decision.to, trunk = %trunk.name(), "dialplan decision (from trunk)");
        let _ = server.send_trying().await;
        let mut upstream = Upstream::new(server);
        self.execute(
            &mut upstream,
            &decision,
            &realm,
            &directory,
            &request,
            Self::hop_of(&source),
            now,
            Some(trunk.name().to_string()),
        )
        .await;
        upstream.finish(&self).await;
    }

    /// Every binding of `users` (in `realm`) whose flow is still open, in
    /// fork order, with the hop to reach it.
    fn live_bindings(
        &self,
        users: &[String],
        realm: &Arc<str>,
        directory: &Directory,
        now: u64,
    ) -> Vec<(Arc<crate::directory::User>, Binding, Target)> {
        let mut out = Vec::new();
        for name in users {
            let Some(user) = directory.user(realm, name) else {
                debug!(user = %name, "dialplan names an unknown user");
                continue;
            };
            let mut bindings: Vec<Binding> = self.store.lookup(&user.aor(), now);
            fork_order(&mut bindings);
            for binding in bindings {
                let hop = match binding.flow {
                    Some(id) => Hop::Flow(id),
                    None => Hop::Udp(binding.source),
                };
                if let Some(leg) = self.target(hop) {
                    out.push((user.clone(), binding, leg));
                }
            }
        }
        out
    }

    /// Every live binding of `users` as a browser to ring through the B2BUA.
    fn browser_targets(
        &self,
        users: &[String],
        realm: &Arc<str>,
        directory: &Directory,
        now: u64,
    ) -> Vec<BrowserTarget> {
        let mut targets = Vec::new();
        for (user, binding, leg) in self.live_bindings(users, realm, directory, now) {
            let Ok(uri) = Uri::try_from(binding.uri.as_str()) else {
                continue;
            };
            targets.push(BrowserTarget {
                user: user.username.clone(),
                domain: realm.to_string(),
                uri,
                hop: crate::sip::outbound::NextHop {
                    connection: leg.connection,
                    destination: leg.destination,
                    kind: leg.kind,
                    local: leg.local,
                    contact: leg.local,
                    remote: binding.source,
                },
                route: binding.path.clone(),
            });
        }
        targets
    }

    /// Runs a dialplan decision: its action, then `on_no_answer` / `on_failure`
    /// chains, until the call is answered or a final answer goes up.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        upstream: &mut Upstream,
        decision: &Decision,
        realm: &Arc<str>,
        directory: &Directory,
        request: &Request,
        caller_hop: Hop,
        now: u64,
        from_trunk: Option<String>,
    ) {
        let mut plan: Plan = decision.plan.clone();
        let from = request.from_header().ok().and_then(|h| h.typed().ok());
        let caller_user = from
            .as_ref()
            .and_then(|f| f.uri.user().map(str::to_string))
            .unwrap_or_default();
        let caller_display = from.as_ref().and_then(|f| f.display_name.clone());
        let caller_display = caller_display.as_deref();
        loop {
            // The B2BUA answers this call itself (everything but a user
            // reached through the proxy): it must support what the INVITE
            // requires (RFC 3261 §8.2.2.3; a proxy passes Require on).
            let b2bua_answers = from_trunk.is_some()
                || !matches!(&plan.action, Action::User { .. } | Action::Reject { .. });
            if b2bua_answers {
                let unsupported =
                    crate::sip::unsupported_required(request, crate::sip::B2BUA_REQUIRE_OK);
                if !unsupported.is_empty() {
                    info!(unsupported = %unsupported.join(", "), "INVITE requires what we do not support");
                    return upstream.reply_with(
                        420,
                        "Bad Extension",
                        vec![Header::Unsupported(unsupported.join(", ").into())],
                    );
                }
            }
            let outcome = match &plan.action {
                Action::Reject { code, reason } => return upstream.reply(*code, reason),
                Action::User {
                    users,
                    parallel,
                    ring_timeout,
                } if from_trunk.is_some() => {
                    // Calls from trunks are bridged: the browsers get WebRTC
                    // offers and the carrier keeps talking plain RTP to us.
                    let groups: Vec<Vec<String>> = if *parallel {
                        vec![users.clone()]
                    } else {
                        users.iter().map(|u| vec![u.clone()]).collect()
                    };
                    let mut last = relay::Outcome::Failed(
                        self.response_for(&upstream.original, StatusCode::TemporarilyUnavailable),
                    );
                    for group in groups {
                        let targets = self.browser_targets(&group, realm, directory, now);
                        if targets.is_empty() {
                            continue;
                        }
                        let route = BrowserRoute {
                            targets,
                            ring_timeout: *ring_timeout,
                            caller: caller_of_request(
                                decision,
                                &caller_user,
                                caller_display,
                                request,
                                from_trunk.is_some(),
                            ),
                            callee: decision.to.clone(),
                            from_trunk: from_trunk.clone(),
                            opus_max_playback_rate: None,
                        };
                        last = match self
                            .bridge(upstream, Destination::Browsers(route), caller_hop)
                            .await
                        {
                            BridgeOutcome::Done => return,
                            BridgeOutcome::NoAnswer => relay::Outcome::NoAnswer,
                            BridgeOutcome::Failed(status, _) => relay::Outcome::Failed(
                                self.response_for(&upstream.original, StatusCode::from(status)),
                            ),
                        };
                        if upstream.cancelled {
                            break;
                        }
                    }
                    last
                }
                Action::User {
                    users,
                    parallel,
                    ring_timeout,
                } => {
                    if *parallel {
                        let branches = self.branches_for(
                            users,
                            realm,
                            directory,
                            request,
                            caller_hop,
                            Some(decision),
                            now,
                        );
                        self.relay(upstream, branches, Some(*ring_timeout)).await
                    } else {
                        let mut last =
                            relay::Outcome::Failed(self.response_for(
                                &upstream.original,
                                StatusCode::TemporarilyUnavailable,
                            ));
                        for user in users {
                            let branches = self.branches_for(
                                std::slice::from_ref(user),
                                realm,
                                directory,
                                request,
                                caller_hop,
                                Some(decision),
                                now,
                            );
                            if branches.is_empty() {
                                continue;
                            }
                            last = self.relay(upstream, branches, Some(*ring_timeout)).await;
                            if matches!(last, relay::Outcome::Answered | relay::Outcome::Cancelled)
                            {
                                break;
                            }
                        }
                        last
                    }
                }
                Action::Conference { room } => {
                    return self
                        .hand_to_b2bua(upstream, CallTarget::Conference(room.clone()), caller_hop)
                        .await;
                }
                Action::Echo => {
                    return self
                        .hand_to_b2bua(upstream, CallTarget::Echo, caller_hop)
                        .await;
                }
                Action::Trunk {
                    trunks,
                    failover_on,
                } => {
                    let route = TrunkRoute {
                        trunks: trunks.clone(),
                        failover_on: failover_on.clone(),
                        number: decision.to.clone(),
                        caller: caller_of_request(
                            decision,
                            &caller_user,
                            caller_display,
                            request,
                            from_trunk.is_some(),
                        ),
                        from_trunk: from_trunk.clone(),
                    };
                    match self
                        .bridge(upstream, Destination::Trunks(route), caller_hop)
                        .await
                    {
                        BridgeOutcome::Done => return,
                        BridgeOutcome::NoAnswer => relay::Outcome::NoAnswer,
                        BridgeOutcome::Failed(status, reason) => {
                            let (code, phrase) = crate::b2bua::uac::caller_status(status);
                            debug!(%reason, status, "trunks failed");
                            let phrase = if phrase.is_empty() {
                                "Trunk Failure"
                            } else {
                                phrase
                            };
                            relay::Outcome::Failed(
                                self.response_for(
                                    &upstream.original,
                                    status_with_reason(code, phrase),
                                ),
                            )
                        }
                    }
                }
            };
            let next = match outcome {
                relay::Outcome::Answered => return,
                relay::Outcome::Cancelled => return upstream.reply(487, "Request Terminated"),
                relay::Outcome::NoAnswer => match plan.on_no_answer.take() {
                    Some(next) => next,
                    None => return upstream.reply(480, "No Answer"),
                },
                // 408 and 480 from every callee count as "no answer" (docs/dialplan.md).
                relay::Outcome::Failed(response)
                    if matches!(response.status_code.code(), 408 | 480) =>
                {
                    match plan.on_no_answer.take() {
                        Some(next) => next,
                        None => return upstream.forward(response),
                    }
                }
                relay::Outcome::Failed(response) => match plan.on_failure.take() {
                    Some(next) => next,
                    None => return upstream.forward(response),
                },
            };
            if upstream.cancelled {
                return upstream.reply(487, "Request Terminated");
            }
            plan = *next;
        }
    }

    /// Bridges the call through the B2BUA (to trunks, or to browsers with
    /// WebRTC offers).
    async fn bridge(
        &self,
        upstream: &mut Upstream,
        destination: Destination,
        caller_hop: Hop,
    ) -> BridgeOutcome {
        let (Some(b2bua), Some(leg)) = (&self.b2bua, self.target(caller_hop)) else {
            return BridgeOutcome::Failed(503, "media services not available".into());
        };
        let peer = Peer {
            connection: leg.connection,
            destination: leg.destination,
            kind: leg.kind,
            local: leg.local,
        };
        crate::b2bua::bridge::bridge(b2bua, upstream, destination, peer).await
    }

    /// Lets the B2BUA answer the call and run it to its end.
    async fn hand_to_b2bua(&self, upstream: &mut Upstream, target: CallTarget, caller_hop: Hop) {
        let (Some(b2bua), Some(leg)) = (&self.b2bua, self.target(caller_hop)) else {
            return upstream.reply(503, "Media Services Not Available");
        };
        let peer = Peer {
            connection: leg.connection,
            destination: leg.destination,
            kind: leg.kind,
            local: leg.local,
        };
        let delay = std::time::Duration::from_millis(b2bua.engine.config().answer_delay_ms);
        crate::b2bua::answer(b2bua, upstream, target, peer, delay).await;
    }

    /// One forwarded request per live binding of `users` (in `realm`).
    #[allow(clippy::too_many_arguments)]
    fn branches_for(
        &self,
        users: &[String],
        realm: &Arc<str>,
        directory: &Directory,
        request: &Request,
        caller_hop: Hop,
        decision: Option<&Decision>,
        now: u64,
    ) -> Vec<(Request, Target)> {
        let mut branches = Vec::new();
        for (_, binding, leg) in self.live_bindings(users, realm, directory, now) {
            let mut forwarded = request.clone();
            forwarded
                .headers
                .retain(|h| !matches!(h, Header::ProxyAuthorization(_)));
            let Ok(uri) = Uri::try_from(binding.uri.as_str()) else {
                continue;
            };
            forwarded.uri = uri;
            if let Some(decision) = decision {
                forwarded.headers.retain(|h| {
                    let text = h.to_string();
                    let name = text.split(':').next().unwrap_or_default().trim();
                    !decision
                        .remove_headers
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(name))
                });
                for (name, value) in &decision.add_headers {
                    forwarded
                        .headers
                        .push(Header::Other(name.clone(), value.clone()));
                }
            }
            if request.method == Method::Invite {
                // Two Record-Routes: the top one faces the callee, the lower one the caller.
                let caller_leg = self.target(caller_hop).unwrap_or_else(|| leg.clone());
                let mut headers = vec![
                    self.record_route(leg.hop, &leg),
                    self.record_route(caller_hop, &caller_leg),
                ];
                headers.extend(forwarded.headers.iter().cloned());
                forwarded.headers = headers.into();
            }
            for path in binding.path.iter().rev() {
                let mut headers = vec![Header::Route(path.clone().into())];
                headers.extend(forwarded.headers.iter().cloned());
                forwarded.headers = headers.into();
            }
            if let Ok(prepared) = self.prepare(forwarded, &leg) {
                branches.push((prepared, leg));
            }
        }
        branches
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
        let prepared = match self.prepare(request, &leg) {
            Ok(prepared) => prepared,
            Err(status) => return reply(&mut server, status).await,
        };
        let mut upstream = Upstream::new(server);
        match self.relay(&mut upstream, vec![(prepared, leg)], None).await {
            relay::Outcome::Failed(response) => upstream.forward(response),
            relay::Outcome::Cancelled | relay::Outcome::NoAnswer => {
                upstream.reply(487, "Request Terminated")
            }
            relay::Outcome::Answered => {}
        }
        upstream.finish(&self).await;
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
            let Some(top) = entries.first().map(|t| t.trim_start_matches('<')) else {
                break;
            };
            let user = top
                .split_once(':')
                .map(|(_, rest)| rest)
                .and_then(|rest| rest.split_once('@'))
                .map(|(user, _)| user);
            match user.and_then(|u| self.tokens.decode(u)) {
                Some(found) => {
                    hop = Some(found);
                    entries.remove(0);
                    remove_first(&mut request.headers, |h| matches!(h, Header::Route(_)));
                    if !entries.is_empty() {
                        let mut headers = vec![Header::Route(entries.join(", ").into())];
                        // Keep the rest in front of the other Route headers.
                        let mut rest: Vec<Header> = request.headers.iter().cloned().collect();
                        let position = rest
                            .iter()
                            .position(|h| matches!(h, Header::Route(_)))
                            .unwrap_or(rest.len());
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
    pub(crate) async fn forward_ack(&self, mut ack: Request) {
        let Some(hop) = self.pop_own_routes(&mut ack) else {
            return;
        };
        let Some(leg) = self.target(hop) else { return };
        if let Ok(ack) = self.prepare(ack, &leg) {
            self.send_stateless(ack, &leg).await;
        }
    }

    pub(crate) fn response_for(&self, request: &Request, status: StatusCode) -> Response {
        let mut response = Response {
            status_code: status,
            wire_reason: None,
            version: crate::sip::Version::V2,
            headers: request
                .headers
                .iter()
                .filter(|h| {
                    matches!(
                        h,
                        Header::Via(_)
                            | Header::From(_)
                            | Header::To(_)
                            | Header::CallId(_)
                            | Header::CSeq(_)
                    )
                })
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
pub(crate) fn better(candidate: u16, current: u16) -> bool {
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
pub(crate) fn make_cancel(invite: &Request) -> Request {
    let mut headers: Vec<Header> = Vec::new();
    if let Some(via) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(via.clone());
    }
    for header in invite.headers.iter() {
        match header {
            Header::Route(_)
            | Header::From(_)
            | Header::To(_)
            | Header::CallId(_)
            | Header::MaxForwards(_) => headers.push(header.clone()),
            Header::CSeq(cseq) => {
                let number = cseq
                    .value()
                    .split_whitespace()
                    .next()
                    .unwrap_or("1")
                    .to_string();
                headers.push(Header::CSeq(format!("{number} CANCEL").into()));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(0u32.into()));
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: crate::sip::Version::V2,
        headers: headers.into(),
        body: vec![],
    }
}

/// Answers and keeps the server transaction alive until it ends (INVITE: to
/// retransmit the final response and absorb the ACK).
async fn reply(server: &mut Transaction, status: StatusCode) {
    if let Err(e) = server.reply(status).await {
        warn!(error = %e, "could not answer");
    }
    while server.receive().await.is_some() {}
}

/// A status code that carries `reason` as its phrase (the serializer writes
/// the standard text for known codes, so a custom phrase needs `Other`).
pub(crate) fn status_with_reason(code: u16, reason: &str) -> StatusCode {
    let standard = StatusCode::try_from((code, reason)).unwrap_or(StatusCode::ServerInternalError);
    if reason.is_empty() || reason.eq_ignore_ascii_case(standard.text()) {
        standard
    } else {
        StatusCode::Other(code, reason.chars().filter(|c| !c.is_control()).collect())
    }
}

async fn reply_with_reason(server: &mut Transaction, code: u16, reason: &str) {
    let status = status_with_reason(code, reason);
    let mut response = server
        .endpoint_inner
        .make_response(&server.original, status, None);
    let to_header = response
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned();
    if let Some(Header::To(to)) = to_header
        && !to.value().contains(";tag=")
    {
        let tagged = Header::To(format!("{};tag={}", to.value(), random_tag()).into());
        for header in response.headers.iter_mut() {
            if matches!(header, Header::To(_)) {
                *header = tagged.clone();
            }
        }
    }
    if let Err(e) = server.respond(response).await {
        warn!(error = %e, "could not answer");
    }
    while server.receive().await.is_some() {}
}

/// A random tag for responses we originate.
pub(crate) fn random_tag() -> String {
    let mut bytes = [0u8; 6];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn drain(mut server: Transaction) {
    while server.receive().await.is_some() {}
}

/// Whether a request is inside a dialog (has a To tag).
pub fn is_in_dialog(request: &Request) -> bool {
    request
        .to_header()
        .ok()
        .and_then(|to| to.typed().ok())
        .is_some_and(|to| to.params.iter().any(|p| matches!(p, Param::Tag(_))))
}

/// The caller as the B2BUA presents it: the dialplan's caller-ID rewrite,
/// else the From user and display name.
fn caller_of(decision: &Decision, user: &str, display: Option<&str>) -> Caller {
    Caller {
        user: decision
            .caller_user
            .clone()
            .unwrap_or_else(|| user.to_string()),
        display: decision
            .caller_display
            .clone()
            .or_else(|| display.map(str::to_string)),
        private: false,
        asserted: None,
    }
}

/// [`caller_of`] with what the INVITE says of privacy (RFC 3323: `Privacy:
/// id`, `user` or `header`) and, from a trusted trunk, the identity it
/// asserts (RFC 3325 P-Asserted-Identity).
fn caller_of_request(
    decision: &Decision,
    user: &str,
    display: Option<&str>,
    request: &Request,
    from_trunk: bool,
) -> Caller {
    let mut caller = caller_of(decision, user, display);
    fn named<'a>(request: &'a Request, name: &'static str) -> impl Iterator<Item = String> + 'a {
        request.headers.iter().filter_map(move |h| {
            let text = h.to_string();
            let (n, v) = text.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    caller.private = named(request, "Privacy").any(|v| {
        v.split([';', ',']).map(str::trim).any(|t| {
            ["id", "user", "header"]
                .iter()
                .any(|p| p.eq_ignore_ascii_case(t))
        })
    });
    if from_trunk {
        caller.asserted = named(request, "P-Asserted-Identity").find_map(|v| {
            let uri = match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
                _ => v.clone(),
            };
            let rest = uri
                .strip_prefix("sip:")
                .or_else(|| uri.strip_prefix("sips:"))
                .or_else(|| uri.strip_prefix("tel:"))?;
            let user = rest.split(['@', ';', '?', '>']).next()?.trim();
            (!user.is_empty()
                && user.len() <= 64
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.*#_".contains(c)))
            .then(|| user.to_string())
        });
    }
    caller
}

/// Routes blind-transfer targets for the B2BUA with the dialplan in force,
/// as a new call from the transferor would be routed.
pub struct TransferRoutes {
    /// The proxy (routing, location store).
    pub proxy: Arc<Proxy>,
    /// The user directory.
    pub directory: Arc<Directory>,
}

impl crate::b2bua::TransferRouter for TransferRoutes {
    fn route(&self, target: &str, transferor: &str) -> Option<Destination> {
        let directory = &self.directory;
        let realm = directory.default_domain()?;
        let groups = directory
            .user(&realm, transferor)
            .map(|u| u.groups.clone())
            .unwrap_or_default();
        let now = unix_now();
        let dialplan = self.proxy.routing.current();
        let context = CallContext {
            to: target,
            from: transferor,
            from_display: None,
            caller_groups: &groups,
            source: SourceKind::Local {
                user: transferor.to_string(),
            },
            source_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            transport: "udp",
            headers: &[],
            now,
        };
        let decision = dialplan.route(&context)?;
        let caller = caller_of(&decision, transferor, None);
        match &decision.plan.action {
            Action::Trunk {
                trunks,
                failover_on,
            } => Some(Destination::Trunks(TrunkRoute {
                trunks: trunks.clone(),
                failover_on: failover_on.clone(),
                number: decision.to.clone(),
                caller,
                from_trunk: None,
            })),
            Action::User {
                users,
                ring_timeout,
                ..
            } => {
                let targets = self.proxy.browser_targets(users, &realm, directory, now);
                (!targets.is_empty()).then(|| {
                    Destination::Browsers(BrowserRoute {
                        targets,
                        ring_timeout: *ring_timeout,
                        caller,
                        callee: decision.to.clone(),
                        from_trunk: None,
                        opus_max_playback_rate: None,
                    })
                })
            }
            _ => None,
        }
    }
}
