//! Loading and validation: reads the main file and its includes, checks every
//! rule (collecting every problem with its `file:line:column`), and compiles
//! the rules into the immutable form `evaluate` runs (regexes compiled,
//! constants folded in, names resolved).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use jiff::tz::TimeZone;
use regex::Regex;

use super::model::{ActionDef, FileDef, MatchDef, Node, PatternDef, RewriteDef, RuleDef, Strategy};
use super::template::{BUILTINS, Scope, Template, expand_regex, is_identifier};
use super::{Diagnostic, Dialplan, FailoverOn, LoadContext, Severity, lint};

/// Default ring time of a `user` action, seconds.
pub(crate) const DEFAULT_RING_TIMEOUT: u64 = 30;
/// Longest allowed ring time, seconds.
pub(crate) const MAX_RING_TIMEOUT: u64 = 600;
/// The transports a `transport:` source may name.
pub(crate) const TRANSPORTS: [&str; 5] = ["udp", "tcp", "tls", "ws", "wss"];
/// Deepest allowed include nesting.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Files one dialplan may be made of (includes fanning out are refused
/// beyond this, however shallow).
const MAX_FILES: usize = 256;
/// Compiled size allowed for one regex, bytes (the `regex` crate's limit;
/// an ordinary number pattern takes a few KB).
const REGEX_SIZE_LIMIT: usize = 256 << 10;
/// Lazy DFA cache allowed for one regex, bytes.
const REGEX_DFA_LIMIT: usize = 1 << 20;

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub name: String,
    pub file: String,
    pub line: u64,
    pub to: Option<Matcher>,
    pub from: Option<Matcher>,
    /// Capture groups of the `to` regex (the `from` regex's groups follow).
    pub to_groups: usize,
    pub caller_groups: Vec<String>,
    pub sources: Vec<SourceMatch>,
    pub time: Option<TimeMatch>,
    pub headers: Vec<HeaderMatch>,
    pub rewrites: Vec<Rewrite>,
    pub plan: PlanT,
}

/// An exact string or a regex.
#[derive(Debug)]
pub(crate) enum Matcher {
    Exact(String),
    Regex(Regex),
}

impl Matcher {
    /// Whether `value` matches.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex(re) => re.is_match(value),
        }
    }

    /// `'x'` or `regex ^x$`, for explanations.
    pub(crate) fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => format!("is '{s}'"),
            Matcher::Regex(re) => format!("matches regex {}", re.as_str()),
        }
    }

    fn key(&self) -> PatKey {
        match self {
            Matcher::Exact(s) => PatKey::Exact(s.clone()),
            Matcher::Regex(re) => PatKey::Regex(re.as_str().to_string()),
        }
    }
}

/// A header condition (name lower-case).
#[derive(Debug)]
pub(crate) struct HeaderMatch {
    pub name: String,
    pub matcher: Matcher,
}

/// One `source` alternative.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SourceMatch {
    Local,
    AnyTrunk,
    Trunk(String),
    Net(IpNet),
    Transport(&'static str),
}

/// A `time` condition.
#[derive(Debug)]
pub(crate) struct TimeMatch {
    pub zone: TimeZone,
    pub zone_name: String,
    /// Bit `n` set: weekday `n` (Monday = 0) matches.
    pub days: u8,
    /// Minutes of the day, half-open ranges (midnight wraps already split).
    pub minutes: Vec<(u16, u16)>,
    /// As written, for explanations.
    pub text: String,
}

/// A compiled rewrite step.
#[derive(Debug)]
pub(crate) enum Rewrite {
    Strip(usize),
    Prefix(Template),
    Replace {
        regex: Regex,
        with: Template,
    },
    CallerId {
        user: Option<Template>,
        display: Option<Template>,
    },
    AddHeader {
        name: String,
        value: Template,
    },
    RemoveHeader(String),
}

/// A plan whose strings still hold variables.
#[derive(Debug)]
pub(crate) struct PlanT {
    pub action: ActionT,
    pub on_no_answer: Option<Box<PlanT>>,
    pub on_failure: Option<Box<PlanT>>,
}

/// An action whose strings still hold variables.
#[derive(Debug)]
pub(crate) enum ActionT {
    User {
        users: Vec<Template>,
        parallel: bool,
        ring_timeout: Duration,
    },
    Trunk {
        trunks: Vec<String>,
        failover_on: Vec<FailoverOn>,
    },
    Conference {
        room: Template,
    },
    Echo,
    Reject {
        code: u16,
        reason: Template,
    },
}

impl PlanT {
    /// Whether this plan or a chained one sends the call to a trunk.
    pub(crate) fn uses_trunk(&self) -> bool {
        matches!(self.action, ActionT::Trunk { .. })
            || self.on_no_answer.as_ref().is_some_and(|p| p.uses_trunk())
            || self.on_failure.as_ref().is_some_and(|p| p.uses_trunk())
    }
}

