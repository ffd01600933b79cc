use super::*;
use proptest::prelude::*;

const RTT: Duration = Duration::from_millis(10);
/// The node's largest datagram with the default 1350-byte device MTU.
const MAX_DATAGRAM: usize = 1350 + 29;

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// Drives `pmtu` against a path that carries IP packets up to `path_mtu` bytes until no
/// probe is due or in flight and nothing is due `within` from now; returns the probe sizes
/// sent. Small data keeps flowing: after a lost probe, a small packet sent behind it is
/// acknowledged. Bounded: a search takes a few dozen probes at most.
fn drive(pmtu: &mut Pmtu, now: &mut Instant, path_mtu: u16, within: Duration) -> Vec<u16> {
    let until = *now + within;
    let mut sent = Vec::new();
    for _ in 0..200 {
        if let Some(probe) = pmtu.take_probe(*now, Some(RTT)) {
            sent.push(probe.size);
            assert_eq!(
                probe.datagram_len + usize::from(HEADERS_V4),
                usize::from(probe.size)
            );
            if probe.size <= path_mtu {
                *now += RTT;
                pmtu.on_probe_ack(*now, probe.id);
            } else {
                let behind = *now + Duration::from_micros(1);
                pmtu.on_acked(*now + RTT, behind, 100);
            }
            continue;
        }
        match pmtu.poll_timeout().filter(|&at| at <= until) {
            Some(at) => {
                *now = (*now).max(at);
                pmtu.handle_timeout(*now);
            }
            None => return sent,
        }
    }
    panic!("search did not settle: {sent:?}");
}

#[test]
fn a_path_that_carries_everything_is_found_in_one_probe_after_the_base() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    assert_eq!(pmtu.plpmtu(), None);
    assert!(pmtu.start(false, MAX_DATAGRAM));
    let sent = drive(&mut pmtu, &mut now, 1500, Duration::from_secs(1));
    assert_eq!(sent, [1200, 1407]);
    assert_eq!(pmtu.plpmtu(), Some(1407));
    assert_eq!(pmtu.max_datagram(), Some(MAX_DATAGRAM));
    assert_eq!(pmtu.phase(), PmtuPhase::Complete);
    assert!(!pmtu.narrower_than_max());
    assert_eq!(pmtu.poll_timeout(), None, "nothing to raise");
}

#[test]
fn a_narrow_path_is_found_exactly_and_raised_later() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(false, MAX_DATAGRAM);
    let sent = drive(&mut pmtu, &mut now, 1300, Duration::from_secs(60));
    assert_eq!(pmtu.plpmtu(), Some(1300));
    assert_eq!(pmtu.phase(), PmtuPhase::Complete);
    assert!(pmtu.narrower_than_max());
    let lost = sent.iter().filter(|&&s| s > 1300).count();
    assert_eq!(
        lost % usize::from(MAX_PROBES),
        0,
        "each failed size is tried {MAX_PROBES} times: {sent:?}"
    );
    // The path widens; the raise timer finds it.
    let raise = pmtu.poll_timeout().expect("a raise is scheduled");
    assert!(raise >= now + RAISE_INTERVAL - Duration::from_secs(60));
    {
        now = now.max(raise);
        drive(&mut pmtu, &mut now, 1400, Duration::from_secs(60))
    };
    assert_eq!(pmtu.plpmtu(), Some(1400));
}

#[test]
fn a_path_below_the_base_is_an_error_and_retried() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(false, MAX_DATAGRAM);
    let sent = drive(&mut pmtu, &mut now, 1000, Duration::from_secs(5));
    assert_eq!(sent, [1200; MAX_PROBES as usize]);
    assert_eq!(pmtu.phase(), PmtuPhase::Error);
    assert_eq!(pmtu.plpmtu(), Some(BASE_PMTU_V4));
    assert!(pmtu.narrower_than_max());
    let retry = pmtu.poll_timeout().expect("the base is retried");
    {
        now = now.max(retry);
        drive(&mut pmtu, &mut now, 1500, Duration::from_secs(5))
    };
    assert_eq!(pmtu.plpmtu(), Some(1407));
}

