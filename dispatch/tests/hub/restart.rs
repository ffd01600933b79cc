//! The real binary, started twice on one data dir, keeps every node, token, policy and
//! audit record; a node's credentials keep working across the restart.

use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::PolicyRequest;

use crate::common::HubProc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restart_keeps_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = HubProc::start(&dir);
    let ca_before = std::fs::read(dir.join("ca.crt")).unwrap();
    let (token, _) = hub.token(&["--uses", "2"]);
    let a = hub.join(&token, 1).await.unwrap();
    let file = tmp.path().join("p.json");
    std::fs::write(&file, r#"{"rules":[],"default":"allow"}"#).unwrap();
    hub.admin_ok(&["policy", "set", file.to_str().unwrap()]);
    let first_addr = hub.addr.clone();
    hub.stop();
    assert!(
        !dir.join("hub.addr").exists(),
        "hub.addr is removed on shutdown"
    );

    let hub = HubProc::start(&dir);
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before);
    let _ = first_addr;
    let nodes = hub.admin_ok(&["nodes", "list"]);
    assert!(
        nodes.contains(&a.node_id.to_string()) && nodes.contains("active"),
        "{nodes}"
    );
    // The node's certificate still works against the restarted hub.
    let client = HubClient::connect_mtls(&hub.addr, &a.credentials)
        .await
        .unwrap();
    let policy = client
        .policy()
        .get_policy(PolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.version, 1);
    // The token kept its remaining use: one more join, then it is used up.
    let b = hub.join(&token, 2).await.unwrap();
    assert_eq!(b.virtual_ip.to_string(), "100.64.0.3");
    assert!(hub.join(&token, 3).await.is_err());
    let verify = hub.admin_ok(&["audit", "verify"]);
    // hub.start, hub.mesh, token, provision, confirm, policy, hub.start, provision, confirm
    assert!(verify.contains("OK: 9 entries"), "{verify}");
    // Structured logs: one JSON object per line.
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    let line = log.lines().find(|l| l.contains("hub started")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(parsed["fields"]["message"], "hub started");
}
