//! [`Store`] on PostgreSQL, for several hub replicas serving one fleet.
//!
//! Invariant: every [`Store::commit`] runs in one transaction that first locks the single
//! `audit_head` row (`SELECT … FOR UPDATE`), so commits from every replica are applied one
//! after another, each audit entry extends the head it locked (or the commit is refused
//! with [`Error::Conflict`] and nothing is written), and the topology version only grows.
//! A committed change is announced with `NOTIFY bauxite_hub` (payload: the new audit
//! length, never a record), which [`listen`] turns into a resync of the other replicas.
//!
//! Writers of the hub also take a session advisory lock ([`Store::lock_writers`]) around
//! "refresh the in-memory view, decide, commit", so a replica never decides on a view
//! another replica has already changed (an IP address handed out twice, a stale version).
//!
//! IO shape: the synchronous `postgres` client lives on a thread of its own and the store
//! sends it jobs, because the client runs its own small runtime and must not be driven from
//! inside the hub's tokio runtime. A lost connection is reopened on the next job.

mod commit;
pub mod listen;
mod presence;
mod signals;

use std::sync::Mutex;
use std::sync::mpsc;

use bauxite_conduit::PeerId;
use postgres::{Client, IsolationLevel, NoTls};

use super::{
    AssignmentRecord, AuditSnapshot, Change, NodeRecord, ObservedRecord, PackageRecord,
    PendingRecord, PolicyRecord, RelayPresenceRow, Store, UpdateReportRecord, decode,
};
use crate::audit::AuditHead;
use crate::token::{TokenId, TokenRecord};
use crate::{Error, Result};

/// The `LISTEN`/`NOTIFY` channel a commit announces itself on.
pub const CHANNEL: &str = "bauxite_hub";
/// The channel a forwarded signaling message is announced on (payload: the destination
/// node's ID in hex, never the message).
pub const SIGNAL_CHANNEL: &str = "bauxite_signal";

/// Session advisory lock key held by a replica's writer ("bauxite" + 1).
const WRITERS_LOCK: i64 = 0x6261_7578_6974_6501;
/// Advisory lock key held while migrations run, so replicas starting together migrate once.
const MIGRATE_LOCK: i64 = 0x6261_7578_6974_6502;

mod embedded {
    refinery::embed_migrations!("migrations");
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The worker thread's connection, opened on first use and reopened after it broke.
struct Connection {
    url: String,
    client: Option<Client>,
}

impl Connection {
    fn get(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.url)?);
        }
        self.client.as_mut().ok_or(Error::StoreClosed)
    }
}

/// Opens a connection; the URL is never logged or put in an error (it may hold a password).
pub(crate) fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).map_err(Error::postgres("connect to PostgreSQL"))
}

/// Applies the embedded migrations that `client`'s database lacks, once even when several
/// replicas start together. Returns the names of the migrations applied.
fn migrate_client(client: &mut Client) -> Result<Vec<String>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .map_err(Error::postgres("lock the migrations"))?;
    let report = embedded::migrations::runner().run(client);
    // Unlocked whatever the outcome; a broken connection drops the lock by itself.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    let report = report.map_err(|e| Error::Migrate(Box::new(e)))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// `bauxite-dispatch migrate`: brings the database at `url` to this hub's schema.
pub fn migrate(url: &str) -> Result<Vec<String>> {
    // A thread of its own: the client must not run inside a tokio runtime.
    let url = url.to_owned();
    std::thread::spawn(move || migrate_client(&mut connect(&url)?))
        .join()
        .map_err(|_| Error::StoreClosed)?
}

