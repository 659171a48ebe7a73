//! Variables in dialplan strings: `${constant}`, `$1`..`$9`, `${N}`,
//! `${group}` (capture groups), the built-ins `${to}`, `${from}`, `${rule}`,
//! and `$$` for a literal dollar. Strings are parsed once at load; constants
//! and `${rule}` are folded in then, so expanding only copies text and
//! captures. Expansion is single-pass: expanded text is never re-scanned.

use std::collections::{BTreeMap, HashMap};

/// One piece of a parsed string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    /// Literal text (constants already folded in).
    Lit(String),
    /// Capture group `n` (1-based) of the scope's regexes.
    Cap(usize),
    /// The current called number.
    To,
    /// The current caller user.
    From,
}

/// A parsed string with variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    segs: Vec<Seg>,
}

/// What a string may refer to.
#[derive(Debug)]
pub(crate) struct Scope<'a> {
    /// All constants of the dialplan.
    pub constants: &'a BTreeMap<String, String>,
    /// Number of capture groups (`$1`..`$groups`).
    pub groups: usize,
    /// Named capture groups and their numbers.
    pub names: &'a HashMap<String, usize>,
    /// The rule's name, for `${rule}`.
    pub rule: &'a str,
    /// Whether captures, `${to}` and `${from}` are allowed (false where the
    /// value must be known at load, e.g. trunk names).
    pub runtime: bool,
}

/// A problem in a string: the character index of the `$` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct TemplateError {
    /// Character index (not byte) of the offending `$` in the string.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Names that cannot be constants.
pub(crate) const BUILTINS: [&str; 3] = ["to", "from", "rule"];

/// One `$` reference found while scanning.
enum Ref<'t> {
    Dollar,
    Number(usize),
    Name(&'t str),
}

/// A piece of a scanned string.
enum Piece<'t> {
    Lit(&'t str),
    Ref(usize, Ref<'t>),
}

/// Splits `text` into literal runs and references (with the character offset
/// of their `$`, for errors).
fn scan(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut consumed_chars = 0usize;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            pieces.push(Piece::Lit(&rest[..at]));
        }
        let offset = consumed_chars + rest[..at].chars().count();
        let after = &rest[at + 1..];
        let (item, used) = if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(TemplateError {
                    offset,
                    message: "'${' without a closing '}'".into(),
                });
            };
            let name = &body[..end];
            if name.is_empty() {
                return Err(TemplateError {
                    offset,
                    message: "empty '${}'".into(),
                });
            }
            let item = if name.bytes().all(|b| b.is_ascii_digit()) {
                Ref::Number(name.parse().unwrap_or(usize::MAX))
            } else {
                Ref::Name(name)
            };
            (item, end + 3)
        } else {
            match after.as_bytes().first() {
                Some(b'$') => (Ref::Dollar, 2),
                Some(d @ b'0'..=b'9') => (Ref::Number((d - b'0') as usize), 2),
                _ => {
                    return Err(TemplateError {
                        offset,
                        message: "'$' must be followed by a digit, '{name}' or another '$' (write '$$' for a dollar sign)".into(),
                    });
                }
            }
        };
        pieces.push(Piece::Ref(offset, item));
        consumed_chars = offset + rest[at..at + used].chars().count();
        rest = &rest[at + used..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Lit(rest));
    }
    Ok(pieces)
}

impl Template {
    /// Parses `text` in `scope`.
    pub(crate) fn parse(text: &str, scope: &Scope) -> Result<Template, TemplateError> {
        let mut segs: Vec<Seg> = Vec::new();
        for piece in scan(text)? {
            let seg = match piece {
                Piece::Lit(s) => Seg::Lit(s.to_string()),
                Piece::Ref(offset, item) => resolve(offset, item, scope)?,
            };
            match (segs.last_mut(), seg) {
                (_, Seg::Lit(s)) if s.is_empty() => {}
                (Some(Seg::Lit(last)), Seg::Lit(s)) => last.push_str(&s),
                (_, seg) => segs.push(seg),
            }
        }
        Ok(Template { segs })
    }

    /// A template that is only this text.
    pub(crate) fn literal(text: &str) -> Template {
        Template {
            segs: if text.is_empty() {
                Vec::new()
            } else {
                vec![Seg::Lit(text.to_string())]
            },
        }
    }

    /// The text when the template has no runtime parts.
    pub(crate) fn as_literal(&self) -> Option<String> {
        match self.segs.as_slice() {
            [] => Some(String::new()),
            [Seg::Lit(s)] => Some(s.clone()),
            _ => None,
        }
    }

    /// Appends the expansion to `out`. `cap(n)` gives capture group `n`
    /// (missing groups expand to nothing).
    pub(crate) fn expand_into<'c>(
        &self,
        out: &mut String,
        cap: &dyn Fn(usize) -> Option<&'c str>,
        to: &str,
        from: &str,
    ) {
        for seg in &self.segs {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Cap(n) => out.push_str(cap(*n).unwrap_or("")),
                Seg::To => out.push_str(to),
                Seg::From => out.push_str(from),
            }
        }
    }

    /// The expansion as a new string.
    pub(crate) fn expand<'c>(
        &self,
        cap: &dyn Fn(usize) -> Option<&'c str>,
        to: &str,
        from: &str,
    ) -> String {
        let mut out = String::new();
        self.expand_into(&mut out, cap, to, from);
        out
    }
}

