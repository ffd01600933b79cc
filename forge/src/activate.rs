//! Activation by atomic symlink swap, and rollback, guarded by `rollback.marker`.
//!
//! Invariant: `current` always names one complete version directory whose image was
//! verified whole before it became active, and it changes only by `rename(2)` of a fully
//! created symlink followed by an fsync of the state root. The marker is written (atomically)
//! *before* every swap, so after a crash at any point [`recover`] knows whether a swap may
//! have happened and finishes or abandons it; a version rolled back once is recorded as
//! blocked and never re-activated automatically (no reboot loop).
//!
//! Protocol (each step is a [`CrashPoint`]):
//!
//! ```text
//! activate:  Verified | marker{pending, previous, candidate} | symlink current.tmp
//!            | rename current.tmp -> current | fsync root | remove candidate's checkpoint.bin
//! rollback:  marker{rolling_back} | swap to previous | marker{rolled_back, blocked += candidate}
//! commit:    marker{committed}     (the watchdog saw the new version healthy)
//! ```

use std::fs;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crash::{CrashHook, CrashPoint};
use crate::error::{Error, Result, io, io_error};
use crate::fsutil::{
    TMP_SUFFIX, read_optional, remove_file_if_present, sync_dir, tmp_sibling, write_atomic,
};
use crate::layout::{CHECKPOINT_FILE, Layout, Version};
use crate::staging::VerifiedStage;

/// Versions remembered as blocked (oldest dropped first).
const MAX_BLOCKED: usize = 32;

/// Where an activation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerState {
    /// The swap may have happened; the candidate has not reported healthy yet.
    Pending,
    /// A rollback started; [`recover`] finishes it.
    RollingBack,
    /// The candidate was rolled back and is blocked.
    RolledBack,
    /// The candidate reported healthy and stays.
    Committed,
    /// The swap never happened (crash before it); the previous version stays.
    Aborted,
}

/// The content of `rollback.marker` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackMarker {
    /// Format version of this record.
    pub format: u32,
    /// Where the activation stands.
    pub state: MarkerState,
    /// What was active before (`None` on the first install).
    pub previous: Option<Version>,
    /// The version being activated.
    pub candidate: Version,
    /// Starts of the candidate so far (counted before each start).
    pub boot_attempts: u32,
    /// Wall-clock time of the swap, milliseconds since the Unix epoch.
    pub activated_unix_ms: u64,
    /// How long the candidate has to report healthy after each start.
    pub health_timeout_ms: u64,
    /// Versions rolled back earlier, never re-activated automatically.
    pub blocked: Vec<Version>,
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Reads `rollback.marker`; `None` when there is none.
pub fn read_marker(layout: &Layout) -> Result<Option<RollbackMarker>> {
    let path = layout.marker_path();
    let Some(bytes) = read_optional(&path).map_err(io("read", &path))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::BadMarker {
            path,
            reason: e.to_string(),
        })
}

