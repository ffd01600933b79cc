//! Bonding and Critical-lane redundancy in the simulator: two nodes joined by two
//! independent paths ([`TwoPathNet`]), a 1 kHz Critical stream each way, one path cut
//! mid-stream; and a 1 kHz loop over a path with 5 % bursty (Gilbert–Elliott) loss with
//! and without a policy rule's `redundancy = "duplicate"`. Every assertion counts what
//! the run really delivered, by packet id.

#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bauxite_conduit::ip::build;
use bauxite_conduit::node::{NodeConfig, TunVerdict};
use bauxite_conduit::path::{BOND_ALIVE, Bonding, Path};
use bauxite_conduit::policy::Policy;
use bauxite_conduit::sim::TwoPathNet;
use bauxite_conduit::{Lane, Metrics};
use bauxite_netem::{GilbertElliott, Impairments};

/// One packet each way per tick: a 1 kHz control loop.
const TICK: Duration = Duration::from_millis(1);
/// The control loop's UDP port (the redundancy rule names it).
const PORT: u16 = 9000;

fn config(bonding: Bonding) -> NodeConfig {
    NodeConfig {
        bonding,
        ..NodeConfig::default()
    }
}

fn link(delay_ms: u64, loss: GilbertElliott) -> Impairments {
    Impairments {
        delay: Duration::from_millis(delay_ms),
        loss,
        ..Impairments::default()
    }
}

fn packet(net: &TwoPathNet, from: usize, id: u32, lane: Lane) -> Vec<u8> {
    let mut out = Vec::new();
    let (src, dst) = (net.vips[from].addr(), net.vips[1 - from].addr());
    // A Bulk-lane packet is padded past the small-packet rule; the lane is chosen anyway.
    let pad = if lane == Lane::Bulk { 1000 } else { 0 };
    let mut payload = id.to_be_bytes().to_vec();
    payload.resize(4 + pad, 0);
    build::ipv4_udp(src, dst, 40000, PORT, &payload, &mut out);
    out
}

