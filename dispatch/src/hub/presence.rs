//! Relay presence across replicas: where each node holds its home relay stream, so two
//! nodes on different replicas that both need the hub relay meet on one of them
//! (docs/hub.md, "The relay across replicas").
//!
//! Invariant: on a shared store, `State::relay_hubs` holds, for every node whose home
//! relay stream is open on a live replica, that replica's URL, and it is published in the
//! topology as `Peer.relay_hub`. A replica records its own nodes (at attach, removed at
//! detach); rows left by a replica that died (its database session is gone) are removed by
//! whichever live replica sweeps first, and a replica whose own rows died with its
//! database connection writes them again: `presence_plan` decides both, from what the
//! store holds and what is attached here. Presence is an observation like candidates:
//! never audited, every change bumps the topology version. Frames never cross between
//! replicas: the node that needs to reach a peer on another replica opens a visit
//! stream there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bauxite_conduit::PeerId;

use super::{Hub, State};
use crate::Result;
use crate::store::{Change, RelayPresenceRow};

/// How often a replica reconciles the stored presence with its streams (and removes the
/// rows of dead replicas): the delay before peers stop meeting on a killed replica.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What to write so that the stored presence matches `homes` (the nodes with a home relay
/// stream on the replica at `me`): `Some(me)` for a home node without a live row (new, or
/// its row died with this replica's old database session), `None` for a dead row of a node
/// not at home here, and for a live row of this session whose node left. A live row of
/// another replica is never touched (the node moved there; the stream here is stale).
pub(crate) fn presence_plan(
    me: &str,
    homes: &BTreeSet<PeerId>,
    rows: &[RelayPresenceRow],
) -> Vec<(PeerId, Option<String>)> {
    let stored: BTreeMap<PeerId, &RelayPresenceRow> = rows.iter().map(|r| (r.node, r)).collect();
    let mut plan: Vec<(PeerId, Option<String>)> = homes
        .iter()
        .filter(|node| stored.get(node).is_none_or(|r| !r.alive))
        .map(|node| (*node, Some(me.to_owned())))
        .collect();
    plan.extend(
        rows.iter()
            .filter(|r| !homes.contains(&r.node) && (!r.alive || r.mine))
            .map(|r| (r.node, None)),
    );
    plan
}

impl Hub {
    /// Records presence for replicas: this hub is reached by nodes at `url` (the URL
    /// nodes list in `hub.urls`). Without it nothing is recorded (one hub: no need).
    pub fn set_replica_url(&self, url: String) {
        let _ = self.replica_url.set(url);
    }

    /// The URL this replica records as its nodes' relay hub, if set.
    pub fn replica_url(&self) -> Option<&str> {
        self.replica_url.get().map(String::as_str)
    }

    /// `node` opened its home relay stream here: record it (if not already).
    pub fn relay_attached(&self, node: PeerId) -> Result<()> {
        let Some(me) = self.replica_url() else {
            return Ok(());
        };
        let mut state = self.write()?;
        if state.relay_hubs.get(&node).is_some_and(|u| u == me) {
            return Ok(());
        }
        self.commit_presence(&mut state, vec![(node, Some(me.to_owned()))])
    }

    /// `node`'s home relay stream here ended: remove its presence, unless a newer stream
    /// of it is open here or it is recorded on another replica.
    pub fn relay_detached(&self, node: PeerId) -> Result<()> {
        let Some(me) = self.replica_url() else {
            return Ok(());
        };
        let mut state = self.write()?;
        // Checked under the writers lock: a stream attached after this check records
        // itself after this commit.
        if self.relays().homes().contains(&node)
            || state.relay_hubs.get(&node).is_none_or(|u| u != me)
        {
            return Ok(());
        }
        self.commit_presence(&mut state, vec![(node, None)])
    }

