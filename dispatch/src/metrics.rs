//! The hub's own counters and the metrics nodes report, as Prometheus text.
//!
//! Invariant: the rendering is deterministic (`BTreeMap` order) and every reported name is
//! sanitised to `[a-zA-Z0-9_]`, so a node cannot inject lines into the exposition.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bauxite_conduit::PeerId;
use bauxite_forge::fetch::ServerCounters;

use crate::clock::UnixTime;
use crate::hub::NodeUpdates;
use crate::store::UpdateReportRecord;

/// Most metrics kept per node report.
pub const MAX_METRICS_PER_REPORT: usize = 256;

/// Atomic counters, plus the last report of each node.
#[derive(Default)]
pub struct HubMetrics {
    /// Successful provisionings.
    pub provisions: AtomicU64,
    /// Refused provisioning requests.
    pub provisions_refused: AtomicU64,
    /// Calls refused for missing, unknown or revoked certificates.
    pub calls_refused: AtomicU64,
    /// Open topology streams.
    pub topology_streams: AtomicU64,
    /// Full topology snapshots sent.
    pub topology_snapshots_sent: AtomicU64,
    /// Topology deltas sent (to clients that asked for them).
    pub topology_deltas_sent: AtomicU64,
    /// Topology streams that resumed from the version the client held (one delta, no
    /// full snapshot).
    pub topology_resumed: AtomicU64,
    /// Signaling messages relayed or queued.
    pub signals_relayed: AtomicU64,
    /// Mesh datagrams relayed on the data channel.
    pub relay_frames: AtomicU64,
    /// Bytes of mesh datagrams relayed on the data channel.
    pub relay_bytes: AtomicU64,
    /// Mesh datagrams the data channel dropped (offline or slow destination, over budget,
    /// oversized, self-addressed, revoked sender).
    pub relay_dropped: AtomicU64,
    /// Metric reports received.
    pub metric_reports: AtomicU64,
    /// Audit log length.
    pub audit_entries: AtomicU64,
    reports: Mutex<BTreeMap<PeerId, BTreeMap<String, f64>>>,
    /// When each node last reported (the admin UI's "last seen").
    seen: Mutex<BTreeMap<PeerId, UnixTime>>,
}

fn sanitize(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl HubMetrics {
    /// Records a node's report (replacing its previous one).
    pub fn record_report(&self, node: PeerId, metrics: impl IntoIterator<Item = (String, f64)>) {
        let report = metrics
            .into_iter()
            .take(MAX_METRICS_PER_REPORT)
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (sanitize(&k), v))
            .collect();
        self.metric_reports.fetch_add(1, Ordering::Relaxed);
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, report);
    }

    /// Records that `node` reported at `now`.
    pub fn record_seen(&self, node: PeerId, now: UnixTime) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, now);
    }

    /// When `node` last reported, if it did since the hub started.
    pub fn last_seen(&self, node: PeerId) -> Option<UnixTime> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .copied()
    }

    /// The last report of `node`, if any.
    pub fn report(&self, node: PeerId) -> Option<BTreeMap<String, f64>> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }

    /// Forgets a node's report (revoked nodes).
    pub fn forget(&self, node: PeerId) {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
    }

    /// Prometheus text exposition; `nodes_active` is supplied by the caller.
    pub fn render(&self, nodes_active: usize) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 13] = [
            ("provisions_total", "Nodes provisioned", &self.provisions),
            (
                "provisions_refused_total",
                "Provisioning requests refused",
                &self.provisions_refused,
            ),
            (
                "calls_refused_total",
                "Calls refused for a missing, unknown or revoked certificate",
                &self.calls_refused,
            ),
            (
                "topology_streams",
                "Open topology streams",
                &self.topology_streams,
            ),
            (
                "topology_snapshots_sent_total",
                "Full topology snapshots sent",
                &self.topology_snapshots_sent,
            ),
            (
                "topology_deltas_sent_total",
                "Topology deltas sent",
                &self.topology_deltas_sent,
            ),
            (
                "topology_resumed_total",
                "Topology streams resumed from the version the client held, without a full snapshot",
                &self.topology_resumed,
            ),
            (
                "signals_relayed_total",
                "Signaling messages relayed or queued",
                &self.signals_relayed,
            ),
            (
                "relay_frames_total",
                "Mesh datagrams relayed between nodes",
                &self.relay_frames,
            ),
            (
                "relay_bytes_total",
                "Bytes of mesh datagrams relayed between nodes",
                &self.relay_bytes,
            ),
            (
                "relay_dropped_total",
                "Mesh datagrams the hub relay dropped",
                &self.relay_dropped,
            ),
            (
                "metric_reports_total",
                "Metric reports received from nodes",
                &self.metric_reports,
            ),
            (
                "audit_entries",
                "Entries in the audit log",
                &self.audit_entries,
            ),
        ];
        for (name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP bauxite_dispatch_{name} {help}");
            let _ = writeln!(out, "# TYPE bauxite_dispatch_{name} {kind}");
            let _ = writeln!(
                out,
                "bauxite_dispatch_{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bauxite_dispatch_nodes_active Provisioned, unrevoked nodes"
        );
        let _ = writeln!(out, "# TYPE bauxite_dispatch_nodes_active gauge");
        let _ = writeln!(out, "bauxite_dispatch_nodes_active {nodes_active}");
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if !reports.is_empty() {
            let _ = writeln!(
                out,
                "# HELP bauxite_node_metric Last value each node reported"
            );
            let _ = writeln!(out, "# TYPE bauxite_node_metric gauge");
        }
        for (node, report) in reports.iter() {
            for (name, value) in report {
                let _ = writeln!(
                    out,
                    "bauxite_node_metric{{node=\"{node}\",metric=\"{name}\"}} {value}"
                );
            }
        }
        out
    }
}

