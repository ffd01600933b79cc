//! The hub's state and rules: who is in the mesh, which tokens are good, what the policy is.
//!
//! Invariant: the in-memory view (nodes, topology version, audit head) always equals what the
//! store holds, because every mutation commits one [`Change`] first and updates memory only
//! after the commit succeeded, all under one lock. Subscribers see each committed change as
//! a new snapshot. Time and randomness are parameters: the gRPC shell reads the clock and
//! the OS RNG, the logic here never does.
//!
//! Method groups: [`Hub::open`] and the read accessors here; provisioning in `provision.rs`;
//! operator actions in `admin.rs`; operator-signed key records in `operator.rs`; signaling relay in `signal.rs`; the hub's own mesh node
//! in `mesh_node.rs`; certificate renewal in `renew.rs`; packages in `updates.rs`; deployments and update reports in
//! `deploy.rs`.

mod admin;
pub use self::admin::{MAX_TOKEN_TTL_SECS, NewToken};
pub mod candidates;
mod confirm;
pub mod ros;
pub use self::confirm::DEFAULT_CONFIRM_WINDOW_SECS;
mod deploy;
mod forward;
pub mod journal;
mod mesh_node;
mod operator;
pub mod presence;
pub use self::mesh_node::HUB_NODE_NAME;
mod provision;
mod renew;
pub(crate) mod replica;
pub use self::renew::{MIN_NODE_CERT_VALIDITY_SECS, Renewed};
pub(crate) use self::replica::blocking;
pub mod relay;
pub mod signal;
pub mod updates;
pub mod view;
pub use self::deploy::{Deploy, DeployTo, NodeUpdates};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bauxite_conduit::PeerId;
use tokio::sync::watch;

pub use self::provision::{ProvisionInput, Provisioned};
use self::relay::DatagramRelay;
use self::signal::SignalRouter;
use self::view::TopologyView;
use crate::audit::{AuditEntry, AuditHead};
use crate::clock::UnixTime;
use crate::ipam::MeshCidr;
use crate::metrics::HubMetrics;
use crate::pki::{CertRole, HubCa};
use crate::proto;
use crate::store::{Change, NodeRecord, PendingRecord, Store};
use crate::{CallRefused, Result};

/// Who made an authenticated call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An active, provisioned node.
    Node(PeerId),
    /// The operator.
    Admin,
    /// The operator, logged in to the admin web UI (audited apart from the certificate).
    AdminUi,
}

impl Caller {
    /// The audit-log actor string.
    pub fn actor(&self) -> String {
        match self {
            Caller::Node(id) => format!("node:{id}"),
            Caller::Admin => "admin".to_owned(),
            Caller::AdminUi => "admin:web-ui".to_owned(),
        }
    }
}

struct State {
    nodes: BTreeMap<PeerId, NodeRecord>,
    /// Registrations waiting for confirmation: they hold addresses and keys but are in
    /// no topology.
    pending: BTreeMap<PeerId, PendingRecord>,
    /// Where each node can be dialled besides its endpoint (`candidates.rs`; memory only).
    candidates: BTreeMap<PeerId, Vec<candidates::Candidate>>,
    /// The ROS 2 discovery servers nodes report running (`ros.rs`; memory only).
    ros_discovery: BTreeMap<PeerId, ros::RosDiscovery>,
    topology_version: u64,
    audit_head: AuditHead,
    /// The newest change of a shared store's log that this view includes (`replica.rs`).
    change_seq: u64,
    /// The node record that is the hub's own mesh node.
    hub_node: Option<PeerId>,
    updates: updates::UpdateBook,
    /// Operator-signed key records by node, distributed with them (`operator.rs`).
    signatures: BTreeMap<PeerId, Vec<u8>>,
    /// The replica each node holds its home relay stream on (`presence.rs`; a shared
    /// store only).
    relay_hubs: BTreeMap<PeerId, String>,
    /// Nodes whose peer entry may have changed since the last published topology
    /// (`view.rs`: the next version and its delta are made from these alone).
    touched: BTreeSet<PeerId>,
    /// Every node may have changed (the state was re-read): the next publication compares
    /// them all.
    touched_all: bool,
}

