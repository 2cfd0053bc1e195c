//! How the engine trusts a relay: an invite link with `fp` pins the relay's certificate (its
//! SHA-256 must match; the handshake signatures are still verified, so the relay must hold the
//! key); a link without one checks the certificate against the Mozilla roots (webpki-roots), as
//! a browser would.

use std::sync::Arc;

use confer_proto::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// The TLS client configuration for a relay: pinned if `pin` is given, else the web's roots.
pub fn client_config(pin: Option<Fingerprint>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        // ring supports the default versions; if it ever did not, no TLS at all is the safe side.
        Err(_) => {
            return Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            );
        }
    };
    let config = match pin {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
            .with_no_client_auth(),
        None => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Arc::new(config)
}

/// The server's certificate is not the one the invite link pins: someone else's server, or one
/// in the middle.
#[derive(Debug)]
struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the certificate does not match the invite link's pin")
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly the certificate with the pinned SHA-256, and checks handshake signatures.
#[derive(Debug)]
struct PinVerifier {
    pin: Fingerprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.pin.0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(PinMismatch),
            ))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Registers the link's pin for the relay's own TURN-over-TLS server (a `turns:` URL on the
/// relay's host, which the relay serves with its own certificate), so that the ICE agent, which
/// dials TURN servers itself, trusts it as the signaling connection does. TURN servers elsewhere
/// are checked against the web's roots.
pub(crate) fn trust_relay_turn(link: &confer_proto::InviteLink, routes: &crate::ice::IceRoutes) {
    let Some(pin) = link.fingerprint else { return };
    let relay_host = host_of(link.relay.split_once("://").map_or(link.relay.as_str(), |(_, rest)| rest));
    for route in &routes.routes {
        let url = &route.url;
        if url.scheme != confer_proto::IceScheme::Turns || url.host != relay_host {
            continue;
        }
        confer_turn_stream::trust(&format!("{}:{}", url.host, url.port), client_config(Some(pin)));
    }
}

/// The host of `host:port`, `[v6]:port`, `host` (brackets removed).
fn host_of(authority: &str) -> &str {
    let authority = authority.split('/').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_relay_origins() {
        assert_eq!(host_of("relay.example:443"), "relay.example");
        assert_eq!(host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_of("relay.example:8443/"), "relay.example");
    }
}
