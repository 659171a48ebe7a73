//! SIP authentication primitives, sans-IO: HTTP Digest (`digest`: credential
//! parsing, challenges, response verification, replay-safe nonces) and
//! authentication-failure throttling (`throttle`), plus the request-level
//! `authenticator` that combines them with the user directory.
//!
//! Nothing here reads a clock or touches the network: callers pass `now` as
//! seconds since the UNIX epoch and own the surrounding request handling.

pub mod authenticator;
pub mod client;
pub mod digest;
pub mod throttle;

pub use digest::{
    Algorithm, Credentials, DigestError, NonceManager, NonceStatus, challenge, ha1,
    parse_credentials, response, verify,
};
pub use throttle::{Throttle, ThrottleConfig};
