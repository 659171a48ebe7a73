//! The registrar (RFC 3261 §10, RFC 5626 outbound, RFC 3327 Path): turns a
//! REGISTER into changes of an address-of-record's bindings.
//!
//! Sans-IO: [`apply`] takes the current bindings, the request and `now`, and
//! edits the bindings or says why the request fails. The wire side (digest
//! authentication, building the response) lives in [`service`]; storage is
//! behind [`store::LocationStore`].

pub mod contact;
pub mod service;
pub mod store;

use std::net::SocketAddr;

use serde::Deserialize;

use crate::sip::{ConnectionId, TransportKind};
pub use contact::{ContactSpec, Contacts};

/// Registrar settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shortest registration accepted, in seconds (shorter: `423 Interval Too Brief`).
    pub min_expires: u64,
    /// Longest registration granted; longer requests are shortened to this.
    pub max_expires: u64,
    /// Registration time when the request names none.
    pub default_expires: u64,
    /// Most contacts one address of record may have.
    pub max_contacts: usize,
    /// Keepalive interval suggested to outbound clients (`Flow-Timer`, RFC 5626).
    pub flow_timer_secs: u64,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            flow_timer_secs: 25,
        }
    }
}

/// One registered contact of an address of record.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Contact URI.
    pub uri: String,
    /// Contact header parameters as the client wrote them (echoed in 200 OK).
    pub params: String,
    /// Preference, thousandths (RFC 3261 `q`).
    pub q: Option<u16>,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// `+sip.instance`, when given.
    pub instance: Option<String>,
    /// `reg-id`, when an outbound flow was registered.
    pub reg_id: Option<u32>,
    /// Path headers (RFC 3327), in order.
    pub path: Vec<String>,
    /// The stream connection it was registered over (TCP, TLS, WS, WSS): requests
    /// for this binding go back over it and only over it.
    pub flow: Option<ConnectionId>,
    /// Transport it was registered over.
    pub transport: TransportKind,
    /// Where the REGISTER came from (UDP bindings are reached here: symmetric signalling for NAT).
    pub source: SocketAddr,
}

impl Binding {
    /// Seconds left, 0 when expired.
    pub fn remaining(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// A REGISTER, reduced to what the registrar decides on.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// The Contact header(s); `None` is a query.
    pub contacts: Option<Contacts>,
    /// The Expires header.
    pub expires: Option<u64>,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// Path headers.
    pub path: Vec<String>,
    /// Whether the client lists `outbound` in Supported (RFC 5626).
    pub outbound: bool,
    /// Connection it arrived on, for stream transports.
    pub flow: Option<ConnectionId>,
    /// Transport it arrived on.
    pub transport: TransportKind,
    /// Source address.
    pub source: SocketAddr,
}

/// Why a REGISTER fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// A contact asked for less than the minimum (423, with Min-Expires).
    #[error("Interval Too Brief")]
    IntervalTooBrief {
        /// The minimum to put in Min-Expires.
        min: u64,
    },
    /// The request is inconsistent (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The AOR would have more contacts than allowed (403).
    #[error("Too many contacts")]
    TooManyContacts,
    /// Same Call-ID with a CSeq not higher than the binding's (RFC 3261 §10.3 step 7).
    #[error("Out of order CSeq")]
    OutOfOrder,
}

/// What a successful REGISTER did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// An outbound flow (instance + reg-id) was registered: answer with `Require: outbound`.
    pub outbound: bool,
}

