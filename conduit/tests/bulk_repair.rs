//! Loss repair of the bulk lane in the simulator: bulk lost on the link is repaired and
//! delivered once, in order, while the Critical lane is never held behind a hole; and a
//! node that does not repair (an older one) gets plain bulk and sends none of the frames.
//! Every assertion counts what the run really delivered, by packet id.

#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use bauxite_conduit::ip::build;
use bauxite_conduit::node::{NodeConfig, TunVerdict};
use bauxite_conduit::sim::{Delivered, LinkConfig, SimNet};
use bauxite_conduit::{Lane, Metrics, VirtualIp};

const LATENCY: Duration = Duration::from_millis(10);
/// Bulk packets sent in each run.
const BULK: u32 = 3000;
/// The bulk and control-loop UDP ports (the loop's packets are small: Critical lane).
const BULK_PORT: u16 = 40000;
const LOOP_PORT: u16 = 9000;

fn link(loss: f64) -> LinkConfig {
    LinkConfig {
        latency: LATENCY,
        loss,
        rate_bps: Some(20_000_000),
        ..LinkConfig::default()
    }
}

fn udp(net: &SimNet, dst_port: u16, id: u32, pad: usize) -> Vec<u8> {
    udp_between(net, (0, 1), dst_port, id, pad)
}

/// A UDP packet from node `from` to node `to` carrying `id` and `pad` bytes more.
fn udp_between<const N: usize>(
    net: &SimNet<N>,
    (from, to): (usize, usize),
    dst_port: u16,
    id: u32,
    pad: usize,
) -> Vec<u8> {
    let ip = |v: VirtualIp| v.addr();
    let mut payload = id.to_be_bytes().to_vec();
    payload.resize(4 + pad, 0);
    let mut out = Vec::new();
    build::ipv4_udp(
        ip(net.vips[from]),
        ip(net.vips[to]),
        BULK_PORT,
        dst_port,
        &payload,
        &mut out,
    );
    out
}

/// Peers of node 0 in the node-wide bound tests: 512 packets each would be 4608, over
/// the 4096 a node keeps or holds.
const PEERS: usize = 9;

/// Node 0 and [`PEERS`] peers, all public, on `link`.
fn hub(config: NodeConfig, link: LinkConfig, seed: u64) -> SimNet<{ PEERS + 1 }> {
    use bauxite_conduit::sim::NodeSpec;
    SimNet::build(
        config,
        link,
        seed,
        Instant::now(),
        [NodeSpec::public(); PEERS + 1],
    )
}

fn id_and_port(d: &Delivered) -> (u32, u16) {
    let port = u16::from_be_bytes([d.packet[22], d.packet[23]]);
    (
        u32::from_be_bytes(d.packet[28..32].try_into().unwrap()),
        port,
    )
}

/// What a run delivered to node 1: the bulk ids in delivery order, and each loop
/// packet's one-way delay.
struct Outcome {
    bulk: Vec<u32>,
    loop_delays: Vec<Duration>,
    loop_sent: usize,
}

/// Node 0 sends [`BULK`] numbered bulk packets (its bulk lane kept fed) beside a 1 kHz
/// loop of small packets; then the run drains.
fn run(net: &mut SimNet) -> Outcome {
    let start = net.now;
    // The session comes up first.
    net.send_from(0, &udp(net, LOOP_PORT, u32::MAX, 0));
    net.run_for(Duration::from_millis(500));
    let first = net.delivered[1].len();
    let (mut next, mut tick) = (0u32, 0u32);
    let mut loop_sent_at = Vec::new();
    let deadline = start + Duration::from_secs(20);
    while next < BULK && net.now < deadline {
        while next < BULK && net.nodes[0].scheduler().len(Lane::Bulk) < 64 {
            let packet = udp(net, BULK_PORT, next, 1000);
            assert_eq!(net.send_from(0, &packet), TunVerdict::Queued(Lane::Bulk));
            next += 1;
        }
        let ping = udp(net, LOOP_PORT, tick, 0);
        assert_eq!(net.send_from(0, &ping), TunVerdict::Queued(Lane::Critical));
        loop_sent_at.push(net.now);
        tick += 1;
        let step = net.now + Duration::from_millis(1);
        net.run_until(step);
        net.now = net.now.max(step);
    }
    assert_eq!(next, BULK, "the bulk was sent within the run");
    net.run_for(Duration::from_secs(2));
    let mut outcome = Outcome {
        bulk: Vec::new(),
        loop_delays: Vec::new(),
        loop_sent: loop_sent_at.len(),
    };
    for d in &net.delivered[1][first..] {
        match id_and_port(d) {
            (u32::MAX, LOOP_PORT) => {}
            (id, BULK_PORT) => outcome.bulk.push(id),
            (id, LOOP_PORT) => outcome.loop_delays.push(d.at - loop_sent_at[id as usize]),
            other => panic!("unexpected packet {other:?}"),
        }
    }
    outcome
}

fn metric(net: &SimNet, i: usize, counter: fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
    Metrics::get(counter(net.nodes[i].metrics()))
}

