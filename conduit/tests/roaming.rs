//! Endpoints on the simulator: one side knowing the other is enough, a node without an
//! endpoint waits to be dialled, simultaneous initiations with a stale address (or one the
//! peer refused before it knew us) never deadlock, a peer that moves (NAT rebinding) is
//! followed after its next authenticated packet, and nothing unauthenticated or replayed
//! moves an endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bauxite_conduit::ip::build;
use bauxite_conduit::metrics::Metrics;
use bauxite_conduit::node::{Event, NodeConfig};
use bauxite_conduit::path::{Endpoint, EndpointOrigin};
use bauxite_conduit::session::Timers;
use bauxite_conduit::sim::{Attacker, Impostor, LinkConfig, SimNet};

/// The simulator's default one-way latency.
const LAT: Duration = Duration::from_millis(5);
/// Slack for "at most this many one-way trips": well under a millisecond of work.
const SLACK: Duration = Duration::from_millis(1);

fn udp(net: &SimNet, from: usize, id: u32) -> Vec<u8> {
    let mut payload = [0u8; 200];
    payload[..4].copy_from_slice(&id.to_be_bytes());
    let mut out = Vec::new();
    let (src, dst) = (net.vips[from].addr(), net.vips[1 - from].addr());
    build::ipv4_udp(src, dst, 40000, 9000, &payload, &mut out);
    out
}

fn ids(net: &SimNet, to: usize) -> Vec<u32> {
    net.delivered[to]
        .iter()
        .map(|d| u32::from_be_bytes(d.packet[28..32].try_into().unwrap()))
        .collect()
}

/// Node `i`'s endpoint for the other node.
fn endpoint(net: &SimNet, i: usize) -> Option<Endpoint> {
    net.nodes[i].paths().direct(net.nodes[1 - i].peer_id())
}

fn learned(addr: SocketAddr) -> Option<Endpoint> {
    Some(Endpoint {
        addr,
        origin: EndpointOrigin::Learned,
    })
}

fn moved(host: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 51, 100, host), 40000 + u16::from(host)))
}

/// Whether node `i` has the lower static key (it wins simultaneous initiations).
fn lower(net: &SimNet, i: usize) -> bool {
    net.nodes[i].static_public() < net.nodes[1 - i].static_public()
}

#[test]
fn one_side_knowing_the_other_is_enough_whichever_sends_first() {
    let mut orders = BTreeSet::new();
    for knower in 0..2 {
        for knower_first in [true, false] {
            let other = 1 - knower;
            let mut knows = [false; 2];
            knows[knower] = true;
            let link = LinkConfig::default();
            let mut net =
                SimNet::with_endpoints(NodeConfig::default(), link, 21, Instant::now(), knows);
            orders.insert(lower(&net, knower));
            assert_eq!(endpoint(&net, other), None);
            let t0 = net.now;
            if !knower_first {
                // It has nowhere to send an initiation: the packet waits.
                let p = udp(&net, other, 2);
                net.send_from(other, &p);
            }
            let p = udp(&net, knower, 1);
            net.send_from(knower, &p);

            // One handshake round trip: initiation there, response back.
            net.run_until(t0 + 2 * LAT + SLACK);
            let other_id = net.nodes[other].peer_id();
            assert!(net.nodes[knower].is_connected(other_id, net.now));
            assert_eq!(endpoint(&net, other), learned(net.addrs[knower]));
            // The first data packet confirms the session; the waiting packet follows.
            net.run_until(t0 + 4 * LAT + SLACK);
            assert_eq!(ids(&net, other), vec![1]);
            let waited = if knower_first { vec![] } else { vec![2] };
            assert_eq!(ids(&net, knower), waited);
            let p = udp(&net, other, 3);
            net.send_from(other, &p);
            net.run_for(LAT + SLACK);
            assert_eq!(
                ids(&net, knower).last(),
                Some(&3),
                "traffic flows both ways"
            );
            let m = net.nodes[other].metrics();
            assert_eq!(Metrics::get(&m.handshakes_initiated), 0);
            assert_eq!(Metrics::get(&m.tx_dropped), 0);
        }
    }
    assert_eq!(orders.len(), 2, "both key orders were exercised");
}

