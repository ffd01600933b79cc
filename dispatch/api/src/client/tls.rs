//! Client TLS: the pinned-CA verifier for first contact, and mTLS for everything after.
//!
//! Invariant: a client never trusts a hub it cannot tie to a fingerprint or CA it already
//! holds. On first contact ([`PinnedCa`]) the server must present, in its chain, a
//! certificate whose SHA-256 equals the join token's fingerprint, and its own certificate
//! must verify under that CA for the name [`SERVER_NAME`]; there is no trust-on-first-use.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::pki::SERVER_NAME;
use crate::token::CaFingerprint;
use crate::{Error, Result};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies the hub against the CA fingerprint from a join token.
#[derive(Debug)]
pub struct PinnedCa {
    pin: CaFingerprint,
    provider: Arc<CryptoProvider>,
    /// The CA fingerprint the server offered when it did not match (for the error message).
    seen: Mutex<Option<CaFingerprint>>,
}

impl PinnedCa {
    /// A verifier pinned to `pin`.
    pub fn new(pin: CaFingerprint) -> Self {
        Self {
            pin,
            provider: provider(),
            seen: Mutex::new(None),
        }
    }

    /// The fingerprint a mismatching server presented, if a handshake failed on the pin.
    pub fn mismatch(&self) -> Option<CaFingerprint> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| CaFingerprint::of_der(c).matches(&self.pin))
        else {
            let offered = intermediates
                .last()
                .map(|c| CaFingerprint::of_der(c))
                .unwrap_or(CaFingerprint([0; 32]));
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(offered);
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// First-contact configuration: no client certificate, hub pinned by fingerprint.
pub fn pinned_config(verifier: Arc<PinnedCa>) -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(finish(config))
}

/// Mutual-TLS configuration: hub verified under `ca_pem`, client authenticated by cert + key.
pub fn mtls_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| Error::Certificate(format!("CA certificate: {e}")))?;
    roots.add(ca)?;
    let chain = vec![
        CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("client certificate: {e}")))?,
    ];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Certificate(format!("client key: {e}")))?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(finish(config))
}

/// The name the client checks in the hub's certificate.
pub fn server_name() -> Result<ServerName<'static>> {
    ServerName::try_from(SERVER_NAME).map_err(|e| Error::Certificate(e.to_string()))
}
