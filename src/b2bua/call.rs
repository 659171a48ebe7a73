//! One call the gateway answers itself, as a sans-IO state machine: events
//! in ([`CallEvent`], with the time), actions out ([`Action`]), one
//! deadline ([`UasCall::deadline`]). The driver (`super::driver`) does the
//! SIP and media I/O.
//!
//! ```text
//!   Ringing ──timer──▶ AwaitingAck ──ACK──▶ Confirmed ──BYE in──▶ Ended
//!     │ CANCEL            │ no ACK (64·T1)     │ leg closed
//!     ▼                   ▼                    ▼
//!   Ended (487)        Ending (BYE out) ◀──────┘ ──BYE answered/timed out──▶ Ended
//! ```
//!
//! While ringing, provisional responses go through [`CallEvent::Progress`]:
//! to a caller that supports RFC 3262 (`100rel` in its INVITE's Supported
//! or Require) the ones that carry our answer, and every one when it
//! requires `100rel`, are sent reliably ([`Reliability`]): an `RSeq`,
//! retransmitted until the caller's PRACK, one at a time.

use std::time::{Duration, Instant};

use crate::media::leg::LegClosed;
use crate::media::sdp::{
    self, Capabilities, Direction, LocalMedia, Negotiated, SessionDescription, SessionOrigin,
};

/// RFC 3261 T1.
pub const T1: Duration = Duration::from_millis(500);

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// 180 sent, answering at the deadline (the CANCEL window).
    Ringing,
    /// 200 sent, waiting for the ACK.
    AwaitingAck,
    /// Established.
    Confirmed,
    /// We sent BYE and wait for its outcome.
    Ending,
    /// Over: release everything.
    Ended,
}

/// What happened.
#[derive(Debug)]
pub enum CallEvent<'a> {
    /// A deadline passed (see [`UasCall::deadline`]).
    Timer,
    /// The caller CANCELed the INVITE.
    Cancel,
    /// The ACK for our 200 arrived.
    Ack,
    /// The ACK for our 200 arrived with a body: the answer to the offer
    /// our 200 made (the INVITE had none, RFC 3261 §13.2.1).
    AckWithSdp(&'a [u8]),
    /// The INVITE transaction ended without an ACK.
    AckTimeout,
    /// [`Action::Answer`] could not be carried out (the room could not be
    /// joined): the INVITE got an error response instead, and the call is
    /// over.
    AnswerFailed,
    /// BYE from the caller.
    Bye,
    /// re-INVITE (or UPDATE) with this body (an offer; empty: none).
    ReInvite(&'a [u8]),
    /// An UPDATE without an offer: a session refresh (RFC 4028 §9, RFC 3311).
    Refresh,
    /// INFO with this content type and body.
    Info(&'a str, &'a [u8]),
    /// OPTIONS in the dialog.
    Options,
    /// REFER with this Refer-To value (empty: none).
    Refer(&'a str),
    /// Another in-dialog request we do not handle.
    Other,
    /// The media leg closed.
    LegClosed(LegClosed),
    /// Our BYE got a final response (or timed out: 408).
    ByeDone(u16),
    /// Answer now (a bridged call: the other leg answered).
    Answer,
    /// Refuse the INVITE with this status (a bridged call's other leg failed).
    Reject(u16),
    /// Hang up (a bridged call's other leg ended).
    Hangup,
    /// Tell the caller how the call progresses: a provisional `status`,
    /// with our answer SDP in it or not (early media).
    Progress {
        /// 180 or 183.
        status: u16,
        /// The response carries our answer.
        sdp: bool,
    },
    /// PRACK from the caller, with its RAck (`None`: missing or unreadable).
    Prack(Option<RAck>),
    /// Our session refresh (UPDATE) got a final response (408: timeout).
    RefreshDone(RefreshOutcome),
}

/// The RAck header of a PRACK (RFC 3262 §7.2): which reliable provisional
/// it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    /// The RSeq of the provisional.
    pub rseq: u32,
    /// The CSeq number of the INVITE.
    pub cseq: u32,
    /// The CSeq method (INVITE).
    pub method: String,
}

impl RAck {
    /// Reads `RSeq CSeq Method` (`776656 1 INVITE`).
    pub fn parse(value: &str) -> Option<RAck> {
        let mut parts = value.split_whitespace();
        let rseq = parts.next()?.parse().ok()?;
        let cseq = parts.next()?.parse().ok()?;
        let method = parts.next()?.to_string();
        parts
            .next()
            .is_none()
            .then_some(RAck { rseq, cseq, method })
    }
}

/// What the caller said about reliable provisional responses (RFC 3262).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// No `100rel`: provisionals are sent unreliably (and one with our
    /// answer is repeated in the 2xx).
    Unsupported,
    /// `Supported: 100rel`: a provisional with our answer is sent reliably;
    /// plain ringing is not (nothing to lose but a ringback cue).
    Supported,
    /// `Require: 100rel`: every provisional but 100 is sent reliably.
    Required,
}

impl Reliability {
    /// Reads the INVITE's Supported (`k`) and Require headers.
    pub fn of(request: &crate::sip::Request) -> Reliability {
        let lists = |names: &[&str]| {
            request.headers.iter().any(|h| {
                let name = h.name();
                names.iter().any(|n| name.eq_ignore_ascii_case(n))
                    && h.value()
                        .split(',')
                        .any(|tag| tag.trim().eq_ignore_ascii_case("100rel"))
            })
        };
        if lists(&["Require"]) {
            Reliability::Required
        } else if lists(&["Supported", "k"]) {
            Reliability::Supported
        } else {
            Reliability::Unsupported
        }
    }
}

/// What an INVITE or UPDATE asks of the session timer (RFC 4028 §9):
/// read by [`SessionRequest::of`], decided by [`UasCall::session_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRequest {
    /// `Session-Expires`, s.
    pub interval: u64,
    /// `Min-SE`, s (0: none).
    pub min_se: u64,
    /// `refresher=uas` (true), `refresher=uac` (false), or not said.
    pub uas_refreshes: Option<bool>,
    /// `timer` in Supported (or Require): the caller can refresh.
    pub supported: bool,
}

impl SessionRequest {
    /// Reads `Session-Expires` (`x`), `Min-SE` and the `timer` option tag;
    /// `None` without a readable Session-Expires (no session timer asked).
    pub fn of(request: &crate::sip::Request) -> Option<SessionRequest> {
        let (interval, uas_refreshes) = session_expires_of(&request.headers)?;
        let min_se = min_se_of(&request.headers).unwrap_or(0);
        let supported = request.headers.iter().any(|h| {
            let name = h.name();
            ["Supported", "k", "Require"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
                && h.value()
                    .split(',')
                    .any(|tag| tag.trim().eq_ignore_ascii_case("timer"))
        });
        Some(SessionRequest {
            interval,
            min_se,
            uas_refreshes,
            supported,
        })
    }
}

/// The value of the first header named one of `names` (any case).
fn header_value(headers: &crate::sip::Headers, names: &[&str]) -> Option<String> {
    headers.iter().find_map(|h| {
        let name = h.name();
        names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
            .then(|| h.value().to_string())
    })
}

/// `Session-Expires` (`x`): the interval, and `refresher=uas` (true),
/// `refresher=uac` (false) or none; `None` when absent or unreadable.
fn session_expires_of(headers: &crate::sip::Headers) -> Option<(u64, Option<bool>)> {
    let expires = header_value(headers, &["Session-Expires", "x"])?;
    let mut parts = expires.split(';');
    let interval: u64 = parts.next()?.trim().parse().ok()?;
    let uas_refreshes = parts.find_map(|p| {
        let (key, v) = p.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().eq_ignore_ascii_case("uas"))
    });
    Some((interval, uas_refreshes))
}

/// `Min-SE`, s.
fn min_se_of(headers: &crate::sip::Headers) -> Option<u64> {
    header_value(headers, &["Min-SE"])?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The final response to our session refresh (UPDATE), as far as the
/// session timer cares: read by [`RefreshOutcome::of`], taken by
/// [`CallEvent::RefreshDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// Its status (408 when nothing came back).
    pub status: u16,
    /// Its `Session-Expires`: the interval the caller settled, and
    /// `refresher=uas` (true: the caller refreshes from now on).
    pub session_expires: Option<(u64, Option<bool>)>,
    /// Its `Min-SE` (a 422's: the smallest interval the caller takes).
    pub min_se: Option<u64>,
}

impl RefreshOutcome {
    /// Reads a final response.
    pub fn of(response: &crate::sip::Response) -> RefreshOutcome {
        RefreshOutcome {
            status: response.status_code.code(),
            session_expires: session_expires_of(&response.headers),
            min_se: min_se_of(&response.headers),
        }
    }

    /// A bare status: no header said anything (408: no response at all).
    pub fn status(status: u16) -> RefreshOutcome {
        RefreshOutcome {
            status,
            session_expires: None,
            min_se: None,
        }
    }
}

/// The session timer in force on the caller's dialog (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    interval: Duration,
    /// We refresh (UPDATE at half the interval); else the caller does, and
    /// the call ends when it stops.
    we_refresh: bool,
    /// The caller supports the extension: our 2xx says `Require: timer`.
    required: bool,
    /// When the next refresh is due (ours), or the session expires (theirs).
    due: Option<Instant>,
    /// When the session ends unless refreshed (counted from the last
    /// accepted refresh).
    expires: Option<Instant>,
    /// The smallest interval we take (`limits.min_session_expires_secs`).
    floor: Duration,
    /// The caller's `Min-SE` from a 422 to our refresh (RFC 4028 §7.4: the
    /// retry carries it); zero: none.
    peer_min_se: u64,
    /// This refresh was already sent again after a 422: another one is a
    /// failure like any other.
    retried_422: bool,
}

/// Whether a request's Allow header lists UPDATE (RFC 3311): then the
/// session refreshes we owe that peer go as UPDATE.
pub fn allows_update(request: &crate::sip::Request) -> bool {
    request.headers.iter().any(|h| {
        h.name().eq_ignore_ascii_case("Allow")
            && h.value()
                .split(',')
                .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
    })
}