fn write_marker(layout: &Layout, m: &RollbackMarker, hook: &mut dyn CrashHook) -> Result<()> {
    let path = layout.marker_path();
    let mut bytes = serde_json::to_vec_pretty(m).map_err(|e| Error::BadMarker {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(&path, &bytes, 0o644, hook, CrashPoint::Marker)
        .map_err(|e| io_error("write", &path, e))
}

/// Whether `v` was rolled back earlier (and must not be activated automatically).
pub fn is_blocked(layout: &Layout, v: &Version) -> Result<bool> {
    Ok(read_marker(layout)?.is_some_and(|m| m.blocked.contains(v)))
}

/// Points `current` at `versions/<v>`: a new link under a temp name, `rename(2)` over
/// `current`, fsync of the state root.
fn swap(layout: &Layout, v: &Version, hook: &mut dyn CrashHook) -> Result<()> {
    let link = layout.current_link();
    let tmp = tmp_sibling(&link);
    hook.before(CrashPoint::LinkCreate)
        .map_err(io("symlink", &tmp))?;
    remove_file_if_present(&tmp).map_err(io("remove", &tmp))?;
    std::os::unix::fs::symlink(Layout::link_target(v), &tmp).map_err(io("symlink", &tmp))?;
    hook.before(CrashPoint::LinkRename)
        .map_err(io("rename", &link))?;
    fs::rename(&tmp, &link).map_err(io("rename", &link))?;
    hook.before(CrashPoint::RootSync)
        .map_err(io("fsync", layout.root()))?;
    sync_dir(layout.root()).map_err(io("fsync", layout.root()))
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    /// The version active before (kept as the backup).
    pub previous: Option<Version>,
    /// The version now active.
    pub version: Version,
}

/// Makes the verified stage the active version. `now_unix_ms` is recorded in the marker;
/// `health_timeout` is the time the watchdog gives each start of the new version.
pub fn activate(
    layout: &Layout,
    stage: VerifiedStage,
    now_unix_ms: u64,
    health_timeout: Duration,
    hook: &mut dyn CrashHook,
) -> Result<Activated> {
    let version = stage.version;
    let root = layout.root();
    hook.before(CrashPoint::Verified)
        .map_err(io("activate", root))?;
    let old = read_marker(layout)?;
    let blocked = old.map(|m| m.blocked).unwrap_or_default();
    if blocked.contains(&version) {
        return Err(Error::VersionBlocked {
            version: version.to_string(),
        });
    }
    let previous = layout.current()?;
    if previous.as_ref() == Some(&version) {
        return Ok(Activated { previous, version });
    }
    let marker = RollbackMarker {
        format: 1,
        // The first install has nothing to roll back to: nothing to watch.
        state: if previous.is_some() {
            MarkerState::Pending
        } else {
            MarkerState::Committed
        },
        previous: previous.clone(),
        candidate: version.clone(),
        boot_attempts: 0,
        activated_unix_ms: now_unix_ms,
        health_timeout_ms: u64::try_from(health_timeout.as_millis()).unwrap_or(u64::MAX),
        blocked,
    };
    write_marker(layout, &marker, hook)?;
    swap(layout, &version, hook)?;
    cleanup_checkpoint(layout, &version, hook)?;
    tracing::info!(%version, previous = ?previous, "activated");
    Ok(Activated { previous, version })
}

/// The active version needs no staging checkpoint any more.
fn cleanup_checkpoint(layout: &Layout, v: &Version, hook: &mut dyn CrashHook) -> Result<()> {
    let ckpt = layout.checkpoint_path(v);
    hook.before(CrashPoint::Cleanup)
        .map_err(io("remove", &ckpt))?;
    remove_file_if_present(&ckpt).map_err(io("remove", &ckpt))?;
    let dir = layout.version_dir(v);
    sync_dir(&dir).map_err(io("fsync", &dir))
}

/// Counts one more start of the pending candidate (call before starting it) and returns
/// the count. Errors when no activation is pending.
pub fn record_start(layout: &Layout, hook: &mut dyn CrashHook) -> Result<u32> {
    let path = layout.marker_path();
    let mut m = match read_marker(layout)? {
        Some(m) if m.state == MarkerState::Pending => m,
        _ => {
            return Err(Error::BadMarker {
                path,
                reason: "no pending activation to count a start for".into(),
            });
        }
    };
    m.boot_attempts = m.boot_attempts.saturating_add(1);
    write_marker(layout, &m, hook)?;
    Ok(m.boot_attempts)
}

/// Confirms the pending candidate (it reported healthy). Returns the committed version.
pub fn commit(layout: &Layout, hook: &mut dyn CrashHook) -> Result<Version> {
    let path = layout.marker_path();
    let mut m = match read_marker(layout)? {
        Some(m) if m.state == MarkerState::Pending => m,
        _ => {
            return Err(Error::BadMarker {
                path,
                reason: "no pending activation to commit".into(),
            });
        }
    };
    m.state = MarkerState::Committed;
    write_marker(layout, &m, hook)?;
    Ok(m.candidate)
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    /// The version active again.
    pub restored: Version,
    /// The version rolled back (now blocked).
    pub rejected: Version,
}

/// Restores the previous version and blocks the candidate. Works on a pending
/// activation (watchdog), a committed one (operator), or an interrupted rollback.
pub fn rollback(layout: &Layout, hook: &mut dyn CrashHook) -> Result<RolledBack> {
    let path = layout.marker_path();
    let mut m = read_marker(layout)?.ok_or_else(|| Error::BadMarker {
        path: path.clone(),
        reason: "no activation recorded".into(),
    })?;
    if !matches!(
        m.state,
        MarkerState::Pending | MarkerState::Committed | MarkerState::RollingBack
    ) {
        return Err(Error::BadMarker {
            path,
            reason: format!("nothing to roll back in state {:?}", m.state),
        });
    }
    let Some(previous) = m.previous.clone() else {
        return Err(Error::NoPreviousVersion);
    };
    if !layout.version_dir(&previous).is_dir() {
        return Err(Error::NoPreviousVersion);
    }
    if m.state != MarkerState::RollingBack {
        m.state = MarkerState::RollingBack;
        write_marker(layout, &m, hook)?;
    }
    if layout.current()?.as_ref() != Some(&previous) {
        swap(layout, &previous, hook)?;
    }
    m.state = MarkerState::RolledBack;
    if !m.blocked.contains(&m.candidate) {
        m.blocked.push(m.candidate.clone());
    }
    let excess = m.blocked.len().saturating_sub(MAX_BLOCKED);
    m.blocked.drain(..excess);
    write_marker(layout, &m, hook)?;
    tracing::warn!(restored = %previous, rejected = %m.candidate, "rolled back");
    Ok(RolledBack {
        restored: previous,
        rejected: m.candidate,
    })
}

/// The state [`recover`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing in progress.
    Steady {
        /// The active version.
        current: Option<Version>,
    },
    /// The candidate is active and must still report healthy (run the watchdog).
    AwaitingHealth {
        /// The candidate.
        version: Version,
        /// Starts counted so far.
        boot_attempts: u32,
    },
    /// A crash before the swap: the previous version stays; the staging can be
    /// verified and activated again.
    ActivationAborted {
        /// The version that stays active.
        current: Option<Version>,
    },
    /// An interrupted rollback was finished.
    RollbackCompleted(RolledBack),
}

/// Run at start, before anything else touches the layout: removes temp files left by a
/// crash and finishes or abandons an interrupted activation or rollback.
pub fn recover(layout: &Layout, hook: &mut dyn CrashHook) -> Result<Recovery> {
    for path in [
        tmp_sibling(&layout.current_link()),
        tmp_sibling(&layout.marker_path()),
    ] {
        remove_file_if_present(&path).map_err(io("remove", &path))?;
    }
    let versions = layout.versions_dir();
    for entry in fs::read_dir(&versions).map_err(io("list", &versions))? {
        let entry = entry.map_err(io("list", &versions))?;
        let tmp = entry.path().join(format!("{CHECKPOINT_FILE}{TMP_SUFFIX}"));
        remove_file_if_present(&tmp).map_err(io("remove", &tmp))?;
    }
    let current = layout.current()?;
    if let Some(v) = &current {
        // A crash after the swap, before the cleanup.
        let ckpt = layout.checkpoint_path(v);
        if ckpt.exists() {
            cleanup_checkpoint(layout, v, hook)?;
        }
    }
    let Some(mut m) = read_marker(layout)? else {
        return Ok(Recovery::Steady { current });
    };
    match m.state {
        MarkerState::Pending if current.as_ref() == Some(&m.candidate) => {
            Ok(Recovery::AwaitingHealth {
                version: m.candidate,
                boot_attempts: m.boot_attempts,
            })
        }
        MarkerState::Pending => {
            m.state = MarkerState::Aborted;
            write_marker(layout, &m, hook)?;
            Ok(Recovery::ActivationAborted { current })
        }
        MarkerState::RollingBack => Ok(Recovery::RollbackCompleted(rollback(layout, hook)?)),
        MarkerState::RolledBack | MarkerState::Committed | MarkerState::Aborted => {
            Ok(Recovery::Steady { current })
        }
    }
}
