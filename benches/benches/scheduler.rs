//! The three-lane `DataPlaneScheduler`: enqueue + dequeue of a mixed stream with recycled
//! buffers (nothing is allocated inside the timed loop), and the `classify` function alone.
//!
//! `cargo bench -p bauxite-benches --bench scheduler -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;

use bauxite_benches::{PACKET_LEN, bulk_tcp, icmp_echo, telemetry_udp};
use bauxite_conduit::Lane;
use bauxite_conduit::scheduler::{DataPlaneScheduler, Enqueue, classify};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Packets per timed batch.
const BATCH: usize = 64;

/// A batch like a robot's uplink: per 16 packets, 1 ICMP (critical), 3 telemetry and 12
/// full-size bulk packets.
fn mixed_batch() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| match i % 16 {
            0 => icmp_echo(84, i as u16),
            1..=3 => telemetry_udp(300),
            _ => bulk_tcp(PACKET_LEN),
        })
        .collect()
}

fn enqueue_dequeue(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut sched = DataPlaneScheduler::new();
    let mut pool = mixed_batch();
    pool.reserve(BATCH);
    let mut lanes = [0u64; 3];
    group.bench_function("enqueue_dequeue_mixed_64", |b| {
        b.iter(|| {
            while let Some(packet) = pool.pop() {
                let outcome = sched.enqueue(packet);
                assert!(matches!(outcome, Enqueue::Queued(_)));
            }
            while let Some((lane, packet)) = sched.dequeue() {
                lanes[lane.index()] += 1;
                pool.push(packet);
            }
        });
    });
    group.finish();
    // The mix really reached all three lanes in the stated ratio.
    assert_eq!(
        lanes[Lane::Critical.index()] * 3,
        lanes[Lane::Telemetry.index()]
    );
    assert_eq!(
        lanes[Lane::Critical.index()] * 12,
        lanes[Lane::Bulk.index()]
    );
}

fn classify_packets(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("bulk_tcp_1350", bulk_tcp(PACKET_LEN), Lane::Bulk),
        ("telemetry_udp_300", telemetry_udp(300), Lane::Telemetry),
        ("icmp_echo_1350", icmp_echo(PACKET_LEN, 1), Lane::Critical),
        ("small_64", bulk_tcp(64), Lane::Critical),
    ];
    for (name, packet, lane) in cases {
        assert_eq!(classify(&packet), lane, "{name}");
        group.bench_function(name, |b| b.iter(|| classify(black_box(&packet))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = enqueue_dequeue, classify_packets
}
criterion_main!(benches);
