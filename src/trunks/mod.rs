//! SIP trunks (carriers): their configuration, the runtime table the B2BUA
//! and the dispatcher consult (which trunk a request came from, whether a
//! trunk is up, its call limits), and how numbers and caller IDs are
//! written for each trunk.
//!
//! Outbound registration and OPTIONS health probing keep each trunk's
//! [`TrunkStatus`] current; the B2BUA skips trunks that are down.

mod config;
mod runtime;

pub use config::{
    CallerIdPolicy, DtmfMode, EarlyMediaPolicy, NumberFormat, RegistrationConfig, TlsSettings,
    TrunkConfig, TrunkCredentials, TrunkTransport,
};
pub use runtime::{CallPermit, LimitRefused, Trunk, TrunkStatus, Trunks};

/// The TLS client settings for a trunk with transport `tls` (`None` for
/// other transports).
pub fn tls_client(config: &TrunkConfig) -> Result<Option<crate::sip::outbound::TlsClient>, String> {
    if config.transport != TrunkTransport::Tls {
        return Ok(None);
    }
    Err(format!(
        "trunk {}: TLS client settings are not available yet",
        config.name
    ))
}
