//! What an administrator writes for a trunk (YAML).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::media::codec::CodecKind;
use crate::sip::TransportKind;

/// Transport towards a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// UDP (the default).
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

impl TrunkTransport {
    /// The SIP transport.
    pub fn kind(self) -> TransportKind {
        match self {
            TrunkTransport::Udp => TransportKind::Udp,
            TrunkTransport::Tcp => TransportKind::Tcp,
            TrunkTransport::Tls => TransportKind::Tls,
        }
    }

    /// The default port (5060, or 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            TrunkTransport::Tls => 5061,
            _ => 5060,
        }
    }
}

/// Digest credentials for challenges (401/407) from the trunk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Only answer challenges of this realm (any realm when absent).
    #[serde(default)]
    pub realm: Option<String>,
}

/// Outbound registration to the trunk (the carrier then sends calls for our
/// numbers to the registered Contact).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// User name (the AOR's user part).
    pub username: String,
    /// Password.
    pub password: String,
    /// Only answer challenges of this realm.
    #[serde(default)]
    pub realm: Option<String>,
    /// Requested expiry, seconds (default 600).
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// Authentication user name when it differs from `username`.
    #[serde(default)]
    pub auth_username: Option<String>,
}

fn default_expires() -> u32 {
    600
}

/// How DTMF reaches the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 telephone-event in RTP (the default).
    #[default]
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay`).
    Info,
}

/// How the trunk wants numbers written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberFormat {
    /// E.164 with a leading `+` (default true); false: digits only.
    #[serde(default = "yes")]
    pub plus: bool,
    /// Our country code (e.g. `49`): numbers in it are sent nationally
    /// (with `national_prefix`) when `national` is true.
    #[serde(default)]
    pub country_code: Option<String>,
    /// National trunk prefix (e.g. `0`).
    #[serde(default)]
    pub national_prefix: Option<String>,
    /// Send numbers of our own country in national format.
    #[serde(default)]
    pub national: bool,
}

impl Default for NumberFormat {
    fn default() -> Self {
        NumberFormat {
            plus: true,
            country_code: None,
            national_prefix: None,
            national: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// What caller ID the trunk gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CallerIdPolicy {
    /// Always send this number (a main number; carriers often refuse
    /// numbers that are not ours). Absent: the caller's (after the
    /// dialplan's caller_id rewrite).
    #[serde(default)]
    pub number: Option<String>,
    /// Display name to send (absent: the caller's).
    #[serde(default)]
    pub name: Option<String>,
    /// Withhold the caller's identity (From anonymous, Privacy: id).
    #[serde(default)]
    pub anonymous: bool,
    /// Add a P-Asserted-Identity with the number.
    #[serde(default)]
    pub asserted_identity: bool,
}

/// What to do with early media (183 with SDP) from the trunk when the
/// browser does not support reliable provisional responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyMediaPolicy {
    /// Send the browser a 183 with our answer (unreliable) and play the
    /// trunk's early media (the default; SIP.js and JsSIP accept it).
    #[default]
    Forward,
    /// Ignore the trunk's early media; the browser plays local ringback.
    Ringback,
}

/// TLS towards the trunk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Verify the trunk's certificate (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// Extra trusted CA certificates (PEM file).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name to verify (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            verify: true,
            ca_file: None,
            server_name: None,
        }
    }
}

/// One trunk, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Unique name, used by dialplans.
    pub name: String,
    /// Carrier host name or address.
    pub host: String,
    /// Port (default 5060, 5061 for TLS).
    #[serde(default)]
    pub port: Option<u16>,
    /// Transport.
    #[serde(default)]
    pub transport: TrunkTransport,
    /// Send every request to this proxy (`host[:port]`) instead of `host`.
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// Domain for Request-URI, To and From (default: `host`).
    #[serde(default)]
    pub domain: Option<String>,
    /// Register to the trunk.
    #[serde(default)]
    pub register: Option<RegistrationConfig>,
    /// Credentials for INVITE challenges (default: the registration's).
    #[serde(default)]
    pub auth: Option<TrunkCredentials>,
    /// Addresses inbound requests from this trunk come from (IP
    /// authentication). Default: the addresses `host` resolves to.
    #[serde(default)]
    pub inbound: Vec<IpNet>,
    /// Codecs offered to the trunk, most preferred first (default PCMU,
    /// PCMA, G722).
    #[serde(default = "default_codecs")]
    pub codecs: Vec<CodecKind>,
    /// DTMF mode.
    #[serde(default)]
    pub dtmf: DtmfMode,
    /// Number format of Request-URI / To and of the caller ID.
    #[serde(default)]
    pub numbers: NumberFormat,
    /// Caller ID policy.
    #[serde(default)]
    pub caller_id: CallerIdPolicy,
    /// Maximum concurrent calls, to and from the trunk (0: no limit).
    #[serde(default)]
    pub max_calls: u32,
    /// Maximum new calls per second, to and from the trunk (0: no limit).
    #[serde(default)]
    pub max_cps: u32,
    /// OPTIONS probe interval in seconds (0: no probing).
    #[serde(default)]
    pub options_interval: u32,
    /// Early media handling.
    #[serde(default)]
    pub early_media: EarlyMediaPolicy,
    /// Seconds to wait for any response to an INVITE (even 100 Trying)
    /// before trying the next trunk (default 5).
    #[serde(default = "default_response_timeout")]
    pub response_timeout: u32,
    /// Session timer interval proposed to the trunk, seconds (RFC 4028;
    /// 0: none). Default 1800.
    #[serde(default = "default_session_expires")]
    pub session_expires: u32,
    /// TLS settings (transport tls).
    #[serde(default)]
    pub tls: TlsSettings,
}

fn default_codecs() -> Vec<CodecKind> {
    vec![CodecKind::Pcmu, CodecKind::Pcma, CodecKind::G722]
}

fn default_response_timeout() -> u32 {
    5
}

fn default_session_expires() -> u32 {
    1800
}

impl TrunkConfig {
    /// The port to send to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.transport.default_port())
    }

    /// The domain of URIs towards the trunk.
    pub fn domain(&self) -> &str {
        self.domain.as_deref().unwrap_or(&self.host)
    }

    /// Credentials for INVITE challenges.
    pub fn credentials(&self) -> Option<TrunkCredentials> {
        self.auth.clone().or_else(|| {
            self.register.as_ref().map(|r| TrunkCredentials {
                username: r
                    .auth_username
                    .clone()
                    .unwrap_or_else(|| r.username.clone()),
                password: r.password.clone(),
                realm: r.realm.clone(),
            })
        })
    }

    /// Whether `ip` is one of the configured inbound addresses.
    pub fn allows_inbound(&self, ip: IpAddr) -> bool {
        self.inbound.iter().any(|net| net.contains(&ip))
    }

    /// Writes a dialled number (E.164 with `+`, or whatever the dialplan
    /// produced) the way the trunk wants it.
    pub fn format_number(&self, number: &str) -> String {
        let f = &self.numbers;
        let Some(digits) = number.strip_prefix('+') else {
            return number.to_string();
        };
        if f.national
            && let Some(cc) = f.country_code.as_deref()
            && let Some(rest) = digits.strip_prefix(cc)
        {
            return format!("{}{rest}", f.national_prefix.as_deref().unwrap_or(""));
        }
        if f.plus {
            number.to_string()
        } else {
            digits.to_string()
        }
    }

    /// Reads a number the trunk sent (national or E.164 without `+`) as
    /// E.164 with `+` when it can tell; otherwise unchanged.
    pub fn normalize_number(&self, number: &str) -> String {
        let f = &self.numbers;
        if number.starts_with('+') {
            return number.to_string();
        }
        if let (Some(cc), Some(prefix)) = (f.country_code.as_deref(), f.national_prefix.as_deref())
            && !prefix.is_empty()
            && let Some(rest) = number.strip_prefix(prefix)
            && !rest.starts_with(prefix)
            && rest.chars().all(|c| c.is_ascii_digit())
            && !rest.is_empty()
        {
            return format!("+{cc}{rest}");
        }
        number.to_string()
    }

    /// Where requests go: the outbound proxy (`host[:port]`) when set, else
    /// `host` and [`port`](Self::port).
    pub fn next_hop(&self) -> (String, u16) {
        match self.outbound_proxy.as_deref().map(str::trim) {
            Some(proxy) if !proxy.is_empty() => {
                split_host_port(proxy).unwrap_or_else(|| (proxy.to_string(), self.port()))
            }
            _ => (self.host.clone(), self.port()),
        }
    }

    /// Whether registration and probing must start over after a reload:
    /// anything that changes where or how we register or probe.
    pub fn same_signalling(&self, other: &TrunkConfig) -> bool {
        self.host == other.host
            && self.port == other.port
            && self.transport == other.transport
            && self.outbound_proxy == other.outbound_proxy
            && self.domain == other.domain
            && self.register == other.register
            && self.options_interval == other.options_interval
            && self.tls == other.tls
    }

    /// Every problem of this trunk as (key, message); the key is the YAML
    /// key to point at. Reads `tls.ca_file`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = self.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            out.push((
                "name",
                format!("name '{name}' must be non-empty letters, digits, '-', '_' or '.'"),
            ));
        }
        if !valid_host(&self.host) {
            out.push((
                "host",
                format!(
                    "host '{}' must be a host name or IP address (the port goes in port:)",
                    self.host
                ),
            ));
        }
        if self.port == Some(0) {
            out.push(("port", "port must be 1..=65535".into()));
        }
        if let Some(proxy) = &self.outbound_proxy {
            let valid = split_host_port(proxy.trim())
                .map(|(h, _)| valid_host(&h))
                .unwrap_or_else(|| valid_host(proxy.trim()));
            if !valid {
                out.push((
                    "outbound_proxy",
                    format!("outbound_proxy '{proxy}' must be host or host:port"),
                ));
            }
        }
        if let Some(domain) = &self.domain
            && !valid_host(domain)
        {
            out.push(("domain", format!("domain '{domain}' is not a host name")));
        }
        if let Some(register) = &self.register {
            if register.username.trim().is_empty() {
                out.push(("register", "register.username must not be empty".into()));
            }
            if !(1..=86_400).contains(&register.expires) {
                out.push((
                    "register",
                    format!(
                        "register.expires: {} is out of range (1..=86400)",
                        register.expires
                    ),
                ));
            }
        }
        if let Some(auth) = &self.auth
            && auth.username.trim().is_empty()
        {
            out.push(("auth", "auth.username must not be empty".into()));
        }
        if self.codecs.is_empty() {
            out.push(("codecs", "codecs: the list is empty".into()));
        }
        if self.options_interval > 86_400 {
            out.push((
                "options_interval",
                format!(
                    "options_interval: {} is out of range (0..=86400)",
                    self.options_interval
                ),
            ));
        }
        if self.session_expires != 0 && self.session_expires < 90 {
            out.push((
                "session_expires",
                format!(
                    "session_expires: {} is below the RFC 4028 minimum of 90 (0 turns it off)",
                    self.session_expires
                ),
            ));
        }
        if let Some(cc) = &self.numbers.country_code
            && (cc.is_empty() || !cc.chars().all(|c| c.is_ascii_digit()))
        {
            out.push((
                "numbers",
                format!("numbers.country_code '{cc}' must be digits"),
            ));
        }
        if self.transport != TrunkTransport::Tls {
            if self.tls != TlsSettings::default() {
                out.push(("tls", "tls: settings apply only with transport: tls".into()));
            }
        } else if let Err(e) = super::tls::client(self) {
            out.push(("tls", e.to_string()));
        }
        out
    }
}

/// Splits `host:port` / `[v6]:port`; `None` without a valid port.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host.to_string(), port.parse().ok().filter(|p| *p != 0)?))
}

/// A host name (letters, digits, `-`, `.`) or an IP address.
fn valid_host(host: &str) -> bool {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(yaml: &str) -> TrunkConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults() {
        let t = trunk("name: a\nhost: 192.0.2.1\n");
        assert_eq!(t.port(), 5060);
        assert_eq!(t.domain(), "192.0.2.1");
        assert_eq!(
            t.codecs,
            [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::G722]
        );
        assert_eq!(t.format_number("+15551234567"), "+15551234567");
        let t = trunk("name: a\nhost: h\ntransport: tls\n");
        assert_eq!(t.port(), 5061);
    }

    #[test]
    fn number_formats() {
        let t = trunk(
            "name: a\nhost: h\nnumbers: { plus: false, country_code: '49', national_prefix: '0', national: true }\n",
        );
        assert_eq!(t.format_number("+49301234567"), "0301234567");
        assert_eq!(t.format_number("+15551234567"), "15551234567");
        assert_eq!(t.format_number("1001"), "1001");
        assert_eq!(t.normalize_number("0301234567"), "+49301234567");
        assert_eq!(t.normalize_number("+15551234567"), "+15551234567");
        assert_eq!(t.normalize_number("00155512"), "00155512");
    }

    #[test]
    fn problems_name_their_key() {
        let keys = |yaml: &str| -> Vec<&'static str> {
            trunk(yaml).problems().into_iter().map(|(k, _)| k).collect()
        };
        assert!(keys("name: a\nhost: sip.example.com\n").is_empty());
        assert_eq!(keys("name: a\nhost: ''\n"), ["host"]);
        assert_eq!(keys("name: a\nhost: 'h:5060'\n"), ["host"]);
        assert_eq!(
            keys("name: 'a b'\nhost: h\ncodecs: []\n"),
            ["name", "codecs"]
        );
        assert_eq!(keys("name: a\nhost: h\ntls: { verify: false }\n"), ["tls"]);
        assert!(keys("name: a\nhost: h\ntransport: tls\ntls: { verify: false }\n").is_empty());
        assert_eq!(
            keys("name: a\nhost: h\ntransport: tls\ntls: { ca_file: /nonexistent/ca.pem }\n"),
            ["tls"]
        );
        assert_eq!(
            keys("name: a\nhost: h\nregister: { username: '', password: p, expires: 0 }\n"),
            ["register", "register"]
        );
        assert_eq!(
            keys("name: a\nhost: h\noutbound_proxy: 'p:x'\n"),
            ["outbound_proxy"]
        );
        let t = trunk("name: a\nhost: h\noutbound_proxy: 'sbc.example:5080'\n");
        assert_eq!(t.next_hop(), ("sbc.example".to_string(), 5080));
        let t = trunk("name: a\nhost: h\ntransport: tls\n");
        assert_eq!(t.next_hop(), ("h".to_string(), 5061));
    }
}
