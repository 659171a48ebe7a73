//! Dialplans: the YAML routing language (see `docs/dialplan.md`).
//!
//! A dialplan is an ordered list of rules. Each rule has conditions on the
//! call (called and calling user, the caller's groups, where the call comes
//! from, the time, headers), rewrites (called number, caller ID, headers) and
//! an action (ring users, send to trunks, conference, echo, reject) with
//! optional follow-ups when nobody answers or the call fails. The first rule
//! whose conditions all hold decides.
//!
//! This module is sans-IO apart from reading the files in [`load`]: a loaded
//! [`Dialplan`] is immutable and validated, and [`Dialplan::route`] is a pure
//! function of the [`CallContext`] (the current time is passed in).
//!
//! - `model`: the file format (serde + JSON Schema)
//! - `template`: variables in strings
//! - `compile`: loading, includes, validation, compilation
//! - `lint`: checks across rules
//! - `evaluate`: [`Dialplan::route`]
//! - `explain`: the human-readable [`Decision`]
//! - [`cli`]: `switchboard dialplan check|test|schema`

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod cli;
mod compile;
mod evaluate;
mod explain;
mod lint;
mod model;
mod template;

#[cfg(test)]
mod tests;

/// A loaded, validated dialplan; immutable (reloads build a new one).
#[derive(Debug)]
pub struct Dialplan {
    rules: Vec<compile::Rule>,
    files: Vec<PathBuf>,
    zone: (String, jiff::tz::TimeZone),
}

/// What the dialplan may refer to: configured trunks and user groups.
#[derive(Debug, Clone, Copy)]
pub struct LoadContext<'a> {
    /// Names of the configured trunks.
    pub trunks: &'a [String],
    /// Every group some user belongs to.
    pub groups: &'a BTreeSet<String>,
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    /// The dialplan cannot be used.
    Error,
    /// Probably a mistake; the dialplan can be used.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A problem found while loading, with its position:
/// `file:line:col: error: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}:{column}: {severity}: {message}")]
pub struct Diagnostic {
    /// The file, as named when loading (includes: joined to the including file's directory).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

/// Loads and validates `main_file` and the files it includes (relative to
/// the including file). Returns the dialplan with its warnings, or every
/// error (and warning) found.
pub fn load(
    main_file: &Path,
    ctx: &LoadContext,
) -> Result<(Dialplan, Vec<Diagnostic>), Vec<Diagnostic>> {
    let name = main_file.display().to_string();
    let text = crate::config::read_admin_file(main_file).map_err(|e| {
        vec![Diagnostic {
            file: name.clone(),
            line: 0,
            column: 0,
            severity: Severity::Error,
            message: format!("cannot read: {e}"),
        }]
    })?;
    let base = main_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    compile::load_text(text, name, Some(main_file.to_path_buf()), base, ctx)
}

/// Loads a dialplan from text named `name` (for messages); includes are
/// resolved relative to the working directory.
pub fn load_str(
    text: &str,
    name: &str,
    ctx: &LoadContext,
) -> Result<(Dialplan, Vec<Diagnostic>), Vec<Diagnostic>> {
    compile::load_text(
        text.to_string(),
        name.to_string(),
        None,
        PathBuf::new(),
        ctx,
    )
}

/// Where a call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// An authenticated local user.
    Local {
        /// The user name.
        user: String,
    },
    /// A configured trunk.
    Trunk {
        /// The trunk's name.
        name: String,
    },
    /// Anything else.
    Unknown,
}

/// The facts about a call that rules can test.
#[derive(Debug, Clone)]
pub struct CallContext<'a> {
    /// The called user (Request-URI user part).
    pub to: &'a str,
    /// The calling user (From user part).
    pub from: &'a str,
    /// The From display name, when present.
    pub from_display: Option<&'a str>,
    /// Groups of the caller (a local user); empty otherwise.
    pub caller_groups: &'a [String],
    /// Where the call comes from.
    pub source: SourceKind,
    /// The address the request came from.
    pub source_ip: IpAddr,
    /// `udp`, `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'a str,
    /// The request's headers (name, value), in order.
    pub headers: &'a [(String, String)],
    /// Now, in seconds since the Unix epoch.
    pub now: u64,
}

/// The outcome of routing a call: which rule matched, why, what it changed,
/// and the plan to carry out (every variable expanded). `Display` gives the
/// dry-run explanation.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The matching rule's name.
    pub rule: String,
    /// The file that defines it.
    pub file: String,
    /// Its line.
    pub line: u64,
    /// Why it matched, one line per condition.
    pub reasons: Vec<String>,
    /// The rewrites applied, in order, human readable.
    pub rewrites: Vec<String>,
    /// The called number after the rewrites.
    pub to: String,
    /// New From user part, when a rewrite set one.
    pub caller_user: Option<String>,
    /// New From display name, when a rewrite set one.
    pub caller_display: Option<String>,
    /// Headers to add (name, value).
    pub add_headers: Vec<(String, String)>,
    /// Names of headers to remove from the request.
    pub remove_headers: Vec<String>,
    /// What to do.
    pub plan: Plan,
}

/// One thing to do with a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ring local users.
    User {
        /// User names.
        users: Vec<String>,
        /// All at once (else one after another).
        parallel: bool,
        /// How long to ring (each user, when sequential).
        ring_timeout: Duration,
    },
    /// Send to trunks, in order.
    Trunk {
        /// Trunk names, in failover order.
        trunks: Vec<String>,
        /// When to try the next trunk.
        failover_on: Vec<FailoverOn>,
    },
    /// Join a conference room.
    Conference {
        /// The room name.
        room: String,
    },
    /// Answer and echo the audio back.
    Echo,
    /// Refuse the call.
    Reject {
        /// Status code, 400..=699.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// A trunk outcome that moves on to the next trunk.
#[derive(Debug, Clone, PartialEq)]
pub enum FailoverOn {
    /// This final status code.
    Code(u16),
    /// Any code of this class (`5` for 5xx).
    Class(u16),
    /// No final response in time.
    Timeout,
}

impl FailoverOn {
    /// Whether a final response with `code` triggers failover.
    pub fn matches_code(&self, code: u16) -> bool {
        match self {
            FailoverOn::Code(c) => *c == code,
            FailoverOn::Class(class) => code / 100 == *class,
            FailoverOn::Timeout => false,
        }
    }
}

/// An action and what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to do first.
    pub action: Action,
    /// Next, when nobody answers in time.
    pub on_no_answer: Option<Box<Plan>>,
    /// Next, when the action fails (busy, error, every trunk failed).
    pub on_failure: Option<Box<Plan>>,
}

/// The JSON Schema of the dialplan file format (pretty-printed, with a final
/// newline), generated from the types the loader reads.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(model::FileDef);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
