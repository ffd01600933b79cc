//! What one topology change and one new delta stream cost the hub at N peers, the way the
//! hub did it before `hub/view.rs` and the way it does it now, measured in this process
//! (heap bytes from a counting allocator, time from the clock):
//!
//! - **per change, before**: a full snapshot of N peers built (here: cloned, a lower
//!   bound of building it from the node records) and diffed against the previous one
//!   (`topology::delta`), under the writers lock, on every replica, for every change;
//! - **per change, now**: [`TopologyView::update`] with the one node the change touched;
//! - **per new delta stream, before**: its whole first topology cut into pages up front
//!   (`topology::pages`) and held until the last page was sent;
//! - **per new delta stream, now**: one page ([`TopologyView::page`]) at a time.
//!
//! ```sh
//! cargo run --release -p bauxite-dispatch --example topology_cost -- 10000
//! ```
// A benchmark shell: reads the clock and panics on a broken fixture.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]
// The counting allocator is the one unsafe part: it forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bauxite_conduit::PeerId;
use bauxite_dispatch::hub::view::TopologyView;
use bauxite_dispatch_api::proto::node::Peer;
use bauxite_dispatch_api::topology;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, as the caller promised.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn id(i: u32) -> PeerId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    bytes[4..].fill(0x5a);
    PeerId(bytes)
}

/// A peer as the hub lists a simulated node: keys, address, endpoint, two candidates.
fn peer(i: u32, port: u16) -> Peer {
    Peer {
        node_id: id(i).to_string(),
        name: format!("sim-{i}"),
        virtual_ip: format!("100.64.{}.{}", i / 250, i % 250 + 1),
        x25519_public: vec![7; 32],
        ed25519_public: vec![9; 32],
        endpoint: format!("127.0.0.1:{port}"),
        candidates: vec!["10.0.0.1:51820".into(), "192.168.1.2:51820".into()],
        candidate_kinds: vec![0, 0],
        ..Peer::default()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().unwrap());
    let view = TopologyView::new(1, (0..n).map(|i| (id(i), peer(i, 1000))));
    let full = view.snapshot();

    // Per change, before: rebuild the snapshot, diff it against the last one.
    let mut before = Vec::new();
    let mut last = (*full).clone();
    for round in 0..20u16 {
        let start = Instant::now();
        let mut next = last.clone();
        next.version += 1;
        next.peers[usize::from(round)].endpoint = format!("127.0.0.1:{}", 2000 + round);
        let delta = topology::delta(&last, &next);
        before.push(start.elapsed());
        assert_eq!(delta.peers.len(), 1);
        last = next;
    }

    // Per change, now: the touched node only.
    let mut now = Vec::new();
    let mut current = view;
    for round in 0..200u32 {
        let touched = round % n;
        let start = Instant::now();
        let (next, delta) = current.update(
            current.version() + 1,
            [(id(touched), Some(peer(touched, 3000 + round as u16)))],
        );
        now.push(start.elapsed());
        assert_eq!(delta.peers.len(), 1);
        current = next;
    }

    // Per new delta stream, before: every page built up front.
    let base = live();
    let pages = topology::pages(&full, topology::PAGE_PEERS);
    let held_before = live() - base;
    let count = pages.len();
    drop(pages);

    // Per new delta stream, now: the largest single page while it is being sent.
    let mut held_now = 0;
    let mut after = None;
    for _ in 0..=count {
        let base = live();
        let (page, next) = current.page(after, topology::PAGE_PEERS);
        held_now = held_now.max(live() - base);
        drop(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    println!("{n} peers, {count} pages of {} peers", topology::PAGE_PEERS);
    println!(
        "per change: rebuild + diff {:.2} ms (median of 20); update of the touched node {:.1} us (median of 200)",
        median(before).as_secs_f64() * 1e3,
        median(now).as_secs_f64() * 1e6
    );
    println!(
        "per new delta stream: {:.2} MB held for its first topology before; {:.1} KB (one page) now",
        held_before as f64 / 1e6,
        held_now as f64 / 1e3
    );
}
