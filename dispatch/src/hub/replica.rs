//! Several hubs on one shared store (PostgreSQL replicas): writing on a fresh view, and
//! following the other replicas' commits.
//!
//! Invariant: on a shared store, every mutation decides on the state as stored at that
//! moment: [`Hub::write`] takes the store's writers lock first and then re-reads whatever
//! another replica committed, and the lock is held until the mutation's commit is done
//! (the guard's drop). A replica that only reads (topology, authorisation) may lag until
//! [`Hub::sync`] runs, which the replica listener calls after every announced commit.
//! A shared store logs every change ([`Store::changes_since`]): a replica applies the
//! changes it has not seen, in commit order, as its own commits are applied, rather than
//! re-reading every table (which cost O(N) per change and O(N²) for N joins). Without the
//! log (or too far behind it) it re-reads everything. What nodes report about themselves
//! (candidates, ROS discovery roles) is logged and stored too when the store is shared
//! ([`Store::observed`]).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, MutexGuard};

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::proto::node::CandidateKind;

use super::candidates::Candidate;
use super::ros::RosDiscovery;
use super::{Hub, State, lock, policy_document};
use crate::store::{ObservedRecord, Store};
use crate::{CallRefused, Error, Result};

/// The hub's state, locked for a mutation; on a shared store, also the store's writers.
pub(super) struct WriteGuard<'a> {
    hub: &'a Hub,
    state: MutexGuard<'a, State>,
    shared: bool,
    // Released last (fields drop after `Drop::drop` unlocked the store's writers).
    _writer: MutexGuard<'a, ()>,
}

impl Deref for WriteGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.shared {
            self.hub.store.unlock_writers();
        }
    }
}

/// Runs `f`, which may wait for other replicas, without starving the async runtime it
/// is called from: on a multi-threaded tokio runtime the worker hands its other tasks
/// over first (accepting connections and TLS handshakes go on meanwhile).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Hub {
    /// Locks the state for a mutation; on a shared store also the store's writers, and
    /// then brings the state up to date with the store.
    pub(super) fn write(&self) -> Result<WriteGuard<'_>> {
        // This hub's writers one at a time (they share one database session, whose
        // advisory lock does not exclude itself), then the other replicas' writers. Only
        // then the state: readers (every call's authorisation) are not held up while
        // this replica waits for the others.
        let (writer, shared) = blocking(|| {
            let writer = lock(&self.writer);
            self.store.lock_writers().map(|shared| (writer, shared))
        })?;
        let state = lock(&self.state);
        let mut guard = WriteGuard {
            hub: self,
            state,
            shared,
            _writer: writer,
        };
        if shared {
            self.refresh(&mut guard.state)?;
        }
        Ok(guard)
    }

    /// Re-reads the store if another process committed since this hub last looked, and
    /// publishes what changed to this hub's subscribers (topology, policy, assignments).
    /// Returns whether anything was re-read. Replica listeners call it; a hub alone on its
    /// store never needs to.
    pub fn sync(&self) -> Result<bool> {
        let moved = self.refresh(&mut lock(&self.state))?;
        self.detach_revoked();
        Ok(moved)
    }

    /// Ends the signaling and relay streams on this hub of nodes another replica revoked
    /// (revocation here detaches at once): their next call is refused.
    fn detach_revoked(&self) {
        let revoked = std::mem::take(&mut *lock(&self.revoked));
        for id in revoked {
            self.signals().detach_all(id);
            self.relays().detach_all(id);
        }
    }

    /// Runs `check`, and once more after a [`sync`](Self::sync) when it refused a caller
    /// that another replica may have just changed (a node provisioned, confirmed or
    /// renewed there, not yet announced here), so a node that moves between replicas is
    /// not refused for this replica's lag.
    pub(super) fn fresh<T>(&self, check: impl Fn() -> Result<T>) -> Result<T> {
        match check() {
            Err(Error::CallRefused(
                CallRefused::UnknownNode(_)
                | CallRefused::NotConfirmed(_)
                | CallRefused::NotIssued(_),
            )) if self.sync().unwrap_or(false) => check(),
            other => other,
        }
    }

    fn refresh(&self, state: &mut State) -> Result<bool> {
        match self.store.changes_since(state.change_seq)? {
            Some(changes) if changes.is_empty() => return Ok(false),
            Some(changes) => {
                for (seq, change) in changes {
                    self.apply_change(state, change);
                    state.change_seq = seq;
                }
                return Ok(true);
            }
            // No log, or it no longer reaches back: compare and re-read everything.
            None => {}
        }
        let head = self.store.audit_head()?;
        let version = self.store.topology_version()?;
        if head == state.audit_head && version == state.topology_version {
            return Ok(false);
        }
        if head == state.audit_head {
            // Only observations moved (they are never audited): re-read just those.
            if let Some(observed) = self.store.observed()? {
                state.apply_observed(observed);
            }
            state.topology_version = version;
            self.publish_topology(state);
            return Ok(true);
        }
        let mut fresh = State::load(self.store.as_ref())?;
        if fresh.candidates.is_empty() && fresh.ros_discovery.is_empty() {
            // A store of one process does not keep observations: this hub's memory does.
            fresh.candidates = std::mem::take(&mut state.candidates);
            fresh.ros_discovery = std::mem::take(&mut state.ros_discovery);
        }
        let topology_moved = fresh.topology_version != state.topology_version;
        let newly_revoked = fresh.nodes.values().filter(|n| {
            n.revoked_at.is_some()
                && state
                    .nodes
                    .get(&n.id)
                    .is_none_or(|old| old.revoked_at.is_none())
        });
        lock(&self.revoked).extend(newly_revoked.map(|n| n.id));
        *state = fresh;
        self.metrics
            .audit_entries
            .store(state.audit_head.len, std::sync::atomic::Ordering::Relaxed);
        if topology_moved {
            self.publish_topology(state);
        }
        let policy = policy_document(self.store.as_ref())?;
        if policy.version != self.policy.borrow().version {
            self.policy.send_replace(Arc::new(policy));
        }
        // Streams compare their node's assignment before sending: a spurious wake is free.
        self.assignments.send_modify(|n| *n += 1);
        Ok(true)
    }
}

