//! The node's side of the operator lock: which topology entries it accepts.
//!
//! Invariant: [`OperatorLock::check`] returns `Ok` only for an entry whose signed record
//! names exactly the node ID, keys and address the hub sent, under a pinned operator key,
//! unexpired at the `now` passed in. Every other outcome is a typed [`LockRefusal`].

use super::{NodeKeyFacts, SignedKeyRecord};
use crate::error::{KeyRecordRejected, LockRefusal};

/// The operator keys a node trusts (the lock is on when a node has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorLock {
    keys: Vec<[u8; 32]>,
}

impl OperatorLock {
    /// A lock trusting `keys` (from [`parse_operator_keys`](super::parse_operator_keys)).
    pub fn new(keys: Vec<[u8; 32]>) -> Self {
        Self { keys }
    }

    /// The trusted operator keys.
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys
    }

    /// Decides whether the hub's entry `facts`, carrying `signature` (the encoded
    /// [`SignedKeyRecord`], empty when the hub has none), may become a peer at `now`
    /// (Unix seconds). On success, the verified record.
    pub fn check(
        &self,
        facts: &NodeKeyFacts,
        signature: &[u8],
        now: u64,
    ) -> Result<SignedKeyRecord, LockRefusal> {
        if signature.is_empty() {
            return Err(LockRefusal::Unsigned);
        }
        let signed = SignedKeyRecord::parse(signature).map_err(LockRefusal::Malformed)?;
        if !self.keys.contains(&signed.operator) {
            return Err(LockRefusal::UnknownOperator(hex::encode(
                &signed.operator[..8],
            )));
        }
        signed.verify_signature().map_err(|e| match e {
            KeyRecordRejected::BadSignature => LockRefusal::BadSignature,
            other => LockRefusal::Malformed(other),
        })?;
        let record = &signed.record.facts;
        let differs = if record.node_id != facts.node_id {
            Some("node ID")
        } else if record.ed25519 != facts.ed25519 {
            Some("Ed25519 key")
        } else if record.x25519 != facts.x25519 {
            Some("X25519 static key")
        } else if record.virtual_ip != facts.virtual_ip {
            Some("virtual IP")
        } else {
            None
        };
        if let Some(field) = differs {
            return Err(LockRefusal::KeysMismatch { field });
        }
        if now >= signed.record.not_after {
            return Err(LockRefusal::Expired {
                not_after: signed.record.not_after,
            });
        }
        Ok(signed)
    }
}
