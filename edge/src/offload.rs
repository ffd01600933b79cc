//! The daemon's lane offload: the kernel classifier (`bauxite-ebpf`) on the TUN device's
//! egress when it loads, else the userspace classifier alone; and how `status` and the
//! metrics show it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use bauxite_conduit::Lane;
use bauxite_conduit::offload::{DataPlaneOffload, UserspaceOnly};
use bauxite_conduit::scheduler::LaneRules;
use bauxite_conduit::tun::TunKind;
use bauxite_ebpf::{AttachOptions, LinkKind};
use serde::{Deserialize, Serialize};

/// Why the kernel classifier stays off while `[[lanes]]` rules are configured.
const LANE_RULES_NOT_MIRRORED: &str = "[[lanes]] rules are configured and the kernel \
    classifier does not mirror them yet (its map holds single ports): userspace \
    classifier only, so kernel priorities and counters never disagree with the lanes";

/// Why the kernel classifier is off with `node.kernel_offload = false`.
const OFFLOAD_OFF: &str = "node.kernel_offload = false: userspace classifier only, one TUN \
    queue read as one, one mesh socket";

/// Starts the offload for the device the shell opened. Only a kernel TUN device has a
/// kernel queue to prioritise; the in-memory pipe and service-only nodes get the fallback,
/// and so does a node with `[[lanes]]` rules (`lane_rules`), which the kernel program
/// does not express yet. With the classifier attached and the device's two queues open
/// (`steering`: its Critical queue), the classifier's steering program gives Critical
/// packets their own TUN queue; when that fails, one log line says so. Returns the
/// offload and whether the steering program is attached (if not, the caller goes back to
/// one TUN queue).
pub fn start(
    tun: &TunKind,
    lane_rules: &LaneRules,
    steering: Option<BorrowedFd<'_>>,
) -> (Arc<dyn DataPlaneOffload>, bool) {
    match tun {
        TunKind::Kernel(name) if !lane_rules.rules().is_empty() => {
            tracing::warn!(interface = %name, "kernel lane classifier off: {LANE_RULES_NOT_MIRRORED}");
            (Arc::new(UserspaceOnly::new(LANE_RULES_NOT_MIRRORED)), false)
        }
        TunKind::Kernel(name) => {
            let options = AttachOptions {
                link: Some(LinkKind::Tun),
                ..AttachOptions::default()
            };
            let started = bauxite_ebpf::offload::attach_or_fallback(name, &options, steering);
            (Arc::from(started.offload), started.steered)
        }
        TunKind::Memory(_) | TunKind::None => (
            Arc::new(UserspaceOnly::new("no kernel TUN device to attach to")),
            false,
        ),
    }
}

/// The offload when `node.kernel_offload = false`: userspace only, with the reason.
pub fn off() -> Arc<dyn DataPlaneOffload> {
    tracing::info!("{OFFLOAD_OFF}");
    Arc::new(UserspaceOnly::new(OFFLOAD_OFF))
}

/// The offload's part of `bauxite status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadReport {
    /// `ebpf` or `userspace`.
    pub classifier: String,
    /// Where the program is attached, or why the kernel path is off.
    pub detail: String,
    /// What the kernel program counted per lane (empty without it).
    #[serde(default)]
    pub kernel_lanes: BTreeMap<String, KernelLaneReport>,
}

/// One lane's kernel counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLaneReport {
    /// Packets the kernel classified into the lane.
    pub packets: u64,
    /// Their IP bytes.
    pub bytes: u64,
}

