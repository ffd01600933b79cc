//! [`Store`] on redb: one file (`hub.db`), ACID transactions, crash-safe commits.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use bauxite_conduit::PeerId;

use super::{
    AssignmentRecord, AuditSnapshot, Change, NodeRecord, PackageRecord, PendingRecord,
    PolicyRecord, Store, UpdateReportRecord, decode, encode,
};
use crate::audit::{AuditEntry, AuditHead};
use crate::token::{TokenId, TokenRecord};
use crate::{Error, Result};

/// Small records by name: `audit_head`, `policy`, `topology_version`.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Token records by 8-byte ID.
pub const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
/// Node records by 16-byte peer ID.
pub const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
/// Pending registrations (two-phase provisioning) by 16-byte peer ID.
pub const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
/// Audit entries by index (postcard-encoded [`AuditEntry`]).
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Update packages by `name NUL version`.
pub const PACKAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("packages");
/// Update assignments by 16-byte peer ID.
pub const ASSIGNMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("assignments");
/// Each node's last stored update report, by 16-byte peer ID.
pub const UPDATE_REPORTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("update_reports");

/// Operator-signed key records (raw `SignedKeyRecord` bytes) by 16-byte peer ID.
pub const OPERATOR_SIGNATURES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("operator_signatures");

/// The embedded default store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the database file; fails if another process has it open.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Io {
                action: "open (another hub is running on this data dir?)",
                path: path.to_path_buf(),
                source: std::io::Error::other("database already open"),
            },
            other => Error::store(other),
        })?;
        let txn = db.begin_write().map_err(Error::store)?;
        txn.open_table(META).map_err(Error::store)?;
        txn.open_table(TOKENS).map_err(Error::store)?;
        txn.open_table(NODES).map_err(Error::store)?;
        txn.open_table(PENDING).map_err(Error::store)?;
        txn.open_table(AUDIT).map_err(Error::store)?;
        txn.open_table(PACKAGES).map_err(Error::store)?;
        txn.open_table(ASSIGNMENTS).map_err(Error::store)?;
        txn.open_table(UPDATE_REPORTS).map_err(Error::store)?;
        txn.open_table(OPERATOR_SIGNATURES).map_err(Error::store)?;
        txn.commit().map_err(Error::store)?;
        Ok(Self { db })
    }

    fn meta<T: for<'a> serde::Deserialize<'a>>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(META).map_err(Error::store)?;
        let Some(value) = table.get(key).map_err(Error::store)? else {
            return Ok(None);
        };
        decode(value.value(), what).map(Some)
    }

    /// Every value of `table`, decoded, with its key, in key order.
    fn rows<T: for<'a> serde::Deserialize<'a>>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        what: &'static str,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(table).map_err(Error::store)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::store)? {
            let (key, value) = row.map_err(Error::store)?;
            out.push((key.value().to_vec(), decode(value.value(), what)?));
        }
        Ok(out)
    }
}

fn peer_key(key: &[u8]) -> Result<PeerId> {
    // Keys are the 16 raw bytes of the ID, which is also its postcard encoding.
    decode(key, "peer ID key")
}

