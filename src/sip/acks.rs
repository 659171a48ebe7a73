//! The ACKs of 2xx responses to INVITEs we send (RFC 3261 §13.2.2.4, RFC
//! 6026 §7.2).
//!
//! The transaction layer ends a client INVITE at its 2xx: the ACK belongs
//! to the dialog, and its owner (the B2BUA) sends it to the dialog's remote
//! target along its route set, which may be another node than the one the
//! INVITE went to (a carrier answering from another address). A lost ACK
//! shows as the same 2xx again: [`Acks`] keeps every ACK sent, by the
//! INVITE's Call-ID, From tag and CSeq number, and hands it back for a
//! retransmitted 2xx of the same dialog (To tag). A 2xx of another dialog
//! (another fork answering, §13.2.2.4) goes to the INVITE's owner, which
//! ACKs it and hangs it up: from the moment the first 2xx reached the
//! owner ([`Acks::expect`]), even before its ACK is out. An entry lives as
//! long as its [`AckGuard`]: the owner's leg, or 64·T1 for a re-INVITE.
//!
//! Sans-IO: sending is the caller's ([`super::SipCore::send_ack`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::{Header, HeadersExt, Method, Request, Response, ToTypedHeader, Uri};

/// Called with a 2xx from a dialog of the INVITE other than the ones
/// ACKed (another fork answering).
pub type ForkHandler = Arc<dyn Fn(Response) + Send + Sync>;

/// Dialogs (the answer and other forks' 2xx) one INVITE's entry keeps.
const MAX_DIALOGS: usize = 16;

/// An INVITE we sent: Call-ID, From tag, CSeq number.
type Key = (String, String, u32);

struct Entry<H> {
    /// The To tag of the 2xx that settled the call (its ACK may still be
    /// on its way).
    answered: Option<String>,
    /// Per dialog (To tag): the ACK sent, and the hop it went on.
    sent: Vec<(String, Request, H)>,
    /// Other forks' dialogs (To tags) handed to the owner whose ACK is not
    /// out yet: their retransmitted 2xx are not handed over again.
    handed: Vec<String>,
    forks: Option<ForkHandler>,
}

/// The ACKs sent (with the hop `H` each went on), for the retransmissions
/// of their 2xx.
pub struct Acks<H> {
    map: Mutex<HashMap<Key, Entry<H>>>,
}

/// What to do with a 2xx that [`Acks::on_success`] knew.
pub enum Known<H> {
    /// A retransmission of an ACKed 2xx: send this ACK again on this hop.
    Resend(Box<(Request, H)>),
    /// A 2xx from another dialog of the INVITE: handed to its owner.
    Fork(ForkHandler),
    /// The answering 2xx again before its ACK went out: nothing to do.
    Pending,
}

/// Keeps an INVITE's ACKs in the table; dropping it forgets them.
pub struct AckGuard<H> {
    table: Weak<Acks<H>>,
    key: Key,
}

impl<H> Drop for AckGuard<H> {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade()
            && let Ok(mut map) = table.map.lock()
        {
            map.remove(&self.key);
        }
    }
}

fn tag_of(params: &[super::Param]) -> Option<String> {
    params.iter().find_map(|p| match p {
        super::Param::Tag(t) => Some(t.value().to_string()),
        _ => None,
    })
}

/// The INVITE a message belongs to (Call-ID, From tag, CSeq number) and
/// its dialog's To tag; `None` unless its CSeq method is `method`.
fn identify(message: &impl HeadersExt, method: Method) -> Option<(Key, String)> {
    let cseq = message.cseq_header().ok()?;
    if cseq.method().ok()? != method {
        return None;
    }
    let seq = cseq.seq().ok()?;
    let call_id = message.call_id_header().ok()?.value().to_string();
    let from = tag_of(&message.from_header().ok()?.typed().ok()?.params)?;
    let to = tag_of(&message.to_header().ok()?.typed().ok()?.params)?;
    Some(((call_id, from, seq), to))
}

impl<H: Clone> Acks<H> {
    /// A new, empty table.
    pub fn new() -> Arc<Acks<H>> {
        Arc::new(Acks {
            map: Mutex::new(HashMap::new()),
        })
    }

