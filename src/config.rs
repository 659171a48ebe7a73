//! Switchboard's configuration: the YAML schema, its defaults, and validation
//! with `file:line:column` messages.
//!
//! The file is read with `serde-saphyr` (pure Rust, maintained, with source
//! spans); unknown keys are refused. Without a file the built-in defaults
//! apply. A loaded [`Config`] is immutable; reloads build a new one.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::auth::authenticator::{AuthConfig, parse_algorithms};
use crate::directory::{Directory, DomainConfig, demo_domains};
use crate::media::engine::MediaConfig;
use crate::registrar::RegistrarConfig;
use crate::sip::Limits;
use crate::trunks::{TrunkConfig, TrunksSection};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity of this server.
    pub server: Spanned<ServerConfig>,
    /// Addresses to listen on, per transport.
    pub listen: Listen,
    /// Certificate and key for TLS, WSS and HTTPS.
    pub tls: TlsFiles,
    /// Limits on messages and connections.
    pub limits: Spanned<Limits>,
    /// Logging defaults (the command line overrides them).
    pub log: LogConfig,
    /// SIP domains and their users (default: the demo domain, users 1001–1003).
    pub domains: Vec<DomainConfig>,
    /// Registrar settings.
    pub registrar: Spanned<RegistrarConfig>,
    /// Digest authentication and failure throttling.
    pub auth: Spanned<AuthConfig>,
    /// SIP trunks: a trunks file (default `trunks.yaml`, reloaded live) or
    /// an inline list (read at start only). See docs/trunks.md.
    pub trunks: TrunksSection,
    /// Where the dialplan lives and how it is reloaded.
    pub dialplan: DialplanConfig,
    /// RTP ports, media addresses and limits of the media engine.
    pub media: Spanned<MediaConfig>,
    /// The bundled STUN/TURN server.
    pub turn: Spanned<crate::turn::TurnConfig>,
    /// Call detail records.
    pub cdr: crate::b2bua::cdr::CdrConfig,
}

/// Where the dialplan lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialplanConfig {
    /// The main dialplan file (it may include others).
    pub file: PathBuf,
    /// Reload automatically when a dialplan file changes.
    pub watch: bool,
}

impl Default for DialplanConfig {
    fn default() -> Self {
        DialplanConfig {
            file: PathBuf::from("dialplans/default.yaml"),
            watch: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: unknown_span(ServerConfig::default()),
            listen: Listen::default(),
            tls: TlsFiles::default(),
            limits: unknown_span(Limits::default()),
            log: LogConfig::default(),
            domains: demo_domains(),
            registrar: unknown_span(RegistrarConfig::default()),
            auth: unknown_span(AuthConfig::default()),
            trunks: TrunksSection::default(),
            dialplan: DialplanConfig::default(),
            media: unknown_span(MediaConfig::default()),
            turn: unknown_span(crate::turn::TurnConfig::default()),
            cdr: crate::b2bua::cdr::CdrConfig::default(),
        }
    }
}

/// Identity of this server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Value of our `Server` / `User-Agent` headers.
    pub name: String,
    /// Our public address behind 1:1 NAT (a cloud instance's elastic IP):
    /// written as our own address in Via, Contact and Record-Route for
    /// peers outside `local_networks`. Unset: the address we send from.
    /// SDP and ICE candidates follow it while `media.bind` is the wildcard
    /// and `media.advertised_address` (one address for all) is unset.
    pub advertised_address: Option<std::net::IpAddr>,
    /// Networks whose peers reach us directly (they get the address we
    /// send from); unset: loopback, RFC 1918, link-local, RFC 6598 and
    /// IPv6 unique-local.
    pub local_networks: Option<Vec<ipnet::IpNet>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: format!("Switchboard/{}", env!("CARGO_PKG_VERSION")),
            advertised_address: None,
            local_networks: None,
        }
    }
}

