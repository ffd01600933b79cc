//! What each page shows, read from the [`Hub`] at a given time: plain data for the
//! templates. Nothing secret goes in (no token hashes, no keys): the templates can only
//! render what these structs carry.

use serde::Serialize;

use crate::Result;
use crate::audit::page::{self, Newer};
use crate::clock::UnixTime;
use crate::hub::Hub;
use crate::proto::node::TopologySnapshot;

/// A node counts as online when it reported metrics this recently (edge nodes report every
/// 30 s by default: two missed reports and a margin).
pub const ONLINE_SECS: u64 = 75;
/// Node metrics the nodes page shows, when reported.
const KEY_METRICS: &[&str] = &[
    "tx_packets",
    "rx_packets",
    "tx_bytes",
    "rx_bytes",
    "tx_dropped",
];

/// One row of the nodes page.
#[derive(Serialize)]
pub struct NodeRow {
    /// Node ID (hex).
    pub id: String,
    /// Operator label.
    pub name: String,
    /// Mesh address.
    pub virtual_ip: String,
    /// `hub`, `pending`, `revoked`, `online`, `offline` or `no report`.
    pub status: &'static str,
    /// When it last reported, or `never`.
    pub last_seen: String,
    /// How other nodes reach it, as the hub knows it.
    pub path: String,
    /// How it reaches its peers, as it reported (`direct`, `turn`, `hub` with counts), or
    /// `-` before its first report with path counts.
    pub path_type: String,
    /// Key metrics from its last report.
    pub metrics: Vec<(String, String)>,
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// How peers reach `id` according to the topology: an operator-set endpoint, the
/// candidates it reported (direct attempts), or only the hub relay.
fn path(topology: &TopologySnapshot, id: &str) -> String {
    let Some(peer) = topology.peers.iter().find(|p| p.node_id == id) else {
        return "-".into();
    };
    match (peer.endpoint.is_empty(), peer.candidates.len()) {
        (false, n) => format!("direct: endpoint {} (+{n} candidates)", peer.endpoint),
        (true, 0) => "relay through the hub (no candidates)".into(),
        (true, n) => format!("direct: {n} candidate(s), relay fallback"),
    }
}

/// The path types a node reported (`paths_direct`, `paths_turn`, `paths_hub`,
/// `paths_none` from `bauxite run`): the single type when all its peers share it,
/// otherwise each type with its count.
fn path_type(report: &std::collections::BTreeMap<String, f64>) -> String {
    let counts: Vec<(&str, f64)> = [
        ("direct", "paths_direct"),
        ("turn", "paths_turn"),
        ("hub", "paths_hub"),
        ("none", "paths_none"),
    ]
    .into_iter()
    .filter_map(|(label, key)| report.get(key).map(|v| (label, *v)))
    .collect();
    if counts.is_empty() {
        return "-".into();
    }
    let used: Vec<_> = counts.iter().filter(|(_, v)| *v > 0.0).collect();
    match used.as_slice() {
        [] => "no peers".into(),
        [(label, _)] => (*label).to_owned(),
        many => many
            .iter()
            .map(|(label, v)| format!("{label} {}", number(*v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The nodes page rows (registered, then pending), and how many are online.
pub fn nodes(hub: &Hub, now: UnixTime) -> (Vec<NodeRow>, usize) {
    let topology = hub.subscribe_topology().borrow().snapshot();
    let metrics = hub.metrics();
    let mut rows = Vec::new();
    let records = hub
        .nodes()
        .into_iter()
        .map(|n| (n, false))
        .chain(hub.pending().into_iter().map(|p| (p.node, true)));
    for (n, pending) in records {
        let seen = metrics.last_seen(n.id);
        let status = if n.revoked_at.is_some() {
            "revoked"
        } else if pending {
            "pending"
        } else if hub.is_hub_node(n.id) {
            "hub"
        } else {
            match seen {
                Some(at) if now < at.plus(ONLINE_SECS) => "online",
                Some(_) => "offline",
                None => "no report",
            }
        };
        let report = metrics.report(n.id).unwrap_or_default();
        let id = n.id.to_string();
        rows.push(NodeRow {
            path: path(&topology, &id),
            path_type: path_type(&report),
            id,
            name: n.name,
            virtual_ip: n.virtual_ip.to_string(),
            status,
            last_seen: seen.map_or_else(|| "never".into(), |t| t.to_string()),
            metrics: KEY_METRICS
                .iter()
                .filter_map(|k| report.get(*k).map(|v| ((*k).to_owned(), number(*v))))
                .collect(),
        });
    }
    let online = rows.iter().filter(|r| r.status == "online").count();
    (rows, online)
}

/// One node of the topology page.
#[derive(Serialize)]
pub struct PeerRow {
    /// Label.
    pub name: String,
    /// Mesh address.
    pub virtual_ip: String,
    /// Whether it is the hub's own mesh node.
    pub hub: bool,
    /// The other nodes it is told of (by label, or ID when unlabelled).
    pub sees: Vec<String>,
    /// Where others dial it: endpoint first, then candidates.
    pub addresses: Vec<String>,
}

/// The topology page: version and one row per active node.
pub fn topology(hub: &Hub) -> (u64, Vec<PeerRow>) {
    let snapshot = hub.subscribe_topology().borrow().snapshot();
    let label = |p: &crate::proto::node::Peer| {
        if p.name.is_empty() {
            p.node_id.clone()
        } else {
            p.name.clone()
        }
    };
    let rows = snapshot
        .peers
        .iter()
        .map(|p| PeerRow {
            name: label(p),
            virtual_ip: p.virtual_ip.clone(),
            hub: p.hub,
            sees: snapshot
                .peers
                .iter()
                .filter(|o| o.node_id != p.node_id)
                .map(label)
                .collect(),
            addresses: std::iter::once(p.endpoint.clone())
                .filter(|e| !e.is_empty())
                .chain(p.candidates.iter().cloned())
                .collect(),
        })
        .collect();
    (snapshot.version, rows)
}

/// One row of the join tokens page (never the secret or its hash).
#[derive(Serialize)]
pub struct TokenRow {
    /// Token ID.
    pub id: String,
    /// Label.
    pub name: String,
    /// Joins left.
    pub uses_left: u32,
    /// Joins it was created for.
    pub uses_total: u32,
    /// Creation time.
    pub created: String,
    /// Expiry time.
    pub expires: String,
    /// `active`, `used up` or `expired`.
    pub state: &'static str,
}

/// The tokens page rows, newest first.
pub fn tokens(hub: &Hub, now: UnixTime) -> Result<Vec<TokenRow>> {
    let mut records = hub.tokens()?;
    records.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.0.cmp(&b.id.0)));
    Ok(records
        .into_iter()
        .map(|t| TokenRow {
            id: t.id.to_string(),
            name: t.name,
            uses_left: t.uses_left,
            uses_total: t.uses_total,
            created: t.created_at.to_string(),
            expires: t.expires_at.to_string(),
            state: if now >= t.expires_at {
                "expired"
            } else if t.uses_left == 0 {
                "used up"
            } else {
                "active"
            },
        })
        .collect())
}

/// One audit entry as shown.
#[derive(Serialize)]
pub struct AuditRow {
    /// Position in the chain.
    pub index: u64,
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Details.
    pub detail: String,
}

/// The audit page: verification, total count, one page of entries newest first, and
/// the cursors of the neighbouring pages.
pub struct AuditView {
    /// `Ok(head hash hex)` or the problem found (the whole chain, not just this page).
    pub verified: std::result::Result<String, String>,
    /// Entries in the chain.
    pub count: u64,
    /// This page's entries, newest first.
    pub rows: Vec<AuditRow>,
    /// `before` of the page of older entries, if any.
    pub older: Option<u64>,
    /// The page of newer entries, if any.
    pub newer: Option<Newer>,
}

/// Verifies the chain and reads the page of the `limit` entries before `before` (the
/// newest when `None`; `limit` bounded by [`page::limit`]). A cursor outside the log is
/// [`crate::Error::AuditCursor`].
pub fn audit(hub: &Hub, before: Option<u64>, limit: usize) -> Result<AuditView> {
    let limit = page::limit(limit);
    let read = hub.audit_page(|keys| page::backward(keys, before, limit))?;
    let rows = read
        .entries
        .into_iter()
        .rev()
        .map(|e| AuditRow {
            index: e.body.index,
            at: e.body.at.to_string(),
            actor: e.body.actor,
            action: e.body.action,
            detail: e.body.detail,
        })
        .collect();
    Ok(AuditView {
        verified: read
            .verified
            .map(|head| hex::encode(head.hash))
            .map_err(|p| p.to_string()),
        count: read.total,
        rows,
        older: read.page.older,
        newer: read.page.newer,
    })
}

#[cfg(test)]
mod tests;
