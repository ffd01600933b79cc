//! What one acknowledgement costs the bulk controller: `auto` (the default: both the
//! adaptive window and the rate model take every ack, then the peer reports to the node's
//! `AutoGroup` under its mutex) against `adaptive` and `rate` alone, for one peer and for
//! 64 peers of one node (the acks come from each peer in turn, as a busy node's do). Each
//! path is either quiet (a constant round trip: `auto` runs on the rate model) or jittery
//! (up to 10 ms: `auto` stays on the adaptive window). An uncontended `Mutex` lock and
//! unlock is the reference for what the group's lock alone costs.
//!
//! `cargo bench -p bauxite-benches --bench bulk_ack -- --noplot`
//!
//! Only the acks are timed: the sends that put the acknowledged bytes in flight run
//! between timed batches of at most 64 acks. Controllers are boxed `dyn
//! CongestionStrategy`, as `PeerCongestion` holds them.

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bauxite_conduit::node::DEFAULT_BULK_TARGET;
use bauxite_conduit::path::auto::Mode;
use bauxite_conduit::path::{
    AdaptiveConfig, AdaptiveLedbat, AutoBulk, AutoConfig, AutoGroup, CongestionStrategy, Feedback,
    RateBulk, RateConfig,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MSS: usize = 1350;
/// Most acks timed in one go (and packets in flight per batch).
const BATCH: u64 = 64;
/// Virtual time between two packets sent, and between two acks.
const GAP: Duration = Duration::from_micros(10);
/// Virtual time run before anything is timed: past `auto`'s second of quiet.
const WARM: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Adaptive,
    Rate,
    Auto,
}

#[derive(Clone, Copy, Debug)]
enum PathShape {
    /// 4 ms round trip, 10 µs of wobble.
    Quiet,
    /// 4 to 14 ms, a new value every ack.
    Jittery,
}

impl PathShape {
    fn round_trip(self, i: u64) -> Duration {
        match self {
            PathShape::Quiet => Duration::from_micros(4_000 + (i % 2) * 10),
            PathShape::Jittery => Duration::from_micros(4_000 + (i * 3_733) % 10_000),
        }
    }
}

/// One node's bulk controllers and a virtual clock that only moves forward.
struct Node {
    peers: Vec<Box<dyn CongestionStrategy + Send>>,
    group: Option<AutoGroup>,
    shape: PathShape,
    now: Instant,
    /// Packets sent so far (picks the next peer and the next round trip).
    count: u64,
    /// Acks waiting for the timed half of the batch.
    acks: Vec<(usize, Instant, Feedback)>,
}

impl Node {
    fn new(kind: Kind, peers: usize, shape: PathShape) -> Self {
        let floor = DEFAULT_BULK_TARGET;
        let group = matches!(kind, Kind::Auto).then(AutoGroup::new);
        let peers = (0..peers)
            .map(|_| -> Box<dyn CongestionStrategy + Send> {
                match (kind, &group) {
                    (Kind::Adaptive, _) => Box::new(AdaptiveLedbat::new(AdaptiveConfig {
                        min_target: floor,
                        mss: MSS,
                        ..AdaptiveConfig::default()
                    })),
                    (Kind::Rate, _) => Box::new(RateBulk::new(RateConfig {
                        min_target: floor,
                        mss: MSS,
                        ..RateConfig::default()
                    })),
                    (Kind::Auto, Some(group)) => Box::new(AutoBulk::in_group(
                        AutoConfig::with_floor(floor, MSS),
                        group,
                    )),
                    (Kind::Auto, None) => unreachable!("auto has a group"),
                }
            })
            .collect();
        Self {
            peers,
            group,
            shape,
            now: Instant::now(),
            count: 0,
            acks: Vec::with_capacity(BATCH as usize),
        }
    }

    /// Sends `n` bulk packets (peers in turn) and books their acks.
    fn send(&mut self, n: u64) {
        let start = self.now;
        let mut last = start;
        for k in 0..n {
            let i = self.count;
            self.count += 1;
            let peer = (i % self.peers.len() as u64) as usize;
            let sent = start + GAP * k as u32;
            self.peers[peer].on_sent(sent, MSS);
            let rtt = self.shape.round_trip(i);
            // Acks arrive in order (the path never reorders them).
            last = last.max(sent + rtt);
            let feedback = Feedback {
                bytes: MSS,
                round_trip: rtt,
                one_way: Some(rtt / 2),
                bulk: true,
            };
            self.acks.push((peer, last, feedback));
        }
    }

    /// Delivers the booked acks.
    fn ack(&mut self) {
        for &(peer, at, feedback) in &self.acks {
            self.peers[peer].on_feedback(at, black_box(feedback));
        }
        if let Some(&(_, at, _)) = self.acks.last() {
            self.now = at + GAP;
        }
        self.acks.clear();
    }

    fn run(&mut self, length: Duration) {
        let end = self.now + length;
        while self.now < end {
            self.send(BATCH);
            self.ack();
        }
    }

    /// `auto`'s mode now (`None` for the others).
    fn mode(&self) -> Option<Mode> {
        self.group.as_ref().map(AutoGroup::mode)
    }
}

fn per_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulk_ack");
    group.throughput(Throughput::Elements(1));
    for shape in [PathShape::Quiet, PathShape::Jittery] {
        for peers in [1, 64] {
            for kind in [Kind::Adaptive, Kind::Rate, Kind::Auto] {
                let mut node = Node::new(kind, peers, shape);
                node.run(WARM);
                let mode = node.mode();
                let want = match (kind, shape) {
                    (Kind::Auto, PathShape::Quiet) => Some(Mode::Rate),
                    (Kind::Auto, PathShape::Jittery) => Some(Mode::Adaptive),
                    _ => None,
                };
                assert_eq!(mode, want, "{kind:?} on a {shape:?} path");
                let name = format!("{kind:?}/{peers}_peers/{shape:?}").to_lowercase();
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        let mut timed = Duration::ZERO;
                        let mut done = 0;
                        while done < iters {
                            let n = BATCH.min(iters - done);
                            node.send(n);
                            let start = Instant::now();
                            node.ack();
                            timed += start.elapsed();
                            done += n;
                        }
                        timed
                    });
                });
                // Measuring did not move `auto` off the mode it was measured in.
                assert_eq!(node.mode(), want, "{kind:?} on a {shape:?} path");
            }
        }
    }
    // The floor under the group's report: taking and releasing a lock nobody else holds.
    let lock = Mutex::new(0u64);
    group.bench_function("reference/mutex_lock_unlock", |b| {
        b.iter(|| {
            let mut guard = lock.lock().unwrap();
            *guard = guard.wrapping_add(1);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = per_ack
}
criterion_main!(benches);