/// The reliable provisional waiting for its PRACK.
#[derive(Debug, Clone)]
struct Unacked {
    status: u16,
    sdp: bool,
    rseq: u32,
    /// When it was first sent: it is given up at 64·T1 from here.
    first: Instant,
    /// The interval before the next retransmission (T1, doubling).
    interval: Duration,
    /// When it is sent again.
    next: Instant,
}

/// RFC 3262 state of the INVITE we answer (UAS side, §3).
#[derive(Debug, Clone)]
struct Rel100 {
    mode: Reliability,
    /// The INVITE's CSeq number (RAck must name it).
    invite_cseq: u32,
    /// RSeq of the next reliable provisional.
    next_rseq: u32,
    unacked: Option<Unacked>,
    /// Provisionals held back until `unacked` is acknowledged (one reliable
    /// provisional at a time): (status, with SDP).
    queued: std::collections::VecDeque<(u16, bool)>,
    /// Our answer went out in a reliable provisional: the offer/answer
    /// exchange is complete and the 2xx carries no SDP.
    answered_early: bool,
    /// The 2xx is due but waits for the PRACK of a provisional with SDP.
    answer_waiting: bool,
}

/// Provisionals kept while one is unacknowledged; more are dropped (a
/// newer ringing state makes the older ones moot).
const MAX_QUEUED: usize = 4;

/// Status of the final response when a reliable provisional was never
/// acknowledged (RFC 3262 §3: "SHOULD reject ... with a 5xx").
pub const PRACK_TIMEOUT_STATUS: u16 = 504;

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send 180 Ringing on the INVITE (a call the gateway answers itself,
    /// while its answer delay runs; feed it back as [`CallEvent::Progress`]
    /// when the caller may want it reliably).
    Ring,
    /// Send a provisional response on the INVITE: `status`, with our
    /// answer SDP when `sdp`, reliably (`Require: 100rel`, `RSeq: n`) when
    /// `rseq` is set. A retransmission is the same action again.
    Provisional {
        /// 180 or 183.
        status: u16,
        /// Carry our answer SDP.
        sdp: bool,
        /// The RSeq of a reliable provisional.
        rseq: Option<u32>,
    },
    /// Join the room and send 200 OK with our answer on the INVITE.
    Answer,
    /// Final response `status` on the INVITE (no answer happened).
    RejectInvite(u16),
    /// Respond to the in-dialog request being handled, with an optional SDP body.
    Reply(u16, Option<String>),
    /// Apply a renegotiation to the leg and the room (hold/resume).
    Renegotiate(Negotiated),
    /// A WebRTC leg must answer this re-offer itself (its ICE and DTLS
    /// state are in the answer); then reply 200 with it, or 488. `hold`:
    /// the offer puts us on hold (sendonly/inactive).
    RenegotiateLeg {
        /// The browser's offer.
        offer: String,
        /// Whether it holds the call.
        hold: bool,
    },
    /// The caller sent a DTMF digit in an INFO.
    Dtmf(char, u32),
    /// The caller asked (REFER, RFC 3515) for the other party to be
    /// transferred to this URI; report progress with NOTIFY.
    Transfer(String),
    /// The caller asked for the other party to be connected to the party
    /// of another of its calls, whose dialog this names (REFER with
    /// `Replaces`, RFC 3891: attended transfer); report with NOTIFY.
    AttendedTransfer(Replaces),
    /// Send BYE.
    SendBye,
    /// Refresh the session (RFC 4028): UPDATE without a body, carrying
    /// [`UasCall::session_expires`]; feed its outcome back as
    /// [`CallEvent::RefreshDone`].
    SendRefresh,
    /// Leave the room, forget the dialog.
    Release,
}

/// The state machine of one answered call.
#[derive(Debug)]
pub struct UasCall {
    state: CallState,
    deadline: Option<Instant>,
    caps: Capabilities,
    local: LocalMedia,
    origin: SessionOrigin,
    negotiated: Negotiated,
    /// The leg is WebRTC: its SDP is the leg's (ICE, DTLS), not ours.
    webrtc: bool,
    /// Reliable provisional responses (RFC 3262).
    rel: Rel100,
    /// The INVITE had no offer: ours goes in the 2xx, the answer comes in
    /// the ACK (RFC 3261 §13.2.1, a carrier's delayed offer).
    offer_sent: Option<SessionDescription>,
    /// The session timer (RFC 4028), when the caller asked for one.
    session: Option<Session>,
    /// What a refresh from the caller asks, taken once our 2xx to it goes
    /// out ([`UasCall::session_answered`]); `Some(None)`: no timer.
    staged_session: Option<Option<Session>>,
    /// Our session refresh (UPDATE) is on its way: none other is sent
    /// before its outcome, whatever the caller's refreshes do meanwhile.
    refresh_out: bool,
    /// The session expired without a refresh from the caller (or ours
    /// failed): the BYE we sent says why the call ended.
    session_expired: bool,
}

impl Rel100 {
    fn none() -> Rel100 {
        Rel100 {
            mode: Reliability::Unsupported,
            invite_cseq: 0,
            next_rseq: 1,
            unacked: None,
            queued: Default::default(),
            answered_early: false,
            answer_waiting: false,
        }
    }
}

/// The body and the outcome of answering an offer.
pub type Answered = (UasCall, String, Vec<Action>);

impl UasCall {
    /// Starts a call from the INVITE's offer: negotiates at once (a
    /// failure is the status to reject with: 488), then rings for
    /// `answer_delay` (no ringing at all when zero).
    pub fn new(
        offer: &[u8],
        caps: Capabilities,
        local: LocalMedia,
        answer_delay: Duration,
        now: Instant,
    ) -> Result<Answered, u16> {
        let offer = SessionDescription::parse(offer).map_err(|_| 488u16)?;
        let mut origin = SessionOrigin::new();
        let (answer, negotiated) =
            sdp::answer(&offer, &caps, local, &mut origin).map_err(|e| e.status())?;
        let (call, actions) = UasCall::ringing(
            caps,
            local,
            origin,
            negotiated,
            false,
            None,
            answer_delay,
            now,
        );
        Ok((call, answer.to_string(), actions))
    }

    /// Starts a call from an INVITE without an offer (RFC 3261 §13.2.1, a
    /// carrier's delayed offer): the body returned is our offer, for the
    /// 2xx (provisional responses carry none); the answer comes in the
    /// ACK ([`CallEvent::AckWithSdp`]). Until then the call assumes our
    /// first codec and knows no remote address.
    pub fn offering(
        caps: Capabilities,
        local: LocalMedia,
        answer_delay: Duration,
        now: Instant,
    ) -> Result<Answered, u16> {
        let mut origin = SessionOrigin::new();
        let offer = sdp::build_offer(&caps, local, Direction::SendRecv, &mut origin);
        // Our offer read as its own answer: our first codec and
        // telephone-event; nowhere to send until the real answer.
        let mut negotiated = sdp::process_answer(&offer, &offer).map_err(|e| e.status())?;
        negotiated.remote_rtp = None;
        negotiated.remote_rtcp = None;
        let text = offer.to_string();
        let (call, actions) = UasCall::ringing(
            caps,
            local,
            origin,
            negotiated,
            false,
            Some(offer),
            answer_delay,
            now,
        );
        Ok((call, text, actions))
    }

    /// Starts a call whose answer was made by its media leg (WebRTC: the
    /// answer carries the leg's ICE credentials and DTLS fingerprint), with
    /// what the leg negotiated.
    pub fn with_leg_answer(
        negotiated: Negotiated,
        caps: Capabilities,
        local: LocalMedia,
        answer_delay: Duration,
        now: Instant,
    ) -> (UasCall, Vec<Action>) {
        UasCall::ringing(
            caps,
            local,
            SessionOrigin::new(),
            negotiated,
            true,
            None,
            answer_delay,
            now,
        )
    }

    /// A call ringing for `answer_delay`, or answered at once when it is
    /// zero (then its first actions are the answer's).
    #[allow(clippy::too_many_arguments)]
    fn ringing(
        caps: Capabilities,
        local: LocalMedia,
        origin: SessionOrigin,
        negotiated: Negotiated,
        webrtc: bool,
        offer_sent: Option<SessionDescription>,
        answer_delay: Duration,
        now: Instant,
    ) -> (UasCall, Vec<Action>) {
        let mut call = UasCall {
            state: CallState::Ringing,
            deadline: Some(now + answer_delay),
            caps,
            local,
            origin,
            negotiated,
            webrtc,
            rel: Rel100::none(),
            offer_sent,
            session: None,
            staged_session: None,
            refresh_out: false,
            session_expired: false,
        };
        let mut actions = Vec::new();
        if answer_delay.is_zero() {
            actions.extend(call.handle(CallEvent::Timer, now));
        } else {
            actions.push(Action::Ring);
        }
        (call, actions)
    }

    /// Rings until told to answer ([`CallEvent::Answer`]) instead of at a deadline.
    pub fn wait_for_answer(&mut self) {
        if self.state == CallState::Ringing {
            self.deadline = None;
        }
    }

    /// Sends provisionals reliably as the caller asked (RFC 3262):
    /// `invite_cseq` is its INVITE's CSeq number, `first_rseq` the RSeq of
    /// the first reliable provisional (random, 1 to 2^31 - 1, with room to
    /// count up: RSeq never wraps).
    pub fn set_reliability(&mut self, mode: Reliability, invite_cseq: u32, first_rseq: u32) {
        self.rel.mode = mode;
        self.rel.invite_cseq = invite_cseq;
        self.rel.next_rseq = first_rseq.clamp(1, 0x7fff_0000);
    }

    /// Our answer went out in a reliable provisional response: the 2xx
    /// must not carry another (RFC 3261 §13.2.1, RFC 6337 §3.1).
    pub fn answered_early(&self) -> bool {
        self.rel.answered_early
    }

    /// The INVITE had no offer and ours (in the 2xx) awaits its answer:
    /// no provisional response carries SDP.
    pub fn offers_late(&self) -> bool {
        self.offer_sent.is_some()
    }