impl ServerConfig {
    /// What to advertise to whom ([`crate::sip::advertise::Advertise`]).
    pub fn advertise(&self) -> crate::sip::advertise::Advertise {
        let networks = match &self.local_networks {
            Some(networks) => networks.clone(),
            None => crate::sip::advertise::DEFAULT_LOCAL_NETWORKS
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        };
        crate::sip::advertise::Advertise::new(self.advertised_address, networks)
    }
}

/// Listening addresses per transport; an empty list turns a listener off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// SIP over UDP.
    pub udp: Vec<Spanned<String>>,
    /// SIP over TCP.
    pub tcp: Vec<Spanned<String>>,
    /// SIP over TLS.
    pub tls: Vec<Spanned<String>>,
    /// HTTPS: the web front end and SIP over secure WebSocket.
    pub https: Vec<Spanned<String>>,
    /// Plain HTTP: the web front end and SIP over WebSocket, for development.
    pub http: Vec<Spanned<String>>,
    /// Admin endpoints (`/metrics`); loopback addresses only.
    pub admin: Vec<Spanned<String>>,
}

fn addrs(list: &[&str]) -> Vec<Spanned<String>> {
    list.iter().map(|a| unknown_span(a.to_string())).collect()
}

fn unknown_span<T>(value: T) -> Spanned<T> {
    Spanned {
        value,
        referenced: Location::UNKNOWN,
        defined: Location::UNKNOWN,
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            udp: addrs(&["0.0.0.0:5060", "[::]:5060"]),
            tcp: addrs(&["0.0.0.0:5060", "[::]:5060"]),
            tls: addrs(&["0.0.0.0:5061", "[::]:5061"]),
            https: addrs(&["0.0.0.0:8443", "[::]:8443"]),
            http: addrs(&["0.0.0.0:8080", "[::]:8080"]),
            admin: addrs(&["127.0.0.1:8090"]),
        }
    }
}

