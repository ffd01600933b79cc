use std::collections::VecDeque;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::ip::build;

/// A packet of `len` bytes (at least 4) carrying `id` in its first four bytes.
fn tagged(id: u32, len: usize) -> Vec<u8> {
    let mut packet = vec![0u8; len.max(4)];
    packet[..4].copy_from_slice(&id.to_be_bytes());
    packet
}

fn id_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]])
}

fn capacity(lane: Lane) -> usize {
    DataPlaneScheduler::capacity(lane)
}

#[test]
fn room_counts_down_to_zero_before_any_drop() {
    assert_eq!(
        Lane::ALL.map(DataPlaneScheduler::capacity),
        [CRITICAL_CAPACITY, TELEMETRY_CAPACITY, BULK_CAPACITY]
    );
    let mut sched = DataPlaneScheduler::new();
    for lane in Lane::ALL {
        let mut id = 0;
        while sched.room(lane) > 0 {
            assert_eq!(sched.room(lane), capacity(lane) - id as usize);
            assert_eq!(sched.enqueue_in(lane, tagged(id, 8)), Enqueue::Queued(lane));
            id += 1;
        }
        assert_eq!(id as usize, capacity(lane));
        assert_eq!(
            sched.stats(lane).dropped,
            0,
            "filling to room 0 loses nothing"
        );
    }
    sched.dequeue();
    assert_eq!(sched.room(Lane::Critical), 1);
}

#[test]
fn enqueue_classifies_into_lanes() {
    let (a, b) = (Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2));
    let mut sched = DataPlaneScheduler::new();
    let mut pkt = Vec::new();
    build::ipv4_icmp_echo(a, b, 1, 1, &[0; 500], &mut pkt);
    assert_eq!(sched.enqueue(pkt.clone()), Enqueue::Queued(Lane::Critical));
    build::ipv4_udp(a, b, 9, TELEMETRY_PORT, &[0; 500], &mut pkt);
    assert_eq!(sched.enqueue(pkt.clone()), Enqueue::Queued(Lane::Telemetry));
    build::ipv4_tcp(a, b, 9, 443, &[0; 500], &mut pkt);
    assert_eq!(sched.enqueue(pkt.clone()), Enqueue::Queued(Lane::Bulk));
    assert_eq!(sched.bulk_bytes_queued(), pkt.len());
    assert_eq!(Lane::ALL.map(|l| sched.len(l)), [1, 1, 1]);
}

#[test]
fn critical_overflow_evicts_the_oldest() {
    let mut sched = DataPlaneScheduler::new();
    for id in 0..CRITICAL_CAPACITY as u32 {
        assert!(matches!(
            sched.enqueue_in(Lane::Critical, tagged(id, 8)),
            Enqueue::Queued(_)
        ));
    }
    let outcome = sched.enqueue_in(Lane::Critical, tagged(9999, 8));
    assert!(outcome.is_queued());
    assert_eq!(id_of(&outcome.into_spare().unwrap()), 0, "oldest evicted");
    assert_eq!(sched.len(Lane::Critical), CRITICAL_CAPACITY);
    assert_eq!(id_of(&sched.dequeue().unwrap().1), 1);
    assert_eq!(sched.stats(Lane::Critical).dropped, 1);
}

#[test]
fn telemetry_and_bulk_overflow_refuse_the_new_packet() {
    let mut sched = DataPlaneScheduler::new();
    for lane in [Lane::Telemetry, Lane::Bulk] {
        for id in 0..capacity(lane) as u32 {
            assert!(sched.enqueue_in(lane, tagged(id, 8)).is_queued());
        }
        let outcome = sched.enqueue_in(lane, tagged(7777, 8));
        assert!(!outcome.is_queued());
        assert_eq!(outcome.lane(), lane);
        assert_eq!(
            id_of(&outcome.into_spare().unwrap()),
            7777,
            "new packet refused"
        );
        assert_eq!(sched.len(lane), capacity(lane));
    }
}

