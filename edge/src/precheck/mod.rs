//! `bauxite precheck`: the OS-replacement survival check that runs (as a systemd
//! oneshot) before the daemon. It keeps one invariant: the daemon only starts on an OS
//! whose fingerprint is committed in `bootstrap/os_fingerprint.json`, and a fingerprint
//! is only committed after the signed runtime manifest was applied and the epoch
//! evidence rotated.
//!
//! Driving rules: [`run`] = load config → [`StateRoot::prepare`] → certificate check →
//! read OS facts → [`bootstrap`]. [`bootstrap`] is the in-process core tests drive with
//! fake OS inputs, a fixed [`Clock`] and a [`CrashHook`]: recover leftovers → decide →
//! (first run | unchanged | reconstruct → rotate evidence → commit fingerprint).
//! A node with no runtime manifest at all (no verify key, manifest or signature; what
//! `bauxite join` leaves) has nothing to reconstruct: an OS change only rotates the
//! evidence and commits the new fingerprint. As soon as any of the three exists, the
//! whole signed-manifest path runs and fails closed.
//! The fingerprint commit is last on purpose: a crash anywhere before it makes the next
//! run see the update again and redo the (idempotent) reconstruction.

pub mod cert;
pub mod epoch;
pub mod events;
pub mod exit;
pub mod fingerprint;
pub mod manifest;
pub mod reconstruct;
pub mod state_root;

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{CertError, Error, FingerprintError, ReconstructionError, StateRootError};
use crate::fsutil::{read_optional, write_atomic};
use epoch::{CrashHook, CrashPoint, Evidence};
use events::Event;
use fingerprint::{BootEpoch, CompositeHash, Decision, FingerprintRecord, OsInputs, OsSources};
use state_root::StateRoot;

/// The time source: wall-clock for timestamps, monotonic for durations.
pub trait Clock {
    /// Current UTC time.
    fn now(&self) -> OffsetDateTime;
    /// Monotonic time since an arbitrary fixed origin.
    fn monotonic(&self) -> Duration;
}

/// A clock frozen at one instant (tests and deterministic tools).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
    fn monotonic(&self) -> Duration {
        Duration::ZERO
    }
}

/// What a successful precheck found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// First run: fingerprint stored at epoch 0.
    Initialised {
        /// The live hash.
        hash: CompositeHash,
    },
    /// Fingerprint matched; nothing to do.
    Unchanged {
        /// The current epoch.
        epoch: BootEpoch,
    },
    /// OS update detected on a node without a runtime manifest (no verify key, no
    /// manifest, no signature): the new fingerprint and epoch were recorded, nothing
    /// needed reconstructing.
    Recorded {
        /// The new epoch.
        epoch: BootEpoch,
    },
    /// OS update detected and the runtime reconstructed.
    Reconstructed {
        /// The new epoch.
        epoch: BootEpoch,
        /// Number of manifest operations run.
        operations: usize,
    },
}

/// Everything [`run`] needs besides the clock, hook and event sink.
#[derive(Debug, Clone)]
pub struct Request {
    /// The config file.
    pub config_path: PathBuf,
    /// Test hatch: accept an ephemeral state root.
    pub skip_mount_check: bool,
    /// Where the OS facts come from.
    pub os: OsSources,
}

/// The full precheck as the binary runs it.
pub fn run(
    req: &Request,
    clock: &dyn Clock,
    hook: &mut dyn CrashHook,
    events: &mut dyn FnMut(Event),
) -> Result<Outcome, Error> {
    let config = Config::load(&req.config_path)?;
    let root = StateRoot::prepare(&config.state_root, req.skip_mount_check)?;
    if req.skip_mount_check {
        events(Event::MountCheckSkipped {
            root: root.root().to_path_buf(),
        });
    }
    let t = &config.transport;
    let read = |path: &PathBuf| {
        crate::fsutil::read_capped(path, crate::fsutil::MAX_SMALL_FILE).map_err(|source| {
            CertError::Unreadable {
                path: path.clone(),
                source,
            }
        })
    };
    let cert = read(&t.cert_file)?;
    cert::check_certificate(&cert, &t.cert_file, clock.now())?;
    read(&t.key_file)?;
    read(&t.ca_file)?;
    let os = req.os.read()?;
    let config_hash = reconstruct::hash_file_or_empty(&req.config_path);
    bootstrap(&root, &os, &config_hash, clock, hook, events)
}

