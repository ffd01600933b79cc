//! Failure handling of the client: chunk timers, refusals, and the choice of server.
//!
//! A server's failures (timeouts without progress, chunks failing verification,
//! refusals) push it back in the order of preference; only a verified chunk clears them.

use std::time::{Duration, Instant};

use super::{FetchClient, FetchEvent, Pending, missing_bytes};
use crate::chunk::ChunkNo;
use crate::fetch::wire::RefuseReason;

impl<A: Clone + Eq> FetchClient<A> {
    pub(super) fn on_refuse(&mut self, sidx: usize, reason: RefuseReason) {
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

    pub(super) fn fail(&mut self, sidx: usize) {
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
    pub(super) fn best_server(&self) -> usize {
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

    pub(super) fn rto(&self, sidx: usize, attempts: u32) -> Duration {
        self.servers[sidx]
            .rtt
            .rto(attempts, self.cfg.min_rto, self.cfg.max_rto)
    }

    /// When chunk `p` times out: `rto` (with backoff) after its last fragment if any came
    /// since its request; else after it was overtaken by a later chunk (its request was
    /// lost); else after the later of its request and the last fragment from its server,
    /// so chunks queued behind others at a busy server do not time out while it answers.
    pub(super) fn deadline(&self, p: &Pending) -> Option<Instant> {
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
}
