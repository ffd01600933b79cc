//! The per-datagram physics of one direction of a link, sans-IO: the caller hands in the
//! time a datagram arrives at the link, its length, the link's [`Impairments`] at that
//! moment and an RNG; the [`Link`] says when the datagram comes out at the far end (and
//! whether a duplicate does, and which bit to flip), or why it is dropped.
//!
//! The link is a byte-limited drop-tail buffer in front of a rate limiter (a packet leaves
//! when the previous one has been serialised), then a propagation delay with jitter, then
//! the far end. Jitter does not reorder by default: a packet never overtakes the one before
//! it (as on a real radio bearer, whose jitter comes from scheduling, not from independent
//! paths); reordering is opt-in.

use std::time::{Duration, Instant};

use rand_core::Rng;

/// What the link does to datagrams at one moment, for one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairments {
    /// Rate in bits per second (`None`: infinitely fast; `Some(0)` is an outage, see
    /// [`blackout`](Self::blackout)).
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Each datagram's delay varies uniformly within `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Whether jitter may reorder datagrams (`false`: a datagram never arrives before the
    /// one sent before it, as on a real bearer).
    pub jitter_reorders: bool,
    /// Probability that a datagram is held back by `reorder_delay` (so later ones overtake).
    pub reorder: f64,
    /// Extra delay of a held-back datagram.
    pub reorder_delay: Duration,
    /// Loss process.
    pub loss: GilbertElliott,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that one bit of a datagram is flipped.
    pub corrupt: f64,
    /// Bytes the buffer in front of the rate limit holds; datagrams that do not fit are
    /// dropped (drop-tail). `None`: unbounded.
    pub buffer_bytes: Option<usize>,
    /// Largest datagram the link carries; larger ones are dropped. `None`: no limit.
    pub mtu: Option<usize>,
    /// Everything offered now is lost (radio outage, handover, tunnel).
    pub blackout: bool,
}

impl Default for Impairments {
    fn default() -> Self {
        Self {
            rate_bps: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_reorders: false,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            loss: GilbertElliott::NONE,
            duplicate: 0.0,
            corrupt: 0.0,
            buffer_bytes: None,
            mtu: None,
            blackout: false,
        }
    }
}

impl Impairments {
    /// How long `len` bytes take to serialise at the current rate.
    pub fn serialization(&self, len: usize) -> Duration {
        match self.rate_bps {
            Some(bps) if bps > 0 => {
                Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / bps)
            }
            _ => Duration::ZERO,
        }
    }
}

/// Gilbert–Elliott loss: a two-state Markov chain, stepped once per datagram, with a loss
/// probability in each state. With `loss_bad = 1` and `loss_good = 0` (the Gilbert model)
/// losses come in bursts of mean length `1 / to_good`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state after a datagram.
    pub to_bad: f64,
    /// Probability of moving from the bad to the good state after a datagram.
    pub to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// No loss.
    pub const NONE: Self = Self {
        to_bad: 0.0,
        to_good: 1.0,
        loss_good: 0.0,
        loss_bad: 0.0,
    };

    /// Independent losses with probability `p` (the chain never leaves the good state).
    pub fn bernoulli(p: f64) -> Self {
        Self {
            loss_good: p,
            ..Self::NONE
        }
    }

    /// Bursty losses: `mean` of all datagrams lost, in bursts of `mean_burst` datagrams on
    /// average (the Gilbert model: the bad state loses everything, the good one nothing).
    pub fn bursty(mean: f64, mean_burst: f64) -> Self {
        let mean = mean.clamp(0.0, 0.999);
        let to_good = 1.0 / mean_burst.max(1.0);
        Self {
            // The stationary bad-state share to_bad / (to_bad + to_good) equals `mean`.
            to_bad: mean * to_good / (1.0 - mean),
            to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// The long-run share of datagrams lost.
    pub fn mean_loss(&self) -> f64 {
        let total = self.to_bad + self.to_good;
        let bad = if total > 0.0 {
            self.to_bad / total
        } else {
            0.0
        };
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// Why the link dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Offered during a blackout.
    Blackout,
    /// Larger than the MTU.
    Mtu,
    /// The buffer in front of the rate limit was full.
    Buffer,
    /// Lost on the wire (the loss process).
    Loss,
}

/// One bit to flip in a delivered datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitFlip {
    /// Byte index (below the datagram's length).
    pub byte: usize,
    /// The bit, as a one-bit mask.
    pub mask: u8,
}

impl BitFlip {
    /// Flips the bit in `datagram` (nothing if it is shorter than expected).
    pub fn apply(self, datagram: &mut [u8]) {
        if let Some(b) = datagram.get_mut(self.byte) {
            *b ^= self.mask;
        }
    }
}

/// When (and how) a datagram reaches the far end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When its last bit left the rate limiter.
    pub departs: Instant,
    /// When it arrives.
    pub at: Instant,
    /// When a second copy arrives, if the link duplicates it.
    pub duplicate_at: Option<Instant>,
    /// A bit to flip in it (both copies), if the link corrupts it.
    pub flip: Option<BitFlip>,
}

