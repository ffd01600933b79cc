//! The topology journal: the deltas of the last changes, so a subscriber that holds
//! version `v` gets what changed since `v` instead of a full snapshot of N peers.
//!
//! Invariants: entries are contiguous (each delta's base is the previous delta's version);
//! together they list at most as many peers as the topology has (at least
//! [`MIN_ENTRIES`]), since a delta reaching back further would cost about what a full
//! snapshot does; and there are at most [`MAX_DELTAS`]. A subscriber further behind, at a version the
//! journal never saw, or holding a version of that number with other peers (its digest
//! differs: another history, e.g. a store restored from a backup) gets `None` and is sent
//! a full snapshot (a resync). A subscriber N changes behind gets ONE delta (coalesced:
//! each peer touched since its version once, in its newest state, and the IDs removed),
//! not N; the coalesced delta is kept for the next subscriber at the same version (after
//! a replica dies, its nodes mostly hold the same one), until the next change.
//! Each change's delta is made once (from the nodes it touched, `view.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bauxite_dispatch_api::proto::node::{Peer, TopologySnapshot};

use super::view::TopologyDigest;

/// Peer entries (listed or removed) the journal keeps at least, however small the topology.
pub const MIN_ENTRIES: usize = 1024;

/// Changes kept at most, however few peers each touched: a subscriber further behind is
/// resynced.
pub const MAX_DELTAS: usize = 65_536;

/// Coalesced deltas kept for reuse (by the version they start from) until the next change.
const COALESCED_KEPT: usize = 16;

/// The last changes' deltas, oldest first.
#[derive(Debug, Default)]
pub struct TopologyJournal {
    /// The version the oldest delta applies to, and its digest (the newest version when
    /// there is no delta).
    base: (u64, TopologyDigest),
    deltas: VecDeque<Arc<TopologySnapshot>>,
    /// Peer entries (listed and removed) over all of `deltas`.
    entries: usize,
    /// Coalesced deltas to the newest version, by the version they apply to.
    coalesced: BTreeMap<u64, Arc<TopologySnapshot>>,
}

impl TopologyJournal {
    /// An empty journal at `version`, whose peers have `digest`: a subscriber holding
    /// exactly that is current.
    pub fn new(version: u64, digest: TopologyDigest) -> Self {
        Self {
            base: (version, digest),
            ..Self::default()
        }
    }

    /// The oldest version a subscriber can resume from.
    pub fn oldest(&self) -> u64 {
        self.base.0
    }

    /// The newest version recorded and its digest.
    pub fn head(&self) -> (u64, TopologyDigest) {
        self.deltas
            .back()
            .map_or(self.base, |d| (d.version, digest_of(d)))
    }

    /// Records the delta of one change (nothing when neither the version nor the peers
    /// moved) to a topology of `peers` peers, dropping the oldest deltas beyond the bounds.
    ///
    /// The bound is in peers, not changes: a fixed count of changes is too few in a large
    /// fleet's bursts of one-peer changes (each node reporting its candidates) and too many
    /// when each change touches every peer (N peers held per change).
    pub fn record(&mut self, delta: TopologySnapshot, peers: usize) {
        let (version, digest) = self.head();
        let after = digest_of(&delta);
        if delta.version == version && after == digest {
            return;
        }
        self.coalesced.clear();
        if delta.base_version != version || delta.version <= version {
            // Not contiguous (cannot happen while every publish goes through here), or the
            // peers moved under one version number: start over from this version.
            self.deltas.clear();
            self.entries = 0;
            self.base = (delta.version, after);
            return;
        }
        self.entries += entries_of(&delta);
        self.deltas.push_back(Arc::new(delta));
        let budget = peers.max(MIN_ENTRIES);
        while self.deltas.len() > MAX_DELTAS || (self.entries > budget && self.deltas.len() > 1) {
            let Some(oldest) = self.deltas.pop_front() else {
                break;
            };
            self.entries -= entries_of(&oldest);
            self.base = (oldest.version, digest_of(&oldest));
        }
    }

    /// One delta that takes a subscriber holding version `held` with peers of digest
    /// `digest` to the newest version (without peers when it is current), or `None` when
    /// the journal does not reach back to `held` or its version `held` had other peers.
    pub fn since(&mut self, held: u64, digest: &[u8]) -> Option<Arc<TopologySnapshot>> {
        let (head, head_digest) = self.head();
        if held == head {
            return head_digest.matches(digest).then(|| {
                Arc::new(TopologySnapshot {
                    version: head,
                    delta: true,
                    base_version: head,
                    digest: head_digest.0.to_vec(),
                    ..TopologySnapshot::default()
                })
            });
        }
        let start = self.deltas.iter().position(|d| d.base_version == held)?;
        let base_digest = match start {
            0 => self.base.1,
            i => digest_of(self.deltas.get(i - 1)?),
        };
        if !base_digest.matches(digest) {
            return None;
        }
        if let Some(delta) = self.coalesced.get(&held) {
            return Some(delta.clone());
        }
        let delta = Arc::new(coalesce(held, self.deltas.iter().skip(start))?);
        if self.coalesced.len() == COALESCED_KEPT {
            self.coalesced.clear();
        }
        self.coalesced.insert(held, delta.clone());
        Some(delta)
    }
}

