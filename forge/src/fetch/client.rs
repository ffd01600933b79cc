//! The fetching side: a window of chunks in flight, fragment tracking, RTT-derived
//! timeouts, verification before anything is yielded, several servers.
//!
//! Invariant: a chunk leaves the client (as [`FetchEvent::Chunk`]) only when its bytes
//! match the index; a chunk copy that fails is dropped whole, counted in
//! [`FetchStats::bytes_rejected`], and requested again in full. Byte accounting is exact:
//! `bytes_received == bytes_verified + bytes_duplicate + bytes_rejected + bytes_partial`.
//!
//! Methods by group: construction ([`FetchClient::new`]); the driving calls
//! (`handle_datagram`, `handle_timeout`, `poll_transmit`, `poll_timeout`, `poll_event`,
//! see the [module rules](super)); and read-only state (`stats`, `servers`, `done`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rtt::RttEstimator;
use super::wire::{self, Datagram, Entry, RefuseReason, TransferId};
use super::{FragSet, Transmit, frag_count};
use crate::chunk::{ChunkIndex, ChunkNo};
use crate::chunkset::ChunkSet;
use crate::error::{Error, Result};
use crate::image::CHUNK_SIZE;

/// Tuning of a [`FetchClient`].
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

#[derive(Debug)]
struct Server<A> {
    rtt: RttEstimator,
    /// When a fragment last arrived from it.
    last_heard: Option<Instant>,
    stats: ServerStats<A>,
}

/// A chunk in flight. Its timer depends on what it has seen since its last request:
/// see `FetchClient::deadline`.
#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    len: usize,
    frags: usize,
    have: FragSet,
    server: usize,
    /// `None` while a request for the missing fragments is due.
    requested_at: Option<Instant>,
    /// Position of the chunk's last request entry among all entries sent.
    order: u64,
    /// When the last fragment arrived since the last request.
    last_arrival: Option<Instant>,
    /// When a chunk requested later from the same server completed while this one had
    /// nothing: the server serves jobs in order, so this request was lost.
    overtaken_at: Option<Instant>,
    attempts: u32,
}

impl Pending {
    fn needs_request(&self) -> bool {
        self.requested_at.is_none()
    }

    fn ask_again(&mut self) {
        self.requested_at = None;
        self.last_arrival = None;
        self.overtaken_at = None;
    }
}

#[derive(Debug, Clone, Copy)]
struct SentRequest {
    seq: u32,
    at: Instant,
    server: usize,
    sampled: bool,
}

/// Requests remembered for RTT samples; older answers give no sample.
const SENT_MEMORY: usize = 256;

/// Fetches the chunks of one image from one or more servers.
#[derive(Debug)]
pub struct FetchClient<A> {
    cfg: ClientConfig,
    index: Arc<ChunkIndex>,
    transfer: TransferId,
    frag_size: usize,
    done: ChunkSet,
    cursor: u32,
    pending: BTreeMap<ChunkNo, Pending>,
    ready: usize,
    events: VecDeque<FetchEvent<A>>,
    servers: Vec<Server<A>>,
    sent: VecDeque<SentRequest>,
    next_seq: u32,
    next_order: u64,
    stats: FetchStats,
    spare: Vec<Vec<u8>>,
    finished: bool,
    entries: Vec<Entry>,
}

