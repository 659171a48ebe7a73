//! Starts a Switchboard process from a validated configuration: TLS, the SIP
//! core, every listener, and the transaction dispatcher.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::authenticator::Authenticator;
use crate::b2bua::B2bua;
use crate::config::Loaded;
use crate::dispatch::Services;
use crate::http::{HttpListener, Role};
use crate::media::engine::MediaEngine;
use crate::media::sdp::Capabilities;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::proxy::token::TokenKey;
use crate::registrar::service::{Registrar, unix_now};
use crate::registrar::store::{LocationStore, MemoryStore};
use crate::routing::Routing;
use crate::sip::transport::stream::StreamListener;
use crate::sip::transport::udp::UdpListener;
use crate::sip::{SipCore, SipError};
use crate::tls::{self, TlsError};
use std::collections::BTreeSet;

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
    /// A setting could not be applied.
    #[error("{0}")]
    Config(String),
    /// The STUN/TURN server could not start.
    #[error(transparent)]
    Turn(#[from] crate::turn::TurnError),
}

/// The address to put in Via and Record-Route for a listener: a wildcard
/// bind is replaced by this host's first non-loopback address, else loopback.
pub fn advertised(bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let want_v4 = bound.is_ipv4();
    let found = if_addrs::get_if_addrs().ok().and_then(|addrs| {
        addrs
            .into_iter()
            .map(|a| a.ip())
            .find(|ip| !ip.is_loopback() && ip.is_ipv4() == want_v4)
    });
    let ip = found.unwrap_or(if want_v4 {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    });
    SocketAddr::new(ip, bound.port())
}

