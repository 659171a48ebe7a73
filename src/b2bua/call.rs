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

use std::time::{Duration, Instant};

use crate::media::leg::LegClosed;
use crate::media::sdp::{
    self, Capabilities, LocalMedia, Negotiated, SessionDescription, SessionOrigin,
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
    /// The INVITE transaction ended without an ACK.
    AckTimeout,
    /// BYE from the caller.
    Bye,
    /// re-INVITE with this body (an offer; empty: none).
    ReInvite(&'a [u8]),
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
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send 180 Ringing on the INVITE.
    Ring,
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
        let mut call = UasCall {
            state: CallState::Ringing,
            deadline: Some(now + answer_delay),
            caps,
            local,
            origin,
            negotiated,
            webrtc: false,
        };
        let mut actions = Vec::new();
        if answer_delay.is_zero() {
            actions.extend(call.handle(CallEvent::Timer, now));
        } else {
            actions.push(Action::Ring);
        }
        Ok((call, answer.to_string(), actions))
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
        let mut call = UasCall {
            state: CallState::Ringing,
            deadline: Some(now + answer_delay),
            caps,
            local,
            origin: SessionOrigin::new(),
            negotiated,
            webrtc: true,
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

    /// The current state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// What was negotiated last.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// When [`CallEvent::Timer`] is due next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
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
        match (self.state, event) {
            (Ended, _) => Vec::new(),
            (Ringing, CallEvent::Timer) if self.deadline.is_some_and(|d| now >= d) => {
                self.state = AwaitingAck;
                self.deadline = Some(now + 64 * T1);
                vec![Action::Answer]
            }
            (Ringing, CallEvent::Answer) => {
                self.state = AwaitingAck;
                self.deadline = Some(now + 64 * T1);
                vec![Action::Answer]
            }
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
            (AwaitingAck, CallEvent::Ack) => {
                self.state = Confirmed;
                self.deadline = None;
                Vec::new()
            }
            (AwaitingAck, CallEvent::AckTimeout) => self.end_with_bye(),
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
            (AwaitingAck, CallEvent::ReInvite(_)) => vec![Action::Reply(491, None)],
            (AwaitingAck | Confirmed, CallEvent::Info(content_type, body)) => {
                match parse_dtmf_info(content_type, body) {
                    Some((digit, ms)) => vec![Action::Reply(200, None), Action::Dtmf(digit, ms)],
                    None => vec![Action::Reply(415, None)],
                }
            }
            (AwaitingAck | Confirmed, CallEvent::Options) => vec![Action::Reply(200, None)],
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
            // An offerless re-INVITE would need our offer in the 200 and the
            // answer in the ACK: not supported yet.
            return vec![Action::Reply(488, None)];
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
        let caps = Capabilities {
            codecs: vec![self.negotiated.codec.kind],
            ..self.caps.clone()
        };
        match sdp::answer(&offer, &caps, self.local, &mut self.origin) {
            Ok((answer, neg)) if neg.codec.payload_type == self.negotiated.codec.payload_type => {
                self.negotiated = neg.clone();
                vec![
                    Action::Reply(200, Some(answer.to_string())),
                    Action::Renegotiate(neg),
                ]
            }
            _ => vec![Action::Reply(488, None)],
        }
    }
}

/// The URI of a Refer-To value (`"name" <uri>`, `<uri>;params` or a bare
/// URI), with its `?headers`.
fn refer_to_uri(value: &str) -> &str {
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
        // A codec change is refused: the participant keeps its codec.
        let pcma_only = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101");
        assert_eq!(
            call.handle(CallEvent::ReInvite(pcma_only.as_bytes()), t0),
            [Action::Reply(488, None)]
        );
        assert_eq!(
            call.handle(CallEvent::ReInvite(b""), t0),
            [Action::Reply(488, None)]
        );
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
}
