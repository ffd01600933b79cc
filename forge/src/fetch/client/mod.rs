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
//! see the [module rules](super)); read-only state (`stats`, `servers`, `done`); and, in
//! `timers.rs`, failure handling (chunk timers, refusals, the choice of server).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

mod timers;
mod types;

pub use types::{ClientConfig, FetchEvent, FetchStats, ServerStats, VerifiedChunk};

use super::rtt::RttEstimator;
use super::wire::{self, Datagram, Entry, TransferId};
use super::{FragSet, Transmit, frag_count};
use crate::chunk::{ChunkIndex, ChunkNo};
use crate::chunkset::ChunkSet;
use crate::error::{Error, Result};
use crate::image::CHUNK_SIZE;

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
