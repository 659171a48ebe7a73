//! SIP trunks (carriers): their configuration. Dialplans route calls to them
//! by name; the trunk leg itself (B2BUA, registration, health probing) builds
//! on this.

use serde::Deserialize;

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

/// One trunk, as configured.
#[derive(Debug, Clone, Deserialize)]
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
}
