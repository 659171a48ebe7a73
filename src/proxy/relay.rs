//! Relaying one round of branches (RFC 3261 §16.7): client transactions out,
//! responses back up through the server transaction, CANCEL on demand.
//!
//! The server transaction is driven by its own task ([`Upstream`]), so several
//! rounds (sequential ringing, `on_no_answer` chains) can share it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use super::{Proxy, Target, pop_via};
use crate::sip::{
    Header, Method, Request, Response, SipMessage, StatusCode, Transaction, TransactionEvent,
    TransactionEventSender, TransactionKey, TransactionLayer, TransactionRole,
};

/// The upstream side of a proxied request: its server transaction, driven by a
/// task of its own, and the requests that arrive on it (CANCEL, ACK).
pub struct Upstream {
    respond: TransactionEventSender,
    requests: mpsc::UnboundedReceiver<Option<Request>>,
    /// The request as received (Vias with received/rport).
    pub original: Request,
    endpoint: Arc<TransactionLayer>,
    /// A final response went up.
    pub answered: bool,
    /// The caller sent CANCEL.
    pub cancelled: bool,
    /// The server transaction ended.
    pub done: bool,
}

impl Upstream {
    /// Takes over a server transaction.
    pub fn new(mut server: Transaction) -> Upstream {
        let (tx, requests) = mpsc::unbounded_channel();
        let respond = server.tu_sender.clone();
        let original = server.original.clone();
        let endpoint = server.endpoint_inner.clone();
        tokio::spawn(async move {
            while let Some(message) = server.receive().await {
                if let SipMessage::Request(request) = message {
                    let _ = tx.send(Some(request));
                }
            }
            let _ = tx.send(None);
        });
        Upstream {
            respond,
            requests,
            original,
            endpoint,
            answered: false,
            cancelled: false,
            done: false,
        }
    }

    /// The transaction layer this request lives in.
    pub fn endpoint(&self) -> &Arc<TransactionLayer> {
        &self.endpoint
    }

    /// Sends a response from downstream up: our Via removed, the upstream Via
    /// set restored from the original request.
    pub fn forward(&mut self, mut response: Response) {
        pop_via(&mut response.headers);
        let vias: Vec<Header> = self
            .original
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .cloned()
            .collect();
        let position = response
            .headers
            .iter()
            .position(|h| matches!(h, Header::Via(_)))
            .unwrap_or(0);
        let mut headers: Vec<Header> = response
            .headers
            .iter()
            .filter(|h| !matches!(h, Header::Via(_)))
            .cloned()
            .collect();
        let at = position.min(headers.len());
        headers.splice(at..at, vias);
        response.headers = headers.into();
        if response.status_code.code() >= 200 {
            self.answered = true;
        }
        let _ = self.respond.send(TransactionEvent::Respond(response));
    }

    /// Answers with a response of our own.
    pub fn reply(&mut self, code: u16, reason: &str) {
        self.reply_with(code, reason, Vec::new());
    }

    /// Answers with a response of our own carrying `headers` too.
    pub fn reply_with(&mut self, code: u16, reason: &str, headers: Vec<Header>) {
        let response_status = super::status_with_reason(code, reason);
        let mut response = self
            .endpoint
            .make_response(&self.original, response_status, None);
        response.headers.extend(headers);
        if code >= 200 {
            for header in response.headers.iter_mut() {
                if let Header::To(to) = header
                    && !to.value().contains(";tag=")
                {
                    *header =
                        Header::To(format!("{};tag={}", to.value(), super::random_tag()).into());
                }
            }
            self.answered = true;
        }
        let _ = self.respond.send(TransactionEvent::Respond(response));
    }

    /// Sends a response of our own making (e.g. the B2BUA's 200 with SDP).
    pub fn respond(&mut self, response: Response) {
        if response.status_code.code() >= 200 {
            self.answered = true;
        }
        let _ = self.respond.send(TransactionEvent::Respond(response));
    }

    /// The next request on the transaction (CANCEL, ACK), `None` once it
    /// has ended (then `done` is set).
    pub async fn next_request(&mut self) -> Option<Request> {
        if self.done {
            return None;
        }
        match self.requests.recv().await {
            Some(Some(request)) => Some(request),
            _ => {
                self.done = true;
                None
            }
        }
    }

    /// Waits until the server transaction ends (ACK absorbed, timers done).
    pub async fn finish(mut self, proxy: &Proxy) {
        while !self.done {
            match self.requests.recv().await {
                Some(Some(request)) if request.method == Method::Ack => {
                    proxy.forward_ack(request).await
                }
                Some(Some(_)) => {}
                Some(None) | None => self.done = true,
            }
        }
    }
}

/// How a round of branches ended.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx went up; the call is established.
    Answered,
    /// Every branch failed; the best response (not sent up).
    Failed(Response),
    /// Nobody answered within the ring timeout; branches were cancelled.
    NoAnswer,
    /// The caller cancelled; branches were cancelled.
    Cancelled,
}

struct Branch {
    request: Request,
    leg: Target,
    provisional: bool,
    final_status: Option<u16>,
    done: bool,
    cancel: bool,
    cancelled: bool,
}

enum Event {
    Response(usize, Response),
    Done(usize),
}