#[test]
fn a_node_without_an_endpoint_waits_to_be_dialled_instead_of_giving_up() {
    let link = LinkConfig::default();
    let mut net = SimNet::with_endpoints(
        NodeConfig::default(),
        link,
        5,
        Instant::now(),
        [true, false],
    );
    for id in 0..5 {
        let p = udp(&net, 1, id);
        net.send_from(1, &p);
    }
    // Far past the 90 s a handshake is retried for.
    net.run_for(Duration::from_secs(200));
    let m = net.nodes[1].metrics();
    assert_eq!(
        Metrics::get(&m.handshakes_initiated),
        0,
        "no initiation towards nowhere"
    );
    assert_eq!(
        Metrics::get(&m.tx_dropped),
        0,
        "its packets are held, not dropped"
    );
    assert!(net.delivered[0].is_empty());
    while let Some(event) = net.nodes[1].poll_event() {
        assert!(!matches!(event, Event::HandshakeGaveUp { .. }), "{event:?}");
    }
    let p = udp(&net, 0, 100);
    net.send_from(0, &p);
    net.run_for(Duration::from_secs(1));
    assert_eq!(ids(&net, 0), vec![0, 1, 2, 3, 4]);
    assert_eq!(ids(&net, 1), vec![100]);
}

#[test]
fn simultaneous_initiations_with_one_stale_endpoint_never_deadlock() {
    let mut orders = BTreeSet::new();
    for mover in 0..2 {
        let stale = 1 - mover;
        let link = LinkConfig::default();
        let mut net = SimNet::new(NodeConfig::default(), link, 8, Instant::now());
        orders.insert(lower(&net, stale));
        // The mover's address changed before anything was sent: the other still has
        // the old one, and its initiation goes there.
        let new = moved(7);
        net.rebind(mover, new);
        let t0 = net.now;
        let (p, q) = (udp(&net, mover, 1), udp(&net, stale, 2));
        net.send_from(mover, &p);
        net.send_from(stale, &q);
        // A few one-way trips, not a 5 s retry (or a 90 s deadlock).
        net.run_until(t0 + 5 * LAT + SLACK);
        assert_eq!(ids(&net, stale), vec![1], "mover {mover}");
        assert_eq!(ids(&net, mover), vec![2], "mover {mover}");
        assert_eq!(endpoint(&net, stale), learned(new));
    }
    assert_eq!(orders.len(), 2, "both key orders were exercised");
}

/// One side's initiation is refused because the other does not know its key yet (its
/// peer list from the hub has not arrived); once it has, the other side initiates. If the
/// refused side is the leader (lower static key), its initiation is still pending and wins the
/// tie-break: it must go again at once, not after its 5 s retry timer.
#[test]
fn an_initiation_refused_before_the_peer_knew_us_completes_when_the_peer_initiates() {
    let mut orders = BTreeSet::new();
    for refused in 0..2 {
        let other = 1 - refused;
        let link = LinkConfig::default();
        let mut net = SimNet::new(NodeConfig::default(), link, 13, Instant::now());
        orders.insert(lower(&net, refused));
        let refused_id = net.nodes[refused].peer_id();
        let info = net.nodes[other].remove_peer(refused_id).unwrap();
        let t0 = net.now;
        let p = udp(&net, refused, 1);
        net.send_from(refused, &p);
        net.run_until(t0 + LAT + SLACK);
        let rejected =
            |net: &SimNet, i: usize| Metrics::get(&net.nodes[i].metrics().handshakes_rejected);
        assert_eq!(rejected(&net, other), 1, "refused {refused}: unknown key");

        net.nodes[other].upsert_peer(info).unwrap();
        let t1 = net.now;
        let q = udp(&net, other, 2);
        net.send_from(other, &q);
        // Its initiation, the leader's (again), the response, the first data and the
        // data that waited: a few one-way trips, far below the retry timer.
        net.run_until(t1 + 5 * LAT + SLACK);
        assert!(t1 + 5 * LAT + SLACK < t0 + Timers::default().rekey_timeout);
        assert_eq!(ids(&net, other), vec![1], "refused {refused}");
        assert_eq!(ids(&net, refused), vec![2], "refused {refused}");
        for i in 0..2 {
            let m = net.nodes[i].metrics();
            assert_eq!(
                Metrics::get(&m.handshakes_initiated),
                1,
                "refused {refused}: node {i} started no second handshake"
            );
            assert_eq!(Metrics::get(&m.tx_dropped), 0);
        }
        assert_eq!(rejected(&net, refused), 0, "refused {refused}");
    }
    assert_eq!(orders.len(), 2, "both key orders were exercised");
}