    /// The first 2xx of an INVITE reached its owner: from now on, a 2xx of
    /// another dialog goes to `forks`, while the ACK of this one is being
    /// sent ([`Acks::record`]). Returns the guard that keeps the entry;
    /// `None` when the entry exists, or for a response that is no 2xx to
    /// an INVITE with a To tag.
    pub fn expect(self: &Arc<Self>, answer: &Response, forks: ForkHandler) -> Option<AckGuard<H>> {
        let (key, to_tag) = identify(answer, Method::Invite)?;
        let mut map = self.map.lock().ok()?;
        if map.contains_key(&key) {
            return None;
        }
        map.insert(
            key.clone(),
            Entry {
                answered: Some(to_tag),
                sent: Vec::new(),
                handed: Vec::new(),
                forks: Some(forks),
            },
        );
        Some(AckGuard {
            table: Arc::downgrade(self),
            key,
        })
    }

    /// Records `ack` (sent on `hop`) for the retransmissions of its 2xx.
    /// It joins its INVITE's entry ([`Acks::expect`], or an earlier ACK: a
    /// fork's); without one it creates it and returns its guard. `None`
    /// too for a request that is no ACK with a To tag.
    pub fn record(self: &Arc<Self>, ack: &Request, hop: &H) -> Option<AckGuard<H>> {
        let (key, to_tag) = identify(ack, Method::Ack)?;
        let mut map = self.map.lock().ok()?;
        let sent = (to_tag, ack.clone(), hop.clone());
        if let Some(entry) = map.get_mut(&key) {
            entry.handed.retain(|tag| *tag != sent.0);
            entry.sent.retain(|(tag, _, _)| *tag != sent.0);
            entry.sent.push(sent);
            return None;
        }
        map.insert(
            key.clone(),
            Entry {
                answered: None,
                sent: vec![sent],
                handed: Vec::new(),
                forks: None,
            },
        );
        Some(AckGuard {
            table: Arc::downgrade(self),
            key,
        })
    }

    /// A 2xx to an INVITE: `None` when none of its ACKs was sent (the
    /// first 2xx: the transaction layer passes it on).
    pub fn on_success(&self, response: &Response) -> Option<Known<H>> {
        let (key, to_tag) = identify(response, Method::Invite)?;
        let mut map = self.map.lock().ok()?;
        let entry = map.get_mut(&key)?;
        match entry.sent.iter().find(|(tag, _, _)| *tag == to_tag) {
            Some((_, ack, hop)) => {
                // Each 2xx gets an ACK of its own (a new branch): a peer
                // may take the same bytes again for a retransmission of
                // the first ACK.
                let mut ack = ack.clone();
                for h in ack.headers.iter_mut() {
                    if let Header::Via(via) = h {
                        *h = Header::Via(with_branch(via.value(), &new_branch()).into());
                        break;
                    }
                }
                Some(Known::Resend(Box::new((ack, hop.clone()))))
            }
            None if entry.answered.as_deref() == Some(to_tag.as_str())
                || entry.handed.contains(&to_tag) =>
            {
                Some(Known::Pending)
            }
            // Forks enough: more 2xx of new dialogs are dropped (each
            // would cost an ACK, a BYE and a slot here).
            None if entry.sent.len() + entry.handed.len() >= MAX_DIALOGS => Some(Known::Pending),
            None => {
                let forks = entry.forks.clone()?;
                entry.handed.push(to_tag);
                Some(Known::Fork(forks))
            }
        }
    }

    /// Entries held (INVITEs whose ACKs are kept).
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new Via branch of one of our ACKs.
fn new_branch() -> String {
    format!("z9hG4bK-sba{}", super::random_hex(8))
}

/// The value of a Via with its `branch` parameter replaced by `branch`.
fn with_branch(via: &str, branch: &str) -> String {
    let mut out = String::with_capacity(via.len() + branch.len());
    let mut replaced = false;
    for (i, part) in via.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        let name = part.split('=').next().unwrap_or("").trim();
        if i > 0 && name.eq_ignore_ascii_case("branch") {
            out.push_str("branch=");
            out.push_str(branch);
            replaced = true;
        } else {
            out.push_str(part);
        }
    }
    if !replaced {
        out.push_str(";branch=");
        out.push_str(branch);
    }
    out
}

