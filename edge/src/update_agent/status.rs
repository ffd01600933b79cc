//! What `bauxite update status` shows: the agent's phase, the last update state, the
//! assignment, progress with rate and ETA, the control-loop probe, the recording, and a
//! short history of states; its Prometheus form for the node's metrics endpoint.
//!
//! Invariant: the JSON form is the contract scripts read (field names are stable); the
//! agent is the only writer, and readers (control socket, metrics scrape) take a copy
//! under a lock held only for the copy, never across an await.

use std::sync::{Mutex, PoisonError};

use bauxite_forge::fetch::FetchStats;
use bauxite_forge::state::{Progress, UpdateState};
use serde::{Deserialize, Serialize};

use super::tuf_grpc::SignedFirmware;
use crate::probe::ProbeStats;

/// States kept in [`UpdateStatus::history`].
pub const HISTORY: usize = 64;

/// What the agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No `[hub]`/`[state_root]`, or `[updates] enabled = false`.
    Disabled,
    /// Nothing to do (nothing assigned, or the assigned version is active).
    Idle,
    /// An update is assigned but waits for `bauxite update apply` (`auto_apply = false`).
    Waiting,
    /// TUF refresh, firmware lookup, chunk index.
    Preparing,
    /// Waiting for the image source to answer over the mesh.
    ConnectingSource,
    /// Chunks arriving.
    Transferring,
    /// Downloaded; stopped before the final verification until `bauxite update apply`.
    Held,
    /// Reading the staged image back and verifying it.
    Verifying,
    /// Swapping `current`.
    Activating,
    /// The new version is active and must report healthy (the watchdog runs).
    AwaitingHealth,
    /// The last attempt failed; retried with backoff.
    Failed,
    /// The staged image failed verification; retried only by `bauxite update apply`.
    Rejected,
}

impl Phase {
    /// Whether an update is under way (something will change without a command).
    pub fn is_moving(self) -> bool {
        matches!(
            self,
            Self::Preparing
                | Self::ConnectingSource
                | Self::Transferring
                | Self::Verifying
                | Self::Activating
        )
    }

    /// Whether a transfer owns the staging (no rollback, no second start).
    pub fn is_busy(self) -> bool {
        self.is_moving() || self == Self::Held
    }
}

/// The assignment from the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentView {
    /// Assignment sequence number.
    pub sequence: u64,
    /// TUF target name (empty: nothing assigned).
    pub target: String,
    /// Version label.
    pub version: String,
    /// Image sources, `ip:port`, best first (empty: the hub's mesh node).
    pub sources: Vec<String>,
    /// The operator asked for a rollback.
    pub rollback: bool,
}

/// Progress with rate and ETA.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProgressView {
    /// Percentage of the image verified.
    pub percent: f64,
    /// Chunks verified (including those kept from a checkpoint).
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
    /// Of those, duplicates and corrupted copies.
    pub bytes_retransferred: u64,
    /// Bytes of chunks a checkpoint had recorded durable and that were fetched again
    /// (zero by design).
    pub verified_bytes_refetched: u64,
    /// Recent rate, bytes per second.
    pub rate_bytes_per_sec: f64,
    /// Seconds left at the recent rate (`None` while the rate is 0).
    pub eta_secs: Option<f64>,
}

impl From<&Progress> for ProgressView {
    fn from(p: &Progress) -> Self {
        let left = p.image_len.saturating_sub(p.bytes_done) as f64;
        Self {
            percent: p.percent(),
            chunks_done: p.chunks_done,
            chunks_durable: p.chunks_durable,
            chunk_count: p.chunk_count,
            bytes_done: p.bytes_done,
            image_len: p.image_len,
            bytes_transferred: p.bytes_transferred,
            bytes_retransferred: p.bytes_retransferred,
            verified_bytes_refetched: p.verified_bytes_refetched,
            rate_bytes_per_sec: p.rate_bytes_per_sec,
            eta_secs: (p.rate_bytes_per_sec > 0.0).then(|| left / p.rate_bytes_per_sec),
        }
    }
}

/// The fetch protocol's counters of this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchView {
    /// Request datagrams sent.
    pub requests_sent: u64,
    /// Chunks verified on arrival.
    pub chunks_verified: u64,
    /// Chunk copies that failed verification on arrival (fetched again).
    pub chunks_rejected: u64,
    /// Chunk timeouts.
    pub timeouts: u64,
    /// Duplicate fragment bytes.
    pub bytes_duplicate: u64,
    /// Bytes of rejected chunk copies.
    pub bytes_rejected: u64,
    /// Bytes requested again after a timeout.
    pub bytes_rerequested: u64,
}

impl From<&FetchStats> for FetchView {
    fn from(s: &FetchStats) -> Self {
        Self {
            requests_sent: s.requests_sent,
            chunks_verified: s.chunks_verified,
            chunks_rejected: s.chunks_rejected,
            timeouts: s.timeouts,
            bytes_duplicate: s.bytes_duplicate,
            bytes_rejected: s.bytes_rejected,
            bytes_rerequested: s.bytes_rerequested,
        }
    }
}