    /// The current state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// What was negotiated last.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Takes what an INVITE or UPDATE asks of the session timer (RFC 4028
    /// §9; `None`: no Session-Expires, no timer), the first time before the
    /// answer, again for each refresh (re-INVITE or UPDATE, before it is
    /// handled). It takes effect when our 2xx to it goes out
    /// ([`UasCall::session_answered`]): a refused one changes nothing.
    /// `min_se` is the smallest interval we take; a shorter one from a
    /// caller that supports the extension is the `Err` to refuse with (422
    /// and this `Min-SE`), one from a caller that does not is raised. The
    /// caller refreshes when it can and did not ask us to; we refresh with
    /// UPDATE (`allows_update`: its Allow lists it), else we run no timer
    /// at all, as a UAS without the extension would.
    pub fn session_request(
        &mut self,
        request: Option<SessionRequest>,
        min_se: u64,
        allows_update: bool,
    ) -> Result<(), u64> {
        let session = match request {
            None => None,
            Some(request) => {
                let mut interval = request.interval.max(request.min_se);
                if interval < min_se {
                    if request.supported {
                        return Err(min_se);
                    }
                    // RFC 4028 errata 1687: a caller that cannot retry is
                    // not refused; the interval is raised instead.
                    interval = min_se;
                }
                let interval = Duration::from_secs(interval).min(super::uac::MAX_SESSION_INTERVAL);
                let we_refresh = match (request.supported, request.uas_refreshes) {
                    // A proxy inserted the header: the caller cannot refresh.
                    (false, _) => true,
                    (true, Some(uas)) => uas,
                    // Ours to choose: the caller refreshes, we watch.
                    (true, None) => false,
                };
                (!we_refresh || allows_update).then_some(Session {
                    interval,
                    we_refresh,
                    required: request.supported,
                    due: None,
                    expires: None,
                    floor: Duration::from_secs(min_se),
                    peer_min_se: 0,
                    retried_422: false,
                })
            }
        };
        self.staged_session = Some(session);
        Ok(())
    }

    /// Our final response to the caller's INVITE, re-INVITE or UPDATE goes
    /// out with `status`: a 2xx to a refresh puts what it asked in force
    /// and counts the interval from now; any other final response leaves
    /// the timer as it was.
    pub fn session_answered(&mut self, status: u16, now: Instant) {
        if status < 200 {
            return;
        }
        let Some(staged) = self.staged_session.take() else {
            return;
        };
        if status >= 300 {
            return;
        }
        // An UPDATE of ours on its way stays so (`refresh_out`): its
        // outcome restarts the count, no second one is sent meanwhile.
        self.session = staged;
        self.restart_session(now);
    }

    /// The session timer in force, for our 2xx to the INVITE and to each
    /// refresh: the `Session-Expires` value (`1800;refresher=uac`), and
    /// whether `Require: timer` goes with it.
    pub fn session_expires(&self) -> Option<(String, bool)> {
        self.session.map(|s| {
            let refresher = if s.we_refresh { "uas" } else { "uac" };
            (
                format!("{};refresher={refresher}", s.interval.as_secs()),
                s.required,
            )
        })
    }

    /// The `Session-Expires` of our own refresh (UPDATE): there we are the
    /// UAC, and the refresher (`1800;refresher=uac`); with the `Min-SE` to
    /// send, once the caller asked for one in a 422 (RFC 4028 §7.4).
    pub fn refresh_session_expires(&self) -> Option<(String, Option<u64>)> {
        self.session.map(|s| {
            (
                format!("{};refresher=uac", s.interval.as_secs()),
                (s.peer_min_se > 0).then_some(s.peer_min_se),
            )
        })
    }

    /// The call ended because its session expired (RFC 4028 §10): the
    /// caller stopped refreshing, or our refresh found the dialog gone.
    pub fn session_expired(&self) -> bool {
        self.session_expired
    }

    /// Counts the session interval from now (answered, or refreshed).
    fn restart_session(&mut self, now: Instant) {
        if !matches!(self.state, CallState::AwaitingAck | CallState::Confirmed) {
            return;
        }
        let refresh_out = self.refresh_out;
        if let Some(s) = self.session.as_mut() {
            let wait = if s.we_refresh {
                s.interval / 2
            } else {
                // RFC 4028 §10: BYE a little before the interval runs out.
                s.interval - (s.interval / 3).min(Duration::from_secs(32))
            };
            s.due = (!refresh_out).then_some(now + wait);
            s.expires = Some(now + s.interval);
        }
    }

    /// The session timer's deadline passed: refresh, or end the call.
    fn session_due(&mut self, now: Instant) -> Option<Vec<Action>> {
        if !matches!(self.state, CallState::AwaitingAck | CallState::Confirmed) {
            return None;
        }
        let s = self.session.as_mut()?;
        if s.due.is_none_or(|d| now < d) {
            return None;
        }
        if s.we_refresh {
            // The UPDATE's transaction reports within 32 s (408 at worst).
            s.due = None;
            self.refresh_out = true;
            return Some(vec![Action::SendRefresh]);
        }
        self.session_expired = true;
        Some(self.end_with_bye())
    }

    /// Our UPDATE's outcome (RFC 4028 §10).
    fn refresh_done(&mut self, outcome: RefreshOutcome, now: Instant) -> Vec<Action> {
        self.refresh_out = false;
        let Some(s) = self.session.as_mut() else {
            return Vec::new();
        };
        let retried_422 = std::mem::take(&mut s.retried_422);
        match outcome.status {
            200..=299 => {
                // The caller settles the interval and the refresher in its
                // 2xx (§7.4; `uas` is the caller here), never below what
                // we take; without the header it runs no timer itself, and
                // ours goes on as it was (the refresh still proves the
                // dialog alive).
                if let Some((interval, uas_refreshes)) = outcome.session_expires {
                    let interval =
                        Duration::from_secs(interval).min(super::uac::MAX_SESSION_INTERVAL);
                    if interval >= s.floor && !interval.is_zero() {
                        s.interval = interval;
                        s.we_refresh = uas_refreshes != Some(true);
                    }
                }
                self.restart_session(now);
                return Vec::new();
            }
            408 | 481 => {
                self.session_expired = true;
                return self.end_with_bye();
            }
            422 if !retried_422 => {
                // Too small for the caller (§7.4 as UAC): again, at once,
                // with its Min-SE, once.
                let min_se = outcome.min_se.unwrap_or_default();
                let raised = Duration::from_secs(min_se).min(super::uac::MAX_SESSION_INTERVAL);
                if raised > s.interval {
                    s.interval = raised;
                    s.peer_min_se = min_se.min(super::uac::MAX_SESSION_INTERVAL.as_secs());
                    s.retried_422 = true;
                    s.due = Some(now);
                    return Vec::new();
                }
            }
            _ => {}
        }
        if !s.required && outcome.status != 491 {
            // A caller without the extension runs no timer of its own (a
            // proxy asked for it): it keeps the call, and so do we.
            self.session = None;
            return Vec::new();
        }
        // The caller runs the timer and expects our refresh: try again
        // while the session lasts, and end it when it is over. After 491
        // (RFC 3261 §14.1: the caller chose the Call-ID) in 0 to 2 s, in
        // 10 ms steps; after other failures, a third of what is left.
        let left = s
            .expires
            .map_or(Duration::ZERO, |e| e.saturating_duration_since(now));
        let wait = if outcome.status == 491 {
            Duration::from_millis(10 * u64::from(rand::random::<u8>() % 201))
        } else {
            left / 3
        };
        if left < Duration::from_secs(2) || wait >= left {
            if !s.required {
                self.session = None;
                return Vec::new();
            }
            self.session_expired = true;
            return self.end_with_bye();
        }
        s.due = Some(now + wait);
        Vec::new()
    }