/// The ACK of a 2xx to `invite` (RFC 3261 §13.2.2.4): the INVITE's
/// Call-ID, From, CSeq number, credentials and top Via (with a new
/// branch), its To with the answering dialog's `to_tag`, sent to `target`
/// along `routes` (Route values, in order).
pub fn ack_for(invite: &Request, to_tag: &str, target: Uri, routes: &[String]) -> Request {
    let mut headers: Vec<Header> = Vec::with_capacity(10);
    if let Some(via) = invite.headers.iter().find_map(|h| match h {
        Header::Via(v) => Some(v.value().to_string()),
        _ => None,
    }) {
        headers.push(Header::Via(with_branch(&via, &new_branch()).into()));
    }
    for route in routes {
        headers.push(Header::Route(route.clone().into()));
    }
    headers.push(Header::MaxForwards("70".into()));
    for h in invite.headers.iter() {
        match h {
            Header::From(_)
            | Header::CallId(_)
            | Header::Authorization(_)
            | Header::ProxyAuthorization(_)
            | Header::UserAgent(_) => headers.push(h.clone()),
            Header::To(to) => {
                let has_tag = to.typed().ok().and_then(|t| tag_of(&t.params)).is_some();
                let value = if has_tag || to_tag.is_empty() {
                    to.value().to_string()
                } else {
                    format!("{};tag={to_tag}", to.value())
                };
                headers.push(Header::To(value.into()));
            }
            Header::CSeq(cseq) => {
                let seq = cseq.seq().unwrap_or(1);
                headers.push(Header::CSeq(format!("{seq} ACK").into()));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(0u32.into()));
    Request {
        method: Method::Ack,
        uri: target,
        version: super::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// The ACK of a 2xx to a re-INVITE (in a dialog: its To already has the
/// tag): to the 2xx's Contact (a target refresh), else where the re-INVITE
/// went, along the re-INVITE's Route set.
pub fn ack_in_dialog(invite: &Request, response: &Response) -> Request {
    let routes: Vec<String> = invite
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(r) => Some(r.value().to_string()),
            _ => None,
        })
        .collect();
    let target = response
        .contact_header()
        .ok()
        .and_then(|c| c.typed().ok())
        .map(|c| c.uri)
        .unwrap_or_else(|| invite.uri.clone());
    let to_tag = response
        .to_header()
        .ok()
        .and_then(|t| t.typed().ok())
        .and_then(|t| tag_of(&t.params))
        .unwrap_or_default();
    ack_for(invite, &to_tag, target, &routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Request {
        let text = "INVITE sip:+15551234567@10.0.0.1:5060 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-sbt1;rport\r\n\
            Max-Forwards: 70\r\n\
            From: <sip:alice@192.0.2.1>;tag=ft\r\n\
            To: <sip:+15551234567@10.0.0.1>\r\n\
            Call-ID: c1\r\n\
            CSeq: 2 INVITE\r\n\
            Proxy-Authorization: Digest username=\"u\"\r\n\
            Content-Length: 0\r\n\r\n";
        Request::try_from(text).expect("invite")
    }

    fn ok(tag: &str) -> Response {
        let text = format!(
            "SIP/2.0 200 OK\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-sbt1;rport\r\n\
            From: <sip:alice@192.0.2.1>;tag=ft\r\n\
            To: <sip:+15551234567@10.0.0.1>;tag={tag}\r\n\
            Call-ID: c1\r\n\
            CSeq: 2 INVITE\r\n\
            Contact: <sip:node@10.0.0.2:5070>\r\n\
            Content-Length: 0\r\n\r\n"
        );
        Response::try_from(text.as_str()).expect("200")
    }

    fn hop() -> u8 {
        7
    }

    #[test]
    fn the_ack_goes_to_the_dialog_with_its_own_branch() {
        let target = Uri::try_from("sip:node@10.0.0.2:5070").expect("uri");
        let routes = vec!["<sip:10.0.0.3;lr>".to_string()];
        let ack = ack_for(&invite(), "tt", target, &routes);
        let text = ack.to_string();
        assert!(
            text.starts_with("ACK sip:node@10.0.0.2:5070 SIP/2.0"),
            "{text}"
        );
        assert!(text.contains("CSeq: 2 ACK"), "{text}");
        assert!(text.contains(";tag=tt"), "{text}");
        assert!(text.contains("Route: <sip:10.0.0.3;lr>"), "{text}");
        assert!(text.contains("Proxy-Authorization: Digest"), "{text}");
        assert!(!text.contains("branch=z9hG4bK-sbt1"), "{text}");
        assert!(text.contains("branch=z9hG4bK-sba"), "{text}");
        assert!(text.contains(";rport"), "{text}");
    }

    #[test]
    fn a_retransmitted_2xx_gets_its_ack_again_and_a_fork_goes_to_the_owner() {
        let table = Acks::new();
        // Nothing known yet: the first 2xx is the transaction layer's.
        assert!(table.on_success(&ok("a")).is_none());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let forks: ForkHandler = Arc::new(move |r: Response| {
            sink.lock().expect("lock").push(r.to_string());
        });
        // The owner got it: until its ACK is out, the same 2xx again is
        // dropped and another fork's goes to the owner.
        let guard = table.expect(&ok("a"), forks).expect("first");
        assert!(table.expect(&ok("a"), Arc::new(|_| {})).is_none());
        assert!(matches!(table.on_success(&ok("a")), Some(Known::Pending)));
        let target = Uri::try_from("sip:node@10.0.0.2:5070").expect("uri");
        let ack = ack_for(&invite(), "a", target.clone(), &[]);
        assert!(table.record(&ack, &hop()).is_none(), "joins the entry");
        match table.on_success(&ok("a")) {
            Some(Known::Resend(sent)) => {
                // The same ACK with a branch of its own.
                let (again, first) = (sent.0.to_string(), ack.to_string());
                assert_ne!(again, first);
                let without_via =
                    |t: &str| -> String { t.lines().filter(|l| !l.starts_with("Via:")).collect() };
                assert_eq!(without_via(&again), without_via(&first));
            }
            _ => panic!("not resent"),
        }
        match table.on_success(&ok("b")) {
            Some(Known::Fork(handler)) => handler(ok("b")),
            _ => panic!("fork not reported"),
        }
        assert_eq!(seen.lock().expect("lock").len(), 1);
        // Its retransmission before the owner's ACK is out is not handed
        // on again (a second ACK and BYE).
        assert!(matches!(table.on_success(&ok("b")), Some(Known::Pending)));
        // The fork's ACK joins the entry: its retransmission is re-ACKed.
        let fork_ack = ack_for(&invite(), "b", target, &[]);
        assert!(table.record(&fork_ack, &hop()).is_none());
        assert!(matches!(table.on_success(&ok("b")), Some(Known::Resend(_))));
        assert_eq!(table.len(), 1);
        // At most MAX_DIALOGS dialogs per INVITE: past them a new fork's
        // 2xx is dropped, not handed on.
        for i in 0..MAX_DIALOGS {
            let tag = format!("f{i}");
            let fork = ack_for(
                &invite(),
                &tag,
                Uri::try_from("sip:x@10.0.0.9").expect("uri"),
                &[],
            );
            let _ = table.record(&fork, &hop());
        }
        assert!(matches!(table.on_success(&ok("new")), Some(Known::Pending)));
        assert!(matches!(table.on_success(&ok("a")), Some(Known::Resend(_))));
        drop(guard);
        assert!(table.is_empty());
        assert!(table.on_success(&ok("a")).is_none());
        // Without `expect` (a re-INVITE's ACK), the ACK makes the entry.
        let again = table.record(&ack, &hop()).expect("new entry");
        assert!(matches!(table.on_success(&ok("a")), Some(Known::Resend(_))));
        drop(again);
        assert!(table.is_empty());
    }

    #[test]
    fn a_re_invites_ack_follows_a_target_refresh() {
        let mut reinvite = invite();
        reinvite.headers.retain(|h| !matches!(h, Header::To(_)));
        reinvite
            .headers
            .push(Header::To("<sip:+15551234567@10.0.0.1>;tag=a".into()));
        reinvite
            .headers
            .push(Header::Route("<sip:10.0.0.3;lr>".into()));
        let ack = ack_in_dialog(&reinvite, &ok("a")).to_string();
        assert!(
            ack.starts_with("ACK sip:node@10.0.0.2:5070 SIP/2.0"),
            "{ack}"
        );
        assert!(ack.contains("Route: <sip:10.0.0.3;lr>"), "{ack}");
        assert_eq!(ack.matches("tag=a").count(), 1, "{ack}");
    }

    #[test]
    fn with_branch_replaces_or_adds() {
        assert_eq!(
            with_branch("SIP/2.0/UDP h:1;branch=z9hG4bKx;rport", "z9hG4bKy"),
            "SIP/2.0/UDP h:1;branch=z9hG4bKy;rport"
        );
        assert_eq!(
            with_branch("SIP/2.0/UDP h:1", "z9hG4bKy"),
            "SIP/2.0/UDP h:1;branch=z9hG4bKy"
        );
    }
}
