//! The tables `package list`, `update status` and `nodes list` print.

use std::fmt::Write as _;

use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch_api::proto::admin as proto;

/// A size in MiB or GiB.
pub(crate) fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", done as f64 * 100.0 / total as f64)
    }
}

/// `package list`.
pub(crate) fn packages(packages: &[proto::PackageInfo]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20}  {:<10}  {:<8}  {:>12}  {:>8}  {:<8}  {:<20}  INDEX",
        "NAME", "VERSION", "KIND", "SIZE", "CHUNKS", "STATE", "CREATED"
    );
    for p in packages {
        let state = if p.revoked { "revoked" } else { "active" };
        let _ = writeln!(
            out,
            "{:<20}  {:<10}  {:<8}  {:>12}  {:>8}  {state:<8}  {:<20}  {}",
            p.name,
            p.version,
            p.kind,
            size(p.length),
            p.chunk_count,
            UnixTime(p.created_at_unix),
            p.index_digest.get(..16).unwrap_or(&p.index_digest)
        );
    }
    out
}

/// `update status`.
pub(crate) fn updates(nodes: &[proto::NodeUpdate]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<16}  {:>4}  {:<10}  {:<26}  {:>7}  {:<10}  REPORTED",
        "ID", "NAME", "SEQ", "VERSION", "STATE", "DONE", "ACTIVE"
    );
    for n in nodes {
        let reported = if n.reported_at_unix == 0 {
            "-".to_owned()
        } else {
            UnixTime(n.reported_at_unix).to_string()
        };
        let _ = writeln!(
            out,
            "{:<32}  {:<16}  {:>4}  {:<10}  {:<26}  {:>7}  {:<10}  {reported}",
            n.node_id,
            n.name,
            n.sequence,
            n.version,
            if n.state.is_empty() { "-" } else { &n.state },
            percent(n.chunks_done, n.chunks_total),
            n.active_version,
        );
    }
    out
}

/// `nodes list`: every node, the hub's own marked, with its update state.
pub(crate) fn nodes(nodes: &[proto::NodeInfo], updates: &[proto::NodeUpdate]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<15}  {:<8}  {:<20}  {:<30}  {:<20}  NAME",
        "ID", "VIRTUAL IP", "STATE", "JOINED", "UPDATE", "OPERATOR-SIGNED"
    );
    for n in nodes {
        let state = match (n.hub, n.revoked, n.pending) {
            (true, _, _) => "hub",
            (false, true, _) => "revoked",
            (false, false, true) => "pending",
            (false, false, false) => "active",
        };
        let update = updates
            .iter()
            .find(|u| u.node_id == n.node_id && u.sequence > 0)
            .map_or("-".to_owned(), |u| {
                let state = if u.state.is_empty() {
                    "assigned"
                } else {
                    &u.state
                };
                format!("{} {state}", u.version)
            });
        // Until when the operator lock's signature vouches for the node (`-`: unsigned).
        let signed = match n.operator_signature.as_slice() {
            [] => "-".to_owned(),
            bytes => bauxite_dispatch_api::operator::SignedKeyRecord::parse(bytes)
                .map_or("malformed".to_owned(), |r| {
                    UnixTime(r.record.not_after).to_string()
                }),
        };
        let _ = writeln!(
            out,
            "{:<32}  {:<15}  {state:<8}  {:<20}  {update:<30}  {signed:<20}  {}",
            n.node_id,
            n.virtual_ip,
            UnixTime(n.joined_at_unix),
            n.name
        );
    }
    out
}