    /// When [`CallEvent::Timer`] is due next.
    pub fn deadline(&self) -> Option<Instant> {
        let retransmit = match self.state {
            CallState::Ringing => self.rel.unacked.as_ref().map(|u| u.next),
            CallState::AwaitingAck | CallState::Confirmed => {
                self.session.as_ref().and_then(|s| s.due)
            }
            _ => None,
        };
        match (self.deadline, retransmit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends a provisional (or queues it behind an unacknowledged reliable
    /// one).
    fn progress(&mut self, status: u16, sdp: bool, now: Instant) -> Vec<Action> {
        // One answer per offer: a later provisional does not repeat it;
        // our own offer (delayed-offer INVITE) waits for the 2xx.
        let sdp = sdp && !self.rel.answered_early && self.offer_sent.is_none();
        let reliable = match self.rel.mode {
            Reliability::Unsupported => false,
            Reliability::Supported => sdp,
            Reliability::Required => true,
        };
        if reliable && self.offer_sent.is_some() {
            // Our offer would have to be in the first reliable provisional
            // and its answer in the PRACK (RFC 3262 §5): the caller hears
            // nothing until the 2xx carries it instead.
            return Vec::new();
        }
        if !reliable {
            return vec![Action::Provisional {
                status,
                sdp,
                rseq: None,
            }];
        }
        if self.rel.unacked.is_some() {
            // RFC 3262 §3: no second reliable provisional until the first
            // is acknowledged.
            if self.rel.queued.len() < MAX_QUEUED {
                self.rel.queued.push_back((status, sdp));
            }
            return Vec::new();
        }
        let rseq = self.rel.next_rseq;
        self.rel.next_rseq = rseq.saturating_add(1);
        self.rel.answered_early |= sdp;
        self.rel.unacked = Some(Unacked {
            status,
            sdp,
            rseq,
            first: now,
            interval: T1,
            next: now + T1,
        });
        vec![Action::Provisional {
            status,
            sdp,
            rseq: Some(rseq),
        }]
    }

    /// Retransmits the unacknowledged reliable provisional when due, or
    /// gives up on the INVITE after 64·T1 (RFC 3262 §3).
    fn retransmit(&mut self, now: Instant) -> Vec<Action> {
        let Some(u) = self.rel.unacked.as_mut() else {
            return Vec::new();
        };
        if now < u.next {
            return Vec::new();
        }
        if now >= u.first + 64 * T1 {
            self.rel.unacked = None;
            self.rel.queued.clear();
            self.state = CallState::Ended;
            self.deadline = None;
            return vec![Action::RejectInvite(PRACK_TIMEOUT_STATUS), Action::Release];
        }
        // RFC 3262 §3: an interval that starts at T1 and doubles for each
        // retransmission (no T2 cap, unlike Timer G).
        u.interval *= 2;
        u.next = (now + u.interval).min(u.first + 64 * T1);
        vec![Action::Provisional {
            status: u.status,
            sdp: u.sdp,
            rseq: Some(u.rseq),
        }]
    }

    /// Answers now, or once the reliable provisional that carried our
    /// answer is acknowledged (RFC 3262 §3: no 2xx before that PRACK).
    fn answer(&mut self, now: Instant) -> Vec<Action> {
        if self.rel.unacked.as_ref().is_some_and(|u| u.sdp) {
            self.rel.answer_waiting = true;
            self.deadline = None;
            return Vec::new();
        }
        // A reliable provisional without SDP may stay unacknowledged: the
        // final response ends its retransmissions; queued ones are moot.
        self.rel.unacked = None;
        self.rel.queued.clear();
        self.rel.answer_waiting = false;
        self.state = CallState::AwaitingAck;
        self.deadline = Some(now + 64 * T1);
        self.restart_session(now);
        vec![Action::Answer]
    }

    /// A PRACK: 200 when it acknowledges the reliable provisional we wait
    /// for (RSeq, CSeq number and method match), else 481 (RFC 3262 §3).
    fn prack(&mut self, rack: Option<RAck>, now: Instant) -> Vec<Action> {
        let matches = match (&self.rel.unacked, &rack) {
            (Some(u), Some(r)) => {
                r.rseq == u.rseq
                    && r.cseq == self.rel.invite_cseq
                    && r.method.eq_ignore_ascii_case("INVITE")
            }
            _ => false,
        };
        if !matches {
            return vec![Action::Reply(481, None)];
        }
        self.rel.unacked = None;
        let mut actions = vec![Action::Reply(200, None)];
        if self.rel.answer_waiting {
            actions.extend(self.answer(now));
        } else if let Some((status, sdp)) = self.rel.queued.pop_front() {
            actions.extend(self.progress(status, sdp, now));
        }
        actions
    }

    /// Forgets the reliable provisional state once the INVITE has its final
    /// response.
    fn finish_provisionals(&mut self) {
        self.rel.unacked = None;
        self.rel.queued.clear();
        self.rel.answer_waiting = false;
    }

    fn end_with_bye(&mut self) -> Vec<Action> {
        self.state = CallState::Ending;
        // Our BYE has its own transaction timeout (Timer F); this is a backstop.
        self.deadline = None;
        vec![Action::SendBye]
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: CallEvent<'_>, now: Instant) -> Vec<Action> {
        use CallState::*;
        if self.state == Ringing
            && matches!(
                event,
                CallEvent::Reject(_)
                    | CallEvent::Hangup
                    | CallEvent::Cancel
                    | CallEvent::LegClosed(_)
            )
        {
            self.finish_provisionals();
        }
        if matches!(event, CallEvent::Timer)
            && let Some(actions) = self.session_due(now)
        {
            return actions;
        }
        match (self.state, event) {
            (Ended, _) => Vec::new(),
            (AwaitingAck | Confirmed, CallEvent::RefreshDone(outcome)) => {
                self.refresh_done(outcome, now)
            }
            (Ringing, CallEvent::Timer) => {
                let mut actions = self.retransmit(now);
                if self.state == Ringing && self.deadline.is_some_and(|d| now >= d) {
                    actions.extend(self.answer(now));
                }
                actions
            }
            (Ringing, CallEvent::Answer) => self.answer(now),
            (Ringing, CallEvent::Progress { status, sdp }) => self.progress(status, sdp, now),
            (Ringing, CallEvent::Prack(rack)) => self.prack(rack, now),
            (Ringing, CallEvent::Reject(status)) => {
                self.state = Ended;
                self.deadline = None;
                vec![Action::RejectInvite(status), Action::Release]
            }
            (Ringing, CallEvent::Hangup) => {
                self.state = Ended;
                self.deadline = None;
                vec![Action::RejectInvite(487), Action::Release]
            }
            (AwaitingAck | Confirmed, CallEvent::Hangup) => self.end_with_bye(),
            (Ringing, CallEvent::Cancel) => {
                self.state = Ended;
                self.deadline = None;
                vec![Action::RejectInvite(487), Action::Release]
            }
            (Ringing, CallEvent::LegClosed(_)) => {
                self.state = Ended;
                vec![Action::RejectInvite(500), Action::Release]
            }
            // No reliable provisional is outstanding once the INVITE has
            // its final response.
            (AwaitingAck | Confirmed | Ending, CallEvent::Prack(_)) => {
                vec![Action::Reply(481, None)]
            }
            (AwaitingAck, CallEvent::ReInvite(_)) if self.offer_sent.is_some() => {
                // Our offer (in the 2xx) is unanswered until the ACK: a new
                // offer or offer request now crosses it (RFC 3311 §5.2).
                vec![Action::Reply(491, None)]
            }
            (AwaitingAck, ack @ (CallEvent::Ack | CallEvent::AckWithSdp(_)))
                if self.offer_sent.is_some() =>
            {
                // The answer to our offer must be in the ACK; without a
                // usable one the call cannot have media: BYE (RFC 3261
                // §13.3.1.4 read the other way round).
                let answer = match ack {
                    CallEvent::AckWithSdp(body) => SessionDescription::parse(body).ok(),
                    _ => None,
                };
                let negotiated = match (answer, self.offer_sent.take()) {
                    (Some(answer), Some(offer)) => sdp::process_answer(&offer, &answer).ok(),
                    _ => None,
                };
                match negotiated {
                    Some(neg) => {
                        self.state = Confirmed;
                        self.deadline = None;
                        self.negotiated = neg.clone();
                        vec![Action::Renegotiate(neg)]
                    }
                    None => self.end_with_bye(),
                }
            }
            (AwaitingAck, CallEvent::Ack | CallEvent::AckWithSdp(_)) => {
                self.state = Confirmed;
                self.deadline = None;
                Vec::new()
            }
            (AwaitingAck, CallEvent::AckTimeout) => self.end_with_bye(),
            (AwaitingAck, CallEvent::AnswerFailed) => {
                self.state = Ended;
                self.deadline = None;
                vec![Action::Release]
            }
            (AwaitingAck, CallEvent::Timer) if self.deadline.is_some_and(|d| now >= d) => {
                self.end_with_bye()
            }
            (AwaitingAck | Confirmed, CallEvent::Bye) => {
                self.state = Ended;
                self.deadline = None;
                vec![Action::Reply(200, None), Action::Release]
            }
            (AwaitingAck | Confirmed, CallEvent::LegClosed(_)) => self.end_with_bye(),
            (Confirmed, CallEvent::ReInvite(body)) => self.reinvite(body),
            (AwaitingAck, CallEvent::ReInvite(body)) => {
                // The caller sends a re-INVITE only after its ACK: that ACK
                // is still on its way (it travels through the INVITE
                // transaction, the re-INVITE through the dialog). Take the
                // call as confirmed rather than refusing the re-INVITE.
                self.state = Confirmed;
                self.deadline = None;
                self.reinvite(body)
            }
            (AwaitingAck | Confirmed, CallEvent::Info(content_type, body)) => {
                match parse_dtmf_info(content_type, body) {
                    Some((digit, ms)) => vec![Action::Reply(200, None), Action::Dtmf(digit, ms)],
                    None => vec![Action::Reply(415, None)],
                }
            }
            (AwaitingAck | Confirmed, CallEvent::Options | CallEvent::Refresh) => {
                vec![Action::Reply(200, None)]
            }
            (AwaitingAck | Confirmed, CallEvent::Refer(target)) => {
                let inner = refer_to_uri(target);
                let uri = inner.split('?').next().unwrap_or_default().trim();
                if !(uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:"))
                {
                    vec![Action::Reply(400, None)]
                } else if let Some(replaces) = Replaces::from_uri(inner) {
                    vec![Action::Reply(202, None), Action::AttendedTransfer(replaces)]
                } else {
                    vec![Action::Reply(202, None), Action::Transfer(uri.to_string())]
                }
            }
            (AwaitingAck | Confirmed, CallEvent::Other) => vec![Action::Reply(501, None)],
            (Ending, CallEvent::ByeDone(_)) => {
                self.state = Ended;
                vec![Action::Release]
            }
            (Ending, CallEvent::Bye) => {
                // Glare: both hung up. Answer theirs; ours ends by itself.
                vec![Action::Reply(200, None)]
            }
            (
                Ending,
                CallEvent::ReInvite(_)
                | CallEvent::Refresh
                | CallEvent::Info(..)
                | CallEvent::Options
                | CallEvent::Refer(_)
                | CallEvent::Other,
            ) => {
                vec![Action::Reply(481, None)]
            }
            _ => Vec::new(),
        }
    }

    /// Answers a re-INVITE's offer with the same codec (a participant keeps
    /// its codec) and the direction that matches (hold / resume).
    fn reinvite(&mut self, body: &[u8]) -> Vec<Action> {
        if body.is_empty() {
            // Offerless re-INVITE (RFC 3261 §14.1): our offer goes in the
            // 200, the codec in use only, so the answer in the ACK cannot
            // move it (a new remote address is learnt from its packets). A
            // browser's leg always re-offers itself.
            if self.webrtc {
                return vec![Action::Reply(488, None)];
            }
            let caps = Capabilities {
                codecs: vec![self.negotiated.codec.kind],
                ..self.caps.clone()
            };
            let direction = self.negotiated.local_direction;
            let offer = sdp::build_offer(&caps, self.local, direction, &mut self.origin);
            return vec![Action::Reply(200, Some(offer.to_string()))];
        }
        let Ok(offer) = SessionDescription::parse(body) else {
            return vec![Action::Reply(400, None)];
        };
        if self.webrtc {
            // A browser's re-offer is answered by its WebRTC leg (same ICE
            // credentials and DTLS role, RFC 5763 §6.6).
            let Ok(text) = std::str::from_utf8(body) else {
                return vec![Action::Reply(400, None)];
            };
            let hold = !offer.direction(0).receives();
            return vec![Action::RenegotiateLeg {
                offer: text.to_owned(),
                hold,
            }];
        }
        // The codec in use first; another of ours may take over (the peer
        // moved the call to another media server or codec).
        let current = self.negotiated.codec.kind;
        let mut codecs = vec![current];
        codecs.extend(self.caps.codecs.iter().copied().filter(|&k| k != current));
        let caps = Capabilities {
            codecs,
            ..self.caps.clone()
        };
        match sdp::answer(&offer, &caps, self.local, &mut self.origin) {
            Ok((answer, neg)) => {
                self.negotiated = neg.clone();
                vec![
                    Action::Reply(200, Some(answer.to_string())),
                    Action::Renegotiate(neg),
                ]
            }
            Err(_) => vec![Action::Reply(488, None)],
        }
    }
}

/// The URI of a Refer-To value (`"name" <uri>`, `<uri>;params` or a bare
/// URI), with its `?headers`.
pub(super) fn refer_to_uri(value: &str) -> &str {
    let value = value.trim();
    match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].trim(),
        _ => value.split(';').next().unwrap_or_default().trim(),
    }
}

/// The dialog an attended transfer replaces (RFC 3891 `Replaces`): its
/// Call-ID and tags as the transferor sees them (`to-tag` is ours when
/// the transferor called through us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    /// The dialog's Call-ID.
    pub call_id: String,
    /// The `to-tag` parameter.
    pub to_tag: String,
    /// The `from-tag` parameter.
    pub from_tag: String,
}

impl Replaces {
    /// Reads the `Replaces` header of a Refer-To URI
    /// (`sip:x@h?Replaces=call%3Bto-tag%3Da%3Bfrom-tag%3Db`); `None` without
    /// one or when it lacks a Call-ID or either tag.
    pub fn from_uri(uri: &str) -> Option<Replaces> {
        let (_, headers) = uri.split_once('?')?;
        let value = headers.split('&').find_map(|h| {
            let (name, value) = h.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("replaces")
                .then_some(value)
        })?;
        let value = percent_decode(value)?;
        let mut parts = value.split(';');
        let call_id = parts.next()?.trim().to_string();
        let (mut to_tag, mut from_tag) = (None, None);
        for part in parts {
            let Some((name, v)) = part.split_once('=') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(v.trim().to_string()),
                "from-tag" => from_tag = Some(v.trim().to_string()),
                _ => {}
            }
        }
        let (to_tag, from_tag) = (to_tag?, from_tag?);
        (!call_id.is_empty() && !to_tag.is_empty() && !from_tag.is_empty()).then_some(Replaces {
            call_id,
            to_tag,
            from_tag,
        })
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The Refer-To header value of a REFER (`Refer-To` or compact `r`).
pub fn refer_to(request: &crate::sip::Request) -> Option<String> {
    request.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("refer-to") || name.eq_ignore_ascii_case("r"))
            .then(|| value.trim().to_string())
    })
}

