//! Outbound registration to a trunk as a sans-IO state machine: it decides
//! when to send a REGISTER, with which CSeq, Expires and credentials, and
//! what a response means; the driver (`super::driver`) builds and sends
//! the messages and feeds back replies and the clock.
//!
//! Behaviour (RFC 3261 §10.2):
//! - one Call-ID for the life of the registration, CSeq increasing;
//! - a 401/407 is answered once with Digest; a second challenge to an
//!   answered request (unless `stale=true`) is a failure;
//! - refreshes reuse the last challenge (nonce count +1) so a registrar that
//!   accepts it needs no extra round trip;
//! - refresh at 80 % of the granted expiry or 30 s before it, whichever is
//!   earlier, but never before half of it;
//! - 423 Interval Too Brief: ask again with the registrar's Min-Expires;
//! - any other failure or a timeout: retry after an exponential backoff
//!   (5 s, 10 s, 20 s ... at most 300 s);
//! - [`Registration::stop`] sends Expires: 0 when a binding may exist.

use std::time::{Duration, Instant};

use crate::auth::client::Challenge;

/// First retry delay after a failure.
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// 423 answers followed in a row before giving up.
const MAX_BRIEF_RETRIES: u32 = 3;
/// Largest Min-Expires we accept from a registrar (seven days).
const MAX_EXPIRES: u32 = 7 * 86_400;

/// What the registration needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationParams {
    /// Request-URI (`sip:domain`), also the digest `uri`.
    pub request_uri: String,
    /// Authentication user name.
    pub auth_username: String,
    /// Password.
    pub password: String,
    /// Only answer challenges of this realm.
    pub realm: Option<String>,
    /// Requested expiry, seconds.
    pub expires: u32,
}

/// Which header carries our credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthHeader {
    /// `Authorization` (after a 401).
    Authorization,
    /// `Proxy-Authorization` (after a 407).
    ProxyAuthorization,
}

impl AuthHeader {
    /// The header name.
    pub fn name(self) -> &'static str {
        match self {
            AuthHeader::Authorization => "Authorization",
            AuthHeader::ProxyAuthorization => "Proxy-Authorization",
        }
    }
}

/// One REGISTER to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Its CSeq number.
    pub cseq: u32,
    /// The Expires to ask for (0: remove the binding).
    pub expires: u32,
    /// Credentials, when we have a challenge to answer.
    pub authorization: Option<(AuthHeader, String)>,
}

/// What a final response to a REGISTER said (the parts we use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `WWW-Authenticate` values.
    pub www_authenticate: Vec<String>,
    /// `Proxy-Authenticate` values.
    pub proxy_authenticate: Vec<String>,
    /// The expiry granted to our Contact (its `expires` parameter, else the
    /// `Expires` header).
    pub expires: Option<u32>,
    /// `Min-Expires` (with 423).
    pub min_expires: Option<u32>,
}

/// What changed after a reply or a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Registered until this instant for `expires` seconds.
    Registered {
        /// When the binding expires.
        until: Instant,
        /// Seconds granted.
        expires: u32,
    },
    /// The attempt failed; the next one is in `retry_in`.
    Failed {
        /// What went wrong.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// The binding was removed (or removal was attempted and has ended).
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `next` (first attempt, refresh or retry).
    Waiting,
    /// A REGISTER is out.
    InFlight { unregister: bool },
    /// Done (after [`Registration::stop`]).
    Stopped,
}

/// The registration of one trunk.
#[derive(Debug)]
pub struct Registration {
    params: RegistrationParams,
    cnonce: String,
    cseq: u32,
    expires: u32,
    challenge: Option<(AuthHeader, Challenge)>,
    nc: u32,
    /// The challenge arrived in reply to the last request (not reused).
    fresh_challenge: bool,
    /// The request in flight answers a fresh challenge.
    answered: bool,
    failures: u32,
    brief_retries: u32,
    phase: Phase,
    next: Instant,
    registered_until: Option<Instant>,
    last_error: Option<String>,
}