#[test]
fn ipv6_uses_its_own_base_and_headers() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(true, MAX_DATAGRAM);
    let probe = pmtu.take_probe(now, None).unwrap();
    assert_eq!((probe.size, probe.datagram_len), (1280, 1280 - 48));
    now += RTT;
    assert!(pmtu.on_probe_ack(now, probe.id));
    let probe = pmtu.take_probe(now, None).unwrap();
    assert_eq!(probe.size, u16::try_from(MAX_DATAGRAM).unwrap() + 48);
}

#[test]
fn undecided_until_the_first_answer_about_the_maximum() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    assert!(!pmtu.undecided(), "idle: nothing to wait for");
    pmtu.start(false, MAX_DATAGRAM);
    assert!(pmtu.undecided());
    let base = pmtu.take_probe(now, Some(RTT)).unwrap();
    assert!(pmtu.undecided());
    now += RTT;
    pmtu.on_probe_ack(now, base.id);
    let max = pmtu.take_probe(now, Some(RTT)).unwrap();
    assert_eq!(max.size, 1407);
    assert!(pmtu.undecided(), "the maximum is in flight");
    // Lost once: the path is narrow until shown otherwise.
    let deadline = pmtu.poll_timeout().unwrap();
    assert!(pmtu.handle_timeout(deadline));
    assert!(!pmtu.undecided());
}

#[test]
fn a_stale_or_forged_ack_changes_nothing() {
    let now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(false, MAX_DATAGRAM);
    let probe = pmtu.take_probe(now, None).unwrap();
    assert!(!pmtu.on_probe_ack(now, probe.id.wrapping_add(7)));
    assert_eq!(pmtu.phase(), PmtuPhase::Base);
    assert!(pmtu.take_probe(now, None).is_none(), "one probe in flight");
}

#[test]
fn large_packets_lost_while_small_ones_pass_drop_to_the_base_and_search_again() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(false, MAX_DATAGRAM);
    drive(&mut pmtu, &mut now, 1500, Duration::from_secs(1));
    assert_eq!(pmtu.plpmtu(), Some(1407));
    // Large packets that are acknowledged keep the size.
    pmtu.on_sent(now, 1379);
    pmtu.on_heard();
    pmtu.on_acked(now, now, 1379);
    assert_eq!(pmtu.poll_timeout(), None);
    // The path shrinks to 1300: large packets go unacknowledged, the peer is still heard.
    pmtu.on_sent(now, 1379);
    pmtu.on_sent(now + RTT, 1379);
    pmtu.on_sent(now + RTT, 100);
    pmtu.on_heard();
    pmtu.on_acked(now + RTT, now + RTT, 100);
    let check = pmtu.poll_timeout().expect("black-hole check scheduled");
    assert_eq!(check, now + BLACK_HOLE_AFTER);
    now = check;
    assert!(pmtu.handle_timeout(now), "a confirmation probe is due");
    let sent = drive(&mut pmtu, &mut now, 1300, Duration::from_secs(30));
    assert_eq!(
        &sent[..3],
        &[1407; 3],
        "confirmation, tried {MAX_PROBES} times"
    );
    assert_eq!(sent[3], 1200, "then the base");
    assert!(
        !sent[4..].contains(&1407),
        "the failed size is not retried: {sent:?}"
    );
    assert_eq!(pmtu.plpmtu(), Some(1300));
    assert_eq!(pmtu.phase(), PmtuPhase::Complete);
}

