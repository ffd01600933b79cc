//! Durable state behind one interface, so the services never see the database.
//!
//! Invariant: every change is one [`Change`] committed atomically, with two compare-and-swap
//! guards checked inside the transaction: a redeemed token must still be exactly the record
//! the check saw (so two nodes cannot both spend the last use), and an audit entry must
//! extend the current head. Either everything in a `Change` is written or nothing is.
//!
//! [`RedbStore`] (one file, zero setup) is the default. [`PgStore`] serves several hub
//! replicas from one PostgreSQL database: its commits lock the audit head row
//! (`SELECT … FOR UPDATE`), and its writers take a database lock
//! ([`Store::lock_writers`]) so each replica decides on a fresh view.

mod memory;
pub mod postgres;
pub mod redb_store;
pub mod updates;

use bauxite_conduit::{PeerId, VirtualIp};
use serde::{Deserialize, Serialize};

pub use self::memory::MemoryStore;
pub use self::postgres::PgStore;
pub use self::redb_store::RedbStore;
pub use self::updates::{AssignmentRecord, PackageImage, PackageRecord, UpdateReportRecord};
use crate::Result;
use crate::audit::{AuditEntry, AuditHead};
use crate::clock::UnixTime;
use crate::token::{TokenId, TokenRecord};

/// What the hub keeps about a provisioned node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Peer ID (derived from `ed25519`).
    pub id: PeerId,
    /// Name given at join.
    pub name: String,
    /// Assigned mesh address.
    pub virtual_ip: VirtualIp,
    /// Ed25519 identity key.
    pub ed25519: [u8; 32],
    /// X25519 static key.
    pub x25519: [u8; 32],
    /// Ed25519 key of its TLS client certificate.
    pub tls_key: [u8; 32],
    /// SHA-256 of the issued certificate (DER); only this certificate is accepted.
    pub cert_sha256: [u8; 32],
    /// When it joined.
    pub joined_at: UnixTime,
    /// The token it redeemed.
    pub token: TokenId,
    /// Set once revoked; a revoked node is refused and leaves the topology.
    pub revoked_at: Option<UnixTime>,
    /// Underlay endpoint it advertised (`ip:port`), if any.
    pub endpoint: Option<String>,
}

/// A registration waiting for the node to confirm that it wrote its credentials
/// (two-phase provisioning). It holds its address and keys but is in no topology; if it is
/// not confirmed by `expires_at`, it is deleted, its address freed and its token use given
/// back (while the token is still valid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The node as it will be stored once confirmed.
    pub node: NodeRecord,
    /// The first instant at which the registration is no longer confirmable.
    pub expires_at: UnixTime,
}

/// The mesh policy as set by the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Increases by one per change, from 1.
    pub version: u64,
    /// conduit `Policy` as JSON (validated before storing).
    pub json: String,
    /// When it was set.
    pub set_at: UnixTime,
}

/// One atomic change to the store. A store shared by replicas also logs it
/// ([`Store::changes_since`]), so the other replicas apply it instead of re-reading all.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Change {
    /// Spend one use of a token: `(as checked, after redemption)`; refused with
    /// [`Error::Conflict`](crate::Error::Conflict) if the stored record is no longer `as checked`.
    pub redeem: Option<(TokenRecord, TokenRecord)>,
    /// Tokens to create or overwrite.
    pub tokens: Vec<TokenRecord>,
    /// Nodes to create or overwrite.
    pub nodes: Vec<NodeRecord>,
    /// Pending registrations to create or overwrite.
    pub pending: Vec<PendingRecord>,
    /// Pending registrations to delete (confirmed, expired or revoked).
    pub unpending: Vec<PeerId>,
    /// New policy.
    pub policy: Option<PolicyRecord>,
    /// New topology version.
    pub topology_version: Option<u64>,
    /// Audit entry to append; it must extend the stored head.
    pub audit: Option<AuditEntry>,
    /// Update packages to create or overwrite.
    pub packages: Vec<PackageRecord>,
    /// Node assignments to create or overwrite.
    pub assignments: Vec<AssignmentRecord>,
    /// Nodes' update reports to store (the last one per node is kept).
    pub update_reports: Vec<(PeerId, UpdateReportRecord)>,
    /// The node record that is the hub's own mesh node (set once).
    pub hub_node: Option<PeerId>,
    /// Operator-signed key records to store, by node (encoded `SignedKeyRecord`s, kept
    /// as uploaded: the hub relays them and cannot make them).
    pub operator_signatures: Vec<(PeerId, Vec<u8>)>,
    /// What nodes reported about themselves (candidates, ROS role), by node. Kept only by
    /// a store shared between replicas ([`Store::observed`]); others ignore it.
    pub observed: Vec<(PeerId, ObservedRecord)>,
    /// Where nodes hold their hub relay stream, by node: `Some(replica URL)` written at
    /// attach, `None` removed at detach (docs/hub.md, "The relay across replicas"). Kept
    /// only by a store shared between replicas ([`Store::relay_presence`]), tied to the
    /// writing replica's database session; others ignore it.
    pub relay_presence: Vec<(PeerId, Option<String>)>,
}

