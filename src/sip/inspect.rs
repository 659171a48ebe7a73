//! Checks a raw SIP message before it reaches the SIP stack, and answers the bad ones.
//!
//! Sans-IO: bytes in, a parsed [`SipMessage`] or a [`Rejection`] out. The parser we
//! build on is lenient (it ignores lines without a colon, reads a bad
//! Content-Length as 0, accepts a truncated body), so this module enforces RFC 3261
//! framing and the configured [`Limits`] first, and builds stateless error
//! responses (`400`, `513`) from the raw header lines when a reply is possible.

use std::borrow::Cow;
use std::fmt::Write as _;

use memchr::memmem;
use rsipstack::sip::prelude::ToTypedHeader;
use rsipstack::sip::{HeadersExt, Method, SipMessage};

use super::limits::Limits;

/// How the message was delimited on the wire; decides the Content-Length rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per UDP datagram (RFC 3261 §18.3: a body shorter than
    /// Content-Length is an error; a longer one is truncated).
    Datagram,
    /// A byte stream (TCP, TLS): the framer already cut the message at Content-Length.
    Stream,
    /// One message per WebSocket frame (RFC 7118): Content-Length is optional.
    WebSocket,
}

/// Why a message was refused, and whether a response can carry the news.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// SIP status to answer with (`400`, `513`, `505`).
    pub status: u16,
    /// Human-readable reason, used as the reason phrase of the response.
    pub reason: String,
    /// Seconds for a `Retry-After` header, when the sender may try again.
    pub retry_after: Option<u32>,
}

impl Rejection {
    /// A rejection with this status and reason phrase.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// `503` for a source over its message rate (`limits.source_rate`).
    pub fn rate_limited() -> Self {
        Rejection {
            retry_after: Some(1),
            ..Self::new(503, "Rate Limited")
        }
    }
    fn bad(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }
}

/// Header names whose compact forms (RFC 3261 §7.3.3) we must recognise here.
const COMPACT: &[(&str, &str)] = &[
    ("v", "via"),
    ("f", "from"),
    ("t", "to"),
    ("i", "call-id"),
    ("l", "content-length"),
    ("m", "contact"),
    ("c", "content-type"),
    ("k", "supported"),
    ("s", "subject"),
    ("e", "content-encoding"),
];

/// The full lower-case name of a header, expanding compact forms.
fn canonical_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    for (short, long) in COMPACT {
        if lower == *short {
            return (*long).to_string();
        }
    }
    lower
}

/// The headers the pre-parse checks look at, by index into [`RawHead::first`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Via = 0,
    From = 1,
    To = 2,
    CallId = 3,
    CSeq = 4,
    ContentLength = 5,
    MaxForwards = 6,
}

const KNOWN: usize = 7;

impl Known {
    /// Which checked header `name` (full or compact form, any case) is, if any.
    /// Allocates nothing: this runs for every header line of every message.
    fn of(name: &str) -> Option<Known> {
        let is = |full: &str, compact: &str| {
            name.eq_ignore_ascii_case(full)
                || (!compact.is_empty() && name.eq_ignore_ascii_case(compact))
        };
        Some(if is("via", "v") {
            Known::Via
        } else if is("from", "f") {
            Known::From
        } else if is("to", "t") {
            Known::To
        } else if is("call-id", "i") {
            Known::CallId
        } else if is("cseq", "") {
            Known::CSeq
        } else if is("content-length", "l") {
            Known::ContentLength
        } else if is("max-forwards", "") {
            Known::MaxForwards
        } else {
            return None;
        })
    }
}