/// Reads a DTMF INFO body: `application/dtmf-relay` (`Signal=5` /
/// `Duration=160`) or `application/dtmf` (just the digit).
pub fn parse_dtmf_info(content_type: &str, body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let digit_of = |s: &str| {
        let s = s.trim();
        let c = match s {
            "10" => '*',
            "11" => '#',
            _ => s.chars().next()?,
        };
        let c = c.to_ascii_uppercase();
        ("0123456789*#ABCD".contains(c) && s.chars().count() <= 2).then_some(c)
    };
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = 250;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = digit_of(v),
                    "duration" => duration = v.trim().parse().unwrap_or(250).min(10_000),
                    _ => {}
                }
            }
            digit.map(|d| (d, duration))
        }
        "application/dtmf" => digit_of(text).map(|d| (d, 250)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::CodecKind;
    use crate::media::sdp::Direction;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            address: [127, 0, 0, 1].into(),
            rtp_port: 20_000,
        }
    }

    fn start(delay_ms: u64, now: Instant) -> (UasCall, String, Vec<Action>) {
        UasCall::new(
            OFFER.as_bytes(),
            Capabilities::default(),
            local(),
            Duration::from_millis(delay_ms),
            now,
        )
        .unwrap()
    }

    #[test]
    fn immediate_answer_ack_then_bye_from_the_caller() {
        let t0 = Instant::now();
        let (mut call, answer, actions) = start(0, t0);
        assert_eq!(actions, [Action::Answer]);
        assert!(answer.contains("m=audio 20000 RTP/AVP 0 101"), "{answer}");
        assert_eq!(call.state(), CallState::AwaitingAck);
        assert_eq!(call.deadline(), Some(t0 + 64 * T1));
        assert!(call.handle(CallEvent::Ack, t0).is_empty());
        assert_eq!(call.state(), CallState::Confirmed);
        assert_eq!(call.deadline(), None);
        assert_eq!(
            call.handle(CallEvent::Bye, t0),
            [Action::Reply(200, None), Action::Release]
        );
        assert_eq!(call.state(), CallState::Ended);
        assert!(call.handle(CallEvent::Bye, t0).is_empty());
    }

    /// An INVITE without SDP (a carrier's delayed offer; it once got 488):
    /// our offer goes in the 2xx only, the answer comes in the ACK.
    #[test]
    fn delayed_offer_gets_our_offer_in_the_2xx_and_its_answer_in_the_ack() {
        let t0 = Instant::now();
        let offering = |t0| {
            UasCall::offering(Capabilities::default(), local(), Duration::from_secs(5), t0).unwrap()
        };
        let (mut call, offer, actions) = offering(t0);
        assert_eq!(actions, [Action::Ring]);
        assert!(
            offer.contains("m=audio 20000 RTP/AVP 0 8 9 111 101"),
            "{offer}"
        );
        assert_eq!(call.negotiated().remote_rtp, None, "nowhere to send yet");
        // Early media policy or not, no provisional carries our offer.
        assert_eq!(
            call.handle(
                CallEvent::Progress {
                    status: 183,
                    sdp: true
                },
                t0
            ),
            [Action::Provisional {
                status: 183,
                sdp: false,
                rseq: None
            }]
        );
        assert_eq!(call.handle(CallEvent::Answer, t0), [Action::Answer]);
        // A re-offer before the ACK crosses our offer: 491, the call waits on.
        let answer = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101");
        assert_eq!(
            call.handle(CallEvent::ReInvite(answer.as_bytes()), t0),
            [Action::Reply(491, None)]
        );
        assert_eq!(call.state(), CallState::AwaitingAck);
        let actions = call.handle(CallEvent::AckWithSdp(answer.as_bytes()), t0);
        let [Action::Renegotiate(neg)] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        assert_eq!(neg.codec.kind, CodecKind::Pcma);
        assert_eq!(neg.remote_rtp, Some("192.0.2.9:4000".parse().unwrap()));
        assert_eq!(call.state(), CallState::Confirmed);
        // A caller requiring 100rel gets no provisional at all: the first
        // reliable one would have to carry our offer (RFC 3262 §5).
        let (mut call, _, _) = offering(t0);
        call.set_reliability(Reliability::Required, 1, 7);
        assert!(
            call.handle(
                CallEvent::Progress {
                    status: 180,
                    sdp: false
                },
                t0
            )
            .is_empty()
        );
        assert!(call.offers_late());
        // An ACK without an answer, or with a useless one: BYE.
        for ack in [CallEvent::Ack, CallEvent::AckWithSdp(b"v=0\r\nnonsense")] {
            let (mut call, _, _) = offering(t0);
            call.handle(CallEvent::Answer, t0);
            assert_eq!(call.handle(ack, t0), [Action::SendBye]);
        }
        // A body in the ACK of a call that had an offer changes nothing.
        let (mut call, _, _) = start(0, t0);
        assert!(
            call.handle(CallEvent::AckWithSdp(answer.as_bytes()), t0)
                .is_empty()
        );
        assert_eq!(call.state(), CallState::Confirmed);
    }

    #[test]
    fn cancel_while_ringing() {
        let t0 = Instant::now();
        let (mut call, _, actions) = start(1000, t0);
        assert_eq!(actions, [Action::Ring]);
        assert!(
            call.handle(CallEvent::Timer, t0 + Duration::from_millis(500))
                .is_empty()
        );
        assert_eq!(
            call.handle(CallEvent::Cancel, t0 + Duration::from_millis(600)),
            [Action::RejectInvite(487), Action::Release]
        );
        assert_eq!(call.state(), CallState::Ended);
    }

    #[test]
    fn no_ack_ends_with_bye_after_64_t1() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        assert!(
            call.handle(CallEvent::Timer, t0 + Duration::from_secs(31))
                .is_empty()
        );
        assert_eq!(
            call.handle(CallEvent::Timer, t0 + Duration::from_secs(32)),
            [Action::SendBye]
        );
        assert_eq!(call.state(), CallState::Ending);
        assert_eq!(call.handle(CallEvent::ByeDone(200), t0), [Action::Release]);
        // The transaction layer may report it first: same outcome.
        let (mut call, _, _) = start(0, t0);
        assert_eq!(call.handle(CallEvent::AckTimeout, t0), [Action::SendBye]);
    }

    #[test]
    fn media_timeout_hangs_up() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        call.handle(CallEvent::Ack, t0);
        assert_eq!(
            call.handle(CallEvent::LegClosed(LegClosed::MediaTimeout), t0),
            [Action::SendBye]
        );
        // A BYE crossing ours is answered; a re-INVITE now gets 481.
        assert_eq!(call.handle(CallEvent::Bye, t0), [Action::Reply(200, None)]);
        assert_eq!(
            call.handle(CallEvent::ReInvite(OFFER.as_bytes()), t0),
            [Action::Reply(481, None)]
        );
        assert_eq!(call.handle(CallEvent::ByeDone(408), t0), [Action::Release]);
    }

    #[test]
    fn reinvite_hold_and_resume() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        call.handle(CallEvent::Ack, t0);
        let hold = OFFER.replace("sendrecv", "sendonly");
        let actions = call.handle(CallEvent::ReInvite(hold.as_bytes()), t0);
        let [Action::Reply(200, Some(answer)), Action::Renegotiate(neg)] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(neg.on_hold());
        assert_eq!(neg.local_direction, Direction::RecvOnly);
        let actions = call.handle(CallEvent::ReInvite(OFFER.as_bytes()), t0);
        let [Action::Reply(200, Some(answer)), Action::Renegotiate(neg)] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert!(answer.contains("a=sendrecv"), "{answer}");
        assert!(!neg.on_hold());
        // Another codec of ours takes over (it was once refused with 488:
        // the room could not switch a participant's codec).
        let pcma_only = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101");
        let actions = call.handle(CallEvent::ReInvite(pcma_only.as_bytes()), t0);
        let [Action::Reply(200, Some(answer)), Action::Renegotiate(neg)] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert!(answer.contains("m=audio 20000 RTP/AVP 8 101"), "{answer}");
        assert_eq!(neg.codec.kind, CodecKind::Pcma);
        // None of ours: refused, the call keeps its codec.
        let g729 = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18");
        assert_eq!(
            call.handle(CallEvent::ReInvite(g729.as_bytes()), t0),
            [Action::Reply(488, None)]
        );
        // Offerless: our offer in the 200, the codec in use only (it once
        // got 488).
        let actions = call.handle(CallEvent::ReInvite(b""), t0);
        let [Action::Reply(200, Some(offer))] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        assert!(offer.contains("m=audio 20000 RTP/AVP 8 101"), "{offer}");
        assert!(offer.contains("a=sendrecv"), "{offer}");
    }

    #[test]
    fn info_dtmf_and_options() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        call.handle(CallEvent::Ack, t0);
        assert_eq!(
            call.handle(
                CallEvent::Info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
                t0
            ),
            [Action::Reply(200, None), Action::Dtmf('5', 160)]
        );
        assert_eq!(
            call.handle(CallEvent::Info("application/dtmf", b"#"), t0),
            [Action::Reply(200, None), Action::Dtmf('#', 250)]
        );
        assert_eq!(
            call.handle(CallEvent::Info("text/plain", b"hi"), t0),
            [Action::Reply(415, None)]
        );
        assert_eq!(
            call.handle(CallEvent::Options, t0),
            [Action::Reply(200, None)]
        );
        assert_eq!(
            call.handle(CallEvent::Other, t0),
            [Action::Reply(501, None)]
        );
        // An UPDATE without SDP refreshes the session (it once got 488).
        assert_eq!(
            call.handle(CallEvent::Refresh, t0),
            [Action::Reply(200, None)]
        );
    }

    #[test]
    fn refer_is_accepted_once_confirmed() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        call.handle(CallEvent::Ack, t0);
        assert_eq!(
            call.handle(CallEvent::Refer("<sip:1002@example.test?Replaces=x>"), t0),
            [
                Action::Reply(202, None),
                Action::Transfer("sip:1002@example.test".into())
            ]
        );
        assert_eq!(
            call.handle(CallEvent::Refer("garbage"), t0),
            [Action::Reply(400, None)]
        );
        // SIP.js's attended transfer: a display name, our Contact, Replaces.
        assert_eq!(
            call.handle(
                CallEvent::Refer(
                    "\"+15559999999\" <sip:sb-b2b-x@127.0.0.1:5060;transport=ws?Replaces=abc%40h%3Bto-tag%3Dours%3Bfrom-tag%3Dtheirs>"
                ),
                t0
            ),
            [
                Action::Reply(202, None),
                Action::AttendedTransfer(Replaces {
                    call_id: "abc@h".into(),
                    to_tag: "ours".into(),
                    from_tag: "theirs".into()
                })
            ]
        );
    }

    #[test]
    fn a_reinvite_that_overtakes_the_ack_confirms_the_call() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        assert_eq!(call.state(), CallState::AwaitingAck);
        let hold = OFFER.replace("a=sendrecv", "a=sendonly");
        let actions = call.handle(CallEvent::ReInvite(hold.as_bytes()), t0);
        assert!(!actions.contains(&Action::Reply(491, None)), "{actions:?}");
        assert_eq!(call.state(), CallState::Confirmed);
        // The ACK that follows changes nothing.
        assert!(call.handle(CallEvent::Ack, t0).is_empty());
        assert_eq!(call.state(), CallState::Confirmed);
    }

    #[test]
    fn replaces_needs_a_call_id_and_both_tags() {
        assert_eq!(
            Replaces::from_uri("sip:a@b?Replaces=c%3Bfrom-tag%3Df%3Bto-tag%3Dt&X=1"),
            Some(Replaces {
                call_id: "c".into(),
                to_tag: "t".into(),
                from_tag: "f".into()
            })
        );
        for bad in [
            "sip:a@b",
            "sip:a@b?Replaces=c",
            "sip:a@b?Replaces=c%3Bto-tag%3Dt",
            "sip:a@b?Replaces=%3Bto-tag%3Dt%3Bfrom-tag%3Df",
            "sip:a@b?Replaces=c%3Bto-tag%3Dt%3Bfrom-tag%3Df%zz",
        ] {
            assert_eq!(Replaces::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn unacceptable_offers_are_rejected_up_front() {
        let t0 = Instant::now();
        let g729 = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18");
        let r = UasCall::new(
            g729.as_bytes(),
            Capabilities::default(),
            local(),
            Duration::ZERO,
            t0,
        );
        assert_eq!(r.err(), Some(488));
        let r = UasCall::new(
            b"garbage",
            Capabilities::default(),
            local(),
            Duration::ZERO,
            t0,
        );
        assert_eq!(r.err(), Some(488));
    }

    /// A bridged call (answer on request) whose caller said `mode` about
    /// 100rel; INVITE CSeq 2, first RSeq 1000.
    fn reliable(mode: Reliability, now: Instant) -> UasCall {
        let (mut call, _, _) = start(1000, now);
        call.wait_for_answer();
        call.set_reliability(mode, 2, 1000);
        call
    }

    fn rack(rseq: u32, cseq: u32) -> CallEvent<'static> {
        CallEvent::Prack(Some(RAck {
            rseq,
            cseq,
            method: "INVITE".into(),
        }))
    }

    fn early(sdp: bool) -> CallEvent<'static> {
        CallEvent::Progress { status: 183, sdp }
    }

    #[test]
    fn reliability_is_read_from_supported_and_require() {
        let invite = |extra: &str| {
            let text = format!(
                "INVITE sip:+15551234567@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:u@example.test>;tag=a\r\nTo: <sip:+15551234567@example.test>\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            match crate::sip::SipMessage::try_from(text.as_bytes()).unwrap() {
                crate::sip::SipMessage::Request(r) => r,
                other => panic!("{other}"),
            }
        };
        assert_eq!(Reliability::of(&invite("")), Reliability::Unsupported);
        assert_eq!(
            Reliability::of(&invite("Supported: timer, 100rel\r\n")),
            Reliability::Supported
        );
        assert_eq!(
            Reliability::of(&invite("k: 100REL\r\n")),
            Reliability::Supported
        );
        assert_eq!(
            Reliability::of(&invite("Supported: 100rel\r\nRequire: 100rel\r\n")),
            Reliability::Required
        );
        assert_eq!(
            Reliability::of(&invite("Supported: 100relx\r\n")),
            Reliability::Unsupported
        );
        assert_eq!(
            RAck::parse("776656 1 INVITE"),
            Some(RAck {
                rseq: 776656,
                cseq: 1,
                method: "INVITE".into()
            })
        );
        assert_eq!(RAck::parse("1 INVITE"), None);
        assert_eq!(RAck::parse("x 1 INVITE"), None);
    }

    #[test]
    fn without_100rel_provisionals_are_unreliable_and_the_answer_is_repeated() {
        let t0 = Instant::now();
        let mut call = reliable(Reliability::Unsupported, t0);
        assert_eq!(
            call.handle(early(true), t0),
            [Action::Provisional {
                status: 183,
                sdp: true,
                rseq: None
            }]
        );
        assert_eq!(call.deadline(), None, "nothing to retransmit");
        assert!(!call.answered_early());
        assert_eq!(call.handle(CallEvent::Answer, t0), [Action::Answer]);
    }

    #[test]
    fn early_answer_is_sent_reliably_and_retransmitted_until_prack() {
        let t0 = Instant::now();
        let mut call = reliable(Reliability::Supported, t0);
        // Plain ringing stays unreliable when 100rel is only supported.
        assert_eq!(
            call.handle(
                CallEvent::Progress {
                    status: 180,
                    sdp: false
                },
                t0
            ),
            [Action::Provisional {
                status: 180,
                sdp: false,
                rseq: None
            }]
        );
        let first = Action::Provisional {
            status: 183,
            sdp: true,
            rseq: Some(1000),
        };
        assert_eq!(call.handle(early(true), t0), std::slice::from_ref(&first));
        assert!(call.answered_early());
        // Retransmissions at T1, then doubling: 0.5, 1.5, 3.5, 7.5 s...
        let ms = Duration::from_millis;
        let mut sent = Vec::new();
        let mut now = t0;
        while let Some(next) = call.deadline() {
            if next > t0 + ms(10_000) {
                break;
            }
            now = next;
            let actions = call.handle(CallEvent::Timer, now);
            assert_eq!(actions, std::slice::from_ref(&first), "at {:?}", now - t0);
            sent.push(now - t0);
        }
        assert_eq!(sent, [ms(500), ms(1500), ms(3500), ms(7500)]);
        // A PRACK for another RSeq, CSeq or method matches nothing: 481.
        assert_eq!(call.handle(rack(999, 2), now), [Action::Reply(481, None)]);
        assert_eq!(call.handle(rack(1000, 1), now), [Action::Reply(481, None)]);
        let wrong_method = CallEvent::Prack(Some(RAck {
            rseq: 1000,
            cseq: 2,
            method: "BYE".into(),
        }));
        assert_eq!(call.handle(wrong_method, now), [Action::Reply(481, None)]);
        assert_eq!(
            call.handle(CallEvent::Prack(None), now),
            [Action::Reply(481, None)]
        );
        // The right one: 200, and the retransmissions stop.
        assert_eq!(call.handle(rack(1000, 2), now), [Action::Reply(200, None)]);
        assert_eq!(call.deadline(), None);
        // The same PRACK again (a new transaction) matches nothing now.
        assert_eq!(call.handle(rack(1000, 2), now), [Action::Reply(481, None)]);
        assert_eq!(call.handle(CallEvent::Answer, now), [Action::Answer]);
        assert_eq!(call.state(), CallState::AwaitingAck);
        assert!(call.answered_early(), "the 2xx carries no second answer");
        assert_eq!(call.handle(rack(1000, 2), now), [Action::Reply(481, None)]);
    }

    #[test]
    fn the_2xx_waits_for_the_prack_of_the_early_answer() {
        let t0 = Instant::now();
        let mut call = reliable(Reliability::Supported, t0);
        call.handle(early(true), t0);
        let t1 = t0 + Duration::from_millis(200);
        assert!(call.handle(CallEvent::Answer, t1).is_empty());
        assert_eq!(call.state(), CallState::Ringing);
        assert_eq!(call.deadline(), Some(t0 + T1), "still retransmitting");
        let t2 = t0 + Duration::from_millis(700);
        assert_eq!(
            call.handle(rack(1000, 2), t2),
            [Action::Reply(200, None), Action::Answer]
        );
        assert_eq!(call.state(), CallState::AwaitingAck);
        assert_eq!(call.deadline(), Some(t2 + 64 * T1));
    }

    #[test]
    fn an_unacknowledged_reliable_provisional_fails_the_invite_after_64_t1() {
        let t0 = Instant::now();
        let mut call = reliable(Reliability::Supported, t0);
        call.handle(early(true), t0);
        call.handle(CallEvent::Answer, t0 + Duration::from_secs(2));
        let mut retransmissions = 0;
        let mut last = Vec::new();
        while let Some(next) = call.deadline() {
            last = call.handle(CallEvent::Timer, next);
            if call.state() == CallState::Ended {
                assert!(
                    next >= t0 + 64 * T1 && next <= t0 + 64 * T1 + T1,
                    "{next:?}"
                );
                break;
            }
            retransmissions += 1;
        }
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; then given up at 32 s.
        assert_eq!(retransmissions, 6);
        assert_eq!(
            last,
            [Action::RejectInvite(PRACK_TIMEOUT_STATUS), Action::Release]
        );
        assert_eq!(call.deadline(), None);
        assert!(call.handle(rack(1000, 2), t0).is_empty(), "over");
    }

    #[test]
    fn one_reliable_provisional_at_a_time_when_100rel_is_required() {
        let t0 = Instant::now();
        let mut call = reliable(Reliability::Required, t0);
        assert_eq!(
            call.handle(
                CallEvent::Progress {
                    status: 180,
                    sdp: false
                },
                t0
            ),
            [Action::Provisional {
                status: 180,
                sdp: false,
                rseq: Some(1000)
            }]
        );
        // The 183 waits for the 180's PRACK, then goes with the next RSeq.
        assert!(call.handle(early(true), t0).is_empty());
        assert!(!call.answered_early());
        assert_eq!(
            call.handle(rack(1000, 2), t0),
            [
                Action::Reply(200, None),
                Action::Provisional {
                    status: 183,
                    sdp: true,
                    rseq: Some(1001)
                }
            ]
        );
        assert!(call.answered_early());
        // A later provisional does not repeat the answer.
        assert!(
            call.handle(
                CallEvent::Progress {
                    status: 180,
                    sdp: false
                },
                t0
            )
            .is_empty()
        );
        assert_eq!(
            call.handle(rack(1001, 2), t0),
            [
                Action::Reply(200, None),
                Action::Provisional {
                    status: 180,
                    sdp: false,
                    rseq: Some(1002)
                }
            ]
        );
        // An unacknowledged provisional without SDP does not hold the 2xx.
        assert_eq!(call.handle(CallEvent::Answer, t0), [Action::Answer]);
        assert_eq!(call.deadline(), Some(t0 + 64 * T1));
        assert_eq!(call.handle(rack(1002, 2), t0), [Action::Reply(481, None)]);
    }

    #[test]
    fn cancel_stops_the_retransmissions() {
        let t0 = Instant::now();
        let mut call = reliable(Reliability::Supported, t0);
        call.handle(early(true), t0);
        assert_eq!(
            call.handle(CallEvent::Cancel, t0),
            [Action::RejectInvite(487), Action::Release]
        );
        assert_eq!(call.deadline(), None);
        assert!(call.handle(CallEvent::Timer, t0 + T1).is_empty());
    }

    #[test]
    fn a_ringing_echo_call_sends_its_180_reliably_when_required() {
        // Calls the gateway answers itself: Ring is fed back as Progress.
        let t0 = Instant::now();
        let (mut call, _, actions) = start(1000, t0);
        assert_eq!(actions, [Action::Ring]);
        call.set_reliability(Reliability::Required, 2, 7);
        assert_eq!(
            call.handle(
                CallEvent::Progress {
                    status: 180,
                    sdp: false
                },
                t0
            ),
            [Action::Provisional {
                status: 180,
                sdp: false,
                rseq: Some(7)
            }]
        );
        assert_eq!(call.deadline(), Some(t0 + T1));
        assert_eq!(call.handle(CallEvent::Timer, t0 + T1).len(), 1);
        // The answer delay (1 s) ends the ringing: a 180 without SDP may
        // stay unacknowledged.
        assert_eq!(call.deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            call.handle(CallEvent::Timer, t0 + Duration::from_secs(1)),
            [Action::Answer]
        );
    }

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(
            parse_dtmf_info("application/dtmf-relay", b"Signal= 10\nDuration= 100"),
            Some(('*', 100))
        );
        assert_eq!(
            parse_dtmf_info("Application/DTMF-Relay; x=y", b"Signal=a"),
            Some(('A', 250))
        );
        assert_eq!(parse_dtmf_info("application/dtmf-relay", b"Signal=Z"), None);
        assert_eq!(parse_dtmf_info("application/dtmf-relay", b"\xff"), None);
    }

    fn timer_request(interval: u64, uas: Option<bool>, supported: bool) -> Option<SessionRequest> {
        Some(SessionRequest {
            interval,
            min_se: 0,
            uas_refreshes: uas,
            supported,
        })
    }

    #[test]
    fn session_requests_are_read_from_the_headers() {
        let request: crate::sip::Request = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nx: 1800 ; Refresher=UAS\r\nMin-SE: 120\r\nk: 100rel, timer\r\nAllow: INVITE, UPDATE\r\nContent-Length: 0\r\n\r\n"
            .try_into()
            .unwrap();
        assert_eq!(
            SessionRequest::of(&request),
            Some(SessionRequest {
                interval: 1800,
                min_se: 120,
                uas_refreshes: Some(true),
                supported: true,
            })
        );
        assert!(allows_update(&request));
        let plain: crate::sip::Request = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nSession-Expires: soon\r\nContent-Length: 0\r\n\r\n"
            .try_into()
            .unwrap();
        assert_eq!(SessionRequest::of(&plain), None);
        assert!(!allows_update(&plain));
    }

    /// The caller's INVITE or refresh asks `request` of the session timer,
    /// and our 2xx to it goes out at `now`.
    fn accept(
        call: &mut UasCall,
        request: Option<SessionRequest>,
        min_se: u64,
        allows_update: bool,
        now: Instant,
    ) {
        call.session_request(request, min_se, allows_update)
            .unwrap();
        call.session_answered(200, now);
    }

    #[test]
    fn a_caller_that_stops_refreshing_gets_bye() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        // Below our minimum from a caller that can retry: 422 with ours.
        assert_eq!(
            call.session_request(timer_request(60, None, true), 90, false),
            Err(90)
        );
        // It supports timers and named nobody: it refreshes, we watch.
        accept(&mut call, timer_request(90, None, true), 90, false, t0);
        assert_eq!(
            call.session_expires(),
            Some(("90;refresher=uac".to_string(), true))
        );
        call.handle(CallEvent::Ack, t0);
        // BYE 30 s before the end (RFC 4028 §10: a third, at most 32 s).
        assert_eq!(call.deadline(), Some(t0 + Duration::from_secs(60)));
        // A refresh at 50 s pushes it back.
        let t1 = t0 + Duration::from_secs(50);
        accept(
            &mut call,
            timer_request(90, Some(false), true),
            90,
            false,
            t1,
        );
        assert_eq!(
            call.handle(CallEvent::Refresh, t1),
            [Action::Reply(200, None)]
        );
        assert!(
            call.handle(CallEvent::Timer, t0 + Duration::from_secs(60))
                .is_empty()
        );
        let due = t1 + Duration::from_secs(60);
        assert_eq!(call.deadline(), Some(due));
        assert_eq!(call.handle(CallEvent::Timer, due), [Action::SendBye]);
        assert!(call.session_expired());
        assert_eq!(call.state(), CallState::Ending);
    }

    #[test]
    fn we_refresh_with_update_when_asked() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        // refresher=uas, or a caller without the extension (a proxy added
        // the header; its short interval is raised, not refused).
        accept(&mut call, timer_request(30, None, false), 90, true, t0);
        assert_eq!(
            call.session_expires(),
            Some(("90;refresher=uas".to_string(), false))
        );
        accept(
            &mut call,
            timer_request(120, Some(true), true),
            90,
            true,
            t0,
        );
        call.handle(CallEvent::Ack, t0);
        let half = t0 + Duration::from_secs(60);
        assert_eq!(call.deadline(), Some(half));
        assert_eq!(call.handle(CallEvent::Timer, half), [Action::SendRefresh]);
        assert_eq!(call.deadline(), None, "the UPDATE is on its way");
        assert_eq!(
            call.refresh_session_expires(),
            Some(("120;refresher=uac".to_string(), None)),
            "in our UPDATE we are the UAC"
        );
        assert!(
            call.handle(CallEvent::RefreshDone(RefreshOutcome::status(200)), half)
                .is_empty()
        );
        assert_eq!(call.deadline(), Some(half + Duration::from_secs(60)));
        // A refresh that finds the dialog gone ends the call.
        let t2 = half + Duration::from_secs(60);
        assert_eq!(call.handle(CallEvent::Timer, t2), [Action::SendRefresh]);
        assert_eq!(
            call.handle(CallEvent::RefreshDone(RefreshOutcome::status(481)), t2),
            [Action::SendBye]
        );
        assert!(call.session_expired());
    }

    #[test]
    fn no_timer_when_we_would_have_to_refresh_without_update() {
        let t0 = Instant::now();
        let (mut call, _, _) = start(0, t0);
        accept(
            &mut call,
            timer_request(1800, Some(true), true),
            90,
            false,
            t0,
        );
        assert_eq!(call.session_expires(), None);
        // A refresh without Session-Expires turns a running timer off.
        accept(&mut call, timer_request(1800, None, true), 90, false, t0);
        assert!(call.session_expires().is_some());
        accept(&mut call, None, 90, false, t0);
        assert_eq!(call.session_expires(), None);
        call.handle(CallEvent::Ack, t0);
        assert_eq!(call.deadline(), None);
    }

    /// A caller that supports timers and asks us to refresh, answered.
    fn refreshing_call(t0: Instant) -> UasCall {
        let (mut call, _, _) = start(0, t0);
        accept(
            &mut call,
            timer_request(120, Some(true), true),
            90,
            true,
            t0,
        );
        call.handle(CallEvent::Ack, t0);
        call
    }

    #[test]
    fn a_refused_refresh_changes_nothing() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let t1 = t0 + Duration::from_secs(10);
        // A re-INVITE naming the caller as refresher, refused (488): we
        // still refresh, counted from the answer.
        call.session_request(timer_request(300, Some(false), true), 90, true)
            .unwrap();
        call.session_answered(488, t1);
        assert_eq!(
            call.session_expires(),
            Some(("120;refresher=uas".to_string(), true))
        );
        assert_eq!(call.deadline(), Some(t0 + Duration::from_secs(60)));
        // Accepted, it takes effect, from then.
        accept(
            &mut call,
            timer_request(300, Some(false), true),
            90,
            true,
            t1,
        );
        assert_eq!(
            call.session_expires(),
            Some(("300;refresher=uac".to_string(), true))
        );
        assert_eq!(call.deadline(), Some(t1 + Duration::from_secs(268)));
    }

    #[test]
    fn a_refresh_from_the_caller_while_ours_is_out_sends_no_second_one() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let half = t0 + Duration::from_secs(60);
        assert_eq!(call.handle(CallEvent::Timer, half), [Action::SendRefresh]);
        accept(
            &mut call,
            timer_request(120, Some(true), true),
            90,
            true,
            half,
        );
        assert_eq!(call.deadline(), None, "our UPDATE is still out");
        let later = half + Duration::from_secs(1);
        call.handle(CallEvent::RefreshDone(RefreshOutcome::status(200)), later);
        assert_eq!(call.deadline(), Some(later + Duration::from_secs(60)));
    }

    #[test]
    fn the_callers_answer_to_our_refresh_settles_the_timer() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let half = t0 + Duration::from_secs(60);
        assert_eq!(call.handle(CallEvent::Timer, half), [Action::SendRefresh]);
        // Its 2xx takes the refreshing over (refresher=uas: the caller, UAS
        // of our UPDATE) with a longer interval: we watch from now on.
        let outcome = RefreshOutcome {
            status: 200,
            session_expires: Some((180, Some(true))),
            min_se: None,
        };
        assert!(
            call.handle(CallEvent::RefreshDone(outcome), half)
                .is_empty()
        );
        assert_eq!(
            call.session_expires(),
            Some(("180;refresher=uac".to_string(), true))
        );
        let end = half + Duration::from_secs(180 - 32);
        assert_eq!(call.deadline(), Some(end));
        assert_eq!(call.handle(CallEvent::Timer, end), [Action::SendBye]);
    }

    #[test]
    fn our_refresh_too_small_for_the_caller_is_sent_again_with_its_min_se() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let half = t0 + Duration::from_secs(60);
        call.handle(CallEvent::Timer, half);
        let outcome = RefreshOutcome {
            status: 422,
            session_expires: None,
            min_se: Some(600),
        };
        assert!(
            call.handle(CallEvent::RefreshDone(outcome), half)
                .is_empty()
        );
        assert_eq!(call.handle(CallEvent::Timer, half), [Action::SendRefresh]);
        assert_eq!(
            call.refresh_session_expires(),
            Some(("600;refresher=uac".to_string(), Some(600)))
        );
        // Once: a second 422 is a failure like any other (a caller raising
        // its Min-SE each time would have us send UPDATEs for ever).
        let outcome = RefreshOutcome {
            status: 422,
            session_expires: None,
            min_se: Some(900),
        };
        assert!(
            call.handle(CallEvent::RefreshDone(outcome), half)
                .is_empty()
        );
        assert!(call.deadline().is_some_and(|d| d > half));
        // Above a day it is taken as a day (no Instant overflow).
        let mut call = refreshing_call(t0);
        call.handle(CallEvent::Timer, half);
        let outcome = RefreshOutcome {
            status: 422,
            session_expires: None,
            min_se: Some(u64::MAX),
        };
        call.handle(CallEvent::RefreshDone(outcome), half);
        assert_eq!(
            call.refresh_session_expires(),
            Some(("86400;refresher=uac".to_string(), Some(86_400)))
        );
    }

    #[test]
    fn a_failed_refresh_is_retried_while_the_session_lasts() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let mut now = t0 + Duration::from_secs(60);
        assert_eq!(call.handle(CallEvent::Timer, now), [Action::SendRefresh]);
        let mut sent = 1;
        loop {
            let actions = call.handle(CallEvent::RefreshDone(RefreshOutcome::status(500)), now);
            if actions == [Action::SendBye] {
                break;
            }
            assert!(actions.is_empty());
            let due = call.deadline().expect("tried again");
            assert!(
                due < t0 + Duration::from_secs(120),
                "before the session ends"
            );
            now = due;
            assert_eq!(call.handle(CallEvent::Timer, now), [Action::SendRefresh]);
            sent += 1;
            assert!(sent < 20);
        }
        assert!(sent > 2, "retried: {sent}");
        assert!(call.session_expired());
        // A caller without the extension (a proxy asked for the timer)
        // keeps its call: we just stop refreshing.
        let (mut call, _, _) = start(0, t0);
        accept(&mut call, timer_request(120, None, false), 90, true, t0);
        call.handle(CallEvent::Ack, t0);
        let half = t0 + Duration::from_secs(60);
        call.handle(CallEvent::Timer, half);
        assert!(
            call.handle(CallEvent::RefreshDone(RefreshOutcome::status(500)), half)
                .is_empty()
        );
        assert_eq!(call.session_expires(), None);
        assert_eq!(call.deadline(), None);
    }

    #[test]
    fn refresh_outcomes_are_read_from_the_response() {
        let response: crate::sip::Response = "SIP/2.0 422 Session Interval Too Small\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMin-SE: 600\r\nContent-Length: 0\r\n\r\n"
            .try_into()
            .unwrap();
        assert_eq!(
            RefreshOutcome::of(&response),
            RefreshOutcome {
                status: 422,
                session_expires: None,
                min_se: Some(600)
            }
        );
        let response: crate::sip::Response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nx: 1800;refresher=uas\r\nContent-Length: 0\r\n\r\n"
            .try_into()
            .unwrap();
        assert_eq!(
            RefreshOutcome::of(&response).session_expires,
            Some((1800, Some(true)))
        );
    }

    #[test]
    fn a_caller_answering_491_for_ever_is_hung_up_when_the_session_ends() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let mut now = t0 + Duration::from_secs(60);
        assert_eq!(call.handle(CallEvent::Timer, now), [Action::SendRefresh]);
        for _ in 0..1000 {
            let actions = call.handle(CallEvent::RefreshDone(RefreshOutcome::status(491)), now);
            if actions == [Action::SendBye] {
                assert!(now < t0 + Duration::from_secs(120));
                assert!(call.session_expired());
                return;
            }
            now = call.deadline().expect("tried again");
            assert_eq!(call.handle(CallEvent::Timer, now), [Action::SendRefresh]);
        }
        panic!("still refreshing at {:?}", now - t0);
    }

    #[test]
    fn the_callers_2xx_cannot_shrink_the_interval_below_ours() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let half = t0 + Duration::from_secs(60);
        call.handle(CallEvent::Timer, half);
        let outcome = RefreshOutcome {
            status: 200,
            session_expires: Some((1, Some(true))),
            min_se: None,
        };
        call.handle(CallEvent::RefreshDone(outcome), half);
        assert_eq!(
            call.session_expires(),
            Some(("120;refresher=uas".to_string(), true))
        );
        assert_eq!(call.deadline(), Some(half + Duration::from_secs(60)));
    }

    #[test]
    fn an_answer_that_could_not_be_given_ends_the_call() {
        let t0 = Instant::now();
        let (mut call, _, actions) = start(0, t0);
        assert_eq!(actions, [Action::Answer]);
        call.session_request(timer_request(120, None, true), 90, true)
            .unwrap();
        // The room could not be joined: the INVITE got 503, not our 200.
        assert_eq!(call.handle(CallEvent::AnswerFailed, t0), [Action::Release]);
        assert_eq!(call.state(), CallState::Ended);
        assert_eq!(call.deadline(), None, "no BYE later on a refused call");
    }

    #[test]
    fn our_update_in_flight_survives_the_caller_turning_the_timer_off_and_on() {
        let t0 = Instant::now();
        let mut call = refreshing_call(t0);
        let half = t0 + Duration::from_secs(60);
        assert_eq!(call.handle(CallEvent::Timer, half), [Action::SendRefresh]);
        call.session_request(None, 90, true).unwrap();
        call.session_answered(200, half);
        accept(
            &mut call,
            timer_request(120, Some(true), true),
            90,
            true,
            half,
        );
        assert_eq!(call.deadline(), None, "our UPDATE is still out");
        call.handle(CallEvent::RefreshDone(RefreshOutcome::status(200)), half);
        assert_eq!(call.deadline(), Some(half + Duration::from_secs(60)));
    }
}
