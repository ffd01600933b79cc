//! The topology journal: the deltas of the last changes, so a subscriber that holds
//! version `v` gets what changed since `v` instead of a full snapshot of N peers.
//!
//! Invariants: entries are contiguous (each delta's base is the previous delta's version)
//! and at most [`JOURNAL_DELTAS`] long; a subscriber further behind, or at a version the
//! journal never saw, gets `None` and is sent a full snapshot (a resync). Each delta is
//! made once per change (from the nodes it touched, `view.rs`) and shared (`Arc`) by
//! every subscriber.

use std::collections::VecDeque;
use std::sync::Arc;

use bauxite_dispatch_api::proto::node::TopologySnapshot;

/// Changes kept: a subscriber more than this many changes behind is resynced.
pub const JOURNAL_DELTAS: usize = 256;

/// The last changes' deltas, oldest first.
#[derive(Debug, Default)]
pub struct TopologyJournal {
    deltas: VecDeque<Arc<TopologySnapshot>>,
}

impl TopologyJournal {
    /// Records the delta of one change (nothing when the version did not move).
    pub fn record(&mut self, delta: TopologySnapshot) {
        if delta.version == delta.base_version {
            return;
        }
        if self
            .deltas
            .back()
            .is_some_and(|d| d.version != delta.base_version)
        {
            // Not contiguous (cannot happen while every publish goes through here): start over.
            self.deltas.clear();
        }
        if self.deltas.len() == JOURNAL_DELTAS {
            self.deltas.pop_front();
        }
        self.deltas.push_back(Arc::new(delta));
    }

    /// The deltas that take a subscriber from `held` to the newest recorded version (empty
    /// when it is there), or `None` when the journal does not reach back to `held`.
    pub fn since(&self, held: u64) -> Option<Vec<Arc<TopologySnapshot>>> {
        if self.deltas.back().is_none_or(|d| d.version == held) {
            return self.deltas.back().map(|_| Vec::new());
        }
        let start = self.deltas.iter().position(|d| d.base_version == held)?;
        Some(self.deltas.iter().skip(start).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_dispatch_api::proto::node::Peer;
    use bauxite_dispatch_api::topology;

    fn snap(version: u64, ids: &[u8]) -> TopologySnapshot {
        TopologySnapshot {
            version,
            peers: ids
                .iter()
                .map(|i| Peer {
                    node_id: format!("{i:02x}"),
                    ..Peer::default()
                })
                .collect(),
            ..TopologySnapshot::default()
        }
    }

    #[test]
    fn a_subscriber_catches_up_through_every_delta_since_its_version() {
        let mut journal = TopologyJournal::default();
        let versions = [
            snap(1, &[1]),
            snap(2, &[1, 2]),
            snap(3, &[2]),
            snap(4, &[2, 3]),
        ];
        for pair in versions.windows(2) {
            journal.record(topology::delta(&pair[0], &pair[1]));
        }
        for (i, start) in versions.iter().enumerate() {
            let deltas = journal.since(start.version).unwrap();
            assert_eq!(deltas.len(), versions.len() - 1 - i);
            let mut held = start.clone();
            for d in deltas {
                topology::apply(&mut held, (*d).clone()).unwrap();
            }
            assert_eq!(held, versions[3]);
        }
        assert!(journal.since(0).is_none(), "older than the journal: resync");
    }

    #[test]
    fn the_journal_is_bounded_and_a_subscriber_left_behind_resyncs() {
        let mut journal = TopologyJournal::default();
        let total = JOURNAL_DELTAS as u64 + 10;
        for v in 0..total {
            journal.record(topology::delta(
                &snap(v, &[]),
                &snap(v + 1, &[u8::try_from(v % 200).unwrap()]),
            ));
        }
        assert!(journal.since(0).is_none());
        assert!(journal.since(9).is_none());
        assert_eq!(journal.since(10).unwrap().len(), JOURNAL_DELTAS);
        assert!(journal.since(total).unwrap().is_empty());
    }

    #[test]
    fn an_empty_journal_sends_everyone_a_snapshot() {
        assert!(TopologyJournal::default().since(7).is_none());
    }
}
