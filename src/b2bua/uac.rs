//! The outgoing leg of a bridged call (towards a trunk), as a sans-IO state
//! machine: responses and in-dialog requests in ([`UacEvent`], with the
//! time), actions out ([`UacAction`]), one deadline. The driver builds and
//! sends the SIP messages; this decides when.
//!
//! ```text
//!  Calling ─1xx─▶ Proceeding ─2xx─▶ Confirmed ─BYE in / hang up─▶ Ending ─▶ Ended
//!     │ 401/407 (once per nonce) → resend with credentials
//!     │ ≥300 / timeout → Failed (the bridge may try the next trunk)
//!     │ cancel before any 1xx: wait for one (RFC 3261 §9.1), then CANCEL
//!     ▼
//!  Cancelling ─final─▶ Ended   (a 2xx crossing the CANCEL is ACKed and BYEd)
//! ```

use std::time::{Duration, Instant};

use crate::media::sdp::{self, Negotiated, SessionDescription};

/// How long we wait for a final response after CANCEL (Timer C-like backstop).
pub const CANCEL_WAIT: Duration = Duration::from_secs(32);

/// The longest session interval taken from a peer's `Session-Expires`, a
/// day: RFC 4028 sets no upper bound, and a larger number (up to `u64::MAX`
/// seconds from the wire) must not overflow a deadline.
pub const MAX_SESSION_INTERVAL: Duration = Duration::from_secs(86_400);

/// Where the leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UacState {
    /// INVITE sent, nothing back yet (100 Trying does not count).
    Calling,
    /// A provisional response (180/183) came back.
    Proceeding,
    /// 2xx received and ACKed.
    Confirmed,
    /// CANCEL sent (or pending): waiting for the INVITE's final response.
    Cancelling,
    /// We sent BYE and wait for its outcome.
    Ending,
    /// Over.
    Ended,
}

