//! Log output: `tracing` to stderr, as text or JSON lines, filtered by
//! `RUST_LOG`, else `--log-level`, else the configuration.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is used when `RUST_LOG` is unset.
pub fn init(level: &str, format: LogFormat) {
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(with_quiet_deps(&wanted)).unwrap_or_else(|_| {
        EnvFilter::new("info,rsipstack=warn,rsipstack::transaction::transaction=error")
    });
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (tests call this more than once): keep the first.
    let _ = result;
}

/// The SIP stack we build on logs every message at `info`; keep it at `warn`
/// unless the filter names it explicitly. Its transaction module is kept at
/// `error`: the automatic ACK of a 2xx to our own INVITE over UDP first asks
/// the stack's transport table, which knows none of our sockets (we own
/// them), warns "ack lookup failed" on every call, then sends the ACK on the
/// socket the 2xx came in on, which is right.
fn with_quiet_deps(level: &str) -> String {
    if level.contains("rsipstack") {
        level.to_string()
    } else {
        format!("{level},rsipstack=warn,rsipstack::transaction::transaction=error")
    }
}