#[test]
fn critical_preempts_and_bulk_pacing_never_blocks_others() {
    let mut sched = DataPlaneScheduler::new();
    let _ = sched.enqueue_in(Lane::Bulk, tagged(1, 1000));
    let _ = sched.enqueue_in(Lane::Telemetry, tagged(2, 1000));
    let _ = sched.enqueue_in(Lane::Critical, tagged(3, 10));
    assert_eq!(sched.peek_lane(), Some(Lane::Critical));
    assert_eq!(
        sched.dequeue_paced(|_, _| false).map(|(l, _)| l),
        Some(Lane::Critical)
    );
    // Whatever DRR prefers, a throttled bulk lane yields to telemetry.
    assert_eq!(
        sched.dequeue_paced(|_, _| false).map(|(l, _)| l),
        Some(Lane::Telemetry)
    );
    assert_eq!(
        sched.dequeue_paced(|_, _| false),
        None,
        "only throttled bulk left"
    );
    assert_eq!(sched.len(Lane::Bulk), 1);
    assert_eq!(
        sched.dequeue_paced(|_, len| len == 1000).map(|(l, _)| l),
        Some(Lane::Bulk)
    );
    assert!(sched.is_empty());
}

#[test]
fn publish_adds_only_new_counts() {
    let metrics = Metrics::default();
    let mut sched = DataPlaneScheduler::new();
    let _ = sched.enqueue_in(Lane::Bulk, tagged(1, 10));
    sched.publish(&metrics);
    let _ = sched.dequeue();
    sched.publish(&metrics);
    sched.publish(&metrics);
    assert_eq!(Metrics::get(&metrics.lane_enqueued[Lane::Bulk.index()]), 1);
    assert_eq!(Metrics::get(&metrics.lane_sent[Lane::Bulk.index()]), 1);
    assert_eq!(Metrics::get(&metrics.lane_dropped[Lane::Bulk.index()]), 0);
}

#[derive(Clone, Debug)]
enum Op {
    /// Enqueue `count` packets of `len` bytes into `lane`.
    Burst {
        lane: Lane,
        count: usize,
        len: usize,
    },
    /// Dequeue up to `count` packets, bulk throttled when `throttle_bulk`.
    Drain { count: usize, throttle_bulk: bool },
}