/// Escapes a Prometheus label value (`\`, `"`, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-node update gauges from `ListUpdates`' view: the state each node last reported
/// (value 1, the state as a label) and its progress counters.
pub fn render_updates(view: &[NodeUpdates]) -> String {
    type Gauge = (&'static str, &'static str, fn(&UpdateReportRecord) -> u64);
    let mut out = String::new();
    let gauges: [Gauge; 4] = [
        ("chunks_done", "Chunks the node verified and wrote", |r| {
            r.chunks_done
        }),
        ("chunks_total", "Chunks in the image being installed", |r| {
            r.chunks_total
        }),
        (
            "bytes_transferred",
            "Bytes the node received for its update",
            |r| r.bytes_transferred,
        ),
        (
            "bytes_retransferred",
            "Bytes received more than once or discarded",
            |r| r.bytes_retransferred,
        ),
    ];
    let reports: Vec<_> = view
        .iter()
        .filter_map(|v| Some((&v.node, &v.assignment, v.report.as_ref()?)))
        .collect();
    if reports.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# HELP bauxite_dispatch_node_update_state The update state each node last reported (1)"
    );
    let _ = writeln!(out, "# TYPE bauxite_dispatch_node_update_state gauge");
    for (node, assignment, report) in &reports {
        let _ = writeln!(
            out,
            "bauxite_dispatch_node_update_state{{node=\"{}\",name=\"{}\",state=\"{}\",version=\"{}\",sequence=\"{}\"}} 1",
            node.id,
            label(&node.name),
            label(&report.state),
            label(&report.version),
            assignment.as_ref().map_or(0, |a| a.sequence),
        );
    }
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP bauxite_dispatch_node_update_{name} {help}");
        let _ = writeln!(out, "# TYPE bauxite_dispatch_node_update_{name} gauge");
        for (node, _, report) in &reports {
            let _ = writeln!(
                out,
                "bauxite_dispatch_node_update_{name}{{node=\"{}\"}} {}",
                node.id,
                value(report)
            );
        }
    }
    out
}

/// The hub's forge chunk server counters.
pub fn render_forge(c: &ServerCounters) -> String {
    let mut out = String::new();
    let counters = [
        (
            "requests_total",
            "Chunk requests received on the mesh",
            c.requests,
        ),
        (
            "malformed_total",
            "Datagrams on the forge port that were not requests",
            c.malformed,
        ),
        (
            "refusals_total",
            "Refusals sent (unknown image, chunk out of range...)",
            c.refusals,
        ),
        (
            "jobs_dropped_total",
            "Requested chunks dropped because the job queue was full",
            c.jobs_dropped,
        ),
        (
            "fragments_sent_total",
            "Chunk fragments sent (Bulk lane)",
            c.fragments_sent,
        ),
        (
            "payload_bytes_sent_total",
            "Image bytes sent in those fragments",
            c.payload_bytes_sent,
        ),
        (
            "chunk_reads_total",
            "Chunks read from package images",
            c.chunk_reads,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP bauxite_dispatch_forge_{name} {help}");
        let _ = writeln!(out, "# TYPE bauxite_dispatch_forge_{name} counter");
        let _ = writeln!(out, "bauxite_dispatch_forge_{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_sanitises() {
        let m = HubMetrics::default();
        m.provisions.fetch_add(2, Ordering::Relaxed);
        m.record_report(
            PeerId([1; 16]),
            [("tx\"packets\n}".to_owned(), 5.0), ("nan".into(), f64::NAN)],
        );
        let text = m.render(3);
        assert!(text.contains("bauxite_dispatch_provisions_total 2\n"));
        assert!(text.contains("bauxite_dispatch_nodes_active 3\n"));
        assert!(text.contains("metric=\"tx_packets__\"} 5\n"), "{text}");
        assert!(!text.contains("nan"));
    }
}
