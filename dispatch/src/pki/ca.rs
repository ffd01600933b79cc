//! The hub's certificate authority: created once, kept in the data dir, issues every cert.
//!
//! Invariant: `ca.key` is only ever written with mode 0600 and refused when readable by
//! others; node certificates are issued for a public key the node sent (never for a key the
//! hub made), carry only the clientAuth usage (a node certificate can never act as the hub),
//! and the hub's own certificate carries only serverAuth with the name [`SERVER_NAME`].

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SanType, SerialNumber, SignatureAlgorithm,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{ADMIN_URI, NodeBinding, SERVER_NAME, files, pem_to_der};
use crate::clock::UnixTime;
use crate::token::CaFingerprint;
use crate::{Error, Result};

const DAY: u64 = 86_400;
/// Lifetime of admin and server certificates, and of node certificates unless the hub is
/// told otherwise (`serve --node-cert-validity`); nodes renew theirs before expiry.
pub const LEAF_LIFETIME_SECS: u64 = 10 * 365 * DAY;
const CA_LIFETIME_SECS: u64 = 30 * 365 * DAY;
/// Backdating of `notBefore`, for robots whose clocks lag.
const SKEW_SECS: u64 = 3600;

/// A certificate and, when the hub generated the key, its private key (both PEM).
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key (PKCS#8 PEM), for certificates whose key the hub generated.
    pub key_pem: Option<Zeroizing<String>>,
}

/// The hub CA: key, issuer parameters, certificate.
pub struct HubCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    fingerprint: CaFingerprint,
}

/// An Ed25519 public key the hub signs a certificate for without holding its private key.
struct RawEd25519([u8; 32]);

impl rcgen::PublicKeyData for RawEd25519 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

fn at(t: UnixTime) -> OffsetDateTime {
    let secs = i64::try_from(t.0).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Issuer parameters: fixed, so a restarted hub rebuilds the same issuer from its key.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Bauxite hub CA");
    dn.push(DnType::OrganizationName, "bauxite-dispatch");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(
    now: UnixTime,
    lifetime_secs: u64,
    common_name: &str,
    serial_seed: &[u8],
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "bauxite mesh");
    params.distinguished_name = dn;
    params.not_before = at(UnixTime(now.0.saturating_sub(SKEW_SECS)));
    params.not_after = at(now.plus(lifetime_secs));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut hasher = blake3::Hasher::new_derive_key("bauxite-dispatch 2026 serial");
    hasher.update(&now.0.to_le_bytes());
    hasher.update(serial_seed);
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    serial[0] &= 0x7f; // positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

impl HubCa {
    /// Generates a new CA (Ed25519 key) valid from `now`.
    pub fn generate(now: UnixTime) -> Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(cert_err)?;
        let mut params = ca_params();
        params.not_before = at(UnixTime(now.0.saturating_sub(SKEW_SECS)));
        params.not_after = at(now.plus(CA_LIFETIME_SECS));
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Self::assemble(key, cert.pem(), cert.der().to_vec()))
    }

    /// Rebuilds the CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        let der = pem_to_der(cert_pem)?;
        Ok(Self::assemble(key, cert_pem.to_owned(), der))
    }

    fn assemble(key: KeyPair, cert_pem: String, cert_der: Vec<u8>) -> Self {
        let fingerprint = CaFingerprint::of_der(&cert_der);
        Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            cert_der,
            fingerprint,
        }
    }

    /// Loads `dir/ca.crt` + `dir/ca.key`, or creates them (key 0600) on first start.
    pub fn load_or_create(dir: &Path, now: UnixTime) -> Result<Self> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert_path.exists() || key_path.exists() {
            let key = Zeroizing::new(files::read_secret(&key_path)?);
            return Self::from_pem(&files::read_text(&cert_path)?, &key);
        }
        let ca = Self::generate(now)?;
        files::write_secret(&key_path, ca.issuer.key().serialize_pem().as_bytes())?;
        files::write_atomic(&cert_path, ca.cert_pem.as_bytes(), 0o644)?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate (the value join tokens carry).
    pub fn fingerprint(&self) -> CaFingerprint {
        self.fingerprint
    }

    /// Issues a node's client certificate for its TLS key, binding its identity, valid
    /// from `now` (backdated by the clock-skew allowance) for `lifetime_secs`.
    pub fn issue_node(
        &self,
        binding: &NodeBinding,
        tls_key: &[u8; 32],
        now: UnixTime,
        lifetime_secs: u64,
    ) -> Result<Issued> {
        let mut params = leaf_params(now, lifetime_secs, &binding.node_id.to_string(), tls_key);
        params.subject_alt_names = binding.sans()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&RawEd25519(*tls_key), &self.issuer)
            .map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: None,
        })
    }

    /// Issues the hub's server certificate with a fresh key.
    pub fn issue_server(&self, now: UnixTime) -> Result<Issued> {
        let name = SERVER_NAME
            .try_into()
            .map_err(|e: rcgen::Error| Error::Certificate(e.to_string()))?;
        self.issue_with_new_key(
            now,
            SERVER_NAME,
            vec![SanType::DnsName(name)],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// Issues the operator's admin client certificate with a fresh key.
    pub fn issue_admin(&self, now: UnixTime) -> Result<Issued> {
        let uri = ADMIN_URI
            .try_into()
            .map_err(|e: rcgen::Error| Error::Certificate(e.to_string()))?;
        self.issue_with_new_key(
            now,
            "bauxite admin",
            vec![SanType::URI(uri)],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue_with_new_key(
        &self,
        now: UnixTime,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(cert_err)?;
        let mut params = leaf_params(now, LEAF_LIFETIME_SECS, common_name, key.public_key_raw());
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: Some(Zeroizing::new(key.serialize_pem())),
        })
    }
}

#[cfg(test)]
mod tests;
