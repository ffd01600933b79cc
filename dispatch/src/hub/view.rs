//! The published topology: one immutable version of every active peer, shared by all
//! subscribers, updated per changed node.
//!
//! Invariant: a [`TopologyView`] never changes once published; the next version is made
//! by [`TopologyView::update`] from the nodes a change touched, in O(touched · log N), and
//! shares every untouched peer with the version before it (a persistent map of `Arc`s).
//! The delta a change sends subscribers is made from the same touched nodes, so no
//! change costs O(N) under the hub's writers lock (rebuilding and diffing a full snapshot
//! did, O(N²) over a join storm). A full snapshot is built only on demand, once per
//! version ([`TopologyView::snapshot`]), and a delta client's first topology is cut into
//! [`page`](TopologyView::page)s as its stream sends them, so a stream holds one page and
//! a reference to the shared version, never a copy of N peers.
//!
//! Each version also has a [`TopologyDigest`] of its peers (XOR of one hash per peer, kept
//! up to date per touched peer), sent with every message that completes a version: a node
//! that reconnects names its version and digest, and a hub (this replica or another) resumes
//! it with a delta only when its own version of that number has the same peers.

use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::proto::node::{Peer, TopologySnapshot};
use imbl::OrdMap;

/// A digest of one topology version's peers: the XOR of a BLAKE3 hash of each peer's
/// protobuf encoding. Equal peers give equal digests whatever the history that led to them
/// (so every replica agrees), and it is kept in O(1) per touched peer. Not a commitment
/// against an adversary (XOR sums can be steered): it guards against applying a delta to
/// a topology from another history (a restored store, a diverged replica), where a
/// mismatch only costs a full snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopologyDigest(pub [u8; 32]);

impl TopologyDigest {
    /// Adds or takes out (the same operation) one peer.
    fn toggle(&mut self, peer: &Peer) {
        let hash = blake3::hash(&prost::Message::encode_to_vec(peer));
        for (d, h) in self.0.iter_mut().zip(hash.as_bytes()) {
            *d ^= h;
        }
    }

    /// Whether `bytes` (as a client sent them back) is this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.0.as_slice() == bytes
    }
}

/// One version of the topology: the active peers in node-ID order.
#[derive(Debug, Default)]
pub struct TopologyView {
    version: u64,
    digest: TopologyDigest,
    peers: OrdMap<PeerId, Arc<Peer>>,
    /// The full snapshot of this version, built the first time someone needs it.
    full: OnceLock<Arc<TopologySnapshot>>,
}

impl TopologyView {
    /// A view of `peers` at `version`.
    pub fn new(version: u64, peers: impl IntoIterator<Item = (PeerId, Peer)>) -> Self {
        let peers: OrdMap<PeerId, Arc<Peer>> =
            peers.into_iter().map(|(id, p)| (id, Arc::new(p))).collect();
        let mut digest = TopologyDigest::default();
        for peer in peers.values() {
            digest.toggle(peer);
        }
        Self {
            version,
            digest,
            peers,
            full: OnceLock::new(),
        }
    }

    /// The topology version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The digest of this version's peers.
    pub fn digest(&self) -> TopologyDigest {
        self.digest
    }

    /// How many peers this version lists.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether this version lists no peer.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The IDs of the listed peers, in order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// The whole topology as one snapshot (built once per version, on first use).
    pub fn snapshot(&self) -> Arc<TopologySnapshot> {
        self.full
            .get_or_init(|| {
                Arc::new(TopologySnapshot {
                    version: self.version,
                    peers: self.peers.values().map(|p| Peer::clone(p)).collect(),
                    digest: self.digest.0.to_vec(),
                    ..TopologySnapshot::default()
                })
            })
            .clone()
    }

    /// The page of at most `max` peers after the peer `after` (from the first when `None`),
    /// as [`bauxite_dispatch_api::topology::pages`] cuts a snapshot: the first page a full
    /// snapshot, later ones deltas on the same version, `more` on all but the last. Also
    /// returns the cursor for the next page (`None` after the last).
    pub fn page(&self, after: Option<PeerId>, max: usize) -> (TopologySnapshot, Option<PeerId>) {
        let max = max.max(1);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.peers.range((start, Bound::Unbounded));
        let peers: Vec<(PeerId, Peer)> = range
            .by_ref()
            .take(max)
            .map(|(id, p)| (*id, Peer::clone(p)))
            .collect();
        let more = range.next().is_some();
        let next = more.then(|| peers.last().map(|(id, _)| *id)).flatten();
        let first = after.is_none();
        let page = TopologySnapshot {
            version: self.version,
            peers: peers.into_iter().map(|(_, p)| p).collect(),
            delta: !first,
            base_version: if first { 0 } else { self.version },
            removed: Vec::new(),
            more,
            digest: if more {
                Vec::new()
            } else {
                self.digest.0.to_vec()
            },
        };
        (page, next)
    }