/// Applies `request` to the bindings of one address of record at time `now`.
/// On error the bindings are left as they were (apart from purging expired ones).
pub fn apply(
    bindings: &mut Vec<Binding>,
    request: &RegisterRequest,
    config: &RegistrarConfig,
    now: u64,
) -> Result<Applied, RegisterError> {
    bindings.retain(|b| b.expires_at > now);
    let Some(contacts) = &request.contacts else {
        return Ok(Applied::default());
    };
    let list = match contacts {
        Contacts::Star => {
            if request.expires != Some(0) {
                return Err(RegisterError::BadRequest("Contact: * requires Expires: 0"));
            }
            bindings.retain(|b| b.call_id == request.call_id && b.cseq >= request.cseq);
            if !bindings.is_empty() {
                bindings.clear();
                return Err(RegisterError::OutOfOrder);
            }
            return Ok(Applied::default());
        }
        Contacts::List(list) => list,
    };
    let with_reg_id = list.iter().filter(|c| c.reg_id.is_some()).count();
    if with_reg_id > 0 && list.len() > 1 && request.outbound {
        return Err(RegisterError::BadRequest(
            "reg-id with more than one contact",
        ));
    }
    // Validate every contact before changing anything.
    let mut planned = Vec::with_capacity(list.len());
    for contact in list {
        let asked = contact
            .expires
            .or(request.expires)
            .unwrap_or(config.default_expires);
        if asked != 0 && asked < config.min_expires {
            return Err(RegisterError::IntervalTooBrief {
                min: config.min_expires,
            });
        }
        planned.push((contact, asked.min(config.max_expires)));
    }
    let mut next = bindings.clone();
    let mut applied = Applied::default();
    for (contact, expires) in planned {
        let outbound = request.outbound && contact.instance.is_some() && contact.reg_id.is_some();
        let existing = next.iter().position(|b| {
            if outbound {
                b.instance == contact.instance && b.reg_id == contact.reg_id
            } else if contact.instance.is_some() {
                b.instance == contact.instance
            } else {
                b.uri.eq_ignore_ascii_case(&contact.uri)
            }
        });
        if let Some(index) = existing {
            let old = &next[index];
            if old.call_id == request.call_id && request.cseq <= old.cseq {
                return Err(RegisterError::OutOfOrder);
            }
            next.remove(index);
        }
        if expires == 0 {
            continue;
        }
        applied.outbound |= outbound;
        next.push(Binding {
            uri: contact.uri.clone(),
            params: contact.params.clone(),
            q: contact.q,
            expires_at: now + expires,
            call_id: request.call_id.clone(),
            cseq: request.cseq,
            instance: contact.instance.clone(),
            reg_id: if outbound { contact.reg_id } else { None },
            path: request.path.clone(),
            flow: request.flow,
            transport: request.transport,
            source: request.source,
        });
    }
    if next.len() > config.max_contacts {
        return Err(RegisterError::TooManyContacts);
    }
    *bindings = next;
    Ok(applied)
}

