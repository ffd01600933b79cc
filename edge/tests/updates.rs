//! The robot's update agent end to end, with real processes on loopback and no root: a
//! real hub (`bauxite-dispatch serve`: TUF repository, packages, `UpdateService`, its own
//! mesh node serving images on the Bulk lane) and real `bauxite run` daemons on the
//! in-memory device, joined with real tokens.
//!
//! - `join` stores the hub's update root (0644 in a 0700 directory), or the one pinned
//!   with `--update-root`, which wins; an invalid pinned root writes nothing.
//! - An assigned virtual package is fetched over the mesh (Bulk lane), verified,
//!   activated (`current` points to it, its bytes are the package's), reported to the
//!   hub (`ListUpdates`), recorded to MCAP (states and the probe's latency series); the
//!   daemon pings the hub's mesh node on the Critical lane.
//! - `kill -9` of the robot daemon mid-transfer, then a restart: `POWER_FAILURE_CUT`,
//!   `CHECKPOINT_LOADED`, no verified chunk fetched again (the agent's counters: bytes
//!   received = image length - resumed chunks), ends verified and active.
//! - 8 bytes changed in the staged image at the hold point: `INVALID_SIGNATURE_REJECTED`,
//!   staging purged, `ATOMIC_ROLLED_BACK`, `current` unchanged.
//! - The watchdog rolls back a version that never sends a heartbeat, blocks it, and
//!   commits one that does.
//! - Warm start: the peer table saved at shutdown is back at start while the hub is down.
//!
//! Needs `target/<profile>/bauxite-dispatch` next to `bauxite` (`cargo build -p
//! bauxite-dispatch`, or any `cargo test --workspace`); without it each test
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::admin::{ListUpdatesRequest, NodeUpdate};
use bauxite_forge::chunk::ChunkNo;
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, VirtualImage};
use support::{Hub, Robot, bauxite, join, json, saw, states, text};

const MIB: u64 = 1 << 20;

fn package(hub: &Hub, version: &str, size_mib: u64, seed: u64) {
    hub.admin(&[
        "package",
        "create",
        "--version",
        version,
        "--virtual-size",
        &format!("{size_mib}MiB"),
        "--seed",
        &seed.to_string(),
    ]);
}

fn deploy(hub: &Hub, version: &str, robot: &Robot) {
    hub.admin(&[
        "update",
        "deploy",
        "firmware",
        version,
        "--node",
        &robot.peer_id(),
    ]);
}

/// The hub's `ListUpdates` entry for `node`, through the admin gRPC API.
fn list_updates(hub: &Hub, node: &str) -> Option<NodeUpdate> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = HubClient::connect_admin(&hub.data, None).await.unwrap();
        let list = client
            .admin()
            .list_updates(ListUpdatesRequest {})
            .await
            .unwrap()
            .into_inner();
        list.nodes.into_iter().find(|n| n.node_id == node)
    })
}

/// Checks the active image byte for byte against the package's virtual image.
fn assert_image(root: &Path, version: &str, size_mib: u64, seed: u64) {
    let image = VirtualImage::new(seed, size_mib * MIB).unwrap();
    let mut file = fs::File::open(root.join("current/image")).unwrap();
    assert_eq!(file.metadata().unwrap().len(), size_mib * MIB, "{version}");
    let mut want = vec![0u8; CHUNK_SIZE];
    let mut got = vec![0u8; CHUNK_SIZE];
    for i in 0..image.chunk_count() {
        let n = image.read_chunk(ChunkNo(i), &mut want).unwrap();
        file.read_exact(&mut got[..n]).unwrap();
        assert!(want[..n] == got[..n], "{version}: chunk {i} differs");
    }
}

fn lane(config: &Path, lane: &str, field: &str) -> u64 {
    json(config, &["status"])["lanes"][lane][field]
        .as_u64()
        .unwrap()
}