impl Proxy {
    /// Sends `branches` and relays their responses up: provisional ones at once,
    /// every 2xx (the first one cancels the others); when nothing succeeds the
    /// best final response is returned, not sent. After a 2xx this keeps
    /// relaying (2xx retransmissions, the ACK) until everything has ended.
    pub(super) async fn relay(
        &self,
        upstream: &mut Upstream,
        branches: Vec<(Request, Target)>,
        ring_timeout: Option<Duration>,
    ) -> Outcome {
        let (events, mut rx) = mpsc::unbounded_channel::<Event>();
        let mut state = Vec::new();
        for (index, (request, leg)) in branches.into_iter().enumerate() {
            let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else {
                continue;
            };
            let mut client = Transaction::new_client(
                key,
                request.clone(),
                upstream.endpoint().clone(),
                Some(leg.connection.clone()),
            );
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
                let _ = events.send(Event::Done(index));
            });
            state.push(Branch {
                request,
                leg,
                provisional: false,
                final_status: None,
                done: false,
                cancel: false,
                cancelled: false,
            });
        }
        drop(events);
        if state.is_empty() {
            return Outcome::Failed(
                self.response_for(&upstream.original, StatusCode::TemporarilyUnavailable),
            );
        }

        let mut answered = false;
        let mut timed_out = false;
        let mut best: Option<Response> = None;
        let deadline = ring_timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let all_done = state.iter().all(|b| b.done);
            if all_done && (!answered || upstream.done) {
                break;
            }
            tokio::select! {
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() && !answered && !timed_out => {
                    timed_out = true;
                    state.iter_mut().filter(|b| b.final_status.is_none()).for_each(|b| b.cancel = true);
                }
                request = upstream.requests.recv(), if !upstream.done => match request {
                    Some(Some(request)) if request.method == Method::Cancel => {
                        upstream.cancelled = true;
                        state.iter_mut().filter(|b| b.final_status.is_none()).for_each(|b| b.cancel = true);
                    }
                    Some(Some(request)) if request.method == Method::Ack => self.forward_ack(request).await,
                    Some(Some(_)) => {}
                    Some(None) | None => upstream.done = true,
                },
                event = rx.recv() => match event {
                    None => state.iter_mut().for_each(|b| b.done = true),
                    Some(Event::Done(index)) => {
                        if let Some(branch) = state.get_mut(index) {
                            branch.done = true;
                            if branch.final_status.is_none() {
                                branch.final_status = Some(408);
                                if best.is_none() {
                                    best = Some(self.response_for(&branch.request, StatusCode::RequestTimeout));
                                }
                            }
                        }
                    }
                    Some(Event::Response(index, response)) => {
                        let code = response.status_code.code();
                        let Some(branch) = state.get_mut(index) else { continue };
                        debug!(branch = index, status = code, "branch response");
                        if code < 200 {
                            branch.provisional = true;
                            if code > 100 && !answered && !upstream.cancelled && !timed_out {
                                upstream.forward(response);
                            }
                        } else if code < 300 {
                            branch.final_status = Some(code);
                            upstream.forward(response);
                            if !answered {
                                answered = true;
                                state.iter_mut().filter(|b| b.final_status.is_none()).for_each(|b| b.cancel = true);
                            }
                        } else if branch.final_status.is_none() {
                            branch.final_status = Some(code);
                            if best.as_ref().is_none_or(|b| super::better(code, b.status_code.code())) {
                                best = Some(response);
                            }
                        }
                    }
                },
            }
            self.send_cancels(&mut state, upstream.endpoint());
        }
        if answered {
            Outcome::Answered
        } else if upstream.cancelled {
            Outcome::Cancelled
        } else if timed_out {
            Outcome::NoAnswer
        } else {
            Outcome::Failed(best.unwrap_or_else(|| {
                self.response_for(&upstream.original, StatusCode::TemporarilyUnavailable)
            }))
        }
    }

    /// Sends CANCEL (its own client transaction) on branches that want it and
    /// have had a provisional response (RFC 3261 §9.1).
    fn send_cancels(&self, state: &mut [Branch], endpoint: &Arc<TransactionLayer>) {
        for branch in state.iter_mut() {
            if !branch.cancel
                || branch.cancelled
                || !branch.provisional
                || branch.final_status.is_some()
                || branch.request.method != Method::Invite
            {
                continue;
            }
            branch.cancelled = true;
            let cancel = super::make_cancel(&branch.request);
            let Ok(key) = TransactionKey::from_request(&cancel, TransactionRole::Client) else {
                continue;
            };
            let mut client = Transaction::new_client(
                key,
                cancel,
                endpoint.clone(),
                Some(branch.leg.connection.clone()),
            );
            client.destination = branch.leg.destination.clone();
            tokio::spawn(async move {
                if client.send().await.is_ok() {
                    while client.receive().await.is_some() {}
                }
            });
        }
    }
}

impl crate::b2bua::InviteServer for Upstream {
    fn original(&self) -> &Request {
        &self.original
    }

    fn respond(&mut self, response: Response) {
        Upstream::respond(self, response)
    }

    fn next_request(&mut self) -> impl std::future::Future<Output = Option<Request>> + Send {
        Upstream::next_request(self)
    }
}
