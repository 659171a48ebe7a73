//! `switchboard dialplan check|test|schema`: validate dialplan files, dry-run
//! a call through a dialplan, and print the file format's JSON Schema.
//!
//! Trunk names and user groups come from the configuration (`--config`),
//! so references to them are checked like the server checks them.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{CallContext, LoadContext, Severity, SourceKind};
use crate::config;

/// Exit code of `dialplan test` when no rule matches.
const NO_MATCH: u8 = 2;

/// `switchboard dialplan ...`
#[derive(Debug, Subcommand)]
pub enum DialplanCommand {
    /// Validate dialplan files: every error and warning as FILE:LINE:COLUMN
    /// (exit code 1 when there is an error).
    Check {
        /// Dialplan files (default: the configured `dialplan.file`,
        /// dialplans/default.yaml).
        files: Vec<PathBuf>,
    },
    /// Dry-run a call through a dialplan and explain the decision (exit code
    /// 2 when no rule matches).
    Test(TestArgs),
    /// Print the JSON Schema of the dialplan file format.
    Schema,
}

/// The call to dry-run.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The calling user (From user part).
    #[arg(long)]
    pub from: String,
    /// The called number (Request-URI user part).
    #[arg(long)]
    pub to: String,
    /// Where the call comes from: local (the caller is a local user),
    /// trunk:NAME, or ip:ADDRESS.
    #[arg(long, default_value = "local", value_parser = parse_source)]
    pub source: TestSource,
    /// The transport the call arrived on.
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp", "tls", "ws", "wss"])]
    pub transport: String,
    /// A SIP header of the request, 'Name: value' (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// When the call happens: 2026-11-21T10:00:00 (in the dialplan's time
    /// zone) or with an offset (2026-11-21T10:00:00Z); default: now.
    #[arg(long)]
    pub time: Option<String>,
    /// The From display name.
    #[arg(long)]
    pub display: Option<String>,
    /// The dialplan (default: the configured `dialplan.file`,
    /// dialplans/default.yaml).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// `--source` of `dialplan test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestSource {
    /// A local user (the caller).
    Local,
    /// A named trunk.
    Trunk(String),
    /// Some address.
    Ip(IpAddr),
}

fn parse_source(text: &str) -> Result<TestSource, String> {
    match text.split_once(':') {
        None if text == "local" => Ok(TestSource::Local),
        Some(("trunk", name)) if !name.is_empty() => Ok(TestSource::Trunk(name.to_string())),
        Some(("ip", addr)) => addr
            .parse()
            .map(TestSource::Ip)
            .map_err(|_| format!("'{addr}' is not an IP address")),
        _ => Err("use local, trunk:NAME or ip:ADDRESS".into()),
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err("use 'Name: value'".into()),
    }
}

/// Runs a `dialplan` subcommand; `config` is the `--config` file.
pub fn run(command: &DialplanCommand, config: Option<&Path>) -> ExitCode {
    match command {
        DialplanCommand::Schema => {
            print!("{}", super::json_schema());
            ExitCode::SUCCESS
        }
        DialplanCommand::Check { files } => with_config(config, |trunks, groups, loaded| {
            check(files, trunks, groups, loaded)
        }),
        DialplanCommand::Test(args) => with_config(config, |trunks, groups, loaded| {
            test(args, trunks, groups, loaded)
        }),
    }
}

/// Loads the configuration and runs `f` with its trunk names and groups.
fn with_config(
    path: Option<&Path>,
    f: impl FnOnce(&[String], &BTreeSet<String>, &config::Loaded) -> ExitCode,
) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("switchboard: invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    let trunks = config_trunks(&loaded);
    let groups: BTreeSet<String> = loaded
        .config
        .domains
        .iter()
        .flat_map(|d| d.users.iter())
        .flat_map(|u| u.value.groups.iter().cloned())
        .collect();
    f(&trunks, &groups, &loaded)
}

/// Names of the configured trunks.
fn config_trunks(loaded: &config::Loaded) -> Vec<String> {
    loaded
        .trunks
        .iter()
        .map(|t| t.name.trim().to_string())
        .collect()
}

