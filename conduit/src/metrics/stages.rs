//! Each peer's per-stage connect timings (ICE), for the metrics endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::PeerId;
use crate::node::ConnectStages;

/// Each peer's connect stages. Written when a stage ends (a few times per session, never
/// per packet), so a short lock costs the data plane nothing.
#[derive(Debug, Default)]
pub struct ConnectStageGauges(Mutex<BTreeMap<PeerId, ConnectStages>>);

impl ConnectStageGauges {
    /// Records `peer`'s stages, or forgets them (`None`).
    pub fn set(&self, peer: PeerId, stages: Option<ConnectStages>) {
        // A writer that panicked left a plain map behind: still usable.
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match stages {
            Some(stages) => map.insert(peer, stages),
            None => map.remove(&peer),
        };
    }

    /// Every peer's stages, in peer order.
    pub fn snapshot(&self) -> Vec<(PeerId, ConnectStages)> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(&p, &s)| (p, s)).collect()
    }

    /// `bauxite_connect_stage_seconds{node,peer,stage}` gauges (nothing without ICE).
    pub fn render_prometheus(&self, node: &str, out: &mut String) {
        let stages = self.snapshot();
        if stages.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP bauxite_connect_stage_seconds Per-stage connect timings of each peer's ICE session (signaling, checks, handshake, total)."
        );
        let _ = writeln!(out, "# TYPE bauxite_connect_stage_seconds gauge");
        for (peer, s) in stages {
            for (stage, value) in [
                ("signaling", s.signaling),
                ("checks", s.checks),
                ("handshake", s.handshake),
                ("total", s.total),
            ] {
                if let Some(value) = value {
                    let _ = writeln!(
                        out,
                        "bauxite_connect_stage_seconds{{node=\"{node}\",peer=\"{peer}\",stage=\"{stage}\"}} {:.6}",
                        value.as_secs_f64()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stages_render_per_peer_and_go_with_the_peer() {
        let gauges = ConnectStageGauges::default();
        let peer = PeerId([3; 16]);
        let mut out = String::new();
        gauges.render_prometheus("n1", &mut out);
        assert!(out.is_empty());
        gauges.set(
            peer,
            Some(ConnectStages {
                signaling: Some(Duration::from_millis(50)),
                checks: Some(Duration::from_millis(12)),
                handshake: None,
                total: None,
            }),
        );
        gauges.render_prometheus("n1", &mut out);
        assert!(out.contains(&format!(
            "bauxite_connect_stage_seconds{{node=\"n1\",peer=\"{peer}\",stage=\"signaling\"}} 0.050000\n"
        )));
        assert!(out.contains("stage=\"checks\"} 0.012000\n"));
        assert!(!out.contains("stage=\"handshake\""));
        gauges.set(peer, None);
        assert!(gauges.snapshot().is_empty());
    }
}
