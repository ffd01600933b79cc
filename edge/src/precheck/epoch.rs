//! Epoch evidence and its crash-safe rotation. Invariant: once [`recover`] has run,
//! `epoch/current/` (when any evidence was ever committed) holds one complete
//! `evidence.json`, and no half-written `*.tmp` directory remains.
//!
//! Rotation is a fixed sequence of [`RotationStep`]s; a [`CrashHook`] is consulted
//! before each so tests can stop the sequence at any point, exactly as a power cut
//! would, and check that the next run recovers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::fingerprint::{FingerprintRecord, RawRecord, pretty, rfc3339};
use crate::error::ReconstructionError;
use crate::fsutil::{TMP_SUFFIX, sync_dir, write_atomic};

/// File name of the evidence inside an epoch directory.
pub const EVIDENCE_FILE: &str = "evidence.json";

/// What a reconstruction leaves behind as proof of the epoch transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The fingerprint of the new epoch.
    pub os_fingerprint: FingerprintRecord,
    /// BLAKE3 of the manifest's main binary, empty when absent.
    pub binary_hash: String,
    /// BLAKE3 of the configuration file, empty when absent.
    pub config_hash: String,
    /// When the rotation happened.
    pub rotated_at: OffsetDateTime,
}

impl Evidence {
    /// Pretty JSON as stored in `evidence.json`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Raw<'a> {
            os_fingerprint: RawRecord,
            binary_hash: &'a str,
            config_hash: &'a str,
            rotated_at: String,
        }
        pretty(&Raw {
            os_fingerprint: self.os_fingerprint.to_raw(),
            binary_hash: &self.binary_hash,
            config_hash: &self.config_hash,
            rotated_at: rfc3339(self.rotated_at),
        })
    }

    /// Parses `evidence.json`; never panics on arbitrary bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let text = |v: &mut serde_json::Value, k: &str| -> Result<String, String> {
            v.get_mut(k)
                .and_then(|x| x.as_str().map(str::to_owned))
                .ok_or_else(|| format!("missing string field {k}"))
        };
        let binary_hash = text(&mut v, "binary_hash")?;
        let config_hash = text(&mut v, "config_hash")?;
        let rotated_at = text(&mut v, "rotated_at")?;
        let fp = v
            .get_mut("os_fingerprint")
            .map(serde_json::Value::take)
            .ok_or("missing os_fingerprint")?;
        Ok(Self {
            os_fingerprint: FingerprintRecord::from_value(fp)?,
            binary_hash,
            config_hash,
            rotated_at: OffsetDateTime::parse(
                &rotated_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| e.to_string())?,
        })
    }
}

/// The steps of a rotation, in order; a crash between any two must be recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RotationStep {
    /// Create `epoch_<tag>.tmp/` and write `evidence.json` (fsynced) into it.
    WriteTmp,
    /// fsync the tmp directory.
    SyncTmp,
    /// Delete the old `previous/` (a rename cannot replace a non-empty directory).
    RemovePrevious,
    /// Rename `current/` to `previous/`.
    RenameCurrentToPrevious,
    /// Rename the tmp directory to `current/`: the commit point.
    RenameTmpToCurrent,
    /// fsync `epoch/` so the renames survive power loss.
    SyncParent,
}

impl RotationStep {
    /// Every step, in execution order.
    pub const ALL: [Self; 6] = [
        Self::WriteTmp,
        Self::SyncTmp,
        Self::RemovePrevious,
        Self::RenameCurrentToPrevious,
        Self::RenameTmpToCurrent,
        Self::SyncParent,
    ];

    /// A stable name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::WriteTmp => "write_tmp",
            Self::SyncTmp => "sync_tmp",
            Self::RemovePrevious => "remove_previous",
            Self::RenameCurrentToPrevious => "rename_current_to_previous",
            Self::RenameTmpToCurrent => "rename_tmp_to_current",
            Self::SyncParent => "sync_parent",
        }
    }
}

/// A point at which a run can be cut short in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CrashPoint {
    /// Before a rotation step.
    Rotation(RotationStep),
    /// Before the new fingerprint is committed (after the rotation).
    CommitFingerprint,
}

/// Consulted before each crash point; returning `Err` aborts the run on the spot,
/// leaving the disk exactly as a crash there would.
pub trait CrashHook {
    /// Called before `point`.
    fn before(&mut self, point: CrashPoint) -> io::Result<()>;
}

/// The production hook: never crashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCrash;

impl CrashHook for NoCrash {
    fn before(&mut self, _point: CrashPoint) -> io::Result<()> {
        Ok(())
    }
}

/// Crashes before one chosen point (tests).
#[derive(Debug, Clone, Copy)]
pub struct CrashAt(pub CrashPoint);

impl CrashHook for CrashAt {
    fn before(&mut self, point: CrashPoint) -> io::Result<()> {
        if point == self.0 {
            return Err(io::Error::other(format!("injected crash before {point:?}")));
        }
        Ok(())
    }
}

