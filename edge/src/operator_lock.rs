//! The operator lock on the node: which peers of the hub's topology become peers of the
//! data plane, and what `bauxite status` shows about the ones refused.
//!
//! Invariant: with the lock on, a topology entry reaches conduit's peer table only when
//! [`OperatorLock::check`] accepts it at the `now` passed in: its operator-signed record
//! names exactly the node ID, Ed25519 key, X25519 key and virtual IP the hub sent. Every
//! other entry is dropped from the snapshot before conversion and reported. Screening is
//! pure; the connector logs, counts and publishes.
//!
//! This node's own entry is never a peer; it is checked too, as evidence: keys other than
//! this node's mean the hub is telling others a different key for it (it may do so only to
//! them, so a clean own entry proves nothing), and an unsigned own record means nodes
//! with the lock on will refuse this one.

use std::fmt::Write as _;

use bauxite_conduit::identity::PublicIdentity;
use bauxite_conduit::{PeerId, VirtualIp};
use bauxite_dispatch_api::operator::{NodeKeyFacts, OperatorLock};
use bauxite_dispatch_api::proto::node::{Peer, TopologySnapshot};
use serde::{Deserialize, Serialize};

/// A topology entry the lock refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedPeer {
    /// Its node ID as the hub sent it.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its virtual IP as the hub sent it.
    pub virtual_ip: String,
    /// A stable code: `unsigned`, `malformed`, `unknown_operator`, `bad_signature`,
    /// `keys_mismatch`, `expired`, or `bad_entry` (an entry that does not parse).
    pub code: String,
    /// Why, for people (`key not signed by operator ...`).
    pub reason: String,
}

/// The lock's state for `bauxite status` (JSON key `operator_lock`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReport {
    /// The pinned operator keys (hex).
    pub keys: Vec<String>,
    /// The entries of the last topology that were refused.
    pub refused: Vec<RefusedPeer>,
    /// Refusals since the daemon started (a peer refused in several snapshots in a row
    /// counts once; refused again after being accepted, it counts again).
    pub refusals_total: u64,
    /// A problem with this node's own entry in the last topology, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<String>,
}

/// What the lock made of one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Screened {
    /// The snapshot with only the accepted entries (and this node's own).
    pub snapshot: TopologySnapshot,
    /// The refused entries.
    pub refused: Vec<RefusedPeer>,
    /// A problem with this node's own entry.
    pub own: Option<String>,
    /// The earliest expiry (Unix seconds) of an accepted record: screen again then.
    pub next_expiry: Option<u64>,
}

/// The facts a topology entry claims, if it parses.
pub fn facts_of(peer: &Peer) -> Option<NodeKeyFacts> {
    Some(NodeKeyFacts {
        node_id: PeerId::from_hex(&peer.node_id)?,
        ed25519: peer.ed25519_public.as_slice().try_into().ok()?,
        x25519: peer.x25519_public.as_slice().try_into().ok()?,
        virtual_ip: VirtualIp::from(peer.virtual_ip.parse::<std::net::Ipv4Addr>().ok()?),
    })
}

/// This node's facts: its keys and its configured address.
pub fn own_facts(public: &PublicIdentity, virtual_ip: std::net::Ipv4Addr) -> NodeKeyFacts {
    NodeKeyFacts {
        node_id: public.peer_id(),
        ed25519: public.signing_public,
        x25519: public.static_public,
        virtual_ip: VirtualIp::from(virtual_ip),
    }
}

fn refused(peer: &Peer, code: &str, reason: String) -> RefusedPeer {
    RefusedPeer {
        id: peer.node_id.clone(),
        name: peer.name.clone(),
        virtual_ip: peer.virtual_ip.clone(),
        code: code.to_owned(),
        reason,
    }
}

/// Which fact of `hub` differs from `mine`, if any.
fn differs(mine: &NodeKeyFacts, hub: &NodeKeyFacts) -> Option<&'static str> {
    if mine.ed25519 != hub.ed25519 {
        Some("Ed25519 key")
    } else if mine.x25519 != hub.x25519 {
        Some("X25519 static key")
    } else if mine.virtual_ip != hub.virtual_ip {
        Some("virtual IP")
    } else {
        None
    }
}

