use super::*;
use proptest::prelude::*;

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

const HOLD: Duration = Duration::from_millis(60);

/// Feeds `seq` of session 1 to `reorder` at `now`: what it says, holding the packet (its
/// sequence number as bytes) when told to.
fn feed(
    reorder: &mut BulkReorder,
    seq: u32,
    now: Instant,
    released: &mut VecDeque<Vec<u8>>,
) -> Arrival {
    let arrival = reorder.arrive(now, 1, seq, released);
    if let Arrival::Hold { .. } = arrival {
        reorder.hold(seq, seq.to_le_bytes().to_vec(), now, HOLD);
    }
    arrival
}

fn seqs(released: &mut VecDeque<Vec<u8>>) -> Vec<u32> {
    released
        .drain(..)
        .map(|p| u32::from_le_bytes(p[..4].try_into().unwrap()))
        .collect()
}

#[test]
fn in_order_packets_are_delivered_at_once() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    for seq in 0..5 {
        assert_eq!(feed(&mut reorder, seq, t0, &mut released), Arrival::Deliver);
    }
    assert!(released.is_empty());
    assert_eq!(reorder.poll_timeout(), None);
    assert_eq!(reorder.held(), 0);
}

#[test]
fn a_hole_is_named_once_and_its_repair_releases_the_packets_behind_it() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    assert_eq!(feed(&mut reorder, 0, t0, &mut released), Arrival::Deliver);
    assert_eq!(
        feed(&mut reorder, 3, t0, &mut released),
        Arrival::Hold {
            nack: Some(NackFrame {
                index: 1,
                first: 1,
                count: 2
            })
        }
    );
    assert_eq!(
        feed(&mut reorder, 4, t0, &mut released),
        Arrival::Hold { nack: None }
    );
    assert_eq!(
        feed(&mut reorder, 2, t0, &mut released),
        Arrival::Hold { nack: None },
        "filling part of a known hole names nothing"
    );
    assert_eq!(reorder.poll_timeout(), Some(t0 + HOLD));
    assert_eq!(feed(&mut reorder, 1, t0, &mut released), Arrival::Deliver);
    assert_eq!(seqs(&mut released), [2, 3, 4], "in order, after the repair");
    assert_eq!(reorder.poll_timeout(), None);
    assert_eq!(
        feed(&mut reorder, 3, t0, &mut released),
        Arrival::Duplicate,
        "a second copy is dropped"
    );
}

#[test]
fn a_hole_not_repaired_in_time_is_given_up_and_its_late_packet_still_delivered() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    feed(&mut reorder, 0, t0, &mut released);
    feed(&mut reorder, 2, t0, &mut released);
    let later = t0 + Duration::from_millis(10);
    // A second hole, seen later: its own wait starts then.
    assert_eq!(
        feed(&mut reorder, 4, later, &mut released),
        Arrival::Hold {
            nack: Some(NackFrame {
                index: 1,
                first: 3,
                count: 1
            })
        }
    );
    assert_eq!(
        reorder.handle_timeout(t0 + HOLD - Duration::from_micros(1), &mut released),
        0
    );
    assert!(released.is_empty());
    assert_eq!(reorder.handle_timeout(t0 + HOLD, &mut released), 1);
    assert_eq!(seqs(&mut released), [2], "the first hole's wait ran out");
    assert_eq!(reorder.poll_timeout(), Some(later + HOLD));
    assert_eq!(reorder.handle_timeout(later + HOLD, &mut released), 1);
    assert_eq!(seqs(&mut released), [4]);
    assert_eq!(reorder.poll_timeout(), None);
    assert_eq!(
        feed(&mut reorder, 1, later, &mut released),
        Arrival::Deliver
    );
    assert_eq!(
        feed(&mut reorder, 1, later, &mut released),
        Arrival::Duplicate
    );
    assert_eq!(
        feed(&mut reorder, 5, later, &mut released),
        Arrival::Deliver
    );
}

#[test]
fn a_new_session_releases_the_old_ones_packets_and_delivers_its_stragglers() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    feed(&mut reorder, 0, t0, &mut released);
    feed(&mut reorder, 2, t0, &mut released);
    assert_eq!(reorder.arrive(t0, 9, 0, &mut released), Arrival::Deliver);
    assert_eq!(seqs(&mut released), [2]);
    assert_eq!(reorder.held(), 0);
    assert_eq!(reorder.poll_timeout(), None);
    assert_eq!(
        reorder.arrive(t0, 1, 1, &mut released),
        Arrival::Deliver,
        "the old session's repair comes late: delivered as it is"
    );
    assert_eq!(reorder.arrive(t0, 9, 1, &mut released), Arrival::Deliver);
    for seq in [0, 1, 2] {
        assert_eq!(
            reorder.arrive(t0, 1, seq, &mut released),
            Arrival::Duplicate,
            "{seq} of the old session was delivered already: a second copy is not"
        );
    }
}

