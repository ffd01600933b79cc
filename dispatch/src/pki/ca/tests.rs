use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, UnixTime as PkiTime};

use super::*;
use crate::pki::CertRole;
use bauxite_conduit::VirtualIp;

const NOW: UnixTime = UnixTime(1_780_000_000);

fn verifies_as_client(ca: &HubCa, cert_der: &[u8]) -> bool {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    verifier
        .verify_client_cert(
            &CertificateDer::from(cert_der.to_vec()),
            &[],
            PkiTime::since_unix_epoch(std::time::Duration::from_secs(NOW.0)),
        )
        .is_ok()
}

#[test]
fn node_cert_binds_keys_and_verifies_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = HubCa::load_or_create(dir.path(), NOW).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    // A restarted hub rebuilds the same issuer from disk.
    let reloaded = HubCa::load_or_create(dir.path(), NOW).unwrap();
    assert_eq!(reloaded.fingerprint(), ca.fingerprint());

    let tls = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut tls_raw = [0u8; 32];
    tls_raw.copy_from_slice(tls.public_key_raw());
    let binding = NodeBinding::new([7; 32], [8; 32], VirtualIp(0x6440_0001));
    let issued = reloaded
        .issue_node(&binding, &tls_raw, NOW, LEAF_LIFETIME_SECS)
        .unwrap();
    assert!(issued.key_pem.is_none(), "the hub never holds a node key");
    assert_eq!(
        CertRole::from_der(&issued.cert_der).unwrap(),
        CertRole::Node(binding)
    );
    assert!(verifies_as_client(&ca, &issued.cert_der));

    let other = HubCa::generate(NOW).unwrap();
    assert!(!verifies_as_client(&other, &issued.cert_der));
}

#[test]
fn admin_and_server_roles() {
    let ca = HubCa::generate(NOW).unwrap();
    let admin = ca.issue_admin(NOW).unwrap();
    assert_eq!(
        CertRole::from_der(&admin.cert_der).unwrap(),
        CertRole::Admin
    );
    assert!(verifies_as_client(&ca, &admin.cert_der));
    let server = ca.issue_server(NOW).unwrap();
    assert!(CertRole::from_der(&server.cert_der).is_err());
    assert!(
        !verifies_as_client(&ca, &server.cert_der),
        "serverAuth-only cert is no client"
    );
}

#[test]
fn refuses_world_readable_ca_key() {
    let dir = tempfile::tempdir().unwrap();
    HubCa::load_or_create(dir.path(), NOW).unwrap();
    let key = dir.path().join("ca.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = HubCa::load_or_create(dir.path(), NOW).err().unwrap();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}
