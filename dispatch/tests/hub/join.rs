//! Provisioning: success binds the keys; every token rejection is clear and changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bauxite_dispatch_api::pki::{CertRole, NodeBinding, pem_to_der};
use bauxite_dispatch_api::token::{CaFingerprint, JoinToken};
use bauxite_dispatch_api::{Error, Refusal};
use zeroize::Zeroizing;

use crate::common::{HubProc, identity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_returns_certificates_that_bind_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (token, _) = hub.token(&["--name", "robot-1"]);
    let joined = hub.join(&token, 1).await.unwrap();

    let me = identity(1).public();
    assert_eq!(joined.node_id, me.peer_id());
    // 100.64.0.1 is the hub's own mesh node.
    assert_eq!(joined.virtual_ip.to_string(), "100.64.0.2");
    assert_eq!(joined.mesh_cidr, "100.64.0.0/10");
    let ca_der = pem_to_der(&joined.credentials.ca_pem).unwrap();
    assert_eq!(CaFingerprint::of_der(&ca_der), token.ca);
    let cert = pem_to_der(&joined.credentials.cert_pem).unwrap();
    assert_eq!(
        CertRole::from_der(&cert).unwrap(),
        CertRole::Node(NodeBinding::new(
            me.signing_public,
            me.static_public,
            joined.virtual_ip
        ))
    );

    // Written as the edge will write them: key 0600, and usable for mTLS.
    let certs = tmp.path().join("node/certs");
    joined.credentials.save(&certs).unwrap();
    let mode = std::fs::metadata(certs.join("node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let creds = bauxite_dispatch_api::client::NodeCredentials::load(&certs).unwrap();
    let client = bauxite_dispatch_api::client::HubClient::connect_mtls(&hub.addr, &creds)
        .await
        .unwrap();
    let mut feed = client
        .topology()
        .stream_topology(bauxite_dispatch_api::proto::node::TopologyRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = feed.message().await.unwrap().unwrap();
    let peers = bauxite_dispatch_api::client::peers_from_snapshot(&snapshot, None).unwrap();
    // This node and the hub's mesh node (flagged as the hub).
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().any(|p| p.static_public == me.static_public));
    let hub_peer = snapshot.peers.iter().find(|p| p.hub).unwrap();
    assert_eq!(hub_peer.virtual_ip, "100.64.0.1");
    assert_eq!(snapshot.peers.iter().filter(|p| p.hub).count(), 1);

    let metrics = hub.scrape();
    assert!(
        metrics.contains("bauxite_dispatch_provisions_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bauxite_dispatch_nodes_active 1"),
        "{metrics}"
    );
    let audit = hub.admin_ok(&["audit", "show"]);
    assert!(audit.contains("node.provision"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rejections_are_clear_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (token, _) = hub.token(&[]);
    hub.join(&token, 1).await.unwrap();
    let nodes_before = hub.admin_ok(&["nodes", "list"]);
    let audit_before = hub.admin_ok(&["audit", "show"]);

    // Reused single-use token.
    let err = hub.join(&token, 2).await.unwrap_err();
    assert!(err.to_string().contains("already used 1 time(s)"), "{err}");
    assert_eq!(err.refusal(), Some(Refusal::TokenUsedUp), "{err}");

    // Forged secret.
    let (fresh, _) = hub.token(&[]);
    let forged = JoinToken {
        secret: Zeroizing::new([0x42; 32]),
        ..fresh.clone()
    };
    let err = hub.join(&forged, 3).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no join token with this ID and secret"),
        "{err}"
    );
    assert_eq!(
        err.refusal(),
        Some(Refusal::TokenUnknownOrWrongSecret),
        "{err}"
    );
    // An unknown token ID gets exactly the same answer, text included: a caller without
    // a secret cannot learn which IDs exist (docs/hub.md).
    let unknown = JoinToken {
        id: bauxite_dispatch_api::token::TokenId([0x5a; 8]),
        ..forged.clone()
    };
    let unknown_err = hub.join(&unknown, 3).await.unwrap_err();
    assert_eq!(unknown_err.to_string(), err.to_string());
    assert_eq!(unknown_err.refusal(), err.refusal());

    // A token carrying another CA's fingerprint: refused by the client during TLS.
    let wrong_ca = JoinToken {
        ca: CaFingerprint([0x11; 32]),
        ..fresh.clone()
    };
    let err = hub.join(&wrong_ca, 4).await.unwrap_err();
    assert!(matches!(err, Error::CaFingerprintMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("man-in-the-middle") || err.to_string().contains("intercepting"),
        "{err}"
    );

    // Expired: wait on the wall clock (not on the hub) until the token's lifetime is over.
    let (short, expires) = hub.token(&["--ttl", "1s"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bauxite_dispatch::clock::UnixTime::now().0 < expires {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = hub.join(&short, 5).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // The expiry is a date (RFC 3339, UTC), not a Unix time.
    let date = bauxite_dispatch::clock::UnixTime(expires).to_string();
    assert!(date.ends_with('Z') && date.contains('T'), "{date}");
    assert!(err.to_string().contains(&date), "{err}");
    assert_eq!(err.refusal(), Some(Refusal::TokenExpired), "{err}");

    // None of the refusals changed nodes; the log grew only by the token creations.
    assert_eq!(hub.admin_ok(&["nodes", "list"]), nodes_before);
    let audit_after = hub.admin_ok(&["audit", "show"]);
    assert!(audit_after.starts_with(&audit_before));
    assert_eq!(audit_after.matches("node.provision").count(), 1);
    // The unused fresh token still works: refusals did not spend it.
    hub.join(&fresh, 6).await.unwrap();
    let metrics = hub.scrape();
    assert!(
        metrics.contains("bauxite_dispatch_provisions_refused_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_use_token_and_cli_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (token, _) = hub.token(&["--uses", "2", "--name", "fleet"]);
    let a = hub.join(&token, 1).await.unwrap();
    let b = hub.join(&token, 2).await.unwrap();
    assert_ne!(a.virtual_ip, b.virtual_ip);
    assert!(hub.join(&token, 3).await.is_err());
    // Joining again with the same identity and a new token is refused.
    let (again, _) = hub.token(&[]);
    let err = hub.join(&again, 1).await.unwrap_err();
    assert!(err.to_string().contains("already joined"), "{err}");
    let bad = hub.cli(&["token", "create", "--ttl", "90d"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_registration_expires_freeing_its_address_and_token_use() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), &["--confirm-within", "2s"]);
    let (token, _) = hub.token(&["--name", "ghost"]);
    // Phase one only, as a node that could not write its credentials would leave it.
    let ghost = hub.register(&token, 1).await.unwrap();
    let id = ghost.node_id.to_string();
    let listed = hub.admin_ok(&["nodes", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.contains("pending")),
        "{listed}"
    );
    // Pending: its certificate opens nothing but ConfirmProvision.
    let client =
        bauxite_dispatch_api::client::HubClient::connect_mtls(&hub.addr, &ghost.credentials)
            .await
            .unwrap();
    let status = client
        .topology()
        .stream_topology(bauxite_dispatch_api::proto::node::TopologyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(Refusal::from_status(&status), Some(Refusal::NotConfirmed));
    // The hub's own timer expires it; no request is needed to trigger it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while hub.admin_ok(&["nodes", "list"]).contains(&id) {
        assert!(
            std::time::Instant::now() < deadline,
            "registration never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = hub.admin_ok(&["audit", "show"]);
    assert!(audit.contains("node.expire"), "{audit}");
    // A late confirmation is refused; the single-use token got its use back and the next
    // node gets the freed address.
    let late = bauxite_dispatch_api::client::confirm(&hub.addr, &ghost.credentials)
        .await
        .unwrap_err();
    assert_eq!(late.refusal(), Some(Refusal::UnknownNode), "{late}");
    let next = hub.join(&token, 2).await.unwrap();
    assert_eq!(next.virtual_ip, ghost.virtual_ip);
    let listed = hub.admin_ok(&["nodes", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&next.node_id.to_string()) && l.contains("active")),
        "{listed}"
    );
}