impl<A: Clone + Eq> FetchClient<A> {
    /// A client for `index`, asking `servers` (in preference order), resuming with the
    /// chunks in `done` already held (they are never requested).
    pub fn new(
        index: Arc<ChunkIndex>,
        servers: Vec<A>,
        done: ChunkSet,
        cfg: ClientConfig,
    ) -> Result<Self> {
        if servers.is_empty() {
            return Err(Error::NoServers);
        }
        if done.len() != index.chunk_count() {
            return Err(Error::ResumeSetMismatch {
                got: done.len(),
                expected: index.chunk_count(),
            });
        }
        let frag_size = cfg
            .max_datagram
            .saturating_sub(wire::DATA_HEADER_LEN)
            .min(CHUNK_SIZE);
        if frag_size < wire::MIN_FRAG_SIZE || u16::try_from(frag_size).is_err() {
            return Err(Error::DatagramTooSmall {
                max_datagram: cfg.max_datagram,
                min: wire::DATA_HEADER_LEN + wire::MIN_FRAG_SIZE,
            });
        }
        let servers = servers
            .into_iter()
            .map(|addr| Server {
                rtt: RttEstimator::new(cfg.initial_rtt),
                last_heard: None,
                stats: ServerStats {
                    addr,
                    srtt: cfg.initial_rtt,
                    failures: 0,
                    chunks_verified: 0,
                    chunks_rejected: 0,
                    timeouts: 0,
                    bytes_received: 0,
                },
            })
            .collect();
        Ok(Self {
            transfer: TransferId::from(index.digest()),
            cfg: ClientConfig {
                window: cfg.window.max(1),
                ..cfg
            },
            index,
            frag_size,
            done,
            cursor: 0,
            pending: BTreeMap::new(),
            ready: 0,
            events: VecDeque::new(),
            servers,
            sent: VecDeque::new(),
            next_seq: 0,
            next_order: 0,
            stats: FetchStats::default(),
            spare: Vec::new(),
            finished: false,
            entries: Vec::new(),
        })
    }

    /// The transfer id every datagram of this image carries.
    pub fn transfer(&self) -> TransferId {
        self.transfer
    }

    /// Counters so far.
    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    /// Per-server state, in the order given to [`new`](Self::new).
    pub fn servers(&self) -> impl Iterator<Item = &ServerStats<A>> {
        self.servers.iter().map(|s| &s.stats)
    }

    /// Chunks verified (including those given at resume).
    pub fn done(&self) -> &ChunkSet {
        &self.done
    }