/// What happened on the leg.
#[derive(Debug)]
pub enum UacEvent<'a> {
    /// A provisional response (101-199) with its SDP body, if any.
    Provisional(u16, Option<&'a [u8]>),
    /// A reliable provisional response (`Require: 100rel`, RFC 3262) with
    /// its SDP body and `RSeq`.
    ReliableProvisional(u16, Option<&'a [u8]>, u32),
    /// A 2xx with its SDP body.
    Success(Option<&'a [u8]>),
    /// A 2xx whose answer the media leg itself took (WebRTC: ICE and DTLS
    /// parameters), with what it negotiated, or the status to end with.
    Accepted(Result<Negotiated, u16>),
    /// A 401/407 that the driver can answer (credentials configured and
    /// not already refused for this nonce).
    Challenge,
    /// 422 Session Interval Too Small whose Min-SE the driver can meet
    /// (RFC 4028 §6): resend with the larger interval.
    IntervalTooSmall,
    /// 100 Trying: the peer is alive (stops the no-response timer).
    Trying,
    /// A final non-2xx response (a 401/407 we cannot answer included).
    Failure(u16),
    /// The INVITE transaction timed out (Timer B).
    Timeout,
    /// The caller gave up: cancel (before answer) or hang up (after).
    Hangup,
    /// BYE from the trunk.
    Bye,
    /// A re-INVITE (or UPDATE) from the trunk with this offer (empty: none).
    ReInvite(&'a [u8]),
    /// An UPDATE without an offer: a session refresh (RFC 4028 §9, RFC 3311).
    Refresh,
    /// OPTIONS in the dialog.
    Options,
    /// INFO with this content type and body.
    Info(&'a str, &'a [u8]),
    /// REFER from the callee (it transfers the caller) with this Refer-To.
    Refer(&'a str),
    /// Another in-dialog request.
    Other,
    /// Our BYE got a final response (408 when it timed out).
    ByeDone(u16),
    /// Our session refresh (re-INVITE) got a final response (408:
    /// timeout), with its SDP body (the answer to the refresh's offer).
    RefreshDone(u16, Option<&'a [u8]>),
    /// The deadline passed.
    Timer,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum UacAction {
    /// Tell the caller: 180 Ringing or 183 Session Progress.
    Progress(u16),
    /// Early media: the trunk's answer in a 1xx; connect the media.
    EarlyMedia(Negotiated),
    /// The trunk answered: connect the media (again, if it changed) and
    /// answer the caller.
    Answered(Negotiated),
    /// ACK the 2xx.
    SendAck,
    /// Resend the INVITE with credentials (new CSeq, same dialog).
    SendAuthenticated,
    /// Resend the INVITE with the session interval the peer asked for
    /// (new CSeq, same dialog).
    SendWithLongerInterval,
    /// CANCEL the INVITE.
    SendCancel,
    /// Send BYE.
    SendBye,
    /// Refresh the session (RFC 4028): re-INVITE with our current offer.
    SendRefresh,
    /// The leg failed before answer with this status (for failover or the caller).
    Failed(u16),
    /// The callee asked (REFER) for the caller to be transferred to this
    /// URI (blind transfer by the called party); report with NOTIFY.
    Transfer(String),
    /// The callee asked (REFER with `Replaces`) for the caller to be
    /// connected to the party of its other call, the dialog named
    /// (attended transfer by the called party); report with NOTIFY.
    AttendedTransfer(super::call::Replaces),
    /// Acknowledge the reliable provisional with this `RSeq` (PRACK, with
    /// `RAck: rseq cseq INVITE`).
    SendPrack(u32),
    /// Respond to the in-dialog request being handled.
    Reply(u16, Option<String>),
    /// Apply a renegotiation (hold/resume from the trunk).
    Renegotiate(Negotiated),
    /// The media leg answers this re-offer itself (WebRTC), then reply
    /// 200 with its answer (or 488); `hold`: the offer holds the call.
    RenegotiateLeg {
        /// The peer's offer.
        offer: String,
        /// Whether it holds the call.
        hold: bool,
    },
    /// DTMF received in an INFO.
    Dtmf(char, u32),
    /// The trunk hung up (after answer): the bridge ends the other leg.
    RemoteHangup,
    /// Release the leg (room, dialog).
    Release,
}

/// The outgoing leg.
#[derive(Debug)]
pub struct UacCall {
    state: UacState,
    deadline: Option<Instant>,
    offer: SessionDescription,
    negotiated: Option<Negotiated>,
    /// Whether an early answer already connected the media.
    early: bool,
    /// A cancel is waiting for the first provisional response.
    cancel_pending: bool,
    /// A provisional response (100 Trying included) came: CANCEL may go
    /// (RFC 3261 §9.1).
    provisional: bool,
    authenticated: u8,
    /// The offer was made by a media leg that reads the answer itself
    /// ([`UacEvent::Accepted`]); SDP in provisional responses is ignored.
    answered_by_leg: bool,
    /// The negotiated session timer (RFC 4028): interval, and whether we refresh.
    session: Option<(Duration, bool)>,
    /// Our refresh re-INVITE awaits its final response: a re-INVITE from
    /// the peer now is glare (491).
    refreshing: bool,
    /// INVITEs resent after a 422.
    interval_retries: u8,
    /// The RSeq of the last reliable provisional PRACKed (this INVITE).
    last_rseq: Option<u32>,
    /// Our `o=` line: the offer's session id, its version bumped by each
    /// change we describe (RFC 3264 §8).
    origin: sdp::SessionOrigin,
    /// The description we last sent when it is not the offer (an answer to
    /// a re-INVITE, our offer in an offerless one's 200): a session refresh
    /// re-sends it, unchanged (RFC 4028 §7.4), so the refresh neither moves
    /// the codec nor takes the call off hold.
    local_sdp: Option<String>,
}

/// How many times a challenge is answered before giving up.
const MAX_AUTH_ATTEMPTS: u8 = 2;

impl UacCall {
    /// A leg that has just sent `offer` in its INVITE.
    pub fn new(offer: SessionDescription) -> UacCall {
        UacCall {
            state: UacState::Calling,
            deadline: None,
            negotiated: None,
            early: false,
            cancel_pending: false,
            provisional: false,
            authenticated: 0,
            answered_by_leg: false,
            session: None,
            refreshing: false,
            last_rseq: None,
            interval_retries: 0,
            origin: sdp::SessionOrigin::continuing(&offer),
            local_sdp: None,
            offer,
        }
    }

    /// A leg whose offer came from its media leg (WebRTC), which reads the
    /// answer: 2xx arrive as [`UacEvent::Accepted`].
    pub fn new_answered_by_leg(offer: SessionDescription) -> UacCall {
        UacCall {
            answered_by_leg: true,
            ..UacCall::new(offer)
        }
    }

    /// The current state.
    pub fn state(&self) -> UacState {
        self.state
    }

    /// What was negotiated with the trunk, once it answered.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Gives up (408, for failover) when nothing at all comes back by
    /// `deadline` (no 100 Trying either): a dead trunk fails over in
    /// seconds instead of after Timer B's 32.
    pub fn expect_response_by(&mut self, deadline: Instant) {
        if self.state == UacState::Calling {
            self.deadline = Some(deadline);
        }
    }

    /// Starts the session timer the 2xx settled (RFC 4028): when we are the
    /// refresher we re-INVITE at half the interval; otherwise the peer must
    /// refresh before the interval ends (minus a third, at most 32 s), or we
    /// hang up. An interval over [`MAX_SESSION_INTERVAL`] is taken as that.
    pub fn start_session_timer(&mut self, interval: Duration, we_refresh: bool, now: Instant) {
        if self.state != UacState::Confirmed || interval.is_zero() {
            return;
        }
        let interval = interval.min(MAX_SESSION_INTERVAL);
        self.session = Some((interval, we_refresh));
        self.deadline = Some(now + self.session_wait(interval, we_refresh));
    }

    fn session_wait(&self, interval: Duration, we_refresh: bool) -> Duration {
        if we_refresh {
            interval / 2
        } else {
            interval - (interval / 3).min(Duration::from_secs(32))
        }
    }

    /// Our offer.
    pub fn offer(&self) -> &SessionDescription {
        &self.offer
    }

    /// Whether a hang-up is under way: BYE or CANCEL sent, or a CANCEL
    /// waiting for the first response (nothing more to do until it comes).
    pub fn hanging_up(&self) -> bool {
        matches!(self.state, UacState::Ending | UacState::Cancelling)
            || (self.state == UacState::Calling && self.cancel_pending)
    }

    /// The session timer in force: its interval, and whether we refresh.
    pub fn session(&self) -> Option<(Duration, bool)> {
        self.session
    }

    /// What a session refresh offers: the description we last sent, when
    /// it is not the INVITE's offer.
    pub fn refresh_offer(&self) -> Option<&str> {
        self.local_sdp.as_deref()
    }

    /// When [`UacEvent::Timer`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn read_answer(&self, body: Option<&[u8]>) -> Option<Result<Negotiated, u16>> {
        if self.answered_by_leg {
            return None;
        }
        let body = body.filter(|b| !b.is_empty())?;
        Some(
            SessionDescription::parse(body)
                .map_err(|_| 488)
                .and_then(|answer| {
                    sdp::process_answer(&self.offer, &answer).map_err(|e| e.status())
                }),
        )
    }

    /// The answer to our refresh's offer (RFC 3264 §8: it may move the
    /// peer's media, or hold): what changed goes to the leg. An answer we
    /// cannot use changes nothing (the call goes on as it was).
    fn refresh_answered(&mut self, answer: Option<&[u8]>) -> Vec<UacAction> {
        let (Some(answer), Some(current)) = (answer, self.negotiated.as_ref()) else {
            return Vec::new();
        };
        if self.answered_by_leg {
            // A browser's leg reads its answers itself (ICE, DTLS); a
            // refresh answer from it moves nothing here.
            return Vec::new();
        }
        let offer = match self.local_sdp.as_deref() {
            Some(text) => match SessionDescription::parse(text.as_bytes()) {
                Ok(offer) => offer,
                Err(_) => return Vec::new(),
            },
            None => self.offer.clone(),
        };
        let Ok(answer) = SessionDescription::parse(answer) else {
            return Vec::new();
        };
        match sdp::process_answer(&offer, &answer) {
            Ok(neg) if &neg != current => {
                self.negotiated = Some(neg.clone());
                vec![UacAction::Renegotiate(neg)]
            }
            _ => Vec::new(),
        }
    }

    /// Once answered, a session refresh offers the codec in use only (our
    /// INVITE offered several: re-offering them could move the call).
    fn settle_refresh_offer(&mut self, neg: &Negotiated) {
        let Some(local) = local_media_of(&self.offer) else {
            return;
        };
        let caps = sdp::Capabilities {
            codecs: vec![neg.codec.kind],
            telephone_event: neg.telephone_event.is_some(),
            ..sdp::Capabilities::default()
        };
        let offer = sdp::build_offer(&caps, local, neg.local_direction, &mut self.origin);
        self.local_sdp = Some(offer.to_string());
    }

    fn end(&mut self) -> Vec<UacAction> {
        self.state = UacState::Ended;
        self.deadline = None;
        vec![UacAction::Release]
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: UacEvent<'_>, now: Instant) -> Vec<UacAction> {
        use UacState::*;
        match (self.state, event) {
            (Ended, _) => Vec::new(),
            (Calling, UacEvent::Trying) if !self.cancel_pending => {
                self.provisional = true;
                self.deadline = None;
                Vec::new()
            }
            (Calling, UacEvent::Trying) => {
                // The hang-up was waiting for this.
                self.cancel_pending = false;
                self.provisional = true;
                self.state = Cancelling;
                self.deadline = Some(now + CANCEL_WAIT);
                vec![UacAction::SendCancel]
            }
            (Calling, UacEvent::Timer)
                if !self.cancel_pending && self.deadline.is_some_and(|d| now >= d) =>
            {
                // Nothing came back: no CANCEL is possible (RFC 3261 §9.1).
                let mut actions = self.end();
                actions.insert(0, UacAction::Failed(408));
                actions
            }
            (Calling | Proceeding, UacEvent::ReliableProvisional(status, body, rseq)) => {
                if self
                    .last_rseq
                    .is_some_and(|last| rseq != last.wrapping_add(1))
                {
                    // A retransmission, or out of order: neither PRACKed
                    // nor processed (RFC 3262 §4).
                    return Vec::new();
                }
                self.last_rseq = Some(rseq);
                let mut actions = self.handle(UacEvent::Provisional(status, body), now);
                if self.state != Cancelling {
                    actions.insert(0, UacAction::SendPrack(rseq));
                }
                actions
            }
            (Calling | Proceeding, UacEvent::Provisional(status, body)) => {
                if !self.cancel_pending {
                    self.deadline = None;
                }
                self.state = Proceeding;
                if self.cancel_pending {
                    self.cancel_pending = false;
                    self.state = Cancelling;
                    self.deadline = Some(now + CANCEL_WAIT);
                    return vec![UacAction::SendCancel];
                }
                let mut actions = Vec::new();
                match self.read_answer(body) {
                    Some(Ok(neg)) if !self.early => {
                        self.early = true;
                        self.negotiated = Some(neg.clone());
                        actions.push(UacAction::EarlyMedia(neg));
                    }
                    _ => {}
                }
                if status == 180 || status == 183 {
                    actions.insert(0, UacAction::Progress(status));
                }
                actions
            }
            (Calling | Proceeding, UacEvent::Success(body)) => {
                // The answer is in the 2xx, or was in a reliable/early 1xx.
                let negotiated = match self.read_answer(body) {
                    Some(Ok(neg)) => Some(neg),
                    Some(Err(_)) => None,
                    None => self.negotiated.clone(),
                };
                match negotiated {
                    Some(neg) => {
                        self.state = Confirmed;
                        self.deadline = None;
                        self.settle_refresh_offer(&neg);
                        self.negotiated = Some(neg.clone());
                        vec![UacAction::SendAck, UacAction::Answered(neg)]
                    }
                    None => {
                        // Unusable answer: ACK, then hang up (RFC 3261 §13.2.2.4).
                        self.state = Ending;
                        vec![
                            UacAction::SendAck,
                            UacAction::SendBye,
                            UacAction::Failed(488),
                        ]
                    }
                }
            }
            (Calling | Proceeding, UacEvent::Accepted(result)) => match result {
                Ok(neg) => {
                    self.state = Confirmed;
                    self.deadline = None;
                    self.negotiated = Some(neg.clone());
                    vec![UacAction::SendAck, UacAction::Answered(neg)]
                }
                Err(status) => {
                    self.state = Ending;
                    vec![
                        UacAction::SendAck,
                        UacAction::SendBye,
                        UacAction::Failed(status),
                    ]
                }
            },
            (Cancelling, UacEvent::Accepted(_)) => {
                self.state = Ending;
                self.deadline = None;
                vec![UacAction::SendAck, UacAction::SendBye]
            }
            (Calling | Proceeding, UacEvent::Challenge) => {
                if self.authenticated >= MAX_AUTH_ATTEMPTS {
                    let mut actions = self.end();
                    actions.insert(0, UacAction::Failed(403));
                    return actions;
                }
                self.authenticated += 1;
                // The peer answered: the no-response timer has done its job.
                self.deadline = None;
                // A new INVITE: its reliable provisionals count afresh.
                self.last_rseq = None;
                vec![UacAction::SendAuthenticated]
            }
            (Calling | Proceeding, UacEvent::IntervalTooSmall) => {
                if self.interval_retries >= 2 {
                    let mut actions = self.end();
                    actions.insert(0, UacAction::Failed(422));
                    return actions;
                }
                self.interval_retries += 1;
                self.deadline = None;
                self.last_rseq = None;
                vec![UacAction::SendWithLongerInterval]
            }
            (Calling | Proceeding, UacEvent::Failure(status)) => {
                let mut actions = self.end();
                actions.insert(0, UacAction::Failed(status));
                actions
            }
            (Calling | Proceeding, UacEvent::Timeout) => {
                let mut actions = self.end();
                actions.insert(0, UacAction::Failed(408));
                actions
            }
            (Calling, UacEvent::Hangup) if self.provisional => {
                // After a 100 Trying: CANCEL at once.
                self.state = Cancelling;
                self.deadline = Some(now + CANCEL_WAIT);
                vec![UacAction::SendCancel]
            }
            (Calling, UacEvent::Hangup) => {
                // RFC 3261 §9.1: no CANCEL before a provisional response.
                self.cancel_pending = true;
                self.deadline = Some(now + CANCEL_WAIT);
                Vec::new()
            }
            (Proceeding, UacEvent::Hangup) => {
                self.state = Cancelling;
                self.deadline = Some(now + CANCEL_WAIT);
                vec![UacAction::SendCancel]
            }
            (Calling, UacEvent::Timer) if self.cancel_pending => {
                // Nothing ever came back.
                self.end()
            }
            (Cancelling, UacEvent::Success(_)) => {
                // The answer crossed our CANCEL: take it and hang up at once.
                self.state = Ending;
                self.deadline = None;
                vec![UacAction::SendAck, UacAction::SendBye]
            }
            (
                Cancelling,
                UacEvent::Failure(_)
                | UacEvent::Timeout
                | UacEvent::Challenge
                | UacEvent::IntervalTooSmall,
            ) => self.end(),
            (Cancelling, UacEvent::Timer) => self.end(),
            (Confirmed, UacEvent::Hangup) => {
                self.state = Ending;
                self.deadline = None;
                vec![UacAction::SendBye]
            }
            (Confirmed, UacEvent::Timer) if self.deadline.is_some_and(|d| now >= d) => {
                match self.session {
                    Some((interval, true)) => {
                        self.deadline = Some(now + interval / 2);
                        self.refreshing = true;
                        vec![UacAction::SendRefresh]
                    }
                    Some((_, false)) => {
                        // The peer stopped refreshing: the session is gone.
                        self.state = Ending;
                        self.deadline = None;
                        vec![UacAction::SendBye, UacAction::RemoteHangup]
                    }
                    None => Vec::new(),
                }
            }
            (Confirmed, UacEvent::RefreshDone(status, answer)) => {
                self.refreshing = false;
                if (200..300).contains(&status) {
                    self.refresh_answered(answer)
                } else if status == 491 {
                    // Glare (RFC 3261 §14.1): we own the Call-ID, so retry
                    // after 2.1 to 4 s, in 10 ms steps.
                    let wait = 2_100 + 10 * u64::from(rand::random::<u8>() % 191);
                    self.deadline = Some(now + Duration::from_millis(wait));
                    Vec::new()
                } else if matches!(status, 408 | 481) {
                    // RFC 4028 §10: the dialog is gone.
                    self.state = Ending;
                    self.deadline = None;
                    vec![UacAction::SendBye, UacAction::RemoteHangup]
                } else {
                    Vec::new()
                }
            }
            (Confirmed, UacEvent::Bye) => {
                self.state = Ended;
                vec![
                    UacAction::Reply(200, None),
                    UacAction::RemoteHangup,
                    UacAction::Release,
                ]
            }
            (Confirmed, UacEvent::ReInvite(_)) if self.refreshing => {
                // Both sides re-INVITE at once: ours goes on, theirs waits.
                vec![UacAction::Reply(491, None)]
            }
            (Confirmed, UacEvent::ReInvite(body)) => {
                if let Some((interval, we_refresh)) = self.session {
                    self.deadline = Some(now + self.session_wait(interval, we_refresh));
                }
                self.reinvite(body)
            }
            (Confirmed, UacEvent::Options) => vec![UacAction::Reply(200, None)],
            (Confirmed, UacEvent::Refresh) => {
                if let Some((interval, we_refresh)) = self.session {
                    self.deadline = Some(now + self.session_wait(interval, we_refresh));
                }
                vec![UacAction::Reply(200, None)]
            }
            // In the early dialog (RFC 3311, RFC 6086): an UPDATE without
            // SDP and INFO are answered as once confirmed.
            (Proceeding, UacEvent::Refresh) => vec![UacAction::Reply(200, None)],
            // An UPDATE with an offer in the early dialog (RFC 3311 §5.2):
            // answered like a re-INVITE once the early answer gave us a
            // session (a carrier moving its announcement); before that our
            // INVITE's offer is still outstanding: 491.
            (Proceeding, UacEvent::ReInvite(body)) => {
                if self.negotiated.is_some() && !body.is_empty() {
                    self.reinvite(body)
                } else {
                    vec![UacAction::Reply(491, None)]
                }
            }
            (Confirmed | Proceeding, UacEvent::Info(content_type, body)) => {
                match super::call::parse_dtmf_info(content_type, body) {
                    Some((digit, ms)) => {
                        vec![UacAction::Reply(200, None), UacAction::Dtmf(digit, ms)]
                    }
                    // Other INFO packages (e.g. session keep-alives): accept.
                    None if body.is_empty() => vec![UacAction::Reply(200, None)],
                    None => vec![UacAction::Reply(415, None)],
                }
            }
            (Confirmed, UacEvent::Refer(target)) => {
                let inner = super::call::refer_to_uri(target);
                let uri = inner.split('?').next().unwrap_or_default().trim();
                if !(uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:"))
                {
                    vec![UacAction::Reply(400, None)]
                } else if let Some(replaces) = super::call::Replaces::from_uri(inner) {
                    vec![
                        UacAction::Reply(202, None),
                        UacAction::AttendedTransfer(replaces),
                    ]
                } else {
                    vec![
                        UacAction::Reply(202, None),
                        UacAction::Transfer(uri.to_string()),
                    ]
                }
            }
            (Confirmed, UacEvent::Other) => vec![UacAction::Reply(501, None)],
            (Ending, UacEvent::ByeDone(_)) => self.end(),
            (Ending, UacEvent::Bye) => vec![UacAction::Reply(200, None)],
            (
                Ending | Cancelling,
                UacEvent::ReInvite(_) | UacEvent::Refresh | UacEvent::Info(..),
            ) => {
                vec![UacAction::Reply(481, None)]
            }
            (Ending | Cancelling, UacEvent::Options | UacEvent::Other | UacEvent::Refer(_)) => {
                vec![UacAction::Reply(481, None)]
            }
            (Calling | Proceeding, UacEvent::Bye) => {
                // BYE before the 2xx reached us (RFC 3261 §15): answer it; the
                // INVITE's final response ends the leg.
                vec![UacAction::Reply(200, None)]
            }
            (_, UacEvent::ByeDone(_)) => Vec::new(),
            _ => Vec::new(),
        }
    }

    /// Answers the trunk's re-offer with our address and the codec the leg
    /// already uses, in the direction that matches (hold/resume, or a
    /// session refresh that changes nothing). An offerless re-INVITE (RFC
    /// 3261 §14.1, a carrier's refresh or transfer) gets our offer in the
    /// 200 instead: the codec in use only, so the answer in the ACK cannot
    /// move it (a new remote address is learnt from its packets).
    fn reinvite(&mut self, body: &[u8]) -> Vec<UacAction> {
        let Some(current) = self.negotiated.clone() else {
            return vec![UacAction::Reply(500, None)];
        };
        let offer = if body.is_empty() {
            None
        } else {
            let Ok(offer) = SessionDescription::parse(body) else {
                return vec![UacAction::Reply(400, None)];
            };
            Some(offer)
        };
        if self.answered_by_leg {
            // A browser's leg re-answers (same ICE and DTLS); it never
            // makes an offer of its own here.
            let (Some(offer), Ok(text)) = (offer, std::str::from_utf8(body)) else {
                return vec![UacAction::Reply(488, None)];
            };
            return vec![UacAction::RenegotiateLeg {
                offer: text.to_owned(),
                hold: !offer.direction(0).receives(),
            }];
        }
        let Some(local) = local_media_of(&self.offer) else {
            return vec![UacAction::Reply(500, None)];
        };
        let Some(offer) = offer else {
            let caps = sdp::Capabilities {
                codecs: vec![current.codec.kind],
                telephone_event: current.telephone_event.is_some(),
                ..sdp::Capabilities::default()
            };
            let ours = sdp::build_offer(&caps, local, current.local_direction, &mut self.origin)
                .to_string();
            self.local_sdp = Some(ours.clone());
            return vec![UacAction::Reply(200, Some(ours))];
        };
        // The codec in use first; any other we offered may take over (the
        // carrier moved the call to another media server).
        let mut codecs = vec![current.codec.kind];
        codecs.extend(
            sdp::codecs_of(&self.offer)
                .into_iter()
                .filter(|&kind| kind != current.codec.kind),
        );
        let caps = sdp::Capabilities {
            codecs,
            // As our INVITE offered it (no telephone-event to an INFO trunk).
            telephone_event: self.offer.media.first().is_some_and(|m| {
                m.rtpmaps()
                    .any(|r| r.encoding.eq_ignore_ascii_case("telephone-event"))
            }),
            ..sdp::Capabilities::default()
        };
        match sdp::answer(&offer, &caps, local, &mut self.origin) {
            Ok((answer, neg)) => {
                self.negotiated = Some(neg.clone());
                let answer = answer.to_string();
                self.local_sdp = Some(answer.clone());
                vec![
                    UacAction::Reply(200, Some(answer)),
                    UacAction::Renegotiate(neg),
                ]
            }
            Err(_) => vec![UacAction::Reply(488, None)],
        }
    }
}

/// Our address and port as written in our own offer.
pub fn local_media_of(offer: &SessionDescription) -> Option<sdp::LocalMedia> {
    let media = offer.media.first()?;
    let address = offer.connection_for(0)?.ip()?;
    Some(sdp::LocalMedia {
        address,
        rtp_port: media.port,
    })
}

/// The status the caller gets when every trunk failed with `status`
/// (RFC 3261 §16.7 for 503; authentication and server trouble at the
/// carrier are not the caller's to fix).
pub fn caller_status(status: u16) -> (u16, &'static str) {
    match status {
        401 | 407 => (403, "Forbidden by Carrier"),
        408 => (408, "Request Timeout"),
        404 | 484 | 485 => (status, ""),
        480 | 486 | 487 | 600 | 603 | 604 | 606 => (status, ""),
        488 => (488, "Not Acceptable Here"),
        400..=499 => (status, ""),
        503 => (503, "Service Unavailable"),
        500..=599 => (502, "Bad Gateway"),
        _ => (status, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::CodecKind;
    use crate::media::sdp::{Capabilities, Direction, LocalMedia, SessionOrigin, build_offer};

    fn offer() -> SessionDescription {
        build_offer(
            &Capabilities {
                codecs: vec![CodecKind::Pcmu, CodecKind::Pcma],
                ..Capabilities::default()
            },
            LocalMedia {
                address: [127, 0, 0, 1].into(),
                rtp_port: 20_000,
            },
            Direction::SendRecv,
            &mut SessionOrigin::new(),
        )
    }

    const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    #[test]
    fn ringing_answer_and_bye_from_the_trunk() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        assert_eq!(
            leg.handle(UacEvent::Provisional(180, None), t0),
            [UacAction::Progress(180)]
        );
        let actions = leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
        let [UacAction::SendAck, UacAction::Answered(neg)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(neg.codec.kind, CodecKind::Pcma);
        assert_eq!(neg.remote_rtp, Some("192.0.2.9:4000".parse().unwrap()));
        assert_eq!(leg.state(), UacState::Confirmed);
        assert_eq!(
            leg.handle(UacEvent::Bye, t0),
            [
                UacAction::Reply(200, None),
                UacAction::RemoteHangup,
                UacAction::Release
            ]
        );
        assert_eq!(leg.state(), UacState::Ended);
    }

    #[test]
    fn refer_from_the_callee_blind_attended_and_bad() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
        assert_eq!(
            leg.handle(UacEvent::Refer("<sip:+15559999999@example.com>"), t0),
            [
                UacAction::Reply(202, None),
                UacAction::Transfer("sip:+15559999999@example.com".into())
            ]
        );
        assert_eq!(
            leg.handle(
                UacEvent::Refer(
                    "<sip:carrier@192.0.2.9?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"
                ),
                t0
            ),
            [
                UacAction::Reply(202, None),
                UacAction::AttendedTransfer(crate::b2bua::call::Replaces {
                    call_id: "abc@h".into(),
                    to_tag: "1".into(),
                    from_tag: "2".into(),
                })
            ]
        );
        assert_eq!(
            leg.handle(UacEvent::Refer("<http://example.com>"), t0),
            [UacAction::Reply(400, None)]
        );
        assert_eq!(leg.state(), UacState::Confirmed);
    }

    /// RFC 3262 on our side: each reliable provisional is PRACKed once and
    /// processed once; a retransmission (same RSeq) or a gap is ignored; a
    /// new INVITE (after a challenge) starts afresh.
    #[test]
    fn reliable_provisionals_are_pracked_once() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        let body = Some(ANSWER.as_bytes());
        let actions = leg.handle(UacEvent::ReliableProvisional(183, body, 7), t0);
        assert!(
            matches!(
                actions.as_slice(),
                [
                    UacAction::SendPrack(7),
                    UacAction::Progress(183),
                    UacAction::EarlyMedia(_)
                ]
            ),
            "{actions:?}"
        );
        assert!(
            leg.handle(UacEvent::ReliableProvisional(183, body, 7), t0)
                .is_empty()
        );
        assert!(
            leg.handle(UacEvent::ReliableProvisional(180, None, 9), t0)
                .is_empty()
        );
        assert_eq!(
            leg.handle(UacEvent::ReliableProvisional(180, None, 8), t0),
            [UacAction::SendPrack(8), UacAction::Progress(180)]
        );
        assert_eq!(
            leg.handle(UacEvent::Challenge, t0),
            [UacAction::SendAuthenticated]
        );
        assert_eq!(
            leg.handle(UacEvent::ReliableProvisional(180, None, 1), t0),
            [UacAction::SendPrack(1), UacAction::Progress(180)]
        );
        let actions = leg.handle(UacEvent::Success(None), t0);
        assert!(
            matches!(
                actions.as_slice(),
                [UacAction::SendAck, UacAction::Answered(_)]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn early_media_then_answer_without_sdp() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        let actions = leg.handle(UacEvent::Provisional(183, Some(ANSWER.as_bytes())), t0);
        assert!(matches!(
            actions.as_slice(),
            [UacAction::Progress(183), UacAction::EarlyMedia(_)]
        ));
        let actions = leg.handle(UacEvent::Success(None), t0);
        assert!(matches!(
            actions.as_slice(),
            [UacAction::SendAck, UacAction::Answered(_)]
        ));
    }

    #[test]
    fn challenge_failure_and_timeout() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        assert_eq!(
            leg.handle(UacEvent::Challenge, t0),
            [UacAction::SendAuthenticated]
        );
        assert_eq!(
            leg.handle(UacEvent::Challenge, t0),
            [UacAction::SendAuthenticated]
        );
        assert_eq!(
            leg.handle(UacEvent::Challenge, t0),
            [UacAction::Failed(403), UacAction::Release]
        );
        let mut leg = UacCall::new(offer());
        assert_eq!(
            leg.handle(UacEvent::Failure(486), t0),
            [UacAction::Failed(486), UacAction::Release]
        );
        let mut leg = UacCall::new(offer());
        assert_eq!(
            leg.handle(UacEvent::Timeout, t0),
            [UacAction::Failed(408), UacAction::Release]
        );
    }

    #[test]
    fn cancel_waits_for_a_provisional_and_a_crossing_answer_is_hung_up() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        assert!(leg.handle(UacEvent::Hangup, t0).is_empty());
        assert_eq!(
            leg.handle(UacEvent::Provisional(180, None), t0),
            [UacAction::SendCancel]
        );
        assert_eq!(leg.state(), UacState::Cancelling);
        assert_eq!(
            leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0),
            [UacAction::SendAck, UacAction::SendBye]
        );
        assert_eq!(leg.handle(UacEvent::ByeDone(200), t0), [UacAction::Release]);
        // A cancelled call that never heard back ends at the deadline.
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Hangup, t0);
        assert_eq!(
            leg.handle(UacEvent::Timer, t0 + CANCEL_WAIT),
            [UacAction::Release]
        );
        // The usual case: 487 after the CANCEL.
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Provisional(180, None), t0);
        assert_eq!(leg.handle(UacEvent::Hangup, t0), [UacAction::SendCancel]);
        assert_eq!(leg.handle(UacEvent::Failure(487), t0), [UacAction::Release]);
    }

    #[test]
    fn hold_from_the_trunk_keeps_the_codec() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
        // Once answered, a refresh would offer the codec in use only (the
        // INVITE offered PCMU and PCMA: the refresh once re-offered both).
        let settled = leg.refresh_offer().unwrap().to_owned();
        assert!(settled.contains("m=audio 20000 RTP/AVP 8 101"), "{settled}");
        let hold = ANSWER.replace("sendrecv", "sendonly");
        let actions = leg.handle(UacEvent::ReInvite(hold.as_bytes()), t0);
        let [
            UacAction::Reply(200, Some(answer)),
            UacAction::Renegotiate(neg),
        ] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(answer.contains("m=audio 20000 RTP/AVP 8"), "{answer}");
        assert!(neg.on_hold());
        // Another codec we offered takes over (it was once refused with
        // 488): the answer keeps our offer's session id and goes up one
        // version per change (RFC 3264 §8; it once started a new session).
        let origin = |sdp: &str| {
            let o = SessionDescription::parse(sdp.as_bytes()).unwrap().origin;
            (o.session_id, o.session_version)
        };
        let (id, version) = origin(&leg.offer().to_string());
        assert_eq!(origin(&settled), (id.clone(), version + 1));
        assert_eq!(origin(answer), (id.clone(), version + 2));
        let pcmu = ANSWER.replace("RTP/AVP 8 101", "RTP/AVP 0 101");
        let actions = leg.handle(UacEvent::ReInvite(pcmu.as_bytes()), t0);
        let [
            UacAction::Reply(200, Some(answer)),
            UacAction::Renegotiate(neg),
        ] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(neg.codec.kind, CodecKind::Pcmu);
        assert!(answer.contains("m=audio 20000 RTP/AVP 0 101"), "{answer}");
        assert_eq!(origin(answer), (id.clone(), version + 3));
        // A session refresh re-sends that answer as it is (same version):
        // it neither moves the codec nor resumes a held call.
        assert_eq!(leg.refresh_offer(), Some(answer.as_str()));
        // The same offer again: the same answer, the same version.
        let actions = leg.handle(UacEvent::ReInvite(pcmu.as_bytes()), t0);
        let [UacAction::Reply(200, Some(again)), _] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(origin(again), (id, version + 3));
        // A codec we never offered: refused, the call keeps its codec.
        let g722 = ANSWER.replace("RTP/AVP 8 101", "RTP/AVP 9");
        assert_eq!(
            leg.handle(UacEvent::ReInvite(g722.as_bytes()), t0),
            [UacAction::Reply(488, None)]
        );
    }

    #[test]
    fn an_update_with_an_offer_in_the_early_dialog_is_answered() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        // Before any early answer: our offer is outstanding.
        leg.handle(UacEvent::Provisional(180, None), t0);
        assert_eq!(
            leg.handle(UacEvent::ReInvite(ANSWER.as_bytes()), t0),
            [UacAction::Reply(491, None)]
        );
        // After a 183 with SDP: answered, the media follows (it once got
        // no answer at all).
        leg.handle(UacEvent::Provisional(183, Some(ANSWER.as_bytes())), t0);
        let moved = ANSWER.replace("4000", "4100");
        let actions = leg.handle(UacEvent::ReInvite(moved.as_bytes()), t0);
        let [
            UacAction::Reply(200, Some(answer)),
            UacAction::Renegotiate(neg),
        ] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert!(answer.contains("m=audio 20000 RTP/AVP 8"), "{answer}");
        assert_eq!(neg.remote_rtp, Some("192.0.2.9:4100".parse().unwrap()));
        // The 2xx without SDP keeps what the UPDATE settled.
        let actions = leg.handle(UacEvent::Success(None), t0);
        let [UacAction::SendAck, UacAction::Answered(neg)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(neg.remote_rtp, Some("192.0.2.9:4100".parse().unwrap()));
    }

    #[test]
    fn the_answer_to_our_refresh_can_move_the_media() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
        let se = Duration::from_secs(90);
        leg.start_session_timer(se, true, t0);
        assert_eq!(
            leg.handle(UacEvent::Timer, t0 + se / 2),
            [UacAction::SendRefresh]
        );
        // The same answer again: nothing to do.
        assert!(
            leg.handle(UacEvent::RefreshDone(200, Some(ANSWER.as_bytes())), t0)
                .is_empty()
        );
        // The carrier moved its media to another port in the answer (it
        // was once not read at all).
        assert_eq!(
            leg.handle(UacEvent::Timer, t0 + se),
            [UacAction::SendRefresh]
        );
        let moved = ANSWER.replace("m=audio 4000", "m=audio 4200");
        let actions = leg.handle(UacEvent::RefreshDone(200, Some(moved.as_bytes())), t0 + se);
        let [UacAction::Renegotiate(neg)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(neg.remote_rtp, Some("192.0.2.9:4200".parse().unwrap()));
        assert_eq!(neg.codec.kind, CodecKind::Pcma);
        // An answer we cannot read changes nothing.
        assert_eq!(
            leg.handle(UacEvent::Timer, t0 + se * 3 / 2),
            [UacAction::SendRefresh]
        );
        assert!(
            leg.handle(UacEvent::RefreshDone(200, Some(b"garbage")), t0)
                .is_empty()
        );
        assert_eq!(
            leg.negotiated().and_then(|n| n.remote_rtp),
            Some("192.0.2.9:4200".parse().unwrap())
        );
    }

    #[test]
    fn no_response_at_all_fails_over_quickly() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        leg.expect_response_by(t0 + Duration::from_secs(3));
        assert!(
            leg.handle(UacEvent::Timer, t0 + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(
            leg.handle(UacEvent::Timer, t0 + Duration::from_secs(3)),
            [UacAction::Failed(408), UacAction::Release]
        );
        // A 100 Trying stops the timer.
        let mut leg = UacCall::new(offer());
        leg.expect_response_by(t0 + Duration::from_secs(3));
        assert!(leg.handle(UacEvent::Trying, t0).is_empty());
        assert_eq!(leg.deadline(), None);
    }

    #[test]
    fn session_timers_refresh_or_expire() {
        let t0 = Instant::now();
        let se = Duration::from_secs(90);
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
        leg.start_session_timer(se, true, t0);
        assert_eq!(leg.deadline(), Some(t0 + se / 2));
        assert_eq!(
            leg.handle(UacEvent::Timer, t0 + se / 2),
            [UacAction::SendRefresh]
        );
        assert_eq!(leg.deadline(), Some(t0 + se));
        assert!(
            leg.handle(UacEvent::RefreshDone(200, None), t0 + se / 2)
                .is_empty()
        );
        // Glare: their re-INVITE during ours gets 491; a 491 to ours is
        // retried after 2.1 to 4 s.
        let t1 = t0 + se;
        assert_eq!(leg.handle(UacEvent::Timer, t1), [UacAction::SendRefresh]);
        assert_eq!(
            leg.handle(UacEvent::ReInvite(ANSWER.as_bytes()), t1),
            [UacAction::Reply(491, None)]
        );
        assert!(leg.handle(UacEvent::RefreshDone(491, None), t1).is_empty());
        let retry = leg.deadline().unwrap() - t1;
        assert!(
            retry >= Duration::from_millis(2_100) && retry <= Duration::from_secs(4),
            "{retry:?}"
        );
        assert_eq!(
            leg.handle(UacEvent::Timer, t1 + retry),
            [UacAction::SendRefresh]
        );
        assert_eq!(
            leg.handle(UacEvent::RefreshDone(481, None), t1 + retry),
            [UacAction::SendBye, UacAction::RemoteHangup]
        );
        // The peer refreshes: each re-INVITE pushes the end back.
        let mut leg = UacCall::new(offer());
        leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
        leg.start_session_timer(se, false, t0);
        assert_eq!(leg.deadline(), Some(t0 + Duration::from_secs(60)));
        let later = t0 + Duration::from_secs(50);
        leg.handle(UacEvent::ReInvite(ANSWER.as_bytes()), later);
        assert_eq!(leg.deadline(), Some(later + Duration::from_secs(60)));
        assert_eq!(
            leg.handle(UacEvent::Timer, later + Duration::from_secs(60)),
            [UacAction::SendBye, UacAction::RemoteHangup]
        );
    }

    #[test]
    fn a_100_trying_allows_the_cancel() {
        let t0 = Instant::now();
        // Hang-up after a 100: CANCEL at once.
        let mut leg = UacCall::new(offer());
        assert!(leg.handle(UacEvent::Trying, t0).is_empty());
        assert_eq!(leg.handle(UacEvent::Hangup, t0), [UacAction::SendCancel]);
        assert_eq!(leg.state(), UacState::Cancelling);
        // Hang-up before anything: waits (a hang-up under way), then the
        // 100 lets the CANCEL go.
        let mut leg = UacCall::new(offer());
        assert!(leg.handle(UacEvent::Hangup, t0).is_empty());
        assert!(leg.hanging_up());
        assert_eq!(leg.handle(UacEvent::Trying, t0), [UacAction::SendCancel]);
        assert!(leg.hanging_up());
    }

    #[test]
    fn a_huge_session_interval_from_the_wire_is_capped_not_a_panic() {
        // `Session-Expires: 18446744073709551615` once overflowed `Instant`.
        let t0 = Instant::now();
        for we_refresh in [true, false] {
            let mut leg = UacCall::new(offer());
            leg.handle(UacEvent::Success(Some(ANSWER.as_bytes())), t0);
            leg.start_session_timer(Duration::from_secs(u64::MAX), we_refresh, t0);
            let due = leg.deadline().unwrap();
            assert!(due > t0 && due <= t0 + MAX_SESSION_INTERVAL, "{we_refresh}");
            leg.handle(UacEvent::ReInvite(ANSWER.as_bytes()), t0);
            if we_refresh {
                assert_eq!(leg.handle(UacEvent::Timer, due), [UacAction::SendRefresh]);
                assert!(leg.deadline().unwrap() <= due + MAX_SESSION_INTERVAL);
            }
        }
    }

    #[test]
    fn a_422_is_retried_twice_at_most() {
        let t0 = Instant::now();
        let mut leg = UacCall::new(offer());
        for _ in 0..2 {
            assert_eq!(
                leg.handle(UacEvent::IntervalTooSmall, t0),
                [UacAction::SendWithLongerInterval]
            );
        }
        let actions = leg.handle(UacEvent::IntervalTooSmall, t0);
        assert_eq!(actions.first(), Some(&UacAction::Failed(422)));
        assert_eq!(leg.state(), UacState::Ended);
    }

    #[test]
    fn status_mapping() {
        assert_eq!(caller_status(486).0, 486);
        assert_eq!(caller_status(407).0, 403);
        assert_eq!(caller_status(500).0, 502);
        assert_eq!(caller_status(503).0, 503);
    }
}
