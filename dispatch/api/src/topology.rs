//! Topology deltas: what changed between two snapshots, and applying it on the node.
//!
//! A change used to send every subscriber a full snapshot of N peers, so one change cost
//! the hub N² peer records. The hub now computes one delta per change ([`delta`]) and
//! sends it to every subscriber that asked for deltas; a node applies it to the snapshot it
//! holds ([`apply`]) and gets exactly the hub's new snapshot, or an error when it does not
//! hold the delta's base (it then resubscribes and starts again from a full snapshot).
//!
//! Invariant (property-tested): for snapshots `a` and `b` with peers in node-ID order,
//! `apply(a, delta(a, b))` yields `b`.

use std::collections::BTreeMap;

use crate::proto::node::{Peer, TopologySnapshot};

/// A delta that does not apply to the snapshot the node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "topology delta for version {base} does not apply to the held version {held}; resubscribe for a full snapshot"
)]
pub struct DeltaMismatch {
    /// The version the delta applies to.
    pub base: u64,
    /// The version the node holds.
    pub held: u64,
}

/// The delta from `old` to `new`: peers of `new` that are new or differ from `old`, and
/// the IDs of `old`'s peers that `new` lacks. Both snapshots must list peers in node-ID
/// order (the hub's always do).
pub fn delta(old: &TopologySnapshot, new: &TopologySnapshot) -> TopologySnapshot {
    let before: BTreeMap<&str, &Peer> = old.peers.iter().map(|p| (p.node_id.as_str(), p)).collect();
    let after: BTreeMap<&str, &Peer> = new.peers.iter().map(|p| (p.node_id.as_str(), p)).collect();
    TopologySnapshot {
        version: new.version,
        peers: new
            .peers
            .iter()
            .filter(|p| before.get(p.node_id.as_str()) != Some(p))
            .cloned()
            .collect(),
        delta: true,
        base_version: old.version,
        removed: old
            .peers
            .iter()
            .filter(|p| !after.contains_key(p.node_id.as_str()))
            .map(|p| p.node_id.clone())
            .collect(),
    }
}

/// Applies `update` to `held`: a full snapshot replaces it; a delta must have `held`'s
/// version as its base. On error `held` is unchanged.
pub fn apply(held: &mut TopologySnapshot, update: TopologySnapshot) -> Result<(), DeltaMismatch> {
    if !update.delta {
        *held = update;
        return Ok(());
    }
    if update.base_version != held.version {
        return Err(DeltaMismatch {
            base: update.base_version,
            held: held.version,
        });
    }
    let mut peers: BTreeMap<String, Peer> = std::mem::take(&mut held.peers)
        .into_iter()
        .map(|p| (p.node_id.clone(), p))
        .collect();
    for id in &update.removed {
        peers.remove(id);
    }
    for peer in update.peers {
        peers.insert(peer.node_id.clone(), peer);
    }
    held.peers = peers.into_values().collect();
    held.version = update.version;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(id: u8, endpoint: u16) -> Peer {
        Peer {
            node_id: format!("{id:02x}"),
            name: format!("n{id}"),
            endpoint: format!("192.0.2.1:{endpoint}"),
            ..Peer::default()
        }
    }

    fn snapshot(version: u64, peers: &BTreeMap<u8, u16>) -> TopologySnapshot {
        TopologySnapshot {
            version,
            peers: peers.iter().map(|(id, ep)| peer(*id, *ep)).collect(),
            ..TopologySnapshot::default()
        }
    }

    proptest! {
        #[test]
        fn applying_the_delta_yields_the_new_snapshot(
            a in proptest::collection::btree_map(any::<u8>(), 0u16..4, 0..40),
            b in proptest::collection::btree_map(any::<u8>(), 0u16..4, 0..40),
            va in 0u64..1000,
        ) {
            let (old, new) = (snapshot(va, &a), snapshot(va + 1, &b));
            let d = delta(&old, &new);
            // Only what changed travels.
            let unchanged = b.iter().filter(|(id, ep)| a.get(id) == Some(ep)).count();
            prop_assert_eq!(d.peers.len(), b.len() - unchanged);
            let mut held = old.clone();
            apply(&mut held, d).unwrap();
            prop_assert_eq!(held, new);
        }
    }

    #[test]
    fn a_delta_for_another_base_is_refused_and_changes_nothing() {
        let old = snapshot(4, &BTreeMap::from([(1, 0)]));
        let new = snapshot(6, &BTreeMap::from([(1, 1), (2, 0)]));
        let mut held = snapshot(5, &BTreeMap::from([(1, 0)]));
        let before = held.clone();
        assert_eq!(
            apply(&mut held, delta(&old, &new)),
            Err(DeltaMismatch { base: 4, held: 5 })
        );
        assert_eq!(held, before);
        // A full snapshot always applies.
        apply(&mut held, new.clone()).unwrap();
        assert_eq!(held, new);
    }

    #[test]
    fn a_removed_peer_is_listed_and_dropped() {
        let old = snapshot(1, &BTreeMap::from([(1, 0), (2, 0)]));
        let new = snapshot(2, &BTreeMap::from([(2, 0)]));
        let d = delta(&old, &new);
        assert_eq!(d.removed, vec!["01".to_string()]);
        assert!(d.peers.is_empty());
        let mut held = old;
        apply(&mut held, d).unwrap();
        assert_eq!(held, new);
    }
}
