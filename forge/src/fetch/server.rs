//! The serving side: answers requests from any [`ChunkSource`] in constant memory.
//!
//! Invariant: the server never holds more than `chunk_buffers` chunk buffers and
//! `max_jobs` jobs (one per client, image and chunk), however many requests arrive; a
//! request beyond those bounds is dropped and counted, and the client asks again.
//! Fragments are produced one per [`poll_transmit`](FetchServer::poll_transmit) call, so
//! the caller's pacing (it polls only when its bulk lane has room) is the server's pace.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::wire::{self, Datagram, RefuseReason, TransferId};
use super::{FragSet, Transmit, frag_count};
use crate::chunk::ChunkNo;
use crate::image::{CHUNK_SIZE, ChunkSource};

/// Limits of a [`FetchServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest datagram the link carries (the mesh gives about 1300 bytes).
    pub max_datagram: usize,
    /// Chunk buffers in service (64 KiB each): the server's memory bound.
    pub chunk_buffers: usize,
    /// Jobs queued over all clients.
    pub max_jobs: usize,
    /// Jobs queued for one client, so one client cannot starve the others.
    pub max_jobs_per_peer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_datagram: 1300,
            chunk_buffers: 8,
            max_jobs: 1024,
            max_jobs_per_peer: 256,
        }
    }
}

/// What a server did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Requests parsed.
    pub requests: u64,
    /// Datagrams that did not parse or were not requests.
    pub malformed: u64,
    /// Refusals sent.
    pub refusals: u64,
    /// Request entries dropped because the job queue was full.
    pub jobs_dropped: u64,
    /// Data datagrams sent.
    pub fragments_sent: u64,
    /// Payload bytes in those datagrams.
    pub payload_bytes_sent: u64,
    /// Chunks read from a source.
    pub chunk_reads: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct JobKey<A> {
    peer: A,
    transfer: TransferId,
    chunk: ChunkNo,
}

#[derive(Debug)]
struct Job {
    seq: u32,
    frag_size: usize,
    todo: FragSet,
}

#[derive(Debug)]
struct Slot {
    key: Option<(TransferId, ChunkNo)>,
    buf: Box<[u8]>,
    len: usize,
    pins: usize,
    last_use: u64,
}

/// Serves chunk requests for a set of images, each named by its [`TransferId`].
#[derive(Debug)]
pub struct FetchServer<A, S> {
    cfg: ServerConfig,
    images: BTreeMap<TransferId, S>,
    jobs: BTreeMap<JobKey<A>, Job>,
    queue: VecDeque<JobKey<A>>,
    active: Vec<(JobKey<A>, usize)>,
    next_active: usize,
    slots: Vec<Slot>,
    per_peer: BTreeMap<A, usize>,
    refusals: VecDeque<(A, wire::Refuse)>,
    counters: ServerCounters,
    tick: u64,
}

/// Refusals waiting to be sent; more are dropped (the client times out instead).
const MAX_QUEUED_REFUSALS: usize = 64;

impl<A: Clone + Ord, S: ChunkSource> FetchServer<A, S> {
    /// A server with no image.
    pub fn new(cfg: ServerConfig) -> Self {
        Self {
            cfg,
            images: BTreeMap::new(),
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            active: Vec::new(),
            next_active: 0,
            slots: Vec::new(),
            per_peer: BTreeMap::new(),
            refusals: VecDeque::new(),
            counters: ServerCounters::default(),
            tick: 0,
        }
    }

    /// Serves `source` under `transfer` (the image's `TransferId::from(index.digest())`).
    pub fn add_image(&mut self, transfer: TransferId, source: S) {
        self.images.insert(transfer, source);
    }

    /// Stops serving `transfer`; queued jobs for it are dropped when they come up.
    pub fn remove_image(&mut self, transfer: &TransferId) -> Option<S> {
        self.images.remove(transfer)
    }

