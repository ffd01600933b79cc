//! The update agent: fetch, staging, checkpoint, verification and activation, tied
//! together as one sans-IO state machine (network and time are inputs; file effects go
//! through [`Staging`] and [`activate`], which crash at named points).
//!
//! Invariant: the agent activates only an image it has read back from disk and verified
//! whole against the signed index; it never requests a chunk that its checkpoint recorded
//! durable; and any failure before the swap leaves `current` untouched.
//!
//! # Driving rules
//!
//! Run [`activate::recover`] first, at start. Then build the
//! agent with [`UpdateAgent::new`] and loop:
//!
//! 1. `while let Some(t) = agent.poll_transmit(now, &mut buf)`: send `buf[..t.len]` to
//!    `t.dst` (on the Bulk lane; poll again when the lane has room).
//! 2. `while let Some(e) = agent.poll_event()`: log or record it.
//! 3. `match agent.poll_work(now)?`: [`Work::Busy`] — disk work remains (verification in
//!    batches), loop again at once; [`Work::Idle`] — wait for a datagram
//!    (`handle_datagram`) or for `poll_timeout()` (`handle_timeout`), then loop;
//!    [`Work::Done`] — drain `poll_event` one last time and stop.
//!
//! Any `Err` leaves the agent failed (a [`UpdateState::Failed`] event says why) and the
//! active version untouched; restart the agent to resume from the checkpoint.

mod rate;
mod types;

pub use types::{AgentConfig, AgentEvent, Outcome, UpdatePlan, Work};

use std::collections::VecDeque;
use std::time::Instant;

use crate::activate;
use crate::checkpoint::UpdateBinding;
use crate::chunk::ChunkNo;
use crate::chunkset::ChunkSet;
use crate::crash::CrashHook;
use crate::error::{Error, Result};
use crate::fetch::{FetchClient, FetchEvent, FetchStats, Transmit};
use crate::image::{CHUNK_SIZE, chunk_len_for};
use crate::layout::{Layout, Version};
use crate::staging::{Resume, Staging};
use crate::state::{Progress, StateEvent, UpdateState};
use rate::RateMeter;

#[derive(Debug)]
enum Phase {
    Fetching,
    Verifying { next: u32 },
    Activating,
    Finished(Outcome),
}

/// Downloads, stages, verifies and activates one update.
pub struct UpdateAgent<A> {
    cfg: AgentConfig,
    layout: Layout,
    plan: UpdatePlan,
    staging: Option<Staging>,
    client: Option<FetchClient<A>>,
    phase: Phase,
    resumed: ChunkSet,
    refetched_bytes: u64,
    events: VecDeque<AgentEvent<A>>,
    unflushed_since: Option<Instant>,
    origin: (Instant, u64),
    rate: RateMeter,
    buf: Vec<u8>,
}

impl<A: std::fmt::Debug> std::fmt::Debug for UpdateAgent<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateAgent")
            .field("version", &self.plan.version)
            .field("phase", &self.phase)
            .field("staging", &self.staging)
            .finish_non_exhaustive()
    }
}

