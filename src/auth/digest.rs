//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! Owns: parsing `Authorization` / `Proxy-Authorization` header values,
//! building `WWW-Authenticate` / `Proxy-Authenticate` challenges, computing
//! and verifying `qop=auth` (and RFC 2069, no-qop) responses for MD5 and
//! SHA-256, and issuing/checking stateless, MAC-protected nonces with
//! nonce-count replay protection ([`NonceManager`]).
//!
//! Recommended order for a request carrying credentials:
//! 1. [`parse_credentials`] (failure: 400 or a fresh challenge);
//! 2. check `realm` and that `uri` matches the Request-URI (caller's job);
//! 3. [`verify`] against the stored HA1 for `(username, realm, algorithm)`;
//!    a wrong response is an authentication failure;
//! 4. only then [`NonceManager::check`]: `Stale` → re-challenge with
//!    `stale=true`; `Invalid` / `Replayed` → failure; `Fresh` → accept.
//!
//! Verifying before checking the nonce means only holders of the password can
//! consume nonce counts or fill the tracking table, and `stale=true` is only
//! sent for a correct response (RFC 7616 §3.3).

use std::borrow::Cow;
use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Longest accepted header value, in bytes.
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Longest accepted parameter value (raw, before unescaping), in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// How far in the future (seconds) a nonce timestamp may be before it is stale.
const FUTURE_SKEW_SECS: u64 = 5;
/// Length of an issued nonce in hex characters (32 bytes).
const NONCE_HEX_LEN: usize = 64;

/// Why an `Authorization` header value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The scheme is not `Digest` (or the value is empty).
    #[error("authorization scheme is not Digest")]
    NotDigest,
    /// The parameter list is syntactically invalid.
    #[error("malformed Digest credentials: {0}")]
    Malformed(&'static str),
    /// A required parameter is absent.
    #[error("missing Digest parameter `{0}`")]
    MissingParam(&'static str),
    /// A parameter appears more than once.
    #[error("duplicate Digest parameter `{0}`")]
    DuplicateParam(&'static str),
    /// The header or one of its values exceeds the length limits.
    #[error("Digest credentials too long")]
    TooLong,
    /// `userhash=true` (RFC 7616 §3.4.4) is not supported.
    #[error("Digest userhash is not supported")]
    UnsupportedUserhash,
    /// `nc` is not 1–8 hexadecimal digits.
    #[error("invalid Digest nonce count")]
    InvalidNonceCount,
}

/// Digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `MD5` (RFC 2617); the default when `algorithm` is absent.
    #[default]
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token used on the wire: `"MD5"` or `"SHA-256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm` value, case-insensitively. A missing parameter
    /// means MD5: use [`Algorithm::default`]. `-sess` variants are rejected.
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if value.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    /// Length of this algorithm's digests in lower-case hex (32 or 64).
    pub fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 => 64,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A digest in lower-case hex, on the stack.
struct HexDigest {
    buf: [u8; 64],
    len: usize,
}

impl HexDigest {
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut buf = [0u8; 64];
        let len = (bytes.len() * 2).min(64);
        for (i, b) in bytes.iter().take(32).enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        Self { buf, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn to_hex_string(&self) -> String {
        self.as_bytes().iter().map(|&b| char::from(b)).collect()
    }
}

/// Incremental hasher over the supported algorithms.
enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Md5 => Self::Md5(Md5::new()),
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => Digest::update(h, data),
            Self::Sha256(h) => Digest::update(h, data),
        }
    }

    /// Feeds `parts` separated by `:`.
    fn update_joined(&mut self, parts: &[&[u8]]) {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.update(b":");
            }
            self.update(part);
        }
    }

    fn finish(self) -> HexDigest {
        match self {
            Self::Md5(h) => HexDigest::from_bytes(&h.finalize()),
            Self::Sha256(h) => HexDigest::from_bytes(&h.finalize()),
        }
    }
}

fn ha1_digest(alg: Algorithm, username: &str, realm: &str, password: &str) -> HexDigest {
    let mut h = Hasher::new(alg);
    h.update_joined(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]);
    h.finish()
}

#[allow(clippy::too_many_arguments)]
fn response_digest(
    alg: Algorithm,
    ha1_hex: &[u8],
    method: &str,
    digest_uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: Option<&str>,
) -> HexDigest {
    let mut h2 = Hasher::new(alg);
    h2.update_joined(&[method.as_bytes(), digest_uri.as_bytes()]);
    let ha2 = h2.finish();
    let mut h = Hasher::new(alg);
    match qop {
        Some(qop) => h.update_joined(&[
            ha1_hex,
            nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            qop.as_bytes(),
            ha2.as_bytes(),
        ]),
        None => h.update_joined(&[ha1_hex, nonce.as_bytes(), ha2.as_bytes()]),
    }
    h.finish()
}

/// `H(username:realm:password)` in lower-case hex: the value to store per user.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    ha1_digest(alg, username, realm, password).to_hex_string()
}

/// The expected `response` in lower-case hex.
///
/// With `qop` (only `auth` is meaningful: `auth-int` would need the body
/// hash), `KD(HA1, nonce:nc:cnonce:qop:HA2)`; without it, the RFC 2069 form
/// `KD(HA1, nonce:HA2)` and `nc` / `cnonce` are ignored. `ha1_hex` must be
/// lower-case hex, as returned by [`ha1`].
#[allow(clippy::too_many_arguments)]
pub fn response(
    alg: Algorithm,
    ha1_hex: &str,
    method: &str,
    digest_uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: Option<&str>,
) -> String {
    response_digest(
        alg,
        ha1_hex.as_bytes(),
        method,
        digest_uri,
        nonce,
        nc,
        cnonce,
        qop,
    )
    .to_hex_string()
}