impl Store for RedbStore {
    fn token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(TOKENS).map_err(Error::store)?;
        let Some(value) = table.get(&id.0[..]).map_err(Error::store)? else {
            return Ok(None);
        };
        decode(value.value(), "token").map(Some)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(TOKENS).map_err(Error::store)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::store)? {
            let (_, value) = row.map_err(Error::store)?;
            out.push(decode(value.value(), "token")?);
        }
        Ok(out)
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(NODES).map_err(Error::store)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::store)? {
            let (_, value) = row.map_err(Error::store)?;
            out.push(decode(value.value(), "node")?);
        }
        Ok(out)
    }

    fn pending(&self) -> Result<Vec<PendingRecord>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(PENDING).map_err(Error::store)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::store)? {
            let (_, value) = row.map_err(Error::store)?;
            out.push(decode(value.value(), "pending registration")?);
        }
        Ok(out)
    }

    fn policy(&self) -> Result<Option<PolicyRecord>> {
        self.meta("policy", "policy")
    }

    fn topology_version(&self) -> Result<u64> {
        Ok(self
            .meta("topology_version", "topology version")?
            .unwrap_or(0))
    }

    fn audit_head(&self) -> Result<AuditHead> {
        Ok(self.meta("audit_head", "audit head")?.unwrap_or_default())
    }

    fn audit_snapshot(&self) -> Result<AuditSnapshot> {
        // One read transaction for both tables: a consistent snapshot.
        let txn = self.db.begin_read().map_err(Error::store)?;
        let meta = txn.open_table(META).map_err(Error::store)?;
        let head = match meta.get("audit_head").map_err(Error::store)? {
            Some(value) => decode(value.value(), "audit head")?,
            None => AuditHead::default(),
        };
        let table = txn.open_table(AUDIT).map_err(Error::store)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::store)? {
            let (key, value) = row.map_err(Error::store)?;
            out.push((key.value(), value.value().to_vec()));
        }
        Ok((head, out))
    }

    fn packages(&self) -> Result<Vec<PackageRecord>> {
        Ok(self
            .rows(PACKAGES, "package")?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    fn assignments(&self) -> Result<Vec<AssignmentRecord>> {
        Ok(self
            .rows(ASSIGNMENTS, "assignment")?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    fn update_reports(&self) -> Result<Vec<(PeerId, UpdateReportRecord)>> {
        self.rows(UPDATE_REPORTS, "update report")?
            .into_iter()
            .map(|(key, report)| Ok((peer_key(&key)?, report)))
            .collect()
    }

    fn hub_node(&self) -> Result<Option<PeerId>> {
        self.meta("hub_node", "hub node")
    }

    fn operator_signatures(&self) -> Result<Vec<(PeerId, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(Error::store)?;
        let table = txn.open_table(OPERATOR_SIGNATURES).map_err(Error::store)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(Error::store)? {
            let (key, value) = row.map_err(Error::store)?;
            out.push((peer_key(key.value())?, value.value().to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, change: &Change) -> Result<()> {
        let txn = self.db.begin_write().map_err(Error::store)?;
        {
            let mut meta = txn.open_table(META).map_err(Error::store)?;
            let mut tokens = txn.open_table(TOKENS).map_err(Error::store)?;
            let mut nodes = txn.open_table(NODES).map_err(Error::store)?;
            let mut pending = txn.open_table(PENDING).map_err(Error::store)?;
            let mut audit = txn.open_table(AUDIT).map_err(Error::store)?;
            if let Some((checked, redeemed)) = &change.redeem {
                let stored: Option<TokenRecord> =
                    match tokens.get(&checked.id.0[..]).map_err(Error::store)? {
                        Some(v) => Some(decode(v.value(), "token")?),
                        None => None,
                    };
                if stored.as_ref() != Some(checked) {
                    return Err(Error::Conflict("token"));
                }
                tokens
                    .insert(&redeemed.id.0[..], encode(redeemed).as_slice())
                    .map_err(Error::store)?;
            }
            for token in &change.tokens {
                tokens
                    .insert(&token.id.0[..], encode(token).as_slice())
                    .map_err(Error::store)?;
            }
            for node in &change.nodes {
                nodes
                    .insert(&node.id.0[..], encode(node).as_slice())
                    .map_err(Error::store)?;
            }
            for id in &change.unpending {
                pending.remove(&id.0[..]).map_err(Error::store)?;
            }
            for record in &change.pending {
                pending
                    .insert(&record.node.id.0[..], encode(record).as_slice())
                    .map_err(Error::store)?;
            }
            if let Some(policy) = &change.policy {
                meta.insert("policy", encode(policy).as_slice())
                    .map_err(Error::store)?;
            }
            if let Some(version) = change.topology_version {
                meta.insert("topology_version", encode(&version).as_slice())
                    .map_err(Error::store)?;
            }
            if let Some(id) = change.hub_node {
                meta.insert("hub_node", encode(&id).as_slice())
                    .map_err(Error::store)?;
            }
            commit_updates(&txn, change)?;
            if let Some(entry) = &change.audit {
                let head: AuditHead = match meta.get("audit_head").map_err(Error::store)? {
                    Some(v) => decode(v.value(), "audit head")?,
                    None => AuditHead::default(),
                };
                if head.len != entry.body.index || head.hash != entry.body.prev {
                    return Err(Error::Conflict("audit log"));
                }
                audit
                    .insert(entry.body.index, entry.encode().as_slice())
                    .map_err(Error::store)?;
                meta.insert("audit_head", encode(&entry.head()).as_slice())
                    .map_err(Error::store)?;
            }
        }
        txn.commit().map_err(Error::store)
    }
}

/// Writes the update records of `change` inside the open transaction.
fn commit_updates(txn: &redb::WriteTransaction, change: &Change) -> Result<()> {
    let mut packages = txn.open_table(PACKAGES).map_err(Error::store)?;
    for package in &change.packages {
        packages
            .insert(package.key().as_slice(), encode(package).as_slice())
            .map_err(Error::store)?;
    }
    let mut assignments = txn.open_table(ASSIGNMENTS).map_err(Error::store)?;
    for assignment in &change.assignments {
        assignments
            .insert(&assignment.node.0[..], encode(assignment).as_slice())
            .map_err(Error::store)?;
    }
    let mut reports = txn.open_table(UPDATE_REPORTS).map_err(Error::store)?;
    for (node, report) in &change.update_reports {
        reports
            .insert(&node.0[..], encode(report).as_slice())
            .map_err(Error::store)?;
    }
    let mut signatures = txn.open_table(OPERATOR_SIGNATURES).map_err(Error::store)?;
    for (node, signature) in &change.operator_signatures {
        signatures
            .insert(&node.0[..], signature.as_slice())
            .map_err(Error::store)?;
    }
    Ok(())
}

/// Decodes an audit entry stored by this module (for tools and tests that read the file).
pub fn decode_audit(bytes: &[u8]) -> Result<AuditEntry> {
    decode(bytes, "audit entry")
}
