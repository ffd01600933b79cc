//! TURN in the NAT laboratory: coturn on the public network beside the hub, which hands
//! the nodes time-limited credentials for it. Each test asserts the path type both nodes
//! report (`bauxite status --json`) and pings across the mesh both ways:
//!
//! - symmetric NAT (`masquerade fully-random`) on one side: no direct pair exists, the
//!   session runs through TURN;
//! - symmetric NAT on both sides: through TURN too;
//! - cone NAT on both sides with TURN available: direct (TURN is not chosen when direct
//!   works).
//!
//! The hub binary must sit next to `bauxite`; coturn must be installed (scripts/setup.sh);
//! without root they print SKIPPED.

use serde_json::Value;

use crate::coturn::Coturn;
use crate::hub::dispatch_binary;
use crate::nat::{LIMIT, NAMES, NatMesh, peer_entry};
use crate::natlab::{Nat, NatLab};
use crate::support::{can_run, wait_for, wait_for_or};

/// The lab, coturn on the hub's IP, the hub configured for it, a node in each site.
fn start(nat: [Nat; 2]) -> (NatMesh, Coturn) {
    let bin = dispatch_binary();
    let lab = NatLab::new(nat);
    let coturn = Coturn::start(&lab, NatLab::PUBLIC_IP);
    let mesh = NatMesh::start_with(&bin, lab, coturn.hub_args());
    (mesh, coturn)
}

fn logs(mesh: &NatMesh, coturn: &Coturn) -> String {
    format!("{}\n--- coturn ---\n{}", mesh.logs(), coturn.log())
}

/// Node `i`'s status entry for the other node, once `ok` holds for it.
fn entry_when(
    mesh: &NatMesh,
    coturn: &Coturn,
    i: usize,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_for_or(
        LIMIT,
        what,
        || {
            let status = mesh.nodes[i].status()?;
            let entry = peer_entry(&status, NAMES[1 - i])?.clone();
            ok(&entry).then_some(entry)
        },
        || {
            let status = [0, 1].map(|i| mesh.nodes[i].status().unwrap_or_default());
            format!(
                "{}
{}
{}",
                status[0],
                status[1],
                logs(mesh, coturn)
            )
        },
    )
}

/// Both nodes report `path_type` for each other, with a session, and pings cross both
/// ways; returns their entries.
fn assert_path(mesh: &NatMesh, coturn: &Coturn, path_type: &str) -> [Value; 2] {
    let entries = [0, 1].map(|i| {
        entry_when(mesh, coturn, i, &format!("site{i} on {path_type}"), |e| {
            e["established"] == true && e["path_type"] == path_type
        })
    });
    assert!(mesh.ping(0, 3), "site0 -> site1\n{}", logs(mesh, coturn));
    assert!(mesh.ping(1, 3), "site1 -> site0\n{}", logs(mesh, coturn));
    // Still there after the pings: nothing moved it.
    for (i, before) in entries.iter().enumerate() {
        let status = mesh.nodes[i].status().unwrap();
        let now = peer_entry(&status, NAMES[1 - i]).unwrap();
        assert_eq!(
            now["path_type"],
            path_type,
            "{status}\n{}",
            logs(mesh, coturn)
        );
        assert_eq!(before["path_type"], path_type);
    }
    entries
}

/// A node on TURN sends either to the peer's relayed address (on coturn's IP) or, when
/// the peer reached it through its own allocation, back through that allocation.
fn assert_turn_endpoint(entry: &Value, coturn: &Coturn, mesh: &NatMesh) {
    let endpoint: std::net::SocketAddr = entry["endpoint"].as_str().unwrap().parse().unwrap();
    match entry["endpoint_kind"].as_str() {
        Some("relay") => assert_eq!(endpoint.ip(), coturn.addr.ip(), "{entry}"),
        Some("turn-peer") => {
            let routers = [0, 1].map(|s| std::net::IpAddr::V4(mesh.lab.router_ip(s)));
            assert!(routers.contains(&endpoint.ip()), "{entry}");
        }
        other => panic!("endpoint kind {other:?} on TURN: {entry}"),
    }
}

#[test]
fn symmetric_nat_on_one_side_runs_through_turn() {
    let Some(_machine) = can_run() else {
        return;
    };
    let (mesh, coturn) = start([Nat::Symmetric, Nat::Cone]);
    #[allow(clippy::disallowed_methods)] // a test's stopwatch, reported, not asserted
    let started = std::time::Instant::now();
    let entries = assert_path(&mesh, &coturn, "turn");
    eprintln!(
        "both on TURN {:?} after the daemons started",
        started.elapsed()
    );
    for (i, entry) in entries.iter().enumerate() {
        eprintln!(
            "site{i} sends to {} ({})",
            entry["endpoint"], entry["endpoint_kind"]
        );
        assert_turn_endpoint(entry, &coturn, &mesh);
    }
    // Each node published its relayed address on coturn to the hub.
    for i in 0..2 {
        let status = mesh.nodes[i].status().unwrap();
        let published = status["hub"]["candidates"].to_string();
        assert!(
            published.contains(&coturn.addr.ip().to_string()),
            "site{i} publishes no relay address: {status}"
        );
    }
}

#[test]
fn symmetric_nat_on_both_sides_runs_through_turn() {
    let Some(_machine) = can_run() else {
        return;
    };
    let (mesh, coturn) = start([Nat::Symmetric, Nat::Symmetric]);
    let entries = assert_path(&mesh, &coturn, "turn");
    for (i, entry) in entries.iter().enumerate() {
        eprintln!(
            "site{i} sends to {} ({})",
            entry["endpoint"], entry["endpoint_kind"]
        );
        assert_turn_endpoint(entry, &coturn, &mesh);
    }
    assert!(
        mesh.lab.unsolicited_dropped(0) + mesh.lab.unsolicited_dropped(1) > 0,
        "the routers refused the direct attempts"
    );
}

#[test]
fn cone_nat_on_both_sides_stays_direct_with_turn_available() {
    let Some(_machine) = can_run() else {
        return;
    };
    let (mesh, coturn) = start([Nat::Cone, Nat::Cone]);
    // TURN is there: both nodes hold an allocation and publish it.
    for i in 0..2 {
        wait_for(LIMIT, "a relay candidate", || {
            let status = mesh.nodes[i].status()?;
            status["hub"]["candidates"]
                .to_string()
                .contains(&coturn.addr.ip().to_string())
                .then_some(())
        });
    }
    let entries = assert_path(&mesh, &coturn, "direct");
    for (i, entry) in entries.iter().enumerate() {
        let want = format!("{}:", mesh.lab.router_ip(1 - i));
        assert!(
            entry["endpoint"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&want),
            "{entry}"
        );
    }
    // And it stays direct past TURN's detection time.
    assert!(mesh.ping(0, 5), "{}", logs(&mesh, &coturn));
    let status = mesh.nodes[0].status().unwrap();
    assert_eq!(
        peer_entry(&status, NAMES[1]).unwrap()["path_type"],
        "direct"
    );
}
