//! Named crash points of every crash-safe file protocol in forge.
//!
//! Invariant: every file effect of staging, checkpointing, activation, rollback and
//! purge happens after a [`CrashHook::before`] call naming it, so a test can stop the
//! sequence exactly where a power cut or `kill -9` would, then restart and check that
//! recovery leaves one complete, verified version active. Production passes [`NoCrash`].

use std::io;

/// The steps of one atomic file write (temp file, fsync, rename, fsync of the directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AtomicStep {
    /// Before the temp file is created.
    CreateTmp,
    /// After half of the temp file is written (a torn write).
    Torn,
    /// Before the temp file is fsynced.
    SyncTmp,
    /// Before the temp file is renamed over the target: the commit point.
    Rename,
    /// Before the directory is fsynced so the rename survives power loss.
    SyncDir,
}

impl AtomicStep {
    /// Every step, in execution order.
    pub const ALL: [Self; 5] = [
        Self::CreateTmp,
        Self::Torn,
        Self::SyncTmp,
        Self::Rename,
        Self::SyncDir,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CreateTmp => "create_tmp",
            Self::Torn => "torn",
            Self::SyncTmp => "sync_tmp",
            Self::Rename => "rename",
            Self::SyncDir => "sync_dir",
        }
    }
}

/// A point at which a run can be cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrashPoint {
    /// Before a verified chunk is written into the staged image (during download).
    ChunkWrite,
    /// Before the staged image is fdatasynced (a batch of chunks becoming durable).
    ImageSync,
    /// A step of writing `checkpoint.bin`.
    Checkpoint(AtomicStep),
    /// After the whole staged image verified, before anything of the swap.
    Verified,
    /// A step of writing `rollback.marker` (activation, rollback, commit, start count).
    Marker(AtomicStep),
    /// Before the new `current.tmp` symlink is created (activation or rollback).
    LinkCreate,
    /// Before `current.tmp` is renamed over `current`: the swap itself.
    LinkRename,
    /// Before the state root is fsynced after the swap.
    RootSync,
    /// Before the activated version's `checkpoint.bin` is removed.
    Cleanup,
    /// Before a purge removes `checkpoint.bin`.
    PurgeCheckpoint,
    /// Before a purge removes the image.
    PurgeImage,
    /// Before a purge removes the version directory.
    PurgeDir,
}

impl CrashPoint {
    /// Every point.
    pub const ALL: [Self; 20] = [
        Self::ChunkWrite,
        Self::ImageSync,
        Self::Checkpoint(AtomicStep::CreateTmp),
        Self::Checkpoint(AtomicStep::Torn),
        Self::Checkpoint(AtomicStep::SyncTmp),
        Self::Checkpoint(AtomicStep::Rename),
        Self::Checkpoint(AtomicStep::SyncDir),
        Self::Verified,
        Self::Marker(AtomicStep::CreateTmp),
        Self::Marker(AtomicStep::Torn),
        Self::Marker(AtomicStep::SyncTmp),
        Self::Marker(AtomicStep::Rename),
        Self::Marker(AtomicStep::SyncDir),
        Self::LinkCreate,
        Self::LinkRename,
        Self::RootSync,
        Self::Cleanup,
        Self::PurgeCheckpoint,
        Self::PurgeImage,
        Self::PurgeDir,
    ];

    /// A stable name for logs, errors and the `FORGE_PAUSE_AT` test hook.
    pub fn name(self) -> String {
        match self {
            Self::ChunkWrite => "chunk_write".into(),
            Self::ImageSync => "image_sync".into(),
            Self::Checkpoint(s) => format!("checkpoint.{}", s.name()),
            Self::Verified => "verified".into(),
            Self::Marker(s) => format!("marker.{}", s.name()),
            Self::LinkCreate => "link_create".into(),
            Self::LinkRename => "link_rename".into(),
            Self::RootSync => "root_sync".into(),
            Self::Cleanup => "cleanup".into(),
            Self::PurgeCheckpoint => "purge_checkpoint".into(),
            Self::PurgeImage => "purge_image".into(),
            Self::PurgeDir => "purge_dir".into(),
        }
    }

    /// The point named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Consulted before each crash point; returning `Err` aborts the operation on the spot,
/// leaving the disk exactly as a crash there would.
pub trait CrashHook: Send {
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

/// Crashes at the `skip + 1`-th time `point` is reached, and at every later point:
/// after a crash, nothing more may reach the disk.
#[derive(Debug, Clone, Copy)]
pub struct CrashAt {
    point: CrashPoint,
    skip: u32,
    crashed: bool,
}

impl CrashAt {
    /// Crashes the first time `point` is reached.
    pub fn new(point: CrashPoint) -> Self {
        Self::nth(point, 0)
    }

    /// Crashes when `point` is reached after `skip` passes.
    pub fn nth(point: CrashPoint, skip: u32) -> Self {
        Self {
            point,
            skip,
            crashed: false,
        }
    }

    /// Whether the crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed
    }
}

impl CrashHook for CrashAt {
    fn before(&mut self, point: CrashPoint) -> io::Result<()> {
        if !self.crashed && point == self.point {
            if self.skip == 0 {
                self.crashed = true;
            } else {
                self.skip -= 1;
            }
        }
        if self.crashed {
            return Err(io::Error::other(format!(
                "injected crash before {}",
                self.point.name()
            )));
        }
        Ok(())
    }
}

impl<T: CrashHook + ?Sized> CrashHook for Box<T> {
    fn before(&mut self, point: CrashPoint) -> io::Result<()> {
        (**self).before(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<String> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        for p in CrashPoint::ALL {
            assert_eq!(CrashPoint::from_name(&p.name()), Some(p));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CrashPoint::ALL.len());
    }

    #[test]
    fn crash_at_the_nth_pass_then_always() {
        let mut h = CrashAt::nth(CrashPoint::ChunkWrite, 2);
        assert!(h.before(CrashPoint::ChunkWrite).is_ok());
        assert!(h.before(CrashPoint::ImageSync).is_ok());
        assert!(h.before(CrashPoint::ChunkWrite).is_ok());
        assert!(h.before(CrashPoint::ChunkWrite).is_err());
        assert!(h.crashed());
        assert!(h.before(CrashPoint::ImageSync).is_err(), "dead stays dead");
    }
}
