//! The tokio side of trunk management. One task per trunk resolves its
//! host, runs its [`Registration`] and [`Probe`] state machines against the
//! clock and sends their REGISTER and OPTIONS through [`Outbound`]; it
//! publishes the result in the trunk's [`TrunkStatus`](super::TrunkStatus).
//! The [`TrunkManager`] starts, restarts (after a reload that changes how
//! the trunk is reached or registered: the old task unregisters first) and
//! stops these tasks, and unregisters everything at shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::TrunkConfig;
use super::metrics::TrunkMetrics;
use super::probe::{Probe, ProbeOutput, ProbeResult};
use super::registration::{Attempt, Event, Registration, RegistrationParams, Reply};
use super::runtime::Trunks;
use crate::sip::outbound::{NextHop, Outbound, TlsClient};
use crate::sip::{Request, Response, SipMessage, TransportKind};

/// How often a trunk's host name is resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(300);
/// How soon after a failed resolution.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// Longest wait for one REGISTER transaction (the transaction layer's own
/// timeout, 32 s, normally ends it first).
const TRANSACTION_LIMIT: Duration = Duration::from_secs(40);
/// Longest wait for the un-REGISTER when stopping.
const UNREGISTER_LIMIT: Duration = Duration::from_secs(5);

/// Runs registration and probing for every trunk of a table.
pub struct TrunkManager {
    stop: CancellationToken,
    done: watch::Receiver<bool>,
}

/// What the trunk tasks share.
struct Context {
    trunks: Arc<Trunks>,
    outbound: Arc<Outbound>,
    metrics: Arc<TrunkMetrics>,
}

/// One trunk's task.
struct Task {
    config: TrunkConfig,
    stop: CancellationToken,
    join: JoinHandle<()>,
}

impl TrunkManager {
    /// Starts a task for every trunk of `trunks` and follows its reloads.
    pub fn spawn(
        trunks: Arc<Trunks>,
        outbound: Arc<Outbound>,
        metrics: Arc<TrunkMetrics>,
    ) -> TrunkManager {
        metrics.attach(&trunks);
        let stop = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        let context = Arc::new(Context {
            trunks,
            outbound,
            metrics,
        });
        tokio::spawn(manage(context, stop.clone(), done_tx));
        TrunkManager { stop, done }
    }

    /// Stops every trunk task; registered trunks send their un-REGISTER.
    /// Waits at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        self.stop.cancel();
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(limit, done.wait_for(|d| *d)).await;
    }
}

