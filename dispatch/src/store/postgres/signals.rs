//! Signaling messages between replicas: a node's message for a peer connected to another
//! replica waits in the `signals` table and is announced on [`SIGNAL_CHANNEL`].
//!
//! Invariant: a message is delivered at most once (taking it is a `DELETE … RETURNING`,
//! so two replicas that both think the destination is theirs cannot both get it), in the
//! order it was forwarded, and at most [`PENDING_PER_PEER`] wait per destination (the
//! oldest are trimmed, as in the replica's own queue: fresh candidates beat stale ones).
//! A message survives any replica's restart until the destination attaches somewhere.

use bauxite_conduit::PeerId;
use postgres::Client;

use super::SIGNAL_CHANNEL;
use crate::hub::signal::PENDING_PER_PEER;
use crate::{Error, Result};

/// Stores `message` for `to`, trims the oldest beyond the bound, and announces it.
pub(super) fn forward(client: &mut Client, to: PeerId, message: &[u8]) -> Result<()> {
    let keep = i64::try_from(PENDING_PER_PEER).unwrap_or(i64::MAX);
    let mut tx = client
        .transaction()
        .map_err(Error::postgres("begin a transaction"))?;
    tx.execute(
        "INSERT INTO signals (to_node, message) VALUES ($1, $2)",
        &[&&to.0[..], &message],
    )
    .map_err(Error::postgres("forward a signal"))?;
    tx.execute(
        "DELETE FROM signals WHERE to_node = $1 AND seq <= \
         (SELECT seq FROM signals WHERE to_node = $1 ORDER BY seq DESC OFFSET $2 LIMIT 1)",
        &[&&to.0[..], &keep],
    )
    .map_err(Error::postgres("trim forwarded signals"))?;
    // Delivered to the listening replicas when (and only if) the insert commits.
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&SIGNAL_CHANNEL, &to.to_string()],
    )
    .map_err(Error::postgres("announce a signal"))?;
    tx.commit().map_err(Error::postgres("commit a signal"))
}

/// Removes and returns every message waiting for `to`, oldest first.
pub(super) fn take(client: &mut Client, to: PeerId) -> Result<Vec<Vec<u8>>> {
    let rows = client
        .query(
            "WITH taken AS (DELETE FROM signals WHERE to_node = $1 RETURNING seq, message) \
             SELECT message FROM taken ORDER BY seq",
            &[&&to.0[..]],
        )
        .map_err(Error::postgres("take forwarded signals"))?;
    Ok(rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect())
}
