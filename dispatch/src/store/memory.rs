//! [`Store`] in memory, for unit tests of the hub logic and for benchmarks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bauxite_conduit::PeerId;

use super::{
    AssignmentRecord, AuditSnapshot, Change, NodeRecord, PackageRecord, PendingRecord,
    PolicyRecord, Store, UpdateReportRecord,
};
use crate::audit::{AuditEntry, AuditHead};
use crate::token::{TokenId, TokenRecord};
use crate::{Error, Result};

#[derive(Default)]
struct Inner {
    tokens: BTreeMap<TokenId, TokenRecord>,
    nodes: BTreeMap<PeerId, NodeRecord>,
    pending: BTreeMap<PeerId, PendingRecord>,
    policy: Option<PolicyRecord>,
    topology_version: u64,
    audit: Vec<AuditEntry>,
    packages: BTreeMap<Vec<u8>, PackageRecord>,
    assignments: BTreeMap<PeerId, AssignmentRecord>,
    reports: BTreeMap<PeerId, UpdateReportRecord>,
    hub_node: Option<PeerId>,
    signatures: BTreeMap<PeerId, Vec<u8>>,
}

/// A store that forgets everything when dropped.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        Ok(self.lock().tokens.get(&id).cloned())
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        Ok(self.lock().tokens.values().cloned().collect())
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>> {
        Ok(self.lock().nodes.values().cloned().collect())
    }

    fn pending(&self) -> Result<Vec<PendingRecord>> {
        Ok(self.lock().pending.values().cloned().collect())
    }

    fn policy(&self) -> Result<Option<PolicyRecord>> {
        Ok(self.lock().policy.clone())
    }

    fn topology_version(&self) -> Result<u64> {
        Ok(self.lock().topology_version)
    }

    fn audit_head(&self) -> Result<AuditHead> {
        Ok(self
            .lock()
            .audit
            .last()
            .map(AuditEntry::head)
            .unwrap_or_default())
    }

    fn audit_snapshot(&self) -> Result<AuditSnapshot> {
        let state = self.lock();
        let head = state.audit.last().map(AuditEntry::head).unwrap_or_default();
        let raw = state
            .audit
            .iter()
            .map(|e| (e.body.index, e.encode()))
            .collect();
        Ok((head, raw))
    }

    fn packages(&self) -> Result<Vec<PackageRecord>> {
        Ok(self.lock().packages.values().cloned().collect())
    }

    fn assignments(&self) -> Result<Vec<AssignmentRecord>> {
        Ok(self.lock().assignments.values().cloned().collect())
    }

    fn update_reports(&self) -> Result<Vec<(PeerId, UpdateReportRecord)>> {
        Ok(self
            .lock()
            .reports
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect())
    }

    fn hub_node(&self) -> Result<Option<PeerId>> {
        Ok(self.lock().hub_node)
    }

    fn operator_signatures(&self) -> Result<Vec<(PeerId, Vec<u8>)>> {
        Ok(self
            .lock()
            .signatures
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect())
    }

    fn commit(&self, change: &Change) -> Result<()> {
        let mut inner = self.lock();
        if let Some((checked, _)) = &change.redeem
            && inner.tokens.get(&checked.id) != Some(checked)
        {
            return Err(Error::Conflict("token"));
        }
        if let Some(entry) = &change.audit {
            let head = inner.audit.last().map(AuditEntry::head).unwrap_or_default();
            if head.len != entry.body.index || head.hash != entry.body.prev {
                return Err(Error::Conflict("audit log"));
            }
        }
        if let Some((_, redeemed)) = &change.redeem {
            inner.tokens.insert(redeemed.id, redeemed.clone());
        }
        for token in &change.tokens {
            inner.tokens.insert(token.id, token.clone());
        }
        for node in &change.nodes {
            inner.nodes.insert(node.id, node.clone());
        }
        for id in &change.unpending {
            inner.pending.remove(id);
        }
        for pending in &change.pending {
            inner.pending.insert(pending.node.id, pending.clone());
        }
        if let Some(policy) = &change.policy {
            inner.policy = Some(policy.clone());
        }
        if let Some(version) = change.topology_version {
            inner.topology_version = version;
        }
        for package in &change.packages {
            inner.packages.insert(package.key(), package.clone());
        }
        for assignment in &change.assignments {
            inner
                .assignments
                .insert(assignment.node, assignment.clone());
        }
        for (node, report) in &change.update_reports {
            inner.reports.insert(*node, report.clone());
        }
        if let Some(id) = change.hub_node {
            inner.hub_node = Some(id);
        }
        for (node, signature) in &change.operator_signatures {
            inner.signatures.insert(*node, signature.clone());
        }
        if let Some(entry) = &change.audit {
            inner.audit.push(entry.clone());
        }
        Ok(())
    }
}
