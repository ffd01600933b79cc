//! One [`Change`] as one PostgreSQL transaction.
//!
//! Invariant: the transaction locks the `audit_head` row before it reads or writes
//! anything else, so every commit of every replica sees the effects of the one before it;
//! the two compare-and-swap guards (the redeemed token, the audit head) and the topology
//! version's growth are checked under that lock, and any refusal rolls everything back.

use postgres::{Client, Transaction};

use super::{CHANNEL, head_of};
use crate::audit::AuditHead;
use crate::store::{Change, PolicyRecord, decode, encode};
use crate::token::TokenRecord;
use crate::{Error, Result};

/// Changes kept in the log: a replica further behind re-reads the whole state.
const KEEP_CHANGES: i64 = 100_000;
/// The log is pruned at every this many changes.
const PRUNE_EVERY: i64 = 1024;

/// Inserts or overwrites `value` under `key` in `table` (one of the schema's names).
fn upsert(tx: &mut Transaction<'_>, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
    let column = if table == "packages" { "key" } else { "id" };
    let sql = format!(
        "INSERT INTO {table} ({column}, value) VALUES ($1, $2) \
         ON CONFLICT ({column}) DO UPDATE SET value = EXCLUDED.value"
    );
    tx.execute(&sql, &[&key, &value])
        .map_err(Error::postgres("write a record"))?;
    Ok(())
}

fn set_meta(tx: &mut Transaction<'_>, key: &str, value: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .map_err(Error::postgres("write a record"))?;
    Ok(())
}

/// Applies `change` atomically; see the module invariant.
pub(super) fn commit(client: &mut Client, change: &Change) -> Result<()> {
    let mut tx = client
        .transaction()
        .map_err(Error::postgres("begin a transaction"))?;
    let row = tx
        .query_one(
            "SELECT len, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(Error::postgres("lock the audit head"))?;
    let head: AuditHead = head_of(&row)?;
    if let Some((checked, redeemed)) = &change.redeem {
        let stored = tx
            .query_opt(
                "SELECT value FROM tokens WHERE id = $1 FOR UPDATE",
                &[&&checked.id.0[..]],
            )
            .map_err(Error::postgres("read a token"))?;
        let stored: Option<TokenRecord> = stored
            .map(|row| decode(row.get::<_, &[u8]>(0), "token"))
            .transpose()?;
        if stored.as_ref() != Some(checked) {
            return Err(Error::Conflict("token"));
        }
        upsert(&mut tx, "tokens", &redeemed.id.0, &encode(redeemed))?;
    }
    for token in &change.tokens {
        upsert(&mut tx, "tokens", &token.id.0, &encode(token))?;
    }
    for node in &change.nodes {
        upsert(&mut tx, "nodes", &node.id.0, &encode(node))?;
    }
    for id in &change.unpending {
        tx.execute("DELETE FROM pending WHERE id = $1", &[&&id.0[..]])
            .map_err(Error::postgres("delete a pending registration"))?;
    }
    for record in &change.pending {
        upsert(&mut tx, "pending", &record.node.id.0, &encode(record))?;
    }
    if let Some(policy) = &change.policy {
        let stored = tx
            .query_opt("SELECT value FROM meta WHERE key = 'policy'", &[])
            .map_err(Error::postgres("read the policy"))?;
        let stored: Option<PolicyRecord> = stored
            .map(|row| decode(row.get::<_, &[u8]>(0), "policy"))
            .transpose()?;
        // Nodes keep the highest policy version they saw: one version, one document.
        if stored.is_some_and(|s| s.version >= policy.version) {
            return Err(Error::Conflict("policy version"));
        }
        set_meta(&mut tx, "policy", &encode(policy))?;
    }
    if let Some(version) = change.topology_version {
        let stored = tx
            .query_opt("SELECT value FROM meta WHERE key = 'topology_version'", &[])
            .map_err(Error::postgres("read the topology version"))?;
        let stored: u64 = stored
            .map(|row| decode(row.get::<_, &[u8]>(0), "topology version"))
            .transpose()?
            .unwrap_or(0);
        // Versions handed to nodes never go back, whichever replica hands them out.
        if version <= stored {
            return Err(Error::Conflict("topology version"));
        }
        set_meta(&mut tx, "topology_version", &encode(&version))?;
    }
    if let Some(id) = change.hub_node {
        set_meta(&mut tx, "hub_node", &encode(&id))?;
    }
    for package in &change.packages {
        upsert(&mut tx, "packages", &package.key(), &encode(package))?;
    }
    for assignment in &change.assignments {
        upsert(
            &mut tx,
            "assignments",
            &assignment.node.0,
            &encode(assignment),
        )?;
    }
    for (node, report) in &change.update_reports {
        upsert(&mut tx, "update_reports", &node.0, &encode(report))?;
    }
    for (node, signature) in &change.operator_signatures {
        upsert(&mut tx, "operator_signatures", &node.0, signature)?;
    }
    for (node, observed) in &change.observed {
        upsert(&mut tx, "observations", &node.0, &encode(observed))?;
    }
    for (node, replica) in &change.relay_presence {
        super::presence::write(&mut tx, *node, replica.as_deref())?;
    }
    let mut len = head.len;
    if let Some(entry) = &change.audit {
        if head.len != entry.body.index || head.hash != entry.body.prev {
            return Err(Error::Conflict("audit log"));
        }
        let next = entry.head();
        let index = i64::try_from(entry.body.index).map_err(|_| Error::Conflict("audit log"))?;
        let next_len = i64::try_from(next.len).map_err(|_| Error::Conflict("audit log"))?;
        tx.execute(
            "INSERT INTO audit (idx, entry) VALUES ($1, $2)",
            &[&index, &entry.encode()],
        )
        .map_err(Error::postgres("append to the audit log"))?;
        tx.execute(
            "UPDATE audit_head SET len = $1, hash = $2 WHERE id = 1",
            &[&next_len, &&next.hash[..]],
        )
        .map_err(Error::postgres("move the audit head"))?;
        len = next.len;
    }
    let seq: i64 = tx
        .query_one(
            "INSERT INTO changes (change) VALUES ($1) RETURNING seq",
            &[&encode(change)],
        )
        .map_err(Error::postgres("log the change"))?
        .get(0);
    // Only once more than KEEP_CHANGES exist (a negative bound would read as a huge one
    // and send every replica back to re-reading all tables).
    if seq % PRUNE_EVERY == 0 && seq > KEEP_CHANGES {
        let below = seq - KEEP_CHANGES;
        tx.execute("DELETE FROM changes WHERE seq < $1", &[&below])
            .map_err(Error::postgres("prune the change log"))?;
        set_meta(
            &mut tx,
            "changes_pruned_below",
            &encode(&below.unsigned_abs()),
        )?;
    }
    // Delivered to every listening replica when (and only if) the transaction commits.
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &len.to_string()])
        .map_err(Error::postgres("notify the replicas"))?;
    tx.commit().map_err(Error::postgres("commit"))
}