fn resolve(offset: usize, item: Ref<'_>, scope: &Scope) -> Result<Seg, TemplateError> {
    let err = |message: String| Err(TemplateError { offset, message });
    match item {
        Ref::Dollar => Ok(Seg::Lit("$".into())),
        Ref::Number(0) => err("$0 is not a capture group; groups start at $1".into()),
        Ref::Number(n) if !scope.runtime => err(format!(
            "${n}: capture groups cannot be used here (only constants)"
        )),
        Ref::Number(n) if n > scope.groups => {
            if scope.groups == 0 {
                err(format!(
                    "${n} refers to a capture group, but there is no regex with groups here"
                ))
            } else {
                err(format!(
                    "${n} refers to capture group {n}, but there are only {} groups here",
                    scope.groups
                ))
            }
        }
        Ref::Number(n) => Ok(Seg::Cap(n)),
        Ref::Name(name) => {
            if scope.runtime
                && let Some(&n) = scope.names.get(name)
            {
                return Ok(Seg::Cap(n));
            }
            if let Some(value) = scope.constants.get(name) {
                return Ok(Seg::Lit(value.clone()));
            }
            match name {
                "rule" => Ok(Seg::Lit(scope.rule.to_string())),
                "to" | "from" if !scope.runtime => {
                    err(format!("${{{name}}} cannot be used here (only constants)"))
                }
                "to" => Ok(Seg::To),
                "from" => Ok(Seg::From),
                _ if scope.runtime => err(format!(
                    "${{{name}}} is not a constant, a named capture group or a built-in (to, from, rule)"
                )),
                _ => err(format!("${{{name}}} is not a constant")),
            }
        }
    }
}

/// Expands `${constant}` in a regex, inserting the constant escaped (as
/// literal text). Other `$` (the end anchor) are left alone.
pub(crate) fn expand_regex(
    text: &str,
    constants: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed_chars = 0usize;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let offset = consumed_chars + rest[..at].chars().count();
        let body = &rest[at + 2..];
        let end = body.find('}');
        let name = end.map(|e| &body[..e]).filter(|n| is_identifier(n));
        match (name, end) {
            (Some(name), Some(end)) => {
                let Some(value) = constants.get(name) else {
                    return Err(TemplateError {
                        offset,
                        message: format!(
                            "${{{name}}} is not a constant (regexes may use constants only)"
                        ),
                    });
                };
                out.push_str(&regex::escape(value));
                let used = 2 + end + 1;
                consumed_chars = offset + rest[at..at + used].chars().count();
                rest = &rest[at + used..];
            }
            _ => {
                out.push_str("${");
                consumed_chars = offset + 2;
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(
        constants: &'a BTreeMap<String, String>,
        names: &'a HashMap<String, usize>,
        groups: usize,
    ) -> Scope<'a> {
        Scope {
            constants,
            groups,
            names,
            rule: "r1",
            runtime: true,
        }
    }

    #[test]
    fn parses_and_expands_every_kind_of_variable() {
        let constants = BTreeMap::from([("cc".to_string(), "49".to_string())]);
        let names = HashMap::from([("ext".to_string(), 2)]);
        let t = Template::parse(
            "+${cc}-$1-${ext}-${2}-${to}-${from}-${rule}-$$",
            &scope(&constants, &names, 2),
        )
        .unwrap();
        let caps = ["whole", "a", "b"];
        let out = t.expand(&|n| caps.get(n).copied(), "600", "1001");
        assert_eq!(out, "+49-a-b-b-600-1001-r1-$");
    }

    #[test]
    fn expansion_is_single_pass() {
        let constants = BTreeMap::from([
            ("a".to_string(), "${b}".to_string()),
            ("b".to_string(), "x".to_string()),
        ]);
        let names = HashMap::new();
        let t = Template::parse("${a}", &scope(&constants, &names, 0)).unwrap();
        assert_eq!(t.as_literal().as_deref(), Some("${b}"));
        let t = Template::parse("$1", &scope(&constants, &names, 1)).unwrap();
        assert_eq!(t.expand(&|_| Some("${a}"), "", ""), "${a}");
    }

    #[test]
    fn reports_bad_references_with_their_offset() {
        let constants = BTreeMap::new();
        let names = HashMap::new();
        let s = scope(&constants, &names, 2);
        let e = Template::parse("ab$3", &s).unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.contains("only 2 groups"), "{e}");
        let e = Template::parse("é${nope}", &s).unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(e.message.contains("not a constant"), "{e}");
        assert!(Template::parse("$x", &s).is_err());
        assert!(Template::parse("${x", &s).is_err());
        assert!(Template::parse("$0", &s).is_err());
        let none = scope(&constants, &names, 0);
        assert!(
            Template::parse("$1", &none)
                .unwrap_err()
                .message
                .contains("no regex")
        );
        let literal_only = Scope {
            runtime: false,
            ..scope(&constants, &names, 2)
        };
        assert!(Template::parse("$1", &literal_only).is_err());
        assert!(Template::parse("${to}", &literal_only).is_err());
    }

    #[test]
    fn regex_constants_are_escaped_and_anchors_kept() {
        let constants = BTreeMap::from([("cc".to_string(), "+49".to_string())]);
        assert_eq!(
            expand_regex("^${cc}(\\d+)$", &constants).unwrap(),
            "^\\+49(\\d+)$"
        );
        assert_eq!(expand_regex("^a${2}$", &constants).unwrap(), "^a${2}$");
        assert_eq!(expand_regex("x${nope}", &constants).unwrap_err().offset, 1);
    }
}