/// What the link does with one offered datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped, and why.
    Drop(Drop),
    /// Delivered.
    Deliver(Delivery),
}

/// The state of one direction of a link: when its rate limiter is next free, the last
/// arrival (jitter does not reorder past it), and the loss chain's state.
#[derive(Clone, Debug)]
pub struct Link {
    free_at: Instant,
    last_arrival: Instant,
    bad: bool,
}

impl Link {
    /// An idle link at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            free_at: start,
            last_arrival: start,
            bad: false,
        }
    }

    /// When the rate limiter has sent everything queued (in the past when idle).
    pub fn free_at(&self) -> Instant {
        self.free_at
    }

    /// Bytes waiting in the buffer at `now`, at the current rate.
    pub fn backlog_bytes(&self, now: Instant, imp: &Impairments) -> usize {
        let backlog = self.free_at.saturating_duration_since(now);
        imp.rate_bps.map_or(0, |bps| {
            (backlog.as_nanos() * u128::from(bps) / 8_000_000_000) as usize
        })
    }

    /// The link's verdict on a datagram of `len` bytes offered at `now`. Draws from `rng`
    /// only for the impairments that are enabled, in a fixed order (loss, corruption,
    /// jitter, reorder, duplicate), so a run is a pure function of its seed.
    pub fn offer<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        len: usize,
        imp: &Impairments,
        rng: &mut R,
    ) -> Verdict {
        if imp.blackout || imp.rate_bps == Some(0) {
            return Verdict::Drop(Drop::Blackout);
        }
        if imp.mtu.is_some_and(|mtu| len > mtu) {
            return Verdict::Drop(Drop::Mtu);
        }
        if let Some(limit) = imp.buffer_bytes
            && self.backlog_bytes(now, imp) + len > limit
        {
            return Verdict::Drop(Drop::Buffer);
        }
        self.free_at = self.free_at.max(now) + imp.serialization(len);
        let departs = self.free_at;
        if self.lose(&imp.loss, rng) {
            return Verdict::Drop(Drop::Loss);
        }
        let flip = (len > 0 && chance(rng, imp.corrupt)).then(|| BitFlip {
            byte: (rng.next_u64() % len as u64) as usize,
            mask: 1 << (rng.next_u32() % 8),
        });
        let mut at = departs + imp.delay;
        if !imp.jitter.is_zero() {
            let j = imp.jitter.as_nanos() as u64;
            let offset = rng.next_u64() % (2 * j + 1);
            at = if offset >= j {
                at + Duration::from_nanos(offset - j)
            } else {
                (at - Duration::from_nanos(j - offset)).max(departs)
            };
        }
        if !imp.jitter_reorders {
            at = at.max(self.last_arrival);
            self.last_arrival = at;
        }
        if chance(rng, imp.reorder) {
            at += imp.reorder_delay;
        }
        // A microsecond later: the copy arrives right behind the original.
        let duplicate_at = chance(rng, imp.duplicate).then(|| at + Duration::from_micros(1));
        Verdict::Deliver(Delivery {
            departs,
            at,
            duplicate_at,
            flip,
        })
    }

    /// Steps the loss chain: whether this datagram is lost, then the state transition.
    fn lose<R: Rng + ?Sized>(&mut self, ge: &GilbertElliott, rng: &mut R) -> bool {
        let (p_loss, p_move) = if self.bad {
            (ge.loss_bad, ge.to_good)
        } else {
            (ge.loss_good, ge.to_bad)
        };
        let lost = chance(rng, p_loss);
        if chance(rng, p_move) {
            self.bad = !self.bad;
        }
        lost
    }
}

/// True with probability `p`; draws nothing when `p` is zero (so disabled impairments do
/// not shift the random stream of the enabled ones).
fn chance<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    p > 0.0 && (p >= 1.0 || (rng.next_u64() as f64 / u64::MAX as f64) < p)
}
