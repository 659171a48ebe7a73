//! Switchboard: a SIP-over-WebSocket gateway and B2BUA in one binary.
//!
//! Data flows one way: transports (`sip::transport`, `http`) → transactions
//! (`sip`) → the transaction user (`dispatch`, registrar, proxy, `b2bua`)
//! → media. Configuration (`config`) is an immutable snapshot.

pub mod auth;
pub mod b2bua;
pub mod config;
pub mod dialplan;
pub mod directory;
pub mod dispatch;
pub mod http;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod proxy;
pub mod registrar;
pub mod routing;
pub mod server;
pub mod sip;
pub mod source;
pub mod tls;
pub mod trunks;
pub mod turn;
