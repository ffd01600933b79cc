//! Operator-signed key records (the operator lock): the hub stores them and hands them
//! out with the nodes in the topology; it never makes them (the operator's private key is
//! never on the hub), so nodes that pin the operator key can check what the hub serves.
//!
//! Invariant: a record is stored only when it names an active node's current node ID,
//! Ed25519 key, X25519 key and virtual IP, has not expired, and its signature verifies
//! under the operator key it carries. The hub does not know which operator keys the
//! nodes pin; a record signed by another key is stored and the nodes refuse it.

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::operator::SignedKeyRecord;

use super::{Caller, Hub, lock};
use crate::clock::UnixTime;
use crate::store::Change;
use crate::{Error, Result};

fn invalid(problem: String) -> Error {
    Error::InvalidArgument {
        field: "signed_record",
        problem,
    }
}

impl Hub {
    /// Stores an operator-signed key record (`bxop1.` text) for the node it names and
    /// publishes it in the topology; returns the node and the new topology version.
    pub fn sign_node(&self, now: UnixTime, caller: Caller, text: &str) -> Result<(PeerId, u64)> {
        let signed = SignedKeyRecord::from_text(text).map_err(|e| invalid(e.to_string()))?;
        signed
            .verify_signature()
            .map_err(|e| invalid(e.to_string()))?;
        let facts = signed.record.facts;
        let id = facts.node_id;
        let mut state = self.write()?;
        let node = state
            .nodes
            .get(&id)
            .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
        if node.revoked_at.is_some() {
            return Err(invalid(format!("node {id} is revoked")));
        }
        let differs = if node.ed25519 != facts.ed25519 {
            Some("Ed25519 key")
        } else if node.x25519 != facts.x25519 {
            Some("X25519 key")
        } else if node.virtual_ip != facts.virtual_ip {
            Some("virtual IP")
        } else {
            None
        };
        if let Some(field) = differs {
            return Err(invalid(format!(
                "the record's {field} is not node {id}'s; sign the request the node printed \
                 (`bauxite operator request` on the node)"
            )));
        }
        if now.0 >= signed.record.not_after {
            return Err(invalid(format!(
                "the record expired at {}; sign it again with a later expiry",
                UnixTime(signed.record.not_after)
            )));
        }
        let detail = format!(
            "node {id} {:?} key record serial {} valid until {}, operator key {}",
            node.name,
            signed.record.serial,
            UnixTime(signed.record.not_after),
            hex::encode(signed.operator)
        );
        let change = Change {
            operator_signatures: vec![(id, signed.encode())],
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &caller.actor(),
            "node.operator_sign",
            detail,
            change,
        )?;
        Ok((id, state.topology_version))
    }

    /// The operator-signed key record the hub distributes for `id` (empty: none).
    pub fn operator_signature(&self, id: PeerId) -> Vec<u8> {
        lock(&self.state)
            .signatures
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }
}