/// Drops bindings whose connection closed, at once, and expired ones periodically.
fn spawn_binding_housekeeping(core: &Arc<SipCore>, store: Arc<dyn LocationStore>) {
    let mut closed = core.connections().subscribe_closed();
    let (core, cancel) = (core.clone(), core.cancel_token().clone());
    tokio::spawn(async move {
        let mut purge = tokio::time::interval(std::time::Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = purge.tick() => {
                    let purged = store.purge_expired(unix_now());
                    core.metrics().bindings.add(-(purged as i64));
                }
                event = closed.recv() => match event {
                    Ok(flow) => {
                        let removed = store.remove_flow(flow);
                        core.metrics().bindings.add(-(removed as i64));
                        for _ in 0..removed {
                            core.metrics().bindings_flow_closed.inc();
                        }
                        if removed > 0 {
                            info!(%flow, removed, "connection closed: its bindings are gone");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "missed connection-closed events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    });
}

/// A running server.
pub struct Running {
    /// The SIP core (metrics, connections).
    pub core: Arc<SipCore>,
    /// Every bound listener as (label, address).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    cancel: CancellationToken,
    /// Trunk registration and probing.
    trunks: crate::trunks::TrunkManager,
}

impl Running {
    /// Stops every listener and connection.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Unregisters from trunks (Expires: 0) and stops probing; call before
    /// [`shutdown`](Self::shutdown). Waits at most `limit`.
    pub async fn stop_trunks(&self, limit: std::time::Duration) {
        self.trunks.shutdown(limit).await;
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
fn bind_or_skip<T>(
    addr: SocketAddr,
    bind: impl FnOnce(SocketAddr) -> Result<T, SipError>,
) -> Result<Option<T>, SipError> {
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
    let core = SipCore::new(
        config.limits.value.clone(),
        metrics,
        config.server.value.name.clone(),
        cancel.clone(),
    );
    core.set_advertise(config.server.value.advertise());
    if let Some(public) = config.server.value.advertised_address {
        tracing::info!(%public, "advertising this public address to peers outside the local networks");
    }

    let turn_config = &config.turn.value;
    let needs_tls = !listen.tls.is_empty()
        || !listen.https.is_empty()
        || (turn_config.enabled && !turn_config.listen.tls.is_empty());
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
            if let Some(listener) = bind_or_skip(addr, |a| {
                StreamListener::bind(a, Some(sip_acceptor.clone()))
            })? {
                listeners.push(("tls", listener.local_addr()));
                streams.push(listener);
            }
        }
        let https_acceptor = TlsAcceptor::from(tls.https.clone());
        for &addr in &listen.https {
            if let Some(listener) = bind_or_skip(addr, |a| {
                HttpListener::bind(a, Some(https_acceptor.clone()), Role::Public)
            })? {
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

    let auth = Arc::new(
        Authenticator::new(&config.auth.value, core.metrics().clone())
            .map_err(StartError::Config)?,
    );
    let ice_servers = if turn_config.enabled {
        let turn = crate::turn::TurnService::start(
            turn_config,
            tls.as_ref().map(|t| t.sip.clone()),
            core.metrics().turn.clone(),
            &config.server.value.name,
            cancel.clone(),
        )
        .await?;
        listeners.extend(turn.listeners.iter().copied());
        Some(Arc::new(crate::turn::api::IceServersApi {
            turn: Arc::new(turn),
            auth: auth.clone(),
            directory: loaded.directory.clone(),
        }))
    } else {
        None
    };
    let store: Arc<dyn LocationStore> = Arc::new(MemoryStore::default());
    spawn_binding_housekeeping(&core, store.clone());
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let udp_send = udp
        .iter()
        .find(|l| l.local_addr().is_ipv4())
        .or(udp.first())
        .map(|l| (advertised(l.local_addr()), l.connection().clone()));
    let outbound = crate::sip::outbound::Outbound::new(
        core.clone(),
        udp.iter()
            .map(|l| (advertised(l.local_addr()), l.connection().clone()))
            .collect(),
        streams
            .iter()
            .map(|l| (l.kind(), advertised(l.local_addr())))
            .collect(),
    );
    let trunks = crate::trunks::Trunks::new(loaded.trunks.clone());
    core.set_rate_exempt(trunks.clone());
    let trunk_names = trunks.names();
    let groups: BTreeSet<String> = config
        .domains
        .iter()
        .flat_map(|d| d.users.iter().flat_map(|u| u.value.groups.iter().cloned()))
        .collect();
    let routing = Arc::new(
        Routing::load(
            &config.dialplan.file,
            trunk_names,
            groups,
            core.metrics().clone(),
        )
        .map_err(|e| {
            for diagnostic in &e.0 {
                tracing::error!("{diagnostic}");
            }
            StartError::Config("the dialplan is invalid".into())
        })?
        .with_trunks(trunks.clone(), config.trunks.file().cloned()),
    );
    routing.spawn_watchers(config.dialplan.watch, cancel.clone());
    let engine = MediaEngine::new(config.media.value.clone(), core.metrics().clone())
        .map_err(|e| StartError::Config(e.to_string()))?;
    let webrtc = crate::media::webrtc::WebRtcConfig::generate()
        .map_err(|e| StartError::Config(format!("WebRTC: {e}")))?;
    let b2bua = B2bua::new(
        core.clone(),
        engine.clone(),
        Capabilities::default(),
        Arc::new(webrtc),
        outbound.clone(),
        trunks.clone(),
        crate::b2bua::cdr::CdrWriter::start(&config.cdr),
    );
    let proxy = Arc::new(Proxy {
        core: core.clone(),
        store: store.clone(),
        auth: auth.clone(),
        tokens: TokenKey::new(secret),
        udp: udp_send,
        routing: routing.clone(),
        b2bua: Some(b2bua.clone()),
    });
    b2bua.set_transfer_router(Arc::new(crate::proxy::TransferRoutes {
        proxy: proxy.clone(),
        directory: loaded.directory.clone(),
    }));
    let services = Arc::new(Services {
        core: core.clone(),
        directory: loaded.directory.clone(),
        registrar: Registrar {
            config: config.registrar.value.clone(),
            store,
            auth,
            bindings: core.metrics().bindings.clone(),
        },
        proxy,
        b2bua: Some(b2bua),
    });
    core.set_fast_answer(services.clone());
    let incoming = core.run().ok_or(StartError::Stack)?;
    tokio::spawn(crate::dispatch::run(services, incoming));
    for listener in udp {
        listener.spawn(core.clone());
    }
    for listener in streams {
        listener.spawn(core.clone());
    }
    for listener in http {
        listener
            .with_routing(routing.clone())
            .with_engine(engine.clone())
            .with_ice_servers(ice_servers.clone())
            .spawn(core.clone());
    }
    let trunks =
        crate::trunks::TrunkManager::spawn(trunks, outbound, core.metrics().trunks.clone());
    Ok(Running {
        core,
        listeners,
        cancel,
        trunks,
    })
}
