//! The client's vocabulary: its tuning, the events it reports and its counters.

use std::time::Duration;

use crate::chunk::ChunkNo;
use crate::fetch::wire::RefuseReason;

/// Tuning of a [`FetchClient`](super::FetchClient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Largest datagram the link carries (the mesh gives about 1300 bytes); fragments
    /// are sized to fill it.
    pub max_datagram: usize,
    /// Chunks in flight or waiting to be taken (memory: `window` x 64 KiB).
    pub window: usize,
    /// RTT assumed before the first measurement.
    pub initial_rtt: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Cap of the retransmission timeout after backoff.
    pub max_rto: Duration,
    /// Consecutive failures (timeouts without progress, chunks failing verification,
    /// refusals) after which a server is used only when no better one is left.
    pub failure_threshold: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_datagram: 1300,
            window: 16,
            initial_rtt: Duration::from_millis(100),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(2),
            failure_threshold: 3,
        }
    }
}

/// A chunk whose bytes matched the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChunk {
    /// Which chunk.
    pub no: ChunkNo,
    /// Exactly the chunk's bytes.
    pub bytes: Vec<u8>,
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent<A> {
    /// A verified chunk, to be written at `no.offset()`.
    Chunk(VerifiedChunk),
    /// A complete copy of a chunk failed verification; it was dropped and is re-fetched.
    ChunkRejected {
        /// The chunk.
        chunk: ChunkNo,
        /// The server it was asked from.
        server: A,
    },
    /// A server refused a request; it is deprioritised.
    ServerRefused {
        /// The server.
        server: A,
        /// Its reason.
        reason: RefuseReason,
    },
    /// A server reached the failure threshold and is now used last.
    ServerDeprioritised {
        /// The server.
        server: A,
    },
    /// Every chunk was verified and handed over.
    Finished,
}

/// Counters of one transfer. All byte counts are fragment payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Request datagrams sent.
    pub requests_sent: u64,
    /// Well-formed data fragments of this transfer received from a known server.
    pub fragments_received: u64,
    /// Their payload bytes.
    pub bytes_received: u64,
    /// Bytes of chunks verified and handed over.
    pub bytes_verified: u64,
    /// Bytes of fragments that were already held or belonged to no chunk in flight.
    pub bytes_duplicate: u64,
    /// Bytes of complete chunk copies that failed verification.
    pub bytes_rejected: u64,
    /// Bytes held in chunks still incomplete.
    pub bytes_partial: u64,
    /// Chunks verified.
    pub chunks_verified: u64,
    /// Chunk copies that failed verification.
    pub chunks_rejected: u64,
    /// Chunk timeouts (each re-requests the chunk's missing fragments).
    pub timeouts: u64,
    /// Bytes of fragments requested again after a timeout or a refusal.
    pub bytes_rerequested: u64,
    /// Datagrams that did not parse or had inconsistent fields.
    pub malformed: u64,
    /// Datagrams for another transfer, from an unknown peer, or of a server's kind.
    pub foreign: u64,
    /// Refusals received.
    pub refusals: u64,
}

impl FetchStats {
    /// Bytes that crossed the link more than once or were thrown away: everything
    /// received beyond one copy of each verified or partial byte.
    pub fn bytes_retransferred(&self) -> u64 {
        self.bytes_duplicate + self.bytes_rejected
    }
}

/// Per-server view, in the order the servers were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStats<A> {
    /// The server.
    pub addr: A,
    /// Smoothed round trip (request to first fragment).
    pub srtt: Duration,
    /// Consecutive failures.
    pub failures: u32,
    /// Chunks assigned to it that verified.
    pub chunks_verified: u64,
    /// Chunks assigned to it that failed verification.
    pub chunks_rejected: u64,
    /// Timeouts of chunks assigned to it.
    pub timeouts: u64,
    /// Payload bytes received from it.
    pub bytes_received: u64,
}