/// Peer entries a delta lists (changed and removed).
fn entries_of(delta: &TopologySnapshot) -> usize {
    delta.peers.len() + delta.removed.len()
}

/// The digest a delta carries (zero when it carries none: only hand-made test deltas).
fn digest_of(delta: &TopologySnapshot) -> TopologyDigest {
    TopologyDigest(delta.digest.as_slice().try_into().unwrap_or_default())
}

/// One delta equivalent to applying `deltas` (contiguous, the first based on `base`) in
/// turn: each peer they touch once, in the state the last one gave it. A peer removed
/// that the base never held is listed as removed too (removing it changes nothing).
/// `None` when there is no delta.
pub fn coalesce<'a>(
    base: u64,
    deltas: impl IntoIterator<Item = &'a Arc<TopologySnapshot>>,
) -> Option<TopologySnapshot> {
    let mut touched: BTreeMap<&str, Option<&Peer>> = BTreeMap::new();
    let mut last = None;
    for delta in deltas {
        for id in &delta.removed {
            touched.insert(id, None);
        }
        for peer in &delta.peers {
            touched.insert(&peer.node_id, Some(peer));
        }
        last = Some(delta);
    }
    let last = last?;
    let mut peers = Vec::new();
    let mut removed = Vec::new();
    // Node-ID order, as every delta lists them.
    for (id, peer) in touched {
        match peer {
            Some(peer) => peers.push(peer.clone()),
            None => removed.push(id.to_owned()),
        }
    }
    Some(TopologySnapshot {
        version: last.version,
        peers,
        delta: true,
        base_version: base,
        removed,
        more: false,
        digest: last.digest.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::view::TopologyView;
    use crate::hub::view::tests::{id, peer};
    use bauxite_dispatch_api::topology;
    use proptest::prelude::*;

    /// The views of a sequence of changes (each: peer -> new endpoint, or removed),
    /// recorded in a journal as the hub does.
    fn replay(
        first: &BTreeMap<u8, u16>,
        changes: &[Vec<(u8, Option<u16>)>],
    ) -> (Vec<Arc<TopologyView>>, TopologyJournal) {
        replay_sized(first, changes, None)
    }

    /// [`replay`], telling the journal the topology has `peers` peers (default: the
    /// view's own count) to test the budget at fleet sizes with few test peers.
    fn replay_sized(
        first: &BTreeMap<u8, u16>,
        changes: &[Vec<(u8, Option<u16>)>],
        peers: Option<usize>,
    ) -> (Vec<Arc<TopologyView>>, TopologyJournal) {
        let mut view = Arc::new(TopologyView::new(
            1,
            first.iter().map(|(i, e)| (id(*i), peer(*i, *e))),
        ));
        let mut journal = TopologyJournal::new(view.version(), view.digest());
        let mut views = vec![view.clone()];
        for change in changes {
            let (next, delta) = view.update(
                view.version() + 1,
                change.iter().map(|(i, e)| (id(*i), e.map(|e| peer(*i, e)))),
            );
            journal.record(delta, peers.unwrap_or(next.len()));
            view = Arc::new(next);
            views.push(view.clone());
        }
        (views, journal)
    }

    /// One change: each touched peer once (the hub's touched set), with its new endpoint
    /// or removed.
    fn change() -> impl Strategy<Value = Vec<(u8, Option<u16>)>> {
        proptest::collection::btree_map(0u8..24, proptest::option::of(0u16..4), 0..6)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// Random change sequences: from every version the journal covers, the one
        /// coalesced delta applied to that version's snapshot gives the newest snapshot,
        /// and it lists each touched peer at most once.
        #[test]
        fn a_coalesced_delta_takes_any_covered_version_to_the_newest(
            first in proptest::collection::btree_map(0u8..24, 0u16..4, 0..16),
            changes in proptest::collection::vec(change(), 0..40),
        ) {
            let (views, mut journal) = replay(&first, &changes);
            let newest = views.last().unwrap().snapshot();
            prop_assert_eq!(journal.head(), (newest.version, views.last().unwrap().digest()));
            for view in &views {
                let start = view.snapshot();
                let delta = journal.since(view.version(), &start.digest).unwrap();
                prop_assert!(delta.delta && !delta.more);
                prop_assert_eq!(delta.base_version, view.version());
                let ids: std::collections::BTreeSet<&str> = delta
                    .peers
                    .iter()
                    .map(|p| p.node_id.as_str())
                    .chain(delta.removed.iter().map(String::as_str))
                    .collect();
                prop_assert_eq!(ids.len(), delta.peers.len() + delta.removed.len());
                let mut held = (*start).clone();
                topology::apply(&mut held, (*delta).clone()).unwrap();
                prop_assert_eq!(&held, &*newest);
                // Asked again (the cached answer), the same delta.
                prop_assert_eq!(journal.since(view.version(), &start.digest).unwrap(), delta);
            }
        }

        /// The same version number with other peers (another history) never gets a delta.
        #[test]
        fn a_version_from_another_history_gets_no_delta(
            first in proptest::collection::btree_map(0u8..24, 0u16..4, 1..16),
            changes in proptest::collection::vec(change(), 1..20),
            other in proptest::collection::btree_map(0u8..24, 0u16..4, 0..16),
        ) {
            let (views, mut journal) = replay(&first, &changes);
            for view in &views {
                let theirs = TopologyView::new(view.version(), other.iter().map(|(i, e)| (id(*i), peer(*i, *e))));
                if theirs.snapshot().peers != view.snapshot().peers {
                    prop_assert!(journal.since(view.version(), &theirs.digest().0).is_none());
                }
            }
        }
    }

    /// `n` changes, each moving one of 20 peers to a new endpoint.
    fn one_peer_changes(n: usize) -> Vec<Vec<(u8, Option<u16>)>> {
        (0..n)
            .map(|v| {
                vec![(
                    u8::try_from(v % 20).unwrap(),
                    Some(u16::try_from(v).unwrap()),
                )]
            })
            .collect()
    }

    #[test]
    fn the_journal_is_bounded_and_a_subscriber_left_behind_resyncs() {
        let (views, mut journal) = replay(&BTreeMap::new(), &one_peer_changes(MIN_ENTRIES + 10));
        let at = |k: usize| (views[k].version(), views[k].digest().0);
        let (v, d) = at(0);
        assert!(journal.since(v, &d).is_none(), "older than the journal");
        let (v, d) = at(9);
        assert!(journal.since(v, &d).is_none());
        let (v, d) = at(10);
        let delta = journal.since(v, &d).unwrap();
        assert_eq!(
            delta.peers.len(),
            20,
            "1024 changes of 20 peers: one entry each"
        );
        let (v, d) = at(views.len() - 1);
        let current = journal.since(v, &d).unwrap();
        assert!(current.peers.is_empty() && current.removed.is_empty());
        assert_eq!((current.base_version, current.version), (v, v));
        assert!(journal.since(v + 1, &d).is_none(), "a version never seen");
        assert!(journal.since(v, &[]).is_none(), "no digest");
    }

    #[test]
    fn a_larger_topology_keeps_more_changes() {
        // 3000 one-peer changes (a replica's nodes moving their relay home after it died)
        // to a topology of 10 000 peers: every one of them still resumes with a delta.
        let changes = one_peer_changes(3000);
        let (views, mut journal) = replay_sized(&BTreeMap::new(), &changes, Some(10_000));
        for view in [&views[0], &views[1500], &views[2999]] {
            let delta = journal.since(view.version(), &view.digest().0);
            assert!(delta.is_some(), "version {} resumes", view.version());
        }
        // The same changes to a topology of 1500 peers: only the last 1500 are kept.
        let (views, mut journal) = replay_sized(&BTreeMap::new(), &changes, Some(1500));
        let old = &views[1499];
        assert!(journal.since(old.version(), &old.digest().0).is_none());
        let kept = &views[1500];
        assert!(journal.since(kept.version(), &kept.digest().0).is_some());
    }

    #[test]
    fn a_change_touching_every_peer_pushes_out_older_ones() {
        // 256 peers, so the floor of 1024 entries is the budget: changes that move them
        // all fill it after four.
        let all: Vec<(u8, Option<u16>)> = (0..=255u8).map(|i| (i, Some(9))).collect();
        let changes = vec![vec![(1, Some(1))], vec![(2, Some(2))], all];
        let (views, mut journal) = replay_sized(&BTreeMap::new(), &changes, Some(255));
        // Budget max(255, MIN_ENTRIES) = 1024 entries: 1 + 1 + 256 fit.
        assert!(
            journal
                .since(views[0].version(), &views[0].digest().0)
                .is_some()
        );
        let mut many = changes.clone();
        for k in 0..4u16 {
            many.push((0..=255u8).map(|i| (i, Some(10 + k))).collect());
        }
        let (views, mut journal) = replay_sized(&BTreeMap::new(), &many, Some(255));
        // 1 + 1 + 5 × 256 entries exceed 1024: the oldest changes go, the last four stay.
        assert!(
            journal
                .since(views[0].version(), &views[0].digest().0)
                .is_none()
        );
        assert!(
            journal
                .since(views[3].version(), &views[3].digest().0)
                .is_some()
        );
        assert!(journal.entries <= MIN_ENTRIES);
    }

    #[test]
    fn an_empty_journal_resumes_only_its_own_version() {
        let view = TopologyView::new(7, [(id(1), peer(1, 0))]);
        let mut journal = TopologyJournal::new(7, view.digest());
        assert!(journal.since(7, &view.digest().0).is_some());
        assert!(journal.since(6, &view.digest().0).is_none());
        assert!(journal.since(7, &[0; 32]).is_none());
    }
}
