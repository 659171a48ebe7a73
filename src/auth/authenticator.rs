//! Digest authentication of SIP requests against the user directory, with
//! nonce management and failure throttling. Shared by the registrar (401,
//! `Authorization`) and the proxy (407, `Proxy-Authorization`).
//!
//! An unknown user, a disabled user and a wrong password take the same path:
//! the same challenge, the same work (a digest is computed against a dummy
//! HA1), the same failure accounting.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tracing::warn;

use super::digest::{self, Algorithm, NonceManager, NonceStatus};
use super::throttle::{Throttle, ThrottleConfig};
use crate::directory::{Directory, User};
use crate::metrics::Metrics;

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long a nonce is accepted, in seconds; older ones get `stale=true`.
    pub nonce_lifetime_secs: u64,
    /// Used nonces remembered (with their last nonce count) to refuse
    /// replays; past it the oldest are forgotten and count as stale (about
    /// 40 bytes each).
    pub max_tracked_nonces: usize,
    /// Challenge algorithms, most preferred first (`MD5`, `SHA-256`).
    pub algorithms: Vec<String>,
    /// Throttling of authentication failures.
    pub throttle: ThrottleConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        // SHA-256 first (most preferred, RFC 8760), MD5 last: SIP.js and JsSIP
        // know only MD5 and keep only the last challenge header they parse.
        AuthConfig {
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 200_000,
            algorithms: vec!["SHA-256".into(), "MD5".into()],
            throttle: ThrottleConfig::default(),
        }
    }
}

/// Which header pair is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `WWW-Authenticate` / `Authorization` (401, registrar).
    Www,
    /// `Proxy-Authenticate` / `Proxy-Authorization` (407, proxy).
    Proxy,
}

/// The result of checking a request's credentials.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The credentials are valid for this user.
    Authenticated(Arc<User>),
    /// No usable credentials: send a challenge (`stale` when only the nonce expired).
    Challenge {
        /// `stale=true` in the challenge.
        stale: bool,
    },
    /// The source or the username is banned for too many failures: 403.
    Banned,
}

struct State {
    nonces: NonceManager,
    by_ip: Throttle<IpAddr>,
    by_user: Throttle<String>,
}

/// Checks digest credentials and issues challenges.
pub struct Authenticator {
    state: Mutex<State>,
    algorithms: Vec<Algorithm>,
    metrics: Arc<Metrics>,
}

/// Parses the configured algorithm names.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in names {
        let algorithm = Algorithm::parse(name)
            .ok_or_else(|| format!("auth.algorithms: unknown algorithm '{name}' (MD5, SHA-256)"))?;
        if !out.contains(&algorithm) {
            out.push(algorithm);
        }
    }
    if out.is_empty() {
        return Err("auth.algorithms: at least one algorithm is needed".into());
    }
    Ok(out)
}