fn lane() -> impl Strategy<Value = Lane> {
    prop_oneof![
        Just(Lane::Critical),
        Just(Lane::Telemetry),
        Just(Lane::Bulk)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (lane(), 0usize..1300, 4usize..2000).prop_map(|(lane, count, len)| Op::Burst {
            lane,
            count,
            len
        }),
        (0usize..1500, any::<bool>()).prop_map(|(count, throttle_bulk)| Op::Drain {
            count,
            throttle_bulk
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Runs random bursts and drains against a model of three FIFO lanes and checks the
    /// module invariants after every step.
    #[test]
    fn lanes_behave_like_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        let mut sched = DataPlaneScheduler::new();
        let mut model: [VecDeque<u32>; 3] = Default::default();
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Burst { lane, count, len } => for _ in 0..count {
                    let outcome = sched.enqueue_in(lane, tagged(next_id, len));
                    let queue = &mut model[lane.index()];
                    if queue.len() < capacity(lane) {
                        prop_assert_eq!(&outcome, &Enqueue::Queued(lane));
                        queue.push_back(next_id);
                    } else if lane == Lane::Critical {
                        let oldest = queue.pop_front().unwrap();
                        queue.push_back(next_id);
                        prop_assert_eq!(id_of(&outcome.into_spare().unwrap()), oldest);
                    } else {
                        prop_assert_eq!(id_of(&outcome.into_spare().unwrap()), next_id);
                    }
                    next_id += 1;
                },
                Op::Drain { count, throttle_bulk } => for _ in 0..count {
                    let predicted = sched.peek_lane();
                    let critical_waiting = !model[Lane::Critical.index()].is_empty();
                    let Some((lane, packet)) = sched.dequeue_paced(|_, _| !throttle_bulk) else {
                        prop_assert!(model[0].is_empty() && model[1].is_empty());
                        prop_assert!(throttle_bulk || model[2].is_empty());
                        break;
                    };
                    if !throttle_bulk {
                        prop_assert_eq!(predicted, Some(lane));
                    }
                    if critical_waiting {
                        prop_assert_eq!(lane, Lane::Critical);
                    }
                    prop_assert!(!(throttle_bulk && lane == Lane::Bulk));
                    prop_assert_eq!(Some(id_of(&packet)), model[lane.index()].pop_front(), "FIFO");
                },
            }
            for lane in Lane::ALL {
                let stats = sched.stats(lane);
                let queued = sched.len(lane);
                prop_assert!(queued <= capacity(lane));
                prop_assert_eq!(queued, model[lane.index()].len());
                prop_assert_eq!(stats.enqueued, stats.sent + stats.dropped + queued as u64);
            }
        }
    }

    /// Critical overflow keeps exactly the newest `CRITICAL_CAPACITY` packets, in order.
    #[test]
    fn critical_keeps_the_newest(extra in 0usize..3000) {
        let mut sched = DataPlaneScheduler::new();
        let total = CRITICAL_CAPACITY + extra;
        for id in 0..total as u32 {
            let _ = sched.enqueue_in(Lane::Critical, tagged(id, 4));
        }
        let kept: Vec<u32> = std::iter::from_fn(|| sched.dequeue()).map(|(_, p)| id_of(&p)).collect();
        let expected: Vec<u32> = ((total - CRITICAL_CAPACITY) as u32..total as u32).collect();
        prop_assert_eq!(kept, expected);
    }

    /// Under a telemetry lane that never runs dry, a bulk packet still leaves after a
    /// bounded number of telemetry bytes: one quantum (plus one packet) per bulk turn.
    #[test]
    fn bulk_progresses_under_continuous_telemetry(
        telemetry_len in 1usize..=1500, bulk_len in 1usize..=9000, warmup in 0usize..50,
    ) {
        let mut sched = DataPlaneScheduler::new();
        for id in 0..64 {
            let _ = sched.enqueue_in(Lane::Telemetry, tagged(id, telemetry_len));
        }
        for _ in 0..warmup {
            let (_, packet) = sched.dequeue().unwrap();
            let _ = sched.enqueue_in(Lane::Telemetry, packet);
        }
        let _ = sched.enqueue_in(Lane::Bulk, tagged(u32::MAX, bulk_len));
        let turns = bulk_len.div_ceil(BULK_QUANTUM);
        let bound = turns * (TELEMETRY_QUANTUM + telemetry_len);
        let mut telemetry_bytes = 0;
        loop {
            let (lane, packet) = sched.dequeue().unwrap();
            if lane == Lane::Bulk {
                break;
            }
            telemetry_bytes += packet.len();
            prop_assert!(telemetry_bytes <= bound, "bulk waited {} bytes > {}", telemetry_bytes, bound);
            let _ = sched.enqueue_in(Lane::Telemetry, packet);
        }
    }
}

#[test]
fn configured_lane_rules_steer_enqueue() {
    use crate::scheduler::{LaneProtocol, LaneRule, LaneRules};
    let mut sched = DataPlaneScheduler::new();
    let mut pkt = Vec::new();
    build::ipv4_udp(
        Ipv4Addr::new(100, 64, 0, 1),
        Ipv4Addr::new(100, 64, 0, 2),
        40000,
        17911,
        &[0; 300],
        &mut pkt,
    );
    assert_eq!(sched.enqueue(pkt.clone()), Enqueue::Queued(Lane::Bulk));
    sched.set_lane_rules(
        LaneRules::new(vec![LaneRule {
            protocol: LaneProtocol::Udp,
            ports: 17911..=17911,
            lane: Lane::Critical,
        }])
        .unwrap(),
    );
    assert_eq!(sched.enqueue(pkt), Enqueue::Queued(Lane::Critical));
}

