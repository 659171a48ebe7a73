//! Routing a call: finds the first rule whose conditions hold, applies its
//! rewrites and expands its plan. Pure: the time comes in the call context.
//! Conditions are tested without allocating; only the winning rule's
//! decision (reasons, rewrites, plan) is built.

use std::net::IpAddr;
use std::path::PathBuf;

use jiff::Timestamp;
use jiff::civil::DateTime;
use regex::Captures;

use super::compile::{ActionT, HeaderMatch, Matcher, PlanT, Rewrite, Rule, SourceMatch, TimeMatch};
use super::{Action, CallContext, Decision, Dialplan, Plan, SourceKind};

impl Dialplan {
    /// Routes a call: the decision of the first matching rule, or `None` when
    /// no rule matches.
    pub fn route(&self, call: &CallContext) -> Option<Decision> {
        let ip = call.source_ip.to_canonical();
        for rule in &self.rules {
            if !rule.caller_groups.is_empty()
                && !call
                    .caller_groups
                    .iter()
                    .any(|g| rule.caller_groups.contains(g))
            {
                continue;
            }
            if !rule.sources.is_empty() && !rule.sources.iter().any(|s| source_matches(s, call, ip))
            {
                continue;
            }
            if rule
                .time
                .as_ref()
                .is_some_and(|t| !t.matches_at(local_time(t, call.now)))
            {
                continue;
            }
            if !rule
                .headers
                .iter()
                .all(|h| header_value(h, call.headers).is_some())
            {
                continue;
            }
            let Some(to_caps) = captures(rule.to.as_ref(), call.to) else {
                continue;
            };
            let Some(from_caps) = captures(rule.from.as_ref(), call.from) else {
                continue;
            };
            return Some(decide(rule, call, ip, to_caps, from_caps));
        }
        None
    }

    /// Number of rules (after includes).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every file read: the main file (when loaded from a file) and all
    /// included files, for watching.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The main file's time zone name (`UTC` by default).
    pub fn timezone(&self) -> &str {
        &self.zone.0
    }

    /// The main file's time zone, for interpreting times given without an offset.
    pub(crate) fn zone(&self) -> &jiff::tz::TimeZone {
        &self.zone.1
    }
}

/// `Some(None)`: no condition or an exact match; `Some(Some(caps))`: a regex
/// match; `None`: no match.
fn captures<'h>(matcher: Option<&Matcher>, value: &'h str) -> Option<Option<Captures<'h>>> {
    match matcher {
        None => Some(None),
        Some(Matcher::Exact(s)) => (s == value).then_some(None),
        Some(Matcher::Regex(re)) => re.captures(value).map(Some),
    }
}

fn source_matches(source: &SourceMatch, call: &CallContext, ip: IpAddr) -> bool {
    match source {
        SourceMatch::Local => matches!(call.source, SourceKind::Local { .. }),
        SourceMatch::AnyTrunk => matches!(call.source, SourceKind::Trunk { .. }),
        SourceMatch::Trunk(name) => {
            matches!(&call.source, SourceKind::Trunk { name: n } if n == name)
        }
        SourceMatch::Net(net) => net.contains(&ip),
        SourceMatch::Transport(t) => call.transport.eq_ignore_ascii_case(t),
    }
}

/// The civil time of `now` in the condition's zone; `None` when out of range.
fn local_time(time: &TimeMatch, now: u64) -> Option<DateTime> {
    let ts = Timestamp::from_second(i64::try_from(now).ok()?).ok()?;
    Some(time.zone.to_datetime(ts))
}

impl TimeMatch {
    fn matches_at(&self, at: Option<DateTime>) -> bool {
        let Some(at) = at else { return false };
        let day = at.weekday().to_monday_zero_offset() as u8;
        let minute = at.hour() as u16 * 60 + at.minute() as u16;
        self.days & (1 << day) != 0
            && self
                .minutes
                .iter()
                .any(|&(start, end)| start <= minute && minute < end)
    }
}