/// Checks `credentials.response` against the one computed from
/// `expected_ha1_hex` (the stored HA1 for the credentials' username, realm and
/// algorithm) in constant time.
///
/// Returns false for an unsupported `algorithm`, `qop` other than `auth`
/// (e.g. `auth-int`), `qop` without `nc`/`cnonce`, and an HA1 whose length
/// does not match the algorithm. Nonce freshness/replay ([`NonceManager::check`]), the realm and
/// the `uri` vs Request-URI match are the caller's to check.
pub fn verify(credentials: &Credentials<'_>, method: &str, expected_ha1_hex: &str) -> bool {
    let Some(alg) = credentials.hash_algorithm() else {
        return false;
    };
    let hex_len = alg.hex_len();
    let (qop, nc, cnonce) = match credentials.qop.as_deref() {
        None => (None, "", ""),
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            match (credentials.nc.as_deref(), credentials.cnonce.as_deref()) {
                (Some(nc), Some(cnonce)) => (Some(q), nc, cnonce),
                _ => return false,
            }
        }
        Some(_) => return false,
    };
    let Some(ha1) = lower_hex(expected_ha1_hex, hex_len) else {
        return false;
    };
    let Some(given) = lower_hex(&credentials.response, hex_len) else {
        return false;
    };
    let computed = response_digest(
        alg,
        &ha1[..hex_len],
        method,
        &credentials.uri,
        &credentials.nonce,
        nc,
        cnonce,
        qop,
    );
    bool::from(computed.as_bytes().ct_eq(&given[..hex_len]))
}