/// 1 % of the datagrams lost each way (acks and NACKs too): every bulk packet arrives,
/// once and in order, because each loss was repaired within the receiver's wait; the
/// loop's packets are lost as they fall (no repair for them) and never wait behind a hole.
#[test]
fn lost_bulk_is_repaired_in_order_and_the_loop_never_waits_behind_it() {
    let mut net = SimNet::new(NodeConfig::default(), link(0.01), 11, Instant::now());
    let outcome = run(&mut net);
    let repairs = metric(&net, 0, |m| &m.bulk_repairs_sent);
    let held = metric(&net, 1, |m| &m.bulk_held);
    assert!(
        repairs >= 10,
        "about 1 % of {BULK} bulk packets repaired: {repairs}"
    );
    assert!(held > 0, "packets waited behind the holes");
    assert_eq!(metric(&net, 1, |m| &m.bulk_given_up), 0);
    assert_eq!(
        outcome.bulk,
        (0..BULK).collect::<Vec<_>>(),
        "every bulk packet, once, in order"
    );
    // The loop: some lost (1 %), none held. A hole's wait is 1.5 round trips (30 ms
    // here); a loop packet never waits more than the link's delay and a packet's time
    // on the wire behind the bulk in flight.
    let lost = outcome.loop_sent - outcome.loop_delays.len();
    assert!(lost > 0 && lost < outcome.loop_sent / 20, "lost {lost}");
    let worst = outcome.loop_delays.iter().max().unwrap();
    assert!(
        *worst < LATENCY + Duration::from_millis(5),
        "a loop packet waited {worst:?}"
    );
}

/// The same loss with repair off on `node` (an older node, or `bulk_repair = false`):
/// the bulk is plain, nothing is held, NACKed or repaired, no node gets a frame it cannot
/// read, and the losses stay losses (the TCP above repairs them), the rest in order.
fn plain_bulk_when_node_does_not_repair(node: usize) {
    let mut net = SimNet::new(NodeConfig::default(), link(0.01), 11, Instant::now());
    net.restart_with(
        node,
        NodeConfig {
            bulk_repair: false,
            ..NodeConfig::default()
        },
    );
    let outcome = run(&mut net);
    assert_eq!(metric(&net, 1, |m| &m.bulk_nacks_sent), 0);
    assert_eq!(metric(&net, 1, |m| &m.bulk_held), 0);
    assert_eq!(metric(&net, 0, |m| &m.bulk_repairs_sent), 0);
    for i in 0..2 {
        assert_eq!(
            metric(&net, i, |m| &m.rx_malformed),
            0,
            "no frame node {i} cannot read"
        );
    }
    let lost = BULK as usize - outcome.bulk.len();
    assert!(lost > 0 && lost < BULK as usize / 20, "lost {lost}");
    assert!(outcome.bulk.windows(2).all(|w| w[0] < w[1]), "in order");
}

/// A receiver that does not repair never says it reads numbered bulk: it gets plain bulk.
#[test]
fn a_receiver_that_does_not_repair_gets_plain_bulk() {
    plain_bulk_when_node_does_not_repair(1);
}

/// A sender that does not repair ignores the receiver's hellos: plain bulk, no repair.
#[test]
fn a_sender_that_does_not_repair_sends_plain_bulk() {
    plain_bulk_when_node_does_not_repair(0);
}

/// The receiver restarts with repair off mid-run (a downgrade): the sender's new session
/// carries plain bulk, which the restarted node delivers.
#[test]
fn a_peer_that_restarts_without_repair_gets_plain_bulk_on_its_new_session() {
    let mut net = SimNet::new(NodeConfig::default(), link(0.0), 3, Instant::now());
    let before = run(&mut net);
    assert_eq!(before.bulk.len(), BULK as usize);
    net.restart_with(
        1,
        NodeConfig {
            bulk_repair: false,
            ..NodeConfig::default()
        },
    );
    // The restarted node dials: it has something to send.
    let mut hello = Vec::new();
    build::ipv4_udp(
        net.vips[1].addr(),
        net.vips[0].addr(),
        LOOP_PORT,
        LOOP_PORT,
        &[0; 8],
        &mut hello,
    );
    net.send_from(1, &hello);
    let after = run(&mut net);
    assert_eq!(
        after.bulk,
        (0..BULK).collect::<Vec<_>>(),
        "every bulk packet through the new session"
    );
    assert_eq!(metric(&net, 1, |m| &m.rx_malformed), 0);
}

