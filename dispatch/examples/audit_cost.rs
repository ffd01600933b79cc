//! What one `ShowAudit` page costs the hub at N audit entries, measured in this process:
//! the page (500 entries) cut from one snapshot with the whole chain verified, as the
//! admin RPC and the admin UI do for every page, against the verification alone and the
//! decoding of the whole log. The in-memory store: the database read is not counted.
//!
//! ```sh
//! cargo run --release -p bauxite-dispatch --example audit_cost -- 20000
//! ```
// A benchmark shell: reads the clock and panics on a broken fixture.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bauxite_dispatch::audit::page;
use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch::hub::{Caller, Hub};
use bauxite_dispatch::ipam::MeshCidr;
use bauxite_dispatch::pki::HubCa;
use bauxite_dispatch::store::MemoryStore;

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().unwrap());
    let t0 = UnixTime(1_780_000_000);
    let hub = Hub::open(
        Box::new(MemoryStore::new()),
        HubCa::generate(t0).unwrap(),
        MeshCidr::default(),
        t0,
    )
    .unwrap();
    // Details as long as a node.provision entry's (node ID, address, name, token).
    for i in 0..n {
        let detail = format!(
            "node {i:032x} (\"robot-{i}\") provisioned at 100.64.{}.{} with token 5f3a9c0e1d2b4a68, confirm by 2026-11-30T15:00:00Z",
            i / 250,
            i % 250
        );
        hub.audit_event(t0, Caller::Admin, "node.provision", detail)
            .unwrap();
    }
    let total = n + 1; // hub.start
    let newest = median(21, || {
        let read = hub
            .audit_page(|keys| page::backward(keys, None, page::DEFAULT_LIMIT))
            .unwrap();
        assert!(read.verified.is_ok() && read.total == total);
    });
    let first = median(21, || {
        let read = hub
            .audit_page(|keys| page::forward(keys, None, page::DEFAULT_LIMIT))
            .unwrap();
        assert_eq!(read.entries.len(), page::DEFAULT_LIMIT);
    });
    let verify = median(21, || {
        assert!(hub.verify_audit().unwrap().1.is_ok());
    });
    let decode = median(21, || {
        assert_eq!(hub.audit_entries().unwrap().len() as u64, total);
    });
    println!("{total} audit entries, medians of 21:");
    println!(
        "  one page of {} with the whole chain verified: newest {newest:.2?}, first {first:.2?}",
        page::DEFAULT_LIMIT
    );
    println!(
        "  verification alone: {verify:.2?}; every entry decoded (no verification): {decode:.2?}"
    );
}
