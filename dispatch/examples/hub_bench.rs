//! Hub benchmark: join latency, and how long a topology change takes to reach N nodes
//! that hold open topology streams, each over its own mTLS connection on 127.0.0.1.
//!
//! `cargo run --release -p bauxite-dispatch --example hub_bench -- [N]` (default 100).
//! The hub runs in this process (real TLS, real gRPC, redb on a temp dir); the N clients
//! share the same two cores, so the figures are an upper bound for a dedicated hub.
//!
//! `... -- N --hub https://ADDR --token TOKEN` drives a separately running
//! `bauxite-dispatch serve` instead (token from `token create --uses N`), so the hub's
//! own memory can be read from its `/proc/PID/status` while the N clients stay connected.
//!
//! Clients ask for topology deltas, as `bauxite run` does; `--full` makes them ask for
//! full snapshots (the behaviour before deltas), for comparison. The first client applies
//! every delta to its snapshot; the others only
//! check that each delta applies to the version they hold, so the generator's memory
//! stays O(N) rather than N snapshots of N peers. Each node holds a socket here and one
//! in the hub: mind the descriptor limit (`ulimit -n`), and use `--hub` above ~9000 nodes.
// A benchmark shell: reads the clock and panics on a broken fixture.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bauxite_conduit::identity::Identity;
use bauxite_dispatch::clock::{UnixTime, os_random};
use bauxite_dispatch::hub::{Caller, NewToken};
use bauxite_dispatch::server::{BoundHub, ServeConfig};
use bauxite_dispatch_api::client::{HubClient, join};
use bauxite_dispatch_api::proto::node::{SetEndpointRequest, TopologyRequest, TopologySnapshot};
use bauxite_dispatch_api::token::JoinToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|a| a.parse().unwrap()).unwrap_or(100);
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let dir = tempfile::tempdir().unwrap();
    let (addr, token) = match (flag("--hub"), flag("--token")) {
        (Some(addr), Some(token)) => (addr, JoinToken::parse(&token).unwrap()),
        _ => in_process_hub(&dir, n).await,
    };

    let mut joins = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let identity = Identity::generate_os().unwrap();
        let start = Instant::now();
        let joined = join(&token, &addr, &identity, &format!("sim-{i}"))
            .await
            .unwrap();
        joins.push(start.elapsed());
        let client = HubClient::connect_mtls(&addr, &joined.credentials)
            .await
            .unwrap();
        // The second phase of provisioning, on the node's own mTLS connection.
        client
            .provisioning()
            .confirm_provision(bauxite_dispatch_api::proto::node::ConfirmProvisionRequest {})
            .await
            .unwrap();
        clients.push(client);
    }
    joins.sort();
    println!(
        "join latency over {n} joins (TLS first contact + proof + cert issue + fsync'd commit):"
    );
    println!(
        "  p50 {}  p99 {}  max {}",
        ms(percentile(&joins, 0.5)),
        ms(percentile(&joins, 0.99)),
        ms(joins[n - 1])
    );

    let deltas = !args.iter().any(|a| a == "--full");
    let mut feeds = Vec::with_capacity(n);
    let mut version = 0;
    for client in &clients {
        let mut feed = client
            .topology()
            .stream_topology(TopologyRequest {
                deltas,
                ..TopologyRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        // A large first topology comes in pages: read all of it.
        let mut first = feed.message().await.unwrap().unwrap();
        while first.more {
            let page = feed.message().await.unwrap().unwrap();
            let more = page.more;
            bauxite_dispatch_api::topology::apply(&mut first, page).unwrap();
            first.more = more;
        }
        version = version.max(first.version);
        // One client keeps the whole topology; the rest keep its version.
        let keep = feeds.is_empty();
        let held = if keep {
            first
        } else {
            TopologySnapshot {
                version: first.version,
                ..TopologySnapshot::default()
            }
        };
        feeds.push((feed, held, keep));
    }

    for round in 0..5 {
        let start = Instant::now();
        let endpoint = format!("192.0.2.1:{}", 5000 + round);
        clients[0]
            .topology()
            .set_endpoint(SetEndpointRequest {
                endpoint,
                ..SetEndpointRequest::default()
            })
            .await
            .unwrap();
        let mut tasks = Vec::with_capacity(n);
        for (mut feed, mut held, keep) in feeds.drain(..) {
            tasks.push(tokio::spawn(async move {
                loop {
                    let mut update = feed.message().await.unwrap().unwrap();
                    if !keep {
                        // Still checks the delta's base against the version held.
                        update.peers.clear();
                        update.removed.clear();
                    }
                    bauxite_dispatch_api::topology::apply(&mut held, update).unwrap();
                    if held.version > version + round {
                        return ((feed, held, keep), start.elapsed());
                    }
                }
            }));
        }
        let mut arrivals = Vec::with_capacity(n);
        for task in tasks {
            let (feed, at) = task.await.unwrap();
            feeds.push(feed);
            arrivals.push(at);
        }
        arrivals.sort();
        println!(
            "topology change -> {n} streams ({}): first {}  p50 {}  last {}",
            if deltas {
                "deltas"
            } else {
                "full snapshots of all peers"
            },
            ms(arrivals[0]),
            ms(percentile(&arrivals, 0.5)),
            ms(arrivals[n - 1])
        );
    }
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!("this process ({n} clients, plus the hub unless --hub) {rss}");
    if flag("--hub").is_some() {
        // Keep the clients connected while the operator reads the hub's memory.
        println!("clients connected; press Ctrl-C to end");
        tokio::signal::ctrl_c().await.unwrap();
    }
}

/// Starts a hub in this process and makes a token good for `n` joins.
async fn in_process_hub(dir: &tempfile::TempDir, n: usize) -> (String, JoinToken) {
    let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("hub"));
    let bound = BoundHub::bind(&config).await.unwrap();
    let hub = bound.hub();
    let addr = format!("https://{}", bound.addr().unwrap());
    tokio::spawn(bound.run(std::future::pending()));

    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    let mut id = [0u8; 8];
    os_random(secret.as_mut()).unwrap();
    os_random(&mut id).unwrap();
    let new = NewToken {
        ttl_secs: 3600,
        uses: u32::try_from(n).unwrap(),
        name: "bench".into(),
        id,
        secret,
    };
    let (token, _) = hub
        .create_token(UnixTime::now(), Caller::Admin, new)
        .unwrap();
    (addr, token)
}
