//! The MCAP recording of one update, shared by the agent (states, progress) and the
//! control-loop probe (round trips): forge's [`Recorder`] behind a lock.
//!
//! Invariant: a recording is a file of its own per update attempt
//! (`update-<version>-<unix ms>.mcap` in the recording directory), so a daemon killed
//! mid-write leaves at most that one file without its summary, never a corrupt earlier
//! one, and that file is readable up to its last flush (every state change and once a
//! second); a write error stops the recording (logged once) and never the update.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bauxite_forge::state::{Progress, StateEvent};
use bauxite_forge::telemetry::Recorder;

#[derive(Debug, Default)]
struct Inner {
    recorder: Option<Recorder>,
    path: Option<PathBuf>,
}

/// A handle on the current recording (cheap to clone).
#[derive(Debug, Clone, Default)]
pub(super) struct Telemetry(Arc<Mutex<Inner>>);

impl Telemetry {
    fn with(&self, what: &str, f: impl FnOnce(&mut Recorder) -> bauxite_forge::Result<()>) {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = inner.recorder.as_mut()
            && let Err(error) = f(r)
        {
            tracing::warn!(%error, what, "update recording failed; recording stopped");
            inner.recorder = None;
        }
    }

    /// Starts a new recording in `dir` (created if needed) for `version`, finishing the
    /// previous one; returns its path.
    pub(super) fn start(&self, dir: &Path, version: &str, unix_ms: u64) -> Option<PathBuf> {
        self.finish();
        if let Err(error) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the recording directory; not recording");
            return None;
        }
        let path = dir.join(format!("update-{version}-{unix_ms}.mcap"));
        match Recorder::create(&path) {
            Ok(r) => {
                let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                inner.recorder = Some(r);
                inner.path = Some(path.clone());
                tracing::info!(path = %path.display(), "update recording");
                Some(path)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot create the update recording; not recording");
                None
            }
        }
    }

    /// Whether a recording is open.
    pub(super) fn is_open(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recorder
            .is_some()
    }

    /// Records a state change at `unix_nanos`.
    pub(super) fn state(&self, unix_nanos: u64, ev: &StateEvent) {
        self.with("state", |r| r.record_state(unix_nanos, ev));
    }

    /// Records a progress sample at `unix_nanos`.
    pub(super) fn progress(&self, unix_nanos: u64, p: &Progress) {
        self.with("progress", |r| r.record_progress(unix_nanos, p));
    }

    /// Records one value of a series at `unix_nanos`.
    pub(super) fn series(&self, unix_nanos: u64, topic: &str, value: f64) {
        self.with("series", |r| r.record_series(unix_nanos, topic, value));
    }

    /// Makes everything recorded so far readable even if the process is killed next.
    pub(super) fn flush(&self) {
        self.with("flush", Recorder::flush);
    }

    /// Writes the summary and closes the file; returns its path.
    pub(super) fn finish(&self) -> Option<PathBuf> {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let path = inner.path.clone();
        if let Some(r) = inner.recorder.take() {
            match r.finish() {
                Ok(()) => {
                    if let Some(p) = &path {
                        tracing::info!(path = %p.display(), "update recording finished");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot finish the update recording"),
            }
        }
        path
    }
}
