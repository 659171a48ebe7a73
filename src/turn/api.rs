//! `GET /api/ice-servers`: an RTCIceServer list with fresh TURN REST
//! credentials, for a caller that proves a SIP identity with HTTP Digest
//! (RFC 7616) against the same user directory, realm and throttling as
//! REGISTER. SHA-256 is offered first, so a browser can answer with WebCrypto;
//! MD5 is offered too for tools such as `curl --digest`.
//!
//! The realm is the SIP domain named by the `domain` query parameter, or by
//! the request's `Host`. Cross-origin callers are allowed (CORS without
//! cookies): the endpoint trusts only the `Authorization` header.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::TurnService;
use crate::auth::authenticator::{Authenticator, Outcome};
use crate::auth::digest;
use crate::directory::Directory;
use crate::registrar::service::unix_now;

/// What the endpoint needs.
pub struct IceServersApi {
    /// The TURN service (credentials, listener ports).
    pub turn: Arc<TurnService>,
    /// The SIP digest authenticator (shared with the registrar).
    pub auth: Arc<Authenticator>,
    /// SIP users and domains.
    pub directory: Arc<Directory>,
}

/// The path of the endpoint.
pub const PATH: &str = "/api/ice-servers";

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `host` of a `Host` header value (`h`, `h:port`, `[v6]:port`).
fn host_of(value: &str) -> &str {
    if value.starts_with('[') {
        return value.split_inclusive(']').next().unwrap_or(value);
    }
    value.rsplit_once(':').map_or(value, |(h, _)| h)
}

impl IceServersApi {
    /// Answers one request from `source`.
    pub fn respond(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        source: IpAddr,
    ) -> Response {
        let mut response = if method == Method::OPTIONS {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        } else {
            self.get(uri, headers, source)
        };
        let h = response.headers_mut();
        let origin = headers
            .get(header::ORIGIN)
            .cloned()
            .unwrap_or(HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("www-authenticate"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn get(&self, uri: &Uri, headers: &HeaderMap, source: IpAddr) -> Response {
        let host_header = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(host_of)
            .unwrap_or("");
        let domain = query_param(uri, "domain").unwrap_or(host_header);
        let Some(realm) = self.directory.domain_of(domain) else {
            return (StatusCode::NOT_FOUND, "unknown SIP domain\n").into_response();
        };
        let values: Vec<&str> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let now = unix_now();
        let user = match self
            .auth
            .check(&self.directory, &realm, "GET", &values, None, source, now)
        {
            Outcome::Authenticated(user) => user,
            Outcome::Challenge { stale } => {
                let mut r =
                    (StatusCode::UNAUTHORIZED, "SIP credentials required\n").into_response();
                for challenge in self.auth.challenges(&realm, stale, now) {
                    if let Ok(v) = HeaderValue::from_str(&challenge) {
                        r.headers_mut().append(header::WWW_AUTHENTICATE, v);
                    }
                }
                return r;
            }
            Outcome::Banned => {
                return (StatusCode::FORBIDDEN, "too many failures\n").into_response();
            }
        };
        // The digest must have been computed for this resource.
        let uri_ok = values
            .iter()
            .filter_map(|v| digest::parse_credentials(v).ok())
            .any(|c| c.uri.starts_with(PATH));
        if !uri_ok {
            return (
                StatusCode::BAD_REQUEST,
                "digest uri does not name this resource\n",
            )
                .into_response();
        }
        let Some(credential) = self.turn.credentials.mint(&user.aor(), now) else {
            return (StatusCode::SERVICE_UNAVAILABLE, "no TURN REST secret\n").into_response();
        };
        self.turn.metrics.credentials_issued.inc();
        let host = self.turn.public_host.as_deref().unwrap_or(host_header);
        let port = |label: &str| {
            self.turn
                .listeners
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, a)| a.port())
        };
        let mut stun = Vec::new();
        let mut turn = Vec::new();
        if let Some(p) = port("turn-udp") {
            stun.push(format!("stun:{host}:{p}"));
            turn.push(format!("turn:{host}:{p}?transport=udp"));
        }
        if let Some(p) = port("turn-tcp") {
            turn.push(format!("turn:{host}:{p}?transport=tcp"));
        }
        if let Some(p) = port("turn-tls") {
            turn.push(format!("turns:{host}:{p}?transport=tcp"));
        }
        let mut servers = Vec::new();
        if !stun.is_empty() {
            servers.push(json!({ "urls": stun }));
        }
        if !turn.is_empty() {
            servers.push(json!({
                "urls": turn,
                "username": credential.username,
                "credential": credential.password,
            }));
        }
        let body = json!({ "iceServers": servers, "ttl": credential.ttl, "user": user.aor() });
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_forms() {
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443"), "[::1]");
        assert_eq!(host_of("example.org"), "example.org");
        let uri: Uri = "/api/ice-servers?x=1&domain=example.org".parse().unwrap();
        assert_eq!(query_param(&uri, "domain"), Some("example.org"));
    }
}
