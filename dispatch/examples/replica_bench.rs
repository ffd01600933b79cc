//! Fleet benchmark on PostgreSQL replicas: N simulated nodes (real gRPC clients over mTLS)
//! spread over R `bauxite-dispatch serve --postgres` processes on one throwaway PostgreSQL
//! cluster; join rate, a topology change reaching every node (p50/p99), a signal from a
//! node on one replica reaching a node on another (p50/p99), each replica's CPU and memory
//! (from /proc); then replica 0 is killed (SIGKILL) while it acknowledges joins, tokens
//! and policies, and the run reports how long its nodes took to be served by another
//! replica and whether anything acknowledged is missing.
//!
//! ```sh
//! cargo build --release -p bauxite-dispatch --bin bauxite-dispatch --example replica_bench
//! ulimit -n 65536
//! target/release/examples/replica_bench --nodes 10000 [--replicas 3] [--pairs 500]
//!     [--join-concurrency 32] [--rounds 3] [--no-kill] [--dispatch PATH]
//!     [--connect-limit SECS]   # for every node's first topology (600)
//! target/release/examples/replica_bench --nodes 10000 --redb    # one hub on redb, no kill
//! ```
//!
//! Needs Debian's `postgresql` (scripts/setup.sh). The same code runs at 200 nodes in the
//! test suite (`dispatch/tests/hub/fleet.rs`). Figures: docs/benchmarks.md, "Hub".
// A benchmark shell: reads the clock and panics on a broken fixture.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/fleet.rs"]
mod fleet;
#[path = "../tests/support/pg_cluster.rs"]
mod pg_cluster;

use std::path::PathBuf;

use fleet::{Fleet, FleetConfig};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let number = |name: &str, default: usize| flag(name).map_or(default, |v| v.parse().unwrap());
    let replicas = number("--replicas", 3);
    let config = FleetConfig {
        nodes: number("--nodes", 1000),
        signal_pairs: number("--pairs", 500),
        join_concurrency: number("--join-concurrency", 32),
        rounds: number("--rounds", 3),
        kill: !args.iter().any(|a| a == "--no-kill" || a == "--redb"),
        connect_limit: std::time::Duration::from_secs(number("--connect-limit", 600) as u64),
    };
    // Next to this example: target/<profile>/bauxite-dispatch.
    let bin = flag("--dispatch").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("bauxite-dispatch")
        },
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} not built (see the command above)",
        bin.display()
    );
    let redb = args.iter().any(|a| a == "--redb");
    let Some(mut fleet) = Fleet::start_with(&bin, replicas, !redb).await else {
        return;
    };
    println!("{config:?}");
    let report = fleet.run(&config).await;
    let generator = fleet::usage_of(std::process::id());
    println!("{report}");
    println!(
        "generator (this process, {} clients): RSS {:.0} MB (peak {:.0} MB)",
        config.nodes, generator.rss_mb, generator.hwm_mb
    );
}
