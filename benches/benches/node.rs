//! The whole userspace data-plane cost of one 1350-byte packet: node A's
//! `handle_tun_packet` (parse, route, policy, classify, enqueue), `poll_transmit`
//! (dequeue, seal) and node B's `handle_datagram` (parse, open, replay window,
//! anti-spoofing, policy). No link and no sockets: the datagram goes straight across.
//!
//! `cargo bench -p bauxite-benches --bench node -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use bauxite_benches::{NodePair, PACKET_LEN, bulk_udp};
use bauxite_conduit::Lane;
use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::node::{NodeConfig, Received, TunVerdict};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn tun_to_tun(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_tun_to_tun_1350");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let packet = bulk_udp(PACKET_LEN);
    for (suite, name) in [
        (CipherSuite::ChaCha20Poly1305, "chacha20poly1305"),
        (CipherSuite::Aes256Gcm, "aes256gcm"),
    ] {
        let now = Instant::now();
        // One-way traffic with no return path: acknowledgements never come back, so the
        // bulk window is off here; this measures the per-packet path alone.
        let config = NodeConfig {
            suite,
            bulk_target: None,
            ..NodeConfig::default()
        };
        let mut pair = NodePair::connect(config, now).unwrap();
        let NodePair {
            nodes: [a, b],
            addrs,
            buf,
        } = &mut pair;
        let from = addrs[0];
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                let verdict = a.handle_tun_packet(now, &packet);
                assert_eq!(verdict, TunVerdict::Queued(Lane::Bulk));
                let t = a.poll_transmit(now, buf).unwrap();
                match b.handle_datagram(now, from, &mut buf[..t.len]) {
                    Received::Deliver(range) => black_box(range),
                    other => panic!("not delivered: {other:?}"),
                }
            });
        });
        assert!(a.poll_transmit(now, buf).is_none(), "one out per one in");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = tun_to_tun
}
criterion_main!(benches);
