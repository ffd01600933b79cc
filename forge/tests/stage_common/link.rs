//! A deterministic datagram link for tests: latency, jitter (which reorders), a rate
//! limit, independent and bursty loss (Gilbert-Elliott), duplication and corruption of
//! data payload bytes, all drawn from a seeded RNG on a virtual clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use bauxite_forge::fetch::wire::{self, Datagram};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Impairments of one direction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkParams {
    pub(crate) latency: Duration,
    /// Extra delay drawn uniformly in `0..jitter`; larger than a datagram's
    /// serialisation time, it reorders.
    pub(crate) jitter: Duration,
    /// Bytes per second.
    pub(crate) rate: u64,
    /// Independent loss probability in the good state.
    pub(crate) loss: f64,
    /// Probability of entering / leaving the bursty (all-lost) state per datagram.
    pub(crate) burst_enter: f64,
    pub(crate) burst_exit: f64,
    pub(crate) duplicate: f64,
    /// Probability that a data datagram's payload gets one byte flipped.
    pub(crate) corrupt: f64,
    /// Serialisation backlog (in time) above which the sender is told there is no room.
    pub(crate) queue: Duration,
}

impl LinkParams {
    pub(crate) fn clean() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            rate: 12_500_000,
            loss: 0.0,
            burst_enter: 0.0,
            burst_exit: 1.0,
            duplicate: 0.0,
            corrupt: 0.0,
            queue: Duration::from_millis(4),
        }
    }

    pub(crate) fn dead() -> Self {
        Self {
            loss: 1.0,
            ..Self::clean()
        }
    }
}

/// What the link did, counted independently of the endpoints.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkStats {
    pub(crate) sent: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) corrupted: u64,
    pub(crate) delivered: u64,
    /// Payload bytes of data datagrams delivered (each copy counts).
    pub(crate) data_payload_delivered: u64,
    /// Payload bytes of the extra copies made by duplication.
    pub(crate) data_payload_duplicated: u64,
}

pub(crate) struct Link {
    p: LinkParams,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    order: u64,
    busy_until: Option<Instant>,
    bursting: bool,
    pub(crate) stats: LinkStats,
}

fn payload_len(bytes: &[u8]) -> Option<usize> {
    match wire::parse(bytes) {
        Ok(Datagram::Data(d)) => Some(d.payload.len()),
        _ => None,
    }
}

impl Link {
    pub(crate) fn new(p: LinkParams, seed: u64) -> Self {
        Self {
            p,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            busy_until: None,
            bursting: false,
            stats: LinkStats::default(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Whether a sender polling only when its lane has room may send now.
    pub(crate) fn has_room(&self, now: Instant) -> bool {
        self.busy_until.is_none_or(|b| b <= now + self.p.queue)
    }

    /// When room frees up again.
    pub(crate) fn room_at(&self) -> Option<Instant> {
        self.busy_until.map(|b| b - self.p.queue)
    }

    pub(crate) fn send(&mut self, now: Instant, bytes: &[u8]) {
        self.stats.sent += 1;
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let tx = Duration::from_nanos(bytes.len() as u64 * 1_000_000_000 / self.p.rate.max(1));
        self.busy_until = Some(start + tx);
        if self.bursting {
            self.bursting = !self.chance(self.p.burst_exit);
        } else {
            self.bursting = self.chance(self.p.burst_enter);
        }
        if self.bursting || self.chance(self.p.loss) {
            self.stats.lost += 1;
            return;
        }
        let mut copy = bytes.to_vec();
        if let Some(n) = payload_len(&copy)
            && self.chance(self.p.corrupt)
        {
            let at = wire::DATA_HEADER_LEN + (self.rng.next_u64() as usize % n);
            copy[at] ^= 1 << (self.rng.next_u32() % 8);
            self.stats.corrupted += 1;
        }
        let copies = if self.chance(self.p.duplicate) { 2 } else { 1 };
        for i in 0..copies {
            let jitter = if self.p.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.rng.next_u64() % self.p.jitter.as_nanos() as u64)
            };
            if i == 1 {
                self.stats.duplicated += 1;
                self.stats.data_payload_duplicated += payload_len(&copy).unwrap_or(0) as u64;
            }
            self.order += 1;
            self.queue.push(Reverse((
                start + tx + self.p.latency + jitter,
                self.order,
                copy.clone(),
            )));
        }
    }

    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_delivery()? > now {
            return None;
        }
        let Reverse((_, _, bytes)) = self.queue.pop()?;
        self.stats.delivered += 1;
        self.stats.data_payload_delivered += payload_len(&bytes).unwrap_or(0) as u64;
        Some(bytes)
    }
}

/// The virtual clock's origin; only offsets from it matter.
#[allow(clippy::disallowed_methods)] // a fixed origin for a virtual clock
pub(crate) fn origin() -> Instant {
    Instant::now()
}