/// A canonical form of a rule's conditions, to find identical ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatKey {
    Exact(String),
    Regex(String),
}

/// Canonical time condition: days mask, minute ranges, zone name.
pub(crate) type TimeKey = (u8, Vec<(u16, u16)>, String);

/// Canonical conditions of a rule, for the shadowing lint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CondKey {
    pub to: Option<PatKey>,
    pub from: Option<PatKey>,
    pub caller_groups: BTreeSet<String>,
    pub sources: BTreeSet<SourceMatch>,
    pub time: Option<TimeKey>,
    pub headers: Vec<(String, PatKey)>,
}

impl CondKey {
    /// No conditions at all: the rule matches every call.
    pub(crate) fn is_catch_all(&self) -> bool {
        *self == CondKey::default()
    }

    /// Only a `to` condition.
    pub(crate) fn only_to(&self) -> bool {
        self.to.is_some()
            && CondKey {
                to: None,
                ..self.clone()
            }
            .is_catch_all()
    }
}

/// What the lints need to know about every rule, including rules with errors.
#[derive(Debug)]
pub(crate) struct RuleMeta {
    pub name: String,
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// Canonical conditions (complete only when `conditions_ok`).
    pub key: CondKey,
    /// The conditions compiled without errors.
    pub conditions_ok: bool,
}

impl RuleMeta {
    /// A rule that certainly matches every call.
    pub(crate) fn is_catch_all(&self) -> bool {
        self.conditions_ok && self.key.is_catch_all()
    }
}

/// One file as read.
struct SourceFile {
    name: String,
    text: String,
    def: FileDef,
    zone: usize,
}

/// The loader's state.
struct Loader<'c> {
    ctx: &'c LoadContext<'c>,
    files: Vec<SourceFile>,
    paths: Vec<PathBuf>,
    /// Rules in their final order: (file index, rule index in that file).
    items: Vec<(usize, usize)>,
    zones: Vec<(String, TimeZone)>,
    constants: BTreeMap<String, String>,
    diagnostics: Vec<Diagnostic>,
}

/// Loads `text` (named `name`), with includes relative to `base`.
pub(crate) fn load_text(
    text: String,
    name: String,
    path: Option<PathBuf>,
    base: PathBuf,
    ctx: &LoadContext,
) -> Result<(Dialplan, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut loader = Loader {
        ctx,
        files: Vec::new(),
        paths: Vec::new(),
        items: Vec::new(),
        zones: vec![("UTC".to_string(), TimeZone::UTC)],
        constants: BTreeMap::new(),
        diagnostics: Vec::new(),
    };
    let mut stack = Vec::new();
    if let Some(path) = &path {
        loader.paths.push(path.clone());
        if let Ok(canonical) = std::fs::canonicalize(path) {
            stack.push(canonical);
        }
    }
    loader.read(text, name, base, 0, &mut stack);
    loader.collect_constants();
    let entries = loader.compile_rules();
    lint::check_rules(&entries, &mut loader.diagnostics);
    let rules: Vec<Rule> = entries.into_iter().filter_map(|(_, rule)| rule).collect();
    if rules.is_empty() && loader.diagnostics.is_empty() {
        let name = loader
            .files
            .first()
            .map(|f| f.name.clone())
            .unwrap_or_default();
        loader.diagnostics.push(Diagnostic {
            file: name,
            line: 1,
            column: 1,
            severity: Severity::Warning,
            message: "the dialplan has no rules: every call is refused".into(),
        });
    }
    let mut diagnostics = loader.diagnostics;
    let order: HashMap<String, usize> = loader
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .rev()
        .collect();
    diagnostics.sort_by_key(|d| {
        (
            order.get(&d.file).copied().unwrap_or(usize::MAX),
            d.line,
            d.column,
        )
    });
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Err(diagnostics);
    }
    let zone = loader.files.first().map(|f| f.zone).unwrap_or(0);
    let zone = loader
        .zones
        .get(zone)
        .cloned()
        .unwrap_or_else(|| ("UTC".to_string(), TimeZone::UTC));
    Ok((
        Dialplan {
            rules,
            files: loader.paths,
            zone,
        },
        diagnostics,
    ))
}

/// The first meaningful line of an error message.
fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid YAML")
        .trim()
        .to_string()
}

/// A regex error in one line.
fn regex_error(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => {
            let detail = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or("syntax error");
            format!("invalid regex: {detail}")
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("regex too large (over {limit} bytes compiled)")
        }
        other => format!("invalid regex: {other}"),
    }
}

/// `[A-Za-z0-9!#$%&'*+-.^_`|~]+`, the characters of a SIP header name.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The standard reason phrase for a final response code.
pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// Looks a time zone up: the system database, else the one built in.
fn find_zone(name: &str) -> Option<TimeZone> {
    jiff::tz::db()
        .get(name)
        .ok()
        .or_else(|| jiff::tz::TimeZoneDatabase::bundled().get(name).ok())
}

