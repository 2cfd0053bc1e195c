//! TLS set-up: certificate and key from PEM files, or a self-signed certificate made on the spot
//! whose fingerprint goes into invite links so clients can pin it.

use std::path::Path;
use std::sync::Arc;

use confer_proto::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::TlsSetup;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    /// The key file could not be read or holds no private key.
    #[error("cannot read private key {path}: {reason}")]
    Key { path: String, reason: String },
    /// rustls refused the pair (key does not match, unsupported algorithm).
    #[error("certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> Fingerprint {
    Fingerprint(Sha256::digest(cert).into())
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // One session ticket is plenty for a long-lived WebSocket; keep per-connection state small.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// TLS from a PEM certificate chain and a PEM private key.
pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsSetup, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate { path: cert.display().to_string(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.display().to_string(), reason: e.to_string() })?;
    Ok(TlsSetup { server: server_config(chain, key)?, pin: None })
}

/// A self-signed certificate for these host names and addresses, with its pin. Also returns the
/// certificate and key as PEM, so the caller can keep them and the pin across restarts.
pub fn self_signed(names: &[String]) -> Result<(TlsSetup, String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    let cert_pem = certified.cert.pem();
    let key_pem = certified.key_pair.serialize_pem();
    let setup = from_pem(&cert_pem, &key_pem, true)?;
    Ok((setup, cert_pem, key_pem))
}

/// TLS from PEM text; with `pin`, the leaf certificate's fingerprint goes into links.
pub fn from_pem(cert_pem: &str, key_pem: &str, pin: bool) -> Result<TlsSetup, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate { path: "(memory)".into(), reason: e.to_string() })?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::Certificate { path: "(memory)".into(), reason: "no certificate".into() })?;
    let fp = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key { path: "(memory)".into(), reason: e.to_string() })?;
    Ok(TlsSetup { server: server_config(chain, key)?, pin: pin.then_some(fp) })
}