/// Delay before attempt number `failures + 1` after `failures` failures.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1u32 << exponent).min(RETRY_MAX)
}

/// When to refresh a registration granted for `expires` seconds: at 80 %
/// or 30 s before expiry, whichever is earlier, but not before half of it
/// (and not sooner than one second).
pub fn refresh_after(expires: u32) -> Duration {
    let granted = Duration::from_secs(u64::from(expires));
    let eighty = granted.mul_f64(0.8);
    let early = granted.saturating_sub(Duration::from_secs(30));
    eighty
        .min(early)
        .max(granted / 2)
        .max(Duration::from_secs(1))
}

impl Registration {
    /// A registration whose first REGISTER is due at `now`. `cnonce` is our
    /// client nonce for Digest answers (random, from the driver).
    pub fn new(params: RegistrationParams, cnonce: String, now: Instant) -> Registration {
        Registration {
            expires: params.expires,
            params,
            cnonce,
            cseq: 0,
            challenge: None,
            nc: 0,
            fresh_challenge: false,
            answered: false,
            failures: 0,
            brief_retries: 0,
            phase: Phase::Waiting,
            next: now,
            registered_until: None,
            last_error: None,
        }
    }

    /// When [`poll`](Self::poll) has something to do (`None`: waiting for a
    /// reply, or stopped).
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting => Some(self.next),
            Phase::InFlight { .. } | Phase::Stopped => None,
        }
    }

    /// The REGISTER due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Attempt> {
        if self.phase != Phase::Waiting || now < self.next {
            return None;
        }
        self.phase = Phase::InFlight { unregister: false };
        Some(self.attempt(self.expires))
    }

    fn attempt(&mut self, expires: u32) -> Attempt {
        self.cseq += 1;
        self.answered = std::mem::take(&mut self.fresh_challenge);
        let authorization = self.challenge.as_ref().map(|(header, challenge)| {
            self.nc += 1;
            (
                *header,
                challenge.authorization(
                    &self.params.auth_username,
                    &self.params.password,
                    "REGISTER",
                    &self.params.request_uri,
                    self.nc,
                    &self.cnonce,
                ),
            )
        });
        Attempt {
            cseq: self.cseq,
            expires,
            authorization,
        }
    }

    /// Whether a reply to `cseq` is the one we are waiting for.
    pub fn expects(&self, cseq: u32) -> bool {
        matches!(self.phase, Phase::InFlight { .. }) && cseq == self.cseq
    }

    /// A final response to the REGISTER with `cseq` (others are ignored).
    pub fn on_reply(&mut self, cseq: u32, reply: &Reply, now: Instant) -> Option<Event> {
        let Phase::InFlight { unregister } = self.phase else {
            return None;
        };
        if cseq != self.cseq {
            return None;
        }
        match reply.status {
            200..=299 if unregister => Some(self.stopped()),
            200..=299 => {
                let granted = reply.expires.unwrap_or(self.expires);
                if granted == 0 {
                    return Some(self.fail("the registrar granted no expiry".into(), now));
                }
                self.failures = 0;
                self.brief_retries = 0;
                self.last_error = None;
                let until = now + Duration::from_secs(u64::from(granted));
                self.registered_until = Some(until);
                self.next = now + refresh_after(granted);
                self.phase = Phase::Waiting;
                Some(Event::Registered {
                    until,
                    expires: granted,
                })
            }
            401 | 407 => {
                let (header, values) = if reply.status == 401 {
                    (AuthHeader::Authorization, &reply.www_authenticate)
                } else {
                    (AuthHeader::ProxyAuthorization, &reply.proxy_authenticate)
                };
                let Some(challenge) = Challenge::best(values.iter().map(String::as_str)) else {
                    return Some(self.fail(
                        format!("{} without a Digest challenge we can answer", reply.status),
                        now,
                    ));
                };
                if let Some(realm) = &self.params.realm
                    && *realm != challenge.realm
                {
                    return Some(self.fail(
                        format!(
                            "challenged for realm '{}', but register.realm is '{realm}'",
                            challenge.realm
                        ),
                        now,
                    ));
                }
                if self.answered && !challenge.stale {
                    self.challenge = None;
                    return Some(self.fail(
                        format!(
                            "authentication failed ({}): check the trunk's username and password",
                            reply.status
                        ),
                        now,
                    ));
                }
                self.challenge = Some((header, challenge));
                self.nc = 0;
                self.fresh_challenge = true;
                self.retry_now(unregister, now)
            }
            423 => match reply.min_expires {
                Some(min)
                    if min > self.expires
                        && min <= MAX_EXPIRES
                        && self.brief_retries < MAX_BRIEF_RETRIES
                        && !unregister =>
                {
                    self.brief_retries += 1;
                    self.expires = min;
                    self.retry_now(unregister, now)
                }
                _ => Some(self.fail(
                    "423 Interval Too Brief without a usable Min-Expires".into(),
                    now,
                )),
            },
            status => Some(self.fail(format!("the registrar answered {status}"), now)),
        }
    }

    /// The REGISTER with `cseq` got no final response (transaction timeout
    /// or a transport error, described by `reason`).
    pub fn on_failure(&mut self, cseq: u32, reason: &str, now: Instant) -> Option<Event> {
        if !self.expects(cseq) {
            return None;
        }
        Some(self.fail(reason.to_string(), now))
    }

    /// Stops the registration: the un-REGISTER (Expires: 0) to send when a
    /// binding may exist; `None` when there is nothing to remove.
    pub fn stop(&mut self, _now: Instant) -> Option<Attempt> {
        let bound = self.registered_until.is_some()
            || matches!(self.phase, Phase::InFlight { unregister: false });
        if self.phase == Phase::Stopped
            || matches!(self.phase, Phase::InFlight { unregister: true })
        {
            return None;
        }
        if !bound {
            self.phase = Phase::Stopped;
            return None;
        }
        self.phase = Phase::InFlight { unregister: true };
        self.fresh_challenge = false;
        Some(self.attempt(0))
    }

    /// The un-REGISTER to send after [`on_reply`](Self::on_reply) asked for
    /// a retry while stopping (a challenge), if any.
    pub fn poll_stopping(&mut self) -> Option<Attempt> {
        if self.phase == (Phase::InFlight { unregister: true }) && self.fresh_challenge {
            return Some(self.attempt(0));
        }
        None
    }

    /// Whether [`stop`](Self::stop) has finished.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// Whether a binding is in force at `now`.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|until| until > now)
    }

    /// When the binding expires.
    pub fn registered_until(&self) -> Option<Instant> {
        self.registered_until
    }

    /// The last failure, cleared by a success.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The CSeq of the last REGISTER.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// The Expires we ask for now (raised by 423).
    pub fn requested_expires(&self) -> u32 {
        self.expires
    }

    fn retry_now(&mut self, unregister: bool, now: Instant) -> Option<Event> {
        if unregister {
            // The caller sends the next one through `poll_stopping`.
            return None;
        }
        self.phase = Phase::Waiting;
        self.next = now;
        None
    }

    fn stopped(&mut self) -> Event {
        self.phase = Phase::Stopped;
        self.registered_until = None;
        Event::Unregistered
    }

    fn fail(&mut self, reason: String, now: Instant) -> Event {
        if matches!(self.phase, Phase::InFlight { unregister: true }) {
            self.last_error = Some(reason);
            return self.stopped();
        }
        self.failures += 1;
        self.brief_retries = 0;
        self.challenge = None;
        self.fresh_challenge = false;
        self.registered_until = None;
        let retry_in = backoff(self.failures);
        self.next = now + retry_in;
        self.phase = Phase::Waiting;
        self.last_error = Some(reason.clone());
        Event::Failed { reason, retry_in }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::digest::{Algorithm, ha1, parse_credentials, verify};

    fn params() -> RegistrationParams {
        RegistrationParams {
            request_uri: "sip:carrier.example".into(),
            auth_username: "alice".into(),
            password: "s3cret".into(),
            realm: None,
            expires: 600,
        }
    }

    fn challenge(nonce: &str) -> Reply {
        Reply {
            status: 401,
            www_authenticate: vec![format!(
                "Digest realm=\"carrier.example\", nonce=\"{nonce}\", qop=\"auth\""
            )],
            ..Reply::default()
        }
    }

    fn ok(expires: u32) -> Reply {
        Reply {
            status: 200,
            expires: Some(expires),
            ..Reply::default()
        }
    }

    fn valid(attempt: &Attempt) -> bool {
        let (header, value) = attempt.authorization.as_ref().unwrap();
        assert_eq!(*header, AuthHeader::Authorization);
        let creds = parse_credentials(value).unwrap();
        verify(
            &creds,
            "REGISTER",
            &ha1(Algorithm::Md5, "alice", "carrier.example", "s3cret"),
        )
    }

    #[test]
    fn challenge_answered_then_refreshed_with_the_same_nonce() {
        let t0 = Instant::now();
        let mut r = Registration::new(params(), "c0ffee".into(), t0);
        let first = r.poll(t0).unwrap();
        assert_eq!((first.cseq, first.expires), (1, 600));
        assert!(first.authorization.is_none());
        assert!(r.poll(t0).is_none(), "one REGISTER at a time");
        assert_eq!(r.on_reply(1, &challenge("n1"), t0), None);
        let second = r.poll(t0).unwrap();
        assert_eq!(second.cseq, 2);
        assert!(valid(&second));
        // A late reply to the first one is ignored.
        assert_eq!(r.on_reply(1, &ok(600), t0), None);
        let event = r.on_reply(2, &ok(120), t0).unwrap();
        assert_eq!(
            event,
            Event::Registered {
                until: t0 + Duration::from_secs(120),
                expires: 120
            }
        );
        assert!(r.is_registered(t0));
        // 120 s granted: refresh at 90 s (30 s before), not at 96 s (80 %).
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(90)));
        assert!(r.poll(t0 + Duration::from_secs(89)).is_none());
        let refresh = r.poll(t0 + Duration::from_secs(90)).unwrap();
        assert_eq!(refresh.cseq, 3);
        assert!(valid(&refresh));
        assert!(refresh.authorization.unwrap().1.contains("nc=00000002"));
    }

    #[test]
    fn refresh_timing() {
        assert_eq!(refresh_after(3600), Duration::from_secs(2880));
        assert_eq!(refresh_after(600), Duration::from_secs(480));
        assert_eq!(refresh_after(120), Duration::from_secs(90));
        assert_eq!(refresh_after(60), Duration::from_secs(30));
        assert_eq!(refresh_after(4), Duration::from_secs(2));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
    }

    #[test]
    fn wrong_password_fails_and_backs_off_exponentially() {
        let t0 = Instant::now();
        let mut r = Registration::new(params(), "c".into(), t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let a = r.poll(now).unwrap();
            r.on_reply(a.cseq, &challenge("n"), now);
            let b = r.poll(now).unwrap();
            match r.on_reply(b.cseq, &challenge("n2"), now).unwrap() {
                Event::Failed { reason, retry_in } => {
                    assert!(reason.contains("authentication failed"), "{reason}");
                    delays.push(retry_in.as_secs());
                    now += retry_in;
                }
                other => panic!("{other:?}"),
            }
            assert!(!r.is_registered(now));
        }
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        // A success resets the backoff.
        let a = r.poll(now).unwrap();
        assert!(matches!(
            r.on_reply(a.cseq, &ok(600), now),
            Some(Event::Registered { .. })
        ));
        let a = r.poll(now + Duration::from_secs(480)).unwrap();
        let Some(Event::Failed { retry_in, .. }) = r.on_failure(a.cseq, "timeout", now) else {
            panic!()
        };
        assert_eq!(retry_in, RETRY_BASE);
        assert_eq!(r.last_error(), Some("timeout"));
    }

    #[test]
    fn stale_nonce_is_answered_again() {
        let t0 = Instant::now();
        let mut r = Registration::new(params(), "c".into(), t0);
        let a = r.poll(t0).unwrap();
        r.on_reply(a.cseq, &challenge("n1"), t0);
        let b = r.poll(t0).unwrap();
        let mut stale = challenge("n2");
        stale.www_authenticate[0].push_str(", stale=true");
        assert_eq!(r.on_reply(b.cseq, &stale, t0), None);
        let c = r.poll(t0).unwrap();
        assert!(c.authorization.unwrap().1.contains("nonce=\"n2\""));
    }

    #[test]
    fn interval_too_brief_retries_with_min_expires() {
        let t0 = Instant::now();
        let mut p = params();
        p.expires = 60;
        let mut r = Registration::new(p, "c".into(), t0);
        let a = r.poll(t0).unwrap();
        let brief = Reply {
            status: 423,
            min_expires: Some(300),
            ..Reply::default()
        };
        assert_eq!(r.on_reply(a.cseq, &brief, t0), None);
        let b = r.poll(t0).unwrap();
        assert_eq!((b.cseq, b.expires), (2, 300));
        // Without Min-Expires it is a failure.
        let no_min = Reply {
            status: 423,
            ..Reply::default()
        };
        assert!(matches!(
            r.on_reply(b.cseq, &no_min, t0),
            Some(Event::Failed { .. })
        ));
        // The registrar may grant less than asked, or omit the expiry.
        let c = r.poll(t0 + RETRY_BASE).unwrap();
        let Some(Event::Registered { expires, .. }) = r.on_reply(
            c.cseq,
            &Reply {
                status: 200,
                ..Reply::default()
            },
            t0,
        ) else {
            panic!()
        };
        assert_eq!(expires, 300);
    }

    #[test]
    fn realm_mismatch_and_server_errors_fail() {
        let t0 = Instant::now();
        let mut p = params();
        p.realm = Some("other.example".into());
        let mut r = Registration::new(p, "c".into(), t0);
        let a = r.poll(t0).unwrap();
        let Some(Event::Failed { reason, .. }) = r.on_reply(a.cseq, &challenge("n"), t0) else {
            panic!()
        };
        assert!(reason.contains("realm"), "{reason}");
        let b = r.poll(t0 + RETRY_BASE).unwrap();
        let Some(Event::Failed { reason, retry_in }) = r.on_reply(
            b.cseq,
            &Reply {
                status: 503,
                ..Reply::default()
            },
            t0,
        ) else {
            panic!()
        };
        assert!(reason.contains("503"));
        assert_eq!(retry_in, Duration::from_secs(10));
    }

    #[test]
    fn stop_unregisters_only_when_bound() {
        let t0 = Instant::now();
        let mut r = Registration::new(params(), "c".into(), t0);
        assert_eq!(r.stop(t0), None);
        assert!(r.is_stopped());

        let mut r = Registration::new(params(), "c".into(), t0);
        let a = r.poll(t0).unwrap();
        r.on_reply(a.cseq, &challenge("n"), t0);
        let b = r.poll(t0).unwrap();
        r.on_reply(b.cseq, &ok(600), t0);
        let bye = r.stop(t0).unwrap();
        assert_eq!((bye.cseq, bye.expires), (3, 0));
        assert!(bye.authorization.is_some(), "reuses the challenge");
        assert!(r.poll(t0 + Duration::from_secs(1000)).is_none());
        // Challenged again: answered once.
        assert_eq!(r.on_reply(3, &challenge("n9"), t0), None);
        let again = r.poll_stopping().unwrap();
        assert_eq!((again.cseq, again.expires), (4, 0));
        assert!(r.poll_stopping().is_none());
        assert_eq!(r.on_reply(4, &ok(0), t0), Some(Event::Unregistered));
        assert!(r.is_stopped());
        assert!(!r.is_registered(t0));
    }
}