    /// Counters so far.
    pub fn counters(&self) -> ServerCounters {
        self.counters
    }

    /// Jobs waiting or in service.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Chunk buffers allocated (never more than `chunk_buffers`).
    pub fn buffers(&self) -> usize {
        self.slots.len()
    }

    /// Takes in one datagram from `from`.
    pub fn handle_datagram(&mut self, _now: Instant, from: A, bytes: &[u8]) {
        let req = match wire::parse(bytes) {
            Ok(Datagram::Request(r)) => r,
            _ => {
                self.counters.malformed += 1;
                return;
            }
        };
        self.counters.requests += 1;
        let Some(source) = self.images.get(&req.transfer) else {
            self.refuse(
                from,
                req.transfer,
                req.seq,
                RefuseReason::UnknownTransfer,
                0,
            );
            return;
        };
        let count = source.chunk_count();
        let frag_size = usize::from(req.frag_size);
        let max_frag = self.cfg.max_datagram.saturating_sub(wire::DATA_HEADER_LEN);
        if frag_size > max_frag {
            let detail = u32::try_from(max_frag).unwrap_or(u32::MAX);
            self.refuse(from, req.transfer, req.seq, RefuseReason::FragSize, detail);
            return;
        }
        let mut out_of_range = false;
        for e in req.entries() {
            let Some(len) = source.chunk_len(e.chunk) else {
                out_of_range = true;
                continue;
            };
            let frags = frag_count(len, frag_size);
            let key = JobKey {
                peer: from.clone(),
                transfer: req.transfer,
                chunk: e.chunk,
            };
            if let Some(job) = self.jobs.get_mut(&key) {
                // A repeated request merges into the queued job: fragments already
                // queued are not sent twice.
                if job.frag_size != frag_size {
                    job.frag_size = frag_size;
                    job.todo = FragSet::default();
                }
                job.todo.add_mask(e.first_frag, e.mask, frags);
                job.seq = req.seq;
                continue;
            }
            let mut todo = FragSet::default();
            todo.add_mask(e.first_frag, e.mask, frags);
            if todo.is_empty() {
                continue;
            }
            let mine = self.per_peer.get(&from).copied().unwrap_or(0);
            if self.jobs.len() >= self.cfg.max_jobs || mine >= self.cfg.max_jobs_per_peer {
                self.counters.jobs_dropped += 1;
                continue;
            }
            *self.per_peer.entry(from.clone()).or_insert(0) += 1;
            self.jobs.insert(
                key.clone(),
                Job {
                    seq: req.seq,
                    frag_size,
                    todo,
                },
            );
            self.queue.push_back(key);
        }
        if out_of_range {
            self.refuse(
                from,
                req.transfer,
                req.seq,
                RefuseReason::ChunkOutOfRange,
                count,
            );
        }
    }

    fn refuse(&mut self, to: A, transfer: TransferId, seq: u32, reason: RefuseReason, detail: u32) {
        if self.refusals.len() < MAX_QUEUED_REFUSALS {
            self.refusals.push_back((
                to,
                wire::Refuse {
                    transfer,
                    seq,
                    reason,
                    detail,
                },
            ));
        }
    }