/// Applies the lock to `snapshot` for node `me` at `now` (Unix seconds).
pub fn screen(
    lock: &OperatorLock,
    snapshot: &TopologySnapshot,
    me: &NodeKeyFacts,
    now: u64,
) -> Screened {
    let mut out = Screened {
        snapshot: TopologySnapshot {
            version: snapshot.version,
            peers: Vec::with_capacity(snapshot.peers.len()),
            ..TopologySnapshot::default()
        },
        refused: Vec::new(),
        own: None,
        next_expiry: None,
    };
    let me_id = me.node_id.to_string();
    for peer in &snapshot.peers {
        let Some(facts) = facts_of(peer) else {
            out.refused.push(refused(
                peer,
                "bad_entry",
                "the hub's entry does not parse (node ID, keys or address)".into(),
            ));
            continue;
        };
        if peer.node_id == me_id {
            out.own = match differs(me, &facts) {
                Some(field) => Some(format!(
                    "the hub lists this node with another {field}: it may be impersonating this node to other nodes"
                )),
                None => lock
                    .check(&facts, &peer.operator_signature, now)
                    .err()
                    .map(|r| format!("{r}; nodes with the operator lock on refuse this node")),
            };
            out.snapshot.peers.push(peer.clone());
            continue;
        }
        match lock.check(&facts, &peer.operator_signature, now) {
            Ok(signed) => {
                let expiry = signed.record.not_after;
                out.next_expiry = Some(out.next_expiry.map_or(expiry, |e| e.min(expiry)));
                out.snapshot.peers.push(peer.clone());
            }
            Err(refusal) => out
                .refused
                .push(refused(peer, refusal.code(), refusal.to_string())),
        }
    }
    out
}

/// The connector's lock: the pinned keys, this node's facts, and where the report goes.
#[derive(Debug)]
pub struct LockSetup {
    /// The pinned operator keys.
    pub lock: OperatorLock,
    /// This node's facts (its own entry is checked against them).
    pub me: NodeKeyFacts,
    /// Where `status` reads the lock's report.
    pub report: tokio::sync::watch::Sender<Option<LockReport>>,
}

impl LockSetup {
    /// Screens `snapshot` at `now` (Unix seconds), logs each new refusal once (a warning
    /// naming the peer and why) and publishes the report.
    pub fn apply(&self, snapshot: &TopologySnapshot, now: u64) -> Screened {
        let screened = screen(&self.lock, snapshot, &self.me, now);
        self.report.send_modify(|report| {
            let report = report.get_or_insert_with(|| LockReport::new(&self.lock));
            let (fresh, own_changed) = report.update(&screened);
            for r in fresh {
                tracing::warn!(
                    peer = %r.id,
                    name = %r.name,
                    virtual_ip = %r.virtual_ip,
                    code = %r.code,
                    "operator lock: peer refused: {}",
                    r.reason
                );
            }
            if own_changed && let Some(own) = &screened.own {
                tracing::error!("operator lock: this node's entry in the hub's topology: {own}");
            }
        });
        screened
    }
}

impl LockReport {
    /// An empty report for a lock trusting `lock`'s keys.
    pub fn new(lock: &OperatorLock) -> Self {
        Self {
            keys: lock.keys().iter().map(hex::encode).collect(),
            ..Self::default()
        }
    }

    /// Takes in a screening; returns the refusals that are new since the last one (the
    /// ones to log and count) and whether the own-entry problem changed.
    pub fn update(&mut self, screened: &Screened) -> (Vec<RefusedPeer>, bool) {
        let fresh: Vec<RefusedPeer> = screened
            .refused
            .iter()
            .filter(|r| {
                !self
                    .refused
                    .iter()
                    .any(|old| old.id == r.id && old.code == r.code)
            })
            .cloned()
            .collect();
        self.refusals_total += fresh.len() as u64;
        self.refused = screened.refused.clone();
        let own_changed = self.own != screened.own;
        self.own = screened.own.clone();
        (fresh, own_changed)
    }

    /// The lock's series for `/metrics`: refused in the last topology, refusals since start.
    pub fn render_prometheus(&self, node: &str) -> String {
        format!(
            "# HELP bauxite_operator_refused_peers Peers of the last topology refused by the operator lock.\n\
             # TYPE bauxite_operator_refused_peers gauge\n\
             bauxite_operator_refused_peers{{node=\"{node}\"}} {}\n\
             # HELP bauxite_operator_refusals_total Peers refused by the operator lock since the daemon started.\n\
             # TYPE bauxite_operator_refusals_total counter\n\
             bauxite_operator_refusals_total{{node=\"{node}\"}} {}\n",
            self.refused.len(),
            self.refusals_total
        )
    }

