//! The hub's topology on the simulator: `BauxiteNode::replace_peers` adds, removes and
//! re-keys peers and decides whom to dial, and reports each change as an event.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bauxite_conduit::identity::Identity;
use bauxite_conduit::ip::build;
use bauxite_conduit::metrics::Metrics;
use bauxite_conduit::node::{Event, NodeConfig, TunVerdict};
use bauxite_conduit::peers::{PeerConflict, PeerInfo};
use bauxite_conduit::sim::{LinkConfig, SimNet};

/// The simulator's default one-way latency.
const LAT: Duration = Duration::from_millis(5);
/// Slack for "at most this many one-way trips": well under a millisecond of work.
const SLACK: Duration = Duration::from_millis(1);

fn net(seed: u64, knows: [bool; 2]) -> SimNet {
    SimNet::with_endpoints(
        NodeConfig::default(),
        LinkConfig::default(),
        seed,
        Instant::now(),
        knows,
    )
}

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

fn events(net: &mut SimNet, i: usize) -> Vec<Event> {
    std::iter::from_fn(|| net.nodes[i].poll_event()).collect()
}

fn initiated(net: &SimNet, i: usize) -> u64 {
    Metrics::get(&net.nodes[i].metrics().handshakes_initiated)
}

/// A session both ways between the two nodes, and the events drained.
fn connected(net: &mut SimNet) {
    let p = udp(net, 0, 1);
    net.send_from(0, &p);
    net.run_for(LAT * 4);
    let back = udp(net, 1, 2);
    net.send_from(1, &back);
    net.run_for(LAT * 4);
    assert_eq!((ids(net, 1), ids(net, 0)), (vec![1], vec![2]));
    events(net, 0);
    events(net, 1);
}

/// A new peer in the topology is dialled at once, before any packet for it; the same
/// list again changes nothing and dials nobody.
#[test]
fn an_added_peer_is_dialled_at_once_and_a_repeat_does_nothing() {
    let mut net = net(51, [true, true]);
    let far = net.nodes[1].peer_id();
    let now = net.now;
    net.nodes[0].replace_peers(now, Vec::new());
    assert_eq!(
        events(&mut net, 0),
        vec![Event::PeerRemoved {
            peer: far,
            name: "node-1".into()
        }]
    );
    assert!(net.nodes[0].registry().is_empty());

    let view = net.view_of(1);
    net.nodes[0].replace_peers(now, vec![view.clone()]);
    assert_eq!(
        events(&mut net, 0),
        vec![Event::PeerAdded {
            peer: far,
            name: "node-1".into()
        }]
    );
    assert_eq!(
        initiated(&net, 0),
        1,
        "dialled without waiting for a packet"
    );
    net.run_for(LAT * 3);
    assert!(net.nodes[0].is_connected(far, net.now));
    assert!(net.nodes[1].is_connected(net.nodes[0].peer_id(), net.now));
    assert_eq!(
        events(&mut net, 0),
        vec![Event::HandshakeCompleted {
            peer: far,
            initiator: true
        }]
    );

    let now = net.now;
    net.nodes[0].replace_peers(now, vec![view]);
    assert_eq!(events(&mut net, 0), Vec::new(), "nothing changed");
    assert_eq!(initiated(&net, 0), 1, "nobody dialled again");
}

/// A peer dropped from the topology loses its route and its session: packets for it are
/// refused, and what it still sends under the old session is refused too.
#[test]
fn a_removed_peer_loses_its_route_and_its_session() {
    let mut net = net(52, [true, true]);
    connected(&mut net);
    let far = net.nodes[1].peer_id();
    let now = net.now;
    net.nodes[0].replace_peers(now, Vec::new());
    assert_eq!(
        events(&mut net, 0),
        vec![Event::PeerRemoved {
            peer: far,
            name: "node-1".into()
        }]
    );
    assert!(!net.nodes[0].is_connected(far, net.now));
    assert!(net.nodes[0].paths().direct(far).is_none());
    let p = udp(&net, 0, 3);
    assert_eq!(net.send_from(0, &p), TunVerdict::NoRoute);

    // The peer still has the session and uses it: the node no longer knows its index.
    let unknown = |net: &SimNet| Metrics::get(&net.nodes[0].metrics().rx_unknown_session);
    let before = unknown(&net);
    let p = udp(&net, 1, 4);
    net.send_from(1, &p);
    net.run_for(LAT * 4);
    assert_eq!(ids(&net, 0), vec![2], "nothing more delivered");
    assert_eq!(unknown(&net), before + 1, "refused as an unknown session");
    assert_eq!(ids(&net, 1), vec![1]);
}