#[test]
fn a_packet_too_far_ahead_gives_up_the_oldest_holes() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    feed(&mut reorder, 0, t0, &mut released);
    feed(&mut reorder, 2, t0, &mut released);
    let far = 2 + HOLD_SLOTS as u32;
    assert!(matches!(
        feed(&mut reorder, far, t0, &mut released),
        Arrival::Hold { .. }
    ));
    assert_eq!(seqs(&mut released), [2], "pushed out, in order");
    assert_eq!(reorder.held(), 1);
    assert_eq!(reorder.handle_timeout(t0 + HOLD, &mut released), far - 3);
    assert_eq!(seqs(&mut released), [far]);
}

#[test]
fn the_sender_repairs_each_named_packet_once_and_only_for_its_session() {
    let t0 = origin();
    let mut sender = RepairSender::new();
    let mut recycled = Vec::new();
    for expected in 0..4 {
        let seq = sender.next_seq(7, |b| recycled.push(b)).unwrap();
        assert_eq!(seq, expected);
        assert_eq!(sender.keep(seq, vec![seq as u8; 100], t0), None);
    }
    let nack = NackFrame {
        index: 7,
        first: 1,
        count: 5,
    };
    assert_eq!(sender.on_nack(nack), 3, "1, 2, 3: 4 and 5 were never sent");
    assert_eq!(sender.on_nack(nack), 0, "already queued");
    assert_eq!(sender.on_nack(NackFrame { index: 8, ..nack }), 0);
    assert_eq!(sender.peek_repair(), Some((1, 100)));
    let (seq, packet) = sender.take_repair().unwrap();
    assert_eq!((seq, packet[0]), (1, 1));
    assert_eq!(
        sender.on_nack(NackFrame {
            index: 7,
            first: 1,
            count: 1
        }),
        0,
        "one repair per packet"
    );
    assert_eq!(sender.take_repair().map(|(s, _)| s), Some(2));
    // A new session: the kept packets are recycled, numbers start again.
    assert_eq!(sender.next_seq(8, |b| recycled.push(b)), Some(0));
    assert_eq!(recycled.len(), 2, "packets 0 and 3 (1 and 2 were taken)");
    assert!(!sender.has_repair());
    assert_eq!(sender.on_nack(nack), 0);
}

#[test]
fn a_kept_packet_pushed_out_is_not_repaired() {
    let t0 = origin();
    let mut sender = RepairSender::new();
    for seq in 0..=KEEP_SLOTS as u32 {
        assert_eq!(sender.next_seq(1, drop), Some(seq));
        let out = sender.keep(seq, vec![0; 10], t0);
        assert_eq!(out.is_some(), seq == KEEP_SLOTS as u32);
    }
    assert_eq!(
        sender.on_nack(NackFrame {
            index: 1,
            first: 0,
            count: 1
        }),
        0
    );
}

/// A kept packet goes back to the pool [`KEEP_FOR`] after it was sent, oldest first, so
/// a peer that went quiet pins nothing; an expired packet is not repaired, and one taken
/// for its repair is not expired twice.
#[test]
fn kept_packets_expire_oldest_first_and_are_then_not_repaired() {
    let t0 = origin();
    let ms = Duration::from_millis;
    let mut sender = RepairSender::new();
    assert_eq!(sender.expires_at(), None);
    for seq in 0..4 {
        sender.next_seq(1, drop);
        sender.keep(seq, vec![seq as u8; 10], t0 + ms(100 * u64::from(seq)));
    }
    // Packet 0 is repaired: the oldest kept is then 1.
    sender.on_nack(NackFrame {
        index: 1,
        first: 0,
        count: 1,
    });
    assert_eq!(sender.take_repair().map(|(seq, _)| seq), Some(0));
    assert_eq!(sender.expires_at(), Some(t0 + ms(100) + KEEP_FOR));
    let mut recycled = Vec::new();
    assert_eq!(
        sender.expire(t0 + ms(99) + KEEP_FOR, |b| recycled.push(b)),
        0
    );
    assert_eq!(
        sender.expire(t0 + ms(200) + KEEP_FOR, |b| recycled.push(b)),
        2
    );
    assert_eq!(recycled, [vec![1; 10], vec![2; 10]], "oldest first");
    assert_eq!(sender.expires_at(), Some(t0 + ms(300) + KEEP_FOR));
    let nack = NackFrame {
        index: 1,
        first: 1,
        count: 3,
    };
    assert_eq!(sender.on_nack(nack), 1, "only 3 is still kept");
    assert_eq!(
        sender.expire(t0 + ms(300) + KEEP_FOR, |b| recycled.push(b)),
        1
    );
    assert_eq!(sender.expires_at(), None);
    assert_eq!(
        sender.take_repair(),
        None,
        "it expired before its repair went out"
    );
}