/// The PostgreSQL store.
pub struct PgStore {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl PgStore {
    /// Connects to `url` (a `postgresql://` URL or `host=… dbname=…` string) and applies
    /// missing migrations.
    pub fn open(url: &str) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut connection = Connection {
            url: url.to_owned(),
            client: None,
        };
        std::thread::Builder::new()
            .name("bauxite-pg".into())
            .spawn(move || {
                // Ends when the store (the only sender) is dropped.
                while let Ok(job) = queue.recv() {
                    job(&mut connection);
                }
            })
            .map_err(Error::io("start the PostgreSQL thread", "bauxite-pg"))?;
        let store = Self {
            jobs: Mutex::new(jobs),
        };
        store.call(migrate_client)?;
        Ok(store)
    }

    /// Runs `f` on the store's connection and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(connection.get().and_then(f));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(job)
            .map_err(|_| Error::StoreClosed)?;
        // Waiting on the database (another replica may hold the writers lock) must not
        // stall the async runtime of the caller.
        crate::hub::blocking(|| answer.recv()).map_err(|_| Error::StoreClosed)?
    }

    /// Every `value` of `table` in key order, decoded, with its key.
    fn rows<T: for<'a> serde::Deserialize<'a> + Send + 'static>(
        &self,
        table: &'static str,
        what: &'static str,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        // `table` is one of this module's constant names, never input.
        let key = if table == "packages" { "key" } else { "id" };
        let sql = format!("SELECT {key}, value FROM {table} ORDER BY {key}");
        self.call(move |client| {
            let rows = client.query(&sql, &[]).map_err(Error::postgres(what))?;
            rows.iter()
                .map(|row| {
                    let key: Vec<u8> = row.get(0);
                    let value: &[u8] = row.get(1);
                    Ok((key, decode(value, what)?))
                })
                .collect()
        })
    }

    fn values<T: for<'a> serde::Deserialize<'a> + Send + 'static>(
        &self,
        table: &'static str,
        what: &'static str,
    ) -> Result<Vec<T>> {
        Ok(self
            .rows(table, what)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    fn meta<T: for<'a> serde::Deserialize<'a> + Send + 'static>(
        &self,
        key: &'static str,
        what: &'static str,
    ) -> Result<Option<T>> {
        self.call(move |client| {
            let row = client
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .map_err(Error::postgres(what))?;
            row.map(|row| decode(row.get::<_, &[u8]>(0), what))
                .transpose()
        })
    }
}

fn peer_key(key: &[u8]) -> Result<PeerId> {
    decode(key, "peer ID key")
}

/// The head row as stored (the schema checks its length and sign).
fn head_of(row: &postgres::Row) -> Result<AuditHead> {
    let len: i64 = row.get(0);
    let hash: &[u8] = row.get(1);
    Ok(AuditHead {
        len: u64::try_from(len).map_err(|_| Error::Conflict("audit head"))?,
        hash: hash.try_into().map_err(|_| Error::Conflict("audit head"))?,
    })
}

