//! The `bulk` line of `bauxite status`: which controller paces the bulk lane.
//!
//! Invariant: the report says what the node's data plane published
//! ([`BulkPacing`]), never what the configuration file says now (a daemon runs with the
//! configuration it started with). Why it is shown: with `auto`, the default, a latency
//! figure means little without knowing which controller paced the bulk under it
//! (docs/congestion.md, section 8).

use bauxite_conduit::metrics::BulkPacing;
use bauxite_conduit::node::BulkController;
use bauxite_conduit::path::auto::Mode;
use serde::{Deserialize, Serialize};

/// Which controller paces bulk (`bulk_pacing` in `status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPacingReport {
    /// The configured `node.bulk_controller`: `auto`, `rate` or `adaptive`; `off` when
    /// bulk is not paced (`bulk_target_delay_us = 0`).
    pub controller: String,
    /// The controller deciding when bulk leaves now: `adaptive` (the adaptive window) or
    /// `rate` (the rate model); with `auto` it changes as the paths do. Absent when `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// With `auto`: how many times bulk pacing changed hands since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handovers: Option<u64>,
}

impl BulkPacingReport {
    /// The report of the node's published pacing.
    pub fn new(pacing: &BulkPacing) -> Self {
        Self {
            controller: pacing.controller_name().to_string(),
            mode: pacing.mode.map(|m| m.name().to_string()),
            handovers: (pacing.controller == Some(BulkController::Auto))
                .then_some(pacing.handovers),
        }
    }

    /// `auto: the rate model now (1 hand-over)`, `adaptive: the adaptive window`, `off
    /// (bulk is not paced)`.
    pub fn render(&self) -> String {
        let what = |mode: &str| match mode {
            m if m == Mode::Rate.name() => "the rate model",
            m if m == Mode::Adaptive.name() => "the adaptive window",
            _ => "an unknown controller",
        };
        match (&self.mode, self.handovers) {
            (Some(mode), Some(n)) => format!(
                "{}: {} now ({n} hand-over{})",
                self.controller,
                what(mode),
                if n == 1 { "" } else { "s" }
            ),
            (Some(mode), None) => format!("{}: {}", self.controller, what(mode)),
            (None, _) => format!("{} (bulk is not paced)", self.controller),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(controller: Option<BulkController>, mode: Option<Mode>, n: u64) -> BulkPacing {
        BulkPacing {
            controller,
            mode,
            handovers: n,
        }
    }

    #[test]
    fn auto_shows_its_mode_now_and_its_hand_overs() {
        let start =
            BulkPacingReport::new(&pacing(Some(BulkController::Auto), Some(Mode::Adaptive), 0));
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            serde_json::json!({"controller": "auto", "mode": "adaptive", "handovers": 0})
        );
        assert_eq!(
            start.render(),
            "auto: the adaptive window now (0 hand-overs)"
        );
        let moved = BulkPacingReport::new(&pacing(Some(BulkController::Auto), Some(Mode::Rate), 1));
        assert_eq!(moved.render(), "auto: the rate model now (1 hand-over)");
        assert_eq!(moved.handovers, Some(1));
    }

    #[test]
    fn a_fixed_controller_and_unpaced_bulk_have_no_hand_overs() {
        let rate = BulkPacingReport::new(&pacing(Some(BulkController::Rate), Some(Mode::Rate), 0));
        assert_eq!(
            serde_json::to_value(&rate).unwrap(),
            serde_json::json!({"controller": "rate", "mode": "rate"})
        );
        assert_eq!(rate.render(), "rate: the rate model");
        let adaptive = BulkPacingReport::new(&pacing(
            Some(BulkController::Adaptive),
            Some(Mode::Adaptive),
            0,
        ));
        assert_eq!(adaptive.render(), "adaptive: the adaptive window");
        let off = BulkPacingReport::new(&pacing(None, None, 0));
        assert_eq!(
            serde_json::to_value(&off).unwrap(),
            serde_json::json!({"controller": "off"})
        );
        assert_eq!(off.render(), "off (bulk is not paced)");
    }
}