    /// Writes the next datagram into `buf` (at least `max_datagram` bytes), or returns
    /// `None` when nothing is due. One fragment per call.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit<A>> {
        if buf.len()
            < self
                .cfg
                .max_datagram
                .min(wire::DATA_HEADER_LEN + CHUNK_SIZE)
        {
            return None;
        }
        if let Some((to, r)) = self.refusals.pop_front() {
            self.counters.refusals += 1;
            let len = wire::emit_refuse(buf, r.transfer, r.seq, r.reason, r.detail);
            return Some(Transmit { dst: to, len });
        }
        self.activate();
        // Bounded: each round either sends a fragment or retires an active job.
        for _ in 0..=self.active.len() {
            if self.active.is_empty() {
                return None;
            }
            let at = self.next_active % self.active.len();
            let (key, slot) = self.active[at].clone();
            let Some(job) = self.jobs.get_mut(&key) else {
                self.retire(at, slot);
                continue;
            };
            let Some(frag) = job.todo.first() else {
                self.retire(at, slot);
                continue;
            };
            let s = &self.slots[slot];
            let start = frag * job.frag_size;
            if start >= s.len {
                job.todo.remove(frag);
                continue;
            }
            let end = (start + job.frag_size).min(s.len);
            // `frag` < MAX_FRAGS, so it fits a u16.
            wire::emit_data_header(buf, key.transfer, job.seq, key.chunk, frag as u16);
            let len = wire::DATA_HEADER_LEN + (end - start);
            buf[wire::DATA_HEADER_LEN..len].copy_from_slice(&s.buf[start..end]);
            job.todo.remove(frag);
            self.counters.fragments_sent += 1;
            self.counters.payload_bytes_sent += (end - start) as u64;
            if job.todo.is_empty() {
                self.retire(at, slot);
            } else {
                self.next_active = at + 1;
            }
            return Some(Transmit { dst: key.peer, len });
        }
        None
    }

    /// Moves queued jobs into service while chunk buffers are free.
    fn activate(&mut self) {
        while self.active.len() < self.cfg.chunk_buffers.max(1) {
            let Some(key) = self.queue.pop_front() else {
                return;
            };
            if !self.jobs.contains_key(&key) {
                continue;
            }
            match self.load(key.transfer, key.chunk) {
                Some(slot) => {
                    self.slots[slot].pins += 1;
                    self.active.push((key, slot));
                }
                None => self.drop_job(&key),
            }
        }
    }

    /// A slot holding `(transfer, chunk)`: a loaded one, else a free one filled from the
    /// source. `None` when the image is gone or its source failed (a refusal is queued).
    fn load(&mut self, transfer: TransferId, chunk: ChunkNo) -> Option<usize> {
        self.tick += 1;
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.key == Some((transfer, chunk)))
        {
            self.slots[i].last_use = self.tick;
            return Some(i);
        }
        let source = self.images.get(&transfer)?;
        let free = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.pins == 0)
            .min_by_key(|(_, s)| s.last_use)
            .map(|(i, _)| i);
        let i = match free {
            Some(i) => i,
            None if self.slots.len() < self.cfg.chunk_buffers.max(1) => {
                self.slots.push(Slot {
                    key: None,
                    buf: vec![0u8; CHUNK_SIZE].into_boxed_slice(),
                    len: 0,
                    pins: 0,
                    last_use: 0,
                });
                self.slots.len() - 1
            }
            // Unreachable while active jobs < buffers; refuse rather than panic.
            None => return None,
        };
        let slot = &mut self.slots[i];
        slot.key = None;
        self.counters.chunk_reads += 1;
        match source.read_chunk(chunk, &mut slot.buf) {
            Ok(n) => {
                slot.len = n;
                slot.key = Some((transfer, chunk));
                slot.last_use = self.tick;
                Some(i)
            }
            Err(e) => {
                tracing::warn!(chunk = chunk.0, error = %e, "cannot read chunk to serve it");
                None
            }
        }
    }

    fn retire(&mut self, at: usize, slot: usize) {
        let (key, _) = self.active.swap_remove(at);
        self.slots[slot].pins = self.slots[slot].pins.saturating_sub(1);
        self.drop_job(&key);
    }

    fn drop_job(&mut self, key: &JobKey<A>) {
        if let Some(job) = self.jobs.remove(key)
            && !job.todo.is_empty()
            && self.images.contains_key(&key.transfer)
        {
            self.refuse(
                key.peer.clone(),
                key.transfer,
                job.seq,
                RefuseReason::SourceError,
                key.chunk.0,
            );
        }
        if let Some(n) = self.per_peer.get_mut(&key.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&key.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkIndex;
    use crate::fetch::wire::Entry;
    use crate::image::VirtualImage;

    #[allow(clippy::disallowed_methods)] // a fixed origin; the server ignores time
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_flood_of_requests_stays_within_the_bounds_and_serves_correct_bytes() {
        let img = VirtualImage::new(5, 64 * CHUNK_SIZE as u64).unwrap();
        let transfer = TransferId::from(ChunkIndex::build(&img).unwrap().digest());
        let cfg = ServerConfig {
            chunk_buffers: 3,
            max_jobs: 40,
            max_jobs_per_peer: 16,
            ..ServerConfig::default()
        };
        let mut s = FetchServer::new(cfg);
        s.add_image(transfer, img);
        let mut buf = vec![0u8; 1500];
        let entries: Vec<Entry> = (0..64)
            .map(|c| Entry {
                chunk: ChunkNo(c),
                first_frag: 0,
                mask: u64::MAX,
            })
            .collect();
        for peer in 0..10u32 {
            let n = wire::emit_request(&mut buf, transfer, peer, 1270, &entries[..60]);
            let req = buf[..n].to_vec();
            s.handle_datagram(t0(), peer, &req);
            // The same request again merges: no new job.
            s.handle_datagram(t0(), peer, &req);
        }
        assert_eq!(s.jobs(), 40, "the global bound");
        // 1200 entries arrived: 40 became jobs, 40 repeats merged into them, the rest
        // was dropped.
        assert_eq!(s.counters().jobs_dropped, 2 * 10 * 60 - 40 - 40);
        let mut chunk = vec![0u8; CHUNK_SIZE];
        let mut sent = 0;
        while let Some(t) = s.poll_transmit(t0(), &mut buf) {
            assert!(s.buffers() <= 3);
            let Ok(Datagram::Data(d)) = wire::parse(&buf[..t.len]) else {
                panic!("not data")
            };
            assert_eq!(d.seq, t.dst, "answers echo the request");
            img.read_chunk(d.chunk, &mut chunk).unwrap();
            let at = usize::from(d.frag) * 1270;
            assert_eq!(d.payload, &chunk[at..at + d.payload.len()]);
            sent += 1;
        }
        // 16 jobs for each of the first two peers, 8 for the third: 40 chunks of 52.
        assert_eq!(sent, 40 * 52);
        assert_eq!(s.jobs(), 0);
        assert!(s.counters().chunk_reads >= 40);
    }

    #[test]
    fn refusals_name_the_problem() {
        let img = VirtualImage::new(5, 2 * CHUNK_SIZE as u64).unwrap();
        let transfer = TransferId::from(ChunkIndex::build(&img).unwrap().digest());
        let mut s = FetchServer::new(ServerConfig::default());
        s.add_image(transfer, img);
        let mut buf = vec![0u8; 1500];
        let e = [Entry {
            chunk: ChunkNo(9),
            first_frag: 0,
            mask: 1,
        }];
        let cases = [
            (TransferId([0; 16]), 1270, RefuseReason::UnknownTransfer, 0),
            (transfer, 1400, RefuseReason::FragSize, 1270),
            (transfer, 1270, RefuseReason::ChunkOutOfRange, 2),
        ];
        for (t, frag, reason, detail) in cases {
            let n = wire::emit_request(&mut buf, t, 7, frag, &e);
            let req = buf[..n].to_vec();
            s.handle_datagram(t0(), 1u8, &req);
            let tx = s.poll_transmit(t0(), &mut buf).unwrap();
            assert_eq!(
                wire::parse(&buf[..tx.len]),
                Ok(Datagram::Refuse(wire::Refuse {
                    transfer: t,
                    seq: 7,
                    reason,
                    detail
                }))
            );
        }
        assert!(s.poll_transmit(t0(), &mut buf).is_none());
    }
}
