//! TLS towards a trunk: the rustls client configuration built from a trunk's
//! [`TlsSettings`](super::TlsSettings): the Mozilla roots (`webpki-roots`)
//! plus an optional `ca_file`, the name to verify (default: the trunk's
//! host), and `verify: false` for test carriers (logged as a warning).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tracing::warn;

use super::config::TrunkConfig;
use crate::sip::outbound::TlsClient;

/// Why a trunk's TLS client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrunkTlsError {
    /// `ca_file` is missing, unreadable or holds no usable certificate.
    #[error("tls.ca_file '{path}': {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The name to verify is not a DNS name or an IP address.
    #[error("tls.server_name '{0}' is not a valid DNS name or IP address")]
    ServerName(String),
}

/// Builds the TLS client of `trunk` (whatever its transport). Reads
/// `tls.ca_file` when set.
pub fn client(trunk: &TrunkConfig) -> Result<TlsClient, TrunkTlsError> {
    let settings = &trunk.tls;
    let server_name = settings
        .server_name
        .clone()
        .unwrap_or_else(|| trunk.host.clone());
    let name = server_name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if ServerName::try_from(name.clone()).is_err() {
        return Err(TrunkTlsError::ServerName(server_name));
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &settings.ca_file {
        let ca_error = |message: String| TrunkTlsError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate in file".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("unusable certificate: {e}")))?;
        }
    }
    let config = if settings.verify {
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    } else {
        warn!(trunk = %trunk.name, "TLS certificate verification is off for this trunk (tls.verify: false)");
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate::new()))
            .with_no_client_auth()
    };
    Ok(TlsClient {
        config: Arc::new(config),
        server_name: name,
    })
}

/// Accepts any certificate (`verify: false`) but still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    fn new() -> AnyCertificate {
        AnyCertificate {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(yaml: &str) -> TrunkConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn default_name_is_the_host_and_roots_are_loaded() {
        let t = client(&trunk(
            "name: a\nhost: sip.carrier.example\ntransport: tls\n",
        ))
        .unwrap();
        assert_eq!(t.server_name, "sip.carrier.example");
        let t = client(&trunk(
            "name: a\nhost: 192.0.2.1\ntransport: tls\ntls: { server_name: sbc.example, verify: false }\n",
        ))
        .unwrap();
        assert_eq!(t.server_name, "sbc.example");
    }

    #[test]
    fn ca_file_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client(&trunk(&format!(
            "name: a\nhost: h\ntransport: tls\ntls: {{ ca_file: '{}' }}\n",
            missing.display()
        )))
        .err()
        .expect("refused");
        assert!(matches!(err, TrunkTlsError::CaFile { .. }), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client(&trunk(&format!(
            "name: a\nhost: h\ntransport: tls\ntls: {{ ca_file: '{}' }}\n",
            empty.display()
        )))
        .err()
        .expect("refused");
        assert!(err.to_string().contains("no certificate"), "{err}");
        let good = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&good, cert.pem()).unwrap();
        assert!(
            client(&trunk(&format!(
                "name: a\nhost: h\ntransport: tls\ntls: {{ ca_file: '{}' }}\n",
                good.display()
            )))
            .is_ok()
        );
    }

    #[test]
    fn bad_server_name_is_refused() {
        let err = client(&trunk(
            "name: a\nhost: h\ntransport: tls\ntls: { server_name: 'not a name' }\n",
        ))
        .err()
        .expect("refused");
        assert!(matches!(err, TrunkTlsError::ServerName(_)), "{err}");
    }
}
