//! HTTP and HTTPS: the static web front end, SIP over WebSocket upgrades
//! (RFC 7118, subprotocol `sip`), and the loopback admin endpoints.
//!
//! Connections are accepted here under the same per-IP and total limits as
//! SIP streams; an upgraded WebSocket is handed to `sip::transport::ws`.
//! Static files (the softphone) are served by [`web`].

mod conference;
mod deadline;
pub mod web;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State, ws::WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::media::engine::MediaEngine;
use crate::routing::Routing;
use crate::sip::transport::bind_tcp;
use crate::sip::{SipCore, SipError, TransportKind};
use crate::turn::api::IceServersApi;
use deadline::WriteDeadline;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Static front end and SIP over WebSocket (WS, or WSS behind TLS).
    Public,
    /// `/metrics`, `/healthz`, `/api/reload`, `/api/trunks` and
    /// `/api/conferences`, on loopback.
    Admin,
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
struct Peer {
    local: SocketAddr,
    remote: SocketAddr,
    secure: bool,
}

#[derive(Clone)]
struct AppState {
    core: Arc<SipCore>,
    routing: Option<Arc<Routing>>,
    ice: Option<Arc<IceServersApi>>,
    engine: Option<Arc<MediaEngine>>,
}

/// A bound HTTP(S) listener.
pub struct HttpListener {
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    role: Role,
    local: SocketAddr,
    routing: Option<Arc<Routing>>,
    ice: Option<Arc<IceServersApi>>,
    engine: Option<Arc<MediaEngine>>,
}

impl HttpListener {
    /// Binds `addr`; with `tls` it serves HTTPS and WSS.
    pub fn bind(addr: SocketAddr, tls: Option<TlsAcceptor>, role: Role) -> Result<Self, SipError> {
        let listener = bind_tcp(addr)?;
        let local = listener.local_addr().map_err(|source| SipError::Io {
            context: format!("local address of {addr}"),
            source,
        })?;
        Ok(HttpListener {
            listener,
            tls,
            role,
            local,
            routing: None,
            ice: None,
            engine: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Gives the admin endpoints the dialplan to reload.
    pub fn with_routing(mut self, routing: Arc<Routing>) -> Self {
        self.routing = Some(routing);
        self
    }

    /// Gives the admin endpoints the media engine (the conference API).
    pub fn with_engine(mut self, engine: Arc<MediaEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Serves `/api/ice-servers` (public listeners) from the TURN service.
    pub fn with_ice_servers(mut self, api: Option<Arc<IceServersApi>>) -> Self {
        self.ice = api;
        self
    }

    /// Name used in the "listening" log line.
    fn label(&self) -> &'static str {
        match (self.role, self.tls.is_some()) {
            (Role::Admin, _) => "admin",
            (Role::Public, true) => "wss",
            (Role::Public, false) => "ws",
        }
    }

    /// Accepts connections until shutdown.
    pub fn spawn(self, core: Arc<SipCore>) {
        info!(transport = self.label(), addr = %self.local, "listening");
        let state = AppState {
            core: core.clone(),
            routing: self.routing.clone(),
            ice: self.ice.clone(),
            engine: self.engine.clone(),
        };
        let router = match self.role {
            Role::Public => public_router(state),
            Role::Admin => admin_router(state),
        };
        tokio::spawn(async move {
            let cancel = core.cancel_token().clone();
            loop {
                let (tcp, remote) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    accepted = self.listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let kind = if self.tls.is_some() {
                    TransportKind::Wss
                } else {
                    TransportKind::Ws
                };
                // The admin listener is loopback-only and must stay reachable
                // when SIP clients have used up the connection limits.
                let slot = match self.role {
                    Role::Admin => None,
                    Role::Public => match core.connections().admit(remote.ip()) {
                        Ok(slot) => Some(slot),
                        Err(refused) => {
                            core.metrics().transport(kind).connections_refused.inc();
                            debug!(%remote, %refused, "HTTP connection refused");
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(self.local);
                let peer = Peer {
                    local,
                    remote,
                    secure: self.tls.is_some(),
                };
                let router = router.clone().layer(axum::Extension(peer));
                let (tls, core) = (self.tls.clone(), core.clone());
                tokio::spawn(async move {
                    let limit = core.limits().message_timeout();
                    // A peer that stops reading loses the connection.
                    let tcp = WriteDeadline::new(tcp, core.limits().write_timeout());
                    match tls {
                        None => serve_http(tcp, router, limit).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => serve_http(stream, router, limit).await,
                                Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                                Err(_) => debug!(%remote, "TLS handshake timed out"),
                            }
                        }
                    }
                    drop(slot);
                });
            }
        });
    }
}

async fn serve_http<S>(io: S, router: Router, header_timeout: std::time::Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(
        router.map_request(|req: Request<hyper::body::Incoming>| req.map(Body::new)),
    );
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

fn public_router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ws", get(root))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            crate::turn::api::PATH,
            get(ice_servers).options(ice_servers),
        )
        .fallback(web::serve)
        .with_state(state)
}

/// `/api/ice-servers`: STUN/TURN servers with fresh credentials (see `turn::api`).
async fn ice_servers(State(state): State<AppState>, request: Request) -> Response {
    let Some(api) = state.ice else {
        return (StatusCode::NOT_FOUND, "TURN is disabled\n").into_response();
    };
    let Some(peer) = request.extensions().get::<Peer>().copied() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no peer").into_response();
    };
    api.respond(
        request.method(),
        request.uri(),
        request.headers(),
        peer.remote.ip(),
    )
}

fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/reload", axum::routing::post(reload))
        .route("/api/trunks", get(trunks))
        .route("/api/conferences", get(conference::list))
        .route("/api/conferences/{name}", get(conference::show))
        .route(
            "/api/conferences/{name}/participants/{id}",
            axum::routing::patch(conference::update).delete(conference::remove),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// `POST /api/reload`: reloads the dialplan; 200 with the rule count, or 422
/// with every problem (the running dialplan stays).
async fn reload(State(state): State<AppState>) -> Response {
    let Some(routing) = state.routing else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no dialplan\n").into_response();
    };
    match routing.reload("admin endpoint").await {
        Ok(rules) => (
            StatusCode::OK,
            format!("dialplan reloaded: {rules} rules\n"),
        )
            .into_response(),
        Err(e) => {
            let text: String = e.0.iter().map(|d| format!("{d}\n")).collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("dialplan refused; the running version stays active\n{text}"),
            )
                .into_response()
        }
    }
}

/// `GET /api/trunks`: every trunk with its state (up, registered, calls)
/// as a JSON array (see docs/trunks.md).
async fn trunks(State(state): State<AppState>) -> Response {
    let reports = state
        .routing
        .as_ref()
        .and_then(|r| r.trunks())
        .map(|t| t.report())
        .unwrap_or_default();
    axum::Json(reports).into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.core.metrics().render(),
    )
}