    /// Chunks requested and not yet complete.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether every chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.done.is_full()
    }

    /// Gives a chunk's buffer back for reuse.
    pub fn recycle(&mut self, chunk: VerifiedChunk) {
        if self.spare.len() < self.cfg.window {
            self.spare.push(chunk.bytes);
        }
    }

    /// Takes in one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: &A, bytes: &[u8]) {
        let Some(sidx) = self.servers.iter().position(|s| s.stats.addr == *from) else {
            self.stats.foreign += 1;
            return;
        };
        match wire::parse(bytes) {
            Err(_) => self.stats.malformed += 1,
            Ok(Datagram::Request(_)) => self.stats.foreign += 1,
            Ok(Datagram::Data(d)) if d.transfer == self.transfer => {
                self.on_data(now, sidx, d.seq, d.chunk, d.frag, d.payload);
            }
            Ok(Datagram::Refuse(r)) if r.transfer == self.transfer => {
                self.on_refuse(sidx, r.reason);
            }
            Ok(_) => self.stats.foreign += 1,
        }
    }

    fn on_data(
        &mut self,
        now: Instant,
        sidx: usize,
        seq: u32,
        chunk: ChunkNo,
        frag: u16,
        payload: &[u8],
    ) {
        let Some(len) = self.index.chunk_len(chunk) else {
            self.stats.malformed += 1;
            return;
        };
        let frag = usize::from(frag);
        let start = frag * self.frag_size;
        if start >= len || payload.len() != self.frag_size.min(len - start) {
            self.stats.malformed += 1;
            return;
        }
        if let Some(req) = self.sent.iter_mut().rev().find(|r| r.seq == seq) {
            // One sample per request: its first answer. Later fragments of the same
            // request queued behind it at the server and would inflate the estimate.
            if !req.sampled && req.server == sidx {
                req.sampled = true;
                let srv = &mut self.servers[sidx];
                srv.rtt.sample(now.saturating_duration_since(req.at));
                srv.stats.srtt = srv.rtt.srtt();
            }
        }
        let n = payload.len() as u64;
        self.stats.fragments_received += 1;
        self.stats.bytes_received += n;
        self.servers[sidx].stats.bytes_received += n;
        self.servers[sidx].last_heard = Some(now);
        let Some(p) = self.pending.get_mut(&chunk) else {
            self.stats.bytes_duplicate += n;
            return;
        };
        if !p.have.insert(frag) {
            self.stats.bytes_duplicate += n;
            return;
        }
        p.buf[start..start + payload.len()].copy_from_slice(payload);
        self.stats.bytes_partial += n;
        // Progress restarts the chunk's timer and its backoff.
        p.attempts = 0;
        if !p.needs_request() {
            p.last_arrival = Some(now);
        }
        if p.have.count() == p.frags {
            self.complete(now, chunk);
        }
    }

    fn complete(&mut self, now: Instant, chunk: ChunkNo) {
        let Some(mut p) = self.pending.remove(&chunk) else {
            return;
        };
        // Chunks asked from the same server before this one and still silent lost
        // their request (the server serves jobs in the order they arrive).
        for q in self.pending.values_mut() {
            if q.server == p.server
                && q.order < p.order
                && !q.needs_request()
                && q.last_arrival.is_none()
                && q.overtaken_at.is_none()
            {
                q.overtaken_at = Some(now);
            }
        }
        let len = p.len as u64;
        self.stats.bytes_partial -= len;
        if self.index.verify(chunk, &p.buf[..p.len]) {
            self.done.insert(chunk);
            self.stats.bytes_verified += len;
            self.stats.chunks_verified += 1;
            // Only a verified chunk clears a failure streak: a server that answers
            // quickly with wrong bytes must not look healthy.
            self.servers[p.server].stats.failures = 0;
            self.servers[p.server].stats.chunks_verified += 1;
            p.buf.truncate(p.len);
            self.ready += 1;
            self.events.push_back(FetchEvent::Chunk(VerifiedChunk {
                no: chunk,
                bytes: p.buf,
            }));
            return;
        }
        tracing::debug!(
            chunk = chunk.0,
            "chunk failed verification; fetching it again"
        );
        self.stats.bytes_rejected += len;
        self.stats.chunks_rejected += 1;
        let server = p.server;
        self.servers[server].stats.chunks_rejected += 1;
        self.events.push_back(FetchEvent::ChunkRejected {
            chunk,
            server: self.servers[server].stats.addr.clone(),
        });
        self.fail(server);
        p.have = FragSet::default();
        p.ask_again();
        p.server = self.best_server();
        self.pending.insert(chunk, p);
    }

    fn on_refuse(&mut self, sidx: usize, reason: RefuseReason) {
        self.stats.refusals += 1;
        let addr = self.servers[sidx].stats.addr.clone();
        self.events.push_back(FetchEvent::ServerRefused {
            server: addr,
            reason,
        });
        // A refusal is a hard failure: the server goes to the back at once.
        let threshold = self.cfg.failure_threshold.max(1);
        let before = self.servers[sidx].stats.failures;
        self.servers[sidx].stats.failures = before.max(threshold - 1);
        self.fail(sidx);
        let chunks: Vec<ChunkNo> = self
            .pending
            .iter()
            .filter(|(_, p)| p.server == sidx)
            .map(|(c, _)| *c)
            .collect();
        for c in chunks {
            let best = self.best_server();
            if let Some(p) = self.pending.get_mut(&c) {
                if !p.needs_request() {
                    self.stats.bytes_rerequested += missing_bytes(p, self.frag_size);
                }
                p.server = best;
                p.ask_again();
            }
        }
    }

    fn fail(&mut self, sidx: usize) {
        let s = &mut self.servers[sidx].stats;
        s.failures = s.failures.saturating_add(1);
        if s.failures == self.cfg.failure_threshold.max(1) {
            tracing::info!(failures = s.failures, "deprioritising a failing server");
            self.events.push_back(FetchEvent::ServerDeprioritised {
                server: s.addr.clone(),
            });
        }
    }

    /// The server for the next request: not failing, then least loaded, then first given.
    fn best_server(&self) -> usize {
        let threshold = self.cfg.failure_threshold.max(1);
        (0..self.servers.len())
            .min_by_key(|&i| {
                let failing = self.servers[i].stats.failures >= threshold;
                let load = self.pending.values().filter(|p| p.server == i).count();
                (
                    failing,
                    self.servers[i].stats.failures.min(threshold),
                    load,
                    i,
                )
            })
            .unwrap_or(0)
    }

    fn rto(&self, sidx: usize, attempts: u32) -> Duration {
        self.servers[sidx]
            .rtt
            .rto(attempts, self.cfg.min_rto, self.cfg.max_rto)
    }

    /// When chunk `p` times out: `rto` (with backoff) after its last fragment if any came
    /// since its request; else after it was overtaken by a later chunk (its request was
    /// lost); else after the later of its request and the last fragment from its server,
    /// so chunks queued behind others at a busy server do not time out while it answers.
    fn deadline(&self, p: &Pending) -> Option<Instant> {
        let requested = p.requested_at?;
        let rto = self.rto(p.server, p.attempts);
        let start = match (p.last_arrival, p.overtaken_at) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => self.servers[p.server]
                .last_heard
                .map_or(requested, |h| h.max(requested)),
        };
        Some(start + rto)
    }

    /// Marks chunks whose timer expired for a new request of their missing fragments,
    /// with exponential backoff; a server failing too often loses its chunks to another.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<ChunkNo> = self
            .pending
            .iter()
            .filter(|(_, p)| self.deadline(p).is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            let Some(p) = self.pending.get_mut(&c) else {
                continue;
            };
            p.ask_again();
            p.attempts = p.attempts.saturating_add(1);
            let server = p.server;
            self.stats.timeouts += 1;
            self.stats.bytes_rerequested += missing_bytes(p, self.frag_size);
            self.servers[server].stats.timeouts += 1;
            self.fail(server);
            if self.servers[server].stats.failures >= self.cfg.failure_threshold.max(1) {
                let best = self.best_server();
                if let Some(p) = self.pending.get_mut(&c) {
                    p.server = best;
                }
            }
        }
    }

    /// The earliest chunk timer, if any chunk awaits an answer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| self.deadline(p)).min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<FetchEvent<A>> {
        if let Some(ev) = self.events.pop_front() {
            if matches!(ev, FetchEvent::Chunk(_)) {
                self.ready -= 1;
            }
            return Some(ev);
        }
        if self.done.is_full() && !self.finished {
            self.finished = true;
            return Some(FetchEvent::Finished);
        }
        None
    }

    /// Writes the next request into `buf` (at least `max_datagram` bytes), or `None`
    /// when nothing needs asking. Opens new chunks while the window has room.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit<A>> {
        self.fill_window();
        let first = self.pending.values().find(|p| p.needs_request())?.server;
        let max = wire::max_entries(buf.len().min(self.cfg.max_datagram));
        if max == 0 {
            return None;
        }
        self.entries.clear();
        let mut asked = Vec::new();
        for (c, p) in &self.pending {
            if !p.needs_request() || p.server != first {
                continue;
            }
            let missing = FragSet::first_n(p.frags).minus(&p.have);
            let blocks = missing.blocks().count();
            if self.entries.len() + blocks > max {
                break;
            }
            for (first_frag, mask) in missing.blocks() {
                self.entries.push(Entry {
                    chunk: *c,
                    first_frag,
                    mask,
                });
            }
            asked.push(*c);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        // `frag_size` was checked to fit a u16 in `new`.
        let len = wire::emit_request(
            buf,
            self.transfer,
            seq,
            self.frag_size as u16,
            &self.entries,
        );
        for c in asked {
            if let Some(p) = self.pending.get_mut(&c) {
                p.requested_at = Some(now);
                p.order = self.next_order;
                self.next_order += 1;
            }
        }
        if self.sent.len() == SENT_MEMORY {
            self.sent.pop_front();
        }
        self.sent.push_back(SentRequest {
            seq,
            at: now,
            server: first,
            sampled: false,
        });
        self.stats.requests_sent += 1;
        Some(Transmit {
            dst: self.servers[first].stats.addr.clone(),
            len,
        })
    }

    fn fill_window(&mut self) {
        while self.pending.len() + self.ready < self.cfg.window {
            let Some(c) = self.done.next_missing(self.cursor) else {
                return;
            };
            self.cursor = c.0.saturating_add(1);
            let Some(len) = self.index.chunk_len(c) else {
                return;
            };
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.resize(CHUNK_SIZE, 0);
            let server = self.best_server();
            self.pending.insert(
                c,
                Pending {
                    buf,
                    len,
                    frags: frag_count(len, self.frag_size),
                    have: FragSet::default(),
                    server,
                    requested_at: None,
                    order: 0,
                    last_arrival: None,
                    overtaken_at: None,
                    attempts: 0,
                },
            );
        }
    }
}

fn missing_bytes(p: &Pending, frag_size: usize) -> u64 {
    let mut n = 0u64;
    for f in 0..p.frags {
        if !p.have.contains(f) {
            let start = f * frag_size;
            n += (frag_size.min(p.len - start)) as u64;
        }
    }
    n
}