/// One stored relay presence: `node` holds its relay stream on the replica at `replica`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayPresenceRow {
    /// The node.
    pub node: PeerId,
    /// The URL of the replica it holds its relay stream on.
    pub replica: String,
    /// Whether the database session of the replica that wrote the row still exists
    /// (`false`: that replica died or lost its connection; the row is to be ignored).
    pub alive: bool,
    /// Whether this process's own session wrote it.
    pub mine: bool,
}

/// What a node reported about itself, shared between replicas so its peers on every
/// replica see it: observations, never audited (docs/hub.md, "PostgreSQL and replicas").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRecord {
    /// Candidate addresses with their kinds (`CandidateKind` as its proto number), best first.
    pub candidates: Vec<(std::net::SocketAddr, i32)>,
    /// The ROS 2 discovery server it runs: `(port, server ID)`.
    pub ros_discovery: Option<(u16, u8)>,
}

/// The recorded audit head and every stored entry as `(key, undecoded bytes)`, in key
/// order, read in one snapshot ([`Store::audit_snapshot`]).
pub type AuditSnapshot = (AuditHead, Vec<(u64, Vec<u8>)>);

/// The hub's durable state.
pub trait Store: Send + Sync {
    /// A token by ID.
    fn token(&self, id: TokenId) -> Result<Option<TokenRecord>>;
    /// Every token, used up and expired ones too, in ID order (the admin UI lists them).
    fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Every node, active or revoked, in peer-ID order.
    fn nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Every pending registration, in peer-ID order.
    fn pending(&self) -> Result<Vec<PendingRecord>>;
    /// The current policy, if one was ever set.
    fn policy(&self) -> Result<Option<PolicyRecord>>;
    /// The last topology version handed out (0 on a new hub).
    fn topology_version(&self) -> Result<u64>;
    /// The recorded end of the audit chain.
    fn audit_head(&self) -> Result<AuditHead>;
    /// The recorded head and every stored audit entry as `(key, bytes)` in key order,
    /// undecoded, read together (one snapshot): verifying a head read apart from the
    /// entries would report an entry appended in between as tampering.
    fn audit_snapshot(&self) -> Result<AuditSnapshot>;
    /// Every update package, revoked ones included, in (name, version) order.
    fn packages(&self) -> Result<Vec<PackageRecord>>;
    /// Every node's current assignment.
    fn assignments(&self) -> Result<Vec<AssignmentRecord>>;
    /// The last stored update report of every node that sent one.
    fn update_reports(&self) -> Result<Vec<(PeerId, UpdateReportRecord)>>;
    /// The ID of the hub's own mesh node, once it registered.
    fn hub_node(&self) -> Result<Option<PeerId>>;
    /// Every stored operator-signed key record, by node, in peer-ID order.
    fn operator_signatures(&self) -> Result<Vec<(PeerId, Vec<u8>)>>;
    /// Applies a change atomically.
    fn commit(&self, change: &Change) -> Result<()>;
    /// Waits until this process is the only writer among all processes sharing the store,
    /// and says whether the store is shared at all (`false`: only one process opens it, so
    /// nothing was locked). The hub re-reads its view after a `true`, decides, commits, and
    /// then calls [`unlock_writers`](Self::unlock_writers).
    fn lock_writers(&self) -> Result<bool> {
        Ok(false)
    }
    /// Ends what a `true` from [`lock_writers`](Self::lock_writers) started.
    fn unlock_writers(&self) {}
    /// The changes committed (by any process) after change number `after`, oldest first,
    /// with their numbers; `None` when this store keeps no such log or no longer reaches
    /// back that far (re-read the whole state, then follow from [`change_seq`](Self::change_seq)).
    fn changes_since(&self, after: u64) -> Result<Option<Vec<(u64, Change)>>> {
        let _ = after;
        Ok(None)
    }
    /// The number of the newest logged change (0: none, or no log).
    fn change_seq(&self) -> Result<u64> {
        Ok(0)
    }
    /// Every node's stored observations, or `None` when this store does not keep them
    /// (a store of one process: the hub keeps them in memory).
    fn observed(&self) -> Result<Option<Vec<(PeerId, ObservedRecord)>>> {
        Ok(None)
    }
    /// Every stored relay presence, live or dead (empty: this store is not shared, and
    /// nodes meet on the one hub there is).
    fn relay_presence(&self) -> Result<Vec<RelayPresenceRow>> {
        Ok(Vec::new())
    }
    /// Hands a signaling message (encoded `Signal`) for `to` to the other replicas: kept
    /// until one of them [takes](Self::take_signals) it, and announced to them. `false`:
    /// this store is not shared (the caller queues the message itself).
    fn forward_signal(&self, to: PeerId, message: Vec<u8>) -> Result<bool> {
        let _ = (to, message);
        Ok(false)
    }
    /// Removes and returns the forwarded messages waiting for `to`, oldest first; a
    /// message is returned to one caller only.
    fn take_signals(&self, to: PeerId) -> Result<Vec<Vec<u8>>> {
        let _ = to;
        Ok(Vec::new())
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| crate::Error::Decode { what, source })
}
