//! The CPU cost of Critical-lane redundancy per packet: a 64-byte control-loop datagram
//! from node A's TUN to node B's, once (`off`), and with a copy on a second path
//! (`bonded`: `[node] bonding = "critical"`; `bonded_rule`: the same plus a policy rule
//! with `redundancy = "duplicate"`, whose per-packet rule check is included). With a copy,
//! one iteration is A's `handle_tun_packet` and two `poll_transmit`s (original, copy), and
//! B's `handle_datagram` for both (the copy is refused by the replay window before
//! decryption). The repeat on the same path (no second path) does the same work a few
//! milliseconds later. Wire cost: one more datagram of the same size per packet.
//!
//! `cargo bench -p bauxite-benches --bench redundancy -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bauxite_benches::{DST_IP, NodePair, SRC_IP};
use bauxite_conduit::ip::build;
use bauxite_conduit::node::{NodeConfig, Received, TunVerdict};
use bauxite_conduit::path::Bonding;
use bauxite_conduit::policy::Policy;
use bauxite_conduit::{Lane, PeerMisbehaved};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A control-loop datagram: 64 bytes of UDP payload.
const PAYLOAD: usize = 64;

fn control(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::new();
    build::ipv4_udp(src, dst, 40000, 9000, &[0x5a; PAYLOAD], &mut out);
    out
}

/// A connected pair; with `bonding`, node A has heard B at a second address (`second`),
/// so A's Critical packets get a copy there.
fn pair(bonding: Bonding, rule: bool, now: Instant, second: SocketAddr) -> NodePair {
    let config = NodeConfig {
        bulk_target: None,
        bonding,
        ..NodeConfig::default()
    };
    let mut pair = NodePair::connect(config, now).unwrap();
    if rule {
        let policy: Policy = serde_json::from_str(
            r#"{"rules": [{"protocol": "udp", "ports": 9000, "redundancy": "duplicate"}], "default": "allow"}"#,
        )
        .unwrap();
        pair.nodes[0].policy_mut().load(policy).unwrap();
    }
    if bonding != Bonding::Off {
        // B sends one packet that A receives from B's second address.
        let NodePair {
            nodes: [a, b], buf, ..
        } = &mut pair;
        b.handle_tun_packet_in(now, Lane::Critical, &control(DST_IP, SRC_IP));
        let t = b.poll_transmit(now, buf).unwrap();
        let received = a.handle_datagram(now, second, &mut buf[..t.len]);
        assert!(matches!(received, Received::Deliver(_)), "{received:?}");
        let status = a.peer_status(now);
        assert_eq!(
            status[0].secondary,
            Some(second),
            "A bonds B's second address"
        );
    }
    // A owes B an acknowledgement: carry it (and anything it causes) before measuring.
    for _ in 0..4 {
        pair.shuttle(now);
    }
    pair
}

fn redundancy(c: &mut Criterion) {
    let mut group = c.benchmark_group("critical_redundancy_64");
    group.throughput(Throughput::Elements(1));
    let packet = control(SRC_IP, DST_IP);
    let second: SocketAddr = "198.51.100.2:51820".parse().unwrap();
    for (name, bonding, rule) in [
        ("off", Bonding::Off, false),
        ("bonded", Bonding::Critical, false),
        ("bonded_rule", Bonding::Critical, true),
    ] {
        let now = Instant::now();
        let mut pair = pair(bonding, rule, now, second);
        let NodePair {
            nodes: [a, b],
            addrs,
            buf,
        } = &mut pair;
        let from = addrs[0];
        let copies = bonding != Bonding::Off;
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                let verdict = a.handle_tun_packet_in(now, Lane::Critical, &packet);
                assert_eq!(verdict, TunVerdict::Queued(Lane::Critical));
                let t = a.poll_transmit(now, buf).unwrap();
                match b.handle_datagram(now, from, &mut buf[..t.len]) {
                    Received::Deliver(range) => black_box(range),
                    other => panic!("not delivered: {other:?}"),
                };
                if copies {
                    let t = a.poll_transmit(now, buf).unwrap();
                    assert_eq!(t.dst, second, "the copy takes the second path");
                    match b.handle_datagram(now, from, &mut buf[..t.len]) {
                        Received::Dropped(bauxite_conduit::node::DropReason::Misbehaved(
                            PeerMisbehaved::Duplicate(c),
                        )) => black_box(c),
                        other => panic!("the copy was not dropped as a duplicate: {other:?}"),
                    };
                }
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = redundancy
}
criterion_main!(benches);
