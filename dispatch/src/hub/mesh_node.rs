//! The hub's own mesh node: one node record, flagged as the hub, that serves update
//! images on the mesh.
//!
//! Invariant: there is at most one hub node, its identity never changes once registered
//! (a different `mesh.identity` is refused rather than silently replacing the record),
//! it cannot be revoked or assigned an update, it is not counted as a robot, and no TLS
//! certificate can ever authenticate as it (its certificate hash is all zeros and its TLS
//! key is a weak point no provisioning request may carry).

use bauxite_conduit::PeerId;
use bauxite_conduit::identity::PublicIdentity;

use super::{Hub, lock};
use crate::clock::UnixTime;
use crate::error::ProvisionRejected;
use crate::store::{Change, NodeRecord};
use crate::token::TokenId;
use crate::{Error, Result};

/// Name of the hub's node in topology and `nodes list`.
pub const HUB_NODE_NAME: &str = "hub";

impl Hub {
    /// Registers the hub's mesh node on first start (an address from the mesh CIDR) or
    /// checks it on later starts; records `endpoint` (the advertised UDP address) when it
    /// changed. Returns the node's record.
    pub fn register_hub_node(
        &self,
        now: UnixTime,
        identity: &PublicIdentity,
        endpoint: Option<String>,
    ) -> Result<NodeRecord> {
        let id = identity.peer_id();
        let mut state = self.write()?;
        if let Some(existing) = state.hub_node {
            let mut record = state
                .nodes
                .get(&existing)
                .cloned()
                .ok_or_else(|| Error::UnknownNode(existing.to_string()))?;
            if existing != id || record.x25519 != identity.static_public {
                return Err(Error::InvalidArgument {
                    field: "mesh.identity",
                    problem: format!(
                        "this hub's mesh node is {existing}, but mesh.identity is {id}; restore the original mesh.identity"
                    ),
                });
            }
            if record.endpoint == endpoint {
                return Ok(record);
            }
            record.endpoint = endpoint;
            let detail = format!("hub mesh node {id} endpoint {:?}", record.endpoint);
            let change = Change {
                nodes: vec![record.clone()],
                ..Change::default()
            };
            self.commit_locked(&mut state, now, "hub", "hub.mesh", detail, change)?;
            return Ok(record);
        }
        // Robots, and registrations still waiting for confirmation, hold their keys and
        // addresses.
        let held: Vec<&NodeRecord> = state
            .nodes
            .values()
            .chain(state.pending.values().map(|p| &p.node))
            .collect();
        if held
            .iter()
            .any(|n| n.id == id || n.x25519 == identity.static_public)
        {
            return Err(Error::InvalidArgument {
                field: "mesh.identity",
                problem: format!("node {id} (or its key) is already a robot of this hub"),
            });
        }
        let used = held.iter().map(|n| n.virtual_ip).collect();
        let virtual_ip = self
            .cidr
            .allocate(&used)
            .ok_or_else(|| ProvisionRejected::MeshFull(self.cidr.to_string()))?;
        let record = NodeRecord {
            id,
            name: HUB_NODE_NAME.to_owned(),
            virtual_ip,
            ed25519: identity.signing_public,
            x25519: identity.static_public,
            // No certificate is issued: the hub's node is in-process and never calls the
            // gRPC API, so nothing may ever authenticate as it.
            tls_key: [0; 32],
            cert_sha256: [0; 32],
            joined_at: now,
            token: TokenId([0; 8]),
            revoked_at: None,
            endpoint,
        };
        let detail = format!("hub mesh node {id} got {virtual_ip}");
        let change = Change {
            nodes: vec![record.clone()],
            hub_node: Some(id),
            ..Change::default()
        };
        self.commit_locked(&mut state, now, "hub", "hub.mesh", detail, change)?;
        Ok(record)
    }

    /// The hub's own mesh node, once registered.
    pub fn hub_node(&self) -> Option<NodeRecord> {
        let state = lock(&self.state);
        state.hub_node.and_then(|id| state.nodes.get(&id)).cloned()
    }

    /// Whether `id` is the hub's own mesh node.
    pub fn is_hub_node(&self, id: PeerId) -> bool {
        lock(&self.state).hub_node == Some(id)
    }

    /// Active robots: provisioned, unrevoked nodes other than the hub's own.
    pub fn robots_active(&self) -> usize {
        let state = lock(&self.state);
        state
            .nodes
            .values()
            .filter(|n| n.revoked_at.is_none() && Some(n.id) != state.hub_node)
            .count()
    }
}