impl State {
    /// What `node` reported, as a shared store keeps it.
    pub(super) fn observed(&self, node: PeerId) -> ObservedRecord {
        ObservedRecord {
            candidates: self
                .candidates
                .get(&node)
                .into_iter()
                .flatten()
                .map(|c| (c.addr, i32::from(c.kind)))
                .collect(),
            ros_discovery: self.ros_discovery.get(&node).map(|r| (r.port, r.server_id)),
        }
    }

    /// Replaces the observations with the stored ones (unknown candidate kinds are kept
    /// as host addresses: a newer replica's kind is still an address to try).
    pub(super) fn apply_observed(&mut self, records: Vec<(PeerId, ObservedRecord)>) {
        self.candidates.clear();
        self.ros_discovery.clear();
        self.touched_all = true;
        for (node, record) in records {
            self.apply_observed_of(node, record);
        }
    }

    /// Replaces `node`'s observations with `record` (a change logged by a replica).
    pub(super) fn apply_observed_of(&mut self, node: PeerId, record: ObservedRecord) {
        self.touched.insert(node);
        self.candidates.remove(&node);
        self.ros_discovery.remove(&node);
        let candidates: Vec<Candidate> = record
            .candidates
            .into_iter()
            .map(|(addr, kind)| {
                let kind = CandidateKind::try_from(kind).unwrap_or(CandidateKind::Host);
                Candidate::new(addr, kind)
            })
            .collect();
        if !candidates.is_empty() {
            self.candidates.insert(node, candidates);
        }
        if let Some((port, server_id)) = record.ros_discovery {
            self.ros_discovery
                .insert(node, RosDiscovery { port, server_id });
        }
    }

    /// Loads the stored observations, if the store keeps them.
    pub(super) fn load_observed(&mut self, store: &dyn Store) -> Result<()> {
        if let Some(records) = store.observed()? {
            self.apply_observed(records);
        }
        Ok(())
    }
}
