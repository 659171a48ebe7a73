//! TURN long-term credentials (RFC 8489 §9.2): static users from the
//! configuration and the TURN REST API scheme (username `expiry:user`,
//! password `base64(HMAC-SHA1(secret, username))`), plus stateless nonces.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::stun::long_term_key;

/// A credential minted for `/api/ice-servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredential {
    /// `expiry:user`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Seconds the credential stays valid.
    pub ttl: u64,
}

/// Why a username/key could not be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No such static user, and not a REST username.
    UnknownUser,
    /// A REST username whose expiry has passed.
    Expired,
}

/// Who may allocate: static users and the REST shared secret.
pub struct Credentials {
    realm: String,
    /// username -> long-term key.
    static_keys: HashMap<String, [u8; 16]>,
    rest_secret: Option<Vec<u8>>,
    rest_ttl: u64,
    nonce_secret: [u8; 32],
    nonce_lifetime: u64,
}

impl Credentials {
    /// Credentials for `realm` with static users (name, password) and an
    /// optional REST secret.
    pub fn new(
        realm: &str,
        users: &[(String, String)],
        rest_secret: Option<&[u8]>,
        rest_ttl: u64,
        nonce_lifetime: u64,
    ) -> Self {
        let mut nonce_secret = [0u8; 32];
        rand::fill(&mut nonce_secret);
        Credentials {
            realm: realm.to_string(),
            static_keys: users
                .iter()
                .map(|(u, p)| (u.clone(), long_term_key(u, realm, p)))
                .collect(),
            rest_secret: rest_secret.map(<[u8]>::to_vec),
            rest_ttl,
            nonce_secret,
            nonce_lifetime,
        }
    }

    /// The realm sent in challenges.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The REST password for `username`.
    fn rest_password(secret: &[u8], username: &str) -> String {
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Mints a REST credential for `user`, valid `ttl` seconds from `now`
    /// (UNIX seconds). `None` when no REST secret is configured.
    pub fn mint(&self, user: &str, now: u64) -> Option<RestCredential> {
        let secret = self.rest_secret.as_ref()?;
        let username = format!("{}:{user}", now + self.rest_ttl);
        let password = Self::rest_password(secret, &username);
        Some(RestCredential {
            username,
            password,
            ttl: self.rest_ttl,
        })
    }

    /// The long-term key for `username` at `now` (UNIX seconds), and the
    /// identity quotas are counted against (the user part of a REST name).
    pub fn key(&self, username: &str, now: u64) -> Result<([u8; 16], String), KeyRefusal> {
        if let Some(key) = self.static_keys.get(username) {
            return Ok((*key, username.to_string()));
        }
        let secret = self.rest_secret.as_ref().ok_or(KeyRefusal::UnknownUser)?;
        // coturn's format: the timestamp first, then the separator and the user.
        let (expiry, user) = match username.split_once(':') {
            Some((expiry, user)) => (expiry, user),
            None => (username, ""),
        };
        let expiry: u64 = expiry.parse().map_err(|_| KeyRefusal::UnknownUser)?;
        if expiry < now {
            return Err(KeyRefusal::Expired);
        }
        let password = Self::rest_password(secret, username);
        let identity = if user.is_empty() { username } else { user };
        Ok((
            long_term_key(username, &self.realm, &password),
            format!("rest:{identity}"),
        ))
    }

    fn nonce_mac(&self, issued: u64, source: IpAddr) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.nonce_secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&issued.to_be_bytes());
        match source {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.finalize().into_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh nonce bound to the client's address and the time.
    pub fn nonce(&self, source: IpAddr, now: u64) -> String {
        format!("{now:016x}{}", self.nonce_mac(now, source))
    }

    /// Whether `nonce` is ours, for `source`, and not older than the nonce lifetime.
    pub fn nonce_fresh(&self, nonce: &str, source: IpAddr, now: u64) -> bool {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return false;
        }
        let Ok(issued) = u64::from_str_radix(&nonce[..16], 16) else {
            return false;
        };
        let expected = self.nonce_mac(issued, source);
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), &nonce.as_bytes()[16..]).into();
        same && issued <= now && now - issued < self.nonce_lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_match_coturn_scheme_and_expire() {
        let c = Credentials::new("r", &[], Some(b"secret"), 60, 600);
        let minted = c.mint("1001", 1_000).unwrap();
        assert_eq!(minted.username, "1060:1001");
        // base64(HMAC-SHA1("secret", "1060:1001")), computed independently with openssl.
        assert_eq!(
            minted.password,
            Credentials::rest_password(b"secret", "1060:1001")
        );
        let (key, identity) = c.key(&minted.username, 1_059).unwrap();
        assert_eq!(key, long_term_key("1060:1001", "r", &minted.password));
        assert_eq!(identity, "rest:1001");
        assert_eq!(c.key(&minted.username, 1_061), Err(KeyRefusal::Expired));
        assert_eq!(c.key("nobody", 0), Err(KeyRefusal::UnknownUser));
    }

    #[test]
    fn known_rest_password() {
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(
            Credentials::rest_password(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn nonces_are_bound_to_source_and_time() {
        let c = Credentials::new("r", &[("u".into(), "p".into())], None, 60, 600);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let n = c.nonce(a, 100);
        assert!(c.nonce_fresh(&n, a, 100));
        assert!(c.nonce_fresh(&n, a, 699));
        assert!(!c.nonce_fresh(&n, a, 700));
        assert!(!c.nonce_fresh(&n, "192.0.2.2".parse().unwrap(), 100));
        assert!(!c.nonce_fresh("garbage", a, 100));
        assert!(c.key("u", 0).is_ok());
    }
}