impl<A: Clone + Eq> UpdateAgent<A> {
    /// Opens (or resumes) the staging of `plan` under `layout` and prepares to fetch it
    /// from `servers`. `now` and `now_unix_ms` are the same instant on the monotonic and
    /// the wall clock (the wall clock is only recorded in the rollback marker).
    pub fn new(
        layout: &Layout,
        plan: UpdatePlan,
        servers: Vec<A>,
        cfg: AgentConfig,
        hook: Box<dyn CrashHook>,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<Self> {
        let count = plan.index.chunk_count();
        let mut me = Self {
            cfg,
            layout: layout.clone(),
            staging: None,
            client: None,
            phase: Phase::Fetching,
            resumed: ChunkSet::new(count),
            refetched_bytes: 0,
            events: VecDeque::new(),
            unflushed_since: None,
            origin: (now, now_unix_ms),
            rate: RateMeter::default(),
            buf: Vec::new(),
            plan,
        };
        let version = me.plan.version.clone();
        if activate::is_blocked(layout, &version)? {
            return Err(Error::VersionBlocked {
                version: version.to_string(),
            });
        }
        if layout.current()?.as_ref() == Some(&version) {
            me.resumed = ChunkSet::full(count);
            me.phase = Phase::Finished(Outcome::AlreadyActive { version });
            return Ok(me);
        }
        let binding = UpdateBinding {
            target: me.plan.target.clone(),
            version: version.clone(),
            image_len: me.plan.index.image_len(),
            chunk_count: count,
            index_digest: me.plan.index.digest(),
        };
        let (staging, resume) = match Staging::open(layout, binding, hook) {
            Ok(x) => x,
            Err(e) => return Err(me.fail(e)),
        };
        match &resume {
            Resume::Loaded { durable } => {
                me.resumed = durable.clone();
                // A checkpoint of an unfinished staging means the last run was cut short.
                if !durable.is_full() {
                    me.state(UpdateState::PowerFailureCut, |e| e);
                }
                let n = durable.count();
                me.state(UpdateState::CheckpointLoaded, |e| {
                    e.detail(format!("{n} chunks verified and durable"))
                });
            }
            Resume::Discarded { reason } => {
                let why = reason.to_string();
                me.state(UpdateState::CheckpointDiscarded, |e| e.detail(why));
            }
            Resume::Fresh => {}
        }
        let client = FetchClient::new(
            me.plan.index.clone(),
            servers,
            me.resumed.clone(),
            cfg.fetch,
        );
        me.client = Some(match client {
            Ok(c) => c,
            Err(e) => return Err(me.fail(e)),
        });
        me.staging = Some(staging);
        me.state(UpdateState::PendingValidation, |e| e);
        if me.resumed.is_full() {
            me.phase = Phase::Verifying { next: 0 };
        }
        Ok(me)
    }

    /// The version being installed.
    pub fn version(&self) -> &Version {
        &self.plan.version
    }

    /// The fetch counters of this run.
    pub fn fetch_stats(&self) -> FetchStats {
        self.client
            .as_ref()
            .map(FetchClient::stats)
            .unwrap_or_default()
    }

    /// Chunks the checkpoint held when this run started.
    pub fn resumed(&self) -> &ChunkSet {
        &self.resumed
    }

    /// Where the update stands.
    pub fn progress(&self) -> Progress {
        let index = &self.plan.index;
        let count = index.chunk_count();
        let (done_set, st) = match &self.client {
            Some(c) => (c.done(), c.stats()),
            None => (&self.resumed, FetchStats::default()),
        };
        let done = done_set.count();
        let mut bytes_done = u64::from(done) * CHUNK_SIZE as u64;
        if let Some(last) = count.checked_sub(1).map(ChunkNo)
            && done_set.contains(last)
        {
            let short = CHUNK_SIZE - chunk_len_for(index.image_len(), last).unwrap_or(0);
            bytes_done -= short as u64;
        }
        Progress {
            chunks_done: done,
            chunks_durable: self.staging.as_ref().map_or(done, |s| s.durable().count()),
            chunk_count: count,
            bytes_done,
            image_len: index.image_len(),
            bytes_transferred: st.bytes_received,
            bytes_retransferred: st.bytes_retransferred(),
            verified_bytes_refetched: self.refetched_bytes,
            rate_bytes_per_sec: self.rate.rate(),
        }
    }

    fn state(&mut self, state: UpdateState, f: impl FnOnce(StateEvent) -> StateEvent) {
        let ev = f(StateEvent::new(
            state,
            self.plan.version.as_str(),
            self.progress(),
        ));
        tracing::info!(state = %state, version = %ev.version, chunk = ?ev.chunk, detail = ?ev.detail, "update state");
        self.events.push_back(AgentEvent::State(ev));
    }

    fn fail(&mut self, e: Error) -> Error {
        let why = e.to_string();
        self.state(UpdateState::Failed, |ev| ev.detail(why));
        self.phase = Phase::Finished(Outcome::Failed);
        e
    }

    /// Takes in one datagram from `from`; verified chunks are written to the staging.
    pub fn handle_datagram(&mut self, now: Instant, from: &A, bytes: &[u8]) -> Result<()> {
        if !matches!(self.phase, Phase::Fetching) {
            return Ok(());
        }
        if let Some(c) = self.client.as_mut() {
            c.handle_datagram(now, from, bytes);
        }
        self.drain(now).map_err(|e| self.fail(e))
    }

    /// Lets expired fetch timers fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Phase::Fetching, Some(c)) = (&self.phase, self.client.as_mut()) {
            c.handle_timeout(now);
        }
    }

    /// The next request to send, if any.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit<A>> {
        match (&self.phase, self.client.as_mut()) {
            (Phase::Fetching, Some(c)) => c.poll_transmit(now, buf),
            _ => None,
        }
    }

    /// The earliest instant at which `handle_timeout` or `poll_work` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !matches!(self.phase, Phase::Fetching) {
            return None;
        }
        let fetch = self.client.as_ref().and_then(FetchClient::poll_timeout);
        let flush = self.unflushed_since.map(|t| t + self.cfg.flush_interval);
        match (fetch, flush) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<AgentEvent<A>> {
        self.events.pop_front()
    }

    fn drain(&mut self, now: Instant) -> Result<()> {
        let (Some(client), Some(staging)) = (self.client.as_mut(), self.staging.as_mut()) else {
            return Ok(());
        };
        while let Some(ev) = client.poll_event() {
            match ev {
                FetchEvent::Chunk(c) => {
                    if self.resumed.contains(c.no) {
                        self.refetched_bytes += c.bytes.len() as u64;
                    }
                    staging.write_chunk(c.no, &c.bytes)?;
                    self.unflushed_since.get_or_insert(now);
                    client.recycle(c);
                }
                FetchEvent::ChunkRejected { chunk, server } => {
                    self.events
                        .push_back(AgentEvent::ChunkRejected { chunk, server });
                }
                FetchEvent::ServerDeprioritised { server } => {
                    self.events
                        .push_back(AgentEvent::ServerDeprioritised { server });
                }
                FetchEvent::ServerRefused { server, reason } => {
                    self.events
                        .push_back(AgentEvent::ServerRefused { server, reason });
                }
                FetchEvent::Finished => {}
            }
        }
        self.rate.record(now, client.stats().bytes_received);
        Ok(())
    }

    /// Does the disk work that is due: durability batches while fetching, then the
    /// final verification in batches, then the activation.
    pub fn poll_work(&mut self, now: Instant) -> Result<Work> {
        self.work(now).map_err(|e| self.fail(e))
    }

    fn work(&mut self, now: Instant) -> Result<Work> {
        match self.phase {
            Phase::Finished(ref o) => Ok(Work::Done(o.clone())),
            Phase::Fetching => {
                self.drain(now)?;
                let complete = self.client.as_ref().is_some_and(FetchClient::is_complete);
                let unflushed = self.staging.as_ref().map_or(0, Staging::unflushed);
                let due = unflushed >= self.cfg.flush_every_chunks.max(1)
                    || (unflushed > 0 && complete)
                    || self
                        .unflushed_since
                        .is_some_and(|t| now >= t + self.cfg.flush_interval);
                // A batch starts syncing in the background; the one before it settles
                // first (it had a whole batch's download to finish in).
                if due && let Some(s) = self.staging.as_mut() {
                    let settled = s.begin_flush()?;
                    self.unflushed_since = None;
                    self.checkpointed(settled);
                }
                if complete && self.staging.as_ref().is_some_and(|s| s.unflushed() == 0) {
                    let settled = self.staging.as_mut().map(Staging::settle).transpose()?;
                    self.checkpointed(settled.flatten());
                    self.phase = Phase::Verifying { next: 0 };
                    return Ok(Work::Busy);
                }
                Ok(if due { Work::Busy } else { Work::Idle })
            }
            Phase::Verifying { next } => self.verify(next),
            Phase::Activating => self.activate(now),
        }
    }

    /// Reports a durability batch that settled with `durable` chunks durable.
    fn checkpointed(&mut self, durable: Option<u32>) {
        if let Some(durable) = durable {
            let progress = self.progress();
            self.events
                .push_back(AgentEvent::Checkpointed { durable, progress });
        }
    }

    fn verify(&mut self, next: u32) -> Result<Work> {
        let Some(staging) = self.staging.as_mut() else {
            return Ok(Work::Done(Outcome::Failed));
        };
        let index = self.plan.index.clone();
        let batch = self.cfg.verify_batch.max(1);
        // One read per thread for the whole batch (`verify_batch` x 64 KiB, 4 MiB by
        // default), only while verifying.
        self.buf.resize(CHUNK_SIZE * batch as usize, 0);
        if let Some(bad) = staging.verify_range(&index, next, batch, &mut self.buf)? {
            self.state(UpdateState::InvalidSignatureRejected, |e| {
                e.chunk(bad)
                    .detail("the staged image no longer matches the signed chunk index")
            });
            if let Some(s) = self.staging.take() {
                s.purge()?;
            }
            let current = self.layout.current()?;
            let stays = current
                .as_ref()
                .map_or_else(|| "no version".to_owned(), ToString::to_string);
            self.state(UpdateState::AtomicRolledBack, |e| {
                e.detail(format!("staging purged; current still points to {stays}"))
            });
            let o = Outcome::Rejected {
                chunk: bad,
                current,
            };
            self.phase = Phase::Finished(o.clone());
            return Ok(Work::Done(o));
        }
        let next = next.saturating_add(batch);
        if next < index.chunk_count() {
            self.phase = Phase::Verifying { next };
            return Ok(Work::Busy);
        }
        self.buf = Vec::new();
        self.state(UpdateState::Valid, |e| e);
        self.phase = Phase::Activating;
        Ok(Work::Busy)
    }

    fn activate(&mut self, now: Instant) -> Result<Work> {
        let Some(mut staging) = self.staging.take() else {
            return Ok(Work::Done(Outcome::Failed));
        };
        let Some(stage) = staging.verified(&self.plan.index) else {
            // Unreachable after a full pass; verify again rather than trust it.
            self.staging = Some(staging);
            self.phase = Phase::Verifying { next: 0 };
            return Ok(Work::Busy);
        };
        let wall = self.origin.1.saturating_add(
            u64::try_from(now.saturating_duration_since(self.origin.0).as_millis())
                .unwrap_or(u64::MAX),
        );
        let done = activate::activate(
            &self.layout,
            stage,
            wall,
            self.cfg.health_timeout,
            staging.hook(),
        )?;
        let prev = done
            .previous
            .as_ref()
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        self.state(UpdateState::Activated, |e| {
            e.detail(format!(
                "current -> versions/{}; backup {prev}",
                done.version
            ))
        });
        let o = Outcome::Activated(done);
        self.phase = Phase::Finished(o.clone());
        Ok(Work::Done(o))
    }
}
