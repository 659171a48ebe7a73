//! Serializes a final response to a request straight into a byte buffer
//! (RFC 3261 §8.2.6), for requests answered without the transaction layer.
//!
//! Sans-IO and allocation-free apart from growing the caller's buffer: the
//! response copies the request's Via headers (the top one already carries
//! `received`/`rport`), From, To (with a To tag added when the request had
//! none), Call-ID and CSeq, then the answer's own headers, `Server` and
//! `Content-Length: 0`.

use std::io::Write as _;

use super::{Header, Request, StatusCode};

/// Length of the To tag we add, in hex digits.
const TAG_LEN: usize = 16;

/// Writes the response to `request` with `status` and `headers` into `out`
/// (which is cleared first).
pub fn write_final_response(
    out: &mut Vec<u8>,
    request: &Request,
    status: &StatusCode,
    headers: &[Header],
    server: &str,
) {
    out.clear();
    // Writes into a Vec cannot fail.
    let _ = write!(out, "SIP/2.0 {} {}\r\n", status.code(), status.text());
    for header in request.headers.iter() {
        match header {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                let _ = write!(out, "{header}\r\n");
            }
            Header::To(to) => {
                let _ = write!(out, "{header}");
                if to.tag().ok().flatten().is_none() {
                    out.extend_from_slice(b";tag=");
                    write_tag(out);
                }
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    for header in headers {
        let _ = write!(out, "{header}\r\n");
    }
    let _ = write!(out, "Server: {server}\r\nContent-Length: 0\r\n\r\n");
}

/// Appends a random To tag (RFC 3261 §19.3: at least 32 bits of randomness).
fn write_tag(out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random: u64 = rand::random();
    for i in 0..TAG_LEN {
        out.push(HEX[((random >> (4 * i)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::SipMessage;

    /// The To tag of a serialized response.
    fn to_tag(response: &[u8]) -> Option<&str> {
        let text = std::str::from_utf8(response).ok()?;
        let line = text
            .split("\r\n")
            .find(|l| l.len() > 3 && l[..3].eq_ignore_ascii_case("to:"))?;
        let start = line.find(";tag=")? + 5;
        line[start..].split([';', ' ', '>']).next()
    }

    fn request(to: &str) -> Request {
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;received=192.0.2.1;rport=4000\r\n\
             Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-0\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:1001@example.com>;tag=a1\r\n\
             To: {to}\r\n\
             Call-ID: abc@10.0.0.1\r\n\
             CSeq: 7 REGISTER\r\n\
             Contact: <sip:1001@10.0.0.1>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match SipMessage::try_from(raw.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn copies_the_transaction_headers_and_adds_a_to_tag() {
        let mut out = Vec::new();
        write_final_response(
            &mut out,
            &request("<sip:1001@example.com>"),
            &StatusCode::Unauthorized,
            &[Header::WwwAuthenticate("Digest realm=\"x\"".into())],
            "sb",
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains(
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;received=192.0.2.1;rport=4000\r\n\
             Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-0\r\n"
        ));
        assert!(text.contains("From: <sip:1001@example.com>;tag=a1\r\n"));
        assert!(text.contains("Call-ID: abc@10.0.0.1\r\nCSeq: 7 REGISTER\r\n"));
        assert!(text.contains("WWW-Authenticate: Digest realm=\"x\"\r\n"));
        assert!(text.ends_with("Server: sb\r\nContent-Length: 0\r\n\r\n"));
        assert!(!text.contains("Contact") && !text.contains("Max-Forwards"));
        assert_eq!(to_tag(&out).map(str::len), Some(TAG_LEN));
        let parsed = SipMessage::try_from(out.as_slice()).expect("parses");
        assert!(matches!(parsed, SipMessage::Response(_)));
    }

    #[test]
    fn keeps_an_existing_to_tag() {
        let mut out = Vec::new();
        write_final_response(
            &mut out,
            &request("<sip:1001@example.com>;tag=zz"),
            &StatusCode::OK,
            &[],
            "sb",
        );
        assert_eq!(to_tag(&out), Some("zz"));
        assert_eq!(String::from_utf8(out).unwrap().matches(";tag=").count(), 2);
    }
}