/// Parses `mon`, `monday`, ... to 0..=6 (Monday = 0).
fn weekday(token: &str) -> Option<u8> {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let token = token.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| token.len() >= 3 && d.starts_with(token.as_str()))
        .map(|i| i as u8)
}

/// Parses one `days` entry (`mon` or `mon-fri`, wrapping allowed) to a bit mask.
pub(crate) fn parse_days(token: &str) -> Result<u8, String> {
    let bad = || {
        format!(
            "'{token}' is not a day (mon, tue, wed, thu, fri, sat, sun) or a range like mon-fri"
        )
    };
    match token.split_once('-') {
        None => weekday(token).map(|d| 1 << d).ok_or_else(bad),
        Some((a, b)) => {
            let (a, b) = (weekday(a).ok_or_else(bad)?, weekday(b).ok_or_else(bad)?);
            let mut mask = 0u8;
            let mut d = a;
            loop {
                mask |= 1 << d;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
            Ok(mask)
        }
    }
}

/// Parses `HH:MM`, 00:00..=24:00.
fn parse_clock(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty()
        || h.len() > 2
        || m.len() != 2
        || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// Parses `HH:MM-HH:MM[,...]` into half-open minute ranges, splitting ranges
/// that wrap midnight.
pub(crate) fn parse_hours(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let bad = || format!("'{}' is not a range of hours like 08:00-18:00", part.trim());
        let (a, b) = part.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            parse_clock(a).ok_or_else(bad)?,
            parse_clock(b).ok_or_else(bad)?,
        );
        if start == 24 * 60 {
            return Err(bad());
        }
        if start == end {
            return Err(format!(
                "'{}' is empty (leave `hours` out to match the whole day)",
                part.trim()
            ));
        }
        if start < end {
            out.push((start, end));
        } else {
            out.push((start, 24 * 60));
            if end > 0 {
                out.push((0, end));
            }
        }
    }
    Ok(out)
}

/// Parses one `failover_on` entry.
pub(crate) fn parse_failover(text: &str) -> Result<FailoverOn, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "timeout" {
        return Ok(FailoverOn::Timeout);
    }
    if let Some(class) = t.strip_suffix("xx")
        && let Ok(class @ 4..=6) = class.parse::<u16>()
    {
        return Ok(FailoverOn::Class(class));
    }
    match t.parse::<u16>() {
        Ok(code @ 400..=699) => Ok(FailoverOn::Code(code)),
        _ => Err(format!(
            "'{text}' is not a failover condition (a code 400..=699 such as 503, a class 4xx/5xx/6xx, or timeout)"
        )),
    }
}

/// Groups and names of a compiled pattern, for the rule's scope.
struct PatternInfo {
    matcher: Matcher,
    groups: usize,
    names: Vec<(String, usize)>,
}

impl<'c> Loader<'c> {
    fn push(&mut self, file: usize, line: u64, column: u64, severity: Severity, message: String) {
        let name = self
            .files
            .get(file)
            .map(|f| f.name.clone())
            .unwrap_or_default();
        self.diagnostics.push(Diagnostic {
            file: name,
            line,
            column,
            severity,
            message,
        });
    }

    fn error<T>(&mut self, file: usize, node: &Node<T>, message: String) {
        self.push(file, node.line, node.column, Severity::Error, message);
    }

    fn warning<T>(&mut self, file: usize, node: &Node<T>, message: String) {
        self.push(file, node.line, node.column, Severity::Warning, message);
    }

    /// An error at character `offset` inside a string node, when the
    /// string's text in the file can be mapped (a one-line plain or quoted
    /// scalar without escapes); else at the node.
    fn error_in(&mut self, file: usize, node: &Node<String>, offset: usize, message: String) {
        let column = self.raw(file, node).and_then(|raw| {
            if raw.contains('\n') {
                return None;
            }
            if raw == node.value {
                return Some(node.column + offset as u64);
            }
            let quoted = raw.len() == node.value.len() + 2
                && (raw.starts_with('"') && raw.ends_with('"')
                    || raw.starts_with('\'') && raw.ends_with('\''));
            (quoted && raw[1..raw.len() - 1] == node.value).then(|| node.column + 1 + offset as u64)
        });
        self.push(
            file,
            node.line,
            column.unwrap_or(node.column),
            Severity::Error,
            message,
        );
    }

    /// The text of a node as written in its file.
    fn raw<T>(&self, file: usize, node: &Node<T>) -> Option<&str> {
        let (start, len) = node.bytes?;
        self.files
            .get(file)?
            .text
            .get(start..start.checked_add(len)?)
    }