/// The hub: store, CA, in-memory view and change feeds.
pub struct Hub {
    store: Box<dyn Store>,
    ca: HubCa,
    cidr: MeshCidr,
    state: Mutex<State>,
    /// Held by each mutation of this hub, before the store's writers lock (`replica.rs`).
    writer: Mutex<()>,
    topology: watch::Sender<Arc<TopologyView>>,
    /// The deltas of the last topology changes (published with `topology`, under `state`).
    journal: Mutex<journal::TopologyJournal>,
    policy: watch::Sender<Arc<proto::node::PolicyDocument>>,
    signals: Mutex<SignalRouter>,
    relays: Mutex<DatagramRelay>,
    /// Nodes a change revoked whose streams on this hub are still to be detached: filled
    /// under `state`, drained after it is released (a leaf lock, never held across another).
    revoked: Mutex<Vec<PeerId>>,
    metrics: HubMetrics,
    closing: watch::Sender<bool>,
    /// Seconds a new registration has to be confirmed.
    confirm_window: u64,
    /// Lifetime of the node certificates this hub issues (provisioning and renewal).
    node_cert_validity: u64,
    /// Bumped whenever an update assignment changes (`WatchUpdates` streams wake on it).
    assignments: watch::Sender<u64>,
    /// The URL nodes reach this replica at, recorded as their relay presence
    /// (`presence.rs`); unset on a hub alone on its store.
    replica_url: std::sync::OnceLock<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// Loads the hub's state from `store` and records the start in the audit log.
    pub fn open(store: Box<dyn Store>, ca: HubCa, cidr: MeshCidr, now: UnixTime) -> Result<Self> {
        let mut state = State::load(store.as_ref())?;
        let policy = policy_document(store.as_ref())?;
        let topology = Arc::new(TopologyView::new(
            state.topology_version,
            state
                .nodes
                .keys()
                .filter_map(|id| Some((*id, state.peer(*id)?))),
        ));
        // The view holds every node as loaded.
        state.touched_all = false;
        let journal = journal::TopologyJournal::new(topology.version(), topology.digest());
        let hub = Self {
            store,
            ca,
            cidr,
            state: Mutex::new(state),
            writer: Mutex::new(()),
            topology: watch::channel(topology).0,
            journal: Mutex::new(journal),
            policy: watch::channel(Arc::new(policy)).0,
            signals: Mutex::new(SignalRouter::default()),
            relays: Mutex::new(DatagramRelay::default()),
            revoked: Mutex::new(Vec::new()),
            metrics: HubMetrics::default(),
            closing: watch::channel(false).0,
            confirm_window: DEFAULT_CONFIRM_WINDOW_SECS,
            node_cert_validity: crate::pki::ca::LEAF_LIFETIME_SECS,
            assignments: watch::channel(0).0,
            replica_url: std::sync::OnceLock::new(),
        };
        let detail = format!("mesh {}, CA {}", hub.cidr, hub.ca.fingerprint());
        hub.commit(now, "hub", "hub.start", detail, Change::default())?;
        Ok(hub)
    }

    /// The CA.
    pub fn ca(&self) -> &HubCa {
        &self.ca
    }

    /// The mesh CIDR.
    pub fn cidr(&self) -> MeshCidr {
        self.cidr
    }

    /// Counters for the Prometheus endpoint.
    pub fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    /// Decides who presented `cert_der` (already verified against the CA by TLS), checking
    /// revocation against the current state on every call.
    pub fn authorize(&self, cert_der: Option<&[u8]>) -> Result<Caller> {
        self.fresh(|| self.authorize_now(cert_der))
    }

    fn authorize_now(&self, cert_der: Option<&[u8]>) -> Result<Caller> {
        let der = cert_der.ok_or(CallRefused::NoClientCertificate)?;
        match CertRole::from_der(der)? {
            CertRole::Admin => Ok(Caller::Admin),
            CertRole::Node(binding) => {
                let state = lock(&self.state);
                let presented = crate::token::CaFingerprint::of_der(der);
                if let Some(pending) = state.pending.get(&binding.node_id) {
                    return Err(if presented.0 == pending.node.cert_sha256 {
                        CallRefused::NotConfirmed(binding.node_id)
                    } else {
                        CallRefused::NotIssued(binding.node_id)
                    }
                    .into());
                }
                let node = state
                    .nodes
                    .get(&binding.node_id)
                    .ok_or(CallRefused::UnknownNode(binding.node_id))?;
                if let Some(at) = node.revoked_at {
                    return Err(CallRefused::Revoked { node: node.id, at }.into());
                }
                if presented.0 != node.cert_sha256 {
                    return Err(CallRefused::NotIssued(node.id).into());
                }
                Ok(Caller::Node(node.id))
            }
        }
    }

