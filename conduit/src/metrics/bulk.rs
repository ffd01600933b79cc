//! Which controller paces the bulk lane, for `bauxite status` and the metrics endpoint.
//!
//! Invariant: a reading never waits for the data plane. The gauge is written when the
//! node builds its bulk controllers (never per packet); with `auto` it holds the node's
//! [`AutoGroup`], whose mode and hand-over count are atomics the group publishes.
//! Why: with `auto` the default, a latency figure means little without knowing which
//! controller paced the bulk under it (docs/congestion.md, section 8), and a log line is
//! not where an operator looks.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use crate::node::BulkController;
use crate::path::AutoGroup;
use crate::path::auto::Mode;

/// What the node paces bulk with, as the node built it.
#[derive(Clone, Debug, Default)]
pub(crate) enum PacingSource {
    /// A strategy handed to the node ([`BauxiteNode::set_congestion`](crate::BauxiteNode::set_congestion)):
    /// nothing to report.
    #[default]
    Unknown,
    /// Bulk is not paced (no `bulk_target`).
    Off,
    /// One controller for good (`rate` or `adaptive`).
    Fixed(BulkController),
    /// `auto`: the node's group decides.
    Auto(AutoGroup),
}

/// The node's bulk pacing; shared by reference (in [`Metrics`](super::Metrics)) with
/// status and the metrics endpoint.
#[derive(Debug, Default)]
pub struct BulkPacingGauge(Mutex<PacingSource>);

/// One reading of [`BulkPacingGauge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkPacing {
    /// The configured controller; `None`: bulk is not paced (`bulk_target_delay_us = 0`).
    pub controller: Option<BulkController>,
    /// Which controller decides when bulk leaves now: with `auto` the node's current mode,
    /// otherwise the configured controller's; `None` when bulk is not paced.
    pub mode: Option<Mode>,
    /// How many times `auto` handed bulk pacing from one controller to the other since
    /// the node started (0 for the others).
    pub handovers: u64,
}

impl BulkPacing {
    /// The configured controller's name: `auto`, `rate`, `adaptive`, or `off`.
    pub fn controller_name(&self) -> &'static str {
        self.controller.map_or("off", BulkController::name)
    }
}

impl BulkPacingGauge {
    /// Records what the node paces bulk with (at construction, when it replaces it).
    pub(crate) fn set(&self, source: PacingSource) {
        *self.lock() = source;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacingSource> {
        // A writer that panicked left a plain value behind: still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pacing now; `None` for a node handed a strategy of its own.
    pub fn snapshot(&self) -> Option<BulkPacing> {
        let source = self.lock().clone();
        match source {
            PacingSource::Unknown => None,
            PacingSource::Off => Some(BulkPacing {
                controller: None,
                mode: None,
                handovers: 0,
            }),
            PacingSource::Fixed(controller) => Some(BulkPacing {
                controller: Some(controller),
                mode: match controller {
                    BulkController::Rate => Some(Mode::Rate),
                    BulkController::Adaptive | BulkController::Auto => Some(Mode::Adaptive),
                },
                handovers: 0,
            }),
            PacingSource::Auto(group) => Some(BulkPacing {
                controller: Some(BulkController::Auto),
                mode: Some(group.mode()),
                handovers: group.switches(),
            }),
        }
    }

    /// `bauxite_bulk_pacing{node,controller,mode}` (1 for the mode in force, 0 for the
    /// other) and `bauxite_bulk_pacing_handovers_total{node,controller}`; nothing for a
    /// node handed a strategy of its own.
    pub fn render_prometheus(&self, node: &str, out: &mut String) {
        let Some(pacing) = self.snapshot() else {
            return;
        };
        let controller = pacing.controller_name();
        let _ = writeln!(
            out,
            "# HELP bauxite_bulk_pacing Which controller paces bulk now (1; the other 0), labelled with the configured node.bulk_controller."
        );
        let _ = writeln!(out, "# TYPE bauxite_bulk_pacing gauge");
        for mode in [Mode::Adaptive, Mode::Rate] {
            let _ = writeln!(
                out,
                "bauxite_bulk_pacing{{node=\"{node}\",controller=\"{controller}\",mode=\"{}\"}} {}",
                mode.name(),
                u8::from(pacing.mode == Some(mode))
            );
        }
        let _ = writeln!(
            out,
            "# HELP bauxite_bulk_pacing_handovers_total Times bulk pacing changed hands between the adaptive window and the rate model (node.bulk_controller = \"auto\")."
        );
        let _ = writeln!(out, "# TYPE bauxite_bulk_pacing_handovers_total counter");
        let _ = writeln!(
            out,
            "bauxite_bulk_pacing_handovers_total{{node=\"{node}\",controller=\"{controller}\"}} {}",
            pacing.handovers
        );
    }
}

#[cfg(test)]
mod tests;
