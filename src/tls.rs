//! TLS server configuration: loads the certificate and key, or generates a
//! self-signed development certificate when neither exists.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::warn;

use crate::config::TlsFiles;

/// Errors while preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files exists.
    #[error("{present} exists but {missing} does not; provide both or neither")]
    HalfPresent {
        /// The file that exists.
        present: String,
        /// The file that is missing.
        missing: String,
    },
    /// A file could not be read, parsed or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The certificate and key do not make a valid server configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Certificate generation failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

/// Server configurations for SIP over TLS and for HTTPS/WSS.
#[derive(Clone)]
pub struct TlsConfigs {
    /// SIP over TLS (no ALPN).
    pub sip: Arc<ServerConfig>,
    /// HTTPS and WSS (ALPN `http/1.1`).
    pub https: Arc<ServerConfig>,
}

/// Installs the `ring` crypto provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the configured certificate, generating a development one first when
/// both files are missing and generation is allowed. Returns whether one was generated.
pub fn load_or_generate(files: &TlsFiles) -> Result<(TlsConfigs, bool), TlsError> {
    install_crypto_provider();
    let (cert_exists, key_exists) = (files.cert.exists(), files.key.exists());
    let generated = match (cert_exists, key_exists) {
        (true, true) => false,
        (false, false) if files.generate_self_signed => {
            generate(&files.cert, &files.key)?;
            warn!(cert = %files.cert.display(), key = %files.key.display(), "generated a self-signed development certificate; browsers will warn until you install a real one");
            true
        }
        (false, false) => {
            return Err(TlsError::File {
                path: files.cert.display().to_string(),
                message: "certificate not found".into(),
            });
        }
        (true, false) => {
            return Err(TlsError::HalfPresent {
                present: files.cert.display().to_string(),
                missing: files.key.display().to_string(),
            });
        }
        (false, true) => {
            return Err(TlsError::HalfPresent {
                present: files.key.display().to_string(),
                missing: files.cert.display().to_string(),
            });
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            path: files.cert.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::File {
            path: files.cert.display().to_string(),
            message: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    let mut sip = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // SIP peers rarely resume sessions, and some (GnuTLS-based sipsak, older
    // phones) misread post-handshake ticket records as data.
    sip.send_tls13_tickets = 0;
    let mut https = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    https.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        TlsConfigs {
            sip: Arc::new(sip),
            https: Arc::new(https),
        },
        generated,
    ))
}

fn generate(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        }
    }
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, certified.cert.pem()).map_err(|e| TlsError::File {
        path: cert_path.display().to_string(),
        message: e.to_string(),
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| TlsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)
}
