//! What a link does over time: fixed [`Impairments`] plus a schedule of rate and delay
//! steps and blackout intervals, optionally repeating.

use std::time::Duration;

use crate::{Error, GilbertElliott, Impairments};

/// From `at` (since the start, within the period) on, the link runs at `rate_bps` with
/// base delay `delay`, until the next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// When the step starts.
    pub at: Duration,
    /// Rate in bits per second (`None`: unlimited; `Some(0)`: outage).
    pub rate_bps: Option<u64>,
    /// One-way base delay.
    pub delay: Duration,
}

/// A link's behaviour over time, for one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Everything that does not change over time; its rate and delay apply before the
    /// first step (or always, without steps).
    pub base: Impairments,
    /// Rate and delay steps, sorted by `at`.
    pub steps: Vec<Step>,
    /// Outages as (start, length), sorted by start.
    pub blackouts: Vec<(Duration, Duration)>,
    /// The steps and blackouts repeat with this period (`None`: they play once and the
    /// last step stays in force).
    pub period: Option<Duration>,
}

const MBIT: u64 = 1_000_000;

impl Profile {
    /// The same impairments all the time.
    pub fn fixed(base: Impairments) -> Self {
        Self {
            base,
            steps: Vec::new(),
            blackouts: Vec::new(),
            period: None,
        }
    }

    /// A synthetic LTE-like link, the figures of issue 14's acceptance: the rate steps
    /// every second through 30, 20, 10, 5, 15 and 25 Mbit/s (cell load and channel
    /// quality changing the scheduler's grants) with base delay 20–40 ms moving with it
    /// (a loaded cell queues longer), ±5 ms jitter without reordering (the bearer is
    /// in-order: jitter comes from TTI scheduling and HARQ retransmissions), 1 % loss in
    /// bursts of 3 datagrams on average (losses left after HARQ/RLC cluster in fades), and
    /// a 150 kB buffer (40 ms at 30 Mbit/s, 240 ms at 5 Mbit/s: the deep eNodeB queues that
    /// cause LTE's bufferbloat). The schedule repeats every 6 s.
    pub fn lte() -> Self {
        let steps = [(30, 20), (20, 25), (10, 30), (5, 40), (15, 35), (25, 25)];
        Self {
            base: Impairments {
                rate_bps: Some(30 * MBIT),
                delay: Duration::from_millis(20),
                jitter: Duration::from_millis(5),
                loss: GilbertElliott::bursty(0.01, 3.0),
                buffer_bytes: Some(150_000),
                mtu: Some(1500),
                ..Impairments::default()
            },
            steps: stepped(Duration::from_secs(1), &steps),
            blackouts: Vec::new(),
            period: Some(Duration::from_secs(6)),
        }
    }

    /// Issue 14's LTE figures read literally, without [`lte`](Self::lte)'s coupling of
    /// delay to rate: the same rate steps (30, 20, 10, 5, 15, 25 Mbit/s, 1 s each), jitter,
    /// loss and buffer, but the base delay steps on its own clock, every 1.5 s through
    /// 30, 40, 25 and 20 ms. The issue names a delay range and a rate range, not that the
    /// slowest rate comes with the longest delay; in `lte` every rate drop into the
    /// 5 Mbit/s second also lengthens the path, which makes that second both the one that
    /// sets the idle p99 and the one a sender's queue lands in. Here the 5 Mbit/s second
    /// has 25 ms, and the 40 ms delay comes with 20 and 10 Mbit/s.
    pub fn lte_literal() -> Self {
        let mut profile = Self::lte();
        let rate_at = |ms: u64| [30, 20, 10, 5, 15, 25][(ms / 1000) as usize];
        let delay_at = |ms: u64| [30, 40, 25, 20][(ms / 1500) as usize];
        profile.steps = [0, 1000, 1500, 2000, 3000, 4000, 4500, 5000]
            .into_iter()
            .map(|ms| Step {
                at: Duration::from_millis(ms),
                rate_bps: Some(rate_at(ms) * MBIT),
                delay: Duration::from_millis(delay_at(ms)),
            })
            .collect();
        profile
    }

