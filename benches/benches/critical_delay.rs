//! The scheduler's share of a critical packet's queueing delay while the bulk lane is full.
//!
//! - `lanes_bulk_full`: 4096 full-size packets fill the bulk lane; one ICMP echo is
//!   enqueued and dequeued. It must be the very next packet out, so the figure is one
//!   enqueue + one dequeue whatever bulk holds.
//! - `fifo_behind_4095`: the same ICMP echo forced into the bulk lane behind 4095 packets
//!   (a single FIFO queue): the time to dequeue everything in front of it and then it.
//!
//! Both are CPU time in the scheduler only. On a real link the FIFO packet also waits for
//! every packet ahead of it to be serialised; the `critical_delay_sim` example gives that
//! figure on the simulator's virtual clock.
//!
//! `cargo bench -p bauxite-benches --bench critical_delay -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bauxite_benches::{PACKET_LEN, bulk_tcp, icmp_echo};
use bauxite_conduit::Lane;
use bauxite_conduit::scheduler::{BULK_CAPACITY, DataPlaneScheduler, Enqueue};
use criterion::{Criterion, criterion_group, criterion_main};

fn lanes_bulk_full(c: &mut Criterion) {
    let mut sched = DataPlaneScheduler::new();
    for _ in 0..BULK_CAPACITY {
        assert_eq!(
            sched.enqueue(bulk_tcp(PACKET_LEN)),
            Enqueue::Queued(Lane::Bulk)
        );
    }
    assert_eq!(sched.len(Lane::Bulk), BULK_CAPACITY);
    let mut icmp = Some(icmp_echo(84, 1));
    c.bench_function("critical_delay/lanes_bulk_full", |b| {
        b.iter(|| {
            let packet = icmp.take().unwrap();
            assert_eq!(sched.enqueue(packet), Enqueue::Queued(Lane::Critical));
            let (lane, packet) = sched.dequeue().unwrap();
            assert_eq!(lane, Lane::Critical);
            icmp = Some(black_box(packet));
        });
    });
    assert_eq!(sched.len(Lane::Bulk), BULK_CAPACITY, "bulk stayed full");
}

fn fifo_behind_4095(c: &mut Criterion) {
    let mut sched = DataPlaneScheduler::new();
    let mut bulk: Vec<Vec<u8>> = (0..BULK_CAPACITY - 1)
        .map(|_| bulk_tcp(PACKET_LEN))
        .collect();
    let mut icmp = Some(icmp_echo(84, 1));
    c.bench_function("critical_delay/fifo_behind_4095", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: refill the single queue from recycled buffers.
                while let Some(packet) = bulk.pop() {
                    assert!(sched.enqueue_in(Lane::Bulk, packet).is_queued());
                }
                let packet = icmp.take().unwrap();
                assert!(sched.enqueue_in(Lane::Bulk, packet).is_queued());
                let start = Instant::now();
                let mut ahead = 0usize;
                loop {
                    let (_, packet) = sched.dequeue().unwrap();
                    if packet.len() == 84 {
                        icmp = Some(packet);
                        break;
                    }
                    ahead += 1;
                    bulk.push(packet);
                }
                total += start.elapsed();
                assert_eq!(black_box(ahead), BULK_CAPACITY - 1);
            }
            total
        });
    });
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = lanes_bulk_full, fifo_behind_4095
}
criterion_main!(benches);