    /// Reads one file and, recursively, its includes.
    fn read(
        &mut self,
        text: String,
        name: String,
        base: PathBuf,
        parent_zone: usize,
        stack: &mut Vec<PathBuf>,
    ) {
        let def: FileDef = if text.trim().is_empty() {
            FileDef::default()
        } else {
            match serde_saphyr::from_str(&text) {
                Ok(def) => def,
                Err(e) => {
                    let at = e.location().unwrap_or(serde_saphyr::Location::UNKNOWN);
                    let message = first_line(&e.without_snippet().to_string());
                    self.diagnostics.push(Diagnostic {
                        file: name,
                        line: at.line(),
                        column: at.column(),
                        severity: Severity::Error,
                        message,
                    });
                    return;
                }
            }
        };
        let file = self.files.len();
        self.files.push(SourceFile {
            name,
            text,
            def: FileDef::default(),
            zone: parent_zone,
        });
        let mut zone = parent_zone;
        if let Some(node) = &def.timezone {
            match find_zone(node.value.trim()) {
                Some(tz) => {
                    zone = self.zones.len();
                    self.zones.push((node.value.trim().to_string(), tz));
                }
                None => self.error(
                    file,
                    node,
                    format!(
                        "timezone: unknown time zone '{}' (use an IANA name such as Europe/Berlin)",
                        node.value
                    ),
                ),
            }
        }
        // Includes need `&mut self`; note them first.
        let includes: Vec<(usize, Option<Node<String>>, bool)> = def
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v = &r.value;
                let extra = v.name.is_some()
                    || v.match_.is_some()
                    || !v.rewrite.is_empty()
                    || v.action.is_some();
                (i, v.include.clone(), extra)
            })
            .collect();
        self.files[file].def = def;
        self.files[file].zone = zone;
        for (index, include, extra) in includes {
            let Some(include) = include else {
                self.items.push((file, index));
                continue;
            };
            if extra {
                self.error(
                    file,
                    &include,
                    "an include item takes no other keys (name, match, rewrite, action)".into(),
                );
            }
            let path = base.join(include.value.trim());
            let display = path.display().to_string();
            if self.files.len() >= MAX_FILES {
                self.error(
                    file,
                    &include,
                    format!(
                        "include '{display}': a dialplan may be made of {MAX_FILES} files at most"
                    ),
                );
                continue;
            }
            if stack.len() >= MAX_INCLUDE_DEPTH {
                self.error(
                    file,
                    &include,
                    format!("include '{display}': includes nested deeper than {MAX_INCLUDE_DEPTH}"),
                );
                continue;
            }
            let (canonical, text) = match std::fs::canonicalize(&path)
                .and_then(|c| crate::config::read_admin_file(&c).map(|t| (c, t)))
            {
                Ok(found) => found,
                Err(e) => {
                    self.error(
                        file,
                        &include,
                        format!("include '{display}': cannot read: {e}"),
                    );
                    continue;
                }
            };
            if let Some(at) = stack.iter().position(|p| *p == canonical) {
                let mut chain: Vec<String> = stack[at..]
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                chain.push(canonical.display().to_string());
                self.error(
                    file,
                    &include,
                    format!("include cycle: {}", chain.join(" -> ")),
                );
                continue;
            }
            if !self.paths.contains(&path) {
                self.paths.push(path.clone());
            }
            let child_base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            stack.push(canonical);
            self.read(text, display, child_base, zone, stack);
            stack.pop();
        }
    }

    /// Merges the constants of every file into one namespace.
    fn collect_constants(&mut self) {
        let mut seen: HashMap<String, (String, u64)> = HashMap::new();
        let mut found = Vec::new();
        for (file, source) in self.files.iter().enumerate() {
            for (key, value) in &source.def.constants {
                found.push((file, key.clone(), value.value.clone()));
            }
        }
        for (file, key, value) in found {
            let name = key.value.clone();
            if !is_identifier(&name) {
                self.error(file, &key, format!("constants: '{name}' is not a valid name (letters, digits, _; not starting with a digit)"));
                continue;
            }
            if BUILTINS.contains(&name.as_str()) {
                self.error(
                    file,
                    &key,
                    format!("constants: '{name}' is a built-in variable and cannot be redefined"),
                );
                continue;
            }
            let here = (self.files[file].name.clone(), key.line);
            if let Some((other_file, other_line)) = seen.get(&name) {
                let message =
                    format!("constants: '{name}' is already defined at {other_file}:{other_line}");
                self.error(file, &key, message);
                continue;
            }
            seen.insert(name.clone(), here);
            self.constants.insert(name, value);
        }
    }

    fn compile_rules(&mut self) -> Vec<(RuleMeta, Option<Rule>)> {
        let mut entries = Vec::new();
        let mut names: HashMap<String, (String, u64)> = HashMap::new();
        let items = std::mem::take(&mut self.items);
        // The definitions are moved out so that `self` can collect diagnostics.
        let defs: Vec<FileDef> = self
            .files
            .iter_mut()
            .map(|f| std::mem::take(&mut f.def))
            .collect();
        for (position, &(file, index)) in items.iter().enumerate() {
            let node = &defs[file].rules[index];
            let name = match &node.value.name {
                Some(name) if !name.value.trim().is_empty() => {
                    let here = (self.files[file].name.clone(), name.line);
                    if let Some((other_file, other_line)) = names.get(name.value.trim()) {
                        let message = format!(
                            "duplicate rule name '{}' (first used at {other_file}:{other_line})",
                            name.value.trim()
                        );
                        self.error(file, name, message);
                    } else {
                        names.insert(name.value.trim().to_string(), here);
                    }
                    name.value.trim().to_string()
                }
                Some(name) => {
                    self.error(file, name, "rule name is empty".into());
                    format!("#{}", position + 1)
                }
                None => {
                    self.error(
                        file,
                        node,
                        "rule has no `name` (every rule needs a unique name)".into(),
                    );
                    format!("#{}", position + 1)
                }
            };
            entries.push(self.compile_rule(file, node, &node.value, name));
        }
        for (f, def) in self.files.iter_mut().zip(defs) {
            f.def = def;
        }
        entries
    }

    fn compile_rule(
        &mut self,
        file: usize,
        node: &Node<RuleDef>,
        def: &RuleDef,
        name: String,
    ) -> (RuleMeta, Option<Rule>) {
        let errors_before = self.error_count();
        let mut key = CondKey::default();
        let empty = MatchDef::default();
        let conditions = def.match_.as_ref().map(|m| &m.value).unwrap_or(&empty);

        let to = conditions
            .to
            .as_ref()
            .and_then(|p| self.pattern(file, p, "to"));
        let from = conditions
            .from
            .as_ref()
            .and_then(|p| self.pattern(file, p, "from"));
        let to_groups = to.as_ref().map(|p| p.groups).unwrap_or(0);
        let from_groups = from.as_ref().map(|p| p.groups).unwrap_or(0);
        let mut names: HashMap<String, usize> = HashMap::new();
        for (n, i) in from
            .iter()
            .flat_map(|p| p.names.iter())
            .map(|(n, i)| (n, to_groups + i))
            .chain(to.iter().flat_map(|p| p.names.iter()).map(|(n, i)| (n, *i)))
        {
            names.insert(n.clone(), i);
        }
        key.to = to.as_ref().map(|p| p.matcher.key());
        key.from = from.as_ref().map(|p| p.matcher.key());

        let mut caller_groups = Vec::new();
        if let Some(list) = &conditions.caller_groups {
            if list.value.is_empty() {
                self.error(file, list, "caller_groups: the list is empty".into());
            }
            for group in &list.value {
                let Some(value) = self.literal(file, group) else {
                    continue;
                };
                if !self.ctx.groups.contains(&value) {
                    let known = if self.ctx.groups.is_empty() {
                        "no user has any group".to_string()
                    } else {
                        format!(
                            "known: {}",
                            self.ctx
                                .groups
                                .iter()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    self.error(
                        file,
                        group,
                        format!("caller_groups: unknown group '{value}' ({known})"),
                    );
                    continue;
                }
                key.caller_groups.insert(value.clone());
                caller_groups.push(value);
            }
        }

        let mut sources = Vec::new();
        if let Some(list) = &conditions.source {
            if list.value.is_empty() {
                self.error(file, list, "source: the list is empty".into());
            }
            for token in &list.value {
                if let Some(source) = self.source(file, token) {
                    key.sources.insert(source.clone());
                    sources.push(source);
                }
            }
        }

        let mut time = None;
        if let Some(t) = &conditions.time {
            let zone = self.files[file].zone;
            let (zone_name, tz) = self.zones[zone].clone();
            let mut days = 0x7f;
            let mut text = Vec::new();
            if let Some(list) = &t.value.days {
                days = 0;
                if list.is_empty() {
                    self.error(file, t, "time.days: the list is empty".into());
                }
                for day in list {
                    match parse_days(&day.value) {
                        Ok(mask) => days |= mask,
                        Err(message) => self.error(file, day, format!("time.days: {message}")),
                    }
                }
                text.push(
                    list.iter()
                        .map(|d| d.value.trim().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            let mut minutes = vec![(0, 24 * 60)];
            if let Some(hours) = &t.value.hours {
                match parse_hours(&hours.value) {
                    Ok(parsed) => minutes = parsed,
                    Err(message) => self.error(file, hours, format!("time.hours: {message}")),
                }
                text.push(hours.value.trim().to_string());
            }
            if t.value.days.is_none() && t.value.hours.is_none() {
                self.error(file, t, "time: give days and/or hours".into());
            }
            key.time = Some((days, minutes.clone(), zone_name.clone()));
            text.push(format!("({zone_name})"));
            time = Some(TimeMatch {
                zone: tz,
                zone_name,
                days,
                minutes,
                text: text.join(" "),
            });
        }

        let mut headers = Vec::new();
        for (header, pattern) in &conditions.headers {
            if !is_header_name(header.value.trim()) {
                self.error(
                    file,
                    header,
                    format!("headers: '{}' is not a header name", header.value),
                );
                continue;
            }
            if let Some(p) = self.pattern(file, pattern, "headers") {
                let name = header.value.trim().to_ascii_lowercase();
                key.headers.push((name.clone(), p.matcher.key()));
                headers.push(HeaderMatch {
                    name,
                    matcher: p.matcher,
                });
            }
        }

        let conditions_ok = self.error_count() == errors_before;
        let constants = self.constants.clone();
        let scope = Scope {
            constants: &constants,
            groups: to_groups + from_groups,
            names: &names,
            rule: &name,
            runtime: true,
        };
        let mut rewrites = Vec::new();
        for step in &def.rewrite {
            if let Some(r) = self.rewrite(file, step, &scope) {
                rewrites.push(r);
            }
        }
        let plan = match &def.action {
            Some(action) => self.plan(file, action, &scope, 0),
            None => {
                self.error(file, node, format!("rule '{name}' has no `action`"));
                None
            }
        };

        let meta = RuleMeta {
            name: name.clone(),
            file: self.files[file].name.clone(),
            line: node.line,
            column: node.column,
            key,
            conditions_ok,
        };
        let Some(plan) = plan.filter(|_| self.error_count() == errors_before) else {
            return (meta, None);
        };
        let rule = Rule {
            name,
            file: self.files[file].name.clone(),
            line: node.line,
            to: to.map(|p| p.matcher),
            from: from.map(|p| p.matcher),
            to_groups,
            caller_groups,
            sources,
            time,
            headers,
            rewrites,
            plan,
        };
        (meta, Some(rule))
    }

    fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// A string that may use constants only.
    fn literal(&mut self, file: usize, node: &Node<String>) -> Option<String> {
        let names = HashMap::new();
        let scope = Scope {
            constants: &self.constants,
            groups: 0,
            names: &names,
            rule: "",
            runtime: false,
        };
        match Template::parse(&node.value, &scope) {
            Ok(t) => t.as_literal(),
            Err(e) => {
                self.error_in(file, node, e.offset, e.message);
                None
            }
        }
    }

    /// Compiles a regex after expanding constants.
    fn regex(&mut self, file: usize, node: &Node<String>, what: &str) -> Option<Regex> {
        let text = match expand_regex(&node.value, &self.constants) {
            Ok(text) => text,
            Err(e) => {
                self.error_in(file, node, e.offset, format!("{what}: {}", e.message));
                return None;
            }
        };
        let built = regex::RegexBuilder::new(&text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .build();
        match built {
            Ok(re) => Some(re),
            Err(e) => {
                self.error(file, node, format!("{what}: {}", regex_error(&e)));
                None
            }
        }
    }

    fn pattern(&mut self, file: usize, node: &Node<PatternDef>, what: &str) -> Option<PatternInfo> {
        match &node.value {
            PatternDef::Exact(text) => {
                let exact = Node {
                    value: text.clone(),
                    line: node.line,
                    column: node.column,
                    bytes: node.bytes,
                };
                let value = self.literal(file, &exact)?;
                Some(PatternInfo {
                    matcher: Matcher::Exact(value),
                    groups: 0,
                    names: Vec::new(),
                })
            }
            PatternDef::Verbatim => match self.raw(file, node).map(str::to_string) {
                Some(raw) => {
                    let exact = Node {
                        value: raw,
                        line: node.line,
                        column: node.column,
                        bytes: node.bytes,
                    };
                    let value = self.literal(file, &exact)?;
                    Some(PatternInfo {
                        matcher: Matcher::Exact(value),
                        groups: 0,
                        names: Vec::new(),
                    })
                }
                None => {
                    self.error(file, node, format!("{what}: write this value in quotes"));
                    None
                }
            },
            PatternDef::Regex(source) => {
                let re = self.regex(file, source, what)?;
                let groups = re.captures_len() - 1;
                let names = re
                    .capture_names()
                    .enumerate()
                    .filter_map(|(i, n)| n.map(|n| (n.to_string(), i)))
                    .collect();
                Some(PatternInfo {
                    matcher: Matcher::Regex(re),
                    groups,
                    names,
                })
            }
        }
    }

    fn source(&mut self, file: usize, node: &Node<String>) -> Option<SourceMatch> {
        let text = self.literal(file, node)?;
        let token = text.trim();
        let (kind, arg) = match token.split_once(':') {
            Some((kind, arg)) => (kind.trim().to_ascii_lowercase(), Some(arg.trim())),
            None => (token.to_ascii_lowercase(), None),
        };
        match (kind.as_str(), arg) {
            ("local", None) => Some(SourceMatch::Local),
            ("trunk", None) => Some(SourceMatch::AnyTrunk),
            ("trunk", Some(name)) => {
                if self.ctx.trunks.iter().any(|t| t == name) {
                    Some(SourceMatch::Trunk(name.to_string()))
                } else {
                    let message = format!("source: {}", self.unknown_trunk(name));
                    self.error(file, node, message);
                    None
                }
            }
            ("ip", Some(addr)) => {
                let net = addr
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| addr.parse::<IpAddr>().ok().map(IpNet::from));
                match net {
                    Some(net) => Some(SourceMatch::Net(net.trunc())),
                    None => {
                        self.error(file, node, format!("source: '{addr}' is not an IP address or CIDR (192.0.2.0/24, 2001:db8::/32)"));
                        None
                    }
                }
            }
            ("transport", Some(t)) => match TRANSPORTS.iter().find(|k| k.eq_ignore_ascii_case(t)) {
                Some(k) => Some(SourceMatch::Transport(k)),
                None => {
                    self.error(
                        file,
                        node,
                        format!("source: unknown transport '{t}' (udp, tcp, tls, ws, wss)"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    file,
                    node,
                    format!("source: unknown source '{token}' (local, trunk, trunk:NAME, ip:ADDRESS, ip:CIDR, transport:udp|tcp|tls|ws|wss)"),
                );
                None
            }
        }
    }

    fn unknown_trunk(&self, name: &str) -> String {
        if self.ctx.trunks.is_empty() {
            format!("unknown trunk '{name}' (no trunks are configured)")
        } else {
            format!(
                "unknown trunk '{name}' (configured: {})",
                self.ctx.trunks.join(", ")
            )
        }
    }

    fn template(
        &mut self,
        file: usize,
        node: &Node<String>,
        scope: &Scope,
        what: &str,
    ) -> Option<Template> {
        match Template::parse(&node.value, scope) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error_in(file, node, e.offset, format!("{what}: {}", e.message));
                None
            }
        }
    }

    fn header_name(&mut self, file: usize, node: &Node<String>, what: &str) -> Option<String> {
        let name = node.value.trim();
        if is_header_name(name) {
            Some(name.to_string())
        } else {
            self.error(file, node, format!("{what}: '{name}' is not a header name"));
            None
        }
    }

    fn rewrite(&mut self, file: usize, node: &Node<RewriteDef>, scope: &Scope) -> Option<Rewrite> {
        match &node.value {
            RewriteDef::Strip(n) => Some(Rewrite::Strip(
                usize::try_from(n.value).unwrap_or(usize::MAX),
            )),
            RewriteDef::Prefix(text) => self
                .template(file, text, scope, "prefix")
                .map(Rewrite::Prefix),
            RewriteDef::Replace(def) => {
                let regex = self.regex(file, &def.regex, "replace.regex")?;
                let names: HashMap<String, usize> = regex
                    .capture_names()
                    .enumerate()
                    .filter_map(|(i, n)| n.map(|n| (n.to_string(), i)))
                    .collect();
                let inner = Scope {
                    constants: scope.constants,
                    groups: regex.captures_len() - 1,
                    names: &names,
                    rule: scope.rule,
                    runtime: true,
                };
                let with = self.template(file, &def.with, &inner, "replace.with")?;
                Some(Rewrite::Replace { regex, with })
            }
            RewriteDef::CallerId(def) => {
                if def.user.is_none() && def.display.is_none() {
                    self.error(file, node, "caller_id: give user and/or display".into());
                    return None;
                }
                let user = match &def.user {
                    Some(u) => Some(self.template(file, u, scope, "caller_id.user")?),
                    None => None,
                };
                let display = match &def.display {
                    Some(d) => Some(self.template(file, d, scope, "caller_id.display")?),
                    None => None,
                };
                Some(Rewrite::CallerId { user, display })
            }
            RewriteDef::AddHeader(def) => {
                let name = self.header_name(file, &def.name, "add_header.name");
                if def.value.value.contains(['\r', '\n']) {
                    self.error(
                        file,
                        &def.value,
                        "add_header.value: a header value cannot contain line breaks".into(),
                    );
                    return None;
                }
                let value = self.template(file, &def.value, scope, "add_header.value");
                Some(Rewrite::AddHeader {
                    name: name?,
                    value: value?,
                })
            }
            RewriteDef::RemoveHeader(name) => self
                .header_name(file, name, "remove_header")
                .map(Rewrite::RemoveHeader),
        }
    }

    fn plan(
        &mut self,
        file: usize,
        node: &Node<ActionDef>,
        scope: &Scope,
        depth: usize,
    ) -> Option<PlanT> {
        let def = &node.value;
        let kinds: Vec<&str> = [
            def.user.is_some().then_some("user"),
            def.trunk.is_some().then_some("trunk"),
            def.conference.is_some().then_some("conference"),
            def.echo.is_some().then_some("echo"),
            def.reject.is_some().then_some("reject"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if kinds.is_empty() {
            self.error(
                file,
                node,
                "action: give one of user, trunk, conference, echo, reject".into(),
            );
        } else if kinds.len() > 1 {
            self.error(
                file,
                node,
                format!(
                    "action: several kinds ({}); give exactly one",
                    kinds.join(", ")
                ),
            );
        }
        if depth > 16 {
            self.error(file, node, "action: chained more than 16 deep".into());
            return None;
        }
        let mut action = None;
        if let Some(user) = &def.user {
            let list = &user.value.users;
            if list.value.is_empty() {
                self.error(file, list, "user.users: the list is empty".into());
            }
            let users: Vec<Option<Template>> = list
                .value
                .iter()
                .map(|u| self.template(file, u, scope, "user.users"))
                .collect();
            let ring = user
                .value
                .ring_timeout
                .as_ref()
                .map(|n| n.value)
                .unwrap_or(DEFAULT_RING_TIMEOUT);
            if let Some(n) = &user.value.ring_timeout
                && (ring == 0 || ring > MAX_RING_TIMEOUT)
            {
                self.error(
                    file,
                    n,
                    format!(
                        "user.ring_timeout: {ring} is out of range (1..={MAX_RING_TIMEOUT} seconds)"
                    ),
                );
            }
            if let Some(users) = users.into_iter().collect::<Option<Vec<_>>>() {
                action = Some(ActionT::User {
                    users,
                    parallel: user.value.strategy == Strategy::Parallel,
                    ring_timeout: Duration::from_secs(ring),
                });
            }
        }
        if let Some(trunk) = &def.trunk {
            let list = &trunk.value.trunks;
            if list.value.is_empty() {
                self.error(file, list, "trunk.trunks: the list is empty".into());
            }
            let mut trunks = Vec::new();
            for t in &list.value {
                let Some(name) = self.literal(file, t) else {
                    continue;
                };
                let name = name.trim().to_string();
                if !self.ctx.trunks.contains(&name) {
                    let message = format!("trunk.trunks: {}", self.unknown_trunk(&name));
                    self.error(file, t, message);
                    continue;
                }
                trunks.push(name);
            }
            let mut failover_on = vec![
                FailoverOn::Code(408),
                FailoverOn::Class(5),
                FailoverOn::Timeout,
            ];
            if let Some(list) = &trunk.value.failover_on {
                failover_on.clear();
                for item in list {
                    match parse_failover(&item.value) {
                        Ok(f) if !failover_on.contains(&f) => failover_on.push(f),
                        Ok(_) => {}
                        Err(message) => {
                            self.error(file, item, format!("trunk.failover_on: {message}"))
                        }
                    }
                }
            }
            action = Some(ActionT::Trunk {
                trunks,
                failover_on,
            });
        }
        if let Some(conference) = &def.conference {
            let room = &conference.value.room;
            if room.value.trim().is_empty() {
                self.error(file, room, "conference.room: the room name is empty".into());
            }
            action = self
                .template(file, room, scope, "conference.room")
                .map(|room| ActionT::Conference { room });
        }
        if def.echo.is_some() {
            action = Some(ActionT::Echo);
        }
        if let Some(reject) = &def.reject {
            let code = reject.value.code.value;
            if !(400..=699).contains(&code) {
                self.error(
                    file,
                    &reject.value.code,
                    format!("reject.code: {code} is out of range (400..=699)"),
                );
            }
            let reason = match &reject.value.reason {
                Some(r) if r.value.contains(['\r', '\n']) => {
                    self.error(file, r, "reject.reason: cannot contain line breaks".into());
                    None
                }
                Some(r) => self.template(file, r, scope, "reject.reason"),
                None => Some(Template::literal(reason_phrase(code))),
            };
            action = reason.map(|reason| ActionT::Reject { code, reason });
            for (chained, key) in [
                (&def.on_no_answer, "on_no_answer"),
                (&def.on_failure, "on_failure"),
            ] {
                if let Some(next) = chained {
                    self.error(
                        file,
                        next,
                        format!("{key}: reject ends the call, so {key} never applies"),
                    );
                }
            }
        }
        if let Some(next) = &def.on_no_answer
            && (def.echo.is_some() || def.conference.is_some())
        {
            let kind = if def.echo.is_some() {
                "echo"
            } else {
                "conference"
            };
            self.warning(
                file,
                next,
                format!("on_no_answer: {kind} answers at once, so on_no_answer never applies"),
            );
        }
        let on_no_answer = def
            .on_no_answer
            .as_ref()
            .map(|next| self.plan(file, next, scope, depth + 1));
        let on_failure = def
            .on_failure
            .as_ref()
            .map(|next| self.plan(file, next, scope, depth + 1));
        if kinds.len() != 1 {
            return None;
        }
        let on_no_answer = match on_no_answer {
            Some(plan) => Some(Box::new(plan?)),
            None => None,
        };
        let on_failure = match on_failure {
            Some(plan) => Some(Box::new(plan?)),
            None => None,
        };
        Some(PlanT {
            action: action?,
            on_no_answer,
            on_failure,
        })
    }
}
