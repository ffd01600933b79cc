//! The second phase of provisioning: a node confirms, with the certificate it was just
//! issued, that it wrote its credentials; registrations that are never confirmed expire.
//!
//! Invariant: a node is in the topology only once confirmed. A pending registration
//! holds its address and keys (nobody else can take them) until it is confirmed or until
//! `expires_at`; then it is deleted, its address is free again and, if its token is still
//! valid, the token gets its use back, so a join that failed on the node's side (a state
//! root it could not write, a crash before the files were durable) leaves no ghost node
//! and costs no token. Both steps are audited (`node.provision`, then `node.confirm` or
//! `node.expire`).

use bauxite_conduit::PeerId;

use super::{Caller, Hub, lock};
use crate::clock::UnixTime;
use crate::error::CallRefused;
use crate::pki::CertRole;
use crate::store::{Change, NodeRecord};
use crate::token::CaFingerprint;
use crate::{Error, Result};

/// How long a node has to confirm its registration when the hub is not told otherwise.
pub const DEFAULT_CONFIRM_WINDOW_SECS: u64 = 600;

impl Hub {
    /// Sets how long new registrations have to be confirmed (at least 1 s).
    pub fn with_confirm_window(mut self, secs: u64) -> Self {
        self.confirm_window = secs.max(1);
        self
    }

    /// The confirmation window in seconds.
    pub fn confirm_window(&self) -> u64 {
        self.confirm_window
    }

    /// Who presented `cert_der` for `ConfirmProvision`: a pending node or an active one
    /// (confirming twice is harmless), with exactly the certificate issued to it; the
    /// admin certificate is returned as such for the caller to refuse.
    pub fn authorize_confirm(&self, cert_der: Option<&[u8]>) -> Result<Caller> {
        self.fresh(|| self.authorize_confirm_now(cert_der))
    }

    fn authorize_confirm_now(&self, cert_der: Option<&[u8]>) -> Result<Caller> {
        let der = cert_der.ok_or(CallRefused::NoClientCertificate)?;
        let CertRole::Node(binding) = CertRole::from_der(der)? else {
            return Ok(Caller::Admin);
        };
        let id = binding.node_id;
        let presented = CaFingerprint::of_der(der).0;
        let state = lock(&self.state);
        let issued = match (state.pending.get(&id), state.nodes.get(&id)) {
            (Some(pending), _) => pending.node.cert_sha256,
            (None, Some(node)) => {
                if let Some(at) = node.revoked_at {
                    return Err(CallRefused::Revoked { node: id, at }.into());
                }
                node.cert_sha256
            }
            (None, None) => return Err(CallRefused::UnknownNode(id).into()),
        };
        if presented != issued {
            return Err(CallRefused::NotIssued(id).into());
        }
        Ok(Caller::Node(id))
    }

    /// Confirms `node`'s registration: it joins the topology. Confirming an active node
    /// changes nothing, a revoked one is refused, and a registration past its window is
    /// expired now and refused.
    pub fn confirm(&self, now: UnixTime, node: PeerId) -> Result<NodeRecord> {
        // A member confirming again (every connection of `bauxite run` does) needs no
        // writers lock: a node record is never un-made, and revocation is checked by the
        // call's authorisation. Keeps a replica's whole fleet reconnecting at once from
        // queueing on the lock.
        if let Some(known) = lock(&self.state).nodes.get(&node)
            && known.revoked_at.is_none()
        {
            return Ok(known.clone());
        }
        let mut state = self.write()?;
        if let Some(known) = state.nodes.get(&node) {
            return match known.revoked_at {
                Some(at) => Err(CallRefused::Revoked { node, at }.into()),
                None => Ok(known.clone()),
            };
        }
        let pending = state
            .pending
            .get(&node)
            .cloned()
            .ok_or(CallRefused::UnknownNode(node))?;
        if now >= pending.expires_at {
            drop(state);
            self.expire_pending(now)?;
            return Err(CallRefused::RegistrationExpired {
                node,
                at: pending.expires_at,
            }
            .into());
        }
        let record = NodeRecord {
            joined_at: now,
            ..pending.node
        };
        let detail = format!(
            "node {node} {:?} ({}) confirmed it holds its credentials; in the topology",
            record.name, record.virtual_ip
        );
        let change = Change {
            nodes: vec![record.clone()],
            unpending: vec![node],
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &format!("node:{node}"),
            "node.confirm",
            detail,
            change,
        )?;
        Ok(record)
    }

    /// The earliest instant a pending registration expires, for the shell's timer.
    pub fn next_expiry(&self) -> Option<UnixTime> {
        lock(&self.state)
            .pending
            .values()
            .map(|p| p.expires_at)
            .min()
    }

    /// Deletes every registration whose window closed at or before `now`, freeing its
    /// address and giving its token the use back while the token is still valid; each in
    /// its own audited commit. Returns the expired nodes.
    pub fn expire_pending(&self, now: UnixTime) -> Result<Vec<PeerId>> {
        // Nothing due in this view: no writers lock (every provisioning and the timer
        // check; on replicas the lock is one for all of them). A registration another
        // replica made since is not due either: a new one expires in the future.
        if !lock(&self.state)
            .pending
            .values()
            .any(|p| now >= p.expires_at)
        {
            return Ok(Vec::new());
        }
        let mut state = self.write()?;
        let due: Vec<_> = state
            .pending
            .values()
            .filter(|p| now >= p.expires_at)
            .cloned()
            .collect();
        let mut expired = Vec::with_capacity(due.len());
        for pending in due {
            let node = &pending.node;
            let token = self.store.token(node.token)?;
            let give_back = token
                .filter(|t| now < t.expires_at && t.uses_left < t.uses_total)
                .map(|t| {
                    let restored = crate::token::TokenRecord {
                        uses_left: t.uses_left + 1,
                        ..t.clone()
                    };
                    (t, restored)
                });
            let detail = format!(
                "node {} {:?} ({}) not confirmed by {}; address freed, {}",
                node.id,
                node.name,
                node.virtual_ip,
                pending.expires_at,
                match &give_back {
                    Some((t, _)) => format!("token {} got its use back", t.id),
                    None => format!("token {} not restored (expired or gone)", node.token),
                }
            );
            let change = Change {
                redeem: give_back,
                unpending: vec![node.id],
                ..Change::default()
            };
            match self.commit_locked(&mut state, now, "hub", "node.expire", detail, change) {
                Ok(()) => expired.push(node.id),
                // The token changed under us (a redemption raced): next sweep retries.
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}