    /// The next version: this one with each touched node's peer replaced (`Some`) or
    /// dropped (`None`), and the delta that takes a subscriber from this version to it
    /// (only the peers that differ, and the IDs dropped).
    pub fn update(
        &self,
        version: u64,
        touched: impl IntoIterator<Item = (PeerId, Option<Peer>)>,
    ) -> (TopologyView, TopologySnapshot) {
        let mut peers = self.peers.clone();
        let mut digest = self.digest;
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for (id, peer) in touched {
            match peer {
                Some(peer) => {
                    if peers.get(&id).is_none_or(|held| **held != peer) {
                        digest.toggle(&peer);
                        changed.push(peer.clone());
                        if let Some(old) = peers.insert(id, Arc::new(peer)) {
                            digest.toggle(&old);
                        }
                    }
                }
                None => {
                    if let Some(old) = peers.remove(&id) {
                        digest.toggle(&old);
                        removed.push(id.to_string());
                    }
                }
            }
        }
        // Node-ID order, as full snapshots list peers.
        changed.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        removed.sort();
        let delta = TopologySnapshot {
            version,
            peers: changed,
            delta: true,
            base_version: self.version,
            removed,
            more: false,
            digest: digest.0.to_vec(),
        };
        let next = TopologyView {
            version,
            digest,
            peers,
            full: OnceLock::new(),
        };
        (next, delta)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bauxite_dispatch_api::topology;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Test peer `i`'s id (shared with the journal's tests).
    pub(crate) fn id(i: u8) -> PeerId {
        PeerId([i; 16])
    }

    /// Test peer `i` at `192.0.2.1:endpoint`.
    pub(crate) fn peer(i: u8, endpoint: u16) -> Peer {
        Peer {
            node_id: id(i).to_string(),
            name: format!("n{i}"),
            endpoint: format!("192.0.2.1:{endpoint}"),
            ..Peer::default()
        }
    }

    fn view(version: u64, peers: &BTreeMap<u8, u16>) -> TopologyView {
        TopologyView::new(version, peers.iter().map(|(i, e)| (id(*i), peer(*i, *e))))
    }

    proptest! {
        /// The delta made from the touched nodes equals the one diffing whole snapshots
        /// gives, and a node applying it holds the new version's full snapshot.
        #[test]
        fn an_update_yields_the_same_delta_as_diffing_snapshots(
            a in proptest::collection::btree_map(any::<u8>(), 0u16..4, 0..40),
            b in proptest::collection::btree_map(any::<u8>(), 0u16..4, 0..40),
            extra in proptest::collection::btree_set(any::<u8>(), 0..10),
            va in 0u64..1000,
        ) {
            let old = view(va, &a);
            // Touched: every node that may differ, plus some that do not.
            let touched: std::collections::BTreeSet<u8> =
                a.keys().chain(b.keys()).chain(&extra).copied().collect();
            let (new, d) = old.update(
                va + 1,
                touched.iter().map(|i| (id(*i), b.get(i).map(|e| peer(*i, *e)))),
            );
            let want = view(va + 1, &b).snapshot();
            prop_assert_eq!(&*new.snapshot(), &*want);
            prop_assert_eq!(&d, &topology::delta(&old.snapshot(), &want));
            let mut held = (*old.snapshot()).clone();
            topology::apply(&mut held, d).unwrap();
            prop_assert_eq!(&held, &*want);
            // The old version is untouched.
            prop_assert_eq!(&*old.snapshot(), &*view(va, &a).snapshot());
        }

        /// Pages cut one at a time are exactly the pages of the whole snapshot.
        #[test]
        fn pages_cut_lazily_equal_the_pages_of_the_snapshot(
            b in proptest::collection::btree_map(any::<u8>(), 0u16..4, 0..40),
            max in 1usize..12,
            version in 1u64..1000,
        ) {
            let v = view(version, &b);
            let want = topology::pages(&v.snapshot(), max);
            let mut got = Vec::new();
            let mut after = None;
            for _ in 0..=want.len() {
                let (page, next) = v.page(after, max);
                got.push(page);
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn an_update_shares_untouched_peers_with_the_version_before() {
        let old = view(1, &BTreeMap::from([(1, 0), (2, 0), (3, 0)]));
        let (new, d) = old.update(2, [(id(2), Some(peer(2, 1))), (id(3), None)]);
        assert_eq!(d.peers, vec![peer(2, 1)]);
        assert_eq!(d.removed, vec![id(3).to_string()]);
        assert!(Arc::ptr_eq(&old.peers[&id(1)], &new.peers[&id(1)]));
        assert_eq!(new.ids().collect::<Vec<_>>(), vec![id(1), id(2)]);
        assert_eq!((old.len(), new.len()), (3, 2));
    }
}
