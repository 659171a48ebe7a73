//! Checks across rules: unreachable rules after a catch-all (an error),
//! shadowed rules, and trunk routes that let anyone dial international
//! numbers (warnings).

use regex::Regex;
use regex_automata::Anchored;
use regex_automata::dfa::{Automaton, dense};
use regex_automata::util::{start, syntax};

use super::compile::{Matcher, Rule, RuleMeta};
use super::{Diagnostic, Severity};

/// Prefixes of international numbers.
const INTERNATIONAL_PREFIXES: [&str; 2] = ["+", "00"];

/// Runs every cross-rule check; `entries` are all rules in order (the
/// compiled form is missing for rules with errors).
pub(crate) fn check_rules(entries: &[(RuleMeta, Option<Rule>)], diagnostics: &mut Vec<Diagnostic>) {
    let at = |meta: &RuleMeta, severity: Severity, message: String| Diagnostic {
        file: meta.file.clone(),
        line: meta.line,
        column: meta.column,
        severity,
        message,
    };
    let catch_all = entries.iter().position(|(meta, _)| meta.is_catch_all());
    if let Some(first) = catch_all {
        let (all, _) = &entries[first];
        for (meta, _) in &entries[first + 1..] {
            diagnostics.push(at(
                meta,
                Severity::Error,
                format!(
                    "rule '{}' is unreachable: rule '{}' ({}:{}) has no conditions and matches every call first",
                    meta.name, all.name, all.file, all.line
                ),
            ));
        }
    }
    let reachable = catch_all.map(|c| c + 1).unwrap_or(entries.len());
    for (i, (meta, rule)) in entries[..reachable].iter().enumerate() {
        let Some(rule) = rule else { continue };
        if meta.conditions_ok
            && let Some(message) = shadowed_by(meta, rule, &entries[..i])
        {
            diagnostics.push(at(meta, Severity::Warning, message));
        }
        if rule.plan.uses_trunk()
            && rule.caller_groups.is_empty()
            && can_match_international(rule.to.as_ref())
        {
            let what = if rule.to.is_some() {
                "its `to` can match"
            } else {
                "it matches every number, including"
            };
            diagnostics.push(at(
                meta,
                Severity::Warning,
                format!(
                    "rule '{}' sends calls to a trunk and {what} international numbers (+... or 00...), \
                     but has no caller_groups condition: anyone may call abroad",
                    meta.name
                ),
            ));
        }
    }
}

/// Why `rule` can never match given the rules `before` it, if so.
fn shadowed_by(
    meta: &RuleMeta,
    rule: &Rule,
    before: &[(RuleMeta, Option<Rule>)],
) -> Option<String> {
    for (earlier_meta, earlier) in before {
        let Some(earlier) = earlier else { continue };
        if !earlier_meta.conditions_ok {
            continue;
        }
        let place = format!(
            "rule '{}' ({}:{})",
            earlier_meta.name, earlier_meta.file, earlier_meta.line
        );
        if earlier_meta.key == meta.key {
            return Some(format!(
                "rule '{}' never matches: {place} has the same conditions",
                meta.name
            ));
        }
        if let (true, Some(Matcher::Exact(to)), Some(earlier_to)) =
            (earlier_meta.key.only_to(), &rule.to, &earlier.to)
            && earlier_to.is_match(to)
        {
            return Some(format!(
                "rule '{}' never matches: {place} matches every call to '{to}' first (it has no other conditions)",
                meta.name
            ));
        }
    }
    None
}

/// Whether a `to` condition can match a number starting with `+` or `00`
/// (no condition matches everything).
pub(crate) fn can_match_international(to: Option<&Matcher>) -> bool {
    match to {
        None => true,
        Some(Matcher::Exact(s)) => INTERNATIONAL_PREFIXES.iter().any(|p| s.starts_with(p)),
        Some(Matcher::Regex(re)) => regex_can_match_international(re),
    }
}

/// Decides on the regex's DFA whether some string made of an international
/// prefix and digits matches; falls back to sample numbers when the DFA
/// cannot be built (Unicode classes, size).
fn regex_can_match_international(re: &Regex) -> bool {
    let built = dense::Builder::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            dense::Config::new()
                .dfa_size_limit(Some(1 << 20))
                .determinize_size_limit(Some(1 << 20)),
        )
        .build(re.as_str());
    let Ok(dfa) = built else {
        return samples_match(re);
    };
    let Ok(start) = dfa.start_state(&start::Config::new().anchored(Anchored::No)) else {
        return samples_match(re);
    };
    INTERNATIONAL_PREFIXES.iter().any(|prefix| {
        let mut state = start;
        for &byte in prefix.as_bytes() {
            state = dfa.next_state(state, byte);
            if dfa.is_match_state(state) {
                return true;
            }
            if dfa.is_dead_state(state) || dfa.is_quit_state(state) {
                return false;
            }
        }
        // Breadth-first over digit continuations: is a match reachable?
        let mut seen = std::collections::HashSet::from([state]);
        let mut queue = vec![state];
        while let Some(state) = queue.pop() {
            if dfa.is_match_state(state) || dfa.is_match_state(dfa.next_eoi_state(state)) {
                return true;
            }
            for digit in b'0'..=b'9' {
                let next = dfa.next_state(state, digit);
                if !dfa.is_dead_state(next) && !dfa.is_quit_state(next) && seen.insert(next) {
                    queue.push(next);
                }
            }
        }
        false
    })
}

fn samples_match(re: &Regex) -> bool {
    [
        "+15551234567",
        "+442071234567",
        "+4930123456",
        "0015551234567",
        "00442071234567",
        "004930123456",
    ]
    .iter()
    .any(|s| re.is_match(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intl(re: &str) -> bool {
        can_match_international(Some(&Matcher::Regex(Regex::new(re).unwrap())))
    }

    #[test]
    fn international_detection() {
        assert!(intl(r"^\+[1-9]\d+$"));
        assert!(intl(r"^(\+|00)[1-9][0-9]{6,14}$"));
        assert!(intl(r"^0049\d+$"));
        assert!(intl(r"^\+33\d{9}$"));
        assert!(intl(r"\d+"), "unanchored matches inside +49...");
        assert!(intl(r"^[0-9+]+$"));
        assert!(!intl(r"^1\d{3}$"));
        assert!(!intl(r"^0[1-9]\d+$"));
        assert!(!intl(r"^(7\d\d)$"));
        assert!(!intl(r"^\+[a-z]+$"));
        assert!(
            intl(r"^\p{N}+$") || !intl(r"^\p{N}+$"),
            "unicode classes fall back without panicking"
        );
        assert!(can_match_international(None));
        assert!(can_match_international(Some(&Matcher::Exact(
            "+4930123".into()
        ))));
        assert!(can_match_international(Some(&Matcher::Exact(
            "0044123".into()
        ))));
        assert!(!can_match_international(Some(&Matcher::Exact(
            "030123".into()
        ))));
    }
}
