//! The fleet load at test scale: 200 simulated nodes (real gRPC clients over mTLS) spread
//! over three `serve --postgres` replicas on one real PostgreSQL, topology changes and
//! signals across replicas, and one replica killed (SIGKILL) while it acknowledges joins,
//! tokens and policies. The 10 000-node run is `dispatch/examples/replica_bench.rs`
//! (docs/benchmarks.md, "Hub").

use std::path::Path;
use std::time::Duration;

use crate::common::BIN;
use crate::fleet_support::{Fleet, FleetConfig};

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_moves_its_nodes_within_seconds_and_loses_nothing_acknowledged() {
    let Some(mut fleet) = Fleet::start_with(Path::new(BIN), 3, true).await else {
        return;
    };
    let config = FleetConfig {
        nodes: 200,
        signal_pairs: 40,
        join_concurrency: 8,
        rounds: 2,
        kill: true,
        connect_limit: std::time::Duration::from_secs(600),
    };
    let report = fleet.run(&config).await;
    eprintln!("{report}");
    assert_eq!(report.join.count, 200);
    assert!(report.fanout.iter().all(|r| r.count == 200), "{report}");
    assert_eq!(report.signaling.count, 80, "every signal crossed: {report}");
    // Replica 0's nodes (one in three) all came back, each within seconds (those a
    // survivor served already, after an earlier failover, need not).
    assert_eq!(report.reconnect.count + report.away, 67, "{report}");
    assert!(report.reconnect.count > 0, "{report}");
    // ... spread over both survivors (each node's order is rotated by its random ID: a
    // survivor with under a sixth of them is a one-in-10^8 draw, not bad luck).
    assert_eq!(report.orphans_on[0], 0, "{report}");
    assert!(
        report.orphans_on[1..]
            .iter()
            .all(|&n| n >= report.reconnect.count / 6),
        "the dead replica's nodes did not spread: {report}"
    );
    // ... each with one delta from the version it held (the survivors number versions as
    // replica 0 did, and hold the same peers under them), not the whole topology again.
    assert_eq!(report.resumed, report.reconnect.count, "{report}");
    assert!(
        report.reconnect.max < Duration::from_secs(15),
        "a node took {:?} to reach a survivor",
        report.reconnect.max
    );
    assert_eq!(
        report.fanout_after_kill.map(|s| s.count),
        Some(200),
        "the survivors serve every node"
    );
    // The kill happened with acknowledged writes behind it, and none is missing.
    assert!(
        report.acked_joins > 0 && report.acked_policies > 0,
        "{report}"
    );
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert!(report.audit_ok, "the survivors' audit chain verifies");
    // Each replica's own figures come from /proc while it ran.
    assert!(report.usage.iter().all(|u| u.rss_mb > 0.0), "{report}");
}
