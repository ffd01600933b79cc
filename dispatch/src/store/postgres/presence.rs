//! Relay presence: which replica holds each node's hub relay stream (`relay_presence`).
//!
//! Invariant: a row is owned by the database session that wrote it, named by its
//! `pid` and `backend_start` (a pid can be reused, a (pid, start) pair cannot). A row
//! whose session is gone is *dead*: the replica that wrote it was killed or lost its
//! connection, so its relay streams are gone with it or will be re-announced. Removing a
//! presence deletes the row only if this session owns it or it is dead: a node that has
//! moved to another live replica keeps that replica's row.

use bauxite_conduit::PeerId;
use postgres::{Client, Transaction};

use crate::store::{RelayPresenceRow, decode};
use crate::{Error, Result};

/// Whether the row `r`'s session still exists (SQL, on the row alias `r`).
const ALIVE: &str = "EXISTS (SELECT 1 FROM pg_stat_activity a \
     WHERE a.pid = r.pid AND a.backend_start = r.backend_start)";

/// Records (`Some(replica)`) or removes (`None`) `node`'s presence in the commit `tx`.
pub(super) fn write(tx: &mut Transaction<'_>, node: PeerId, replica: Option<&str>) -> Result<()> {
    match replica {
        Some(replica) => tx.execute(
            "INSERT INTO relay_presence (node, replica, pid, backend_start) \
             SELECT $1, $2, a.pid, a.backend_start FROM pg_stat_activity a \
             WHERE a.pid = pg_backend_pid() \
             ON CONFLICT (node) DO UPDATE SET replica = EXCLUDED.replica, \
             pid = EXCLUDED.pid, backend_start = EXCLUDED.backend_start",
            &[&&node.0[..], &replica],
        ),
        None => tx.execute(
            &format!(
                "DELETE FROM relay_presence r WHERE r.node = $1 \
                 AND (r.pid = pg_backend_pid() OR NOT {ALIVE})"
            ),
            &[&&node.0[..]],
        ),
    }
    .map_err(Error::postgres("record a relay presence"))?;
    Ok(())
}

/// Every row, with whether its session is alive and whether it is this session's.
pub(super) fn read(client: &mut Client) -> Result<Vec<RelayPresenceRow>> {
    let rows = client
        .query(
            &format!(
                "SELECT r.node, r.replica, {ALIVE}, r.pid = pg_backend_pid() \
                 FROM relay_presence r ORDER BY r.node"
            ),
            &[],
        )
        .map_err(Error::postgres("read the relay presence"))?;
    rows.iter()
        .map(|row| {
            Ok(RelayPresenceRow {
                // Keyed like every table: the ID's postcard bytes (its 16 raw bytes).
                node: decode(row.get::<_, &[u8]>(0), "relay presence node")?,
                replica: row.get(1),
                alive: row.get(2),
                mine: row.get(3),
            })
        })
        .collect()
}