    /// Brings the stored presence in line with this replica's streams and removes dead
    /// replicas' rows (`presence_plan`); returns how many presences changed. The server
    /// calls it every [`SWEEP_INTERVAL`].
    pub fn sweep_relay_presence(&self) -> Result<usize> {
        let Some(me) = self.replica_url() else {
            return Ok(0);
        };
        let homes = |hub_node: Option<PeerId>| -> BTreeSet<PeerId> {
            let mut homes: BTreeSet<PeerId> = self.relays().homes().into_iter().collect();
            // The hub's own mesh node is at home on every replica: never a presence.
            if let Some(id) = hub_node {
                homes.remove(&id);
            }
            homes
        };
        // Usually nothing to do: decide without the writers lock first.
        let hub_node = super::lock(&self.state).hub_node;
        if presence_plan(me, &homes(hub_node), &self.store.relay_presence()?).is_empty() {
            return Ok(0);
        }
        let mut state = self.write()?;
        let plan = presence_plan(me, &homes(state.hub_node), &self.store.relay_presence()?);
        let changed = plan.len();
        if changed > 0 {
            self.commit_presence(&mut state, plan)?;
        }
        Ok(changed)
    }

    /// Commits presence changes with a new topology version (not audited).
    fn commit_presence(
        &self,
        state: &mut State,
        presence: Vec<(PeerId, Option<String>)>,
    ) -> Result<()> {
        let change = Change {
            topology_version: Some(state.topology_version + 1),
            relay_presence: presence,
            ..Change::default()
        };
        self.store.commit(&change)?;
        self.apply_change(state, change);
        Ok(())
    }
}

impl State {
    /// Applies presence changes (this replica's or another's, from the change log).
    pub(super) fn apply_presence(&mut self, presence: &[(PeerId, Option<String>)]) {
        for (node, replica) in presence {
            // The node's `relay_hub` changes: republish its peer entry.
            self.touched.insert(*node);
            match replica {
                Some(url) => self.relay_hubs.insert(*node, url.clone()),
                None => self.relay_hubs.remove(node),
            };
        }
    }

    /// The live stored presence.
    pub(super) fn load_presence(&mut self, store: &dyn crate::store::Store) -> Result<()> {
        self.relay_hubs = store
            .relay_presence()?
            .into_iter()
            .filter(|r| r.alive)
            .map(|r| (r.node, r.replica))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> PeerId {
        PeerId([b; 16])
    }

    fn row(node: u8, replica: &str, alive: bool, mine: bool) -> RelayPresenceRow {
        RelayPresenceRow {
            node: id(node),
            replica: replica.to_owned(),
            alive,
            mine,
        }
    }

    const ME: &str = "https://r1:7443";
    const OTHER: &str = "https://r2:7443";

    #[test]
    fn records_home_nodes_without_a_live_row_and_nothing_when_all_is_in_place() {
        let homes: BTreeSet<PeerId> = [id(1), id(2), id(3)].into();
        let rows = [
            row(1, ME, true, true),
            // Died with this replica's previous database session: written again.
            row(2, ME, false, false),
            // Moved to another live replica: left alone.
            row(4, OTHER, true, false),
        ];
        let plan = presence_plan(ME, &homes, &rows);
        assert_eq!(
            plan,
            vec![(id(2), Some(ME.into())), (id(3), Some(ME.into()))],
            "node 1 is in place, node 3 is new"
        );
        let settled = [
            row(1, ME, true, true),
            row(2, ME, true, true),
            row(3, ME, true, true),
        ];
        assert!(presence_plan(ME, &homes, &settled).is_empty());
    }

    #[test]
    fn removes_dead_replicas_rows_and_own_rows_of_departed_nodes_only() {
        let homes: BTreeSet<PeerId> = [id(1)].into();
        let rows = [
            row(1, OTHER, true, false),
            // A killed replica's row.
            row(5, OTHER, false, false),
            // This session's row whose stream ended without its detach.
            row(6, ME, true, true),
            // Another live replica's node.
            row(7, OTHER, true, false),
        ];
        let plan = presence_plan(ME, &homes, &rows);
        assert_eq!(
            plan,
            vec![(id(5), None), (id(6), None)],
            "node 1 lives on the other replica now: its row stays, and it is not rewritten"
        );
    }
}