/// Both sides initiate at the same instant and both initiations arrive: the leader sends
/// its own again when the follower's reaches it, and the follower, which has already
/// answered the original, refuses the copy as stale. One session, no second handshake,
/// no slower than before.
#[test]
fn crossing_initiations_form_one_session_and_the_resent_copy_is_refused_as_stale() {
    let mut orders = BTreeSet::new();
    for seed in 0..8 {
        let link = LinkConfig::default();
        let mut net = SimNet::new(NodeConfig::default(), link, seed, Instant::now());
        let leader = usize::from(!lower(&net, 0));
        let follower = 1 - leader;
        orders.insert(leader);
        let t0 = net.now;
        let (p, q) = (udp(&net, 0, 1), udp(&net, 1, 2));
        net.send_from(0, &p);
        net.send_from(1, &q);
        // Initiations cross, the leader's is answered, first data, the data that waited.
        net.run_until(t0 + 4 * LAT + SLACK);
        assert_eq!(ids(&net, 1), vec![1], "seed {seed}");
        assert_eq!(ids(&net, 0), vec![2], "seed {seed}");
        for i in 0..2 {
            let m = net.nodes[i].metrics();
            assert_eq!(Metrics::get(&m.handshakes_initiated), 1, "seed {seed}");
            assert_eq!(Metrics::get(&m.handshakes_completed), 1, "seed {seed}");
            let stale_copies = u64::from(i == follower);
            assert_eq!(Metrics::get(&m.handshakes_rejected), stale_copies);
        }
    }
    assert_eq!(orders.len(), 2, "both key orders were exercised");
}

#[test]
fn a_rebound_peer_is_followed_after_its_next_authenticated_packet() {
    let link = LinkConfig::default();
    let mut net = SimNet::new(NodeConfig::default(), link, 13, Instant::now());
    let (a, b) = (0, 1);
    let old = net.addrs[a];
    let mut next = 0u32;
    let mut exchange = |net: &mut SimNet, from: usize, n: u32| {
        for _ in 0..n {
            let p = udp(net, from, next);
            next += 1;
            net.send_from(from, &p);
            net.run_for(Duration::from_millis(2));
        }
        net.run_for(LAT + SLACK);
    };
    exchange(&mut net, a, 10);
    exchange(&mut net, b, 10);
    assert_eq!((ids(&net, a).len(), ids(&net, b).len()), (10, 10));
    assert_eq!(endpoint(&net, b).map(|e| e.addr), Some(old));

    net.rebind(a, moved(9));
    // Until A speaks, B keeps sending to where A was: those are lost, for now.
    exchange(&mut net, b, 5);
    assert_eq!(ids(&net, a).len(), 10);
    assert!(net.stats.misaddressed >= 5);
    assert_eq!(endpoint(&net, b).map(|e| e.addr), Some(old));
    // One authenticated packet from the new address, and B follows.
    exchange(&mut net, a, 1);
    assert_eq!(endpoint(&net, b), learned(moved(9)));
    exchange(&mut net, b, 5);
    // B's traffic reaches A again, and the five sent while A moved too: the first packet
    // after the gap made A ask for them (loss repair, on by default), and B still kept
    // them.
    assert_eq!(ids(&net, a).len(), 20, "B's traffic reaches A again");
    assert_eq!(Metrics::get(&net.nodes[b].metrics().bulk_repairs_sent), 5);
    assert_eq!(ids(&net, b).len(), 11);
}