impl Store for PgStore {
    fn token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        self.call(move |client| {
            let row = client
                .query_opt("SELECT value FROM tokens WHERE id = $1", &[&&id.0[..]])
                .map_err(Error::postgres("read a token"))?;
            row.map(|row| decode(row.get::<_, &[u8]>(0), "token"))
                .transpose()
        })
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.values("tokens", "token")
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.values("nodes", "node")
    }

    fn pending(&self) -> Result<Vec<PendingRecord>> {
        self.values("pending", "pending registration")
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
        self.call(|client| {
            let row = client
                .query_one("SELECT len, hash FROM audit_head WHERE id = 1", &[])
                .map_err(Error::postgres("read the audit head"))?;
            head_of(&row)
        })
    }

    fn audit_snapshot(&self) -> Result<AuditSnapshot> {
        self.call(|client| {
            // Both reads see one snapshot: another replica may append in between.
            let mut txn = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(Error::postgres("read the audit log"))?;
            let head = head_of(
                &txn.query_one("SELECT len, hash FROM audit_head WHERE id = 1", &[])
                    .map_err(Error::postgres("read the audit head"))?,
            )?;
            let rows = txn
                .query("SELECT idx, entry FROM audit ORDER BY idx", &[])
                .map_err(Error::postgres("read the audit log"))?;
            txn.commit()
                .map_err(Error::postgres("read the audit log"))?;
            let raw = rows
                .iter()
                .map(|row| {
                    // The schema keeps idx >= 0.
                    let idx: i64 = row.get(0);
                    (idx.unsigned_abs(), row.get::<_, Vec<u8>>(1))
                })
                .collect();
            Ok((head, raw))
        })
    }

    fn packages(&self) -> Result<Vec<PackageRecord>> {
        self.values("packages", "package")
    }

    fn assignments(&self) -> Result<Vec<AssignmentRecord>> {
        self.values("assignments", "assignment")
    }

    fn update_reports(&self) -> Result<Vec<(PeerId, UpdateReportRecord)>> {
        self.rows("update_reports", "update report")?
            .into_iter()
            .map(|(key, report)| Ok((peer_key(&key)?, report)))
            .collect()
    }

    fn hub_node(&self) -> Result<Option<PeerId>> {
        self.meta("hub_node", "hub node")
    }

    fn operator_signatures(&self) -> Result<Vec<(PeerId, Vec<u8>)>> {
        self.call(|client| {
            let rows = client
                .query("SELECT id, value FROM operator_signatures ORDER BY id", &[])
                .map_err(Error::postgres("read operator signatures"))?;
            rows.iter()
                .map(|row| Ok((peer_key(row.get(0))?, row.get::<_, Vec<u8>>(1))))
                .collect()
        })
    }

    fn commit(&self, change: &Change) -> Result<()> {
        let change = change.clone();
        self.call(move |client| commit::commit(client, &change))
    }

    fn lock_writers(&self) -> Result<bool> {
        self.call(|client| {
            client
                .execute("SELECT pg_advisory_lock($1)", &[&WRITERS_LOCK])
                .map_err(Error::postgres("lock the writers"))?;
            Ok(true)
        })
    }

    fn unlock_writers(&self) {
        // A broken connection has already dropped the lock with the session.
        let _ = self.call(|client| {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&WRITERS_LOCK])
                .map_err(Error::postgres("unlock the writers"))
        });
    }

    fn changes_since(&self, after: u64) -> Result<Option<Vec<(u64, Change)>>> {
        let pruned: u64 = self
            .meta("changes_pruned_below", "change log start")?
            .unwrap_or(0);
        if after < pruned {
            return Ok(None);
        }
        let after = i64::try_from(after).map_err(|_| Error::Conflict("change number"))?;
        self.call(move |client| {
            let rows = client
                .query(
                    "SELECT seq, change FROM changes WHERE seq > $1 ORDER BY seq",
                    &[&after],
                )
                .map_err(Error::postgres("read the change log"))?;
            rows.iter()
                .map(|row| {
                    let seq: i64 = row.get(0);
                    Ok((
                        seq.unsigned_abs(),
                        decode(row.get::<_, &[u8]>(1), "change")?,
                    ))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        })
    }

    fn change_seq(&self) -> Result<u64> {
        self.call(|client| {
            let seq: i64 = client
                .query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])
                .map_err(Error::postgres("read the change log"))?
                .get(0);
            Ok(seq.unsigned_abs())
        })
    }

    fn observed(&self) -> Result<Option<Vec<(PeerId, ObservedRecord)>>> {
        self.rows("observations", "node observations")?
            .into_iter()
            .map(|(key, record)| Ok((peer_key(&key)?, record)))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn relay_presence(&self) -> Result<Vec<RelayPresenceRow>> {
        self.call(presence::read)
    }

    fn forward_signal(&self, to: PeerId, message: Vec<u8>) -> Result<bool> {
        self.call(move |client| signals::forward(client, to, &message))?;
        Ok(true)
    }

    fn take_signals(&self, to: PeerId) -> Result<Vec<Vec<u8>>> {
        self.call(move |client| signals::take(client, to))
    }
}
