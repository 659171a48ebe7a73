//! SIP trunks (carriers): their configuration ([`config`], read from the
//! trunks file by [`file`]), the runtime table the B2BUA and the dispatcher
//! consult (which trunk a request came from, whether a trunk is up, its call
//! limits), and how numbers and caller IDs are written for each trunk.
//!
//! Outbound registration ([`registration`]) and OPTIONS health probing
//! ([`probe`]) are sans-IO state machines; [`driver`] runs them per trunk and
//! keeps each trunk's [`TrunkStatus`] current; the B2BUA skips trunks that
//! are down. [`tls`] builds the TLS client used towards a trunk.
//! See docs/trunks.md.

mod config;
pub mod driver;
pub mod file;
mod metrics;
pub mod probe;
pub mod registration;
mod runtime;
pub mod tls;

pub use config::{
    CallerIdPolicy, DtmfMode, EarlyMediaPolicy, NumberFormat, RegistrationConfig, TlsSettings,
    TrunkConfig, TrunkCredentials, TrunkTransport,
};
pub use driver::TrunkManager;
pub use file::{TrunkFileConfig, TrunksSection};
pub use metrics::TrunkMetrics;
pub use runtime::{CallPermit, LimitRefused, Trunk, TrunkReport, TrunkStatus, Trunks};