#[test]
fn join_stores_the_hub_update_root_or_the_pinned_one() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    // From the hub.
    let root = dir.path().join("from-hub");
    let out = join(&hub, &hub.token("a"), &root, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("update root (from the hub) trusted"),
        "{}",
        text(&out)
    );
    let stored = root.join("forge/tuf/root.json");
    assert_eq!(fs::read(&stored).unwrap(), hub.root_json());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&stored), 0o644);
    assert_eq!(mode(&root.join("forge/tuf")), 0o700);

    // Pinned out of band: it wins over the hub's. A second hub's root stands in for a
    // root the release team handed over.
    let other_dir = dir.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    let other = Hub::start(&other_dir);
    let pinned = dir.path().join("pinned-root.json");
    fs::write(&pinned, other.root_json()).unwrap();
    assert_ne!(other.root_json(), hub.root_json());
    let root = dir.path().join("pinned");
    let out = join(
        &hub,
        &hub.token("b"),
        &root,
        &["--update-root", pinned.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pinned with --update-root"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read(root.join("forge/tuf/root.json")).unwrap(),
        other.root_json()
    );

    // A pinned file that is not a signed root: refused before the hub is asked, nothing
    // written, and the token is not used up.
    let mut bad: serde_json::Value = serde_json::from_slice(&other.root_json()).unwrap();
    bad["signed"]["version"] = serde_json::json!(7);
    fs::write(&pinned, serde_json::to_vec(&bad).unwrap()).unwrap();
    let token = hub.token("c");
    let root = dir.path().join("refused");
    let out = join(
        &hub,
        &token,
        &root,
        &["--update-root", pinned.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not a valid TUF root"),
        "{}",
        text(&out)
    );
    assert!(!root.exists());
    let out = join(&hub, &token, &root, &[]);
    assert!(
        out.status.success(),
        "the token still works: {}",
        text(&out)
    );
}

#[test]
fn an_assigned_package_is_fetched_on_the_bulk_lane_verified_activated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let mut robot = Robot::join(&hub, dir.path(), "robot", "probe_hz = 200");
    robot.start();
    let id = robot.peer_id();

    // The daemon pings the hub's mesh node (named `hub` in topology) on the Critical lane.
    let ping = json(
        &robot.config,
        &["ping", "hub", "--count", "20", "--rate", "100"],
    );
    assert_eq!(ping["received"], 20, "{ping}");
    assert_eq!(ping["lane"], "critical");

    let bulk_before = lane(&robot.config, "bulk", "sent");
    package(&hub, "2.0.0", 16, 7);
    deploy(&hub, "2.0.0", &robot);
    let s = robot.wait_state("COMMITTED", "2.0.0");
    assert_eq!(
        states(&s, "2.0.0"),
        ["PENDING_VALIDATION", "VALID", "ACTIVATED", "COMMITTED"],
        "{s:#}"
    );
    assert_eq!(robot.current().as_deref(), Some("2.0.0"));
    assert_image(&robot.root, "2.0.0", 16, 7);
    assert!(!robot.root.join("versions/2.0.0/checkpoint.bin").exists());
    assert_eq!(s["active_version"], "2.0.0");
    let p = &s["progress"];
    assert_eq!(p["chunks_done"], 256);
    // Every chunk crossed once; a copy beyond that (a timer firing on a loaded machine)
    // is counted apart.
    let unique =
        p["bytes_transferred"].as_u64().unwrap() - p["bytes_retransferred"].as_u64().unwrap();
    assert_eq!(unique, 16 * MIB, "{p}");
    assert_eq!(p["verified_bytes_refetched"], 0);
    // Requests went out on the Bulk lane; the Critical lane carried only probes.
    assert!(lane(&robot.config, "bulk", "sent") > bulk_before);
    let probe = &s["probe"];
    assert!(probe["received"].as_u64().unwrap() > 0, "{s:#}");
    assert!(probe["p50_us"].as_u64().unwrap() > 0, "{probe}");

    // The hub has the final report.
    let reported = support::wait_for(support::LIMIT, "the hub's report", || {
        list_updates(&hub, &id).filter(|u| u.state == "COMMITTED")
    });
    assert_eq!(reported.active_version, "2.0.0");
    assert_eq!(reported.version, "2.0.0");
    assert_eq!(reported.chunks_done, 256);

    // The recording has every state and the latency series.
    let recording = s["recording"].as_str().unwrap().to_owned();
    assert!(recording.starts_with(robot.root.join("forge/recordings").to_str().unwrap()));
    let bytes = fs::read(&recording).unwrap();
    let mut topics: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    for m in mcap::MessageStream::new(&bytes).unwrap() {
        let m = m.unwrap();
        topics
            .entry(m.channel.topic.clone())
            .or_default()
            .push(serde_json::from_slice(&m.data).unwrap());
    }
    let recorded: Vec<&str> = topics["/forge/state"]
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        recorded,
        ["PENDING_VALIDATION", "VALID", "ACTIVATED", "COMMITTED"]
    );
    let latency = &topics["/control_loop/latency_us"];
    assert!(!latency.is_empty(), "{:?}", topics.keys());
    assert!(latency.iter().all(|v| v["value"].as_f64().unwrap() > 0.0));
    assert!(topics.contains_key("/forge/progress"));

    // `check` refreshes and shows the assignment; the metrics endpoint is not configured
    // here, `update status` text shows the same facts.
    let check = json(&robot.config, &["update", "check"]);
    assert_eq!(check["signed"]["version"], "2.0.0", "{check}");
    assert_eq!(check["newer_than_active"], false);
    let out = bauxite(&robot.config, &["update", "status"]);
    let t = text(&out);
    assert!(
        t.contains("COMMITTED") && t.contains("active:    2.0.0"),
        "{t}"
    );
    robot.daemon().stop();
}

