//! The update agent's Prometheus gauges (`bauxite_update_*`), appended to the node's
//! metrics endpoint: phase and state, progress, bytes, and the probe's round trips.
//!
//! Invariant: rendered from a copy of [`UpdateStatus`], so a scrape never waits for the
//! agent; label values are escaped.

use std::fmt::Write as _;

use bauxite_forge::state::UpdateState;

use super::status::{ProgressView, UpdateStatus};

impl UpdateStatus {
    /// Prometheus text: update state, progress, bytes and the probe's round trips.
    pub fn render_prometheus(&self, node: &str) -> String {
        let mut out = String::new();
        let label = format!("node=\"{}\"", escape(node));
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{{label}}} {value}");
        };
        let code = self
            .state
            .as_deref()
            .and_then(UpdateState::from_name)
            .and_then(|s| UpdateState::ALL.iter().position(|x| *x == s))
            .map_or(-1.0, |i| i as f64);
        let _ = writeln!(
            out,
            "# HELP bauxite_update_info The update agent's phase, last state and versions.\n\
             # TYPE bauxite_update_info gauge"
        );
        let _ = writeln!(
            out,
            "bauxite_update_info{{{label},phase=\"{}\",state=\"{}\",active=\"{}\",target=\"{}\"}} 1",
            serde_json::to_value(self.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            self.state.as_deref().unwrap_or(""),
            escape(self.active_version.as_deref().unwrap_or("")),
            escape(self.target_version.as_deref().unwrap_or("")),
        );
        gauge(
            &mut out,
            "bauxite_update_state_code",
            "Position of the last update state in forge's UpdateState::ALL (-1: none).",
            code,
        );
        let p = self.progress.unwrap_or(ProgressView {
            percent: 0.0,
            chunks_done: 0,
            chunks_durable: 0,
            chunk_count: 0,
            bytes_done: 0,
            image_len: 0,
            bytes_transferred: 0,
            bytes_retransferred: 0,
            verified_bytes_refetched: 0,
            rate_bytes_per_sec: 0.0,
            eta_secs: None,
        });
        for (name, help, value) in [
            (
                "bauxite_update_progress_ratio",
                "Share of the image verified (0 to 1).",
                p.percent / 100.0,
            ),
            (
                "bauxite_update_chunks_done",
                "Chunks verified.",
                f64::from(p.chunks_done),
            ),
            (
                "bauxite_update_chunks_total",
                "Chunks in the image.",
                f64::from(p.chunk_count),
            ),
            (
                "bauxite_update_bytes_transferred",
                "Fragment bytes received by this transfer.",
                p.bytes_transferred as f64,
            ),
            (
                "bauxite_update_bytes_retransferred",
                "Duplicate and corrupted bytes received by this transfer.",
                p.bytes_retransferred as f64,
            ),
            (
                "bauxite_update_verified_bytes_refetched",
                "Bytes of checkpointed chunks fetched again (zero by design).",
                p.verified_bytes_refetched as f64,
            ),
            (
                "bauxite_update_rate_bytes_per_second",
                "Recent transfer rate.",
                p.rate_bytes_per_sec,
            ),
        ] {
            gauge(&mut out, name, help, value);
        }
        if let Some(s) = self.probe {
            let _ = writeln!(
                out,
                "# HELP bauxite_update_probe_rtt_us Control-loop probe round trip during the update (Critical lane).\n\
                 # TYPE bauxite_update_probe_rtt_us gauge"
            );
            for (q, v) in [("0.5", s.p50_us), ("0.99", s.p99_us), ("1", s.max_us)] {
                let _ = writeln!(
                    out,
                    "bauxite_update_probe_rtt_us{{{label},quantile=\"{q}\"}} {v}"
                );
            }
            gauge(
                &mut out,
                "bauxite_update_probe_loss_percent",
                "Control-loop probes without a reply.",
                s.loss_percent,
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