proptest! {
    /// Whatever is kept, repaired and expired in whatever order, `expires_at` names the
    /// oldest packet still kept, `expire` gives back exactly the packets kept since
    /// [`KEEP_FOR`] (nothing pinned past it, nothing lost early), and `kept` counts them,
    /// also when some numbers went out unkept (`forgo`, the node-wide bound).
    #[test]
    fn expiry_always_names_the_oldest_packet_still_kept(
        steps in proptest::collection::vec((0u8..5, 0u64..400, 1u16..8), 1..300),
    ) {
        let t0 = origin();
        let mut now = t0;
        let mut sender = RepairSender::new();
        // The model: sequence number -> when it was sent, for the packets still kept.
        let mut model = std::collections::BTreeMap::new();
        let mut next = 0u32;
        for (op, step_ms, count) in steps {
            now += Duration::from_millis(step_ms);
            match op {
                0 | 1 => {
                    let seq = sender.next_seq(1, drop).unwrap();
                    prop_assert_eq!(seq, next);
                    next += 1;
                    sender.keep(seq, vec![0; 4], now);
                    model.insert(seq, now);
                    if seq >= KEEP_SLOTS as u32 {
                        model.remove(&(seq - KEEP_SLOTS as u32));
                    }
                }
                4 => {
                    // Sent but not kept (the node-wide bound): the slot's older packet
                    // goes back, and the numbers after it still expire in order.
                    let seq = sender.next_seq(1, drop).unwrap();
                    next += 1;
                    let old = sender.forgo(seq);
                    let older = seq.checked_sub(KEEP_SLOTS as u32);
                    let modelled = older.and_then(|o| model.remove(&o));
                    prop_assert_eq!(old.is_some(), modelled.is_some());
                }
                2 => {
                    let first = next.saturating_sub(u32::from(count) * 3);
                    sender.on_nack(NackFrame { index: 1, first, count });
                    while let Some((seq, _)) = sender.take_repair() {
                        prop_assert!(model.remove(&seq).is_some(), "repaired {} twice", seq);
                    }
                }
                _ => {
                    let mut expired = 0;
                    sender.expire(now, |_| expired += 1);
                    let due: Vec<u32> = model
                        .iter()
                        .filter(|&(_, &sent)| sent + KEEP_FOR <= now)
                        .map(|(&seq, _)| seq)
                        .collect();
                    prop_assert_eq!(expired, due.len());
                    for seq in due {
                        model.remove(&seq);
                    }
                }
            }
            let oldest = model.values().min().map(|&sent| sent + KEEP_FOR);
            prop_assert_eq!(sender.expires_at(), oldest);
            // The count the node's bound reads is the packets really kept.
            prop_assert_eq!(sender.kept(), model.len());
        }
    }
}

#[test]
fn hold_time_follows_the_round_trip_within_bounds() {
    assert_eq!(hold_time(None), DEFAULT_HOLD);
    assert_eq!(
        hold_time(Some(Duration::from_millis(40))),
        Duration::from_millis(65)
    );
    assert_eq!(hold_time(Some(Duration::from_micros(100))), MIN_HOLD);
    assert_eq!(hold_time(Some(Duration::from_secs(2))), MAX_HOLD);
}

/// Opens a hole at `seq` (the packet after it arrives at `now`) and fills it `delay`
/// later; returns the NACK the hole raised.
fn hole_filled_after(
    reorder: &mut BulkReorder,
    seq: u32,
    now: Instant,
    delay: Duration,
) -> Option<NackFrame> {
    let mut released = VecDeque::new();
    let Arrival::Hold { nack } = feed(reorder, seq + 1, now, &mut released) else {
        panic!("{} arrived behind a hole and was not held", seq + 1);
    };
    assert_eq!(
        feed(reorder, seq, now + delay, &mut released),
        Arrival::Deliver
    );
    assert_eq!(seqs(&mut released), [seq + 1]);
    nack
}

