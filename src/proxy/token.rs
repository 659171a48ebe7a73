//! Flow tokens: opaque, tamper-proof names for "the next hop" that the proxy
//! puts in the user part of its Record-Route URIs (in the spirit of RFC 5626
//! §5.2). A request that later carries the token in its Route set is sent
//! over the connection (or to the UDP address) the token names.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::sip::ConnectionId;

/// Where a token sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Over this stream connection (TCP, TLS, WS, WSS).
    Flow(ConnectionId),
    /// To this address over UDP.
    Udp(SocketAddr),
}

/// Encodes and verifies flow tokens with a per-process secret.
#[derive(Clone)]
pub struct TokenKey {
    secret: [u8; 32],
}

impl TokenKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: [u8; 32]) -> Self {
        TokenKey { secret }
    }

    fn mac(&self, payload: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The token for `hop`: characters legal in a SIP URI user part.
    pub fn encode(&self, hop: Hop) -> String {
        let payload = match hop {
            Hop::Flow(id) => format!("f{}", id.0),
            Hop::Udp(addr) => {
                let ip: String = match addr.ip() {
                    IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
                    IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
                };
                format!("u{ip}-{}", addr.port())
            }
        };
        let mac = self.mac(&payload);
        format!("sb-{payload}.{mac}")
    }

    /// The hop a token names, when it is one of ours and untampered.
    pub fn decode(&self, token: &str) -> Option<Hop> {
        let rest = token.strip_prefix("sb-")?;
        let (payload, mac) = rest.rsplit_once('.')?;
        if payload.len() > 64 || !constant_eq(self.mac(payload).as_bytes(), mac.as_bytes()) {
            return None;
        }
        if let Some(id) = payload.strip_prefix('f') {
            return id.parse().ok().map(|id| Hop::Flow(ConnectionId(id)));
        }
        let (ip, port) = payload.strip_prefix('u')?.split_once('-')?;
        let bytes: Vec<u8> = (0..ip.len())
            .step_by(2)
            .filter_map(|i| {
                ip.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        let ip = match bytes.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
            _ => return None,
        };
        Some(Hop::Udp(SocketAddr::new(ip, port.parse().ok()?)))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let key = TokenKey::new([7; 32]);
        for hop in [
            Hop::Flow(ConnectionId(42)),
            Hop::Udp("127.0.0.1:5060".parse().unwrap()),
            Hop::Udp("[::1]:5070".parse().unwrap()),
        ] {
            let token = key.encode(hop);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "{token}"
            );
            assert_eq!(key.decode(&token), Some(hop));
        }
        let token = key.encode(Hop::Flow(ConnectionId(42)));
        assert_eq!(key.decode(&token.replace("f42", "f43")), None);
        assert_eq!(TokenKey::new([8; 32]).decode(&token), None);
        assert_eq!(key.decode("sb-garbage"), None);
        assert_eq!(key.decode("1001"), None);
    }
}