fn check(
    files: &[PathBuf],
    trunks: &[String],
    groups: &BTreeSet<String>,
    loaded: &config::Loaded,
) -> ExitCode {
    let files = if files.is_empty() {
        vec![loaded.config.dialplan.file.clone()]
    } else {
        files.to_vec()
    };
    let ctx = LoadContext { trunks, groups };
    let mut failed = false;
    for file in &files {
        let (count, diagnostics) = match super::load(file, &ctx) {
            Ok((plan, warnings)) => (Some(plan.rule_count()), warnings),
            Err(diagnostics) => (None, diagnostics),
        };
        for d in &diagnostics {
            eprintln!("{d}");
        }
        let warnings = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        match count {
            Some(rules) => println!(
                "{}: OK ({}, {})",
                file.display(),
                plural(rules, "rule"),
                plural(warnings, "warning")
            ),
            None => {
                failed = true;
                let errors = diagnostics.len() - warnings;
                println!(
                    "{}: {}, {}",
                    file.display(),
                    plural(errors, "error"),
                    plural(warnings, "warning")
                );
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn test(
    args: &TestArgs,
    trunks: &[String],
    groups: &BTreeSet<String>,
    loaded: &config::Loaded,
) -> ExitCode {
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| loaded.config.dialplan.file.clone());
    let ctx = LoadContext { trunks, groups };
    let plan = match super::load(&file, &ctx) {
        Ok((plan, warnings)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            plan
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("switchboard: {} has errors", file.display());
            return ExitCode::FAILURE;
        }
    };
    let now = match &args.time {
        None => jiff::Timestamp::now(),
        Some(text) => match parse_time(text, plan.zone()) {
            Some(ts) => ts,
            None => {
                eprintln!(
                    "switchboard: --time '{text}' is not a time like 2026-11-21T10:00:00 or 2026-11-21T10:00:00Z"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let Ok(now_secs) = u64::try_from(now.as_second()) else {
        eprintln!("switchboard: --time must be after 1970");
        return ExitCode::FAILURE;
    };

    let user = loaded
        .config
        .domains
        .iter()
        .flat_map(|d| d.users.iter())
        .map(|u| &u.value)
        .find(|u| u.username == args.from);
    let (source, source_ip, caller_groups) = match &args.source {
        TestSource::Local => (
            SourceKind::Local {
                user: args.from.clone(),
            },
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            user.map(|u| u.groups.clone()).unwrap_or_default(),
        ),
        TestSource::Trunk(name) => (
            SourceKind::Trunk { name: name.clone() },
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Vec::new(),
        ),
        TestSource::Ip(ip) => (SourceKind::Unknown, *ip, Vec::new()),
    };
    let display = args.display.clone().or_else(|| match args.source {
        TestSource::Local => user.and_then(|u| u.display_name.clone()),
        _ => None,
    });
    let call = CallContext {
        to: &args.to,
        from: &args.from,
        from_display: display.as_deref(),
        caller_groups: &caller_groups,
        source,
        source_ip,
        transport: &args.transport,
        headers: &args.headers,
        now: now_secs,
    };

    let source_text = match &call.source {
        SourceKind::Local { user: name } => match user {
            Some(_) if caller_groups.is_empty() => format!("local user {name}, no groups"),
            Some(_) => format!("local user {name}, groups {}", caller_groups.join(", ")),
            None => format!("local user {name} (not a configured user: no groups)"),
        },
        SourceKind::Trunk { name } => format!("trunk {name}"),
        SourceKind::Unknown => "unknown".to_string(),
    };
    println!("call: from {} to {}", call.from, call.to);
    println!(
        "  source: {source_text}; address {}; transport {}",
        call.source_ip, call.transport
    );
    println!(
        "  time: {}",
        now.to_zoned(plan.zone().clone())
            .strftime("%a %Y-%m-%d %H:%M:%S %Z")
    );
    for (name, value) in call.headers {
        println!("  header: {name}: {value}");
    }
    println!("dialplan: {} ({} rules)", file.display(), plan.rule_count());
    println!();
    match plan.route(&call) {
        Some(decision) => {
            print!("{decision}");
            ExitCode::SUCCESS
        }
        None => {
            println!("no rule matched: the call is refused");
            ExitCode::from(NO_MATCH)
        }
    }
}

/// `2026-11-21T10:00:00` in `zone`, or an RFC 3339 time with an offset.
fn parse_time(text: &str, zone: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    zone.to_timestamp(civil).ok()
}
