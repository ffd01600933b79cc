//! Precheck's structured events. The logic produces [`Event`] values; the shell turns
//! them into log lines whose message is the stable event name (`edge.os.*`), so
//! operators and tests can grep for them.

use std::path::PathBuf;
use std::time::Duration;

use super::fingerprint::{BootEpoch, CompositeHash};

/// Something precheck observed or did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The ephemeral-filesystem check was skipped by the test hatch.
    MountCheckSkipped {
        /// The state root.
        root: PathBuf,
    },
    /// An interrupted write or rotation left an orphan that was deleted.
    OrphanRemoved {
        /// The deleted path.
        path: PathBuf,
    },
    /// `epoch/current` was lost mid-rotation and restored from `previous`.
    CurrentRestored,
    /// First run: fingerprint stored with epoch 0.
    FingerprintInitialized {
        /// The live hash.
        composite_hash: CompositeHash,
        /// Always 0.
        boot_epoch: BootEpoch,
    },
    /// The OS is unchanged.
    FingerprintMatch {
        /// The hash.
        composite_hash: CompositeHash,
        /// The current epoch.
        boot_epoch: BootEpoch,
    },
    /// The OS changed since the last run.
    UpdateDetected {
        /// The stored hash.
        previous_hash: CompositeHash,
        /// The live hash.
        current_hash: CompositeHash,
        /// Whether the kernel release changed.
        kernel_changed: bool,
    },
    /// The OS changed on a node that has no runtime manifest (no verify key, manifest or
    /// signature): there is nothing to reconstruct, so only the new fingerprint and
    /// epoch are recorded.
    NoRuntimeManifest {
        /// Where a manifest would be.
        manifest: PathBuf,
        /// Where its verify key would be.
        verify_key: PathBuf,
    },
    /// Reconstruction begins.
    ReconstructionStarted,
    /// The manifest signature verified.
    ManifestVerified {
        /// Number of operations.
        operations: usize,
    },
    /// Evidence rotated into `epoch/current`.
    EpochRotated {
        /// The new epoch.
        boot_epoch: BootEpoch,
    },
    /// Reconstruction finished and the new fingerprint is committed.
    ReconstructionCompleted {
        /// Wall time spent.
        duration: Duration,
        /// The new epoch.
        boot_epoch: BootEpoch,
    },
}

impl Event {
    /// The stable event name, used as the log message.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MountCheckSkipped { .. } => "edge.state_root.mount_check_skipped",
            Self::OrphanRemoved { .. } => "edge.epoch.orphan_removed",
            Self::CurrentRestored => "edge.epoch.current_restored",
            Self::FingerprintInitialized { .. } => "edge.os.fingerprint_initialized",
            Self::FingerprintMatch { .. } => "edge.os.fingerprint_match",
            Self::UpdateDetected { .. } => "edge.os.update_detected",
            Self::NoRuntimeManifest { .. } => "edge.os.no_runtime_manifest",
            Self::ReconstructionStarted => "edge.os.reconstruction_started",
            Self::ManifestVerified { .. } => "edge.os.manifest_verified",
            Self::EpochRotated { .. } => "edge.epoch.rotated",
            Self::ReconstructionCompleted { .. } => "edge.os.reconstruction_completed",
        }
    }

    /// Writes the event to the `tracing` subscriber.
    pub fn log(&self) {
        let name = self.name();
        match self {
            Self::MountCheckSkipped { root } => {
                tracing::warn!(root = %root.display(), "{name}")
            }
            Self::OrphanRemoved { path } => tracing::warn!(path = %path.display(), "{name}"),
            Self::CurrentRestored => tracing::warn!("{name}"),
            Self::FingerprintInitialized {
                composite_hash,
                boot_epoch,
            } => {
                tracing::info!(composite_hash = %composite_hash, boot_epoch = boot_epoch.0, "{name}")
            }
            Self::FingerprintMatch {
                composite_hash,
                boot_epoch,
            } => {
                tracing::debug!(composite_hash = %composite_hash, boot_epoch = boot_epoch.0, "{name}")
            }
            Self::UpdateDetected {
                previous_hash,
                current_hash,
                kernel_changed,
            } => tracing::warn!(
                previous_hash = %previous_hash,
                current_hash = %current_hash,
                kernel_changed,
                "{name}"
            ),
            Self::NoRuntimeManifest {
                manifest,
                verify_key,
            } => tracing::info!(
                manifest = %manifest.display(),
                verify_key = %verify_key.display(),
                outcome = "nothing to reconstruct; the new OS fingerprint and epoch are recorded",
                "{name}"
            ),
            Self::ReconstructionStarted => tracing::info!("{name}"),
            Self::ManifestVerified { operations } => tracing::info!(operations, "{name}"),
            Self::EpochRotated { boot_epoch } => {
                tracing::info!(boot_epoch = boot_epoch.0, "{name}")
            }
            Self::ReconstructionCompleted {
                duration,
                boot_epoch,
            } => tracing::info!(
                duration_seconds = duration.as_secs_f64(),
                boot_epoch = boot_epoch.0,
                "{name}"
            ),
        }
    }
}