impl Authenticator {
    /// An authenticator with a fresh random nonce secret.
    pub fn new(config: &AuthConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let algorithms = parse_algorithms(&config.algorithms)?;
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        Ok(Authenticator {
            state: Mutex::new(State {
                nonces: NonceManager::new(
                    secret,
                    config.nonce_lifetime_secs,
                    config.max_tracked_nonces,
                ),
                by_ip: Throttle::new(config.throttle.clone()),
                by_user: Throttle::new(config.throttle.clone()),
            }),
            algorithms,
            metrics,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Challenge header values (one per algorithm, in preference order).
    pub fn challenges(&self, realm: &str, stale: bool, now: u64) -> Vec<String> {
        let nonce = self.state().nonces.issue(now);
        self.algorithms
            .iter()
            .map(|alg| digest::challenge(realm, &nonce, *alg, stale, None))
            .collect()
    }

    /// Checks the credentials in `header_values` (all Authorization or
    /// Proxy-Authorization values of the request) for `realm`.
    ///
    /// `expected_user`, when given, is the only username allowed (a REGISTER may
    /// only bind the authenticated user's own address of record).
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        directory: &Directory,
        realm: &Arc<str>,
        method: &str,
        header_values: &[&str],
        expected_user: Option<&str>,
        source: IpAddr,
        now: u64,
    ) -> Outcome {
        let credentials = header_values
            .iter()
            .filter_map(|v| digest::parse_credentials(v).ok())
            .find(|c| c.realm.eq_ignore_ascii_case(realm));
        // Throttle keys: usernames are attacker-chosen, so bound them; an IPv6
        // client owns a whole /64, so count it as one source.
        let username = credentials
            .as_ref()
            .map(|c| c.username.chars().take(64).collect::<String>());
        let source = crate::source::source_key(source);
        {
            let mut state = self.state();
            let user_banned = username
                .as_ref()
                .is_some_and(|u| state.by_user.is_banned(u, now));
            if state.by_ip.is_banned(&source, now) || user_banned {
                self.metrics.auth_banned.inc();
                return Outcome::Banned;
            }
        }
        let Some(credentials) = credentials else {
            return Outcome::Challenge { stale: false };
        };
        let Some(algorithm) = credentials
            .hash_algorithm()
            .filter(|a| self.algorithms.contains(a))
        else {
            return self.failure(source, username, now);
        };
        let user = directory.user(realm, &credentials.username);
        let allowed = expected_user.is_none_or(|u| u == &*credentials.username);
        // Same work for unknown users: compare against a dummy HA1.
        let dummy;
        let expected_ha1 = match user.as_ref().and_then(|u| u.ha1(algorithm)) {
            Some(ha1) => ha1,
            None => {
                dummy = digest::ha1(algorithm, &credentials.username, realm, "\u{1}no-such-user");
                dummy.as_str()
            }
        };
        let response_ok = digest::verify(&credentials, method, expected_ha1);
        let qop_ok = credentials
            .qop
            .as_deref()
            .is_none_or(|q| q.eq_ignore_ascii_case("auth"));
        if !(response_ok && qop_ok && allowed && user.is_some()) {
            return self.failure(source, username, now);
        }
        let status = self
            .state()
            .nonces
            .check(&credentials.nonce, credentials.nc_value, now);
        match status {
            NonceStatus::Fresh => {
                let mut state = self.state();
                state.by_ip.record_success(&source);
                if let Some(u) = &username {
                    state.by_user.record_success(u);
                }
                drop(state);
                self.metrics.auth_successes.inc();
                match user {
                    Some(user) => Outcome::Authenticated(user),
                    None => Outcome::Challenge { stale: false },
                }
            }
            // A correct response on an old nonce or a reused nonce count (SIP.js
            // re-sends its last credentials on refresh and after reconnecting)
            // is not a guessing attempt: ask again with stale=true, uncounted.
            NonceStatus::Stale | NonceStatus::Replayed => Outcome::Challenge { stale: true },
            NonceStatus::Invalid => self.failure(source, username, now),
        }
    }

    fn failure(&self, source: IpAddr, username: Option<String>, now: u64) -> Outcome {
        self.metrics.auth_failures.inc();
        let mut state = self.state();
        if state.by_ip.record_failure(&source, now) {
            self.metrics.auth_bans.inc();
            warn!(%source, "authentication failures: source address banned");
        }
        if let Some(user) = username
            && state.by_user.record_failure(&user, now)
        {
            self.metrics.auth_bans.inc();
            warn!(username = %user, "authentication failures: username banned");
        }
        Outcome::Challenge { stale: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::demo_domains;

    fn setup() -> (Authenticator, Directory, Arc<str>) {
        setup_with(AuthConfig {
            nonce_lifetime_secs: 30,
            ..AuthConfig::default()
        })
    }

    fn setup_with(config: AuthConfig) -> (Authenticator, Directory, Arc<str>) {
        let directory = Directory::build(&demo_domains()).expect("demo users");
        let realm = directory.domain_of("switchboard.local").expect("realm");
        let auth = Authenticator::new(&config, Arc::new(Metrics::default())).unwrap();
        (auth, directory, realm)
    }

    fn credentials(realm: &str, nonce: &str, password: &str, nc: u32) -> String {
        let uri = "sip:switchboard.local";
        let ha1 = digest::ha1(Algorithm::Md5, "1001", realm, password);
        let nc = format!("{nc:08x}");
        let response = digest::response(
            Algorithm::Md5,
            &ha1,
            "REGISTER",
            uri,
            nonce,
            &nc,
            "cn",
            Some("auth"),
        );
        format!(
            "Digest username=\"1001\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", qop=auth, nc={nc}, cnonce=\"cn\", algorithm=MD5"
        )
    }

    fn nonce_of(challenge: &str) -> String {
        challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_used_nonce_table_is_bounded_by_its_setting() {
        let (auth, directory, realm) = setup_with(AuthConfig {
            max_tracked_nonces: 1,
            ..AuthConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let check = |nonce: &str, nc: u32, now: u64| {
            let creds = credentials(&realm, nonce, "demo-1001", nc);
            auth.check(
                &directory,
                &realm,
                "REGISTER",
                &[&creds],
                Some("1001"),
                ip,
                now,
            )
        };
        let first = nonce_of(&auth.challenges(&realm, false, 1_000)[1]);
        let second = nonce_of(&auth.challenges(&realm, false, 1_001)[1]);
        assert!(matches!(check(&first, 1, 1_002), Outcome::Authenticated(_)));
        // A second nonce used: the table holds one, so the first is forgotten
        // and its next use is stale rather than trusted.
        assert!(matches!(
            check(&second, 1, 1_003),
            Outcome::Authenticated(_)
        ));
        assert!(matches!(
            check(&first, 2, 1_004),
            Outcome::Challenge { stale: true }
        ));
    }

    #[test]
    fn valid_stale_replayed_and_wrong() {
        let (auth, directory, realm) = setup();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let challenges = auth.challenges(&realm, false, 1_000);
        assert_eq!(challenges.len(), 2, "MD5 and SHA-256 offered");
        assert!(
            challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5")
        );
        let nonce = nonce_of(&challenges[1]);
        let good = credentials(&realm, &nonce, "demo-1001", 1);
        assert!(matches!(
            auth.check(
                &directory,
                &realm,
                "REGISTER",
                &[&good],
                Some("1001"),
                ip,
                1_001
            ),
            Outcome::Authenticated(_)
        ));
        // Same nc again: a replay; correct credentials, so a stale=true challenge, not a failure.
        assert!(matches!(
            auth.check(
                &directory,
                &realm,
                "REGISTER",
                &[&good],
                Some("1001"),
                ip,
                1_002
            ),
            Outcome::Challenge { stale: true }
        ));
        // Correct response on an expired nonce: stale=true.
        let later = credentials(&realm, &nonce, "demo-1001", 2);
        assert!(matches!(
            auth.check(
                &directory,
                &realm,
                "REGISTER",
                &[&later],
                Some("1001"),
                ip,
                1_100
            ),
            Outcome::Challenge { stale: true }
        ));
        // Wrong password on a fresh nonce: plain challenge, counted as a failure.
        let nonce = nonce_of(&auth.challenges(&realm, false, 2_000)[0]);
        let wrong = credentials(&realm, &nonce, "nope", 1);
        assert!(matches!(
            auth.check(
                &directory,
                &realm,
                "REGISTER",
                &[&wrong],
                Some("1001"),
                ip,
                2_001
            ),
            Outcome::Challenge { stale: false }
        ));
        // Registering another user's AOR with valid credentials is refused too.
        let nonce = nonce_of(&auth.challenges(&realm, false, 3_000)[0]);
        let other = credentials(&realm, &nonce, "demo-1001", 1);
        assert!(matches!(
            auth.check(
                &directory,
                &realm,
                "REGISTER",
                &[&other],
                Some("1002"),
                ip,
                3_001
            ),
            Outcome::Challenge { .. }
        ));
    }
}