    /// Whether `id` is a provisioned, unrevoked node.
    pub fn is_active(&self, id: PeerId) -> bool {
        lock(&self.state)
            .nodes
            .get(&id)
            .is_some_and(|n| n.revoked_at.is_none())
    }

    /// Every node, active and revoked, in peer-ID order (pending registrations are in
    /// [`pending`](Self::pending)).
    pub fn nodes(&self) -> Vec<NodeRecord> {
        lock(&self.state).nodes.values().cloned().collect()
    }

    /// Registrations waiting for confirmation, in peer-ID order.
    pub fn pending(&self) -> Vec<PendingRecord> {
        lock(&self.state).pending.values().cloned().collect()
    }

    /// A feed of topology versions (the current one first).
    pub fn subscribe_topology(&self) -> watch::Receiver<Arc<TopologyView>> {
        self.topology.subscribe()
    }

    /// One delta from topology version `held`, whose peers have `digest`, to the newest
    /// (without peers when `held` is the newest), or `None` when the journal does not reach
    /// back that far or this hub's version `held` had other peers (send a full snapshot).
    pub fn topology_delta_since(
        &self,
        held: u64,
        digest: &[u8],
    ) -> Option<Arc<proto::node::TopologySnapshot>> {
        lock(&self.journal).since(held, digest)
    }

    /// The oldest topology version a reconnecting node can resume from with a delta.
    pub fn topology_journal_start(&self) -> u64 {
        lock(&self.journal).oldest()
    }

    /// Publishes `state`'s topology to the feeds, with its delta in the journal: the peers
    /// of the nodes touched since the last publication are rebuilt, the rest is shared.
    /// Called with the state lock held, so publications keep the order of changes.
    fn publish_topology(&self, state: &mut State) {
        let old = self.topology.borrow().clone();
        let mut touched = std::mem::take(&mut state.touched);
        if std::mem::take(&mut state.touched_all) {
            touched.extend(old.ids());
            touched.extend(state.nodes.keys().copied());
        }
        let (new, delta) = old.update(
            state.topology_version,
            touched.into_iter().map(|id| (id, state.peer(id))),
        );
        lock(&self.journal).record(delta, new.len());
        self.topology.send_replace(Arc::new(new));
    }

    /// A feed of policy documents (the current one first).
    pub fn subscribe_policy(&self) -> watch::Receiver<Arc<proto::node::PolicyDocument>> {
        self.policy.subscribe()
    }

    /// The current policy (version 0 and empty JSON when none was set).
    pub fn policy(&self) -> Arc<proto::node::PolicyDocument> {
        self.policy.borrow().clone()
    }

