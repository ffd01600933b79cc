//! A two-way Critical-lane packet stream over the simulator, shared by the relay tests
//! (`hub_relay.rs`, `turn_sim.rs`): each packet carries an id, so a test can count what
//! arrived, twice or not at all, across a path change.

use std::collections::BTreeMap;
use std::time::Duration;

use bauxite_conduit::Lane;
use bauxite_conduit::ip::build;
use bauxite_conduit::node::{Event, TunVerdict};
use bauxite_conduit::path::Path;
use bauxite_conduit::sim::SimNet;

/// The simulator step between two packets of the stream.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// A small UDP packet (Critical lane) from node `from` to node `to` carrying `id`.
pub(crate) fn packet(net: &SimNet, from: usize, to: usize, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let (src, dst) = (net.vips[from].addr(), net.vips[to].addr());
    build::ipv4_udp(src, dst, 40000, 9000, &id.to_be_bytes(), &mut out);
    out
}

/// How many times each id arrived at node `to`.
pub(crate) fn arrivals(net: &SimNet, to: usize) -> BTreeMap<u32, usize> {
    let mut seen = BTreeMap::new();
    for d in &net.delivered[to] {
        let id = u32::from_be_bytes(d.packet[28..32].try_into().unwrap());
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Both nodes send one Critical packet to each other every tick (ids from `next`), for
/// at most `limit`, until `done` holds. Returns whether it did.
pub(crate) fn stream_until(
    net: &mut SimNet,
    next: &mut u32,
    limit: Duration,
    done: impl Fn(&SimNet) -> bool,
) -> bool {
    let end = net.now + limit;
    while net.now < end {
        for (from, to) in [(0, 1), (1, 0)] {
            let p = packet(net, from, to, *next);
            let verdict = net.nodes[from].handle_tun_packet_in(net.now, Lane::Critical, &p);
            assert_eq!(verdict, TunVerdict::Queued(Lane::Critical));
        }
        *next += 1;
        net.run_for(TICK);
        if done(net) {
            return true;
        }
    }
    false
}

pub(crate) fn path(net: &SimNet, i: usize) -> Path {
    let other = net.nodes[1 - i].peer_id();
    net.nodes[i].paths().select(other)
}

pub(crate) fn events(net: &mut SimNet, i: usize) -> Vec<Event> {
    std::iter::from_fn(|| net.nodes[i].poll_event()).collect()
}