/// Copies a hex string of exactly `len` (≤ 64) ASCII hex digits, lower-cased.
fn lower_hex(s: &str, len: usize) -> Option<[u8; 64]> {
    if s.len() != len || len > 64 {
        return None;
    }
    let mut out = [0u8; 64];
    for (o, &b) in out.iter_mut().zip(s.as_bytes()) {
        if !b.is_ascii_hexdigit() {
            return None;
        }
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

/// Builds a challenge header value (`WWW-Authenticate` / `Proxy-Authenticate`):
/// `Digest realm="…", nonce="…", algorithm=…, qop="auth"[, opaque="…"][, stale=true]`.
pub fn challenge(
    realm: &str,
    nonce: &str,
    alg: Algorithm,
    stale: bool,
    opaque: Option<&str>,
) -> String {
    let mut out =
        String::with_capacity(64 + realm.len() + nonce.len() + opaque.map_or(0, |o| o.len() + 11));
    out.push_str("Digest realm=");
    push_quoted(&mut out, realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, nonce);
    out.push_str(", algorithm=");
    out.push_str(alg.as_str());
    out.push_str(", qop=\"auth\"");
    if let Some(opaque) = opaque {
        out.push_str(", opaque=");
        push_quoted(&mut out, opaque);
    }
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// Appends `s` as a quoted-string, escaping `"` and `\` and dropping control
/// characters (which a quoted-string cannot carry).
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Digest credentials parsed from an `Authorization` / `Proxy-Authorization`
/// header value. Values borrow from the header unless they contained escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// `username` (unescaped).
    pub username: Cow<'a, str>,
    /// `realm`.
    pub realm: Cow<'a, str>,
    /// `nonce`, as issued by the server.
    pub nonce: Cow<'a, str>,
    /// `uri` (the digest-uri; should match the Request-URI).
    pub uri: Cow<'a, str>,
    /// `response`, hex as sent.
    pub response: Cow<'a, str>,
    /// `algorithm` as sent (absent means MD5); see [`Credentials::hash_algorithm`].
    pub algorithm: Option<Cow<'a, str>>,
    /// `cnonce`; present whenever `qop` is.
    pub cnonce: Option<Cow<'a, str>>,
    /// `nc` exactly as sent (it is hashed verbatim); present whenever `qop` is.
    pub nc: Option<Cow<'a, str>>,
    /// `nc` as a number, for [`NonceManager::check`].
    pub nc_value: Option<u32>,
    /// `qop` as sent (only `auth` verifies).
    pub qop: Option<Cow<'a, str>>,
    /// `opaque`, echoed from the challenge.
    pub opaque: Option<Cow<'a, str>>,
}

impl Credentials<'_> {
    /// The algorithm to verify with: MD5 when absent, `None` when unsupported
    /// (e.g. `MD5-sess`, `SHA-512-256`).
    pub fn hash_algorithm(&self) -> Option<Algorithm> {
        match self.algorithm.as_deref() {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        }
    }

    /// Detaches the credentials from the header they were parsed from.
    pub fn into_owned(self) -> Credentials<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        Credentials {
            username: own(self.username),
            realm: own(self.realm),
            nonce: own(self.nonce),
            uri: own(self.uri),
            response: own(self.response),
            algorithm: self.algorithm.map(own),
            cnonce: self.cnonce.map(own),
            nc: self.nc.map(own),
            nc_value: self.nc_value,
            qop: self.qop.map(own),
            opaque: self.opaque.map(own),
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// Parses the value starting at `i` (a quoted-string or a bare token-ish run);
/// returns it and the index just past it.
fn parse_value(s: &str, i: usize) -> Result<(Cow<'_, str>, usize), DigestError> {
    let b = s.as_bytes();
    if b.get(i) == Some(&b'"') {
        let start = i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            match b.get(j) {
                None => return Err(DigestError::Malformed("unterminated quoted string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match b.get(j + 1) {
                        Some(&c) if c >= 0x20 && c != 0x7f || c == b'\t' => j += 2,
                        _ => return Err(DigestError::Malformed("bad escape in quoted string")),
                    }
                }
                Some(&c) if c < 0x20 && c != b'\t' || c == 0x7f => {
                    return Err(DigestError::Malformed("control character in quoted string"));
                }
                Some(_) => j += 1,
            }
            if j - start > MAX_VALUE_LEN {
                return Err(DigestError::TooLong);
            }
        }
        // `start` and `j` sit next to ASCII quotes, so they are char boundaries.
        let raw = s
            .get(start..j)
            .ok_or(DigestError::Malformed("bad quoted string"))?;
        let value = if escaped {
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            Cow::Owned(out)
        } else {
            Cow::Borrowed(raw)
        };
        Ok((value, j + 1))
    } else {
        let mut j = i;
        while let Some(&c) = b.get(j) {
            if c <= 0x20 || c == 0x7f || c == b',' || c == b'"' {
                break;
            }
            j += 1;
        }
        if j == i {
            return Err(DigestError::Malformed("empty parameter value"));
        }
        if j - i > MAX_VALUE_LEN {
            return Err(DigestError::TooLong);
        }
        // The run stops at an ASCII byte or the end: a char boundary.
        let raw = s.get(i..j).ok_or(DigestError::Malformed("bad token"))?;
        Ok((Cow::Borrowed(raw), j))
    }
}

/// Stores `value` into `slot`, rejecting duplicates.
fn set<'a>(
    slot: &mut Option<Cow<'a, str>>,
    name: &'static str,
    value: Cow<'a, str>,
) -> Result<(), DigestError> {
    if slot.is_some() {
        return Err(DigestError::DuplicateParam(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses an `Authorization` / `Proxy-Authorization` header value with the
/// `Digest` scheme. Unknown parameters are ignored; duplicates, `qop` without
/// `nc`/`cnonce`, a malformed `nc`, `userhash=true` and oversized input are
/// rejected. The `algorithm` is kept as sent and resolved at verify time.
pub fn parse_credentials(value: &str) -> Result<Credentials<'_>, DigestError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(DigestError::TooLong);
    }
    let b = value.as_bytes();
    let mut i = skip_ws(b, 0);
    let scheme_start = i;
    while i < b.len() && is_tchar(b[i]) {
        i += 1;
    }
    if !b[scheme_start..i].eq_ignore_ascii_case(b"Digest") {
        return Err(DigestError::NotDigest);
    }
    if i < b.len() && !is_ws(b[i]) {
        return Err(DigestError::Malformed("expected whitespace after scheme"));
    }

    let mut username = None;
    let mut realm = None;
    let mut nonce = None;
    let mut uri = None;
    let mut response = None;
    let mut algorithm = None;
    let mut cnonce = None;
    let mut nc = None;
    let mut qop = None;
    let mut opaque = None;
    let mut userhash = None;

    loop {
        while i < b.len() && (is_ws(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let name_start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(DigestError::Malformed("expected parameter name"));
        }
        let name = &b[name_start..i];
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'=') {
            return Err(DigestError::Malformed("expected '=' after parameter name"));
        }
        i = skip_ws(b, i + 1);
        let (val, next) = parse_value(value, i)?;
        i = skip_ws(b, next);
        if i < b.len() && b[i] != b',' {
            return Err(DigestError::Malformed("expected ',' between parameters"));
        }
        let slot = match name.len() {
            2 if name.eq_ignore_ascii_case(b"nc") => Some((&mut nc, "nc")),
            3 if name.eq_ignore_ascii_case(b"uri") => Some((&mut uri, "uri")),
            3 if name.eq_ignore_ascii_case(b"qop") => Some((&mut qop, "qop")),
            5 if name.eq_ignore_ascii_case(b"realm") => Some((&mut realm, "realm")),
            5 if name.eq_ignore_ascii_case(b"nonce") => Some((&mut nonce, "nonce")),
            6 if name.eq_ignore_ascii_case(b"cnonce") => Some((&mut cnonce, "cnonce")),
            6 if name.eq_ignore_ascii_case(b"opaque") => Some((&mut opaque, "opaque")),
            8 if name.eq_ignore_ascii_case(b"username") => Some((&mut username, "username")),
            8 if name.eq_ignore_ascii_case(b"response") => Some((&mut response, "response")),
            8 if name.eq_ignore_ascii_case(b"userhash") => Some((&mut userhash, "userhash")),
            9 if name.eq_ignore_ascii_case(b"algorithm") => Some((&mut algorithm, "algorithm")),
            _ => None,
        };
        if let Some((slot, name)) = slot {
            set(slot, name, val)?;
        }
    }

    if userhash.is_some_and(|u| u.eq_ignore_ascii_case("true")) {
        return Err(DigestError::UnsupportedUserhash);
    }
    let nc_value = match nc.as_deref() {
        None => None,
        Some(n) if (1..=8).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Some(u32::from_str_radix(n, 16).map_err(|_| DigestError::InvalidNonceCount)?)
        }
        Some(_) => return Err(DigestError::InvalidNonceCount),
    };
    if qop.is_some() {
        if cnonce.is_none() {
            return Err(DigestError::MissingParam("cnonce"));
        }
        if nc.is_none() {
            return Err(DigestError::MissingParam("nc"));
        }
    }
    Ok(Credentials {
        username: username.ok_or(DigestError::MissingParam("username"))?,
        realm: realm.ok_or(DigestError::MissingParam("realm"))?,
        nonce: nonce.ok_or(DigestError::MissingParam("nonce"))?,
        uri: uri.ok_or(DigestError::MissingParam("uri"))?,
        response: response.ok_or(DigestError::MissingParam("response"))?,
        algorithm,
        cnonce,
        nc,
        nc_value,
        qop,
        opaque,
    })
}

/// Result of [`NonceManager::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Genuine, within its lifetime, and this (nonce, nc) was not seen before;
    /// it has now been recorded.
    Fresh,
    /// Genuine but expired, issued more than 5 s in the future, or no longer
    /// trackable: re-challenge with `stale=true`.
    Stale,
    /// Not issued by this secret (bad format or MAC): treat as forged.
    Invalid,
    /// The nonce count did not increase (or a qop-less nonce was reused).
    Replayed,
}

/// Tracking key of an issued nonce: (issue timestamp, random part).
type NonceKey = (u64, u64);

/// Issues and checks stateless-verifiable nonces.
///
/// A nonce is the lower-case hex of `ts (u64 BE) || random (8 bytes) ||
/// HMAC-SHA256(secret, ts || random)[..16]`, so its authenticity and age are
/// checked without state. Used nonces are tracked (ordered by issue time) to
/// enforce strictly increasing `nc` values, or single use without `qop`. The
/// table holds at most `max_tracked` entries: expired ones are dropped first,
/// then the oldest-issued; every nonce at or below the newest evicted one is
/// from then on `Stale`, so eviction never makes a nonce replayable. `now`
/// must not go backwards.
pub struct NonceManager {
    mac: Hmac<Sha256>,
    lifetime_secs: u64,
    max_tracked: usize,
    used: BTreeMap<NonceKey, u32>,
    floor: Option<NonceKey>,
}

impl std::fmt::Debug for NonceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceManager")
            .field("lifetime_secs", &self.lifetime_secs)
            .field("max_tracked", &self.max_tracked)
            .field("tracked", &self.used.len())
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl NonceManager {
    /// Creates a manager; nonces are fresh for `lifetime_secs` after issue and
    /// at most `max_tracked` (at least 1) used nonces are remembered.
    pub fn new(secret: [u8; 32], lifetime_secs: u64, max_tracked: usize) -> Self {
        // HMAC zero-pads keys shorter than the block, so this 64-byte key is
        // the same key as `secret`, with no fallible length check.
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&secret);
        Self {
            mac: Hmac::<Sha256>::new(&key.into()),
            lifetime_secs,
            max_tracked: max_tracked.max(1),
            used: BTreeMap::new(),
            floor: None,
        }
    }

    /// Issues a new nonce stamped `now`, with 8 bytes from the thread CSPRNG.
    pub fn issue(&self, now: u64) -> String {
        self.issue_with_random(now, rand::random())
    }

    /// Issues a nonce with caller-supplied randomness (deterministic tests, or
    /// a caller-owned RNG). `random` must be unpredictable in production.
    pub fn issue_with_random(&self, now: u64, random: [u8; 8]) -> String {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&now.to_be_bytes());
        raw[8..16].copy_from_slice(&random);
        let tag = self.tag(&raw[..16]);
        raw[16..].copy_from_slice(&tag[..16]);
        let mut out = String::with_capacity(NONCE_HEX_LEN);
        for b in raw {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }

    fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        Mac::update(&mut mac, data);
        mac.finalize().into_bytes().into()
    }

    /// Checks a nonce and its count (`None` without `qop`: single use) at
    /// `now`; records it when `Fresh`. Call only after [`verify`] succeeded.
    pub fn check(&mut self, nonce: &str, nc: Option<u32>, now: u64) -> NonceStatus {
        let Some(raw) = decode_nonce(nonce) else {
            return NonceStatus::Invalid;
        };
        let mut mac = self.mac.clone();
        Mac::update(&mut mac, &raw[..16]);
        if mac.verify_truncated_left(&raw[16..]).is_err() {
            return NonceStatus::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let ts = u64::from_be_bytes(ts);
        let mut rnd = [0u8; 8];
        rnd.copy_from_slice(&raw[8..16]);
        let key = (ts, u64::from_be_bytes(rnd));

        if ts > now.saturating_add(FUTURE_SKEW_SECS)
            || now >= ts.saturating_add(self.lifetime_secs)
            || self.floor.is_some_and(|floor| key <= floor)
        {
            return NonceStatus::Stale;
        }
        self.expire(now);
        if let Some(highest) = self.used.get_mut(&key) {
            return match nc {
                Some(n) if n > *highest => {
                    *highest = n;
                    NonceStatus::Fresh
                }
                _ => NonceStatus::Replayed,
            };
        }
        let first = match nc {
            Some(0) => return NonceStatus::Replayed,
            Some(n) => n,
            // Single use: no later count can exceed this.
            None => u32::MAX,
        };
        if self.used.len() >= self.max_tracked {
            match self.used.first_key_value() {
                // This nonce would be the next one evicted: refuse it instead.
                Some((&oldest, _)) if key < oldest => return NonceStatus::Stale,
                Some(_) => {
                    if let Some((evicted, _)) = self.used.pop_first() {
                        self.floor = Some(self.floor.map_or(evicted, |f| f.max(evicted)));
                    }
                }
                None => {}
            }
        }
        self.used.insert(key, first);
        NonceStatus::Fresh
    }

    /// Drops tracked nonces whose lifetime has passed at `now` (also done,
    /// amortised, by [`check`](Self::check)).
    pub fn expire(&mut self, now: u64) {
        while let Some((&(ts, _), _)) = self.used.first_key_value()
            && now >= ts.saturating_add(self.lifetime_secs)
        {
            self.used.pop_first();
        }
    }

    /// Number of used nonces currently tracked.
    pub fn tracked(&self) -> usize {
        self.used.len()
    }
}