/// Orders bindings for forking: highest q first, then most recent.
pub fn fork_order(bindings: &mut [Binding]) {
    bindings.sort_by(|a, b| {
        b.q.unwrap_or(1000)
            .cmp(&a.q.unwrap_or(1000))
            .then(b.expires_at.cmp(&a.expires_at))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use contact::parse_contacts;

    const NOW: u64 = 1_000_000;

    fn req(contact: &str, expires: Option<u64>, call_id: &str, cseq: u32) -> RegisterRequest {
        RegisterRequest {
            contacts: parse_contacts([contact]).unwrap(),
            expires,
            call_id: call_id.into(),
            cseq,
            path: vec![],
            outbound: true,
            flow: Some(ConnectionId(1)),
            transport: TransportKind::Wss,
            source: "127.0.0.1:5000".parse().unwrap(),
        }
    }

    fn cfg() -> RegistrarConfig {
        RegistrarConfig::default()
    }

    #[test]
    fn adds_refreshes_and_removes() {
        let mut b = vec![];
        apply(&mut b, &req("<sip:a@h>", Some(600), "c", 1), &cfg(), NOW).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].remaining(NOW), 600);
        apply(
            &mut b,
            &req("<sip:a@h>;expires=120", Some(600), "c", 2),
            &cfg(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            (b.len(), b[0].remaining(NOW)),
            (1, 120),
            "contact param wins over header"
        );
        apply(&mut b, &req("<sip:b@h>", None, "c", 3), &cfg(), NOW).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].remaining(NOW), 3600, "default expiry");
        apply(&mut b, &req("<sip:a@h>", Some(0), "c", 4), &cfg(), NOW).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].uri, "sip:b@h");
    }

    #[test]
    fn too_brief_and_capped() {
        let mut b = vec![];
        assert_eq!(
            apply(&mut b, &req("<sip:a@h>", Some(10), "c", 1), &cfg(), NOW),
            Err(RegisterError::IntervalTooBrief { min: 60 })
        );
        assert!(b.is_empty());
        apply(&mut b, &req("<sip:a@h>", Some(99_999), "c", 1), &cfg(), NOW).unwrap();
        assert_eq!(b[0].remaining(NOW), 3600);
    }

    #[test]
    fn star_removes_all_and_needs_expires_zero() {
        let mut b = vec![];
        apply(
            &mut b,
            &req("<sip:a@h>, <sip:b@h>", Some(600), "c", 1),
            &cfg(),
            NOW,
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert!(matches!(
            apply(&mut b, &req("*", Some(5), "c", 2), &cfg(), NOW),
            Err(RegisterError::BadRequest(_))
        ));
        apply(&mut b, &req("*", Some(0), "c", 2), &cfg(), NOW).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn out_of_order_cseq_is_refused() {
        let mut b = vec![];
        apply(&mut b, &req("<sip:a@h>", Some(600), "c", 5), &cfg(), NOW).unwrap();
        assert_eq!(
            apply(&mut b, &req("<sip:a@h>", Some(600), "c", 5), &cfg(), NOW),
            Err(RegisterError::OutOfOrder)
        );
        // Another Call-ID may update it.
        apply(
            &mut b,
            &req("<sip:a@h>", Some(300), "other", 1),
            &cfg(),
            NOW,
        )
        .unwrap();
        assert_eq!(b[0].remaining(NOW), 300);
    }

    #[test]
    fn outbound_reregistration_from_a_new_flow_replaces_the_old_one() {
        let mut b = vec![];
        let contact = "<sip:x@one.invalid;transport=ws>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"";
        let first = apply(&mut b, &req(contact, Some(600), "c", 1), &cfg(), NOW).unwrap();
        assert!(first.outbound);
        let mut again = req(
            "<sip:y@two.invalid;transport=ws>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"",
            Some(600),
            "c",
            2,
        );
        again.flow = Some(ConnectionId(2));
        apply(&mut b, &again, &cfg(), NOW).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].flow, Some(ConnectionId(2)));
        assert_eq!(b[0].uri, "sip:y@two.invalid;transport=ws");
    }

    #[test]
    fn expired_bindings_disappear_and_limits_hold() {
        let mut b = vec![];
        apply(&mut b, &req("<sip:a@h>", Some(60), "c", 1), &cfg(), NOW).unwrap();
        apply(&mut b, &req("<sip:q@h>", None, "d", 1), &cfg(), NOW + 61).unwrap();
        assert_eq!(b.len(), 1, "the first binding expired");
        let many: Vec<String> = (0..11).map(|i| format!("<sip:u{i}@h>")).collect();
        let mut b = vec![];
        assert_eq!(
            apply(
                &mut b,
                &req(&many.join(","), Some(600), "e", 1),
                &cfg(),
                NOW
            ),
            Err(RegisterError::TooManyContacts)
        );
    }

    #[test]
    fn fork_order_prefers_q() {
        let mut b = vec![];
        apply(
            &mut b,
            &req(
                "<sip:a@h>;q=0.1, <sip:b@h>;q=0.9, <sip:c@h>",
                Some(600),
                "c",
                1,
            ),
            &cfg(),
            NOW,
        )
        .unwrap();
        fork_order(&mut b);
        let uris: Vec<_> = b.iter().map(|b| b.uri.as_str()).collect();
        assert_eq!(uris, ["sip:c@h", "sip:b@h", "sip:a@h"]);
    }
}