/// Certificate and private key files (PEM). When both are missing, a
/// self-signed development certificate is generated there at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// Generate a self-signed certificate when both files are missing.
    pub generate_self_signed: bool,
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles {
            cert: PathBuf::from("certs/switchboard.crt"),
            key: PathBuf::from("certs/switchboard.key"),
            generate_self_signed: true,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,switchboard::sip=debug`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, or `<built-in defaults>`.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found; a configuration with any problem is not used.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built-in defaults (no file).
    Defaults,
    /// A YAML file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Defaults => write!(f, "<built-in defaults>"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The file used when none is named: `switchboard.yaml` in the working directory.
pub const DEFAULT_FILE: &str = "switchboard.yaml";

/// A validated configuration with its listener addresses resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration as written.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Parsed listener addresses.
    pub listeners: Listeners,
    /// Users and domains, ready for lookups.
    pub directory: std::sync::Arc<Directory>,
    /// The trunks (from the trunks file or the inline list), validated.
    pub trunks: Vec<TrunkConfig>,
}

/// Listener addresses, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// SIP over UDP.
    pub udp: Vec<SocketAddr>,
    /// SIP over TCP.
    pub tcp: Vec<SocketAddr>,
    /// SIP over TLS.
    pub tls: Vec<SocketAddr>,
    /// HTTPS and WSS.
    pub https: Vec<SocketAddr>,
    /// HTTP and WS.
    pub http: Vec<SocketAddr>,
    /// Admin endpoints.
    pub admin: Vec<SocketAddr>,
}

/// The largest configuration, dialplan or trunks file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a file an admin wrote: it must be a regular file (a FIFO would
/// block the reload, a device never end) of at most [`MAX_FILE_BYTES`].
pub fn read_admin_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// Loads `path`, or `./switchboard.yaml` when present, or the built-in defaults.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let path = match path {
        Some(path) => Some(path.to_path_buf()),
        None => Path::new(DEFAULT_FILE)
            .exists()
            .then(|| PathBuf::from(DEFAULT_FILE)),
    };
    match path {
        None => validate(Config::default(), Source::Defaults, ""),
        Some(path) => {
            let text = read_admin_file(&path).map_err(|e| {
                ConfigError(vec![Problem {
                    file: path.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }])
            })?;
            parse(&text, Source::File(path))
        }
    }
}

/// Parses and validates YAML text.
pub fn parse(text: &str, source: Source) -> Result<Loaded, ConfigError> {
    let file = source.to_string();
    // An empty file means "all defaults".
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let location = e.location().unwrap_or(Location::UNKNOWN);
            let message = first_line(&e.without_snippet().to_string());
            ConfigError(vec![Problem {
                file: file.clone(),
                line: location.line(),
                column: location.column(),
                message,
            }])
        })?
    };
    validate(config, source, text)
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid YAML")
        .trim()
        .to_string()
}

fn validate(config: Config, source: Source, text: &str) -> Result<Loaded, ConfigError> {
    let file = source.to_string();
    let mut problems = Vec::new();
    let mut problem = |location: Location, message: String| {
        problems.push(Problem {
            file: file.clone(),
            line: location.line(),
            column: location.column(),
            message,
        });
    };

    let mut listeners = Listeners::default();
    let mut seen: HashMap<(bool, SocketAddr), &'static str> = HashMap::new();
    /// (YAML key, addresses as written, where they go, whether it is UDP).
    type ListenGroup<'a> = (
        &'static str,
        &'a Vec<Spanned<String>>,
        &'a mut Vec<SocketAddr>,
        bool,
    );
    let groups: [ListenGroup<'_>; 6] = [
        ("listen.udp", &config.listen.udp, &mut listeners.udp, true),
        ("listen.tcp", &config.listen.tcp, &mut listeners.tcp, false),
        ("listen.tls", &config.listen.tls, &mut listeners.tls, false),
        (
            "listen.https",
            &config.listen.https,
            &mut listeners.https,
            false,
        ),
        (
            "listen.http",
            &config.listen.http,
            &mut listeners.http,
            false,
        ),
        (
            "listen.admin",
            &config.listen.admin,
            &mut listeners.admin,
            false,
        ),
    ];
    for (key, list, out, datagram) in groups {
        for entry in list {
            let addr: SocketAddr = match entry.value.parse() {
                Ok(addr) => addr,
                Err(_) => {
                    problem(
                        entry.referenced,
                        format!(
                            "{key}: '{}' is not an IP:PORT address (IPv6 as [::1]:5060)",
                            entry.value
                        ),
                    );
                    continue;
                }
            };
            if key == "listen.admin" && !addr.ip().is_loopback() {
                problem(
                    entry.referenced,
                    format!(
                        "{key}: '{addr}' is not a loopback address; the admin endpoints must not be exposed"
                    ),
                );
            }
            if addr.port() != 0
                && let Some(other) = seen.insert((datagram, addr), key)
            {
                problem(
                    entry.referenced,
                    format!("{key}: '{addr}' is already used by {other}"),
                );
            }
            out.push(addr);
        }
    }

    let limits = &config.limits.value;
    let block = config.limits.referenced;
    let mut check = |key: &str, value: u64, min: u64, max: u64| {
        if value < min || value > max {
            let (line, column) = locate_key(text, (block.line(), block.column()), key);
            problems.push(Problem {
                file: file.clone(),
                line,
                column,
                message: format!("limits.{key}: {value} is out of range ({min}..={max})"),
            });
        }
    };
    check(
        "max_message_size",
        limits.max_message_size as u64,
        1_024,
        1 << 20,
    );
    check("max_headers", limits.max_headers as u64, 16, 4_096);
    check(
        "max_line_length",
        limits.max_line_length as u64,
        256,
        1 << 20,
    );
    check(
        "max_connections",
        limits.max_connections as u64,
        1,
        10_000_000,
    );
    check(
        "max_connections_per_ip",
        limits.max_connections_per_ip as u64,
        1,
        10_000_000,
    );
    check("idle_timeout_secs", limits.idle_timeout_secs, 1, 86_400);
    check("message_timeout_secs", limits.message_timeout_secs, 1, 600);
    check(
        "ws_ping_interval_secs",
        limits.ws_ping_interval_secs,
        0,
        86_400,
    );
    check(
        "read_buffer_size",
        limits.read_buffer_size as u64,
        512,
        1 << 20,
    );
    check("send_queue", limits.send_queue as u64, 1, 1 << 16);
    check("write_timeout_secs", limits.write_timeout_secs, 1, 600);
    check(
        "udp_transaction_memory",
        limits.udp_transaction_memory as u64,
        0,
        1 << 36,
    );
    check("udp_readers", limits.udp_readers as u64, 0, 64);
    check(
        "min_session_expires_secs",
        limits.min_session_expires_secs,
        2,
        86_400,
    );
    check("source_rate", u64::from(limits.source_rate), 0, 1_000_000);
    check(
        "source_burst",
        u64::from(limits.source_burst),
        1,
        10_000_000,
    );
    check(
        "max_rate_sources",
        limits.max_rate_sources as u64,
        1,
        10_000_000,
    );

    let registrar = &config.registrar.value;
    let block = config.registrar.referenced;
    let mut check = |key: &str, value: u64, min: u64, max: u64| {
        if value < min || value > max {
            let (line, column) = locate_key(text, (block.line(), block.column()), key);
            problems.push(Problem {
                file: file.clone(),
                line,
                column,
                message: format!("registrar.{key}: {value} is out of range ({min}..={max})"),
            });
        }
    };
    check("min_expires", registrar.min_expires, 1, 86_400);
    check(
        "max_expires",
        registrar.max_expires,
        registrar.min_expires.max(1),
        7 * 86_400,
    );
    check(
        "default_expires",
        registrar.default_expires,
        registrar.min_expires.max(1),
        registrar.max_expires.max(1),
    );
    check("max_contacts", registrar.max_contacts as u64, 1, 1_000);
    // Keep it below limits.idle_timeout_secs, or idle flows get closed between keepalives.
    check("flow_timer_secs", registrar.flow_timer_secs, 5, 86_400);

    let auth = &config.auth.value;
    let block = config.auth.referenced;
    if let Err(message) = parse_algorithms(&auth.algorithms) {
        let (line, column) = locate_key(text, (block.line(), block.column()), "algorithms");
        problems.push(Problem {
            file: file.clone(),
            line,
            column,
            message,
        });
    }
    if !(1..=10_000_000).contains(&auth.max_tracked_nonces) {
        let (line, column) = locate_key(text, (block.line(), block.column()), "max_tracked_nonces");
        problems.push(Problem {
            file: file.clone(),
            line,
            column,
            message: format!(
                "auth.max_tracked_nonces: {} is out of range (1..=10000000)",
                auth.max_tracked_nonces
            ),
        });
    }
    if !(10..=86_400).contains(&auth.nonce_lifetime_secs) {
        let (line, column) =
            locate_key(text, (block.line(), block.column()), "nonce_lifetime_secs");
        problems.push(Problem {
            file: file.clone(),
            line,
            column,
            message: format!(
                "auth.nonce_lifetime_secs: {} is out of range (10..=86400)",
                auth.nonce_lifetime_secs
            ),
        });
    }
    if auth.throttle.max_failures == 0 || auth.throttle.window_secs == 0 {
        let (line, column) = locate_key(text, (block.line(), block.column()), "throttle");
        problems.push(Problem {
            file: file.clone(),
            line,
            column,
            message: "auth.throttle: max_failures and window_secs must be at least 1".into(),
        });
    }

    if let Some(ip) = config.server.value.advertised_address
        && !crate::media::engine::usable_advertised(ip)
    {
        let block = config.server.referenced;
        let (line, column) = locate_key(text, (block.line(), block.column()), "advertised_address");
        problems.push(Problem {
            file: file.clone(),
            line,
            column,
            message: format!(
                "server.advertised_address: {ip} is not a unicast address peers can reach"
            ),
        });
    }
    if let Err(message) = config.media.value.validate() {
        let key = message
            .strip_prefix("media.")
            .and_then(|m| m.split(':').next())
            .unwrap_or("media");
        let block = config.media.referenced;
        let (line, column) = locate_key(text, (block.line(), block.column()), key);
        problems.push(Problem {
            file: file.clone(),
            line,
            column,
            message,
        });
    }
    if let Err(found) = config.turn.value.resolve() {
        let block = config.turn.referenced;
        for (key, message) in found {
            let (line, column) = locate_key(text, (block.line(), block.column()), key);
            problems.push(Problem {
                file: file.clone(),
                line,
                column,
                message,
            });
        }
    }

    let trunks = match config.trunks.load(&file, text) {
        Ok(trunks) => trunks,
        Err(found) => {
            problems.extend(found);
            Vec::new()
        }
    };

    let directory = match Directory::build(&config.domains) {
        Ok(directory) => Some(directory),
        Err(found) => {
            for p in found {
                problems.push(Problem {
                    file: file.clone(),
                    line: p.line,
                    column: p.column,
                    message: p.message,
                });
            }
            None
        }
    };

    match directory {
        Some(directory) if problems.is_empty() => Ok(Loaded {
            config,
            source,
            listeners,
            directory: std::sync::Arc::new(directory),
            trunks,
        }),
        _ => Err(ConfigError(problems)),
    }
}

/// Finds the line of `key:` inside the block that starts at `block`, for
/// messages about values that carry no span of their own. Falls back to the
/// block's own position.
fn locate_key(text: &str, block: (u64, u64), key: &str) -> (u64, u64) {
    if block.0 == 0 {
        return block;
    }
    let mut block_indent = None;
    for (index, line) in text
        .lines()
        .enumerate()
        .skip(block.0.saturating_sub(1) as usize)
    {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match block_indent {
            None => block_indent = Some(indent),
            Some(first) if indent < first => break,
            Some(_) => {}
        }
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with(':')
        {
            return (index as u64 + 1, indent as u64 + 1);
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Loaded, ConfigError> {
        parse(text, Source::File("t.yaml".into()))
    }

    #[test]
    fn defaults_are_valid_and_listen_everywhere() {
        let loaded = validate(Config::default(), Source::Defaults, "").expect("defaults valid");
        assert_eq!(loaded.listeners.udp.len(), 2);
        assert_eq!(loaded.listeners.https[0].port(), 8443);
        assert_eq!(loaded.listeners.http[0].port(), 8080);
        assert_eq!(loaded.listeners.tls[0].port(), 5061);
    }

    #[test]
    fn empty_file_means_defaults() {
        assert!(file("").is_ok());
        assert!(file("# nothing\n").is_ok());
    }

    #[test]
    fn unknown_key_is_refused_with_position() {
        let err = file("listen:\n  udp: []\n  bogus: 1\n").unwrap_err();
        let p = &err.0[0];
        assert_eq!((p.file.as_str(), p.line), ("t.yaml", 3), "{err}");
        assert!(p.message.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_address_is_refused_with_position() {
        let err = file("listen:\n  udp:\n    - 127.0.0.1:5060\n    - nonsense\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!((err.0[0].line, err.0[0].column), (4, 7), "{err}");
        assert!(
            err.0[0].message.starts_with("listen.udp: 'nonsense'"),
            "{err}"
        );
    }

    #[test]
    fn conflicting_and_exposed_addresses_are_refused() {
        let err = file("listen:\n  tcp: ['127.0.0.1:9000']\n  http: ['127.0.0.1:9000']\n  admin: ['0.0.0.0:8090']\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t.yaml:3:"), "{text}");
        assert!(text.contains("already used by listen.tcp"), "{text}");
        assert!(text.contains("not a loopback address"), "{text}");
    }

    #[test]
    fn nonce_table_size_is_configurable_and_checked() {
        let ok = file("auth:\n  max_tracked_nonces: 1000\n").expect("valid");
        assert_eq!(ok.config.auth.value.max_tracked_nonces, 1000);
        let err = file("auth:\n  nonce_lifetime_secs: 60\n  max_tracked_nonces: 0\n").unwrap_err();
        let p = &err.0[0];
        assert_eq!((p.line, p.column), (3, 3), "{err}");
        assert!(p.message.starts_with("auth.max_tracked_nonces: 0"), "{err}");
    }

    #[test]
    fn limit_out_of_range_names_its_line_and_key() {
        let err =
            file("log:\n  level: info\nlimits:\n  max_headers: 4\n  max_message_size: 65535\n")
                .unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, 4, "{err}");
        assert!(
            err.0[0].message.starts_with("limits.max_headers: 4"),
            "{err}"
        );
    }

    #[test]
    fn the_message_rate_limit_is_read_and_checked() {
        let loaded = file(
            "limits:\n  source_rate: 50\n  source_burst: 80\n  rate_exempt: ['10.1.0.0/16', '2001:db8::/32']\n",
        )
        .unwrap();
        let limits = &loaded.config.limits.value;
        assert_eq!((limits.source_rate, limits.source_burst), (50, 80));
        assert_eq!(limits.rate_exempt.len(), 2);
        assert_eq!(Limits::default().source_rate, 200, "on by default");
        let err = file("limits:\n  source_rate: 50\n  source_burst: 0\n").unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!((err.0[0].line, err.0[0].column), (3, 3), "{err}");
        assert!(
            err.0[0].message.starts_with("limits.source_burst: 0"),
            "{err}"
        );
        let err = file("limits:\n  rate_exempt: ['10.1.0.0/33']\n").unwrap_err();
        assert_eq!(err.0[0].line, 2, "{err}");
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let err = file("listen:\n  udp: [\n").unwrap_err();
        assert!(err.0[0].line >= 2, "{err}");
    }

    #[test]
    fn media_section_is_read_and_checked() {
        let loaded = file(
            "media:\n  rtp_ports: '30000-30099'\n  bind: 127.0.0.1\n  media_timeout_secs: 5\n",
        )
        .unwrap();
        assert_eq!(loaded.config.media.value.rtp_ports, "30000-30099");
        assert_eq!(loaded.config.media.value.media_timeout_secs, 5);
        let err = file("media:\n  bind: 127.0.0.1\n  rtp_ports: '500-600'\n").unwrap_err();
        assert_eq!(err.0[0].line, 3, "{err}");
        assert!(err.0[0].message.starts_with("media.rtp_ports"), "{err}");
    }

    #[test]
    fn advertised_addresses_must_be_reachable() {
        let loaded = file("server:\n  name: x\n  advertised_address: 192.0.2.10\n").unwrap();
        assert_eq!(
            loaded.config.server.value.advertised_address,
            Some("192.0.2.10".parse().unwrap())
        );
        let err = file("server:\n  name: x\n  advertised_address: 0.0.0.0\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("t.yaml:3:3: server.advertised_address: 0.0.0.0 is not"),
            "{text}"
        );
        let err = file("server:\n  advertised_address: '::ffff:224.0.0.1'\n").unwrap_err();
        assert!(
            err.to_string().contains("server.advertised_address"),
            "{err}"
        );
        let err = file("media:\n  advertised_address: 239.1.1.1\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("t.yaml:2:3: media.advertised_address: 239.1.1.1 is not"),
            "{text}"
        );
    }

    #[test]
    fn wrong_type_is_refused() {
        let err = file("limits:\n  max_headers: many\n").unwrap_err();
        assert_eq!(err.0[0].line, 2, "{err}");
    }

    #[test]
    fn inline_trunks_are_checked_with_positions() {
        let loaded = file("trunks:\n  - name: a\n    host: 192.0.2.1\n").unwrap();
        assert_eq!(loaded.trunks.len(), 1);
        assert!(loaded.config.trunks.file().is_none());
        let err = file("trunks:\n  - name: a\n    host: 192.0.2.1\n  - name: a\n    host: ''\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t.yaml:5:5: trunks: 'a': host ''"), "{text}");
        assert!(
            text.contains("t.yaml:4:5: trunks: name 'a' is used twice"),
            "{text}"
        );
        // The default: trunks.yaml, which may be absent.
        let loaded = file("").unwrap();
        assert_eq!(
            loaded.config.trunks.file().map(|f| f.file.clone()),
            Some(PathBuf::from("trunks.yaml"))
        );
    }
}