/// Rotates `evidence` into `epoch_dir/current`, moving the old one to `previous`.
/// `tag` names the tmp directory (nanoseconds of `rotated_at` in production).
pub fn rotate(
    epoch_dir: &Path,
    evidence: &Evidence,
    tag: u128,
    hook: &mut dyn CrashHook,
) -> Result<(), ReconstructionError> {
    let tmp = epoch_dir.join(format!("epoch_{tag}{TMP_SUFFIX}"));
    let current = epoch_dir.join("current");
    let previous = epoch_dir.join("previous");
    for step in RotationStep::ALL {
        let fail = |source| ReconstructionError::Rotation {
            step: step.name(),
            source,
        };
        hook.before(CrashPoint::Rotation(step)).map_err(fail)?;
        match step {
            RotationStep::WriteTmp => {
                let _ = fs::remove_dir_all(&tmp);
                fs::create_dir(&tmp).map_err(fail)?;
                write_atomic(&tmp.join(EVIDENCE_FILE), &evidence.to_json(), 0o644).map_err(fail)?;
            }
            RotationStep::SyncTmp => sync_dir(&tmp).map_err(fail)?,
            RotationStep::RemovePrevious if current.is_dir() => {
                remove_dir_if_present(&previous).map_err(fail)?;
            }
            RotationStep::RenameCurrentToPrevious if current.is_dir() => {
                fs::rename(&current, &previous).map_err(fail)?;
            }
            RotationStep::RemovePrevious | RotationStep::RenameCurrentToPrevious => {}
            RotationStep::RenameTmpToCurrent => fs::rename(&tmp, &current).map_err(fail)?,
            RotationStep::SyncParent => sync_dir(epoch_dir).map_err(fail)?,
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What [`recover`] repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Orphaned tmp entries that were deleted.
    pub removed: Vec<PathBuf>,
    /// Whether `previous/` was moved back to `current/` (crash between the renames).
    pub restored_current: bool,
}

/// Cleans what an interrupted rotation or atomic write left in `epoch_dir` and
/// `bootstrap_dir`: `*.tmp` entries are deleted, and a `current/` lost between the two
/// renames is restored from `previous/`.
pub fn recover(epoch_dir: &Path, bootstrap_dir: &Path) -> io::Result<Recovery> {
    let mut out = Recovery::default();
    for dir in [epoch_dir, bootstrap_dir] {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            out.removed.push(path);
        }
    }
    let current = epoch_dir.join("current");
    let previous = epoch_dir.join("previous");
    if !current.exists() && previous.is_dir() {
        fs::rename(&previous, &current)?;
        out.restored_current = true;
    }
    if out.restored_current || !out.removed.is_empty() {
        sync_dir(epoch_dir)?;
        sync_dir(bootstrap_dir)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precheck::fingerprint::{BootEpoch, OsInputs};
    use proptest::prelude::*;

    fn evidence(epoch: u64) -> Evidence {
        let inputs = OsInputs {
            os_release: b"ID=x\n".to_vec(),
            usr_lib_os_release: None,
            uname_release: "6.1".into(),
        };
        Evidence {
            os_fingerprint: FingerprintRecord::capture(
                &inputs,
                BootEpoch(epoch),
                OffsetDateTime::UNIX_EPOCH,
            ),
            binary_hash: String::new(),
            config_hash: String::new(),
            rotated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn epoch_of(dir: &Path) -> u64 {
        let bytes = fs::read(dir.join(EVIDENCE_FILE)).unwrap();
        Evidence::parse(&bytes).unwrap().os_fingerprint.boot_epoch.0
    }

    #[test]
    fn rotation_moves_current_to_previous() {
        let d = tempfile::tempdir().unwrap();
        let (e, b) = (d.path().join("epoch"), d.path().join("bootstrap"));
        fs::create_dir_all(&e).unwrap();
        fs::create_dir_all(&b).unwrap();
        for n in 0..3 {
            rotate(&e, &evidence(n), u128::from(n), &mut NoCrash).unwrap();
        }
        assert_eq!(epoch_of(&e.join("current")), 2);
        assert_eq!(epoch_of(&e.join("previous")), 1);
        assert_eq!(recover(&e, &b).unwrap(), Recovery::default());
    }

    #[test]
    fn crash_at_every_step_is_recoverable() {
        for step in RotationStep::ALL {
            let d = tempfile::tempdir().unwrap();
            let (e, b) = (d.path().join("epoch"), d.path().join("bootstrap"));
            fs::create_dir_all(&e).unwrap();
            fs::create_dir_all(&b).unwrap();
            rotate(&e, &evidence(0), 0, &mut NoCrash).unwrap();
            rotate(&e, &evidence(1), 1, &mut NoCrash).unwrap();
            let crash = CrashAt(CrashPoint::Rotation(step));
            assert!(rotate(&e, &evidence(2), 2, &mut { crash }).is_err());
            recover(&e, &b).unwrap();
            let names: Vec<_> = fs::read_dir(&e)
                .unwrap()
                .map(|x| x.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                names.iter().all(|n| !n.ends_with(".tmp")),
                "{step:?}: {names:?}"
            );
            let cur = epoch_of(&e.join("current"));
            assert!(cur == 1 || cur == 2, "{step:?}: current epoch {cur}");
            // The retried rotation always completes.
            rotate(&e, &evidence(2), 3, &mut NoCrash).unwrap();
            assert_eq!(epoch_of(&e.join("current")), 2, "{step:?}");
        }
    }

    #[test]
    fn evidence_round_trips() {
        let ev = evidence(4);
        assert_eq!(Evidence::parse(&ev.to_json()).unwrap(), ev);
    }

    proptest! {
        #[test]
        fn evidence_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Evidence::parse(&bytes);
        }
    }
}