/// The core on a prepared state root with already-read OS inputs.
pub fn bootstrap(
    root: &StateRoot,
    os: &OsInputs,
    config_hash: &str,
    clock: &dyn Clock,
    hook: &mut dyn CrashHook,
    events: &mut dyn FnMut(Event),
) -> Result<Outcome, Error> {
    let started = clock.monotonic();
    let recovery = epoch::recover(&root.epoch_dir(), &root.bootstrap_dir()).map_err(|source| {
        StateRootError::Io {
            action: "recover",
            path: root.epoch_dir(),
            source,
        }
    })?;
    for path in recovery.removed {
        events(Event::OrphanRemoved { path });
    }
    if recovery.restored_current {
        events(Event::CurrentRestored);
    }
    let stored = load_fingerprint(root)?;
    let now = clock.now();
    match fingerprint::decide(stored.as_ref(), os) {
        Decision::Unchanged { epoch } => {
            events(Event::FingerprintMatch {
                composite_hash: os.composite_hash(),
                boot_epoch: epoch,
            });
            Ok(Outcome::Unchanged { epoch })
        }
        Decision::FirstRun => {
            let record = FingerprintRecord::capture(os, BootEpoch(0), now);
            commit(root, &record, "", config_hash, now, hook)?;
            events(Event::FingerprintInitialized {
                composite_hash: record.composite_hash,
                boot_epoch: record.boot_epoch,
            });
            Ok(Outcome::Initialised {
                hash: record.composite_hash,
            })
        }
        Decision::UpdateDetected {
            previous,
            current,
            kernel_changed,
            epoch,
        } => {
            events(Event::UpdateDetected {
                previous_hash: previous,
                current_hash: current,
                kernel_changed,
            });
            if reconstruct::runtime_manifest_absent(root) {
                let next = epoch.next().ok_or(ReconstructionError::EpochOverflow)?;
                events(Event::NoRuntimeManifest {
                    manifest: root.manifest_path(),
                    verify_key: root.verify_key_path(),
                });
                let record = FingerprintRecord::capture(os, next, now);
                commit(root, &record, "", config_hash, now, hook)?;
                events(Event::EpochRotated { boot_epoch: next });
                return Ok(Outcome::Recorded { epoch: next });
            }
            events(Event::ReconstructionStarted);
            let manifest = reconstruct::load_verified_manifest(root)?;
            events(Event::ManifestVerified {
                operations: manifest.operations.len(),
            });
            let ops = reconstruct::preflight(&manifest, root)?;
            reconstruct::execute(&ops)?;
            let next = epoch.next().ok_or(ReconstructionError::EpochOverflow)?;
            let record = FingerprintRecord::capture(os, next, now);
            let binary_hash = manifest
                .binary_path
                .as_ref()
                .map(|b| reconstruct::hash_file_or_empty(&root.binaries_dir().join(b)))
                .unwrap_or_default();
            commit(root, &record, &binary_hash, config_hash, now, hook)?;
            events(Event::EpochRotated { boot_epoch: next });
            events(Event::ReconstructionCompleted {
                duration: clock.monotonic().saturating_sub(started),
                boot_epoch: next,
            });
            Ok(Outcome::Reconstructed {
                epoch: next,
                operations: ops.len(),
            })
        }
    }
}

/// Reads the stored fingerprint; a present but unparsable file is an error, never
/// "first run", so corruption cannot silently reset the boot epoch.
pub fn load_fingerprint(root: &StateRoot) -> Result<Option<FingerprintRecord>, FingerprintError> {
    let path = root.fingerprint_path();
    let bytes = read_optional(&path).map_err(|source| FingerprintError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    bytes
        .map(|b| {
            FingerprintRecord::parse(&b)
                .map_err(|reason| FingerprintError::Corrupt { path, reason })
        })
        .transpose()
}

/// Writes the fingerprint file atomically (used by the commit and by the tamper tool).
pub fn save_fingerprint(
    root: &StateRoot,
    record: &FingerprintRecord,
) -> Result<(), FingerprintError> {
    let path = root.fingerprint_path();
    write_atomic(&path, &record.to_json(), 0o644).map_err(|source| FingerprintError::Io {
        action: "write",
        path,
        source,
    })
}

fn commit(
    root: &StateRoot,
    record: &FingerprintRecord,
    binary_hash: &str,
    config_hash: &str,
    now: OffsetDateTime,
    hook: &mut dyn CrashHook,
) -> Result<(), ReconstructionError> {
    let evidence = Evidence {
        os_fingerprint: record.clone(),
        binary_hash: binary_hash.to_owned(),
        config_hash: config_hash.to_owned(),
        rotated_at: record.captured_at,
    };
    let tag = u128::try_from(now.unix_timestamp_nanos()).unwrap_or_default();
    epoch::rotate(&root.epoch_dir(), &evidence, tag, hook)?;
    hook.before(CrashPoint::CommitFingerprint).map_err(|e| {
        ReconstructionError::Commit(Box::new(FingerprintError::Io {
            action: "commit",
            path: root.fingerprint_path(),
            source: e,
        }))
    })?;
    save_fingerprint(root, record).map_err(|e| ReconstructionError::Commit(Box::new(e)))
}