/// How many times each id arrived at node `to`, from the index `from_delivery` on.
fn arrivals(net: &TwoPathNet, to: usize) -> BTreeMap<u32, usize> {
    let mut seen = BTreeMap::new();
    for d in &net.delivered[to] {
        let id = u32::from_be_bytes(d.packet[28..32].try_into().unwrap());
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Sends one packet of `lane` each way per tick for `ticks` ticks (ids from `next`),
/// calling `at_tick(net, tick)` before each, then lets the last ones land.
fn stream(
    net: &mut TwoPathNet,
    next: &mut u32,
    ticks: u32,
    lane: Lane,
    both_ways: bool,
    mut at_tick: impl FnMut(&mut TwoPathNet, u32),
) {
    for tick in 0..ticks {
        at_tick(net, tick);
        let senders: &[usize] = if both_ways { &[0, 1] } else { &[0] };
        for &from in senders {
            let p = packet(net, from, *next, lane);
            let verdict = net.nodes[from].handle_tun_packet_in(net.now, lane, &p);
            assert_eq!(verdict, TunVerdict::Queued(lane));
        }
        *next += 1;
        net.run_for(TICK);
    }
    net.run_for(Duration::from_millis(200));
}

fn counter(net: &TwoPathNet, i: usize, c: fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
    Metrics::get(c(net.nodes[i].metrics()))
}

/// Connects the nodes and waits (bounded, in virtual time) until each sees the other's
/// second path alive.
fn connect_bonded(net: &mut TwoPathNet) {
    let peer = net.nodes[1].peer_id();
    net.nodes[0].connect(net.now, peer).unwrap();
    let deadline = net.now + Duration::from_secs(5);
    while net.now < deadline {
        net.run_for(Duration::from_millis(50));
        let bonded = (0..2).all(|i| {
            let other = net.nodes[1 - i].peer_id();
            net.nodes[i]
                .peer_status(net.now)
                .iter()
                .any(|s| s.id == other && s.established && s.secondary.is_some())
        });
        if bonded {
            return;
        }
    }
    panic!("no second path within 5 s");
}

fn primary(net: &TwoPathNet, i: usize) -> Path {
    net.nodes[i].paths().select(net.nodes[1 - i].peer_id())
}

/// Every id in `ids` arrived exactly once at both nodes.
fn assert_each_once(net: &TwoPathNet, ids: std::ops::Range<u32>, what: &str) {
    for to in 0..2 {
        let seen = arrivals(net, to);
        let missing: Vec<u32> = ids.clone().filter(|id| !seen.contains_key(id)).collect();
        assert!(
            missing.is_empty(),
            "{what}: node {to} lost {} packets: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert!(
            seen.values().all(|&n| n == 1),
            "{what}: a packet was delivered twice"
        );
    }
}

#[test]
fn the_critical_lane_loses_nothing_when_either_uplink_is_cut_mid_stream() {
    let start = Instant::now();
    // Two paths of different length, as two uplinks (wired and LTE) would be.
    let mut net = TwoPathNet::new(
        config(Bonding::Critical),
        link(5, GilbertElliott::NONE),
        true,
        1,
        start,
    );
    net.impairments[1].delay = Duration::from_millis(12);
    connect_bonded(&mut net);
    assert_eq!(primary(&net, 0), Path::Direct(TwoPathNet::addr(1, 0)));
    let handshakes = counter(&net, 0, |m| &m.handshakes_completed);

    // Cut the primary path half-way through 3 s of a 1 kHz loop each way.
    let mut next = 0;
    stream(
        &mut net,
        &mut next,
        3000,
        Lane::Critical,
        true,
        |net, tick| {
            if tick == 1500 {
                net.cut[0] = true;
            }
        },
    );
    assert_each_once(&net, 0..next, "primary cut");
    assert!(net.counts[0].lost > 0, "the cut path really lost datagrams");
    for i in 0..2 {
        assert!(
            counter(&net, i, |m| &m.rx_duplicates) > 1000,
            "the second copies were dropped as duplicates"
        );
        assert_eq!(
            counter(&net, i, |m| &m.rx_replayed),
            0,
            "no copy counts as a replay"
        );
        // The path that still works became the primary (after BOND_ALIVE without the old).
        assert_eq!(primary(&net, i), Path::Direct(TwoPathNet::addr(1 - i, 1)));
    }
    assert_eq!(
        counter(&net, 0, |m| &m.handshakes_completed),
        handshakes,
        "the session was kept"
    );

    // Mend the path: it comes back as the second path; then cut the (new) primary.
    net.cut[0] = false;
    net.run_for(BOND_ALIVE);
    let status = net.nodes[0].peer_status(net.now);
    assert_eq!(
        status[0].secondary,
        Some(TwoPathNet::addr(1, 0)),
        "the mended path is bonded again"
    );
    let from = next;
    stream(
        &mut net,
        &mut next,
        3000,
        Lane::Critical,
        true,
        |net, tick| {
            if tick == 1500 {
                net.cut[1] = true;
            }
        },
    );
    assert_each_once(&net, from..next, "second cut");
    assert_eq!(
        counter(&net, 0, |m| &m.handshakes_completed),
        handshakes,
        "the session was kept"
    );
    eprintln!(
        "bonded cut: {} packets each way, path 0 {:?}, path 1 {:?}, copies sent {} ({} bytes)",
        next,
        net.counts[0],
        net.counts[1],
        counter(&net, 0, |m| &m.tx_redundant),
        counter(&net, 0, |m| &m.tx_redundant_bytes),
    );
}

#[test]
fn without_bonding_a_cut_uplink_loses_critical_packets() {
    let start = Instant::now();
    let mut net = TwoPathNet::new(
        config(Bonding::Off),
        link(5, GilbertElliott::NONE),
        true,
        2,
        start,
    );
    let peer = net.nodes[1].peer_id();
    net.nodes[0].connect(net.now, peer).unwrap();
    net.run_for(Duration::from_millis(500));
    assert!(net.nodes[0].is_connected(peer, net.now));
    let mut next = 0;
    stream(
        &mut net,
        &mut next,
        3000,
        Lane::Critical,
        true,
        |net, tick| {
            if tick == 1500 {
                net.cut[0] = true;
            }
        },
    );
    let lost = (0..next)
        .filter(|id| !arrivals(&net, 1).contains_key(id))
        .count();
    assert!(
        lost >= 1000,
        "one path, cut: the rest of the stream is lost ({lost})"
    );
    assert_eq!(
        counter(&net, 0, |m| &m.tx_redundant),
        0,
        "no copies with bonding off"
    );
    assert_eq!(
        counter(&net, 0, |m| &m.bond_probes_sent),
        0,
        "no probes with bonding off"
    );
}

#[test]
fn critical_bonding_copies_only_the_critical_lane_and_all_copies_every_lane() {
    for (bonding, bulk_copied) in [(Bonding::Critical, false), (Bonding::All, true)] {
        let start = Instant::now();
        let mut net = TwoPathNet::new(
            config(bonding),
            link(5, GilbertElliott::NONE),
            true,
            3,
            start,
        );
        connect_bonded(&mut net);
        let before = counter(&net, 0, |m| &m.tx_redundant);
        let mut next = 0;
        stream(&mut net, &mut next, 200, Lane::Bulk, false, |_, _| {});
        let copies = counter(&net, 0, |m| &m.tx_redundant) - before;
        if bulk_copied {
            assert_eq!(
                copies,
                u64::from(next),
                "{bonding:?}: one copy per bulk packet"
            );
        } else {
            assert_eq!(copies, 0, "{bonding:?}: bulk is not copied");
        }
        let seen = arrivals(&net, 1);
        assert_eq!(
            seen.len(),
            next as usize,
            "{bonding:?}: every bulk packet arrived"
        );
        assert!(seen.values().all(|&n| n == 1), "{bonding:?}: and once");
    }
}

/// A 1 kHz one-way loop for 10 s over one path with 5 % Gilbert–Elliott loss in bursts
/// of 3 datagrams on average (both directions); returns (packets lost, copies, copy bytes).
fn lossy_loop(rule: bool, second_path: bool, seed: u64) -> (usize, u64, u64) {
    let start = Instant::now();
    let loss = GilbertElliott::bursty(0.05, 3.0);
    let bonding = if second_path {
        Bonding::Critical
    } else {
        Bonding::Off
    };
    let mut net = TwoPathNet::new(config(bonding), link(10, loss), second_path, seed, start);
    if rule {
        let policy: Policy = serde_json::from_str(&format!(
            r#"{{"rules": [{{"protocol": "udp", "ports": {PORT}, "direction": "outbound", "redundancy": "duplicate"}}], "default": "allow"}}"#
        ))
        .unwrap();
        net.nodes[0].policy_mut().load(policy).unwrap();
    }
    let peer = net.nodes[1].peer_id();
    net.nodes[0].connect(net.now, peer).unwrap();
    let deadline = net.now + Duration::from_secs(10);
    while !net.nodes[0].is_connected(peer, net.now) && net.now < deadline {
        net.run_for(Duration::from_millis(50));
    }
    assert!(
        net.nodes[0].is_connected(peer, net.now),
        "connected over the lossy link"
    );
    if second_path {
        connect_bonded(&mut net);
    }
    let mut next = 0;
    stream(
        &mut net,
        &mut next,
        10_000,
        Lane::Critical,
        false,
        |_, _| {},
    );
    let seen = arrivals(&net, 1);
    assert!(
        seen.values().all(|&n| n == 1),
        "a packet was delivered twice"
    );
    let lost = (0..next).filter(|id| !seen.contains_key(id)).count();
    (
        lost,
        counter(&net, 0, |m| &m.tx_redundant),
        counter(&net, 0, |m| &m.tx_redundant_bytes),
    )
}

#[test]
fn a_duplicate_rule_keeps_a_1khz_loop_through_5_percent_bursty_loss() {
    let (off, no_copies, _) = lossy_loop(false, false, 7);
    let (on, copies, bytes) = lossy_loop(true, false, 7);
    let (bonded, bonded_copies, _) = lossy_loop(true, true, 7);
    eprintln!(
        "1 kHz x 10 s, 5 % GE loss (bursts of 3): lost {off} without redundancy, {on} with a \
         repeat {}ms later on the same path ({copies} copies, {bytes} bytes), {bonded} with a \
         copy on a second lossy path ({bonded_copies} copies)",
        bauxite_conduit::node::REPEAT_GAP.as_millis()
    );
    assert_eq!(no_copies, 0, "off by default");
    assert!(
        (300..=800).contains(&off),
        "about 5 % of 10 000 lost without it: {off}"
    );
    assert!(
        on * 5 <= off,
        "a repeat on the same path: {on} lost vs {off}"
    );
    assert!(
        bonded * 10 <= off,
        "a copy on an independent path: {bonded} lost vs {off}"
    );
    assert_eq!(copies, 10_000, "one copy per packet");
}
