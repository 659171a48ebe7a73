//! The registrar on the wire: authenticates a REGISTER, applies it to the
//! location store, and answers with the current bindings.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info};

use super::contact::parse_contacts;
use super::store::LocationStore;
use super::{RegisterError, RegisterRequest, RegistrarConfig, apply};
use crate::auth::authenticator::{Authenticator, Outcome};
use crate::directory::Directory;
use crate::sip::{Header, HeadersExt, Request, Source, StatusCode, ToTypedHeader};

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// All values of the headers `matches` selects, in order.
pub fn header_values<'a>(
    request: &'a Request,
    matches: impl Fn(&'a Header) -> Option<&'a str>,
) -> Vec<&'a str> {
    request.headers.iter().filter_map(matches).collect()
}

/// Whether a comma-separated option-tag header list contains `tag`.
pub fn has_option_tag(values: &[&str], tag: &str) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// What to answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Extra headers.
    pub headers: Vec<Header>,
}

/// The registrar service: shared by every REGISTER transaction.
pub struct Registrar {
    /// Settings.
    pub config: RegistrarConfig,
    /// Bindings.
    pub store: Arc<dyn LocationStore>,
    /// Credentials checking.
    pub auth: Arc<Authenticator>,
    /// Live bindings, for the metrics.
    pub bindings: Arc<crate::metrics::Gauge>,
}

impl Registrar {
    /// Decides the answer to a REGISTER from `source` at `now`.
    pub fn register(
        &self,
        directory: &Directory,
        request: &Request,
        source: Source,
        now: u64,
    ) -> Answer {
        let simple = |status| Answer {
            status,
            headers: vec![],
        };
        let Ok(to) = request.to_header().and_then(|h| h.typed()) else {
            return simple(StatusCode::BadRequest);
        };
        let Some(user) = to.uri.user().map(str::to_string) else {
            return simple(StatusCode::BadRequest);
        };
        let host = to.uri.host_with_port.host.to_string();
        let Some(realm) = directory.domain_of(&host) else {
            // Not a domain of ours: no realm to challenge in.
            return simple(StatusCode::Forbidden);
        };
        let credentials = header_values(request, |h| match h {
            Header::Authorization(a) => Some(a.value()),
            _ => None,
        });
        match self.auth.check(
            directory,
            &realm,
            "REGISTER",
            &credentials,
            Some(&user),
            source.remote.ip(),
            now,
        ) {
            Outcome::Banned => return simple(StatusCode::Forbidden),
            Outcome::Challenge { stale } => {
                let headers = self
                    .auth
                    .challenges(&realm, stale, now)
                    .into_iter()
                    .map(|c| Header::WwwAuthenticate(c.into()))
                    .collect();
                return Answer {
                    status: StatusCode::Unauthorized,
                    headers,
                };
            }
            Outcome::Authenticated(_) => {}
        }
        let aor = format!("{user}@{realm}");
        let contacts = match parse_contacts(header_values(request, |h| match h {
            Header::Contact(c) => Some(c.value()),
            _ => None,
        })) {
            Ok(contacts) => contacts,
            Err(_) => return simple(StatusCode::BadRequest),
        };
        let expires = match header_values(request, |h| match h {
            Header::Expires(e) => Some(e.value()),
            _ => None,
        })
        .first()
        {
            Some(value) => match value.trim().parse() {
                Ok(v) => Some(v),
                Err(_) => return simple(StatusCode::BadRequest),
            },
            None => None,
        };
        let supported = header_values(request, |h| match h {
            Header::Supported(s) => Some(s.value()),
            _ => None,
        });
        let path: Vec<String> = header_values(request, |h| match h {
            Header::Path(p) => Some(p.value()),
            _ => None,
        })
        .into_iter()
        .map(str::to_string)
        .collect();
        let (call_id, cseq) = match (
            request.call_id_header(),
            request.cseq_header().and_then(|c| c.seq()),
        ) {
            (Ok(call_id), Ok(cseq)) => (call_id.value().to_string(), cseq),
            _ => return simple(StatusCode::BadRequest),
        };
        let register = RegisterRequest {
            contacts,
            expires,
            call_id,
            cseq,
            path: path.clone(),
            outbound: has_option_tag(&supported, "outbound"),
            flow: source.flow,
            transport: source.kind,
            source: source.remote,
        };
        let mut delta: i64 = 0;
        let result = self.store.update(&aor, &mut |bindings| {
            let before = bindings.len() as i64;
            let result = apply(bindings, &register, &self.config, now);
            delta = bindings.len() as i64 - before;
            result
        });
        self.bindings.add(delta);
        let applied = match result {
            Ok(applied) => applied,
            Err(RegisterError::IntervalTooBrief { min }) => {
                return Answer {
                    status: StatusCode::IntervalTooBrief,
                    headers: vec![Header::MinExpires(min.to_string().into())],
                };
            }
            Err(RegisterError::BadRequest(reason)) => {
                debug!(%aor, reason, "REGISTER refused");
                return simple(StatusCode::BadRequest);
            }
            Err(RegisterError::TooManyContacts) => return simple(StatusCode::Forbidden),
            Err(RegisterError::OutOfOrder) => return simple(StatusCode::ServerInternalError),
        };
        let bindings = self.store.lookup(&aor, now);
        let mut headers: Vec<Header> = bindings
            .iter()
            .map(|b| {
                let params: String = b
                    .params
                    .split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("expires"))
                    .map(|p| format!(";{p}"))
                    .collect();
                Header::Contact(
                    format!("<{}>{};expires={}", b.uri, params, b.remaining(now)).into(),
                )
            })
            .collect();
        if applied.outbound {
            headers.push(Header::Require("outbound".into()));
            headers.push(Header::Other(
                "Flow-Timer".into(),
                self.config.flow_timer_secs.to_string(),
            ));
        }
        if !path.is_empty() && has_option_tag(&supported, "path") {
            headers.extend(path.into_iter().map(|p| Header::Path(p.into())));
        }
        headers.push(Header::Supported("path, outbound".into()));
        info!(%aor, contacts = bindings.len(), transport = source.kind.as_str(), remote = %source.remote, "registered");
        Answer {
            status: StatusCode::OK,
            headers,
        }
    }
}