#[test]
fn replayed_or_forged_packets_from_elsewhere_never_move_an_endpoint() {
    let impostor = moved(66);
    // Rekey every 20 packets, so initiations (which the impostor replays) keep coming.
    let config = NodeConfig {
        timers: Timers {
            rekey_after_messages: 20,
            ..Timers::default()
        },
        ..NodeConfig::default()
    };
    let mut net = SimNet::new(config, LinkConfig::default(), 17, Instant::now());
    net.attacker = Attacker {
        replay_every: 3,
        tamper_every: 4,
    };
    net.impostor = Some(Impostor {
        from: impostor,
        replay_handshakes: true,
    });
    let genuine = net.addrs;
    for id in 0..400u32 {
        let from = (id % 2) as usize;
        let p = udp(&net, from, id);
        net.send_from(from, &p);
        // Checked after every step: a replay accepted even once would show here before
        // the next genuine packet could move the endpoint back.
        for _ in 0..3 {
            net.run_for(Duration::from_millis(1));
            for i in 0..2 {
                let e = endpoint(&net, i).unwrap();
                assert_eq!(e.addr, genuine[1 - i], "node {i} moved its peer to {e:?}");
            }
        }
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(ids(&net, 0).len() + ids(&net, 1).len(), 400);
    let s = &net.stats;
    assert!(s.replays_injected > 50 && s.tampers_injected > 50, "{s:?}");
    assert!(s.handshake_replays_injected >= 5, "{s:?}");
    let sum = |f: fn(&Metrics) -> &std::sync::atomic::AtomicU64| -> u64 {
        net.nodes.iter().map(|n| Metrics::get(f(n.metrics()))).sum()
    };
    // A replay of a recent packet is refused as a duplicate (its counter is in the window).
    assert!(sum(|m| &m.rx_replayed) + sum(|m| &m.rx_duplicates) >= s.replays_injected);
    assert!(sum(|m| &m.rx_auth_failed) + sum(|m| &m.rx_unknown_session) > 0);
    // Each replayed initiation was refused as stale, not answered.
    assert!(sum(|m| &m.handshakes_rejected) >= s.handshake_replays_injected);
}

/// A peer known by several candidate addresses (as the hub sends them: advertised,
/// observed, local) of which only the last is where it listens: the retried handshake
/// rotates through them and connects, with no endpoint on the other side at all.
#[test]
fn a_peer_with_three_candidates_of_which_only_the_last_works_connects() {
    let timers = Timers::default();
    let config = NodeConfig {
        timers,
        ..NodeConfig::default()
    };
    let mut net = SimNet::with_endpoints(
        config,
        LinkConfig::default(),
        33,
        Instant::now(),
        [false, false],
    );
    let far = net.nodes[1].peer_id();
    let dead = [moved(7), moved(8)];
    let real = net.addrs[1];
    let view = net.nodes[0].registry().by_id(far).cloned().unwrap();
    let view = bauxite_conduit::peers::PeerInfo {
        endpoint: Some(dead[0]),
        ..view
    }
    .with_candidates(vec![dead[1], real]);
    net.nodes[0].upsert_peer(view).unwrap();
    assert_eq!(
        net.nodes[0].paths().candidates(far),
        &[dead[0], dead[1], real]
    );
    let t0 = net.now;
    let p = udp(&net, 0, 1);
    net.send_from(0, &p);
    net.run_for(timers.rekey_timeout * 3);
    // Two unanswered initiations (one per dead address), then the third answers: two
    // retry intervals, then initiation, response and the staged packet (three trips).
    assert_eq!(ids(&net, 1), vec![1], "the staged packet arrived");
    assert!(net.nodes[0].is_connected(far, net.now));
    assert_eq!(
        net.stats.misaddressed, 2,
        "one initiation to each dead address"
    );
    assert_eq!(
        Metrics::get(&net.nodes[0].metrics().handshakes_initiated),
        3
    );
    let done = net.delivered[1][0].at;
    assert!(
        done <= t0 + timers.rekey_timeout * 2 + LAT * 3 + SLACK,
        "connected after {:?}",
        done - t0
    );
    // The working address is where packets go now; the other side learned ours.
    assert_eq!(endpoint(&net, 0).map(|e| e.addr), Some(real));
    assert_eq!(endpoint(&net, 1), learned(net.addrs[0]));
    // And the session carries traffic both ways.
    let back = udp(&net, 1, 2);
    net.send_from(1, &back);
    net.run_for(LAT * 4);
    assert_eq!(ids(&net, 0), vec![2]);
}

/// A topology update that puts a new address first while an initiation is in flight to
/// the old one (a node behind NAT reported its server-reflexive address a moment after
/// its peer dialled the guess): `redial` sends a new initiation there at once, rather
/// than after the retry timeout — which would also have rotated to the next candidate.
#[test]
fn a_new_first_address_is_dialled_at_once_over_an_initiation_in_flight() {
    let timers = Timers::default();
    let config = NodeConfig {
        timers,
        ..NodeConfig::default()
    };
    let mut net = SimNet::with_endpoints(
        config,
        LinkConfig::default(),
        34,
        Instant::now(),
        [false, false],
    );
    let far = net.nodes[1].peer_id();
    let (guess, real) = (moved(9), net.addrs[1]);
    let view = net.nodes[0].registry().by_id(far).cloned().unwrap();
    let stale = bauxite_conduit::peers::PeerInfo {
        endpoint: Some(guess),
        ..view.clone()
    };
    net.nodes[0].upsert_peer(stale).unwrap();
    let p = udp(&net, 0, 1);
    net.send_from(0, &p);
    net.run_for(LAT * 2);
    assert_eq!(
        net.stats.misaddressed, 1,
        "the first initiation went to the guess"
    );
    assert!(!net.nodes[0].is_connected(far, net.now));

    let t0 = net.now;
    let fixed = bauxite_conduit::peers::PeerInfo {
        endpoint: Some(real),
        ..view
    }
    .with_candidates(vec![guess]);
    net.nodes[0].upsert_peer(fixed).unwrap();
    net.nodes[0].redial(t0, far).unwrap();
    net.run_for(LAT * 4);
    assert_eq!(ids(&net, 1), vec![1], "the staged packet arrived");
    assert!(net.nodes[0].is_connected(far, net.now));
    assert!(
        net.delivered[1][0].at <= t0 + LAT * 3 + SLACK,
        "connected {:?} after the update",
        net.delivered[1][0].at - t0
    );
    assert_eq!(net.stats.misaddressed, 1, "nothing more to the guess");
    assert_eq!(endpoint(&net, 0).map(|e| e.addr), Some(real));
}