/// The watchdog of a freshly activated version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogView {
    /// The candidate version.
    pub version: String,
    /// Its current start (1-based, counted across reboots).
    pub attempt: u32,
    /// Starts it gets.
    pub max_starts: u32,
    /// Whether `bauxite update heartbeat` is awaited.
    pub heartbeat_required: bool,
    /// Seconds each start has to report healthy.
    pub health_timeout_secs: u64,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The state name (`PENDING_VALIDATION`, ...).
    pub state: String,
    /// The version concerned.
    pub version: String,
    /// Percentage of the image verified at that moment.
    pub percent: f64,
    /// Chunks verified at that moment.
    pub chunks_done: u32,
    /// Chunks in the image.
    pub chunk_count: u32,
    /// Duplicate and corrupted bytes received by this run so far.
    pub bytes_retransferred: u64,
    /// Bytes of verified chunks fetched again.
    pub verified_bytes_refetched: u64,
    /// Why, which chunk, which version stays.
    pub detail: Option<String>,
}

/// The agent's whole status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// What the agent is doing.
    pub phase: Phase,
    /// The last update state name, if any.
    pub state: Option<String>,
    /// Detail of the last state or error.
    pub detail: Option<String>,
    /// Whether the update service of the hub is connected.
    pub hub_connected: bool,
    /// Why it is not (last error).
    pub hub_error: Option<String>,
    /// The current assignment.
    pub assignment: Option<AssignmentView>,
    /// The version `current` points to.
    pub active_version: Option<String>,
    /// The version being installed (or last attempted).
    pub target_version: Option<String>,
    /// What the signed metadata says about it.
    pub signed: Option<SignedFirmware>,
    /// Progress of the transfer (absent before the first one of this run).
    pub progress: Option<ProgressView>,
    /// The fetch protocol's counters.
    pub fetch: Option<FetchView>,
    /// Chunks the checkpoint held when this transfer started (kept, never fetched again).
    pub resumed_chunks: u32,
    /// Echo probes per second during a transfer (`[updates] probe_hz`).
    pub probe_hz: u32,
    /// The control-loop probe's round trips during the last transfer.
    pub probe: Option<ProbeStats>,
    /// The MCAP recording of the current or last update.
    pub recording: Option<String>,
    /// Where recordings go.
    pub recording_dir: String,
    /// The watchdog, while a new version must report healthy.
    pub watchdog: Option<WatchdogView>,
    /// The last [`HISTORY`] state changes, oldest first.
    pub history: Vec<HistoryEntry>,
}

impl UpdateStatus {
    /// The status of an agent that does not run.
    pub fn disabled(why: &str) -> Self {
        Self {
            phase: Phase::Disabled,
            state: None,
            detail: Some(why.to_owned()),
            hub_connected: false,
            hub_error: None,
            assignment: None,
            active_version: None,
            target_version: None,
            signed: None,
            progress: None,
            fetch: None,
            resumed_chunks: 0,
            probe_hz: 0,
            probe: None,
            recording: None,
            recording_dir: String::new(),
            watchdog: None,
            history: Vec::new(),
        }
    }

    /// Appends a state change to the history (dropping the oldest past [`HISTORY`]).
    pub fn push_history(&mut self, entry: HistoryEntry) {
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.state = Some(entry.state.clone());
        self.detail.clone_from(&entry.detail);
        self.history.push(entry);
    }

    /// Whether the history holds `state` (for `version`, if given).
    pub fn saw(&self, state: UpdateState, version: Option<&str>) -> bool {
        self.history
            .iter()
            .any(|h| h.state == state.name() && version.is_none_or(|v| h.version == v))
    }
}

/// The status behind a lock: the agent writes, the control socket and metrics read.
#[derive(Debug)]
pub struct SharedStatus(Mutex<UpdateStatus>);

impl SharedStatus {
    /// Starts from `status`.
    pub fn new(status: UpdateStatus) -> Self {
        Self(Mutex::new(status))
    }

    /// A copy of the status.
    pub fn get(&self) -> UpdateStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the status.
    pub fn update<T>(&self, f: impl FnOnce(&mut UpdateStatus) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_and_prometheus() {
        let p = Progress {
            chunks_done: 5,
            chunks_durable: 4,
            chunk_count: 10,
            bytes_done: 500,
            image_len: 1000,
            bytes_transferred: 600,
            bytes_retransferred: 100,
            verified_bytes_refetched: 0,
            rate_bytes_per_sec: 100.0,
        };
        let v = ProgressView::from(&p);
        assert_eq!(v.eta_secs, Some(5.0));
        assert_eq!(v.percent, 50.0);
        let mut s = UpdateStatus::disabled("x");
        s.phase = Phase::Transferring;
        s.progress = Some(v);
        s.push_history(HistoryEntry {
            unix_ms: 1,
            state: "PENDING_VALIDATION".into(),
            version: "2.0.0".into(),
            percent: 0.0,
            chunks_done: 0,
            chunk_count: 10,
            bytes_retransferred: 0,
            verified_bytes_refetched: 0,
            detail: None,
        });
        assert!(s.saw(UpdateState::PendingValidation, Some("2.0.0")));
        assert!(!s.saw(UpdateState::Valid, None));
        let text = s.render_prometheus("n\"1");
        assert!(
            text.contains("bauxite_update_progress_ratio{node=\"n\\\"1\"} 0.5"),
            "{text}"
        );
        assert!(
            text.contains("phase=\"transferring\",state=\"PENDING_VALIDATION\""),
            "{text}"
        );
        assert!(
            text.contains("bauxite_update_state_code{node=\"n\\\"1\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut s = UpdateStatus::disabled("x");
        for i in 0..(HISTORY as u64 + 5) {
            s.push_history(HistoryEntry {
                unix_ms: i,
                state: "VALID".into(),
                version: "1".into(),
                percent: 0.0,
                chunks_done: 0,
                chunk_count: 0,
                bytes_retransferred: 0,
                verified_bytes_refetched: 0,
                detail: None,
            });
        }
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history[0].unix_ms, 5);
    }
}