/// A header section checked line by line, without the parser's leniency.
/// Keeps only what the checks need: the first value and the count of each
/// [`Known`] header (values borrow from the message unless folded).
struct RawHead<'a> {
    start_line: &'a str,
    first: [Option<Cow<'a, str>>; KNOWN],
    count: [u16; KNOWN],
    body_offset: usize,
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Splits the header section, enforcing line, count and syntax limits.
fn split_head<'a>(raw: &'a [u8], limits: &Limits) -> Result<RawHead<'a>, Rejection> {
    let head_end = memmem::find(raw, b"\r\n\r\n").ok_or_else(|| {
        Rejection::bad("Malformed message: headers not terminated by an empty line")
    })?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| Rejection::bad("Malformed message: header section is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or_default();
    if start_line.len() > limits.max_line_length {
        return Err(Rejection::bad("Start line too long"));
    }
    let mut out = RawHead {
        start_line,
        first: Default::default(),
        count: [0; KNOWN],
        body_offset: head_end + 4,
    };
    // The header a continuation line belongs to: its length so far, and the
    // known header whose first value it is (when it is one).
    let mut last: Option<(usize, Option<Known>)> = None;
    for (index, line) in lines.enumerate() {
        if index >= limits.max_headers {
            return Err(Rejection::bad("Too many header lines"));
        }
        if line.len() > limits.max_line_length {
            return Err(Rejection::bad("Header line too long"));
        }
        if line.starts_with([' ', '\t']) {
            let Some((len, owner)) = last.as_mut() else {
                return Err(Rejection::bad(
                    "Malformed header: continuation before any header",
                ));
            };
            let piece = line.trim();
            *len += 1 + piece.len();
            if *len > limits.max_line_length {
                return Err(Rejection::bad("Folded header too long"));
            }
            if let Some(value) = owner.and_then(|k| out.first[k as usize].as_mut()) {
                let value = value.to_mut();
                value.push(' ');
                value.push_str(piece);
            }
            continue;
        }
        let colon = line.find(':').ok_or_else(|| {
            Rejection::bad(format!("Malformed header line {}: no colon", index + 2))
        })?;
        let name = line[..colon].trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(Rejection::bad(format!(
                "Malformed header name on line {}",
                index + 2
            )));
        }
        let value = line[colon + 1..].trim();
        let mut owner = None;
        if let Some(known) = Known::of(name) {
            let slot = known as usize;
            out.count[slot] = out.count[slot].saturating_add(1);
            if out.first[slot].is_none() {
                out.first[slot] = Some(Cow::Borrowed(value));
                owner = Some(known);
            }
        }
        last = Some((value.len(), owner));
    }
    Ok(out)
}

impl RawHead<'_> {
    fn first(&self, header: Known) -> Option<&str> {
        self.first[header as usize].as_deref()
    }
    fn count(&self, header: Known) -> u16 {
        self.count[header as usize]
    }
    fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/")
    }
    fn method(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start_line.split(' ').next())
            .flatten()
    }
}

/// Checks `raw` against the limits and RFC 3261, then parses it.
///
/// The returned message is exactly what the parser produced; a [`Rejection`] means
/// the message must not reach the SIP stack. Whether the rejection can be
/// answered is for [`stateless_response`] to decide.
pub fn inspect(raw: &[u8], framing: Framing, limits: &Limits) -> Result<SipMessage, Rejection> {
    if raw.len() > limits.max_message_size {
        return Err(Rejection::new(513, "Message Too Large"));
    }
    let head = split_head(raw, limits)?;
    check_start_line(head.start_line)?;
    let body_len = raw.len() - head.body_offset;
    match head.first(Known::ContentLength) {
        Some(value) => {
            let declared: usize = value
                .parse()
                .map_err(|_| Rejection::bad("Invalid Content-Length"))?;
            if declared > limits.max_message_size {
                return Err(Rejection::new(513, "Message Too Large"));
            }
            if declared > body_len {
                return Err(Rejection::bad(
                    "Content-Length larger than the message body",
                ));
            }
            if framing == Framing::Stream && declared != body_len {
                return Err(Rejection::bad(
                    "Content-Length does not match the message body",
                ));
            }
        }
        None if framing == Framing::Stream => {
            return Err(Rejection::bad(
                "Missing Content-Length on a stream transport",
            ));
        }
        None if framing == Framing::Datagram && body_len > 0 => {
            return Err(Rejection::bad("Missing Content-Length"));
        }
        None => {}
    }
    if head.is_request() {
        let method = head.method().unwrap_or_default();
        if method.parse::<Method>().is_err() {
            return Err(Rejection::new(501, "Not Implemented"));
        }
        check_request_headers(&head)?;
    }
    let message = SipMessage::try_from(raw)
        .map_err(|e| Rejection::bad(format!("Malformed message: {}", sanitize(&e.to_string()))))?;
    check_typed(&message)?;
    Ok(message)
}

