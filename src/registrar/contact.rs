//! Parsing of Contact header values (RFC 3261 §20.10) for the registrar:
//! `*`, or a comma-separated list of name-addr / addr-spec with parameters.

/// One contact of a Contact header.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactSpec {
    /// The URI, without angle brackets.
    pub uri: String,
    /// `expires` parameter, when present and numeric.
    pub expires: Option<u64>,
    /// `q` parameter in thousandths (0..=1000).
    pub q: Option<u16>,
    /// `+sip.instance` (RFC 5626), unquoted, e.g. `<urn:uuid:...>`.
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626).
    pub reg_id: Option<u32>,
    /// Header parameters as written (after the URI), for echoing back.
    pub params: String,
}

/// A Contact header's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Contacts {
    /// `Contact: *` (remove all bindings).
    Star,
    /// One or more contacts.
    List(Vec<ContactSpec>),
}

/// Why a Contact value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Contact: {0}")]
pub struct ContactError(pub &'static str);

/// Splits on commas that are outside quotes and angle brackets.
fn split_top_level(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// Parses all Contact header values of a request (each may hold a list).
pub fn parse_contacts<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Contacts>, ContactError> {
    let mut list = Vec::new();
    let mut star = false;
    for value in values {
        for part in split_top_level(value) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if part == "*" {
                star = true;
                continue;
            }
            list.push(parse_one(part)?);
        }
    }
    match (star, list.is_empty()) {
        (true, true) => Ok(Some(Contacts::Star)),
        (true, false) => Err(ContactError("'*' mixed with other contacts")),
        (false, true) => Ok(None),
        (false, false) => Ok(Some(Contacts::List(list))),
    }
}

fn parse_one(part: &str) -> Result<ContactSpec, ContactError> {
    if part.len() > 2048 {
        return Err(ContactError("contact too long"));
    }
    let (uri, params) = if let Some(open) = find_unquoted(part, '<') {
        let close = part[open..]
            .find('>')
            .map(|c| open + c)
            .ok_or(ContactError("unclosed '<'"))?;
        (part[open + 1..close].trim(), part[close + 1..].trim())
    } else {
        // addr-spec: parameters after ';' are header parameters (RFC 3261 §20.10).
        match part.find(';') {
            Some(semi) => (part[..semi].trim(), part[semi..].trim()),
            None => (part, ""),
        }
    };
    let scheme_ok = ["sip:", "sips:", "tel:"].iter().any(|s| {
        uri.len() > s.len() && uri.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
    });
    if !scheme_ok || uri.contains(char::is_whitespace) {
        return Err(ContactError("contact URI must be sip:, sips: or tel:"));
    }
    // RFC 3261 §25.1: a URI is ASCII; anything else is %-escaped.
    if !uri.is_ascii() {
        return Err(ContactError("contact URI must be ASCII (escape the rest)"));
    }
    let mut spec = ContactSpec {
        uri: uri.to_string(),
        expires: None,
        q: None,
        instance: None,
        reg_id: None,
        params: params.to_string(),
    };
    for param in split_params(params) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("expires", Some(v)) => {
                spec.expires = Some(v.parse().map_err(|_| ContactError("bad expires"))?)
            }
            ("q", Some(v)) => spec.q = Some(parse_q(v).ok_or(ContactError("bad q"))?),
            ("+sip.instance", Some(v)) => spec.instance = Some(v.trim_matches('"').to_string()),
            ("reg-id", Some(v)) => {
                spec.reg_id = Some(v.parse().map_err(|_| ContactError("bad reg-id"))?)
            }
            _ => {}
        }
    }
    Ok(spec)
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == target && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

fn split_params(params: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut start) = (false, 0);
    for (i, c) in params.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                out.push(&params[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&params[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

fn parse_q(v: &str) -> Option<u16> {
    let f: f32 = v.parse().ok()?;
    (0.0..=1.0)
        .contains(&f)
        .then(|| (f * 1000.0).round() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sipjs_contact() {
        let c = parse_contacts(["<sip:k0s7rr3n@q4oa2a5t0d0e.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:bb2e6a01-1c5e-4b58-8a57-6bc0b6e2ee3c>\";expires=600"]).unwrap().unwrap();
        let Contacts::List(list) = c else { panic!() };
        assert_eq!(
            list[0].uri,
            "sip:k0s7rr3n@q4oa2a5t0d0e.invalid;transport=ws"
        );
        assert_eq!(list[0].reg_id, Some(1));
        assert_eq!(list[0].expires, Some(600));
        assert_eq!(
            list[0].instance.as_deref(),
            Some("<urn:uuid:bb2e6a01-1c5e-4b58-8a57-6bc0b6e2ee3c>")
        );
    }

    #[test]
    fn non_ascii_contact_uris_are_refused_without_panicking() {
        // The scheme test once sliced at byte 4, inside the "é".
        for contact in ["<abcé@h>", "abcé@h", "<sipé:a@h>", "<sip:é@h>", "<é>", "é"] {
            assert!(parse_contacts([contact]).is_err(), "{contact}");
        }
        assert!(parse_contacts(["<sip:a%C3%A9@h>"]).is_ok());
    }

    #[test]
    fn parses_lists_star_and_addr_spec() {
        let c = parse_contacts([
            "\"A, B\" <sip:a@h1>;q=0.7, sip:b@h2;expires=60",
            "<sip:c@[2001:db8::1]:5060>",
        ])
        .unwrap()
        .unwrap();
        let Contacts::List(list) = c else { panic!() };
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].q, Some(700));
        assert_eq!(list[1].uri, "sip:b@h2");
        assert_eq!(list[1].expires, Some(60));
        assert_eq!(list[2].uri, "sip:c@[2001:db8::1]:5060");
        assert_eq!(parse_contacts(["*"]).unwrap(), Some(Contacts::Star));
        assert!(parse_contacts(["*", "<sip:a@b>"]).is_err());
        assert_eq!(parse_contacts(std::iter::empty()).unwrap(), None);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_contacts(["<sip:a@b"]).is_err());
        assert!(parse_contacts(["<http://x>"]).is_err());
        assert!(parse_contacts(["<sip:a@b>;expires=soon"]).is_err());
        assert!(parse_contacts(["<sip:a@b>;q=7"]).is_err());
    }
}
