//! One daemon per node: `bauxite run` holds an exclusive `flock(2)` on `run.lock` in the
//! state root — or, for a static mesh without `[state_root]`, on `IDENTITY.lock` beside
//! the identity file (so two nodes whose identities share a directory do not collide) —
//! for as long as it runs.
//!
//! Invariant: while a [`RunLock`] is alive no other `bauxite run` on the same state root
//! gets past [`RunLock::acquire`], so two daemons never share one identity (they would take
//! each other's sessions). The kernel drops the lock when the process dies, even on
//! `kill -9`, so a crash never leaves a node locked out; the file itself stays (deleting
//! it would let a third daemon lock a new inode while the second holds the old one).
//!
//! The holder writes its PID into the file after locking, so a refused daemon can name it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name inside the locked directory.
pub const LOCK_FILE: &str = "run.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another daemon holds it.
    #[error(
        "another `bauxite run`{} is already running this node ({path} is locked); two daemons \
         with one identity would take each other's sessions: stop the other one first",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, when it wrote one.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}: {error}; the daemon needs write access to that directory")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error (part of the message, so not repeated as a source).
        error: io::Error,
    },
}

/// An exclusive lock on a node's state; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    // Held for its lock only: closing the descriptor releases it.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks the file at `path` (see [`lock_path`]) without waiting, creating it if
    /// needed, and records this process's PID in it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let path = path.to_path_buf();
        let fail = |error| LockError::Io {
            path: path.clone(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(fail)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(LockError::Held {
                    pid: read_pid(&mut file),
                    path,
                });
            }
            Err(e) => return Err(fail(e.into())),
        }
        file.set_len(0).map_err(fail)?;
        file.rewind().map_err(fail)?;
        writeln!(file, "{}", std::process::id()).map_err(fail)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID a holder wrote, if the file holds one (it is a hint for the message only).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The file `run` locks: `run.lock` in the state root when the config names one, else
/// the identity file's path with `.lock` appended.
pub fn lock_path(state_root: Option<&Path>, identity: &Path) -> PathBuf {
    match state_root {
        Some(root) => root.join(LOCK_FILE),
        None => {
            let mut path = identity.as_os_str().to_owned();
            path.push(".lock");
            PathBuf::from(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        let first = RunLock::acquire(&lock).unwrap();
        assert_eq!(first.path(), lock);
        // flock locks belong to the open file description: a second open in this process
        // conflicts exactly as another process would.
        match RunLock::acquire(&lock) {
            Err(LockError::Held { pid, path }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(path, lock);
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Another node's lock beside it is independent.
        let other = RunLock::acquire(&dir.path().join("other.lock")).unwrap();
        drop((first, other));
        let again = RunLock::acquire(&lock).unwrap();
        drop(again);
    }

    #[test]
    fn the_state_root_is_locked_else_the_identity() {
        let id = Path::new("/etc/bauxite/identity/node.identity");
        assert_eq!(
            lock_path(Some(Path::new("/var/lib/bauxite")), id),
            Path::new("/var/lib/bauxite/run.lock")
        );
        assert_eq!(
            lock_path(None, id),
            Path::new("/etc/bauxite/identity/node.identity.lock")
        );
    }

    #[test]
    fn an_unwritable_directory_is_an_io_error() {
        let e = RunLock::acquire(Path::new("/nonexistent/bauxite-lock-test/run.lock")).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e}");
    }
}