#[test]
fn bulk_is_shared_across_peers_and_a_held_back_peer_does_not_block_others() {
    let (slow, fast) = (PeerId([1; 16]), PeerId([2; 16]));
    let mut sched = DataPlaneScheduler::new();
    for id in 0..100 {
        let _ = sched.enqueue_for(slow, Lane::Bulk, tagged(id, 1000));
        let _ = sched.enqueue_for(fast, Lane::Bulk, tagged(1000 + id, 1000));
    }
    assert_eq!(sched.bulk_len_for(slow), 100);
    // The slow peer's controller holds it back: the fast one is served every turn.
    for id in 0..50 {
        let (lane, packet) = sched.dequeue_paced(|peer, _| peer == fast).unwrap();
        assert_eq!((lane, id_of(&packet)), (Lane::Bulk, 1000 + id));
    }
    // Both allowed: they alternate.
    let mut served = [0; 2];
    for _ in 0..40 {
        let (_, packet) = sched.dequeue().unwrap();
        served[usize::from(id_of(&packet) >= 1000)] += 1;
    }
    assert_eq!(served, [20, 20]);
    // Removing a peer drops its queue, counted, and keeps the lane's totals right.
    let mut recycled = 0;
    sched.remove_peer(slow, |_| recycled += 1);
    assert_eq!((recycled, sched.bulk_len_for(slow)), (80, 0));
    let stats = sched.stats(Lane::Bulk);
    assert_eq!(
        stats.enqueued,
        stats.sent + stats.dropped + sched.len(Lane::Bulk) as u64
    );
    assert_eq!(sched.bulk_bytes_queued(), sched.len(Lane::Bulk) * 1000);
}

#[test]
fn a_full_bulk_lane_makes_room_for_a_peer_with_less_queued() {
    let (hog, other) = (PeerId([1; 16]), PeerId([2; 16]));
    let mut sched = DataPlaneScheduler::new();
    for id in 0..BULK_CAPACITY as u32 {
        assert!(
            sched
                .enqueue_for(hog, Lane::Bulk, tagged(id, 8))
                .is_queued()
        );
    }
    assert!(matches!(
        sched.enqueue_for(hog, Lane::Bulk, tagged(0, 8)),
        Enqueue::Dropped { .. }
    ));
    match sched.enqueue_for(other, Lane::Bulk, tagged(7, 8)) {
        Enqueue::Evicted { lane, oldest } => {
            assert_eq!((lane, id_of(&oldest)), (Lane::Bulk, 0), "the hog's oldest")
        }
        other => panic!("expected an eviction, got {other:?}"),
    }
    assert_eq!(sched.len(Lane::Bulk), BULK_CAPACITY);
    assert_eq!(sched.bulk_len_for(other), 1);
}

/// The device's bulk is left in the kernel's ring only while the lane is full with one
/// peer's packets: with a second peer backlogged, a packet read may evict the fullest
/// peer's oldest, so reading goes on and a slow peer's backlog cannot hold the others to
/// its rate.
#[test]
fn bulk_is_read_from_the_device_while_a_packet_read_can_be_queued() {
    let (hog, other) = (PeerId([1; 16]), PeerId([2; 16]));
    let mut sched = DataPlaneScheduler::new();
    assert!(sched.takes_bulk_reads(), "an empty lane");
    for id in 0..BULK_CAPACITY as u32 - 1 {
        let _ = sched.enqueue_for(hog, Lane::Bulk, tagged(id, 8));
    }
    assert!(sched.takes_bulk_reads(), "one slot left");
    let _ = sched.enqueue_for(hog, Lane::Bulk, tagged(0, 8));
    assert!(
        !sched.takes_bulk_reads(),
        "full, one peer: a read would be dropped"
    );
    assert!(matches!(
        sched.enqueue_for(other, Lane::Bulk, tagged(7, 8)),
        Enqueue::Evicted { .. }
    ));
    assert!(sched.takes_bulk_reads(), "full, two peers backlogged");
    // The other peer's packet leaves (the hog is held back).
    let sent = sched.dequeue_paced(|peer, _| peer == other);
    assert!(matches!(sent, Some((Lane::Bulk, p)) if id_of(&p) == 7));
    assert!(sched.takes_bulk_reads(), "the eviction left a slot");
    let _ = sched.enqueue_for(hog, Lane::Bulk, tagged(1, 8));
    assert!(!sched.takes_bulk_reads(), "full with one peer's again");
}