#[test]
fn the_wait_for_a_hole_follows_how_long_repairs_take() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    feed(&mut reorder, 0, t0, &mut released);
    // Until a repair was timed, the round trip decides (the receiver's may be stale).
    let rtt = Some(Duration::from_millis(20));
    assert_eq!(reorder.hold_time(rtt), hold_time(rtt));
    // Repairs take 70 ms on the loaded path, not the 20 ms round trip of the handshake.
    let repair = Duration::from_millis(70);
    let mut now = t0;
    for hole in 0..30 {
        let seq = 1 + 2 * hole;
        assert!(hole_filled_after(&mut reorder, seq, now, repair).is_some());
        now += Duration::from_millis(100);
    }
    let hold = reorder.hold_time(rtt);
    assert!(
        hold >= repair + Duration::from_millis(5) && hold < repair + Duration::from_millis(10),
        "steady repairs of 70 ms: wait {hold:?}"
    );
    // Slower repairs widen the wait at once (the variation), up to the bound.
    hole_filled_after(&mut reorder, 61, now, Duration::from_millis(150));
    let wider = reorder.hold_time(rtt);
    assert!(wider > Duration::from_millis(130), "{wider:?}");
    for hole in 0..30 {
        now += Duration::from_millis(400);
        hole_filled_after(&mut reorder, 63 + 2 * hole, now, Duration::from_secs(1));
    }
    assert_eq!(reorder.hold_time(rtt), MAX_HOLD);
}

#[test]
fn a_copy_that_comes_after_its_hole_was_given_up_lengthens_the_wait() {
    let t0 = origin();
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    feed(&mut reorder, 0, t0, &mut released);
    hole_filled_after(&mut reorder, 1, t0, Duration::from_millis(30));
    let before = reorder.hold_time(None);
    // Packet 3 is missing; 4 waits behind it until the deadline gives it up.
    let later = t0 + Duration::from_millis(100);
    feed(&mut reorder, 4, later, &mut released);
    let deadline = reorder.poll_timeout().expect("4 waits behind a hole");
    assert_eq!(reorder.handle_timeout(deadline, &mut released), 1);
    assert_eq!(seqs(&mut released), [4]);
    // Its repair comes after that, and still teaches the wait.
    let late = deadline + Duration::from_millis(40);
    assert_eq!(feed(&mut reorder, 3, late, &mut released), Arrival::Deliver);
    assert!(reorder.hold_time(None) > before);
}

/// A path that reorders: the first gap is named at once, its original comes 3 ms late
/// and its repair a round trip later, a needless repair. From then on a gap waits that
/// long (and a quarter) before it is named: one that late packets close is never named,
/// a real loss is named when the wait is over, trimmed to what is still missing; after
/// [`REORDER_DECAY`] without another needless repair the wait halves.
#[test]
fn on_a_path_that_reorders_a_gap_waits_before_it_is_named() {
    let t0 = origin();
    let ms = Duration::from_millis;
    let mut reorder = BulkReorder::new();
    let mut released = VecDeque::new();
    feed(&mut reorder, 0, t0, &mut released);
    assert_eq!(reorder.reorder_wait(), Duration::ZERO);
    assert!(hole_filled_after(&mut reorder, 1, t0, ms(3)).is_some());
    assert_eq!(
        reorder.poll_nack(t0 + ms(3)),
        None,
        "named at once, nothing waits"
    );
    let hold = reorder.hold_time(None);
    assert_eq!(
        feed(&mut reorder, 1, t0 + ms(40), &mut released),
        Arrival::Duplicate
    );
    let wait = reorder.reorder_wait();
    assert_eq!(wait, ms(3) + ms(3) / 4);
    assert_eq!(
        reorder.hold_time(None),
        hold + wait,
        "a hole waits for that too"
    );

    // Reordered by 2 ms: the gap waits and is never named.
    let t1 = t0 + ms(100);
    assert_eq!(
        feed(&mut reorder, 4, t1, &mut released),
        Arrival::Hold { nack: None }
    );
    assert_eq!(reorder.poll_timeout(), Some(t1 + wait));
    assert_eq!(
        feed(&mut reorder, 3, t1 + ms(2), &mut released),
        Arrival::Deliver
    );
    assert_eq!(seqs(&mut released), [4]);
    assert_eq!(
        reorder.poll_nack(t1 + wait),
        None,
        "the late packet closed the gap"
    );

    // 6 and 8 lost, 7 late: the NACK names 6..=8 once the wait is over.
    let t2 = t1 + ms(100);
    feed(&mut reorder, 5, t2, &mut released);
    assert_eq!(
        feed(&mut reorder, 9, t2, &mut released),
        Arrival::Hold { nack: None }
    );
    feed(&mut reorder, 7, t2 + ms(1), &mut released);
    assert_eq!(reorder.poll_nack(t2 + wait - ms(1)), None, "not due yet");
    assert_eq!(
        reorder.poll_nack(t2 + wait),
        Some(NackFrame {
            index: 1,
            first: 6,
            count: 3
        })
    );
    assert_eq!(reorder.poll_nack(t2 + wait), None, "named once");

    // Five seconds without a needless repair: half the wait.
    let t3 = t0 + ms(40) + REORDER_DECAY;
    feed(&mut reorder, 6, t3, &mut released);
    assert_eq!(reorder.reorder_wait(), wait / 2);
}