impl OffloadReport {
    /// Reads the offload's state and counters now.
    pub fn new(offload: &dyn DataPlaneOffload) -> Self {
        let kernel_lanes = offload
            .lane_counts()
            .map(|counts| {
                Lane::ALL
                    .iter()
                    .map(|lane| {
                        let c = counts[lane.index()];
                        let report = KernelLaneReport {
                            packets: c.packets,
                            bytes: c.bytes,
                        };
                        (lane.name().to_string(), report)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            classifier: offload.kind().name().to_string(),
            detail: offload.detail().to_string(),
            kernel_lanes,
        }
    }

    /// Text lines for `bauxite status`.
    pub fn render_text(&self, out: &mut String) {
        let _ = writeln!(out, "\nclassifier: {} ({})", self.classifier, self.detail);
        for (name, lane) in &self.kernel_lanes {
            let _ = writeln!(
                out,
                "  {name:<9} {:>10} packets  {:>12} bytes",
                lane.packets, lane.bytes
            );
        }
    }
}

/// Prometheus series: which classifier runs, and the kernel's per-lane counters.
pub fn render_prometheus(offload: &dyn DataPlaneOffload, node: &str) -> String {
    let report = OffloadReport::new(offload);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP bauxite_lane_classifier Which classifier sorts outbound packets into lanes (1)."
    );
    let _ = writeln!(out, "# TYPE bauxite_lane_classifier gauge");
    let _ = writeln!(
        out,
        "bauxite_lane_classifier{{node=\"{node}\",classifier=\"{}\"}} 1",
        report.classifier
    );
    for (name, help, pick) in [
        (
            "kernel_lane_packets",
            "Packets the kernel classifier put in each lane.",
            (|l: &KernelLaneReport| l.packets) as fn(&KernelLaneReport) -> u64,
        ),
        (
            "kernel_lane_bytes",
            "IP bytes the kernel classifier put in each lane.",
            |l: &KernelLaneReport| l.bytes,
        ),
    ] {
        if report.kernel_lanes.is_empty() {
            break;
        }
        let _ = writeln!(out, "# HELP bauxite_{name}_total {help}");
        let _ = writeln!(out, "# TYPE bauxite_{name}_total counter");
        for (lane, counts) in &report.kernel_lanes {
            let _ = writeln!(
                out,
                "bauxite_{name}_total{{node=\"{node}\",lane=\"{lane}\"}} {}",
                pick(counts)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bauxite_conduit::offload::{LaneCount, OffloadKind};

    use super::*;

    #[test]
    fn lane_rules_keep_the_kernel_classifier_off() {
        use bauxite_conduit::scheduler::{LaneProtocol, LaneRule};
        let rules = LaneRules::new(vec![LaneRule {
            protocol: LaneProtocol::Udp,
            ports: 7410..=7411,
            lane: Lane::Critical,
        }])
        .unwrap();
        // Decided before any BPF call: no device of that name needs to exist.
        let (offload, _) = start(&TunKind::Kernel("bx-no-such-dev".into()), &rules, None);
        assert_eq!(offload.kind(), OffloadKind::Userspace);
        assert!(
            offload.detail().contains("[[lanes]]"),
            "{}",
            offload.detail()
        );
        assert!(offload.lane_counts().is_none());
    }

    #[derive(Debug)]
    struct Fixed;

    impl DataPlaneOffload for Fixed {
        fn kind(&self) -> OffloadKind {
            OffloadKind::Kernel
        }
        fn detail(&self) -> &str {
            "bauxite0 egress via Tcx"
        }
        fn lane_counts(&self) -> Option<[LaneCount; 3]> {
            let c = |packets, bytes| LaneCount { packets, bytes };
            Some([c(1, 60), c(2, 2000), c(3, 4500)])
        }
    }

    #[test]
    fn kernel_counters_reach_status_and_metrics() {
        let report = OffloadReport::new(&Fixed);
        assert_eq!(report.classifier, "ebpf");
        assert_eq!(report.kernel_lanes["telemetry"].packets, 2);
        assert_eq!(report.kernel_lanes["bulk"].bytes, 4500);
        let mut text = String::new();
        report.render_text(&mut text);
        assert!(
            text.contains("classifier: ebpf (bauxite0 egress via Tcx)"),
            "{text}"
        );
        let metrics = render_prometheus(&Fixed, "n1");
        assert!(metrics.contains("bauxite_lane_classifier{node=\"n1\",classifier=\"ebpf\"} 1"));
        assert!(
            metrics.contains("bauxite_kernel_lane_packets_total{node=\"n1\",lane=\"critical\"} 1")
        );
        assert!(
            metrics
                .contains("bauxite_kernel_lane_bytes_total{node=\"n1\",lane=\"telemetry\"} 2000")
        );
    }

    #[test]
    fn the_fallback_shows_its_reason_and_no_kernel_series() {
        let (offload, _) = start(
            &TunKind::Memory("asked for".into()),
            &LaneRules::default(),
            None,
        );
        let report = OffloadReport::new(offload.as_ref());
        assert_eq!(report.classifier, "userspace");
        assert_eq!(report.detail, "no kernel TUN device to attach to");
        assert!(report.kernel_lanes.is_empty());
        let metrics = render_prometheus(offload.as_ref(), "n1");
        assert!(metrics.contains("classifier=\"userspace\"} 1"));
        assert!(!metrics.contains("kernel_lane"));
    }
}
