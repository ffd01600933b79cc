//! Deployments round trip with the real binary and real node connections: `update deploy`
//! reaches the node's WatchUpdates stream, its ReportUpdateState shows in `update status`,
//! `nodes list` and the metrics, and every action is audited.

use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::{UpdateStateReport, WatchUpdatesRequest};

use crate::common::{HubProc, within};

fn report(sequence: u64, state: &str, done: u64) -> UpdateStateReport {
    UpdateStateReport {
        sequence,
        target: "firmware/1.0.0.img".into(),
        version: "1.0.0".into(),
        state: state.into(),
        chunks_done: done,
        chunks_total: 16,
        bytes_transferred: done * 65536,
        bytes_retransferred: 0,
        active_version: if state == "COMMITTED" {
            "1.0.0".into()
        } else {
            "0.9.0".into()
        },
        detail: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_watch_report_and_list_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    hub.admin_ok(&[
        "package",
        "create",
        "--virtual-size",
        "1MiB",
        "--seed",
        "2",
        "--version",
        "1.0.0",
    ]);
    let (a, client_a) = hub.node(1).await;
    let (b, _client_b) = hub.node(2).await;
    let (a_id, b_id) = (a.node_id.to_string(), b.node_id.to_string());

    let mut watch = client_a
        .updates()
        .watch_updates(WatchUpdatesRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = within(watch.message()).await.unwrap().unwrap();
    assert_eq!(first.sequence, 0, "nothing assigned yet");
    assert!(first.target.is_empty());
    assert_eq!(first.sources.len(), 1);
    assert_eq!(first.sources[0].virtual_ip, hub.mesh.0);
    assert_eq!(first.sources[0].port, 7450);

    let out = hub.admin_ok(&["update", "deploy", "firmware", "1.0.0", "--node", &a_id]);
    assert!(
        out.contains("assigned to 1 node(s)") && out.contains(&a_id),
        "{out}"
    );
    let assigned = within(watch.message()).await.unwrap().unwrap();
    assert_eq!(assigned.sequence, 1);
    assert_eq!(assigned.target, "firmware/1.0.0.img");
    assert_eq!(assigned.version, "1.0.0");
    assert!(!assigned.rollback);

    let mut updates = client_a.updates();
    for (state, done) in [
        ("PENDING_VALIDATION", 0),
        ("PENDING_VALIDATION", 5),
        ("PENDING_VALIDATION", 9),
        ("VALID", 16),
    ] {
        updates
            .report_update_state(report(1, state, done))
            .await
            .unwrap();
    }
    let status = hub.admin_ok(&["update", "status"]);
    let line = status.lines().find(|l| l.starts_with(&a_id)).unwrap();
    assert!(
        line.contains("VALID") && line.contains("100.0%"),
        "{status}"
    );
    let line = status.lines().find(|l| l.starts_with(&b_id)).unwrap();
    assert!(line.contains(" - "), "nothing assigned to b: {status}");
    let nodes = hub.admin_ok(&["nodes", "list"]);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with(&a_id) && l.contains("1.0.0 VALID")),
        "{nodes}"
    );
    assert!(
        nodes
            .lines()
            .any(|l| l.contains(&hub.mesh.0) && l.contains(" hub ")),
        "{nodes}"
    );
    let metrics = hub.scrape();
    assert!(
        metrics.contains(&format!("bauxite_dispatch_node_update_state{{node=\"{a_id}\",name=\"robot-1\",state=\"VALID\",version=\"1.0.0\",sequence=\"1\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "bauxite_dispatch_node_update_chunks_done{{node=\"{a_id}\"}} 16"
    )));

    // --all reaches b; a keeps its unchanged assignment.
    let out = hub.admin_ok(&["update", "deploy", "firmware", "1.0.0", "--all"]);
    assert!(
        out.contains("assigned to 1 node(s)") && out.contains(&b_id),
        "{out}"
    );
    // A rollback is a new assignment for a.
    hub.admin_ok(&[
        "update",
        "deploy",
        "firmware",
        "1.0.0",
        "--node",
        &a_id,
        "--rollback",
    ]);
    let rollback = within(watch.message()).await.unwrap().unwrap();
    assert_eq!(rollback.sequence, 2);
    assert!(rollback.rollback);
    // A report about the old assignment no longer counts as this one's state.
    let status = hub.admin_ok(&["update", "status"]);
    let line = status.lines().find(|l| l.starts_with(&a_id)).unwrap();
    assert!(!line.contains("VALID"), "{status}");

    // Refusals: an unknown package, the hub's own node, the admin certificate reporting.
    assert!(
        !hub.cli(&["update", "deploy", "firmware", "9.9.9", "--all"])
            .status
            .success()
    );
    let hub_id = nodes
        .lines()
        .find(|l| l.contains(" hub "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = hub.cli(&["update", "deploy", "firmware", "1.0.0", "--node", &hub_id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("mesh node"));
    let out = hub.cli(&["nodes", "revoke", &hub_id]);
    assert!(!out.status.success());
    let admin = HubClient::connect_admin(&hub.dir, None).await.unwrap();
    let refused = admin
        .updates()
        .report_update_state(report(1, "VALID", 16))
        .await
        .unwrap_err();
    assert_eq!(Refusal::from_status(&refused), Some(Refusal::NodesOnly));

    let audit = hub.admin_ok(&["audit", "show"]);
    assert_eq!(audit.matches("update.deploy").count(), 3, "{audit}");
    // PENDING_VALIDATION and VALID: progress reports are not audited.
    assert_eq!(audit.matches("update.state").count(), 2, "{audit}");

    // Revoked: the node's assignment stream ends with the typed refusal.
    hub.admin_ok(&["nodes", "revoke", &a_id]);
    let ended = within(watch.message()).await.unwrap_err();
    assert_eq!(Refusal::from_status(&ended), Some(Refusal::Revoked));
    hub.stop();
}