#[test]
fn frames_reject_wrong_lengths_and_a_zero_count() {
    assert!(parse_bulk(&[FRAME_BULK, 0, 0, 0, 0]).is_err());
    assert_eq!(parse_bulk(&[FRAME_BULK, 2, 1, 0, 0, 0x45]), Ok(258));
    let mut nack = NackFrame {
        index: 1,
        first: 2,
        count: 3,
    }
    .encode();
    assert!(NackFrame::parse(&nack[..10]).is_err());
    nack[9] = 0;
    nack[10] = 0;
    assert!(NackFrame::parse(&nack).is_err());
    assert!(RepairHello::parse(&[FRAME_REPAIR_HELLO, 1, 2, 3]).is_err());
}

proptest! {
    #[test]
    fn frame_parsers_are_total_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        if let Ok(nack) = NackFrame::parse(&bytes) {
            prop_assert_eq!(&nack.encode()[..], bytes.as_slice());
        }
        if let Ok(hello) = RepairHello::parse(&bytes) {
            prop_assert_eq!(&hello.encode()[..], bytes.as_slice());
        }
        if let Ok(seq) = parse_bulk(&bytes) {
            prop_assert_eq!(&bulk_header(seq)[..], &bytes[..BULK_HEADER_LEN]);
        }
    }

    /// However the packets of a session arrive (lost, duplicated, reordered, with time
    /// passing), each is delivered at most once, nothing stays held past its wait, the
    /// held packets stay within their slots, and what arrived in order with no hole in
    /// front of it is delivered in order.
    #[test]
    fn each_packet_is_delivered_once_and_nothing_is_held_forever(
        arrivals in proptest::collection::vec((0u32..700, 0u64..30), 1..400),
    ) {
        let t0 = origin();
        let mut reorder = BulkReorder::new();
        let mut released = VecDeque::new();
        let mut delivered = Vec::new();
        let mut now = t0;
        for (seq, gap_ms) in arrivals {
            now += Duration::from_millis(gap_ms);
            reorder.handle_timeout(now, &mut released);
            while let Some(nack) = reorder.poll_nack(now) {
                let named = nack.first..nack.first + u32::from(nack.count);
                prop_assert!(!delivered.iter().any(|seq| named.contains(seq)), "{:?} named after delivery", nack);
            }
            delivered.extend(seqs(&mut released));
            if feed(&mut reorder, seq, now, &mut released) == Arrival::Deliver {
                delivered.push(seq);
            }
            delivered.extend(seqs(&mut released));
            prop_assert!(reorder.held() <= HOLD_SLOTS);
        }
        reorder.handle_timeout(now + HOLD, &mut released);
        while reorder.poll_nack(now + HOLD).is_some() {}
        delivered.extend(seqs(&mut released));
        prop_assert_eq!(reorder.held(), 0);
        prop_assert_eq!(reorder.poll_timeout(), None);
        let mut unique = delivered.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), delivered.len(), "delivered twice: {:?}", delivered);
    }

    /// With no loss, any reordering within the slots comes out in order.
    #[test]
    fn reordering_without_loss_comes_out_in_order(
        swaps in proptest::collection::vec((0usize..200, 0usize..200), 0..50),
    ) {
        let t0 = origin();
        let mut order: Vec<u32> = (0..200).collect();
        for (a, b) in swaps {
            order.swap(a, b);
        }
        let mut reorder = BulkReorder::new();
        let mut released = VecDeque::new();
        let mut delivered = Vec::new();
        for seq in order {
            if feed(&mut reorder, seq, t0, &mut released) == Arrival::Deliver {
                delivered.push(seq);
            }
            delivered.extend(seqs(&mut released));
        }
        prop_assert_eq!(delivered, (0..200).collect::<Vec<_>>());
    }
}
