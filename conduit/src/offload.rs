//! `DataPlaneOffload`: whether the kernel classifies outbound packets into lanes too.
//!
//! The userspace classifier ([`crate::scheduler::classify`]) always orders the lanes inside
//! the process. An offload (crate `bauxite-ebpf`: a TC program on the TUN device's egress)
//! also gives the kernel's own queue the lanes, so a Critical packet is not stuck behind
//! bulk before the daemon even reads it. When the kernel path cannot load, the daemon runs
//! with [`UserspaceOnly`], which says why.

use crate::Lane;

/// Packets and bytes one lane carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneCount {
    /// Packets classified into the lane.
    pub packets: u64,
    /// Their IP bytes.
    pub bytes: u64,
}

/// Who classifies outbound packets before the daemon reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadKind {
    /// A kernel program classifies (and prioritises) them; userspace agrees with it.
    Kernel,
    /// Only the userspace classifier: the kernel queue is first come, first served.
    Userspace,
}

impl OffloadKind {
    /// Lower-case name used in status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            OffloadKind::Kernel => "ebpf",
            OffloadKind::Userspace => "userspace",
        }
    }
}

/// The lane classification in effect for the TUN device's outbound packets.
pub trait DataPlaneOffload: Send + Sync + std::fmt::Debug {
    /// Which classifier is in charge.
    fn kind(&self) -> OffloadKind;
    /// Where it is attached, or why the kernel path is off.
    fn detail(&self) -> &str;
    /// Per-lane counts the kernel kept, indexed by [`Lane::index`]; `None` when there is no
    /// kernel program (or its counters cannot be read right now).
    fn lane_counts(&self) -> Option<[LaneCount; 3]>;
}

/// The fallback: no kernel program, only the userspace classifier.
#[derive(Clone, Debug)]
pub struct UserspaceOnly {
    reason: String,
}

impl UserspaceOnly {
    /// The fallback, with the reason the kernel path is off (shown in status).
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The lane userspace gives `packet` (the same function the scheduler uses).
    pub fn classify(&self, packet: &[u8]) -> Lane {
        crate::scheduler::classify(packet)
    }
}

impl DataPlaneOffload for UserspaceOnly {
    fn kind(&self) -> OffloadKind {
        OffloadKind::Userspace
    }

    fn detail(&self) -> &str {
        &self.reason
    }

    fn lane_counts(&self) -> Option<[LaneCount; 3]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userspace_only_reports_its_reason_and_no_kernel_counts() {
        let fallback = UserspaceOnly::new("no CAP_BPF");
        assert_eq!(fallback.kind(), OffloadKind::Userspace);
        assert_eq!(fallback.kind().name(), "userspace");
        assert_eq!(fallback.detail(), "no CAP_BPF");
        assert_eq!(fallback.lane_counts(), None);
        assert_eq!(fallback.classify(&[1; 20]), Lane::Critical);
    }
}