fn check_start_line(line: &str) -> Result<(), Rejection> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let mut parts = rest.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        if version != "2.0" || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Rejection::bad("Malformed status line"));
        }
        return Ok(());
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    match (method, uri, version, parts.next()) {
        (Some(method), Some(uri), Some(version), None)
            if !method.is_empty() && method.bytes().all(is_token_char) && !uri.is_empty() =>
        {
            if version != "SIP/2.0" {
                return Err(Rejection::new(505, "Version Not Supported"));
            }
            Ok(())
        }
        _ => Err(Rejection::bad("Malformed request line")),
    }
}

fn check_request_headers(head: &RawHead<'_>) -> Result<(), Rejection> {
    for (header, label) in [
        (Known::Via, "Via"),
        (Known::From, "From"),
        (Known::To, "To"),
        (Known::CallId, "Call-ID"),
        (Known::CSeq, "CSeq"),
    ] {
        if head.first(header).is_none() {
            return Err(Rejection::bad(format!("Missing {label} header")));
        }
    }
    if head.count(Known::From) > 1 || head.count(Known::To) > 1 || head.count(Known::CallId) > 1 {
        return Err(Rejection::bad("Duplicate From, To or Call-ID header"));
    }
    let cseq = head.first(Known::CSeq).unwrap_or_default();
    let mut parts = cseq.split_whitespace();
    let number_ok = parts
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n < (1 << 31));
    if !number_ok {
        return Err(Rejection::bad("Malformed CSeq"));
    }
    let cseq_method = parts.next().unwrap_or_default();
    let method = head.method().unwrap_or_default();
    if cseq_method != method && !(method == "ACK" && cseq_method == "INVITE") {
        return Err(Rejection::bad(
            "CSeq method does not match the request method",
        ));
    }
    if let Some(max_forwards) = head.first(Known::MaxForwards)
        && max_forwards.parse::<u8>().is_err()
    {
        return Err(Rejection::bad("Malformed Max-Forwards"));
    }
    Ok(())
}

/// Typed checks on the headers every transaction needs.
fn check_typed(message: &SipMessage) -> Result<(), Rejection> {
    if let SipMessage::Request(req) = message {
        let via = req
            .via_header()
            .map_err(|_| Rejection::bad("Missing Via header"))?;
        let typed = via
            .typed()
            .map_err(|_| Rejection::bad("Malformed Via header"))?;
        if typed.branch().is_none() {
            return Err(Rejection::bad("Via header without branch parameter"));
        }
        req.from_header()
            .and_then(|h| h.typed())
            .map_err(|_| Rejection::bad("Malformed From header"))?;
        req.to_header()
            .and_then(|h| h.typed())
            .map_err(|_| Rejection::bad("Malformed To header"))?;
        req.cseq_header()
            .and_then(|h| h.typed())
            .map_err(|_| Rejection::bad("Malformed CSeq"))?;
    }
    Ok(())
}

/// Keeps a reason phrase to one printable line of bounded length.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(120).collect()
}

