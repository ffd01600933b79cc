//! Certificate renewal over mutual TLS (`RenewCertificate`): a new certificate for the same
//! identity with a later expiry; revoked nodes and expired certificates get nothing.

use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch::pki::{CertRole, HubCa, LeafFacts, pem_to_der};
use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::client::{HubClient, NodeCredentials, renew};
use bauxite_dispatch_api::proto::node::{PolicyRequest, RenewCertificateRequest};

use crate::common::{HubProc, identity, within};

fn facts(pem: &str) -> LeafFacts {
    LeafFacts::from_pem(pem).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_chains_to_the_ca_with_the_same_identity_and_a_later_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), &["--node-cert-validity", "2h"]);
    let (joined, client) = hub.node(1).await;
    let old = facts(&joined.credentials.cert_pem);
    assert!(old.not_after - old.not_before <= 3 * 3600, "{old:?}");

    // The notAfter has one-second resolution: make sure the new one is later.
    let floor = old.not_after;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while UnixTime::now().0 < floor.saturating_sub(7200) + 1 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let renewed = within(renew(&client, &identity(1), &joined.credentials))
        .await
        .unwrap();
    let new = facts(&renewed.cert_pem);
    assert!(new.not_after > old.not_after, "{new:?} vs {old:?}");
    assert_eq!(new.public_key, old.public_key, "same TLS key");
    let old_der = pem_to_der(&joined.credentials.cert_pem).unwrap();
    let new_der = pem_to_der(&renewed.cert_pem).unwrap();
    assert_ne!(old_der, new_der);
    assert_eq!(
        CertRole::from_der(&new_der).unwrap(),
        CertRole::from_der(&old_der).unwrap(),
        "same node ID, keys and virtual IP"
    );
    // It chains to the hub's CA: the hub accepts it over mutual TLS, and it is now the
    // only certificate accepted for ordinary calls.
    let fresh = HubClient::connect_mtls(&hub.addr, &renewed).await.unwrap();
    within(fresh.policy().get_policy(PolicyRequest {}))
        .await
        .unwrap();
    let stale = HubClient::connect_mtls(&hub.addr, &joined.credentials)
        .await
        .unwrap();
    let status = within(stale.policy().get_policy(PolicyRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        Refusal::from_status(&status),
        Some(Refusal::CertificateNotIssued)
    );
    let audit = hub.admin_ok(&["audit", "show"]);
    assert_eq!(audit.matches("node.cert_renewed").count(), 1, "{audit}");
    assert!(audit.contains(&joined.node_id.to_string()), "{audit}");

    // A proof for another certificate (or none) is refused, and nothing is issued.
    let status = within(
        fresh
            .provisioning()
            .renew_certificate(RenewCertificateRequest { proof: vec![0; 64] }),
    )
    .await
    .unwrap_err();
    assert_eq!(Refusal::from_status(&status), Some(Refusal::BadProof));
    let audit = hub.admin_ok(&["audit", "show"]);
    assert_eq!(audit.matches("node.cert_renewed").count(), 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_cannot_renew_and_nothing_is_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (joined, client) = hub.node(2).await;
    hub.admin_ok(&["nodes", "revoke", &joined.node_id.to_string()]);
    let error = within(renew(&client, &identity(2), &joined.credentials))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            bauxite_dispatch_api::Error::Refused {
                refusal: Refusal::Revoked,
                ..
            }
        ),
        "{error:?}"
    );
    let audit = hub.admin_ok(&["audit", "show"]);
    assert!(!audit.contains("node.cert_renewed"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_cannot_renew() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = HubProc::start(&dir);
    let (joined, _) = hub.node(3).await;
    // A certificate for this very node and key, signed by the hub's own CA, that expired
    // an hour ago (the test holds the CA key, as an attacker replaying an old one would not).
    let ca = HubCa::load_or_create(&dir, UnixTime::now()).unwrap();
    let der = pem_to_der(&joined.credentials.cert_pem).unwrap();
    let CertRole::Node(binding) = CertRole::from_der(&der).unwrap() else {
        panic!("not a node certificate");
    };
    let tls: [u8; 32] = facts(&joined.credentials.cert_pem)
        .public_key
        .try_into()
        .unwrap();
    let past = UnixTime(UnixTime::now().0 - 3 * 86_400);
    let expired = ca.issue_node(&binding, &tls, past, 86_400).unwrap();
    let creds = NodeCredentials {
        cert_pem: expired.cert_pem,
        ..joined.credentials.clone()
    };
    // TLS refuses the expired certificate at the handshake, or the hub refuses the call.
    let refused = match HubClient::connect_mtls(&hub.addr, &creds).await {
        Err(_) => true,
        Ok(client) => within(renew(&client, &identity(3), &creds)).await.is_err(),
    };
    assert!(refused, "an expired certificate was renewed");
    let audit = hub.admin_ok(&["audit", "show"]);
    assert!(!audit.contains("node.cert_renewed"), "{audit}");
    // The node's current certificate still works.
    let client = HubClient::connect_mtls(&hub.addr, &joined.credentials)
        .await
        .unwrap();
    within(client.policy().get_policy(PolicyRequest {}))
        .await
        .unwrap();
}