    /// Starts stopping: every topology and policy stream ends with `UNAVAILABLE` (nodes
    /// reconnect with backoff) and every signaling stream closes, so the server's graceful
    /// shutdown does not wait on streams that would otherwise never end.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
        self.signals().close_all();
        self.relays().close_all();
    }

    /// Becomes `true` when [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The signaling relay.
    pub fn signals(&self) -> MutexGuard<'_, SignalRouter> {
        lock(&self.signals)
    }

    /// The data channel: mesh datagrams relayed between nodes.
    pub fn relays(&self) -> MutexGuard<'_, DatagramRelay> {
        lock(&self.relays)
    }

    /// Commits `change` plus an audit entry, then updates memory and feeds.
    fn commit(
        &self,
        now: UnixTime,
        actor: &str,
        action: &str,
        detail: String,
        change: Change,
    ) -> Result<()> {
        let mut state = self.write()?;
        self.commit_locked(&mut state, now, actor, action, detail, change)
    }

    fn commit_locked(
        &self,
        state: &mut State,
        now: UnixTime,
        actor: &str,
        action: &str,
        detail: String,
        mut change: Change,
    ) -> Result<()> {
        let entry = AuditEntry::next(&state.audit_head, now, actor, action, detail);
        let topology_changed = !change.nodes.is_empty() || !change.operator_signatures.is_empty();
        if topology_changed {
            change.topology_version = Some(state.topology_version + 1);
        }
        change.audit = Some(entry);
        self.store.commit(&change)?;
        self.apply_change(state, change);
        Ok(())
    }

    /// Brings memory and feeds up to date with a committed `change`: this hub's own, or
    /// one another replica logged (applied again it changes nothing: versions are only
    /// published when they grow).
    fn apply_change(&self, state: &mut State, change: Change) {
        if let Some(entry) = &change.audit {
            state.audit_head = entry.head();
            self.metrics
                .audit_entries
                .store(state.audit_head.len, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(id) = change.hub_node {
            state.touched.extend(state.hub_node);
            state.touched.insert(id);
            state.hub_node = Some(id);
        }
        if state.updates.apply(&change) {
            self.assignments.send_modify(|n| *n += 1);
        }
        for id in &change.unpending {
            state.pending.remove(id);
        }
        for pending in change.pending {
            state.pending.insert(pending.node.id, pending);
        }
        for node in change.nodes {
            if node.revoked_at.is_some() {
                lock(&self.revoked).push(node.id);
            }
            state.touched.insert(node.id);
            state.nodes.insert(node.id, node);
        }
        for (node, signature) in change.operator_signatures {
            state.touched.insert(node);
            state.signatures.insert(node, signature);
        }
        for (node, observed) in change.observed {
            state.apply_observed_of(node, observed);
        }
        state.apply_presence(&change.relay_presence);
        if let Some(version) = change
            .topology_version
            .filter(|v| *v > state.topology_version)
        {
            state.topology_version = version;
            self.publish_topology(state);
        }
        if let Some(policy) = change
            .policy
            .filter(|p| p.version > self.policy.borrow().version)
        {
            self.policy
                .send_replace(Arc::new(proto::node::PolicyDocument {
                    version: policy.version,
                    json: policy.json,
                }));
        }
    }
}

impl State {
    /// The durable part of the state as stored, with the observations a shared store keeps.
    fn load(store: &dyn Store) -> Result<Self> {
        // Read first: changes committed while the tables are read are applied again.
        let change_seq = store.change_seq()?;
        // Also first: the tables are read one after another, not as one snapshot, and a
        // replica may commit in between (a node confirmed: gone from `pending` before
        // `nodes` shows it). With the head and version from before the tables, such a
        // torn view never looks current: the next refresh sees the head moved and reads
        // again, so no decision (the next free address) is made on it.
        let audit_head = store.audit_head()?;
        let topology_version = store.topology_version()?;
        let mut state = State {
            change_seq,
            audit_head,
            topology_version,
            nodes: store.nodes()?.into_iter().map(|n| (n.id, n)).collect(),
            pending: store
                .pending()?
                .into_iter()
                .map(|p| (p.node.id, p))
                .collect(),
            candidates: BTreeMap::new(),
            ros_discovery: BTreeMap::new(),
            hub_node: store.hub_node()?,
            updates: updates::UpdateBook::load(store)?,
            signatures: store.operator_signatures()?.into_iter().collect(),
            relay_hubs: BTreeMap::new(),
            touched: BTreeSet::new(),
            touched_all: true,
        };
        state.load_observed(store)?;
        state.load_presence(store)?;
        Ok(state)
    }
}

/// The stored policy as nodes get it (version 0 and empty when none was set).
fn policy_document(store: &dyn Store) -> Result<proto::node::PolicyDocument> {
    Ok(store
        .policy()?
        .map(|p| proto::node::PolicyDocument {
            version: p.version,
            json: p.json,
        })
        .unwrap_or_default())
}

impl State {
    /// `id`'s entry in the topology: `None` unless it is an active node.
    fn peer(&self, id: PeerId) -> Option<proto::node::Peer> {
        let n = self.nodes.get(&id).filter(|n| n.revoked_at.is_none())?;
        let endpoint = n.endpoint.clone().unwrap_or_default();
        let (candidates, candidate_kinds) = self
            .candidates
            .get(&n.id)
            .into_iter()
            .flatten()
            .map(|c| (c.addr.to_string(), i32::from(c.kind)))
            .filter(|(c, _)| *c != endpoint)
            .unzip();
        let ros = self.ros_discovery.get(&n.id);
        Some(proto::node::Peer {
            node_id: n.id.to_string(),
            name: n.name.clone(),
            virtual_ip: n.virtual_ip.to_string(),
            x25519_public: n.x25519.to_vec(),
            ed25519_public: n.ed25519.to_vec(),
            endpoint,
            candidates,
            hub: Some(n.id) == self.hub_node,
            candidate_kinds,
            ros_discovery_port: ros.map_or(0, |r| u32::from(r.port)),
            ros_discovery_server_id: ros.map_or(0, |r| u32::from(r.server_id)),
            operator_signature: self.signatures.get(&n.id).cloned().unwrap_or_default(),
            relay_hub: self.relay_hubs.get(&n.id).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
