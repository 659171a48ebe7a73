//! A SIP-over-WebSocket test client (tokio-tungstenite, subprotocol `sip`),
//! plain or over TLS trusting the server's development certificate.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Any stream a WebSocket can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected SIP WebSocket.
pub type SipWs = WebSocketStream<Box<dyn Io>>;

/// A TLS client config trusting exactly the PEM certificate at `cert`.
pub fn tls_client(cert: &Path) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("read cert") {
        roots.add(c.expect("pem")).expect("add root");
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Opens a WebSocket to `addr` offering subprotocol `protocol` (None: none offered).
/// With `cert`, connects over TLS and verifies the server against that certificate.
pub async fn connect(
    addr: SocketAddr,
    cert: Option<&Path>,
    protocol: Option<&str>,
) -> Result<SipWs, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (scheme, io): (&str, Box<dyn Io>) = match cert {
        None => ("ws", Box::new(tcp)),
        Some(cert) => {
            let connector = tokio_rustls::TlsConnector::from(tls_client(cert));
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            ("wss", Box::new(tls))
        }
    };
    let mut request = format!("{scheme}://{addr}/")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    let (ws, response) = tokio_tungstenite::client_async(request, io)
        .await
        .map_err(|e| e.to_string())?;
    if protocol.is_some() {
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if chosen != Some("sip") {
            return Err(format!("server chose subprotocol {chosen:?}"));
        }
    }
    Ok(ws)
}

/// Sends one SIP message as a text frame.
pub async fn send(ws: &mut SipWs, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .expect("ws send");
}

/// Receives the next SIP message (text or binary frame), skipping control frames.
pub async fn recv(ws: &mut SipWs) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match next.ok()? {
            Message::Text(text) => return Some(text.to_string()),
            Message::Binary(bytes) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}