/// Issue 14's bug: bulk overflowing a drop-tail buffer made the node take the drops for
/// an MTU black hole and shrink the path MTU below the data's size (goodput 0). Probes of
/// the size may all be lost in the full buffer; data of the size that keeps getting
/// through confirms it instead.
#[test]
fn probes_lost_in_a_full_buffer_do_not_shrink_the_size_while_data_of_it_passes() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(false, MAX_DATAGRAM);
    drive(&mut pmtu, &mut now, 1500, Duration::from_secs(1));
    assert_eq!(pmtu.plpmtu(), Some(1407));
    // Under a flood the acks name small packets for a second: suspected.
    pmtu.on_sent(now, 1379);
    pmtu.on_heard();
    now += BLACK_HOLE_AFTER;
    assert!(pmtu.handle_timeout(now), "a confirmation probe is due");
    let began = now;
    let first = pmtu.take_probe(now, Some(RTT)).expect("a probe");
    assert_eq!(first.size, 1407);
    // A deep queue: nothing sent after the probe came back by its timeout. Not a loss.
    now = pmtu.poll_timeout().expect("the probe's timeout");
    assert!(!pmtu.handle_timeout(now), "still queued, not lost");
    assert!(
        pmtu.take_probe(now, Some(RTT)).is_none(),
        "the same probe waits"
    );
    // The buffer drops probes while small packets behind them pass.
    for attempt in 1..MAX_PROBES {
        pmtu.on_acked(now + RTT, now + Duration::from_micros(1), 100);
        now = pmtu.poll_timeout().expect("the probe's timeout");
        assert!(pmtu.handle_timeout(now), "lost: tried again");
        let probe = pmtu.take_probe(now, Some(RTT)).expect("a retry");
        assert_eq!((probe.size, attempt), (1407, attempt));
    }
    // The last one is dropped too, but a full-size data packet sent meanwhile got through.
    assert!(!pmtu.on_acked(now + RTT, began + RTT, 1379));
    assert_eq!(pmtu.plpmtu(), Some(1407), "the size stands");
    assert_eq!(pmtu.phase(), PmtuPhase::Complete);
    assert!(
        pmtu.take_probe(now, Some(RTT)).is_none(),
        "confirmed: no probe"
    );
    // Data sent before the confirmation began proves nothing about the path now.
    pmtu.on_sent(now, 1379);
    pmtu.on_heard();
    let suspected = now + BLACK_HOLE_AFTER;
    assert!(pmtu.handle_timeout(suspected));
    assert!(!pmtu.on_acked(suspected, now, 1379));
    let sent = drive(&mut pmtu, &mut now, 1300, Duration::from_secs(30));
    assert_eq!(&sent[..3], &[1407; 3], "a real black hole is still found");
    assert_eq!(pmtu.plpmtu(), Some(1300));
}

#[test]
fn silence_from_the_peer_is_not_a_black_hole() {
    let mut now = origin();
    let mut pmtu = Pmtu::default();
    pmtu.start(false, MAX_DATAGRAM);
    drive(&mut pmtu, &mut now, 1500, Duration::from_secs(1));
    pmtu.on_sent(now, 1379);
    assert_eq!(
        pmtu.poll_timeout(),
        None,
        "a dead path is not an MTU problem"
    );
}

proptest! {
    /// Whatever the path's MTU, the search ends at exactly the largest size the path
    /// carries (capped by the node's maximum), and never confirms a size the path
    /// drops.
    #[test]
    fn search_finds_the_path_mtu(path in 1200u16..1600, max in 1200usize..1500) {
        let mut now = origin();
        let mut pmtu = Pmtu::default();
        pmtu.start(false, max);
        let max_size = u16::try_from(max).unwrap() + HEADERS_V4;
        let sent = drive(&mut pmtu, &mut now, path, Duration::from_secs(120));
        prop_assert_eq!(pmtu.plpmtu(), Some(path.min(max_size)));
        prop_assert_eq!(pmtu.phase(), PmtuPhase::Complete);
        prop_assert!(sent.len() <= 1 + 3 * 12 + 12, "bounded search: {:?}", sent);
    }
}
