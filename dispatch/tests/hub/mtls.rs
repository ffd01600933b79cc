//! After provisioning: mTLS only, revocation on the next call, policy and topology feeds,
//! signaling relay.

use std::sync::Arc;

use bauxite_conduit::VirtualIp;
use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch::pki::{HubCa, NodeBinding};
use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::client::tls::{PinnedCa, pinned_config};
use bauxite_dispatch_api::client::{HubClient, NodeCredentials, connect};
use bauxite_dispatch_api::proto::node::policy_service_client::PolicyServiceClient;
use bauxite_dispatch_api::proto::node::{PolicyRequest, Signal, SignalKind, TopologyRequest};
use rcgen::{KeyPair, PKCS_ED25519};
use tonic::Code;

use crate::common::{HubProc, full_feed, identity, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_hub_issued_certificate_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (token, _) = hub.token(&[]);

    // No client certificate: TLS succeeds (first contact needs it), the call does not.
    let channel = connect(
        &hub.addr,
        pinned_config(Arc::new(PinnedCa::new(token.ca))).unwrap(),
    )
    .await
    .unwrap();
    let status = PolicyServiceClient::new(channel)
        .get_policy(PolicyRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        Refusal::from_status(&status),
        Some(Refusal::NoClientCertificate)
    );

    // A well-formed node certificate from another CA: refused by the TLS layer.
    let other = HubCa::generate(UnixTime::now()).unwrap();
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let raw: [u8; 32] = key.public_key_raw().try_into().unwrap();
    let id = identity(9).public();
    let binding = NodeBinding::new(id.signing_public, id.static_public, VirtualIp(0x6440_0009));
    let forged = other
        .issue_node(&binding, &raw, UnixTime::now(), 3600)
        .unwrap();
    let ca_pem = std::fs::read_to_string(hub.dir.join("ca.crt")).unwrap();
    let creds = NodeCredentials {
        ca_pem,
        cert_pem: forged.cert_pem,
        key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
    };
    let refused = match HubClient::connect_mtls(&hub.addr, &creds).await {
        Err(_) => true,
        Ok(client) => client.policy().get_policy(PolicyRequest {}).await.is_err(),
    };
    assert!(
        refused,
        "a certificate from another CA must not be accepted"
    );

    // A node certificate is not an admin certificate.
    let (_, node) = hub.node(1).await;
    let status = node
        .admin()
        .list_nodes(bauxite_dispatch_api::proto::admin::ListNodesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(Refusal::from_status(&status), Some(Refusal::AdminOnly));
    let metrics = hub.scrape();
    assert!(
        !metrics.contains("bauxite_dispatch_calls_refused_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_node_is_refused_and_removed_from_topology() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (a, client_a) = hub.node(1).await;
    let (_b, client_b) = hub.node(2).await;

    let mut feed_b = full_feed(&client_b).await;
    let first = within(feed_b.message()).await.unwrap().unwrap();
    // The two robots and the hub's mesh node.
    assert_eq!(first.peers.len(), 3);
    let mut feed_a = full_feed(&client_a).await;
    within(feed_a.message()).await.unwrap().unwrap();

    let out = hub.admin_ok(&["nodes", "revoke", &a.node_id.to_string()]);
    assert!(out.contains("revoked"));

    // B's stream delivers a newer snapshot without A.
    let next = within(feed_b.message()).await.unwrap().unwrap();
    assert!(next.version > first.version);
    assert_eq!(next.peers.len(), 2);
    assert!(
        next.peers
            .iter()
            .all(|p| p.node_id != a.node_id.to_string())
    );
    // A's open stream ends with PERMISSION_DENIED carrying the typed refusal, and so does
    // its next call: a client reads "revoked" from the details, not from the text.
    let ended = within(feed_a.message()).await.unwrap_err();
    assert_eq!(ended.code(), Code::PermissionDenied);
    assert_eq!(Refusal::from_status(&ended), Some(Refusal::Revoked));
    let status = client_a
        .policy()
        .get_policy(PolicyRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"));
    assert_eq!(Refusal::from_status(&status), Some(Refusal::Revoked));
    let list = hub.admin_ok(&["nodes", "list"]);
    assert!(list.contains("revoked"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_subscriber_gets_what_changed_and_ends_with_the_full_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (a, client_a) = hub.node(1).await;
    let (_b, client_b) = hub.node(2).await;
    let mut deltas = client_b
        .topology()
        .stream_topology(TopologyRequest {
            deltas: true,
            ..TopologyRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut held = within(deltas.message()).await.unwrap().unwrap();
    assert!(!held.delta, "the first message is a full snapshot");
    assert_eq!(held.peers.len(), 3);

    // A changes its endpoint, a third node joins, A is revoked: three changes.
    client_a
        .topology()
        .set_endpoint(bauxite_dispatch_api::proto::node::SetEndpointRequest {
            endpoint: "192.0.2.7:51820".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (c, _client_c) = hub.node(3).await;
    hub.admin_ok(&["nodes", "revoke", &a.node_id.to_string()]);

    // Every later message is a delta carrying only what changed; applied in order they
    // give what a full-snapshot subscriber sees.
    let mut full = full_feed(&client_b).await;
    let want = within(full.message()).await.unwrap().unwrap();
    while held.version < want.version {
        let update = within(deltas.message()).await.unwrap().unwrap();
        assert!(update.delta, "{update:?}");
        assert!(
            update.peers.len() <= 1,
            "one peer changed per change: {update:?}"
        );
        bauxite_dispatch_api::topology::apply(&mut held, update).unwrap();
    }
    assert_eq!(held, want);
    assert_eq!(held.peers.len(), 3, "B, C and the hub");
    assert!(
        held.peers
            .iter()
            .any(|p| p.node_id == c.node_id.to_string())
    );
    assert!(
        held.peers
            .iter()
            .all(|p| p.node_id != a.node_id.to_string())
    );
    let metrics = hub.scrape();
    assert!(
        !metrics.contains("bauxite_dispatch_topology_deltas_sent_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_set_is_streamed_to_subscribers() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (_, client) = hub.node(1).await;
    let mut feed = client
        .policy()
        .stream_policy(PolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    let initial = within(feed.message()).await.unwrap().unwrap();
    assert_eq!(initial.version, 0);

    let file = tmp.path().join("policy.json");
    std::fs::write(
        &file,
        r#"{"rules":[{"protocol":"tcp","ports":{"start":22,"end":22},"direction":"inbound"}]}"#,
    )
    .unwrap();
    hub.admin_ok(&["policy", "set", file.to_str().unwrap()]);
    let update = within(feed.message()).await.unwrap().unwrap();
    assert_eq!(update.version, 1);
    let policy: bauxite_conduit::policy::Policy = serde_json::from_str(&update.json).unwrap();
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.rules[0].ports, Some(22..=22));

    // An invalid policy is refused with the reason and changes nothing.
    std::fs::write(
        &file,
        r#"{"rules":[{"protocol":"icmp","ports":{"start":1,"end":2}}]}"#,
    )
    .unwrap();
    let out = hub.cli(&["policy", "set", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ports"));
    assert!(hub.admin_ok(&["policy", "show"]).contains("# version 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_relays_between_nodes_with_the_sender_id() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (x, cx) = hub.node(1).await;
    let (y, cy) = hub.node(2).await;
    let ((lo, clo), (hi, chi)) = if x.node_id < y.node_id {
        ((x, cx), (y, cy))
    } else {
        ((y, cy), (x, cx))
    };

    // The higher-ID peer connects first; the INVITE from the lower-ID peer reaches it.
    let (tx_hi, rx_hi) = tokio::sync::mpsc::channel::<Signal>(4);
    let mut inbox_hi = chi
        .signaling()
        .exchange_candidates(tokio_stream::wrappers::ReceiverStream::new(rx_hi))
        .await
        .unwrap()
        .into_inner();
    let (tx_lo, rx_lo) = tokio::sync::mpsc::channel::<Signal>(4);
    let mut inbox_lo = clo
        .signaling()
        .exchange_candidates(tokio_stream::wrappers::ReceiverStream::new(rx_lo))
        .await
        .unwrap()
        .into_inner();
    let to = |id: &bauxite_conduit::PeerId, kind: SignalKind| Signal {
        peer_id: id.to_string(),
        kind: kind as i32,
        session: 7,
        payload: b"candidate 1 udp 127.0.0.1 5000".to_vec(),
    };
    // An INVITE from the higher ID breaks the initiator rule and is dropped.
    tx_hi
        .send(to(&lo.node_id, SignalKind::Invite))
        .await
        .unwrap();
    tx_lo
        .send(to(&hi.node_id, SignalKind::Invite))
        .await
        .unwrap();
    let got = within(inbox_hi.message()).await.unwrap().unwrap();
    assert_eq!(got.peer_id, lo.node_id.to_string());
    assert_eq!(got.kind, SignalKind::Invite as i32);
    tx_hi
        .send(to(&lo.node_id, SignalKind::Answer))
        .await
        .unwrap();
    let answer = within(inbox_lo.message()).await.unwrap().unwrap();
    assert_eq!(
        answer.kind,
        SignalKind::Answer as i32,
        "the dropped INVITE never arrives"
    );
    assert_eq!(answer.peer_id, hi.node_id.to_string());
}
