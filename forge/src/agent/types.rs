//! The agent's vocabulary: what to install, its tuning, its events and outcomes.

use std::sync::Arc;
use std::time::Duration;

use crate::activate::Activated;
use crate::chunk::{ChunkIndex, ChunkNo};
use crate::fetch::ClientConfig;
use crate::fetch::wire::RefuseReason;
use crate::layout::Version;
use crate::state::{Progress, StateEvent};

/// What to install: from the verified TUF target.
#[derive(Debug, Clone)]
pub struct UpdatePlan {
    /// The TUF target name.
    pub target: String,
    /// The version it installs.
    pub version: Version,
    /// The chunk index the signed metadata vouches for.
    pub index: Arc<ChunkIndex>,
}

/// Tuning of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    /// The fetch protocol's tuning.
    pub fetch: ClientConfig,
    /// Make written chunks durable (fdatasync + checkpoint) after this many...
    pub flush_every_chunks: u32,
    /// ...or this long after the first unflushed write, whichever comes first.
    pub flush_interval: Duration,
    /// Chunks re-verified per `poll_work` call during the final verification.
    pub verify_batch: u32,
    /// Recorded in the marker: the time each start of the new version has to report
    /// healthy.
    pub health_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            fetch: ClientConfig::default(),
            flush_every_chunks: 256,
            flush_interval: Duration::from_millis(500),
            verify_batch: 64,
            health_timeout: Duration::from_secs(60),
        }
    }
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent<A> {
    /// A state change, with progress.
    State(StateEvent),
    /// `checkpoint.bin` was rewritten: this many chunks are durable.
    Checkpointed {
        /// Durable chunks.
        durable: u32,
        /// Progress at that moment.
        progress: Progress,
    },
    /// A chunk copy failed verification on arrival and is fetched again.
    ChunkRejected {
        /// The chunk.
        chunk: ChunkNo,
        /// The server it came from.
        server: A,
    },
    /// A server failed repeatedly and is used last.
    ServerDeprioritised {
        /// The server.
        server: A,
    },
    /// A server refused to serve.
    ServerRefused {
        /// The server.
        server: A,
        /// Its reason.
        reason: RefuseReason,
    },
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new version is active (pending the watchdog's verdict).
    Activated(Activated),
    /// The version was already active; nothing was done.
    AlreadyActive {
        /// The version.
        version: Version,
    },
    /// The staged image failed its final verification; the staging was purged.
    Rejected {
        /// The first chunk that failed.
        chunk: ChunkNo,
        /// The version still active.
        current: Option<Version>,
    },
    /// An error stopped the update; the active version is untouched.
    Failed,
}

/// What `poll_work` says to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// More disk work is due: call `poll_work` again.
    Busy,
    /// Waiting for the network or a timer.
    Idle,
    /// The update ended.
    Done(Outcome),
}