/// A peer re-provisioned with a new static key: the topology change drops the session
/// under the old key at once (nothing is sealed under it again) and a handshake under
/// the new key starts without waiting for a packet.
#[test]
fn a_changed_static_key_drops_the_old_session_for_good() {
    let mut net = net(53, [true, true]);
    connected(&mut net);
    let far = net.nodes[1].peer_id();
    let old_indices: BTreeSet<u32> = net
        .stats
        .data_sent
        .iter()
        .filter(|(to, _, _)| *to == 1)
        .map(|(_, index, _)| *index)
        .collect();
    let sent_before = net.stats.data_sent.clone();
    assert!(!old_indices.is_empty());
    let dials = initiated(&net, 0);

    let view = net.rotate_static_key(1);
    assert_eq!(view.id, far, "same signing key, same peer ID");
    let now = net.now;
    net.nodes[0].replace_peers(now, vec![view]);
    assert_eq!(
        events(&mut net, 0),
        vec![Event::PeerKeyChanged { peer: far }]
    );
    assert!(
        !net.nodes[0].is_connected(far, net.now),
        "the old session is gone at once"
    );
    assert_eq!(initiated(&net, 0), dials + 1, "dialled under the new key");
    let p = udp(&net, 0, 5);
    net.send_from(0, &p);
    net.run_for(LAT * 4);
    assert!(net.nodes[0].is_connected(far, net.now));
    assert_eq!(
        events(&mut net, 0),
        vec![Event::HandshakeCompleted {
            peer: far,
            initiator: true
        }]
    );
    assert_eq!(
        ids(&net, 1),
        vec![1, 5],
        "the restarted peer got the packet"
    );

    let after: Vec<_> = net
        .stats
        .data_sent
        .difference(&sent_before)
        .filter(|(to, _, _)| *to == 1)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|(_, index, _)| !old_indices.contains(index)),
        "nothing sealed under the old session: {after:?}"
    );
    assert_eq!(
        Metrics::get(&net.nodes[1].metrics().rx_unknown_session),
        0,
        "the peer never saw an old-session packet"
    );
}

/// A new first address while an initiation is in flight to the old one: dialled at once
/// (not after the retry timeout), and nothing more goes to the old address.
#[test]
fn a_changed_first_address_is_dialled_at_once() {
    let mut net = net(54, [false, false]);
    let far = net.nodes[1].peer_id();
    let guess = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 9), 40009));
    let real = net.addrs[1];
    let stale = PeerInfo {
        endpoint: Some(guess),
        ..net.view_of(1)
    };
    let now = net.now;
    net.nodes[0].replace_peers(now, vec![stale]);
    assert_eq!(
        events(&mut net, 0),
        Vec::new(),
        "an update, not an addition"
    );
    assert_eq!(initiated(&net, 0), 1, "a first address: dialled");
    let p = udp(&net, 0, 1);
    net.send_from(0, &p);
    net.run_for(LAT * 2);
    assert_eq!(
        net.stats.misaddressed, 1,
        "the initiation went to the guess"
    );

    let t0 = net.now;
    let fixed = net.view_of(1).with_candidates(vec![guess]);
    net.nodes[0].replace_peers(t0, vec![fixed]);
    net.run_for(LAT * 4);
    assert!(net.nodes[0].is_connected(far, net.now));
    assert_eq!(ids(&net, 1), vec![1], "the staged packet arrived");
    assert!(
        net.delivered[1][0].at <= t0 + LAT * 3 + SLACK,
        "connected {:?} after the update",
        net.delivered[1][0].at - t0
    );
    assert_eq!(net.stats.misaddressed, 1, "nothing more to the guess");
    assert_eq!(net.nodes[0].paths().direct(far).map(|e| e.addr), Some(real));
}

/// A listed peer whose virtual IP belongs to another listed peer is refused, reported,
/// and leaves the table as it was.
#[test]
fn a_conflicting_peer_is_refused_and_reported() {
    let mut net = net(55, [true, true]);
    connected(&mut net);
    let far = net.nodes[1].peer_id();
    let impostor = Identity::from_secrets([7; 32], [8; 32]).public();
    let clash = PeerInfo::new(
        "impostor",
        net.vips[1],
        impostor.static_public,
        impostor.signing_public,
        None,
    );
    let now = net.now;
    net.nodes[0].replace_peers(now, vec![net.view_of(1), clash.clone()]);
    assert_eq!(
        events(&mut net, 0),
        vec![Event::PeerRefused {
            peer: clash.id,
            reason: PeerConflict::VirtualIpInUse {
                ip: net.vips[1],
                owner: far
            }
        }]
    );
    assert_eq!(net.nodes[0].registry().len(), 1);
    assert!(net.nodes[0].is_connected(far, net.now), "the session stays");
}

/// A connected peer whose first address moves (its NAT rebound and the hub reports the
/// new mapping) is not redialled, but gets a keepalive at its new address at once: behind
/// a NAT, that packet is what lets the peer's packets in again.
#[test]
fn a_connected_peer_that_moved_gets_a_keepalive_at_its_new_address_at_once() {
    let mut net = net(57, [true, true]);
    connected(&mut net);
    let far = net.nodes[1].peer_id();
    let new = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 77), 40077));
    net.rebind(1, new);
    let view = net.view_of(1);
    assert_eq!(view.endpoint, Some(new));
    let (now, before) = (net.now, initiated(&net, 0));
    net.nodes[0].replace_peers(now, vec![view]);
    let mut buf = vec![0u8; NodeConfig::default().datagram_capacity()];
    let sent = net.nodes[0].poll_transmit(now, &mut buf).unwrap();
    assert_eq!(
        sent.dst, new,
        "sent to the new address before anything else"
    );
    assert_eq!(
        Metrics::get(&net.nodes[0].metrics().keepalives_sent),
        1,
        "a keepalive"
    );
    assert_eq!(
        initiated(&net, 0),
        before,
        "the session is kept, not redialled"
    );
    assert!(net.nodes[0].is_connected(far, now));
    assert_eq!(events(&mut net, 0), Vec::new());
}