/// Whether the request offers the `sip` WebSocket subprotocol (RFC 7118 §4).
fn offers_sip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"))
}

/// `/`: the front end for a plain GET, SIP over WebSocket for an upgrade.
async fn root(State(state): State<AppState>, request: Request) -> Result<Response, Infallible> {
    let (mut parts, _body) = request.into_parts();
    let Some(peer) = parts.extensions.get::<Peer>().copied() else {
        return Ok((StatusCode::INTERNAL_SERVER_ERROR, "no peer").into_response());
    };
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Ok(web::serve(parts.method, parts.uri, parts.headers).await);
    }
    if !offers_sip(&parts.headers) {
        return Ok((
            StatusCode::BAD_REQUEST,
            "WebSocket subprotocol 'sip' required (RFC 7118)\n",
        )
            .into_response());
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let core = state.core.clone();
    let kind = if peer.secure {
        TransportKind::Wss
    } else {
        TransportKind::Ws
    };
    let slot = match core.connections().admit(peer.remote.ip()) {
        Ok(slot) => slot,
        Err(_) => {
            core.metrics().transport(kind).connections_refused.inc();
            return Ok((StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response());
        }
    };
    let limits = core.limits().clone();
    let ws_max = limits.max_message_size.saturating_mul(2);
    Ok(upgrade
        .protocols(["sip"])
        .read_buffer_size(limits.read_buffer_size)
        .write_buffer_size(0)
        .max_write_buffer_size(ws_max.max(64 * 1024) * 4)
        .max_message_size(ws_max)
        .max_frame_size(ws_max)
        .on_upgrade(move |socket| {
            crate::sip::transport::ws::serve(core, socket, kind, peer.local, peer.remote, slot)
        })
        .into_response())
}
