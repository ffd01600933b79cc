//! Update states with the exact names users look for, and progress as data.
//!
//! Invariant: [`UpdateState::name`] is stable — logs, telemetry, the hub and the demo's
//! tables all print these strings — and progress figures are counters, never estimates.

use serde::Serialize;

use crate::chunk::ChunkNo;

/// The states of an update, as the OTA demonstration names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "&'static str")]
#[non_exhaustive]
pub enum UpdateState {
    /// Downloading and staging; the image is not validated yet.
    PendingValidation,
    /// The whole staged image matched the signed index.
    Valid,
    /// On start, an interrupted staging was found (the previous run was cut short).
    PowerFailureCut,
    /// The checkpoint of the interrupted staging was loaded; its chunks are kept.
    CheckpointLoaded,
    /// A checkpoint could not be trusted and was discarded (a fresh start).
    CheckpointDiscarded,
    /// The staged image failed verification (changed after download).
    InvalidSignatureRejected,
    /// The staging was purged and `current` still points to the previous version.
    AtomicRolledBack,
    /// The new version is active (`current` swapped).
    Activated,
    /// The new version reported healthy; the activation is final.
    Committed,
    /// The new version did not report healthy in time; the previous one is back.
    RolledBackUnhealthy,
    /// The new version failed too many starts; the previous one is back.
    RolledBackFailedStarts,
    /// The update stopped on an error (full disk, read-only staging...); nothing changed.
    Failed,
}

impl UpdateState {
    /// Every state.
    pub const ALL: [Self; 12] = [
        Self::PendingValidation,
        Self::Valid,
        Self::PowerFailureCut,
        Self::CheckpointLoaded,
        Self::CheckpointDiscarded,
        Self::InvalidSignatureRejected,
        Self::AtomicRolledBack,
        Self::Activated,
        Self::Committed,
        Self::RolledBackUnhealthy,
        Self::RolledBackFailedStarts,
        Self::Failed,
    ];

    /// The stable name (`PENDING_VALIDATION`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::PendingValidation => "PENDING_VALIDATION",
            Self::Valid => "VALID",
            Self::PowerFailureCut => "POWER_FAILURE_CUT",
            Self::CheckpointLoaded => "CHECKPOINT_LOADED",
            Self::CheckpointDiscarded => "CHECKPOINT_DISCARDED",
            Self::InvalidSignatureRejected => "INVALID_SIGNATURE_REJECTED",
            Self::AtomicRolledBack => "ATOMIC_ROLLED_BACK",
            Self::Activated => "ACTIVATED",
            Self::Committed => "COMMITTED",
            Self::RolledBackUnhealthy => "ROLLED_BACK_UNHEALTHY",
            Self::RolledBackFailedStarts => "ROLLED_BACK_FAILED_STARTS",
            Self::Failed => "FAILED",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl From<UpdateState> for &'static str {
    fn from(s: UpdateState) -> Self {
        s.name()
    }
}

impl std::fmt::Display for UpdateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an update stands, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Chunks verified (including those loaded from a checkpoint).
    pub chunks_done: u32,
    /// Chunks recorded durable in the checkpoint.
    pub chunks_durable: u32,
    /// Chunks in the image.
    pub chunk_count: u32,
    /// Image bytes verified.
    pub bytes_done: u64,
    /// Image length.
    pub image_len: u64,
    /// Fragment payload bytes received by this run.
    pub bytes_transferred: u64,
    /// Of those, bytes beyond one copy of each chunk (duplicates, corrupted copies).
    pub bytes_retransferred: u64,
    /// Bytes of chunks fetched again although a checkpoint had recorded them durable
    /// (the demonstration's "data retransferred after power cut"; zero by design).
    pub verified_bytes_refetched: u64,
    /// Recent transfer rate, bytes per second.
    pub rate_bytes_per_sec: f64,
}

impl Progress {
    /// Percentage of the image verified.
    pub fn percent(&self) -> f64 {
        if self.image_len == 0 {
            return 100.0;
        }
        self.bytes_done as f64 * 100.0 / self.image_len as f64
    }
}

/// A state change with the progress at that moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateEvent {
    /// The new state.
    pub state: UpdateState,
    /// The version concerned.
    pub version: String,
    /// Progress when the state was entered.
    pub progress: Progress,
    /// The chunk concerned (the first one failing verification).
    pub chunk: Option<u32>,
    /// A human-readable detail (why a checkpoint was discarded, which version stays).
    pub detail: Option<String>,
}

impl StateEvent {
    /// A state change of `version` with its progress (no chunk, no detail).
    pub fn new(state: UpdateState, version: &str, progress: Progress) -> Self {
        Self {
            state,
            version: version.to_owned(),
            progress,
            chunk: None,
            detail: None,
        }
    }

    /// With the chunk concerned.
    pub fn chunk(mut self, c: ChunkNo) -> Self {
        self.chunk = Some(c.0);
        self
    }

    /// With a detail.
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_names_are_exact() {
        for (s, n) in [
            (UpdateState::PendingValidation, "PENDING_VALIDATION"),
            (UpdateState::Valid, "VALID"),
            (UpdateState::PowerFailureCut, "POWER_FAILURE_CUT"),
            (UpdateState::CheckpointLoaded, "CHECKPOINT_LOADED"),
            (
                UpdateState::InvalidSignatureRejected,
                "INVALID_SIGNATURE_REJECTED",
            ),
            (UpdateState::AtomicRolledBack, "ATOMIC_ROLLED_BACK"),
        ] {
            assert_eq!(s.name(), n);
            assert_eq!(UpdateState::from_name(n), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{n}\""));
        }
        for s in UpdateState::ALL {
            assert_eq!(UpdateState::from_name(s.name()), Some(s));
        }
    }
}