/// Builds a stateless response to a rejected request from its raw header lines.
///
/// Returns `None` when no response is possible or allowed: the message is a
/// response, an ACK, has no start line we recognise as a request, or has no Via
/// to send the response along. The response copies Via, From, To (adding a tag),
/// Call-ID and CSeq as RFC 3261 §8.2.6 asks.
/// With `source`, the top Via gets `received` and `rport` (RFC 3261 §18.2.1,
/// RFC 3581) so the response can be routed back to where the request came from.
pub fn stateless_response(
    raw: &[u8],
    rejection: &Rejection,
    server: &str,
    source: Option<std::net::SocketAddr>,
) -> Option<Vec<u8>> {
    // Look only at a bounded prefix; an oversize message may still carry usable headers.
    let window = &raw[..raw.len().min(16 * 1024)];
    let head_end = memmem::find(window, b"\r\n\r\n").unwrap_or(window.len());
    let head = String::from_utf8_lossy(&window[..head_end]);
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if start.starts_with("SIP/")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || method == Method::Ack.to_string()
        || !start.ends_with("SIP/2.0")
    {
        return None;
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in lines {
        let Some(colon) = line.find(':') else {
            continue;
        };
        let value = line[colon + 1..].trim();
        if value.len() > 2048 || value.chars().any(|c| c.is_control()) {
            continue;
        }
        match canonical_name(&line[..colon]).as_str() {
            "via" => vias.push(value),
            "from" => from = from.or(Some(value)),
            "to" => to = to.or(Some(value)),
            "call-id" => call_id = call_id.or(Some(value)),
            "cseq" => cseq = cseq.or(Some(value)),
            _ => {}
        }
    }
    if vias.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "SIP/2.0 {} {}\r\n",
        rejection.status,
        sanitize(&rejection.reason)
    );
    for (index, via) in vias.iter().take(16).enumerate() {
        match source.filter(|_| index == 0) {
            Some(source) => {
                let params: Vec<&str> = via
                    .split(';')
                    .filter(|p| {
                        let name = p
                            .trim()
                            .split('=')
                            .next()
                            .unwrap_or_default()
                            .to_ascii_lowercase();
                        name != "received" && name != "rport"
                    })
                    .collect();
                let _ = write!(
                    out,
                    "Via: {};received={};rport={}\r\n",
                    params.join(";"),
                    source.ip(),
                    source.port()
                );
            }
            None => {
                let _ = write!(out, "Via: {via}\r\n");
            }
        }
    }
    if let Some(from) = from {
        let _ = write!(out, "From: {from}\r\n");
    }
    if let Some(to) = to {
        if to.contains(";tag=") {
            let _ = write!(out, "To: {to}\r\n");
        } else {
            let _ = write!(out, "To: {to};tag={:08x}\r\n", rand_tag());
        }
    }
    if let Some(call_id) = call_id {
        let _ = write!(out, "Call-ID: {call_id}\r\n");
    }
    if let Some(cseq) = cseq {
        let _ = write!(out, "CSeq: {cseq}\r\n");
    }
    if let Some(seconds) = rejection.retry_after {
        let _ = write!(out, "Retry-After: {seconds}\r\n");
    }
    let _ = write!(out, "Server: {server}\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// A cheap, non-cryptographic tag for stateless responses.
fn rand_tag() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos.wrapping_mul(2_654_435_761)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(extra: &str, body: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\n\
             From: <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:example.com>\r\n\
             Call-ID: abc@10.0.0.1\r\n\
             CSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\n\
             {extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn accepts_a_well_formed_request() {
        let msg = inspect(&options("", ""), Framing::Datagram, &limits()).expect("valid");
        assert!(matches!(msg, SipMessage::Request(_)));
    }

    #[test]
    fn accepts_compact_and_folded_headers() {
        let raw = b"OPTIONS sip:example.com SIP/2.0\r\n\
            v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-2\r\n\
            f: <sip:alice@example.com>\r\n ;tag=a1\r\n\
            t: <sip:example.com>\r\n\
            i: compact@10.0.0.1\r\n\
            CSeq: 1 OPTIONS\r\n\
            l: 0\r\n\r\n";
        inspect(raw, Framing::Datagram, &limits()).expect("compact and folded headers are valid");
    }

    #[test]
    fn accepts_sipjs_contact_and_ipv6_via() {
        let raw = b"REGISTER sip:example.com SIP/2.0\r\n\
            Via: SIP/2.0/WSS [2001:db8::1]:5061;branch=z9hG4bK-3\r\n\
            From: <sip:1001@example.com>;tag=x\r\n\
            To: <sip:1001@example.com>\r\n\
            Call-ID: c@h\r\n\
            CSeq: 1 REGISTER\r\n\
            Contact: <sip:abc@def.invalid;transport=ws>;+sip.instance=\"<urn:uuid:0c5e>\";reg-id=1\r\n\
            Content-Length: 0\r\n\r\n";
        inspect(raw, Framing::WebSocket, &limits()).expect("SIP.js REGISTER is valid");
    }

    #[test]
    fn refuses_oversize_with_513() {
        let mut l = limits();
        l.max_message_size = 200;
        let raw = options("", &"x".repeat(300));
        let r = inspect(&raw, Framing::Datagram, &l).unwrap_err();
        assert_eq!(r.status, 513);
        let resp = stateless_response(&raw, &r, "sb", None).expect("answerable");
        assert!(String::from_utf8(resp).unwrap().starts_with("SIP/2.0 513 "));
    }

    #[test]
    fn refuses_content_length_beyond_body() {
        let raw = options("", "").into_iter().collect::<Vec<u8>>();
        let text = String::from_utf8(raw)
            .unwrap()
            .replace("Content-Length: 0", "Content-Length: 50");
        let r = inspect(text.as_bytes(), Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.reason.contains("Content-Length"), "{}", r.reason);
    }

    #[test]
    fn refuses_non_numeric_content_length() {
        let text = String::from_utf8(options("", ""))
            .unwrap()
            .replace("Content-Length: 0", "Content-Length: x");
        let r = inspect(text.as_bytes(), Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.reason, "Invalid Content-Length");
    }

    #[test]
    fn refuses_missing_call_id_but_answers() {
        let text = String::from_utf8(options("", ""))
            .unwrap()
            .replace("Call-ID: abc@10.0.0.1\r\n", "");
        let r = inspect(text.as_bytes(), Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.reason, "Missing Call-ID header");
        let resp = String::from_utf8(stateless_response(text.as_bytes(), &r, "sb", None).unwrap())
            .unwrap();
        assert!(resp.starts_with("SIP/2.0 400 Missing Call-ID header\r\n"));
        assert!(resp.contains("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\n"));
        assert!(resp.contains("To: <sip:example.com>;tag="));
        let routed = stateless_response(
            text.as_bytes(),
            &r,
            "sb",
            Some("192.0.2.7:4000".parse().unwrap()),
        )
        .unwrap();
        let routed = String::from_utf8(routed).unwrap();
        assert!(
            routed.contains(
                "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;received=192.0.2.7;rport=4000\r\n"
            ),
            "{routed}"
        );
    }

    #[test]
    fn missing_via_cannot_be_answered() {
        let text = String::from_utf8(options("", "")).unwrap().replace(
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\n",
            "",
        );
        let r = inspect(text.as_bytes(), Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.reason, "Missing Via header");
        assert!(stateless_response(text.as_bytes(), &r, "sb", None).is_none());
    }

    #[test]
    fn refuses_line_without_colon_and_too_many_headers() {
        let r = inspect(
            &options("Garbage line\r\n", ""),
            Framing::Datagram,
            &limits(),
        )
        .unwrap_err();
        assert!(
            r.reason.starts_with("Malformed header line"),
            "{}",
            r.reason
        );
        let many = "X-A: 1\r\n".repeat(200);
        let r = inspect(&options(&many, ""), Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.reason, "Too many header lines");
    }

    #[test]
    fn refuses_truncated_message() {
        let raw = options("", "");
        let cut = &raw[..raw.len() - 10];
        let r = inspect(cut, Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.status, 400);
    }

    #[test]
    fn refuses_cseq_mismatch_and_bad_version() {
        let text = String::from_utf8(options("", ""))
            .unwrap()
            .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(
            inspect(text.as_bytes(), Framing::Datagram, &limits())
                .unwrap_err()
                .reason,
            "CSeq method does not match the request method"
        );
        let text = String::from_utf8(options("", ""))
            .unwrap()
            .replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        assert_eq!(
            inspect(text.as_bytes(), Framing::Datagram, &limits())
                .unwrap_err()
                .status,
            505
        );
    }

    #[test]
    fn unknown_method_gets_501() {
        let text = String::from_utf8(options("", ""))
            .unwrap()
            .replace("OPTIONS", "FROBNICATE");
        let r = inspect(text.as_bytes(), Framing::Datagram, &limits()).unwrap_err();
        assert_eq!(r.status, 501);
        assert!(stateless_response(text.as_bytes(), &r, "sb", None).is_some());
    }

    #[test]
    fn binary_garbage_is_never_answered() {
        let garbage: Vec<u8> = (0..400u32).map(|i| (i * 7919 % 251) as u8).collect();
        let r = inspect(&garbage, Framing::Datagram, &limits()).unwrap_err();
        assert!(stateless_response(&garbage, &r, "sb", None).is_none());
    }

    #[test]
    fn responses_and_acks_are_never_answered() {
        let r = Rejection::bad("x");
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        assert!(stateless_response(resp, &r, "sb", None).is_none());
        let ack = b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        assert!(stateless_response(ack, &r, "sb", None).is_none());
    }

    #[test]
    fn no_panic_on_random_input() {
        let mut seed = 0x1234_5678u64;
        let base = options("", "v=0\r\n");
        for _ in 0..5_000 {
            let mut raw = base.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed as usize) % raw.len();
                raw[pos] = (seed >> 32) as u8;
            }
            seed ^= seed << 13;
            let cut = (seed as usize) % (raw.len() + 1);
            let raw = &raw[..cut];
            if let Err(r) = inspect(raw, Framing::Datagram, &limits()) {
                let _ = stateless_response(raw, &r, "sb", Some("127.0.0.1:5060".parse().unwrap()));
            }
        }
    }
}