/// The value of the first header named like `h` whose value matches.
fn header_value<'h>(h: &HeaderMatch, headers: &'h [(String, String)]) -> Option<&'h str> {
    headers
        .iter()
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case(&h.name))
        .map(|(_, value)| value.trim())
        .find(|value| h.matcher.is_match(value))
}

fn describe_captures(caps: &Option<Captures>, first: usize, names: &[Option<&str>]) -> String {
    let Some(caps) = caps else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (i, m) in caps.iter().enumerate().skip(1) {
        let value = m.map(|m| m.as_str()).unwrap_or("");
        match names.get(i).copied().flatten() {
            Some(name) => parts.push(format!("${}=${{{name}}}='{value}'", first + i)),
            None => parts.push(format!("${}='{value}'", first + i)),
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn reasons(
    rule: &Rule,
    call: &CallContext,
    ip: IpAddr,
    to_caps: &Option<Captures>,
    from_caps: &Option<Captures>,
) -> Vec<String> {
    let mut out = Vec::new();
    let names = |m: Option<&Matcher>| -> Vec<Option<String>> {
        match m {
            Some(Matcher::Regex(re)) => re.capture_names().map(|n| n.map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    if let Some(m) = &rule.to {
        let n = names(Some(m));
        let n: Vec<Option<&str>> = n.iter().map(|s| s.as_deref()).collect();
        out.push(format!(
            "to '{}' {}{}",
            call.to,
            m.describe(),
            describe_captures(to_caps, 0, &n)
        ));
    }
    if let Some(m) = &rule.from {
        let n = names(Some(m));
        let n: Vec<Option<&str>> = n.iter().map(|s| s.as_deref()).collect();
        out.push(format!(
            "from '{}' {}{}",
            call.from,
            m.describe(),
            describe_captures(from_caps, rule.to_groups, &n)
        ));
    }
    if !rule.caller_groups.is_empty() {
        let hits: Vec<&str> = call
            .caller_groups
            .iter()
            .filter(|g| rule.caller_groups.contains(g))
            .map(String::as_str)
            .collect();
        out.push(format!(
            "caller is in group {} (any of: {})",
            hits.join(", "),
            rule.caller_groups.join(", ")
        ));
    }
    if let Some(source) = rule.sources.iter().find(|s| source_matches(s, call, ip)) {
        out.push(match source {
            SourceMatch::Local => match &call.source {
                SourceKind::Local { user } => format!("source is local user {user}"),
                _ => "source is local".to_string(),
            },
            SourceMatch::AnyTrunk | SourceMatch::Trunk(_) => match &call.source {
                SourceKind::Trunk { name } => format!("source is trunk {name}"),
                _ => "source is a trunk".to_string(),
            },
            SourceMatch::Net(net) => format!("source address {ip} is in {net}"),
            SourceMatch::Transport(t) => format!("transport is {t}"),
        });
    }
    if let Some(time) = &rule.time
        && let Some(at) = local_time(time, call.now)
    {
        out.push(format!(
            "time {} {} is within {}",
            at.strftime("%a %Y-%m-%d %H:%M"),
            time.zone_name,
            time.text
        ));
    }
    for h in &rule.headers {
        if let Some(value) = header_value(h, call.headers) {
            out.push(format!(
                "header {} '{value}' {}",
                h.name,
                h.matcher.describe()
            ));
        }
    }
    if out.is_empty() {
        out.push("no conditions: the rule matches every call".to_string());
    }
    out
}

/// Line breaks would end a header early; they become spaces.
fn one_line(text: String) -> String {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ")
    } else {
        text
    }
}

fn decide(
    rule: &Rule,
    call: &CallContext,
    ip: IpAddr,
    to_caps: Option<Captures>,
    from_caps: Option<Captures>,
) -> Decision {
    let to_groups = rule.to_groups;
    let cap = |n: usize| -> Option<&str> {
        if n <= to_groups {
            to_caps.as_ref()?.get(n).map(|m| m.as_str())
        } else {
            from_caps.as_ref()?.get(n - to_groups).map(|m| m.as_str())
        }
    };
    let reasons = reasons(rule, call, ip, &to_caps, &from_caps);
    let mut to = call.to.to_string();
    let mut from = call.from.to_string();
    let mut caller_user = None;
    let mut caller_display = None;
    let mut add_headers: Vec<(String, String)> = Vec::new();
    let mut remove_headers: Vec<String> = Vec::new();
    let mut rewrites = Vec::new();
    for step in &rule.rewrites {
        match step {
            Rewrite::Strip(n) => {
                let new: String = to.chars().skip(*n).collect();
                rewrites.push(format!("strip {n}: {to} -> {new}"));
                to = new;
            }
            Rewrite::Prefix(t) => {
                let prefix = t.expand(&cap, &to, &from);
                let new = format!("{prefix}{to}");
                rewrites.push(format!("prefix '{prefix}': {to} -> {new}"));
                to = new;
            }
            Rewrite::Replace { regex, with } => {
                let new = regex
                    .replace_all(&to, |c: &Captures| {
                        with.expand(&|n| c.get(n).map(|m| m.as_str()), &to, &from)
                    })
                    .into_owned();
                if new == to {
                    rewrites.push(format!("replace /{}/: no match in {to}", regex.as_str()));
                } else {
                    rewrites.push(format!("replace /{}/: {to} -> {new}", regex.as_str()));
                }
                to = new;
            }
            Rewrite::CallerId { user, display } => {
                let mut parts = Vec::new();
                if let Some(t) = user {
                    let value = one_line(t.expand(&cap, &to, &from));
                    parts.push(format!("user '{value}'"));
                    from = value.clone();
                    caller_user = Some(value);
                }
                if let Some(t) = display {
                    let value = one_line(t.expand(&cap, &to, &from));
                    parts.push(format!("display '{value}'"));
                    caller_display = Some(value);
                }
                rewrites.push(format!("caller_id: {}", parts.join(", ")));
            }
            Rewrite::AddHeader { name, value } => {
                let value = one_line(value.expand(&cap, &to, &from));
                rewrites.push(format!("add_header {name}: {value}"));
                add_headers.push((name.clone(), value));
            }
            Rewrite::RemoveHeader(name) => {
                add_headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                if !remove_headers.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    remove_headers.push(name.clone());
                }
                rewrites.push(format!("remove_header {name}"));
            }
        }
    }
    let plan = expand_plan(&rule.plan, &cap, &to, &from);
    Decision {
        rule: rule.name.clone(),
        file: rule.file.clone(),
        line: rule.line,
        reasons,
        rewrites,
        to,
        caller_user,
        caller_display,
        add_headers,
        remove_headers,
        plan,
    }
}

fn expand_plan<'c>(
    plan: &PlanT,
    cap: &dyn Fn(usize) -> Option<&'c str>,
    to: &str,
    from: &str,
) -> Plan {
    let action = match &plan.action {
        ActionT::User {
            users,
            parallel,
            ring_timeout,
        } => Action::User {
            users: users.iter().map(|u| u.expand(cap, to, from)).collect(),
            parallel: *parallel,
            ring_timeout: *ring_timeout,
        },
        ActionT::Trunk {
            trunks,
            failover_on,
        } => Action::Trunk {
            trunks: trunks.clone(),
            failover_on: failover_on.clone(),
        },
        ActionT::Conference { room } => Action::Conference {
            room: room.expand(cap, to, from),
        },
        ActionT::Echo => Action::Echo,
        ActionT::Reject { code, reason } => Action::Reject {
            code: *code,
            reason: one_line(reason.expand(cap, to, from)),
        },
    };
    Plan {
        action,
        on_no_answer: plan
            .on_no_answer
            .as_ref()
            .map(|p| Box::new(expand_plan(p, cap, to, from))),
        on_failure: plan
            .on_failure
            .as_ref()
            .map(|p| Box::new(expand_plan(p, cap, to, from))),
    }
}