/// A hub streaming bulk to many peers at once keeps at most
/// [`NODE_KEEP_MAX`](bauxite_conduit::path::repair::NODE_KEEP_MAX) packets for repair in
/// all (512 per peer would be 4608 for nine), and gives every one back once kept packets
/// expire: the node-wide count is exact, not only bounded.
#[test]
fn the_copies_kept_for_repair_are_bounded_node_wide_and_given_back() {
    use bauxite_conduit::path::repair::{KEEP_FOR, KEEP_SLOTS, NODE_KEEP_MAX};
    const { assert!(PEERS * KEEP_SLOTS > NODE_KEEP_MAX) };
    let fast = LinkConfig {
        latency: LATENCY,
        ..LinkConfig::default()
    };
    let mut net = hub(NodeConfig::default(), fast, 7);
    let packets: Vec<Vec<u8>> = (1..=PEERS)
        .map(|to| udp_between(&net, (0, to), BULK_PORT, 0, 996))
        .collect();
    // Sessions (and the peers' hellos) first.
    for packet in &packets {
        net.send_from(0, packet);
    }
    net.run_for(Duration::from_millis(500));
    let (mut most, mut sent) = (0, 0u32);
    let until = net.now + Duration::from_secs(2);
    while net.now < until {
        for (packet, to) in packets.iter().zip(1..) {
            let peer = net.nodes[to].peer_id();
            while net.nodes[0].scheduler().bulk_len_for(peer) < 64 {
                assert_eq!(net.send_from(0, packet), TunVerdict::Queued(Lane::Bulk));
                sent += 1;
            }
        }
        net.run_for(Duration::from_millis(1));
        let (kept, _) = net.nodes[0].repair_buffers();
        assert!(kept <= NODE_KEEP_MAX, "{kept} packets kept");
        most = most.max(kept);
    }
    assert_eq!(most, NODE_KEEP_MAX, "the bound was reached ({sent} sent)");
    assert!(
        Metrics::get(&net.nodes[0].metrics().bulk_unkept) > 0,
        "and counted"
    );
    // Bulk stops; every kept packet expires and the count comes back to zero.
    net.run_for(KEEP_FOR + Duration::from_millis(100));
    assert_eq!(net.nodes[0].repair_buffers(), (0, 0));
    for to in 1..=PEERS {
        assert_eq!(
            net.nodes[to].repair_buffers(),
            (0, 0),
            "peer {to} holds nothing"
        );
    }
}

/// A node receiving lossy bulk from many peers at once holds at most
/// [`NODE_HOLD_MAX`](bauxite_conduit::path::repair::NODE_HOLD_MAX) packets behind holes
/// in all: beyond it a peer's holes are given up and what waited is delivered. Every
/// packet is delivered at most once, and nothing stays held once the senders stop.
#[test]
fn the_packets_held_behind_holes_are_bounded_node_wide() {
    use bauxite_conduit::path::repair::{HOLD_SLOTS, NODE_HOLD_MAX};
    const { assert!(PEERS * HOLD_SLOTS > NODE_HOLD_MAX) };
    // Long and lossy: each hole waits a long round trip for its repair, and holes are
    // many.
    let lossy = LinkConfig {
        latency: Duration::from_millis(60),
        loss: 0.05,
        ..LinkConfig::default()
    };
    // Unpaced bulk (no bulk controller), so the senders keep sending into the losses.
    let unpaced = NodeConfig {
        bulk_target: None,
        ..NodeConfig::default()
    };
    let mut net = hub(unpaced, lossy, 11);
    let packet_from = |net: &SimNet<{ PEERS + 1 }>, from: usize, id: u32| {
        udp_between(net, (from, 0), BULK_PORT, id, 996)
    };
    for from in 1..=PEERS {
        net.send_from(from, &packet_from(&net, from, u32::MAX));
    }
    net.run_for(Duration::from_secs(1));
    let mut next = [0u32; PEERS + 1];
    let mut most = 0;
    let until = net.now + Duration::from_secs(1);
    while net.now < until {
        for (from, next) in next.iter_mut().enumerate().skip(1) {
            // 16 packets a millisecond each: holes hold more than a peer's 512 slots.
            while net.nodes[from].scheduler().len(Lane::Bulk) < 16 {
                let packet = packet_from(&net, from, *next);
                assert_eq!(net.send_from(from, &packet), TunVerdict::Queued(Lane::Bulk));
                *next += 1;
            }
        }
        net.run_for(Duration::from_millis(1));
        let (_, held) = net.nodes[0].repair_buffers();
        assert!(held <= NODE_HOLD_MAX, "{held} packets held");
        most = most.max(held);
    }
    // Unbounded, nine peers would hold up to 4608; the node stops at its bound.
    assert!(
        most > NODE_HOLD_MAX * 9 / 10,
        "the bound was reached: {most}"
    );
    assert!(
        Metrics::get(&net.nodes[0].metrics().bulk_hold_overflows) > 0,
        "and counted"
    );
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.nodes[0].repair_buffers().1, 0, "nothing stays held");
    // Each sender's packets reached node 0 at most once.
    let mut seen = std::collections::HashSet::new();
    for d in &net.delivered[0] {
        let (id, port) = id_and_port(d);
        if port == BULK_PORT && id != u32::MAX {
            let from = d.packet[15];
            assert!(seen.insert((from, id)), "{id} from .{from} delivered twice");
        }
    }
    assert!(seen.len() > 1000, "bulk flowed: {}", seen.len());
}