#[test]
fn kill9_mid_transfer_resumes_from_the_checkpoint_without_refetching() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let mut robot = Robot::join(&hub, dir.path(), "robot", "");
    robot.start();
    const SIZE: u64 = 160;
    package(&hub, "2.0.0", SIZE, 42);
    deploy(&hub, "2.0.0", &robot);
    // A power cut once some chunks are durable (recorded in checkpoint.bin).
    robot.wait_status("a durable part of the image", |s| {
        s["progress"]["chunks_durable"].as_u64().unwrap_or(0) >= 256
            && s["progress"]["percent"].as_f64().unwrap_or(100.0) < 80.0
    });
    robot.daemon().kill9();
    assert!(robot.root.join("versions/2.0.0/checkpoint.bin").exists());
    assert_eq!(robot.current(), None);

    robot.start();
    // `update status --follow` without a terminal: plain progress lines until the update
    // stops moving, then the status.
    robot.wait_status("the resumed transfer", |s| {
        s["phase"] == "transferring" || saw(s, "VALID", "2.0.0")
    });
    let out = bauxite(
        &robot.config,
        &["update", "status", "--follow", "--timeout", "120"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("chunks") && t.contains("ETA"), "{t}");
    assert!(t.contains("active:    2.0.0"), "{t}");
    let s = robot.wait_state("COMMITTED", "2.0.0");
    assert_eq!(
        states(&s, "2.0.0"),
        [
            "POWER_FAILURE_CUT",
            "CHECKPOINT_LOADED",
            "PENDING_VALIDATION",
            "VALID",
            "ACTIVATED",
            "COMMITTED"
        ],
        "{s:#}"
    );
    let resumed = s["resumed_chunks"].as_u64().unwrap();
    assert!(resumed >= 256, "{s:#}");
    let p = &s["progress"];
    assert_eq!(p["verified_bytes_refetched"], 0, "{p}");
    // Exactly the chunks the checkpoint did not hold crossed the link after the restart
    // (once each; extra copies of a chunk in flight are counted as retransferred).
    let unique =
        p["bytes_transferred"].as_u64().unwrap() - p["bytes_retransferred"].as_u64().unwrap();
    assert_eq!(unique, SIZE * MIB - resumed * CHUNK_SIZE as u64, "{p}");
    assert_eq!(robot.current().as_deref(), Some("2.0.0"));
    assert_image(&robot.root, "2.0.0", SIZE, 42);
    let log = robot.log();
    assert!(log.contains("state=CHECKPOINT_LOADED"), "{log}");

    // Two recordings: the cut run's, readable up to its last flush (no summary), and the
    // resumed run's, complete.
    let mut files: Vec<_> = fs::read_dir(robot.root.join("forge/recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let cut = recorded_states(&fs::read(&files[0]).unwrap());
    assert_eq!(
        cut.first().map(String::as_str),
        Some("PENDING_VALIDATION"),
        "{cut:?}"
    );
    let resumed = recorded_states(&fs::read(&files[1]).unwrap());
    assert_eq!(
        resumed[..2],
        ["POWER_FAILURE_CUT", "CHECKPOINT_LOADED"],
        "{resumed:?}"
    );
    assert_eq!(resumed.last().map(String::as_str), Some("COMMITTED"));
}

/// The `/forge/state` names in a recording, up to its end or its first unreadable byte
/// (a recording cut by `kill -9` has no summary).
fn recorded_states(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for m in mcap::MessageStream::new(bytes).unwrap() {
        let Ok(m) = m else { break };
        if m.channel.topic == "/forge/state" {
            let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
            out.push(v["state"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[test]
fn bytes_changed_in_the_staged_image_are_rejected_and_current_stays() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let mut robot = Robot::join(&hub, dir.path(), "robot", "hold_before_activate = true");
    robot.start();
    package(&hub, "1.0.0", 4, 1);
    package(&hub, "2.0.0", 8, 2);
    deploy(&hub, "1.0.0", &robot);
    robot.wait_status("1.0.0 held", |s| s["phase"] == "held");
    let out = bauxite(&robot.config, &["update", "apply"]);
    assert!(
        text(&out).contains("released from the hold point"),
        "{}",
        text(&out)
    );
    robot.wait_state("COMMITTED", "1.0.0");

    deploy(&hub, "2.0.0", &robot);
    let held = robot.wait_status("2.0.0 held", |s| {
        s["phase"] == "held" && s["target_version"] == "2.0.0"
    });
    assert_eq!(held["progress"]["chunks_durable"], 128);
    // An attacker with write access to the disk changes 8 bytes of the staged image.
    let staged = robot.root.join("versions/2.0.0/image");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&staged)
        .unwrap();
    f.seek(SeekFrom::Start(5 * MIB + 1234)).unwrap();
    let mut eight = [0u8; 8];
    f.read_exact(&mut eight).unwrap();
    for b in &mut eight {
        *b ^= 0x5a;
    }
    f.seek(SeekFrom::Start(5 * MIB + 1234)).unwrap();
    f.write_all(&eight).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let out = bauxite(&robot.config, &["update", "apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = robot.wait_state("ATOMIC_ROLLED_BACK", "2.0.0");
    assert_eq!(
        states(&s, "2.0.0"),
        [
            "PENDING_VALIDATION",
            "INVALID_SIGNATURE_REJECTED",
            "ATOMIC_ROLLED_BACK"
        ],
        "{s:#}"
    );
    let rejected = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state"] == "INVALID_SIGNATURE_REJECTED")
        .unwrap();
    assert!(
        rejected["detail"]
            .as_str()
            .unwrap()
            .contains("no longer matches")
    );
    assert_eq!(s["phase"], "rejected");
    assert!(
        !robot.root.join("versions/2.0.0").exists(),
        "staging purged"
    );
    assert_eq!(robot.current().as_deref(), Some("1.0.0"));
    assert_image(&robot.root, "1.0.0", 4, 1);
    let id = robot.peer_id();
    let reported = support::wait_for(support::LIMIT, "the hub's report", || {
        list_updates(&hub, &id).filter(|u| u.state == "ATOMIC_ROLLED_BACK")
    });
    assert_eq!(reported.active_version, "1.0.0");
}

#[test]
fn the_watchdog_rolls_back_a_version_without_heartbeat_and_commits_one_with() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let mut robot = Robot::join(
        &hub,
        dir.path(),
        "robot",
        "heartbeat_required = true\nhealth_timeout_secs = 2",
    );
    robot.start();
    for (v, seed) in [("1.0.0", 1), ("2.0.0", 2), ("3.0.0", 3)] {
        package(&hub, v, 2, seed);
    }
    deploy(&hub, "1.0.0", &robot);
    // A first install has nothing to roll back to: committed at once.
    robot.wait_state("COMMITTED", "1.0.0");

    deploy(&hub, "2.0.0", &robot);
    let s = robot.wait_state("ACTIVATED", "2.0.0");
    assert_eq!(robot.current().as_deref(), Some("2.0.0"));
    let _ = s;
    // No heartbeat: rolled back after the health timeout.
    let s = robot.wait_state("ROLLED_BACK_UNHEALTHY", "2.0.0");
    assert!(!saw(&s, "COMMITTED", "2.0.0"), "{s:#}");
    assert_eq!(robot.current().as_deref(), Some("1.0.0"));
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(robot.root.join("rollback.marker")).unwrap()).unwrap();
    assert_eq!(marker["state"], "rolled_back");
    assert_eq!(marker["blocked"], serde_json::json!(["2.0.0"]));
    // The blocked version is refused if offered again.
    let out = bauxite(&robot.config, &["update", "apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = robot.wait_status("2.0.0 refused", |s| s["phase"] == "failed");
    let last = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["state"], "FAILED");
    assert!(
        last["detail"].as_str().unwrap().contains("blocked"),
        "{last}"
    );

    // A version whose workload reports healthy is committed.
    deploy(&hub, "3.0.0", &robot);
    let s = robot.wait_status("3.0.0 awaiting health", |s| {
        s["phase"] == "awaiting_health" && s["watchdog"]["version"] == "3.0.0"
    });
    assert_eq!(s["watchdog"]["attempt"], 1);
    let hb = json(&robot.config, &["update", "heartbeat"]);
    assert_eq!(hb["committed"], true, "{hb}");
    robot.wait_state("COMMITTED", "3.0.0");
    assert_eq!(robot.current().as_deref(), Some("3.0.0"));
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(robot.root.join("rollback.marker")).unwrap()).unwrap();
    assert_eq!(marker["state"], "committed");
    assert_eq!(marker["boot_attempts"], 1);
}

#[test]
fn warm_start_restores_the_peer_table_before_the_hub_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path());
    let mut robot = Robot::join(&hub, dir.path(), "robot", "");
    robot.start();
    let peers = json(&robot.config, &["status"])["peers"].clone();
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    robot.daemon().stop();
    let snapshot = robot.root.join("warm-start.snapshot");
    assert_eq!(
        fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(robot.log().contains("warm-start snapshot saved"));

    // The hub is gone; the restarted node still knows its peers (and dials them).
    let _ = hub.child.kill();
    let _ = hub.child.wait();
    let mut d = support::Daemon::start(&robot.config, robot.root.join("warm.log"));
    let status = d.wait_running();
    assert_eq!(status["peers"][0]["name"], peers[0]["name"], "{status}");
    assert_eq!(status["peers"][0]["virtual_ip"], peers[0]["virtual_ip"]);
    assert!(
        d.log().contains("warm start: peer table restored"),
        "{}",
        d.log()
    );
    d.stop();
}