    /// A synthetic busy Wi-Fi link: rate adaptation steps every 500 ms through 60, 40,
    /// 80, 20 and 50 Mbit/s, 2–6 ms base delay, ±3 ms jitter (contention and A-MPDU
    /// aggregation) without reordering, 0.5 % loss in bursts of 2 (what is left after MAC
    /// retries, clustered by interference), a 64 kB buffer, and a 100 ms outage every 10 s
    /// (a background scan or roam between access points).
    pub fn wifi() -> Self {
        let steps = [(60, 2), (40, 3), (80, 2), (20, 6), (50, 3)];
        Self {
            base: Impairments {
                rate_bps: Some(60 * MBIT),
                delay: Duration::from_millis(2),
                jitter: Duration::from_millis(3),
                loss: GilbertElliott::bursty(0.005, 2.0),
                buffer_bytes: Some(64_000),
                mtu: Some(1500),
                ..Impairments::default()
            },
            steps: stepped(Duration::from_millis(500), &steps),
            blackouts: vec![(Duration::from_millis(9_900), Duration::from_millis(100))],
            period: Some(Duration::from_secs(10)),
        }
    }

    /// A preset by name: `lte`, `lte-literal`, `wifi`, or `fixed` (no impairment at all).
    pub fn named(name: &str) -> Result<Self, Error> {
        match name {
            "lte" => Ok(Self::lte()),
            "lte-literal" => Ok(Self::lte_literal()),
            "wifi" => Ok(Self::wifi()),
            "fixed" => Ok(Self::fixed(Impairments::default())),
            other => Err(Error::UnknownProfile(other.to_string())),
        }
    }

    /// The impairments at `elapsed` since the start.
    pub fn at(&self, elapsed: Duration) -> Impairments {
        let t = match self.period {
            Some(p) if !p.is_zero() => {
                Duration::from_nanos((elapsed.as_nanos() % p.as_nanos()) as u64)
            }
            _ => elapsed,
        };
        let mut imp = self.base;
        let i = self.steps.partition_point(|s| s.at <= t);
        if let Some(step) = i.checked_sub(1).and_then(|i| self.steps.get(i)) {
            imp.rate_bps = step.rate_bps;
            imp.delay = step.delay;
        }
        let b = self.blackouts.partition_point(|(start, _)| *start <= t);
        if let Some((start, len)) = b.checked_sub(1).and_then(|b| self.blackouts.get(b)) {
            imp.blackout |= t < *start + *len;
        }
        imp.blackout |= imp.rate_bps == Some(0);
        imp
    }

    /// The bits the link can carry between `from` and `to` (since the start): the rate
    /// integrated over time, nothing during a blackout; `None` if the rate is unlimited
    /// at any moment of it. A flow's share of the link is its bytes against this over
    /// the same interval, wherever in the schedule the interval falls.
    pub fn capacity_bits(&self, from: Duration, to: Duration) -> Option<f64> {
        let mut bits = 0.0;
        let mut t = from;
        while t < to {
            let imp = self.at(t);
            let next = self.next_change(t).min(to);
            if !imp.blackout {
                bits += imp.rate_bps? as f64 * (next - t).as_secs_f64();
            }
            t = next;
        }
        Some(bits)
    }

    /// The first moment after `t` at which a step or a blackout begins or ends (`MAX`
    /// when nothing changes again).
    fn next_change(&self, t: Duration) -> Duration {
        let edges = self.steps.iter().map(|s| s.at).chain(
            self.blackouts
                .iter()
                .flat_map(|&(start, len)| [start, start + len]),
        );
        match self.period.filter(|p| !p.is_zero()) {
            Some(p) => {
                let phase = Duration::from_nanos((t.as_nanos() % p.as_nanos()) as u64);
                let ahead = edges.filter(|&e| e > phase && e < p).min().unwrap_or(p);
                t + (ahead - phase)
            }
            None => edges.filter(|&e| e > t).min().unwrap_or(Duration::MAX),
        }
    }
}

/// Steps of `every` each, from (Mbit/s, delay ms) pairs.
fn stepped(every: Duration, steps: &[(u64, u64)]) -> Vec<Step> {
    steps
        .iter()
        .zip(0u32..)
        .map(|(&(mbit, ms), i)| Step {
            at: every * i,
            rate_bps: Some(mbit * MBIT),
            delay: Duration::from_millis(ms),
        })
        .collect()
}
