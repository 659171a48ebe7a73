//! Starts a Switchboard process from a validated configuration: TLS, the SIP
//! core, every listener, and the transaction dispatcher.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Loaded;
use crate::http::{HttpListener, Role};
use crate::metrics::Metrics;
use crate::sip::transport::stream::StreamListener;
use crate::sip::transport::udp::UdpListener;
use crate::sip::{SipCore, SipError};
use crate::tls::{self, TlsError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material is missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] SipError),
    /// The transaction layer could not start.
    #[error("the SIP transaction layer could not start")]
    Stack,
}

/// A running server.
pub struct Running {
    /// The SIP core (metrics, connections).
    pub core: Arc<SipCore>,
    /// Every bound listener as (label, address).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    cancel: CancellationToken,
}

impl Running {
    /// Stops every listener and connection.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// Whether a bind failure only means "this host has no IPv6", which is not fatal
/// for the default dual-stack listeners.
fn ipv6_unavailable(addr: &SocketAddr, error: &SipError) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    match error {
        SipError::Io { source, .. } => {
            addr.is_ipv6() && matches!(source.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
        }
        _ => false,
    }
}

/// Binds one listener, tolerating a host without IPv6.
fn bind_or_skip<T>(addr: SocketAddr, bind: impl FnOnce(SocketAddr) -> Result<T, SipError>) -> Result<Option<T>, SipError> {
    match bind(addr) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if ipv6_unavailable(&addr, &e) => {
            warn!(%addr, error = %e, "IPv6 is not available on this host; listener skipped");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Starts everything the configuration asks for.
pub async fn start(loaded: &Loaded) -> Result<Running, StartError> {
    let config = &loaded.config;
    let listen = &loaded.listeners;
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let core = SipCore::new(config.limits.value.clone(), metrics, config.server.name.clone(), cancel.clone());

    let needs_tls = !listen.tls.is_empty() || !listen.https.is_empty();
    let tls = if needs_tls {
        let (configs, generated) = tls::load_or_generate(&config.tls)?;
        if !generated {
            info!(cert = %config.tls.cert.display(), "loaded TLS certificate");
        }
        Some(configs)
    } else {
        None
    };

    let mut listeners = Vec::new();
    let mut udp = Vec::new();
    for &addr in &listen.udp {
        let bound = match UdpListener::bind(addr, &core).await {
            Ok(listener) => Some(listener),
            Err(e) if ipv6_unavailable(&addr, &e) => {
                warn!(%addr, error = %e, "IPv6 is not available on this host; listener skipped");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(listener) = bound {
            listeners.push(("udp", listener.local_addr()));
            udp.push(listener);
        }
    }
    let mut streams = Vec::new();
    for &addr in &listen.tcp {
        if let Some(listener) = bind_or_skip(addr, |a| StreamListener::bind(a, None))? {
            listeners.push(("tcp", listener.local_addr()));
            streams.push(listener);
        }
    }
    let mut http = Vec::new();
    if let Some(tls) = &tls {
        let sip_acceptor = TlsAcceptor::from(tls.sip.clone());
        for &addr in &listen.tls {
            if let Some(listener) = bind_or_skip(addr, |a| StreamListener::bind(a, Some(sip_acceptor.clone())))? {
                listeners.push(("tls", listener.local_addr()));
                streams.push(listener);
            }
        }
        let https_acceptor = TlsAcceptor::from(tls.https.clone());
        for &addr in &listen.https {
            if let Some(listener) = bind_or_skip(addr, |a| HttpListener::bind(a, Some(https_acceptor.clone()), Role::Public))? {
                listeners.push(("wss", listener.local_addr()));
                http.push(listener);
            }
        }
    }
    for &addr in &listen.http {
        if let Some(listener) = bind_or_skip(addr, |a| HttpListener::bind(a, None, Role::Public))? {
            listeners.push(("ws", listener.local_addr()));
            http.push(listener);
        }
    }
    for &addr in &listen.admin {
        if let Some(listener) = bind_or_skip(addr, |a| HttpListener::bind(a, None, Role::Admin))? {
            listeners.push(("admin", listener.local_addr()));
            http.push(listener);
        }
    }

    let incoming = core.run().ok_or(StartError::Stack)?;
    tokio::spawn(crate::dispatch::run(core.clone(), incoming));
    for listener in udp {
        listener.spawn(core.clone());
    }
    for listener in streams {
        listener.spawn(core.clone());
    }
    for listener in http {
        listener.spawn(core.clone());
    }
    Ok(Running { core, listeners, cancel })
}