async fn manage(context: Arc<Context>, stop: CancellationToken, done: watch::Sender<bool>) {
    let mut changes = context.trunks.subscribe();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    loop {
        sync(&context, &mut tasks);
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    for task in tasks.values() {
        task.stop.cancel();
    }
    for (_, task) in tasks {
        let _ = task.join.await;
    }
    let _ = done.send(true);
}

/// Brings the tasks in line with the table.
fn sync(context: &Arc<Context>, tasks: &mut HashMap<String, Task>) {
    let table = context.trunks.all();
    let names: Vec<String> = table.iter().map(|t| t.name().to_string()).collect();
    let gone: Vec<String> = tasks
        .keys()
        .filter(|name| !names.contains(name))
        .cloned()
        .collect();
    for name in gone {
        if let Some(task) = tasks.remove(&name) {
            info!(trunk = %name, "trunk removed");
            task.stop.cancel();
        }
    }
    for trunk in table {
        let name = trunk.name().to_string();
        let previous = match tasks.remove(&name) {
            Some(task) if task.config.same_signalling(&trunk.config) => {
                tasks.insert(
                    name,
                    Task {
                        config: trunk.config.clone(),
                        ..task
                    },
                );
                continue;
            }
            Some(task) => {
                info!(trunk = %name, "trunk changed: registration and probing start over");
                task.stop.cancel();
                Some(task.join)
            }
            None => None,
        };
        let stop = CancellationToken::new();
        let join = tokio::spawn(run_trunk(
            context.clone(),
            trunk.config.clone(),
            stop.clone(),
            previous,
        ));
        tasks.insert(
            name,
            Task {
                config: trunk.config.clone(),
                stop,
                join,
            },
        );
    }
}

/// A finished transaction, back in the trunk's task.
enum Done {
    Register {
        cseq: u32,
        result: Result<Reply, String>,
    },
    Probe {
        id: u64,
        result: ProbeResult,
    },
}

/// Identity of our registration (stable across refreshes).
struct Identity {
    call_id: String,
    from_tag: String,
}

use crate::sip::random_hex;

fn unix_now() -> u64 {
    crate::registrar::service::unix_now()
}

/// The registration parameters of a trunk with `register`.
fn registration_params(config: &TrunkConfig) -> Option<RegistrationParams> {
    let register = config.register.as_ref()?;
    Some(RegistrationParams {
        request_uri: format!("sip:{}", uri_host(config.domain())),
        auth_username: register
            .auth_username
            .clone()
            .unwrap_or_else(|| register.username.clone()),
        password: register.password.clone(),
        realm: register.realm.clone(),
        expires: register.expires,
    })
}

async fn run_trunk(
    context: Arc<Context>,
    config: TrunkConfig,
    stop: CancellationToken,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(previous) = previous {
        // Its un-REGISTER must not remove the binding we are about to make.
        let _ = previous.await;
    }
    if stop.is_cancelled() {
        return;
    }
    let name = config.name.clone();
    let tls = match config.transport {
        super::TrunkTransport::Tls => match super::tls::client(&config) {
            Ok(client) => Some(client),
            Err(e) => {
                warn!(trunk = %name, error = %e, "trunk TLS settings unusable");
                None
            }
        },
        _ => None,
    };
    let trunk = Arc::new(TrunkLink {
        context: context.clone(),
        config,
        tls,
        identity: Identity {
            call_id: format!("{}@switchboard", random_hex(12)),
            from_tag: random_hex(6),
        },
    });
    let start = Instant::now();
    let mut registration = registration_params(&trunk.config)
        .map(|params| Registration::new(params, random_hex(8), start));
    let mut probe = (trunk.config.options_interval > 0).then(|| {
        Probe::new(
            Duration::from_secs(u64::from(trunk.config.options_interval)),
            start,
        )
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let mut resolve_at = start;
    let mut was_registered = false;
    let mut probe_failures_reported = 0;
    debug!(trunk = %name, register = registration.is_some(), probe = probe.is_some(), "trunk task started");
    loop {
        let mut now = Instant::now();
        if now >= resolve_at {
            resolve_at = Instant::now() + trunk.resolve().await;
            now = Instant::now();
        }
        if let Some(registration) = registration.as_mut() {
            while let Some(attempt) = registration.poll(now) {
                trunk.spawn_register(attempt, tx.clone());
            }
        }
        if let Some(probe) = probe.as_mut() {
            while let Some(output) = probe.poll(now) {
                trunk.probe_output(output, probe.timeout(), tx.clone());
            }
            let failed = probe.failed();
            trunk
                .context
                .metrics
                .probe_failures
                .add(failed.saturating_sub(probe_failures_reported));
            probe_failures_reported = failed;
        }
        trunk.publish(registration.as_ref(), probe.as_ref(), now);
        let deadline = [
            registration.as_ref().and_then(Registration::deadline),
            probe.as_ref().map(Probe::deadline),
            Some(resolve_at),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(resolve_at);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline.into()) => {}
            Some(done) = rx.recv() => {
                let now = Instant::now();
                match done {
                    Done::Register { cseq, result } => {
                        if let Some(registration) = registration.as_mut() {
                            let event = match result {
                                Ok(reply) => registration.on_reply(cseq, &reply, now),
                                Err(reason) => registration.on_failure(cseq, &reason, now),
                            };
                            if let Some(event) = event {
                                trunk.registration_event(&event, &mut was_registered);
                            }
                        }
                    }
                    Done::Probe { id, result } => {
                        if let Some(probe) = probe.as_mut()
                            && let Some(output) = probe.on_result(id, result, now)
                        {
                            trunk.probe_output(output, probe.timeout(), tx.clone());
                        }
                    }
                }
            }
        }
    }
    if let Some(registration) = registration.as_mut() {
        trunk.unregister(registration).await;
    }
    trunk.publish(registration.as_ref(), None, Instant::now());
    debug!(trunk = %name, "trunk task stopped");
}

/// One trunk's configuration and the means to reach it.
struct TrunkLink {
    context: Arc<Context>,
    config: TrunkConfig,
    tls: Option<TlsClient>,
    identity: Identity,
}

impl TrunkLink {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// Resolves host and outbound proxy for [`Trunks::identify`]; returns
    /// when to do it again.
    async fn resolve(&self) -> Duration {
        let mut hosts = vec![self.config.host.clone()];
        let (hop_host, _) = self.config.next_hop();
        if hop_host != self.config.host {
            hosts.push(hop_host);
        }
        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut failed = false;
        for host in hosts {
            let lookup = tokio::time::timeout(
                Duration::from_secs(5),
                Outbound::resolve(&host, self.config.port()),
            )
            .await;
            match lookup {
                Ok(Ok(found)) => addrs.extend(found.iter().map(SocketAddr::ip)),
                Ok(Err(e)) => {
                    warn!(trunk = %self.name(), host, error = %e, "cannot resolve the trunk's host");
                    failed = true;
                }
                Err(_) => {
                    warn!(trunk = %self.name(), host, "resolving the trunk's host timed out");
                    failed = true;
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        if !addrs.is_empty()
            && let Some(trunk) = self.context.trunks.get(self.name())
        {
            debug!(trunk = %self.name(), ?addrs, "trunk addresses");
            trunk.set_resolved(addrs);
        }
        if failed {
            RESOLVE_RETRY
        } else {
            RESOLVE_INTERVAL
        }
    }

    /// Writes what the state machines know into the trunk's status.
    fn publish(&self, registration: Option<&Registration>, probe: Option<&Probe>, now: Instant) {
        let Some(trunk) = self.context.trunks.get(self.name()) else {
            return;
        };
        let registered = registration.is_some_and(|r| r.is_registered(now));
        let until = registration
            .and_then(Registration::registered_until)
            .filter(|_| registered)
            .map(|until| unix_now() + until.saturating_duration_since(now).as_secs());
        let down = probe.is_some_and(Probe::is_down);
        let reason = if down {
            probe.and_then(Probe::reason).map(str::to_string)
        } else {
            registration
                .and_then(Registration::last_error)
                .map(str::to_string)
        };
        trunk.update_status(|status| {
            status.down = down;
            status.reason = reason;
            status.registered = registered;
            status.registered_until = until;
        });
    }

    fn registration_event(&self, event: &Event, was_registered: &mut bool) {
        match event {
            Event::Registered { expires, .. } => {
                self.context.metrics.registrations.inc();
                if *was_registered {
                    debug!(trunk = %self.name(), expires, "trunk registration refreshed");
                } else {
                    info!(trunk = %self.name(), expires, "trunk registered");
                }
                *was_registered = true;
            }
            Event::Failed { reason, retry_in } => {
                self.context.metrics.registration_failures.inc();
                warn!(trunk = %self.name(), reason, retry_in_secs = retry_in.as_secs(), "trunk registration failed");
                *was_registered = false;
            }
            Event::Unregistered => {
                info!(trunk = %self.name(), "trunk unregistered");
                *was_registered = false;
            }
        }
    }

    fn probe_output(
        self: &Arc<Self>,
        output: ProbeOutput,
        timeout: Duration,
        tx: mpsc::UnboundedSender<Done>,
    ) {
        match output {
            ProbeOutput::Send(id) => {
                self.context.metrics.probes.inc();
                let link = self.clone();
                tokio::spawn(async move {
                    // Past its timeout the probe has failed: dropping the
                    // transaction stops its retransmissions, which a carrier
                    // coming back would otherwise answer instead of the
                    // current probe.
                    let result = match tokio::time::timeout(timeout, link.options()).await {
                        Ok(Ok(response)) => ProbeResult::Reply(response.status_code.code()),
                        Ok(Err(reason)) => ProbeResult::Error(reason),
                        Err(_) => return,
                    };
                    let _ = tx.send(Done::Probe { id, result });
                });
            }
            ProbeOutput::Down(reason) => {
                warn!(trunk = %self.name(), reason, "trunk down");
            }
            ProbeOutput::Up => info!(trunk = %self.name(), "trunk up"),
        }
    }

    fn spawn_register(self: &Arc<Self>, attempt: Attempt, tx: mpsc::UnboundedSender<Done>) {
        let link = self.clone();
        tokio::spawn(async move {
            let cseq = attempt.cseq;
            let result = link.register(&attempt).await;
            let _ = tx.send(Done::Register { cseq, result });
        });
    }

    /// Sends the un-REGISTER (answering one challenge) and waits for it.
    async fn unregister(&self, registration: &mut Registration) {
        let mut next = registration.stop(Instant::now());
        let deadline = tokio::time::Instant::now() + UNREGISTER_LIMIT;
        while let Some(attempt) = next {
            let result = match tokio::time::timeout_at(deadline, self.register(&attempt)).await {
                Ok(result) => result,
                Err(_) => Err("no answer to the un-REGISTER in time".into()),
            };
            let now = Instant::now();
            let event = match result {
                Ok(reply) => registration.on_reply(attempt.cseq, &reply, now),
                Err(reason) => registration.on_failure(attempt.cseq, &reason, now),
            };
            if let Some(event) = event {
                let mut registered = true;
                self.registration_event(&event, &mut registered);
            }
            next = registration.poll_stopping();
        }
    }

    /// Sends one REGISTER and returns what its final response said.
    async fn register(&self, attempt: &Attempt) -> Result<Reply, String> {
        let Some(register) = &self.config.register else {
            return Err("no registration configured".into());
        };
        let mut contact_addr = None;
        let response = self
            .transact(|hop| {
                contact_addr = Some(hop.contact);
                register_text(
                    &self.config,
                    &register.username,
                    hop,
                    &self.identity,
                    attempt,
                    self.context.outbound.core().server_name(),
                )
            })
            .await?;
        Ok(reply_of(&response, contact_addr))
    }

    /// Sends one OPTIONS probe.
    async fn options(&self) -> Result<Response, String> {
        self.transact(|hop| {
            options_text(
                &self.config,
                hop,
                self.context.outbound.core().server_name(),
            )
        })
        .await
    }

    /// Sends a request built for the trunk's next hop; returns its final
    /// response.
    async fn transact(&self, build: impl FnOnce(&NextHop) -> String) -> Result<Response, String> {
        let (host, port) = self.config.next_hop();
        let addrs = Outbound::resolve(&host, port)
            .await
            .map_err(|e| e.to_string())?;
        let remote = *addrs
            .first()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        let kind = self.config.transport.kind();
        let hop = self
            .context
            .outbound
            .hop(kind, remote, self.tls.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let text = build(&hop);
        let request =
            Request::try_from(text).map_err(|e| format!("cannot build the request: {e}"))?;
        let mut transaction = self
            .context
            .outbound
            .client(request, &hop)
            .map_err(|e| e.to_string())?;
        let exchange = async {
            transaction
                .send()
                .await
                .map_err(|e| format!("cannot send to {remote}: {e}"))?;
            while let Some(message) = transaction.receive().await {
                if let SipMessage::Response(response) = message
                    && response.status_code.code() >= 200
                {
                    return Ok(response);
                }
            }
            Err(format!("no answer from {remote} (timeout)"))
        };
        tokio::time::timeout(TRANSACTION_LIMIT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer from {remote} (timeout)")))
    }
}

/// A host for a SIP URI (IPv6 literals in brackets).
fn uri_host(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_string(),
    }
}

/// The text of a REGISTER for `attempt` on `hop`.
fn register_text(
    config: &TrunkConfig,
    username: &str,
    hop: &NextHop,
    identity: &Identity,
    attempt: &Attempt,
    user_agent: &str,
) -> String {
    let domain = uri_host(config.domain());
    let authorization = attempt
        .authorization
        .as_ref()
        .map(|(header, value)| format!("{}: {value}\r\n", header.name()))
        .unwrap_or_default();
    format!(
        "REGISTER sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {local};branch=z9hG4bK-sbreg{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{username}@{domain}>;tag={tag}\r\n\
         To: <sip:{username}@{domain}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{username}@{contact}{param}>\r\n\
         Expires: {expires}\r\n\
         {authorization}\
         Allow: {allow}\r\n\
         User-Agent: {user_agent}\r\n\
         Content-Length: 0\r\n\r\n",
        via = hop.kind.via_name(),
        local = hop.local,
        branch = random_hex(8),
        tag = identity.from_tag,
        call_id = identity.call_id,
        cseq = attempt.cseq,
        contact = hop.contact,
        param = transport_param(hop.kind),
        expires = attempt.expires,
        allow = crate::sip::ALLOW,
    )
}

/// `;transport=...` for a Contact we want the carrier to reach us at.
fn transport_param(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => ";transport=udp",
        other => other.uri_param(),
    }
}

/// The text of an OPTIONS probe on `hop`.
fn options_text(config: &TrunkConfig, hop: &NextHop, user_agent: &str) -> String {
    let domain = uri_host(config.domain());
    format!(
        "OPTIONS sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {local};branch=z9hG4bK-sbopt{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:switchboard@{contact}>;tag={tag}\r\n\
         To: <sip:{domain}>\r\n\
         Call-ID: {call_id}@switchboard\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:switchboard@{contact}{param}>\r\n\
         Accept: application/sdp\r\n\
         User-Agent: {user_agent}\r\n\
         Content-Length: 0\r\n\r\n",
        via = hop.kind.via_name(),
        local = hop.local,
        branch = random_hex(8),
        contact = hop.contact,
        tag = random_hex(6),
        call_id = random_hex(12),
        param = transport_param(hop.kind),
    )
}

/// The parts of a REGISTER response the state machine needs; the expiry
/// is our Contact's `expires` parameter when the registrar lists it, else
/// the Expires header.
fn reply_of(response: &Response, contact: Option<SocketAddr>) -> Reply {
    let values = |name: &str| -> Vec<String> {
        response
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
            .map(|h| h.value().to_string())
            .collect()
    };
    let number =
        |name: &str| -> Option<u32> { values(name).first().and_then(|v| v.trim().parse().ok()) };
    let contact_expires = contact.and_then(|contact| {
        let needle = format!("@{contact}");
        values("Contact")
            .iter()
            .flat_map(|v| v.split(','))
            .find(|item| item.contains(&needle))
            .and_then(|item| {
                let params = item.rsplit_once('>').map_or(item, |(_, p)| p);
                params.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("expires")
                        .then(|| v.trim().trim_matches('"').parse().ok())
                        .flatten()
                })
            })
    });
    Reply {
        status: response.status_code.code(),
        www_authenticate: values("WWW-Authenticate"),
        proxy_authenticate: values("Proxy-Authenticate"),
        expires: contact_expires.or_else(|| number("Expires")),
        min_expires: number("Min-Expires"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(text: &str) -> Response {
        match SipMessage::try_from(text) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_takes_our_contacts_expiry() {
        let r = response(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\n\
             Contact: <sip:a@192.0.2.9:5060>;expires=3600, <sip:a@127.0.0.1:5060;transport=udp>;expires=120\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        );
        let reply = reply_of(&r, Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!((reply.status, reply.expires), (200, Some(120)));
        let reply = reply_of(&r, Some("127.0.0.1:5070".parse().unwrap()));
        assert_eq!(reply.expires, Some(600));
        let r = response(
            "SIP/2.0 423 Interval Too Brief\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\nMin-Expires: 900\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(reply_of(&r, None).min_expires, Some(900));
        let r = response(
            "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\nWWW-Authenticate: Digest realm=\"d\", nonce=\"n\"\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            reply_of(&r, None).www_authenticate,
            ["Digest realm=\"d\", nonce=\"n\""]
        );
    }

    #[test]
    fn uri_hosts() {
        assert_eq!(uri_host("::1"), "[::1]");
        assert_eq!(uri_host("carrier.example"), "carrier.example");
        assert_eq!(uri_host("192.0.2.1"), "192.0.2.1");
    }
}