    /// Lines for `status` (after the hub line).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let keys: Vec<&str> = self.keys.iter().map(|k| k.get(..16).unwrap_or(k)).collect();
        let _ = writeln!(
            out,
            "lock operator lock on (operator keys {}); {} peer(s) refused now, {} refusal(s) since start",
            keys.join(", "),
            self.refused.len(),
            self.refusals_total
        );
        if let Some(own) = &self.own {
            let _ = writeln!(out, "     this node: {own}");
        }
        for r in &self.refused {
            let _ = writeln!(
                out,
                "  {:<12} {:<15} refused: {}",
                r.name, r.virtual_ip, r.reason
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_conduit::identity::Identity;
    use bauxite_dispatch_api::operator::KeyRecord;
    use ed25519_dalek::SigningKey;

    const NOW: u64 = 1_800_000_000;

    fn node(seed: u8) -> (NodeKeyFacts, Peer) {
        let public = Identity::from_secrets([seed; 32], [seed + 1; 32]).public();
        let facts = own_facts(&public, std::net::Ipv4Addr::new(100, 64, 0, seed));
        let peer = Peer {
            node_id: facts.node_id.to_string(),
            name: format!("n{seed}"),
            virtual_ip: facts.virtual_ip.to_string(),
            x25519_public: facts.x25519.to_vec(),
            ed25519_public: facts.ed25519.to_vec(),
            ..Peer::default()
        };
        (facts, peer)
    }

    fn sign(facts: NodeKeyFacts, op: &SigningKey, not_after: u64) -> Vec<u8> {
        KeyRecord {
            facts,
            not_after,
            serial: 1,
        }
        .sign(op)
        .encode()
    }

    #[test]
    fn only_signed_matching_entries_pass_and_refusals_count_once() {
        let op = SigningKey::from_bytes(&[7; 32]);
        let lock = OperatorLock::new(vec![op.verifying_key().to_bytes()]);
        let (me, mut own) = node(1);
        own.operator_signature = sign(me, &op, NOW + 10);
        let (b, mut signed) = node(3);
        signed.operator_signature = sign(b, &op, NOW + 100);
        let (_, unsigned) = node(5);
        // The hub swaps in an attacker's X25519 key but keeps the operator's signature.
        let (c, mut swapped) = node(7);
        swapped.operator_signature = sign(c, &op, NOW + 100);
        swapped.x25519_public = node(9).0.x25519.to_vec();
        let snapshot = TopologySnapshot {
            version: 4,
            peers: vec![own.clone(), signed.clone(), unsigned, swapped],
            ..TopologySnapshot::default()
        };
        let screened = screen(&lock, &snapshot, &me, NOW);
        assert_eq!(screened.snapshot.peers, vec![own, signed]);
        assert_eq!(screened.own, None);
        assert_eq!(screened.next_expiry, Some(NOW + 100));
        let codes: Vec<&str> = screened.refused.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["unsigned", "keys_mismatch"]);
        assert!(
            screened.refused[0]
                .reason
                .starts_with("key not signed by operator")
        );
        assert!(screened.refused[1].reason.contains("X25519 static key"));

        let mut report = LockReport::new(&lock);
        let (fresh, _) = report.update(&screened);
        assert_eq!(fresh.len(), 2);
        let (fresh, own_changed) = report.update(&screened);
        assert!(fresh.is_empty() && !own_changed, "the same refusals again");
        assert_eq!(report.refusals_total, 2);
        assert!(
            report
                .render()
                .contains("n5           100.64.0.5      refused: key not signed by operator")
        );
        // Later, every record has expired.
        let later = screen(&lock, &snapshot, &me, NOW + 100);
        assert!(later.refused.iter().any(|r| r.code == "expired"));
        assert_eq!(
            later.own.as_deref().map(|o| o.contains("expired")),
            Some(true)
        );
    }

    #[test]
    fn own_entry_with_other_keys_or_unsigned_is_reported() {
        let op = SigningKey::from_bytes(&[7; 32]);
        let lock = OperatorLock::new(vec![op.verifying_key().to_bytes()]);
        let (me, own) = node(1);
        let mut substituted = own.clone();
        substituted.x25519_public = node(9).0.x25519.to_vec();
        let one = |peer: Peer| TopologySnapshot {
            version: 1,
            peers: vec![peer],
            ..TopologySnapshot::default()
        };
        let s = screen(&lock, &one(substituted), &me, NOW);
        assert!(s.own.unwrap().contains("another X25519 static key"));
        let s = screen(&lock, &one(own), &me, NOW);
        assert!(s.own.unwrap().starts_with("key not signed by operator"));
        assert!(
            s.refused.is_empty(),
            "the own entry is never a refused peer"
        );
    }
}