/// Decodes a 64-character hex nonce into its 32 bytes.
fn decode_nonce(nonce: &str) -> Option<[u8; 32]> {
    let b = nonce.as_bytes();
    if b.len() != NONCE_HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC_REALM: &str = "http-auth@example.org";

    fn rfc7616_header(alg: &str, response: &str) -> String {
        // Layout as in RFC 7616 §3.9.1, line folding included.
        format!(
            "Digest username=\"Mufasa\",\r\n       realm=\"{RFC_REALM}\",\r\n       \
             uri=\"/dir/index.html\",\r\n       algorithm={alg},\r\n       \
             nonce=\"{RFC_NONCE}\",\r\n       nc=00000001,\r\n       \
             cnonce=\"{RFC_CNONCE}\",\r\n       qop=auth,\r\n       \
             response=\"{response}\",\r\n       \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        )
    }

    #[test]
    fn rfc7616_example_responses() {
        for (alg, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let h = ha1(alg, "Mufasa", RFC_REALM, "Circle of Life");
            assert_eq!(h.len(), alg.hex_len());
            let r = response(
                alg,
                &h,
                "GET",
                "/dir/index.html",
                RFC_NONCE,
                "00000001",
                RFC_CNONCE,
                Some("auth"),
            );
            assert_eq!(r, expected, "{alg}");

            let header = rfc7616_header(alg.as_str(), expected);
            let creds = parse_credentials(&header).expect("parse RFC example");
            assert_eq!(creds.hash_algorithm(), Some(alg));
            assert_eq!(creds.nc_value, Some(1));
            assert!(verify(&creds, "GET", &h));
            assert!(verify(&creds, "GET", &h.to_ascii_uppercase()));
            assert!(!verify(&creds, "POST", &h));
            let wrong = ha1(alg, "Mufasa", RFC_REALM, "Circle Of Life");
            assert!(!verify(&creds, "GET", &wrong));
            // An HA1 of the other algorithm's length never verifies.
            let other = if alg == Algorithm::Md5 {
                Algorithm::Sha256
            } else {
                Algorithm::Md5
            };
            assert!(!verify(
                &creds,
                "GET",
                &ha1(other, "Mufasa", RFC_REALM, "Circle of Life")
            ));
        }
    }

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5 (password with capital O).
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let r = response(
            Algorithm::Md5,
            &h,
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            Some("auth"),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc2069_form_without_qop() {
        let h = ha1(Algorithm::Md5, "1001", "sip.example.com", "secret");
        let r = response(
            Algorithm::Md5,
            &h,
            "REGISTER",
            "sip:sip.example.com",
            "abc",
            "ignored",
            "ignored",
            None,
        );
        // Independently: MD5(HA1:nonce:MD5(method:uri)).
        let mut hasher = Md5::new();
        hasher.update(b"REGISTER:sip:sip.example.com");
        let ha2 = HexDigest::from_bytes(&hasher.finalize()).to_hex_string();
        let mut hasher = Md5::new();
        hasher.update(format!("{h}:abc:{ha2}").as_bytes());
        assert_eq!(r, HexDigest::from_bytes(&hasher.finalize()).to_hex_string());

        let header = format!(
            "Digest username=\"1001\", realm=\"sip.example.com\", nonce=\"abc\", \
             uri=\"sip:sip.example.com\", response=\"{r}\""
        );
        let creds = parse_credentials(&header).unwrap();
        assert_eq!(creds.algorithm, None);
        assert_eq!(creds.hash_algorithm(), Some(Algorithm::Md5));
        assert!(creds.qop.is_none() && creds.nc_value.is_none());
        assert!(verify(&creds, "REGISTER", &h));
        assert!(!verify(&creds, "INVITE", &h));
    }

    #[test]
    fn sha256_roundtrip_and_qop_checks() {
        let h = ha1(Algorithm::Sha256, "1001", "x", "pw");
        let r = response(
            Algorithm::Sha256,
            &h,
            "REGISTER",
            "sip:x",
            "n",
            "0000000a",
            "c",
            Some("auth"),
        );
        let header = format!(
            "Digest username=\"1001\",realm=\"x\",nonce=\"n\",uri=\"sip:x\",response=\"{}\",\
             algorithm=sha-256,cnonce=\"c\",nc=0000000a,qop=\"auth\"",
            r.to_ascii_uppercase()
        );
        let creds = parse_credentials(&header).unwrap();
        assert_eq!(creds.nc_value, Some(10));
        assert!(verify(&creds, "REGISTER", &h));

        // auth-int is not supported: never verifies.
        let int = header.replace("qop=\"auth\"", "qop=auth-int");
        let creds = parse_credentials(&int).unwrap();
        assert!(!verify(&creds, "REGISTER", &h));

        // Hand-built credentials missing nc under qop do not verify.
        let mut creds = parse_credentials(&header).unwrap();
        creds.nc = None;
        assert!(!verify(&creds, "REGISTER", &h));
        // Non-hex or wrong-length responses do not verify.
        let mut creds = parse_credentials(&header).unwrap();
        creds.response = Cow::Borrowed("zz");
        assert!(!verify(&creds, "REGISTER", &h));
    }

    #[test]
    fn algorithm_parse() {
        assert_eq!(Algorithm::parse("md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("MD5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("Sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("MD5-sess"), None);
        assert_eq!(Algorithm::parse("SHA-512-256"), None);
        assert_eq!(Algorithm::parse(""), None);
        assert_eq!(Algorithm::default(), Algorithm::Md5);
        assert_eq!(Algorithm::Sha256.as_str(), "SHA-256");
    }

    #[test]
    fn challenge_format() {
        assert_eq!(
            challenge("sip.example.com", "abc", Algorithm::Md5, false, None),
            "Digest realm=\"sip.example.com\", nonce=\"abc\", algorithm=MD5, qop=\"auth\""
        );
        assert_eq!(
            challenge("r", "n", Algorithm::Sha256, true, Some("o")),
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\", opaque=\"o\", stale=true"
        );
        assert_eq!(
            challenge("a\"b\\c\r\n", "n", Algorithm::Md5, false, None),
            "Digest realm=\"a\\\"b\\\\c\", nonce=\"n\", algorithm=MD5, qop=\"auth\""
        );
    }

    #[test]
    fn parser_edge_cases() {
        // Escaped quotes and backslashes, commas and '=' inside quotes.
        let c = parse_credentials(
            r#"Digest username="a\"b\\c", realm="x,y=z", nonce="n", uri="sip:a@b;x=1,2", response="r""#,
        )
        .unwrap();
        assert_eq!(c.username, "a\"b\\c");
        assert!(matches!(c.username, Cow::Owned(_)));
        assert_eq!(c.realm, "x,y=z");
        assert!(matches!(c.realm, Cow::Borrowed(_)));
        assert_eq!(c.uri, "sip:a@b;x=1,2");

        // Odd spacing, tabs, case-insensitive names and scheme, empty list
        // elements, unknown params (quoted and bare), trailing comma.
        let c = parse_credentials(
            "  dIgEsT\t ,USERNAME =\t\"u\" ,, Realm= \"r\",foo=\"bar, \\\"baz\\\"\", x=y,\
             nonce  =  \"n\",URI=\"sip:r\",response=\"0\", opaque=\"o\",  ",
        )
        .unwrap();
        assert_eq!(
            (&*c.username, &*c.realm, &*c.nonce, &*c.uri),
            ("u", "r", "n", "sip:r")
        );
        assert_eq!(c.opaque.as_deref(), Some("o"));

        // Unquoted values are tolerated; non-ASCII survives.
        let c = parse_credentials("Digest username=ü, realm=r, nonce=n, uri=sip:r, response=0")
            .unwrap();
        assert_eq!(c.username, "ü");
        let c = parse_credentials(
            "Digest username=\"\\ü\", realm=\"\", nonce=n, uri=sip:r, response=0",
        )
        .unwrap();
        assert_eq!((&*c.username, &*c.realm), ("ü", ""));

        let full = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"0\"";
        assert!(parse_credentials(full).is_ok());
        for (param, name) in [
            ("username=\"u\", ", "username"),
            ("realm=\"r\", ", "realm"),
            ("nonce=\"n\", ", "nonce"),
            ("uri=\"sip:r\", ", "uri"),
            (", response=\"0\"", "response"),
        ] {
            assert_eq!(
                parse_credentials(&full.replace(param, "")),
                Err(DigestError::MissingParam(name)),
                "{param}"
            );
        }
        assert_eq!(
            parse_credentials(&format!("{full}, qop=auth, nc=00000001")),
            Err(DigestError::MissingParam("cnonce"))
        );
        assert_eq!(
            parse_credentials(&format!("{full}, qop=auth, cnonce=\"c\"")),
            Err(DigestError::MissingParam("nc"))
        );
        assert_eq!(
            parse_credentials(&format!("{full}, Username=\"v\"")),
            Err(DigestError::DuplicateParam("username"))
        );
        let sess_header = format!("{full}, algorithm=MD5-sess");
        let sess = parse_credentials(&sess_header).unwrap();
        assert_eq!(sess.algorithm.as_deref(), Some("MD5-sess"));
        assert_eq!(sess.hash_algorithm(), None);
        let h = ha1(Algorithm::Md5, "u", "r", "p");
        assert!(!verify(&sess, "GET", &h));
        assert_eq!(
            parse_credentials(&format!("{full}, userhash=true")),
            Err(DigestError::UnsupportedUserhash)
        );
        assert!(parse_credentials(&format!("{full}, userhash=false")).is_ok());
        for nc in ["", "\"\"", "123456789", "+1", "xyz", "-1"] {
            assert!(
                parse_credentials(&format!("{full}, nc={nc}")).is_err(),
                "nc={nc}"
            );
        }

        // Non-Digest schemes and junk.
        for v in [
            "",
            "   ",
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "Digestive username=\"u\"",
            "\u{0}",
            "Bearer x",
        ] {
            assert_eq!(parse_credentials(v), Err(DigestError::NotDigest), "{v:?}");
        }
        assert!(matches!(
            parse_credentials("Digest"),
            Err(DigestError::MissingParam(_))
        ));
        for v in [
            "Digest,username=\"u\"",
            "Digest username=\"u",
            "Digest username=\"u\\",
            "Digest username=\"u\" realm=\"r\"",
            "Digest username",
            "Digest username=",
            "Digest =\"u\"",
            "Digest username=\"a\nb\"",
            "Digest username=\"a\\\u{1}\"",
            "Digest username=a\"b\"",
            "Digest abc==",
        ] {
            assert!(
                matches!(
                    parse_credentials(v),
                    Err(DigestError::Malformed(_) | DigestError::MissingParam(_))
                ),
                "{v:?} -> {:?}",
                parse_credentials(v)
            );
        }

        // Length caps.
        let long = "a".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            parse_credentials(&full.replace("\"u\"", &format!("\"{long}\""))),
            Err(DigestError::TooLong)
        );
        assert_eq!(
            parse_credentials(&full.replace("\"u\"", &long)),
            Err(DigestError::TooLong)
        );
        let ok = "a".repeat(MAX_VALUE_LEN);
        assert!(parse_credentials(&full.replace("\"u\"", &format!("\"{ok}\""))).is_ok());
        let huge = format!("{full}{}", ", x=y".repeat(MAX_HEADER_LEN));
        assert_eq!(parse_credentials(&huge), Err(DigestError::TooLong));

        // Owned copy is equal.
        let c = parse_credentials(full).unwrap();
        assert_eq!(c.clone().into_owned(), c);
    }

    /// Small deterministic PRNG for mutation tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let h = ha1(Algorithm::Sha256, "Mufasa", RFC_REALM, "Circle of Life");
        let seeds = [
            rfc7616_header(
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            r#"Digest username="a\"b", realm="x,y", nonce="n", uri="sip:x", response="0", qop=auth, nc=1, cnonce="c""#.to_owned(),
        ];
        let alphabet: &[&str] = &[
            "\"",
            "\\",
            ",",
            "=",
            " ",
            "\t",
            "\r\n",
            "a",
            "0",
            "ü",
            "\u{0}",
            "\u{7f}",
            "Digest ",
            "qop=auth-int",
            "nc=",
            "ffffffff",
            "\u{10ffff}",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0usize;
        for round in 0..30_000 {
            let mut s = seeds[round % seeds.len()].clone();
            for _ in 0..=rng.below(6) {
                let mut pos = rng.below(s.len() + 1);
                while !s.is_char_boundary(pos) {
                    pos -= 1;
                }
                match rng.below(4) {
                    0 => s.insert_str(pos, alphabet[rng.below(alphabet.len())]),
                    1 => {
                        let mut end = (pos + 1 + rng.below(8)).min(s.len());
                        while !s.is_char_boundary(end) {
                            end += 1;
                        }
                        s.replace_range(pos..end, "");
                    }
                    2 => {
                        let byte = (rng.next() & 0x7f) as u8;
                        s.insert(pos, char::from(byte));
                    }
                    _ => s.truncate(pos),
                }
            }
            if let Ok(c) = parse_credentials(&s) {
                ok += 1;
                let _ = verify(&c, "GET", &h);
                let _ = c.into_owned();
            }
        }
        assert!(ok > 0, "some mutations should still parse");
    }

    fn manager(lifetime: u64, max: usize) -> NonceManager {
        NonceManager::new([7u8; 32], lifetime, max)
    }

    #[test]
    fn nonce_roundtrip_and_nc_replay() {
        let mut m = manager(300, 100);
        let n = m.issue(1_000);
        assert_eq!(n.len(), NONCE_HEX_LEN);
        assert_ne!(n, m.issue(1_000), "random part differs");
        assert_eq!(m.check(&n, Some(1), 1_000), NonceStatus::Fresh);
        assert_eq!(m.check(&n, Some(2), 1_001), NonceStatus::Fresh);
        assert_eq!(m.check(&n, Some(2), 1_002), NonceStatus::Replayed);
        assert_eq!(m.check(&n, Some(1), 1_002), NonceStatus::Replayed);
        assert_eq!(m.check(&n, None, 1_002), NonceStatus::Replayed);
        assert_eq!(m.check(&n, Some(7), 1_003), NonceStatus::Fresh);
        assert_eq!(m.tracked(), 1);
        // Upper-case hex is the same nonce.
        assert_eq!(
            m.check(&n.to_ascii_uppercase(), Some(7), 1_003),
            NonceStatus::Replayed
        );

        let n2 = m.issue(1_000);
        assert_eq!(m.check(&n2, Some(0), 1_000), NonceStatus::Replayed);
        assert_eq!(m.check(&n2, Some(u32::MAX), 1_000), NonceStatus::Fresh);
        assert_eq!(m.check(&n2, Some(u32::MAX), 1_000), NonceStatus::Replayed);
    }

    #[test]
    fn nonce_without_qop_is_single_use() {
        let mut m = manager(300, 100);
        let n = m.issue(50);
        assert_eq!(m.check(&n, None, 60), NonceStatus::Fresh);
        assert_eq!(m.check(&n, None, 61), NonceStatus::Replayed);
        assert_eq!(m.check(&n, Some(1), 61), NonceStatus::Replayed);
        assert_eq!(m.check(&n, Some(u32::MAX), 61), NonceStatus::Replayed);
    }

    #[test]
    fn nonce_expiry_and_future() {
        let mut m = manager(30, 100);
        let n = m.issue(1_000);
        assert_eq!(m.check(&n, Some(1), 1_029), NonceStatus::Fresh);
        assert_eq!(m.check(&n, Some(2), 1_030), NonceStatus::Stale);
        assert_eq!(m.check(&n, Some(3), 99_999), NonceStatus::Stale);
        // Issued in the future: up to 5 s is tolerated.
        let n = m.issue(2_005);
        assert_eq!(m.check(&n, Some(1), 2_000), NonceStatus::Fresh);
        let n = m.issue(2_006);
        assert_eq!(m.check(&n, Some(1), 2_000), NonceStatus::Stale);
        // Expired entries leave the table.
        m.expire(10_000);
        assert_eq!(m.tracked(), 0);
    }

    #[test]
    fn forged_nonces_are_invalid() {
        let mut m = manager(300, 100);
        let n = m.issue(1_000);
        // Flip each position in turn (the MAC covers every byte).
        for i in 0..n.len() {
            let mut bytes = n.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(bytes).unwrap();
            assert_eq!(
                m.check(&forged, Some(1), 1_000),
                NonceStatus::Invalid,
                "{i}"
            );
        }
        // Extending the timestamp is detected.
        let later = format!("{:016x}{}", 5_000u64, &n[16..]);
        assert_eq!(m.check(&later, Some(1), 5_000), NonceStatus::Invalid);
        // Another secret's nonce.
        let other = NonceManager::new([8u8; 32], 300, 100).issue(1_000);
        assert_eq!(m.check(&other, Some(1), 1_000), NonceStatus::Invalid);
        for junk in [
            "",
            "abc",
            &n[..63],
            &format!("{n}0"),
            &"g".repeat(64),
            RFC_NONCE,
        ] {
            assert_eq!(
                m.check(junk, Some(1), 1_000),
                NonceStatus::Invalid,
                "{junk}"
            );
        }
        let multibyte = format!("ü{}", &n[2..]);
        assert_eq!(m.check(&multibyte, Some(1), 1_000), NonceStatus::Invalid);
        assert_eq!(m.tracked(), 0);
        // The genuine one still works.
        assert_eq!(m.check(&n, Some(1), 1_000), NonceStatus::Fresh);
    }

    #[test]
    fn deterministic_issue() {
        let m = manager(300, 10);
        let a = m.issue_with_random(0x0102, [9; 8]);
        assert_eq!(a, m.issue_with_random(0x0102, [9; 8]));
        assert!(a.starts_with("00000000000001020909090909090909"));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn table_bound_with_eviction_floor() {
        let mut m = manager(1_000, 3);
        let n: Vec<String> = (0..5u8)
            .map(|i| m.issue_with_random(100 + u64::from(i), [i; 8]))
            .collect();
        let unused_old = m.issue_with_random(100, [0xff; 8]);
        for nonce in &n[..3] {
            assert_eq!(m.check(nonce, Some(1), 110), NonceStatus::Fresh);
        }
        assert_eq!(m.tracked(), 3);
        // A fourth evicts the oldest-issued (n[0]).
        assert_eq!(m.check(&n[3], Some(1), 110), NonceStatus::Fresh);
        assert_eq!(m.tracked(), 3);
        assert_eq!(m.floor, Some((100, u64::from_be_bytes([0; 8]))));
        // The evicted nonce must not be replayable: it is Stale, not Fresh.
        assert_eq!(m.check(&n[0], Some(1), 111), NonceStatus::Stale);
        assert_eq!(m.check(&n[0], Some(2), 111), NonceStatus::Stale);
        assert_eq!(m.check(&n[0], None, 111), NonceStatus::Stale);
        // Above the floor but older than everything tracked in a full table:
        // refused, and nothing is evicted for it.
        assert_eq!(m.check(&unused_old, Some(1), 111), NonceStatus::Stale);
        assert_eq!(m.check(&n[1], Some(1), 111), NonceStatus::Replayed);
        // A newer one evicts n[1]; n[2] and n[3] are still tracked.
        assert_eq!(m.check(&n[4], Some(1), 111), NonceStatus::Fresh);
        assert_eq!(m.check(&n[1], Some(5), 111), NonceStatus::Stale);
        assert_eq!(m.check(&n[2], Some(1), 111), NonceStatus::Replayed);
        assert_eq!(m.check(&n[3], Some(1), 111), NonceStatus::Replayed);
        assert_eq!(m.tracked(), 3);

        // Same-second nonces above the floor stay usable: the floor is the
        // evicted (timestamp, random) pair, not the whole second.
        let mut m = manager(1_000, 2);
        let a = m.issue_with_random(100, [0; 8]);
        let b = m.issue_with_random(100, [5; 8]);
        let c = m.issue_with_random(101, [0; 8]);
        assert_eq!(m.check(&a, Some(1), 110), NonceStatus::Fresh);
        assert_eq!(m.check(&c, Some(1), 110), NonceStatus::Fresh);
        assert_eq!(m.check(&b, Some(1), 110), NonceStatus::Fresh);
        assert_eq!(m.check(&a, Some(2), 110), NonceStatus::Stale);
        assert_eq!(m.check(&b, Some(1), 110), NonceStatus::Replayed);
        assert_eq!(m.check(&c, Some(2), 110), NonceStatus::Fresh);

        // Full table: a nonce older than everything tracked is refused, and
        // nothing is evicted for it.
        let mut m = manager(1_000, 2);
        let newer = [
            m.issue_with_random(200, [1; 8]),
            m.issue_with_random(201, [1; 8]),
        ];
        let older = m.issue_with_random(150, [1; 8]);
        for nonce in &newer {
            assert_eq!(m.check(nonce, Some(1), 210), NonceStatus::Fresh);
        }
        assert_eq!(m.check(&older, Some(1), 210), NonceStatus::Stale);
        assert_eq!(m.floor, None);
        assert_eq!(m.check(&newer[0], Some(1), 210), NonceStatus::Replayed);
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let mut m = manager(10, 2);
        let a = m.issue(0);
        let b = m.issue(5);
        assert_eq!(m.check(&a, Some(1), 5), NonceStatus::Fresh);
        assert_eq!(m.check(&b, Some(1), 5), NonceStatus::Fresh);
        let c = m.issue(12);
        assert_eq!(m.check(&c, Some(1), 12), NonceStatus::Fresh);
        assert_eq!(m.floor, None, "only an expired entry was dropped");
        assert_eq!(m.tracked(), 2);
        assert_eq!(m.check(&b, Some(1), 12), NonceStatus::Replayed);
        assert_eq!(m.check(&a, Some(2), 12), NonceStatus::Stale);
    }

    #[test]
    fn zero_max_tracked_is_clamped() {
        let mut m = manager(10, 0);
        let a = m.issue(0);
        assert_eq!(m.check(&a, Some(1), 1), NonceStatus::Fresh);
        assert_eq!(m.check(&a, Some(1), 1), NonceStatus::Replayed);
        assert!(format!("{m:?}").contains("tracked: 1"));
    }
}
