//! Redeeming a join token: every check first, then one atomic commit.
//!
//! A refused request changes nothing: no token use is spent, no address is taken, and
//! nothing is appended to the audit log (so unauthenticated callers cannot grow it;
//! refusals are logged and counted instead). An accepted one is only the first phase: the
//! node is recorded as *pending* (address and keys held, in no topology) until it
//! confirms with its new certificate that it wrote its credentials (`confirm.rs`), or
//! its registration expires.

use std::collections::BTreeSet;

use bauxite_conduit::PeerId;
use zeroize::Zeroizing;

use super::Hub;
use crate::clock::UnixTime;
use crate::error::{ProvisionRejected, TokenRejected};
use crate::pki::NodeBinding;
use crate::proof::{self, NodeKeys};
use crate::store::{Change, NodeRecord, PendingRecord};
use crate::token::{CaFingerprint, TokenId};
use crate::{Error, Result};

/// A provisioning request, decoded from the wire.
#[derive(Clone, Debug)]
pub struct ProvisionInput {
    /// Token ID.
    pub token_id: TokenId,
    /// Token secret.
    pub secret: Zeroizing<[u8; 32]>,
    /// CA fingerprint the node expects.
    pub ca: CaFingerprint,
    /// The node's public keys.
    pub keys: NodeKeys,
    /// Node name.
    pub name: String,
    /// Signature over [`proof::challenge`].
    pub proof: Vec<u8>,
}

/// A provisioned (pending) node: its record, its certificate and its confirmation
/// deadline.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// What the hub stored (as pending).
    pub record: NodeRecord,
    /// The issued client certificate (PEM).
    pub cert_pem: String,
    /// The node must confirm before this instant, or the registration expires.
    pub confirm_by: UnixTime,
}

/// The name a node is registered under: its own when it sent one, else the name the
/// operator gave the token (`token create --name robot-7`), else `node-` and the first 8
/// hex digits of its ID. So `bauxite join` without `--name` takes the token's name.
pub(crate) fn node_name(sent: &str, token: &str, id: PeerId) -> String {
    if !sent.is_empty() {
        return sent.to_owned();
    }
    if valid_name(token) {
        return token.to_owned();
    }
    let hex = id.to_string();
    format!("node-{}", hex.get(..8).unwrap_or(&hex))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

fn valid_ed25519(key: &[u8; 32]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|k| !k.is_weak())
}

impl Hub {
    /// Checks a request and, if everything holds, provisions the node.
    pub fn provision(&self, now: UnixTime, req: ProvisionInput) -> Result<Provisioned> {
        let result = self.try_provision(now, req);
        let counter = match &result {
            Ok(_) => &self.metrics.provisions,
            Err(_) => &self.metrics.provisions_refused,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    fn try_provision(&self, now: UnixTime, req: ProvisionInput) -> Result<Provisioned> {
        // Registrations past their window free their address (and maybe a token use)
        // before this one is checked.
        self.expire_pending(now)?;
        let hub_ca = self.ca.fingerprint();
        if !req.ca.matches(&hub_ca) {
            return Err(TokenRejected::WrongHub {
                token: req.ca,
                hub: hub_ca,
            }
            .into());
        }
        let token = self
            .store
            .token(req.token_id)?
            .ok_or(TokenRejected::Unknown(req.token_id))?;
        token.check(&req.secret, now)?;
        if !req.name.is_empty() && !valid_name(&req.name) {
            return Err(ProvisionRejected::BadName.into());
        }
        // The proof covers the name as sent, the empty one included.
        proof::verify(req.token_id, &hub_ca, &req.keys, &req.name, &req.proof)
            .map_err(ProvisionRejected::from)?;
        if !valid_ed25519(&req.keys.tls) {
            return Err(ProvisionRejected::BadKey {
                field: "tls_public_key",
            }
            .into());
        }
        if req.keys.x25519 == [0; 32] {
            return Err(ProvisionRejected::BadKey {
                field: "x25519_public",
            }
            .into());
        }
        let id = PeerId::from_signing_public(&req.keys.ed25519);
        let name = node_name(&req.name, &token.name, id);

        let mut state = self.write()?;
        // Again under the writers lock: another join (here or on another replica) may have
        // spent a use since, and the commit's compare-and-swap would refuse a stale record.
        let token = self
            .store
            .token(req.token_id)?
            .ok_or(TokenRejected::Unknown(req.token_id))?;
        token.check(&req.secret, now)?;
        if state.nodes.contains_key(&id) || state.pending.contains_key(&id) {
            return Err(ProvisionRejected::AlreadyJoined(id.to_string()).into());
        }
        let held = state
            .nodes
            .values()
            .chain(state.pending.values().map(|p| &p.node));
        for node in held.clone() {
            if node.x25519 == req.keys.x25519 {
                return Err(key_in_use("x25519 key", node.id));
            }
            if node.tls_key == req.keys.tls {
                return Err(key_in_use("TLS key", node.id));
            }
        }
        let used: BTreeSet<_> = held.map(|n| n.virtual_ip).collect();
        let virtual_ip = self
            .cidr
            .allocate(&used)
            .ok_or_else(|| ProvisionRejected::MeshFull(self.cidr.to_string()))?;
        let binding = NodeBinding::new(req.keys.ed25519, req.keys.x25519, virtual_ip);
        let issued = self
            .ca
            .issue_node(&binding, &req.keys.tls, now, self.node_cert_validity)?;
        let record = NodeRecord {
            id,
            name,
            virtual_ip,
            ed25519: req.keys.ed25519,
            x25519: req.keys.x25519,
            tls_key: req.keys.tls,
            cert_sha256: CaFingerprint::of_der(&issued.cert_der).0,
            joined_at: now,
            token: req.token_id,
            revoked_at: None,
            endpoint: None,
        };
        let confirm_by = now.plus(self.confirm_window);
        let change = Change {
            redeem: Some((token.clone(), token.redeemed())),
            pending: vec![PendingRecord {
                node: record.clone(),
                expires_at: confirm_by,
            }],
            ..Change::default()
        };
        let detail = format!(
            "node {id} {:?} got {virtual_ip} with token {} ({} use(s) left); pending until confirmed, at the latest {confirm_by}",
            record.name,
            token.id,
            token.uses_left.saturating_sub(1)
        );
        self.commit_locked(
            &mut state,
            now,
            &format!("node:{id}"),
            "node.provision",
            detail,
            change,
        )?;
        Ok(Provisioned {
            record,
            cert_pem: issued.cert_pem,
            confirm_by,
        })
    }
}

fn key_in_use(field: &'static str, owner: PeerId) -> Error {
    ProvisionRejected::KeyInUse {
        field,
        owner: owner.to_string(),
    }
    .into()
}
