//! Operator actions: tokens, revocation, policy, endpoints, the audit log. Each change is
//! audited with the acting caller.

use bauxite_conduit::PeerId;
use bauxite_conduit::policy::Policy;
use zeroize::Zeroizing;

use super::{Caller, Hub};
use crate::audit::page::{AuditPage, BadCursor, Positions};
use crate::audit::{self, AuditEntry, AuditHead, AuditProblem};
use crate::clock::UnixTime;
use crate::store::{Change, NodeRecord, PolicyRecord, decode};
use crate::token::{JoinToken, TokenId, TokenRecord, hash_secret};
use crate::{Error, Result};

/// What `token create` asks for, plus the randomness for it.
pub struct NewToken {
    /// Lifetime in seconds (1 s to [`MAX_TOKEN_TTL_SECS`]).
    pub ttl_secs: u64,
    /// How many nodes may join with it (at least 1).
    pub uses: u32,
    /// Operator label.
    pub name: String,
    /// Random token ID.
    pub id: [u8; 8],
    /// Random secret.
    pub secret: Zeroizing<[u8; 32]>,
}

/// Longest token lifetime accepted (30 days): join tokens are for imminent joins.
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 86_400;

impl Hub {
    /// Creates a join token; its ID and secret come from the caller (the shell's OS RNG).
    pub fn create_token(
        &self,
        now: UnixTime,
        caller: Caller,
        new: NewToken,
    ) -> Result<(JoinToken, TokenRecord)> {
        let NewToken {
            ttl_secs,
            uses,
            name,
            id,
            secret,
        } = new;
        let name = name.as_str();
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(Error::InvalidArgument {
                field: "ttl",
                problem: format!("{ttl_secs}s is outside 1s..=30d"),
            });
        }
        if uses == 0 {
            return Err(Error::InvalidArgument {
                field: "uses",
                problem: "must be at least 1".into(),
            });
        }
        if name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument {
                field: "name",
                problem: "at most 64 printable characters".into(),
            });
        }
        let record = TokenRecord {
            id: TokenId(id),
            name: name.to_owned(),
            secret_hash: hash_secret(&secret),
            created_at: now,
            expires_at: now.plus(ttl_secs),
            uses_left: uses,
            uses_total: uses,
        };
        if self.store.token(record.id)?.is_some() {
            return Err(Error::Conflict("token ID (random collision)"));
        }
        let detail = format!(
            "token {} {:?}: {uses} use(s), expires {}",
            record.id, record.name, record.expires_at
        );
        let change = Change {
            tokens: vec![record.clone()],
            ..Change::default()
        };
        self.commit(now, &caller.actor(), "token.create", detail, change)?;
        let token = JoinToken {
            id: record.id,
            secret,
            ca: self.ca.fingerprint(),
        };
        Ok((token, record))
    }

    /// Every join token (hashes stay inside: callers render the other fields).
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.store.tokens()
    }

    /// Records an admin UI event (login, failed login, logout) in the audit log; it
    /// changes nothing else.
    pub fn audit_event(
        &self,
        now: UnixTime,
        caller: Caller,
        action: &str,
        detail: String,
    ) -> Result<()> {
        self.commit(now, &caller.actor(), action, detail, Change::default())
    }

    /// Revokes a node: it is refused from its next call on and leaves every topology.
    pub fn revoke(&self, now: UnixTime, caller: Caller, node: &str) -> Result<NodeRecord> {
        let id = PeerId::from_hex(node).ok_or_else(|| Error::UnknownNode(node.to_owned()))?;
        let mut state = self.write()?;
        // A pending registration can be revoked too: it becomes a revoked node, so its
        // keys cannot join again and its address is never reused.
        let pending = state.pending.get(&id).map(|p| p.node.clone());
        let mut record = state
            .nodes
            .get(&id)
            .cloned()
            .or(pending)
            .ok_or_else(|| Error::UnknownNode(node.to_owned()))?;
        if record.revoked_at.is_some() {
            return Ok(record);
        }
        if state.hub_node == Some(id) {
            return Err(Error::HubNode(id));
        }
        record.revoked_at = Some(now);
        let detail = format!(
            "node {id} {:?} ({}) revoked",
            record.name, record.virtual_ip
        );
        let unpending = if state.pending.contains_key(&id) {
            vec![id]
        } else {
            Vec::new()
        };
        let change = Change {
            nodes: vec![record.clone()],
            unpending,
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &caller.actor(),
            "node.revoke",
            detail,
            change,
        )?;
        state.touched.insert(id);
        state.candidates.remove(&id);
        state.ros_discovery.remove(&id);
        drop(state);
        self.signals().detach_all(id);
        self.relays().detach_all(id);
        Ok(record)
    }

    /// Validates and stores a policy (conduit `Policy` as JSON), then pushes it to subscribers.
    pub fn set_policy(&self, now: UnixTime, caller: Caller, json: &str) -> Result<PolicyRecord> {
        let policy: Policy = serde_json::from_str(json)
            .map_err(|e| Error::InvalidPolicy(format!("not a policy document: {e}")))?;
        policy
            .validate()
            .map_err(|e| Error::InvalidPolicy(e.to_string()))?;
        let canonical =
            serde_json::to_string(&policy).map_err(|e| Error::InvalidPolicy(e.to_string()))?;
        // Under the write lock: two operators (or two replicas) never hand out one version.
        let mut state = self.write()?;
        let version = self.policy().version + 1;
        let record = PolicyRecord {
            version,
            json: canonical,
            set_at: now,
        };
        let detail = format!("policy v{version}: {}", record.json);
        let change = Change {
            policy: Some(record.clone()),
            ..Change::default()
        };
        let actor = caller.actor();
        self.commit_locked(&mut state, now, &actor, "policy.set", detail, change)?;
        Ok(record)
    }

    /// Records a node's advertised underlay endpoint; returns the new topology version.
    pub fn set_endpoint(
        &self,
        now: UnixTime,
        node: PeerId,
        endpoint: Option<String>,
    ) -> Result<u64> {
        if let Some(ep) = &endpoint {
            ep.parse::<std::net::SocketAddr>()
                .map_err(|_| Error::InvalidArgument {
                    field: "endpoint",
                    problem: format!("{ep:?} is not ip:port"),
                })?;
        }
        let mut state = self.write()?;
        let mut record = state
            .nodes
            .get(&node)
            .cloned()
            .ok_or_else(|| Error::UnknownNode(node.to_string()))?;
        if record.endpoint == endpoint {
            return Ok(state.topology_version);
        }
        record.endpoint = endpoint;
        let detail = format!("node {node} endpoint {:?}", record.endpoint);
        let change = Change {
            nodes: vec![record],
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &format!("node:{node}"),
            "node.endpoint",
            detail,
            change,
        )?;
        Ok(state.topology_version)
    }

    /// Every audit entry, decoded (undecodable entries are skipped; `verify_audit` names them).
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        let (_, raw) = self.store.audit_snapshot()?;
        Ok(raw
            .iter()
            .filter_map(|(_, bytes)| decode::<AuditEntry>(bytes, "audit entry").ok())
            .collect())
    }

    /// Verifies the whole chain against the stored head.
    pub fn verify_audit(&self) -> Result<(u64, std::result::Result<AuditHead, AuditProblem>)> {
        let (head, raw) = self.store.audit_snapshot()?;
        let count = raw.len() as u64;
        Ok((
            count,
            audit::verify(raw.iter().map(|(k, v)| (*k, v.as_slice())), &head),
        ))
    }

    /// One page of the audit log, chosen by `pick` from the snapshot's storage keys
    /// ([`crate::audit::page::forward`] or [`crate::audit::page::backward`]), with the whole chain verified in the same
    /// snapshot. A cursor outside the log is [`Error::AuditCursor`].
    pub fn audit_page<P: Positions>(
        &self,
        pick: impl FnOnce(&[u64]) -> std::result::Result<P, BadCursor>,
    ) -> Result<AuditPage<P>> {
        let (head, raw) = self.store.audit_snapshot()?;
        let keys: Vec<u64> = raw.iter().map(|(k, _)| *k).collect();
        let page = pick(&keys)?;
        // Verification needs every entry, not just the page's: a page of a broken chain
        // must not look verified. Hashing 20 000 entries takes milliseconds.
        let verified = audit::verify(raw.iter().map(|(k, v)| (*k, v.as_slice())), &head);
        let entries = raw
            .get(page.positions())
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, bytes)| decode::<AuditEntry>(bytes, "audit entry").ok())
            .collect();
        Ok(AuditPage {
            total: raw.len() as u64,
            page,
            entries,
            verified,
        })
    }
}
