//! Unit tests of the dialplan language: every matcher, rewrite and action,
//! variables, includes, validation errors with their positions, and lints.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use super::*;

fn trunks() -> Vec<String> {
    vec!["carrier-a".to_string(), "carrier-b".to_string()]
}

fn groups() -> BTreeSet<String> {
    ["staff", "international", "demo"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn try_load(yaml: &str) -> Result<(Dialplan, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (t, g) = (trunks(), groups());
    load_str(
        yaml,
        "t.yaml",
        &LoadContext {
            trunks: &t,
            groups: &g,
        },
    )
}

fn plan(yaml: &str) -> Dialplan {
    match try_load(yaml) {
        Ok((plan, _)) => plan,
        Err(e) => panic!("unexpected errors:\n{}", lines(&e)),
    }
}

fn warnings(yaml: &str) -> Vec<Diagnostic> {
    match try_load(yaml) {
        Ok((_, w)) => w,
        Err(e) => panic!("unexpected errors:\n{}", lines(&e)),
    }
}

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match try_load(yaml) {
        Ok(_) => panic!("expected errors in:\n{yaml}"),
        Err(e) => e
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect(),
    }
}

fn lines(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that exactly one error is at `line:col` and mentions `text`.
fn assert_error_at(yaml: &str, line: u64, column: u64, text: &str) {
    let errors = errors(yaml);
    assert!(
        errors
            .iter()
            .any(|d| d.line == line && d.column == column && d.message.contains(text)),
        "no error at {line}:{column} containing '{text}':\n{}",
        lines(&errors)
    );
}

fn at(time: &str) -> u64 {
    time.parse::<jiff::Timestamp>()
        .expect("test time")
        .as_second() as u64
}

/// An owned call, for building [`CallContext`]s.
#[derive(Clone)]
struct Call {
    to: String,
    from: String,
    display: Option<String>,
    groups: Vec<String>,
    source: SourceKind,
    ip: IpAddr,
    transport: String,
    headers: Vec<(String, String)>,
    now: u64,
}

impl Call {
    /// A call from a local user, over UDP from 198.51.100.7, on Monday 2026-11-23 10:00 UTC.
    fn new(from: &str, to: &str) -> Call {
        Call {
            to: to.into(),
            from: from.into(),
            display: None,
            groups: Vec::new(),
            source: SourceKind::Local { user: from.into() },
            ip: "198.51.100.7".parse().expect("ip"),
            transport: "udp".into(),
            headers: Vec::new(),
            now: at("2026-11-23T10:00:00Z"),
        }
    }
    fn groups(mut self, groups: &[&str]) -> Call {
        self.groups = groups.iter().map(|s| s.to_string()).collect();
        self
    }
    fn source(mut self, source: SourceKind) -> Call {
        self.source = source;
        self
    }
    fn ip(mut self, ip: &str) -> Call {
        self.ip = ip.parse().expect("ip");
        self
    }
    fn transport(mut self, t: &str) -> Call {
        self.transport = t.into();
        self
    }
    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn time(mut self, time: &str) -> Call {
        self.now = at(time);
        self
    }
    fn ctx(&self) -> CallContext<'_> {
        CallContext {
            to: &self.to,
            from: &self.from,
            from_display: self.display.as_deref(),
            caller_groups: &self.groups,
            source: self.source.clone(),
            source_ip: self.ip,
            transport: &self.transport,
            headers: &self.headers,
            now: self.now,
        }
    }
}

/// The name of the rule that routes `call`, if any.
fn rule_for(plan: &Dialplan, call: &Call) -> Option<String> {
    plan.route(&call.ctx()).map(|d| d.rule)
}

fn decide(plan: &Dialplan, call: &Call) -> Decision {
    plan.route(&call.ctx()).expect("a rule matches")
}

/// A dialplan with one rule `hit` (these conditions) and a catch-all `miss`.
fn with_match(conditions: &str) -> Dialplan {
    plan(&format!(
        "rules:\n  - name: hit\n    match:\n{}\n    action: {{ echo: {{}} }}\n  - name: miss\n    action: {{ reject: {{ code: 404 }} }}\n",
        conditions
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

fn hits(plan: &Dialplan, call: &Call) -> bool {
    rule_for(plan, call).as_deref() == Some("hit")
}

fn user_action(users: &[&str]) -> Action {
    Action::User {
        users: users.iter().map(|s| s.to_string()).collect(),
        parallel: true,
        ring_timeout: Duration::from_secs(30),
    }
}

// ---------------------------------------------------------------- matchers

#[test]
fn to_exact_and_regex() {
    let p = with_match("to: \"600\"");
    assert!(hits(&p, &Call::new("1001", "600")));
    assert!(!hits(&p, &Call::new("1001", "6000")));
    let p = with_match("to: { regex: \"^6[0-9]{2}$\" }");
    assert!(hits(&p, &Call::new("1001", "612")));
    assert!(!hits(&p, &Call::new("1001", "1612")));
}

#[test]
fn unquoted_numbers_keep_their_text() {
    let p = with_match("to: 0049");
    assert!(hits(&p, &Call::new("1001", "0049")));
    assert!(!hits(&p, &Call::new("1001", "49")));
    let p = with_match("to: +49");
    assert!(hits(&p, &Call::new("1001", "+49")));
    let p = with_match("to: 600");
    assert!(hits(&p, &Call::new("1001", "600")));
}

#[test]
fn from_exact_and_regex() {
    let p = with_match("from: \"1001\"");
    assert!(hits(&p, &Call::new("1001", "x")));
    assert!(!hits(&p, &Call::new("1002", "x")));
    let p = with_match("from: { regex: \"^10[0-9]{2}$\" }");
    assert!(hits(&p, &Call::new("1042", "x")));
    assert!(!hits(&p, &Call::new("2042", "x")));
}

#[test]
fn captures_numbered_and_named_across_to_and_from() {
    let p = plan(
        r#"
rules:
  - name: r
    match:
      to: { regex: "^(?P<site>[0-9])(?P<ext>[0-9]{3})(#)?$" }
      from: { regex: "^(1)([0-9]+)$" }
    action:
      user: { users: ["$1-$2-$4-$5", "${site}${ext}", "[$3]"] }
"#,
    );
    let d = decide(&p, &Call::new("1777", "2345"));
    assert_eq!(
        d.plan.action,
        user_action(&["2-345-1-777", "2345", "[]"]),
        "a group that did not take part is empty"
    );
    assert!(d.reasons[0].contains("$1=${site}='2'"), "{:?}", d.reasons);
    assert!(d.reasons[1].contains("$4='1'"), "{:?}", d.reasons);
}

#[test]
fn caller_groups_any_of() {
    let p = with_match("caller_groups: [staff, international]");
    assert!(hits(&p, &Call::new("1001", "x").groups(&["international"])));
    assert!(hits(&p, &Call::new("1001", "x").groups(&["demo", "staff"])));
    assert!(!hits(&p, &Call::new("1001", "x").groups(&["demo"])));
    assert!(!hits(&p, &Call::new("1001", "x")));
}

#[test]
fn source_local_and_trunks() {
    let p = with_match("source: [local]");
    assert!(hits(&p, &Call::new("1001", "x")));
    assert!(!hits(
        &p,
        &Call::new("1001", "x").source(SourceKind::Trunk {
            name: "carrier-a".into()
        })
    ));
    assert!(!hits(
        &p,
        &Call::new("1001", "x").source(SourceKind::Unknown)
    ));
    let p = with_match("source: [\"trunk:carrier-a\"]");
    assert!(hits(
        &p,
        &Call::new("1001", "x").source(SourceKind::Trunk {
            name: "carrier-a".into()
        })
    ));
    assert!(!hits(
        &p,
        &Call::new("1001", "x").source(SourceKind::Trunk {
            name: "carrier-b".into()
        })
    ));
    assert!(!hits(&p, &Call::new("1001", "x")));
    let p = with_match("source: [trunk]");
    assert!(hits(
        &p,
        &Call::new("1001", "x").source(SourceKind::Trunk {
            name: "carrier-b".into()
        })
    ));
    assert!(!hits(&p, &Call::new("1001", "x")));
}

#[test]
fn source_ip_v4_and_v6() {
    let p = with_match("source: [\"ip:192.0.2.0/24\", \"ip:2001:db8::/32\", \"ip:203.0.113.9\"]");
    let unknown = |ip: &str| Call::new("1001", "x").source(SourceKind::Unknown).ip(ip);
    assert!(hits(&p, &unknown("192.0.2.200")));
    assert!(!hits(&p, &unknown("192.0.3.1")));
    assert!(hits(&p, &unknown("2001:db8:1::5")));
    assert!(!hits(&p, &unknown("2001:db9::5")));
    assert!(hits(&p, &unknown("203.0.113.9")));
    assert!(!hits(&p, &unknown("203.0.113.10")));
    assert!(
        hits(&p, &unknown("::ffff:192.0.2.1")),
        "IPv4-mapped addresses match IPv4 networks"
    );
    let d = decide(&p, &unknown("192.0.2.200"));
    assert!(
        d.reasons[0].contains("192.0.2.200 is in 192.0.2.0/24"),
        "{:?}",
        d.reasons
    );
}

#[test]
fn source_transport_and_any_of() {
    let p = with_match("source: [\"transport:wss\", \"transport:TLS\"]");
    assert!(hits(&p, &Call::new("1001", "x").transport("wss")));
    assert!(hits(&p, &Call::new("1001", "x").transport("tls")));
    assert!(!hits(&p, &Call::new("1001", "x").transport("udp")));
    let p = with_match("source: [\"trunk:carrier-a\", \"transport:ws\"]");
    assert!(hits(&p, &Call::new("1001", "x").transport("ws")));
    assert!(hits(
        &p,
        &Call::new("1001", "x").source(SourceKind::Trunk {
            name: "carrier-a".into()
        })
    ));
}

#[test]
fn time_days_and_hours() {
    let p = with_match("time: { days: [mon-fri], hours: \"08:00-18:00\" }");
    // 2026-11-23 is a Monday, 2026-11-21 a Saturday.
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-23T08:00:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-27T17:59:59Z")));
    assert!(
        !hits(&p, &Call::new("1", "x").time("2026-11-23T18:00:00Z")),
        "end is excluded"
    );
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-23T07:59:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-21T10:00:00Z")));
    let p = with_match("time: { days: [sat, sun] }");
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-21T10:00:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-22T23:59:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-23T00:00:00Z")));
    let p = with_match("time: { days: [fri-mon] }");
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-23T10:00:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-20T10:00:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-24T10:00:00Z")));
    let p = with_match("time: { hours: \"08:00-12:00, 13:00-17:00\" }");
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-21T11:59:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-21T12:30:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-21T13:00:00Z")));
}

#[test]
fn time_hours_wrap_midnight() {
    let p = with_match("time: { hours: \"22:00-06:00\" }");
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-23T22:00:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-23T23:59:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-24T00:00:00Z")));
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-24T05:59:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-24T06:00:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-24T21:59:00Z")));
    let p = with_match("time: { hours: \"18:00-24:00\" }");
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-23T23:59:59Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-24T00:00:00Z")));
}

#[test]
fn time_uses_the_time_zone() {
    let p = plan(
        "timezone: Europe/Berlin\nrules:\n  - name: hit\n    match:\n      time: { days: [mon], hours: \"08:00-09:00\" }\n    action: { echo: {} }\n",
    );
    // 07:30 UTC is 08:30 in Berlin (CET, UTC+1, in November).
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-23T07:30:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-23T08:30:00Z")));
    // Sunday 23:30 UTC is Monday 00:30 in Berlin: the day is the local one.
    let p = plan(
        "timezone: Europe/Berlin\nrules:\n  - name: hit\n    match:\n      time: { days: [mon] }\n    action: { echo: {} }\n",
    );
    assert!(hits(&p, &Call::new("1", "x").time("2026-11-22T23:30:00Z")));
    assert!(!hits(&p, &Call::new("1", "x").time("2026-11-23T23:30:00Z")));
    // Summer time: 06:30 UTC in July is 08:30 CEST.
    let p = plan(
        "timezone: Europe/Berlin\nrules:\n  - name: hit\n    match:\n      time: { hours: \"08:00-09:00\" }\n    action: { echo: {} }\n",
    );
    assert!(hits(&p, &Call::new("1", "x").time("2026-07-01T06:30:00Z")));
    assert_eq!(p.timezone(), "Europe/Berlin");
}

#[test]
fn headers_exact_and_regex_case_insensitive_names() {
    let p = with_match("headers: { X-Priority: { regex: \"^urgent$\" }, x-site: berlin }");
    let call = Call::new("1", "x")
        .header("x-priority", "urgent")
        .header("X-SITE", "berlin");
    assert!(hits(&p, &call));
    assert!(
        !hits(&p, &Call::new("1", "x").header("X-Priority", "urgent")),
        "both headers are needed"
    );
    assert!(!hits(
        &p,
        &Call::new("1", "x")
            .header("X-Priority", "not urgent")
            .header("X-Site", "berlin")
    ));
    // Any instance of a repeated header may match.
    let call = Call::new("1", "x")
        .header("X-Priority", "low")
        .header("X-Priority", "urgent")
        .header("X-Site", "berlin");
    assert!(hits(&p, &call));
}

#[test]
fn all_conditions_must_hold() {
    let p = with_match("to: \"600\"\nfrom: \"1001\"\nsource: [local]");
    assert!(hits(&p, &Call::new("1001", "600")));
    assert!(!hits(&p, &Call::new("1002", "600")));
    assert!(!hits(&p, &Call::new("1001", "601")));
}

#[test]
fn first_matching_rule_wins_and_no_match_is_none() {
    let p = plan(
        "rules:\n  - name: a\n    match: { to: { regex: \"^1\" } }\n    action: { echo: {} }\n  - name: b\n    match: { to: { regex: \"^12\" } }\n    action: { echo: {} }\n",
    );
    assert_eq!(rule_for(&p, &Call::new("1", "123")).as_deref(), Some("a"));
    assert_eq!(rule_for(&p, &Call::new("1", "923")), None);
    assert_eq!(p.rule_count(), 2);
}

// ---------------------------------------------------------------- rewrites

#[test]
fn rewrites_apply_in_order() {
    let p = plan(
        r#"
constants:
  country_code: "49"
rules:
  - name: national
    match:
      to: { regex: "^0([1-9][0-9]+)$" }
    rewrite:
      - strip: 1
      - prefix: "+${country_code}"
      - replace: { regex: "^\\+49(30)", with: "+49-$1-" }
    action:
      trunk: { trunks: [carrier-a] }
"#,
    );
    let d = decide(&p, &Call::new("1001", "0301234"));
    assert_eq!(d.to, "+49-30-1234");
    assert_eq!(d.rewrites.len(), 3);
    assert_eq!(d.rewrites[0], "strip 1: 0301234 -> 301234");
    assert_eq!(d.rewrites[1], "prefix '+49': 301234 -> +49301234");
    assert!(
        d.rewrites[2].ends_with("+49301234 -> +49-30-1234"),
        "{:?}",
        d.rewrites
    );
}

#[test]
fn replace_replaces_every_match_and_uses_its_own_groups() {
    let p = plan(
        "rules:\n  - name: r\n    match: { to: { regex: \"^(x)?\" } }\n    rewrite:\n      - replace: { regex: \"[ -]\", with: \"\" }\n      - replace: { regex: \"^00(?P<rest>.*)$\", with: \"+${rest}\" }\n    action: { user: { users: [\"${to}\"] } }\n",
    );
    let d = decide(&p, &Call::new("1", "0049 30-123"));
    assert_eq!(d.to, "+4930123");
    assert_eq!(
        d.plan.action,
        user_action(&["+4930123"]),
        "${{to}} is the rewritten number"
    );
    let d = decide(&p, &Call::new("1", "123"));
    assert_eq!(d.to, "123");
    assert!(d.rewrites[1].contains("no match"), "{:?}", d.rewrites);
}

#[test]
fn strip_more_than_the_number_leaves_it_empty() {
    let p = plan("rules:\n  - name: r\n    rewrite: [ { strip: 10 } ]\n    action: { echo: {} }\n");
    assert_eq!(decide(&p, &Call::new("1", "123")).to, "");
}

#[test]
fn caller_id_and_headers() {
    let p = plan(
        r#"
rules:
  - name: tag
    match: { to: { regex: "^(?P<n>[0-9]+)$" } }
    rewrite:
      - caller_id: { user: "${from}", display: "Switchboard ${n}" }
      - add_header: { name: X-Routed-By, value: "${rule}" }
      - add_header: { name: X-Internal, value: "1" }
      - remove_header: X-Internal
      - remove_header: x-internal
      - caller_id: { user: "+4930${from}" }
    action:
      user: { users: ["${from}"] }
"#,
    );
    let d = decide(&p, &Call::new("1001", "42"));
    assert_eq!(d.caller_user.as_deref(), Some("+49301001"));
    assert_eq!(d.caller_display.as_deref(), Some("Switchboard 42"));
    assert_eq!(
        d.add_headers,
        vec![("X-Routed-By".to_string(), "tag".to_string())]
    );
    assert_eq!(d.remove_headers, vec!["X-Internal".to_string()]);
    assert_eq!(
        d.plan.action,
        user_action(&["+49301001"]),
        "${{from}} follows caller_id"
    );
    let p = plan(
        "rules:\n  - name: r\n    rewrite: [ { caller_id: { display: Anonymous } } ]\n    action: { echo: {} }\n",
    );
    let d = decide(&p, &Call::new("1001", "42"));
    assert_eq!(
        (d.caller_user, d.caller_display.as_deref()),
        (None, Some("Anonymous"))
    );
}

// ---------------------------------------------------------------- actions

#[test]
fn every_action_kind() {
    let p = plan(
        r#"
rules:
  - name: users
    match: { to: "1" }
    action: { user: { users: ["1001", "1002"], strategy: sequential, ring_timeout: 15 } }
  - name: trunks
    match: { to: "2" }
    action: { trunk: { trunks: [carrier-a, carrier-b] } }
  - name: trunks-custom
    match: { to: "3" }
    action: { trunk: { trunks: [carrier-b], failover_on: [503, "6xx", 4xx, timeout] } }
  - name: room
    match: { to: { regex: "^7([0-9]{2})$" } }
    action: { conference: { room: "room-$1" } }
  - name: echo
    match: { to: "5" }
    action:
      echo:
  - name: reject
    match: { to: "6" }
    action: { reject: { code: 486 } }
  - name: reject-reason
    match: { to: "7" }
    action: { reject: { code: 603, reason: "Not today" } }
"#,
    );
    let action = |to: &str| decide(&p, &Call::new("1001", to)).plan.action;
    assert_eq!(
        action("1"),
        Action::User {
            users: vec!["1001".into(), "1002".into()],
            parallel: false,
            ring_timeout: Duration::from_secs(15)
        }
    );
    assert_eq!(
        action("2"),
        Action::Trunk {
            trunks: vec!["carrier-a".into(), "carrier-b".into()],
            failover_on: vec![
                FailoverOn::Code(408),
                FailoverOn::Class(5),
                FailoverOn::Timeout
            ]
        }
    );
    assert_eq!(
        action("3"),
        Action::Trunk {
            trunks: vec!["carrier-b".into()],
            failover_on: vec![
                FailoverOn::Code(503),
                FailoverOn::Class(6),
                FailoverOn::Class(4),
                FailoverOn::Timeout
            ]
        }
    );
    assert_eq!(
        action("742"),
        Action::Conference {
            room: "room-42".into()
        }
    );
    assert_eq!(action("5"), Action::Echo);
    assert_eq!(
        action("6"),
        Action::Reject {
            code: 486,
            reason: "Busy Here".into()
        }
    );
    assert_eq!(
        action("7"),
        Action::Reject {
            code: 603,
            reason: "Not today".into()
        }
    );
    assert!(FailoverOn::Class(5).matches_code(503));
    assert!(!FailoverOn::Class(5).matches_code(486));
    assert!(FailoverOn::Code(408).matches_code(408));
}

#[test]
fn chained_actions() {
    let p = plan(
        r#"
rules:
  - name: chain
    match: { to: { regex: "^(1[0-9]{3})$" } }
    action:
      user: { users: ["$1"], ring_timeout: 20 }
      on_no_answer:
        user: { users: ["1002"], ring_timeout: 15 }
        on_no_answer: { reject: { code: 480, reason: "Nobody home for $1" } }
        on_failure:
          trunk: { trunks: [carrier-a] }
          on_failure: { reject: { code: 503 } }
      on_failure: { reject: { code: 486 } }
"#,
    );
    let d = decide(&p, &Call::new("1003", "1001"));
    let expected = Plan {
        action: Action::User {
            users: vec!["1001".into()],
            parallel: true,
            ring_timeout: Duration::from_secs(20),
        },
        on_no_answer: Some(Box::new(Plan {
            action: Action::User {
                users: vec!["1002".into()],
                parallel: true,
                ring_timeout: Duration::from_secs(15),
            },
            on_no_answer: Some(Box::new(Plan {
                action: Action::Reject {
                    code: 480,
                    reason: "Nobody home for 1001".into(),
                },
                on_no_answer: None,
                on_failure: None,
            })),
            on_failure: Some(Box::new(Plan {
                action: Action::Trunk {
                    trunks: vec!["carrier-a".into()],
                    failover_on: vec![
                        FailoverOn::Code(408),
                        FailoverOn::Class(5),
                        FailoverOn::Timeout,
                    ],
                },
                on_no_answer: None,
                on_failure: Some(Box::new(Plan {
                    action: Action::Reject {
                        code: 503,
                        reason: "Service Unavailable".into(),
                    },
                    on_no_answer: None,
                    on_failure: None,
                })),
            })),
        })),
        on_failure: Some(Box::new(Plan {
            action: Action::Reject {
                code: 486,
                reason: "Busy Here".into(),
            },
            on_no_answer: None,
            on_failure: None,
        })),
    };
    assert_eq!(d.plan, expected);
    let text = d.to_string();
    assert!(text.contains("matched rule 'chain' (t.yaml:3)"), "{text}");
    assert!(
        text.contains(
            "  user: ring 1001 for 20 s\n  on no answer:\n    user: ring 1002 for 15 s\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "      trunk: carrier-a\n      on failure:\n        reject: 503 Service Unavailable\n"
        ),
        "{text}"
    );
}

// ---------------------------------------------------------------- variables

#[test]
fn variables_constants_builtins_and_dollar() {
    let p = plan(
        r#"
constants:
  pbx: "pbx-${to}"
  prefix: "0"
rules:
  - name: vars
    match: { to: { regex: "^${prefix}([0-9]+)$" } }
    action: { conference: { room: "${pbx}/${rule}/${to}/${from}/$1/$$1" } }
"#,
    );
    let d = decide(&p, &Call::new("1001", "0123"));
    assert_eq!(
        d.plan.action,
        Action::Conference {
            room: "pbx-${to}/vars/0123/1001/123/$1".into()
        }
    );
}

#[test]
fn constants_in_regexes_are_literal_text() {
    let p = plan(
        "constants: { cc: \"+49\" }\nrules:\n  - name: hit\n    match: { to: { regex: \"^${cc}\" } }\n    action: { echo: {} }\n",
    );
    assert!(hits(&p, &Call::new("1", "+4930")));
    assert!(
        !hits(&p, &Call::new("1", "4930")),
        "+ is not a regex operator here"
    );
}

// ---------------------------------------------------------------- includes

#[test]
fn includes_splice_rules_and_merge_constants() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(
        dir.path().join("main.yaml"),
        "constants: { cc: \"49\" }\nrules:\n  - name: first\n    match: { to: \"1\" }\n    action: { echo: {} }\n  - include: sub/trunks.yaml\n  - name: last\n    action: { reject: { code: 404 } }\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("sub/trunks.yaml"),
        "constants: { out: \"carrier-a\" }\nrules:\n  - include: more.yaml\n  - name: out\n    match: { to: { regex: \"^0\" }, caller_groups: [staff] }\n    rewrite: [ { prefix: \"+${cc}\" } ]\n    action: { trunk: { trunks: [\"${out}\"] } }\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("sub/more.yaml"),
        "rules:\n  - name: more\n    match: { to: \"2\" }\n    action: { echo: {} }\n",
    )
    .expect("write");
    let (t, g) = (trunks(), groups());
    let (p, warnings) = load(
        &dir.path().join("main.yaml"),
        &LoadContext {
            trunks: &t,
            groups: &g,
        },
    )
    .expect("loads");
    assert!(warnings.is_empty(), "{}", lines(&warnings));
    assert_eq!(p.rule_count(), 4);
    assert_eq!(p.files().len(), 3);
    assert!(p.files()[1].ends_with("sub/trunks.yaml"), "{:?}", p.files());
    assert!(p.files()[2].ends_with("sub/more.yaml"), "{:?}", p.files());
    let d = decide(&p, &Call::new("1", "0301").groups(&["staff"]));
    assert_eq!((d.rule.as_str(), d.to.as_str()), ("out", "+490301"));
    assert!(d.file.ends_with("sub/trunks.yaml"), "{}", d.file);
    assert_eq!(d.line, 4);
    assert_eq!(rule_for(&p, &Call::new("1", "2")).as_deref(), Some("more"));
    assert_eq!(
        rule_for(&p, &Call::new("1", "0301")).as_deref(),
        Some("last")
    );
}

#[test]
fn include_errors_cycle_missing_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("a.yaml");
    std::fs::write(&main, "constants: { x: \"1\" }\nrules:\n  - include: b.yaml\n  - name: dup\n    action: { echo: {} }\n").expect("write");
    std::fs::write(
        dir.path().join("b.yaml"),
        "constants: { x: \"2\" }\nrules:\n  - include: a.yaml\n  - include: missing.yaml\n  - name: dup\n    match: { to: \"1\" }\n    action: { echo: {} }\n",
    )
    .expect("write");
    let (t, g) = (trunks(), groups());
    let errors = load(
        &main,
        &LoadContext {
            trunks: &t,
            groups: &g,
        },
    )
    .expect_err("errors");
    let text = lines(&errors);
    let b = dir.path().join("b.yaml").display().to_string();
    let a = main.display().to_string();
    assert!(
        text.contains(&format!("{b}:3:14: error: include cycle")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{b}:4:14: error: include '")),
        "{text}"
    );
    assert!(text.contains("missing.yaml': cannot read"), "{text}");
    assert!(
        text.contains(&format!(
            "{b}:1:14: error: constants: 'x' is already defined at {a}:1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{a}:4:11: error: duplicate rule name 'dup' (first used at {b}:5)"
        )),
        "{text}"
    );
}

#[test]
fn include_item_takes_no_other_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("x.yaml"), "rules: []\n").expect("write");
    let main = dir.path().join("main.yaml");
    std::fs::write(&main, "rules:\n  - include: x.yaml\n    name: oops\n").expect("write");
    let (t, g) = (trunks(), groups());
    let errors = load(
        &main,
        &LoadContext {
            trunks: &t,
            groups: &g,
        },
    )
    .expect_err("errors");
    assert!(
        lines(&errors).contains(":2:14: error: an include item takes no other keys"),
        "{}",
        lines(&errors)
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn yaml_structure_errors_have_positions() {
    assert_error_at(
        "rules:\n  - name: a\n    bogus: 1\n    action: { echo: {} }\n",
        3,
        5,
        "bogus",
    );
    assert_error_at(
        "rules:\n  - name: a\n    match: { to: \"1\", too: \"2\" }\n    action: { echo: {} }\n",
        3,
        23,
        "too",
    );
    let e = errors(
        "rules:\n  - name: a\n    action: { user: { users: [\"1\"], ring_timeout: soon } }\n",
    );
    assert_eq!(e[0].line, 3, "{}", lines(&e));
    let e = errors("rules: [\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].line >= 1, "{}", lines(&e));
    assert_error_at(
        "rules:\n  - name: a\n    rewrite: [ { shout: 1 } ]\n    action: { echo: {} }\n",
        3,
        18,
        "shout",
    );
}

#[test]
fn semantic_errors_have_exact_positions_and_are_all_reported() {
    let yaml = r#"timezone: Mars/Olympus
rules:
  - name: a
    match:
      to: { regex: "^(1[0-9]" }
      from: { regex: "^(1)(2)$" }
      caller_groups: [staff, nobody]
      source: [local, "trunk:carrier-z", "ip:300.1.2.3", "transport:sctp", "moon"]
      time: { days: [mon, funday], hours: "25:00-26:00" }
    rewrite:
      - prefix: "$3"
      - add_header: { name: "Bad Header", value: "${nope}" }
    action:
      user: { users: [], ring_timeout: 0 }
  - match: { to: "9" }
    action: { reject: { code: 200 } }
  - name: b
    match: { to: "8" }
    action: { reject: { code: 404 }, echo: {} }
  - name: c
    match: { to: "7" }
    action: {}
  - name: b
    match: { to: "6" }
    action:
      trunk: { trunks: [carrier-x] }
"#;
    let e = errors(yaml);
    let expect = [
        (1, 11, "unknown time zone 'Mars/Olympus'"),
        (5, 20, "invalid regex"),
        (7, 30, "unknown group 'nobody'"),
        (
            8,
            23,
            "unknown trunk 'carrier-z' (configured: carrier-a, carrier-b)",
        ),
        (8, 42, "'300.1.2.3' is not an IP address"),
        (8, 58, "unknown transport 'sctp'"),
        (8, 76, "unknown source 'moon'"),
        (9, 27, "'funday' is not a day"),
        (9, 43, "'25:00-26:00' is not a range of hours"),
        (
            11,
            18,
            "$3 refers to capture group 3, but there are only 2 groups here",
        ),
        (12, 29, "'Bad Header' is not a header name"),
        (
            12,
            51,
            "${nope} is not a constant, a named capture group or a built-in",
        ),
        (14, 22, "user.users: the list is empty"),
        (14, 40, "ring_timeout: 0 is out of range"),
        (15, 5, "rule has no `name`"),
        (16, 31, "reject.code: 200 is out of range (400..=699)"),
        (19, 13, "several kinds (echo, reject)"),
        (22, 13, "give one of user, trunk, conference, echo, reject"),
        (23, 11, "duplicate rule name 'b' (first used at t.yaml:17)"),
        (26, 25, "unknown trunk 'carrier-x'"),
    ];
    for (line, column, text) in expect {
        assert!(
            e.iter()
                .any(|d| d.line == line && d.column == column && d.message.contains(text)),
            "no error at {line}:{column} containing '{text}':\n{}",
            lines(&e)
        );
    }
    assert_eq!(e.len(), expect.len(), "{}", lines(&e));
    assert!(
        e[0].to_string()
            .starts_with("t.yaml:1:11: error: timezone: unknown time zone"),
        "{}",
        e[0]
    );
}

#[test]
fn capture_references_follow_the_regex_groups() {
    // `to` has 1 group and `from` 1: $2 is the from group, $3 does not exist.
    let ok = "rules:\n  - name: r\n    match: { to: { regex: \"^(1)$\" }, from: { regex: \"^(2)$\" } }\n    action: { conference: { room: \"$2\" } }\n";
    assert!(try_load(ok).is_ok());
    assert_error_at(&ok.replace("$2", "$3"), 4, 36, "only 2 groups");
    assert_error_at(
        "rules:\n  - name: r\n    match: { to: \"1\" }\n    action: { conference: { room: \"x$1\" } }\n",
        4,
        37,
        "no regex with groups",
    );
    assert_error_at(
        "rules:\n  - name: r\n    match: { to: { regex: \"(?P<a>1)\" } }\n    action: { conference: { room: \"${b}\" } }\n",
        4,
        36,
        "${b} is not a constant",
    );
    assert_error_at(
        "rules:\n  - name: r\n    action: { trunk: { trunks: [\"$1\"] } }\n",
        3,
        34,
        "only constants",
    );
}

#[test]
fn more_validation_errors() {
    assert_error_at(
        "rules:\n  - name: r\n    action: { user: { users: [\"1\"], ring_timeout: 601 } }\n",
        3,
        51,
        "601 is out of range",
    );
    assert_error_at(
        "rules:\n  - name: r\n    action: { trunk: { trunks: [] } }\n",
        3,
        32,
        "trunk.trunks: the list is empty",
    );
    assert_error_at(
        "rules:\n  - name: r\n    action: { trunk: { trunks: [carrier-a], failover_on: [200] } }\n",
        3,
        59,
        "'200' is not a failover",
    );
    assert_error_at(
        "rules:\n  - name: r\n    action: { reject: { code: 700 } }\n",
        3,
        31,
        "700 is out of range",
    );
    assert_error_at(
        "rules:\n  - name: r\n    match: { time: { hours: \"08:00-08:00\" } }\n    action: { echo: {} }\n",
        3,
        29,
        "empty",
    );
    assert_error_at(
        "rules:\n  - name: r\n    match: { time: {} }\n    action: { echo: {} }\n",
        3,
        20,
        "give days and/or hours",
    );
    assert_error_at(
        "rules:\n  - name: r\n    match: { caller_groups: [] }\n    action: { echo: {} }\n",
        3,
        29,
        "caller_groups: the list is empty",
    );
    assert_error_at(
        "rules:\n  - name: r\n    match: { to: \"1\" }\n",
        2,
        5,
        "has no `action`",
    );
    assert_error_at(
        "rules:\n  - name: r\n    action:\n      reject: { code: 403 }\n      on_failure: { echo: {} }\n",
        5,
        19,
        "reject ends the call",
    );
    assert_error_at(
        "rules:\n  - name: r\n    match: { headers: { \"X A\": b } }\n    action: { echo: {} }\n",
        3,
        25,
        "'X A' is not a header name",
    );
    assert_error_at("constants: { to: \"x\" }\nrules: []\n", 1, 14, "built-in");
    assert_error_at(
        "constants: { \"a b\": \"x\" }\nrules: []\n",
        1,
        14,
        "not a valid name",
    );
    assert_error_at(
        "rules:\n  - name: r\n    rewrite: [ { caller_id: {} } ]\n    action: { echo: {} }\n",
        3,
        16,
        "give user and/or display",
    );
}

#[test]
fn rules_after_a_catch_all_are_unreachable() {
    let yaml = "rules:\n  - name: all\n    match: {}\n    action: { echo: {} }\n  - name: late\n    match: { to: \"1\" }\n    action: { echo: {} }\n  - name: later\n    action: { echo: {} }\n";
    let e = errors(yaml);
    assert_eq!(e.len(), 2, "{}", lines(&e));
    assert_eq!((e[0].line, e[0].column), (5, 5));
    assert!(
        e[0].message
            .contains("rule 'late' is unreachable: rule 'all' (t.yaml:2)"),
        "{}",
        e[0]
    );
    assert_eq!((e[1].line, e[1].column), (8, 5));
}

// ---------------------------------------------------------------- lints

#[test]
fn identical_conditions_are_shadowed() {
    let w = warnings(
        "rules:\n  - name: a\n    match: { to: \"1\", source: [local, \"transport:ws\"] }\n    action: { echo: {} }\n  - name: b\n    match: { source: [\"transport:ws\", local], to: \"1\" }\n    action: { reject: { code: 404 } }\n",
    );
    assert_eq!(w.len(), 1, "{}", lines(&w));
    assert_eq!(
        (w[0].line, w[0].column, w[0].severity.clone()),
        (5, 5, Severity::Warning)
    );
    assert!(
        w[0].message
            .contains("rule 'b' never matches: rule 'a' (t.yaml:2) has the same conditions"),
        "{}",
        w[0]
    );
}

#[test]
fn exact_to_behind_a_regex_is_shadowed() {
    let w = warnings(
        "rules:\n  - name: rooms\n    match: { to: { regex: \"^7[0-9]{2}$\" } }\n    action: { echo: {} }\n  - name: boss-room\n    match: { to: \"700\", from: \"1001\" }\n    action: { echo: {} }\n",
    );
    assert_eq!(w.len(), 1, "{}", lines(&w));
    assert!(
        w[0].message.contains("matches every call to '700' first"),
        "{}",
        w[0]
    );
    // With another condition on the earlier rule, the later one can still match.
    let w = warnings(
        "rules:\n  - name: rooms\n    match: { to: { regex: \"^7[0-9]{2}$\" }, source: [local] }\n    action: { echo: {} }\n  - name: boss-room\n    match: { to: \"700\" }\n    action: { echo: {} }\n",
    );
    assert!(w.is_empty(), "{}", lines(&w));
}

#[test]
fn international_trunk_routes_need_a_group() {
    let rule = |conditions: &str, action: &str| {
        format!(
            "rules:\n  - name: out\n    match: {{ {conditions} }}\n    action:\n      {action}\n"
        )
    };
    let trunk = "trunk: { trunks: [carrier-a] }";
    let w = warnings(&rule("to: { regex: \"^\\\\+[1-9][0-9]+$\" }", trunk));
    assert_eq!(w.len(), 1, "{}", lines(&w));
    assert_eq!((w[0].line, w[0].column), (2, 5));
    assert!(w[0].message.contains("international numbers"), "{}", w[0]);
    assert!(
        warnings(&rule(
            "to: { regex: \"^\\\\+[1-9][0-9]+$\" }, caller_groups: [international]",
            trunk
        ))
        .is_empty()
    );
    assert!(warnings(&rule("to: { regex: \"^0[1-9][0-9]+$\" }", trunk)).is_empty());
    assert!(warnings(&rule("to: { regex: \"^\\\\+[1-9][0-9]+$\" }", "echo: {}")).is_empty());
    assert_eq!(warnings(&rule("to: \"0044123\"", trunk)).len(), 1);
    assert_eq!(
        warnings(&rule("source: [local]", trunk)).len(),
        1,
        "no `to`: every number"
    );
    // A trunk further down the chain counts too.
    let chained =
        "user: { users: [\"1001\"] }\n      on_no_answer: { trunk: { trunks: [carrier-a] } }";
    assert_eq!(warnings(&rule("to: { regex: \"^00\" }", chained)).len(), 1);
}

#[test]
fn chaining_after_echo_is_a_warning() {
    let w = warnings(
        "rules:\n  - name: r\n    action:\n      echo: {}\n      on_no_answer: { reject: { code: 480 } }\n",
    );
    assert_eq!(w.len(), 1, "{}", lines(&w));
    assert!(w[0].message.contains("echo answers at once"), "{}", w[0]);
}

// ---------------------------------------------------------------- shipped files, schema, explanation

#[test]
fn shipped_default_dialplan_is_valid_and_routes_the_demo() {
    let text = include_str!("../../dialplans/default.yaml");
    let groups: BTreeSet<String> = ["demo".to_string()].into();
    let (p, warnings) = load_str(
        text,
        "default.yaml",
        &LoadContext {
            trunks: &[],
            groups: &groups,
        },
    )
    .expect("default is valid");
    assert!(warnings.is_empty(), "{}", lines(&warnings));
    let d = decide(&p, &Call::new("1001", "1002").groups(&["demo"]));
    assert_eq!(d.rule, "local-users");
    assert_eq!(d.plan.action, user_action(&["1002"]));
    assert!(matches!(
        d.plan.on_no_answer.as_deref(),
        Some(Plan {
            action: Action::Reject { code: 480, .. },
            ..
        })
    ));
    assert_eq!(
        decide(&p, &Call::new("1001", "600")).plan.action,
        Action::Echo
    );
    assert_eq!(
        decide(&p, &Call::new("1001", "742")).plan.action,
        Action::Conference { room: "742".into() }
    );
    for number in ["+15551234567", "004930123456"] {
        let d = decide(&p, &Call::new("1001", number).groups(&["demo"]));
        assert!(
            matches!(d.plan.action, Action::Reject { code: 403, .. }),
            "{number}: {d}"
        );
    }
    let d = decide(&p, &Call::new("1001", "12"));
    assert_eq!(
        (d.rule.as_str(), &d.plan.action),
        (
            "no-route",
            &Action::Reject {
                code: 404,
                reason: "No route".into()
            }
        )
    );
}

#[test]
fn example_office_dialplan_is_valid_and_routes() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/examples/office.yaml");
    let (t, g) = (trunks(), groups());
    let (p, warnings) = match load(
        &file,
        &LoadContext {
            trunks: &t,
            groups: &g,
        },
    ) {
        Ok(loaded) => loaded,
        Err(e) => panic!("{}", lines(&e)),
    };
    assert!(warnings.is_empty(), "{}", lines(&warnings));
    assert_eq!(p.files().len(), 2);
    let monday_9 = "2026-11-23T08:00:00Z";
    let d = decide(&p, &Call::new("1005", "1000").time(monday_9));
    assert_eq!(d.rule, "reception-office-hours");
    assert_eq!(
        rule_for(&p, &Call::new("1005", "1000").time("2026-11-23T11:30:00Z")).as_deref(),
        Some("reception-closed")
    );
    let d = decide(
        &p,
        &Call::new("1042", "0049301234").groups(&["international"]),
    );
    assert_eq!(d.rule, "international");
    assert_eq!(d.to, "+49301234");
    assert_eq!(d.caller_user.as_deref(), Some("+493012345642"));
    assert_eq!(d.caller_display.as_deref(), Some("ACME Office"));
    assert_eq!(
        rule_for(&p, &Call::new("1042", "0049301234")).as_deref(),
        Some("international-blocked")
    );
    assert_eq!(
        decide(&p, &Call::new("1042", "0301234567")).to,
        "+49301234567"
    );
    let inbound = Call::new("+4915112345", "+493012345642").source(SourceKind::Trunk {
        name: "carrier-a".into(),
    });
    assert_eq!(decide(&p, &inbound).plan.action, user_action(&["1042"]));
    let partner = Call::new("x", "1001")
        .source(SourceKind::Unknown)
        .ip("2001:db8::1")
        .header("X-Priority", "urgent");
    assert_eq!(decide(&p, &partner).rule, "urgent-from-partner");
}

/// Turns a YAML example of the documentation into a whole dialplan.
fn documented_example(block: &str) -> String {
    let lines: Vec<&str> = block.lines().collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let text: String = lines
        .iter()
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let indented = |n: usize| {
        text.lines()
            .map(|l| format!("{:n$}{l}\n", ""))
            .collect::<String>()
    };
    // Snippets may use the constants of the surrounding examples.
    let constants = "constants: { country_code: \"49\" }\n";
    if first.starts_with("- ") {
        format!("{constants}rules:\n{}", indented(2))
    } else if ["match:", "action:", "rewrite:"]
        .iter()
        .any(|k| first.starts_with(k))
    {
        let action = if text.lines().any(|l| l.starts_with("action:")) {
            ""
        } else {
            "    action: { echo: {} }\n"
        };
        format!(
            "{constants}rules:\n  - name: example\n{}{action}",
            indented(4)
        )
    } else {
        text
    }
}

#[test]
fn documented_examples_are_valid() {
    let doc = include_str!("../../docs/dialplan.md");
    let trunks = trunks();
    let groups: BTreeSet<String> = ["international", "management", "staff", "demo"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ctx = LoadContext {
        trunks: &trunks,
        groups: &groups,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for block in doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
    {
        // The include example: files named in their first line, loaded together below.
        if let Some(name) = block
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# dialplans/"))
        {
            std::fs::write(dir.path().join(name.trim()), block).expect("write example");
            continue;
        }
        for part in block.split("---\n") {
            let yaml = documented_example(part);
            if let Err(e) = load_str(&yaml, "doc.yaml", &ctx) {
                panic!("documented example fails:\n{yaml}\n{}", lines(&e));
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} examples found");
    let (p, _) = load(&dir.path().join("main.yaml"), &ctx)
        .unwrap_or_else(|e| panic!("include example: {}", lines(&e)));
    assert_eq!(p.rule_count(), 3);
}

#[test]
fn json_schema_is_json_and_describes_the_format() {
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).expect("valid JSON");
    assert_eq!(schema["title"], "Switchboard dialplan");
    let defs = &schema["$defs"];
    assert!(defs["Rule"]["properties"]["match"].is_object(), "{schema}");
    assert_eq!(
        defs["Rule"]["required"],
        serde_json::json!(["name", "action"])
    );
    assert!(defs["Action"]["oneOf"].is_array());
    assert!(defs["Include"]["properties"]["include"].is_object());
}

#[test]
fn decision_explains_itself() {
    let p = plan(
        r#"
rules:
  - name: night
    match:
      to: { regex: "^(1[0-9]{3})$" }
      caller_groups: [staff]
      source: [local]
      time: { days: [mon-fri], hours: "18:00-08:00" }
      headers: { X-Priority: urgent }
    rewrite:
      - add_header: { name: X-Night, value: "yes" }
      - remove_header: X-Debug
    action:
      user: { users: ["$1", "1003"], ring_timeout: 10 }
      on_no_answer: { trunk: { trunks: [carrier-a, carrier-b], failover_on: [503, timeout] } }
"#,
    );
    let call = Call::new("1001", "1002")
        .groups(&["staff"])
        .header("X-Priority", "urgent")
        .time("2026-11-23T20:15:00Z");
    let text = decide(&p, &call).to_string();
    for expected in [
        "matched rule 'night' (t.yaml:3)",
        "  - to '1002' matches regex ^(1[0-9]{3})$ ($1='1002')",
        "  - caller is in group staff (any of: staff)",
        "  - source is local user 1001",
        "  - time Mon 2026-11-23 20:15 UTC is within mon-fri 18:00-08:00 (UTC)",
        "  - header x-priority 'urgent' is 'urgent'",
        "  - add_header X-Night: yes",
        "called number: 1002",
        "caller id: unchanged",
        "add header: X-Night: yes",
        "remove header: X-Debug",
        "  user: ring 1002, 1003 at once (parallel) for 10 s",
        "    trunk: carrier-a, then carrier-b (next trunk on 503, timeout)",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
}

#[test]
fn empty_dialplan_warns() {
    let w = warnings("");
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("no rules"));
    assert_eq!(
        plan("rules: []\n")
            .route(&Call::new("1", "2").ctx())
            .map(|d| d.rule),
        None
    );
}

#[test]
fn dialplan_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Dialplan>();
    check::<Decision>();
}

#[test]
fn a_regex_over_the_size_limit_is_refused_with_its_position() {
    // Fine for the regex crate's own 10 MiB default, not for our 256 KiB.
    let yaml = "rules:\n  - name: huge\n    match:\n      to: { regex: '^[0-9]{30000}$' }\n    action:\n      reject: { code: 403 }\n";
    let errs = errors(yaml);
    assert!(
        errs.iter()
            .any(|d| d.line == 4 && d.message.contains("regex too large")),
        "{errs:?}"
    );
}

#[test]
fn includes_fanning_out_past_the_file_limit_are_refused() {
    // 20 × 20 reads of the same two files: shallow, but 421 files read.
    let dir = tempfile::tempdir().expect("tempdir");
    let includes = |name: &str| "  - include: ".to_string() + name + "\n";
    std::fs::write(
        dir.path().join("main.yaml"),
        "rules:\n".to_string() + &includes("b.yaml").repeat(20),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.yaml"),
        "rules:\n".to_string() + &includes("c.yaml").repeat(20),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("c.yaml"),
        "rules:\n  - name: c\n    action: { echo: {} }\n",
    )
    .expect("write");
    let (t, g) = (trunks(), groups());
    let ctx = LoadContext {
        trunks: &t,
        groups: &g,
    };
    let errs = load(&dir.path().join("main.yaml"), &ctx).expect_err("too many files");
    assert!(
        errs.iter().any(|d| d.message.contains("256 files at most")),
        "{}",
        lines(&errs)
    );
}
