//! The client side of Digest: answering a challenge (401 / 407) from a
//! server we send requests to (a trunk), RFC 3261 §22 with RFC 7616
//! algorithms. Picks the strongest challenge we can answer.

use super::digest::{Algorithm, ha1, response};

/// One parsed `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back.
    pub opaque: Option<String>,
    /// The algorithm (MD5 when absent).
    pub algorithm: Algorithm,
    /// Whether `qop=auth` is offered.
    pub qop_auth: bool,
    /// The server said the last nonce was stale.
    pub stale: bool,
}

/// Splits `k=v, k="v, w"` into pairs, honouring quotes and escapes.
fn params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.trim().is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n)
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    out
}

impl Challenge {
    /// Parses a `Digest` challenge; `None` for other schemes, missing
    /// realm/nonce or an algorithm we do not know.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Algorithm::Md5;
        let mut qop_auth = false;
        let mut stale = false;
        for (k, v) in params(rest) {
            match k.as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "algorithm" => algorithm = Algorithm::parse(&v)?,
                "qop" => qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        Some(Challenge {
            realm: realm?,
            nonce: nonce?,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// The best of several challenges: SHA-256 over MD5.
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        values
            .into_iter()
            .filter_map(Challenge::parse)
            .max_by_key(|c| matches!(c.algorithm, Algorithm::Sha256))
    }

    /// The `Authorization` value answering this challenge for `method` on
    /// `uri`. `nc` counts uses of this nonce (from 1); `cnonce` is ours.
    pub fn authorization(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let ha1 = ha1(self.algorithm, username, &self.realm, password);
        let nc_text = format!("{nc:08x}");
        let qop = self.qop_auth.then_some("auth");
        let resp = response(
            self.algorithm,
            &ha1,
            method,
            uri,
            &self.nonce,
            &nc_text,
            cnonce,
            qop,
        );
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{resp}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            self.algorithm.as_str()
        );
        if qop.is_some() {
            out.push_str(&format!(
                ", qop=auth, nc={nc_text}, cnonce=\"{}\"",
                quote(cnonce)
            ));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::digest::{parse_credentials, verify};

    #[test]
    fn answers_what_the_server_side_verifies() {
        let c = Challenge::parse(
            r#"Digest realm="carrier.example", nonce="abc,def", qop="auth,auth-int", algorithm=SHA-256, opaque="xy""#,
        )
        .unwrap();
        assert!(c.qop_auth);
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let value = c.authorization(
            "alice",
            "s3cret",
            "INVITE",
            "sip:+1555@carrier.example",
            1,
            "c0ffee",
        );
        let creds = parse_credentials(&value).unwrap();
        assert_eq!(creds.nonce, "abc,def");
        assert_eq!(creds.opaque.as_deref(), Some("xy"));
        let expected = ha1(Algorithm::Sha256, "alice", "carrier.example", "s3cret");
        assert!(verify(&creds, "INVITE", &expected));
        assert!(!verify(&creds, "REGISTER", &expected));
    }

    #[test]
    fn without_qop_and_choosing_the_best() {
        let md5 = r#"Digest realm="r", nonce="n""#;
        let sha = r#"Digest realm="r", nonce="m", algorithm=SHA-256"#;
        let best = Challenge::best([md5, sha]).unwrap();
        assert_eq!(best.nonce, "m");
        let c = Challenge::parse(md5).unwrap();
        let value = c.authorization("u", "p", "REGISTER", "sip:r", 1, "x");
        assert!(!value.contains("qop"));
        let creds = parse_credentials(&value).unwrap();
        assert!(verify(
            &creds,
            "REGISTER",
            &ha1(Algorithm::Md5, "u", "r", "p")
        ));
        assert!(Challenge::parse("Basic realm=\"r\"").is_none());
        assert!(Challenge::parse("Digest nonce=\"n\"").is_none());
        assert!(Challenge::parse("Digest realm=r, nonce=n, algorithm=MD5-sess").is_none());
    }
}
