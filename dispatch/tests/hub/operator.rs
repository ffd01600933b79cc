//! Operator-signed key records through the real hub binary: uploaded with `nodes sign`,
//! checked against the node's keys, stored in `hub.db` across a restart, audited, and
//! distributed with the node in the topology byte for byte; the hub's own `key-request`
//! gives the facts the operator signs. The hub never needs the operator's private key.

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::operator::{KeyRecord, NodeKeyFacts, OperatorLock, SignedKeyRecord};
use bauxite_dispatch_api::proto::node::TopologySnapshot;
use ed25519_dalek::SigningKey;

use crate::common::{HubProc, full_feed, identity, within};

async fn topology(client: &HubClient) -> TopologySnapshot {
    let mut feed = full_feed(client).await;
    within(feed.message()).await.unwrap().unwrap()
}

fn signature_of(snapshot: &TopologySnapshot, id: PeerId) -> Vec<u8> {
    let id = id.to_string();
    snapshot
        .peers
        .iter()
        .find(|p| p.node_id == id)
        .unwrap()
        .operator_signature
        .clone()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_key_records_are_checked_stored_and_distributed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = HubProc::start(&dir);
    let (a, client_a) = hub.node(1).await;
    let (b, _client_b) = hub.node(2).await;
    let operator = SigningKey::from_bytes(&[42; 32]);

    // The facts the node itself would print (`bauxite operator request`) equal the ones
    // the hub prints for it.
    let public = identity(2).public();
    let facts = NodeKeyFacts {
        node_id: b.node_id,
        ed25519: public.signing_public,
        x25519: public.static_public,
        virtual_ip: b.virtual_ip,
    };
    let listed = hub.admin_ok(&["nodes", "key-request", &b.node_id.to_string()]);
    assert_eq!(listed.trim(), facts.to_text());

    // Unsigned at first: the topology carries no signature.
    assert!(signature_of(&topology(&client_a).await, b.node_id).is_empty());

    // A record for other keys than the node's is refused, and nothing is stored.
    let wrong = KeyRecord {
        facts: NodeKeyFacts {
            x25519: identity(3).public().static_public,
            ..facts
        },
        not_after: unix_now() + 3600,
        serial: 1,
    }
    .sign(&operator);
    let out = hub.cli(&["nodes", "sign", &wrong.to_text()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("X25519 key is not node"), "{stderr}");
    // A record that does not verify under the key it names is refused.
    let mut forged = KeyRecord {
        facts,
        not_after: unix_now() + 3600,
        serial: 1,
    }
    .sign(&operator);
    forged.record.serial = 2;
    let out = hub.cli(&["nodes", "sign", &forged.to_text()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An expired one too.
    let expired = KeyRecord {
        facts,
        not_after: 1,
        serial: 1,
    }
    .sign(&operator);
    assert!(
        !hub.cli(&["nodes", "sign", &expired.to_text()])
            .status
            .success()
    );
    assert!(signature_of(&topology(&client_a).await, b.node_id).is_empty());

    // The right record is stored and reaches the other node, byte for byte.
    let good = KeyRecord {
        facts,
        not_after: unix_now() + 3600,
        serial: 5,
    }
    .sign(&operator);
    let out = hub.admin_ok(&["nodes", "sign", &good.to_text()]);
    assert!(out.contains(&b.node_id.to_string()), "{out}");
    let snapshot = topology(&client_a).await;
    let carried = signature_of(&snapshot, b.node_id);
    assert_eq!(SignedKeyRecord::parse(&carried).unwrap(), good);
    assert!(signature_of(&snapshot, a.node_id).is_empty());
    // What a node with the lock on concludes from it.
    let lock = OperatorLock::new(vec![operator.verifying_key().to_bytes()]);
    assert!(lock.check(&facts, &carried, unix_now()).is_ok());
    let audit = hub.admin_ok(&["audit", "show"]);
    assert!(audit.contains("node.operator_sign"), "{audit}");
    // `nodes list` shows until when each node is signed (`-`: not at all).
    let listed = hub.admin_ok(&["nodes", "list"]);
    let line = |id: PeerId| {
        listed
            .lines()
            .find(|l| l.starts_with(&id.to_string()))
            .unwrap()
            .to_owned()
    };
    let until = bauxite_dispatch::clock::UnixTime(good.record.not_after).to_string();
    assert!(line(b.node_id).contains(&until), "{listed}");
    assert!(!line(a.node_id).contains(&until), "{listed}");

    // It survives a restart (stored in hub.db), and the audit chain still verifies.
    hub.stop();
    let hub = HubProc::start(&dir);
    let client_a = HubClient::connect_mtls(&hub.addr, &a.credentials)
        .await
        .unwrap();
    assert_eq!(
        signature_of(&topology(&client_a).await, b.node_id),
        good.encode()
    );
    assert!(hub.admin_ok(&["audit", "verify"]).contains("OK"));
    // A record for a node the hub does not know is refused.
    let stranger = identity(9).public();
    let unknown = KeyRecord {
        facts: NodeKeyFacts {
            node_id: stranger.peer_id(),
            ed25519: stranger.signing_public,
            x25519: stranger.static_public,
            virtual_ip: b.virtual_ip,
        },
        not_after: unix_now() + 3600,
        serial: 1,
    }
    .sign(&operator);
    let out = hub.cli(&["nodes", "sign", &unknown.to_text()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node with ID"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
