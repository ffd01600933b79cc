//! Topology deltas: what changed between two snapshots, and applying it on the node.
//!
//! A change used to send every subscriber a full snapshot of N peers, so one change cost
//! the hub N² peer records. The hub now computes one delta per change ([`delta`]) and
//! sends it to every subscriber that asked for deltas; a node applies it to the snapshot it
//! holds ([`apply`]) and gets exactly the hub's new snapshot, or an error when it does not
//! hold the delta's base (it then resubscribes and starts again from a full snapshot).
//!
//! A full snapshot for a delta client goes out in [`pages`] of at most [`PAGE_PEERS`]
//! peers: tonic keeps each stream's encode buffer as large as the largest message it sent,
//! so one N-peer message per stream made the hub's memory grow as N². A
//! [`TopologyFollower`] holds pages until the version is complete.
//!
//! A follower kept across connections resumes: [`TopologyFollower::request`] names the
//! version it holds and that version's digest (sent by the hub with every complete
//! version), and a hub whose journal reaches back to it (any replica: versions are
//! numbered by the shared store, and the digest is of the peers themselves) answers with
//! one delta from there instead of the whole topology again.
//!
//! Invariants (property-tested): for snapshots `a` and `b` with peers in node-ID order,
//! `apply(a, delta(a, b))` yields `b`, and pushing `pages(b)` into a follower yields `b`
//! exactly once, at the last page.

use std::collections::BTreeMap;

use crate::proto::node::{Peer, TopologyRequest, TopologySnapshot};

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
        more: false,
        digest: new.digest.clone(),
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
    // Empty on a page that does not complete its version: such a topology is never resumed.
    held.digest = update.digest;
    Ok(())
}

/// Peers per page of a full snapshot sent to a delta client (about 100 KB).
pub const PAGE_PEERS: usize = 256;

/// `snapshot` as pages of at most `page` peers: a full snapshot with the first peers, then
/// deltas from the same version adding the rest; every page but the last says `more`.
pub fn pages(snapshot: &TopologySnapshot, page: usize) -> Vec<TopologySnapshot> {
    let page = page.max(1);
    let chunks: Vec<&[Peer]> = snapshot.peers.chunks(page).collect();
    let last = chunks.len().saturating_sub(1);
    if chunks.is_empty() {
        return vec![TopologySnapshot {
            peers: Vec::new(),
            more: false,
            ..snapshot.clone()
        }];
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, peers)| TopologySnapshot {
            version: snapshot.version,
            peers: peers.to_vec(),
            delta: i > 0,
            base_version: if i > 0 { snapshot.version } else { 0 },
            removed: Vec::new(),
            more: i < last,
            digest: if i < last {
                Vec::new()
            } else {
                snapshot.digest.clone()
            },
        })
        .collect()
}

/// Follows a topology stream: applies each message and hands out the topology only when
/// its version is complete (not in the middle of a paged snapshot).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopologyFollower {
    held: TopologySnapshot,
}

impl TopologyFollower {
    /// Applies `update`; returns the whole topology when it is complete. On error nothing
    /// changed and the stream must be opened again.
    pub fn push(
        &mut self,
        update: TopologySnapshot,
    ) -> Result<Option<&TopologySnapshot>, DeltaMismatch> {
        let more = update.more;
        apply(&mut self.held, update)?;
        self.held.more = more;
        Ok((!more).then_some(&self.held))
    }

    /// The last complete topology (empty before the first).
    pub fn current(&self) -> &TopologySnapshot {
        &self.held
    }

    /// The version held and its digest, when a whole version is held and the hub sent
    /// its digest (`None` before the first, in the middle of a paged snapshot, or from a
    /// hub that sends no digest).
    pub fn held(&self) -> Option<(u64, &[u8])> {
        (!self.held.more && !self.held.digest.is_empty())
            .then_some((self.held.version, self.held.digest.as_slice()))
    }

    /// The request that opens a topology stream with deltas, resuming from the version
    /// held (see [`held`](Self::held)) when there is one: keep the follower across
    /// reconnections, to this hub or another replica, and open each stream with this.
    pub fn request(&self) -> TopologyRequest {
        let held = self.held();
        TopologyRequest {
            deltas: true,
            held_version: held.map(|(version, _)| version),
            held_digest: held.map(|(_, digest)| digest.to_vec()).unwrap_or_default(),
        }
    }
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

    proptest! {
        #[test]
        fn a_paged_snapshot_is_whole_exactly_at_its_last_page(
            b in proptest::collection::btree_map(any::<u8>(), 0u16..4, 0..40),
            page in 1usize..12,
            version in 1u64..1000,
        ) {
            let want = snapshot(version, &b);
            let sent = pages(&want, page);
            prop_assert_eq!(sent.len(), b.len().div_ceil(page).max(1));
            prop_assert!(sent.iter().all(|p| p.peers.len() <= page));
            let mut follower = TopologyFollower::default();
            for (i, p) in sent.into_iter().enumerate() {
                let last = !p.more;
                let got = follower.push(p).unwrap().cloned();
                prop_assert_eq!(got.is_some(), last, "page {}", i);
                if let Some(got) = got {
                    prop_assert_eq!(got, want.clone());
                }
            }
            // A delta after it applies as usual.
            let next = snapshot(version + 1, &BTreeMap::new());
            prop_assert_eq!(follower.push(delta(&want, &next)).unwrap().cloned(), Some(next));
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
    fn a_follower_names_the_version_it_holds_only_when_whole_and_digested() {
        let mut want = snapshot(9, &(0..10).map(|i| (i, 0)).collect());
        want.digest = vec![7; 32];
        let mut follower = TopologyFollower::default();
        assert_eq!(follower.request().held_version, None);
        let sent = pages(&want, 4);
        assert!(sent[..2].iter().all(|p| p.digest.is_empty()));
        for p in sent {
            let last = !p.more;
            follower.push(p).unwrap();
            // In the middle of a paged snapshot nothing is resumable.
            assert_eq!(follower.held().is_some(), last);
        }
        let request = follower.request();
        assert!(request.deltas);
        assert_eq!(
            (request.held_version, request.held_digest),
            (Some(9), vec![7; 32])
        );
        // A delta carries the new version's digest; one from an older hub carries none.
        let mut next = snapshot(10, &BTreeMap::from([(1, 1)]));
        next.digest = vec![8; 32];
        follower.push(delta(&want, &next)).unwrap();
        assert_eq!(follower.held(), Some((10, [8; 32].as_slice())));
        let mut old_hub = snapshot(11, &BTreeMap::new());
        old_hub.digest.clear();
        follower.push(old_hub).unwrap();
        assert_eq!(follower.held(), None);
        assert_eq!(follower.request().held_version, None);
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
