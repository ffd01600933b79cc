//! An adaptive scavenger window for the bulk lane: LEDBAT (RFC 6817) whose delay target
//! follows the path's measured jitter and whose base delay follows the path's drift, so a
//! jittery radio link (LTE, Wi-Fi) is not read as a permanent queue, while on a quiet path
//! the controller is RFC 6817's with the configured target (but for a re-measured base
//! when it sits near its floor, below).
//!
//! Invariant: the window stays within `min_cwnd_packets..=max_cwnd_packets` segments and
//! grows only while the filtered queuing delay is under the current target; the target
//! never leaves `min_target..=max_target`; on a path whose measured jitter keeps the target
//! below twice `min_target` ("quiet") every rule is the RFC's but one (a window that
//! sits near its floor with a small rise re-measures the base, `check_drift`).
//!
//! What differs on a jittery path, and why (docs/congestion.md has the simulator's
//! evidence):
//! - **Target**: `jitter_gain` (2.2; 2.5 beside other windows) times the measured
//!   jitter: the mean distance of the last [`FILTER`] round trips from their
//!   least-squares line over time (the noise WebRTC's trendline filter sees through). A
//!   queue we build grows or drains smoothly and stays on the line; jitter does not. A
//!   fixed sub-millisecond target reads ±5 ms of LTE jitter as a queue and holds bulk at
//!   two packets per round trip.
//! - **Current delay**: the minimum of the newest [`MIN_FILTER`] samples and of any other
//!   of the last [`FILTER`] from the last half round trip, so it sees through jitter
//!   without lagging many round trips on a slow path.
//! - **Samples from small packets**: an ack names the newest packet, so under a 1 kHz
//!   control loop most acks name a control packet. Their round trips show the same queue
//!   but less time on the wire, so they go through a filter of their own (own base), used
//!   when no bulk sample is fresh, and their bytes still move the window.
//! - **Base delay drift** (LEDBAT++'s slowdown, triggered by evidence instead of a clock):
//!   when the window has sat at its floor with the delay above target for `rebase_after`
//!   smoothed round trips, two packets cannot be holding that queue: the path got longer
//!   (LTE: a loaded cell), so the base is re-measured. The RFC's ten-minute minimum would
//!   starve bulk for ten minutes after every such step. On a quiet path too, after
//!   `rebase_after_quiet` round trips near the floor, for a rise under an eighth of the
//!   round trip: a sparse stream's round trip is longer than dense bulk's (idle hosts
//!   wake for each packet), which pinned real daemons to their floor.
//! - **Growth and decrease scale with the window** (LEDBAT++'s slowed start and
//!   multiplicative decrease): below the target the window grows per round trip by one
//!   segment plus `ramp` of itself (doubling until the delay first nears the target);
//!   above it, it sheds the excess queue within about a round trip, at most half the
//!   window. One segment per round trip takes seconds to fill a 30 Mbit/s, 60 ms path,
//!   longer than an LTE cell keeps its rate; the segment (off the envelope) is what
//!   evens out windows that share a bottleneck (growth and decrease in proportion alone
//!   keep any ratio).
//! - **The envelope only for dense bulk**: a window of a few segments samples the path a
//!   few times per round trip, where the minimum filter is right and the envelope would
//!   read another flow's sawtooth as a queue (`dense`).
//!
//! - **The envelope on jittery paths** (`envelope.rs`): in-order jitter pushes the
//!   delays of dense traffic to the top of the jitter range, which the minimum filter
//!   reads as a queue; and a window released on a jittered ack clock must cover the
//!   longest round trip, the excess queueing whenever it is short. Once the target has
//!   held at `envelope_from` floors for `envelope_hold` on a path shorter than
//!   `envelope_max_rtt`, the queue is read from the largest of the last few one-way
//!   delays instead, and bulk is paced at `envelope_pacing` windows per round trip
//!   with the RFC's flight cap loosened to twice the flight (Wi-Fi: 82-87 % of the
//!   capacity where the minimum filter took 16-21 %: docs/congestion.md section 9). A
//!   window banked beyond that while TCP above the tunnel waited broke the control
//!   loop's p99 between real daemons (sections 10 and 11).
//!
//! Loss is not a signal here (the node reports none: acknowledgements are cumulative);
//! a silence of one ack timeout collapses the window as in [`Ledbat`](super::Ledbat).
//! **After such an outage** the window it had is given back at the first ack whose
//! filtered delay reads no queue over target, and for one round trip it is not held to
//! twice the flight (TCP above is still recovering what the outage lost). A Wi-Fi scan
//! or roam stopped the acks, not a queue; regrown from the floor at the delay's pace the
//! window took a second or more after each 100 ms outage (docs/congestion.md section 13).

use std::time::{Duration, Instant};

use super::{CongestionStrategy, Feedback};

pub(super) mod delay;
mod envelope;
pub(super) mod trace;

use delay::DelayFilter;
use envelope::Envelope;
use trace::Trace;

/// Most delay samples the current-delay filter takes the minimum of.
pub const FILTER: usize = 16;
/// Fewest: the RFC's CURRENT_FILTER.
pub const MIN_FILTER: usize = 4;
/// The jitter's range (top to bottom) per unit of measured jitter (the mean distance
/// from the trend): 4 for jitter uniform in ± A (range 2A, mean distance A/2).
const JITTER_RANGE: f64 = 4.0;
/// On a quiet path the floor re-measures the base only for a rise of at most
/// 1/`QUIET_DRIFT_SHARE` of the smoothed round trip.
const QUIET_DRIFT_SHARE: f64 = 8.0;
/// How far behind its schedule the pacer may catch up after a late wake-up: a burst of
/// this much of the pacing rate at most (as `RateBulk`'s pacer).
const PACING_CATCH_UP: Duration = Duration::from_millis(1);

/// Parameters of [`AdaptiveLedbat`]; [`Default`] needs no tuning per link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Smallest delay target: the queue bulk may always build (the node's
    /// `bulk_target`, 250 µs by default).
    pub min_target: Duration,
    /// Largest delay target, however jittery the path.
    pub max_target: Duration,
    /// Target per unit of measured jitter, for a window that sends alone. At 2.5 a lone
    /// window on LTE built queues the control loop paid for when the link's rate fell;
    /// 2.2 keeps the loop within budget for most of bulk's share (docs/congestion.md
    /// section 19).
    pub jitter_gain: f64,
    /// Target per unit of measured jitter while other windows of the node send beside
    /// this one (`set_shared`): at 2.2 two windows behind one bottleneck split it less
    /// evenly than at 2.5 (section 19).
    pub shared_jitter_gain: f64,
    /// Growth per round trip far below the target, as a fraction of the window.
    pub ramp: f64,
    /// Smoothed round trips at the window's floor, above the target, before the base
    /// delay is re-measured.
    pub rebase_after: u32,
    /// The same on a quiet path, where only a rise under an eighth of the round trip is
    /// re-measured (RFC 6817 keeps its base for ten minutes; a transient queue from
    /// other traffic is gone well within these round trips).
    pub rebase_after_quiet: u32,
    /// Segment size in bytes (the mesh MTU).
    pub mss: usize,
    /// Initial window, in segments.
    pub init_cwnd_packets: usize,
    /// Smallest window, in segments.
    pub min_cwnd_packets: usize,
    /// Largest window, in segments (see [`LedbatConfig::max_cwnd_packets`](super::LedbatConfig::max_cwnd_packets)).
    pub max_cwnd_packets: usize,
    /// Longest time without ACKs before in-flight bytes are presumed lost.
    pub cto: Duration,
    /// Shortest such time once round trips are measured.
    pub min_cto: Duration,
    /// Bulk leaves no faster than this many windows per smoothed round trip, spaced
    /// evenly, instead of a window at a time (0: no pacing). Off by default: in the
    /// simulator it cut bulk to 6-8 % on LTE and Wi-Fi (docs/congestion.md).
    pub pacing_gain: f64,
    /// Whether, on a jittery path whose peer stamps its acks, the queue is read from the
    /// upper envelope of bulk's one-way delays (`envelope.rs`) instead of the
    /// current-delay filter, with bulk paced at `envelope_pacing`. On by default; off,
    /// the controller is that of docs/congestion.md sections 2-3b. In-order jitter
    /// pushes the delays of dense traffic to the top of the jitter range, which a
    /// minimum filter reads as a queue that is not there (section 9).
    pub envelope: bool,
    /// The envelope is taken up once the target has stayed at this many `min_target`s
    /// or more for `envelope_hold` (8: 2 ms at the default floor, where `auto` also
    /// calls a path jittery), and left when the path is quiet again (the target under
    /// two). A window's own bursts and start-up on a quiet path raise the target for a
    /// while; peers sharing such a bottleneck, one on the envelope and one not, would
    /// not share it fairly (issue 14's fairness test failed at 15.4 / 1.9 Mbit/s).
    pub envelope_from: f64,
    /// How long the target must stay at `envelope_from` before the envelope is used.
    pub envelope_hold: Duration,
    /// The envelope is used only on paths whose smoothed round trip is below this: 200 ms
    /// by default, terrestrial radio (Wi-Fi, LTE's 40-100 ms) but not satellite, where it
    /// was never measured. Between real daemons on LTE it broke the control loop's p99
    /// (+8 to +41 ms in 6 of 12 cells) until the window was held to twice the flight
    /// there (`envelope_cap`): then within +0.4 ms in 12 of 12, with bulk at 12-45 %
    /// of the link (25 ms, the envelope off on LTE: 9-16 %). docs/congestion.md section
    /// 10, docs/benchmarks.md "A real 1 kHz loop over whole periods".
    pub envelope_max_rtt: Duration,
    /// On the envelope the window is held to this many times the flight (2). An
    /// application-limited sender (TCP above the tunnel, waiting out a loss) otherwise
    /// banks a window and spends it at once when data comes again: between real daemons
    /// the queue broke the loop's p99 on LTE (+8 to +41 ms) and now and then on Wi-Fi
    /// (+3 to +33 ms at 500 kB of buffer); with a TCP-like sender in the simulator, on
    /// Wi-Fi in 3 of 8 seeds. Until session 26 the cap applied only from 25 ms round
    /// trips; three flights broke LTE again (docs/congestion.md sections 10 and 11).
    pub envelope_cap: f64,
    /// Windows per smoothed round trip bulk is paced at while the envelope is in use.
    /// A window released on a jittered ack clock must cover the longest round trip, and
    /// whenever the round trip is short the excess waits in the bottleneck's queue.
    pub envelope_pacing: f64,
    /// Whether the delay filters take the one-way delays of receiver-stamped acks
    /// instead of round trips (which carry the reverse path's jitter too). Off by
    /// default: in the simulator it moved bulk by a few points either way and once broke
    /// the 2 ms p99 promise (docs/congestion.md); and two unsynchronised clocks drift.
    pub one_way_delay: bool,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min_target: Duration::from_micros(250),
            max_target: Duration::from_millis(25),
            jitter_gain: 2.2,
            shared_jitter_gain: 2.5,
            ramp: 0.25,
            rebase_after: 2,
            rebase_after_quiet: 8,
            mss: 1350,
            init_cwnd_packets: 2,
            min_cwnd_packets: 2,
            max_cwnd_packets: 960,
            cto: Duration::from_secs(1),
            min_cto: Duration::from_millis(10),
            pacing_gain: 0.0,
            envelope: true,
            envelope_from: 8.0,
            envelope_hold: Duration::from_millis(200),
            envelope_max_rtt: Duration::from_millis(200),
            envelope_cap: 2.0,
            envelope_pacing: 1.1,
            one_way_delay: false,
        }
    }
}

/// The adaptive bulk-lane sender. See the module docs.
#[derive(Clone, Debug)]
pub struct AdaptiveLedbat {
    config: AdaptiveConfig,
    cwnd: f64,
    flight: usize,
    flight_after_send: usize,
    /// Round trips of acks that named a bulk packet.
    bulk: DelayFilter,
    /// Round trips of acks that named a small (critical, telemetry) packet: a queue below
    /// the node delays them as much, but they spend less time on the wire, so they are
    /// filtered apart and never compared with bulk's.
    small: DelayFilter,
    /// The upper envelope of bulk's one-way delays (receiver-stamped acks).
    envelope: Envelope,
    /// Whether the path's jitter took the window onto the envelope (and it has not been
    /// quiet since).
    enveloped: bool,
    /// Since when the target has been at `envelope_from` or above.
    noisy_since: Option<Instant>,
    smoothed: Option<Duration>,
    last_progress: Option<Instant>,
    /// Since when the window has sat at its floor with the delay above target, and
    /// whether the path was jittery then.
    pinned_since: Option<(Instant, bool)>,
    /// Whether the delay has ever come near the target (ends the slowed start).
    started: bool,
    /// The window an ack timeout took away (an outage stopped the acks, not a queue):
    /// given back at the first ack whose filtered delay reads no queue over target.
    restore: Option<f64>,
    /// Until when a given-back window is not held to twice the flight (it is paced out
    /// over a round trip, and TCP above is still recovering the outage).
    uncapped_until: Option<Instant>,
    /// Whether the filters hold one-way delays (from receive stamps) or round trips;
    /// `None` before the first sample.
    one_way: Option<bool>,
    /// The pacer: when the next bulk packet may leave.
    next_send: Option<Instant>,
    /// A wake-up owed at `next_send`, so the driver polls for bulk again.
    pace_wake: Option<Instant>,
    /// Whether other windows of this node send bulk now (`set_shared`).
    shared: bool,
    /// Counters for the debug-level trace (`trace.rs`).
    trace: Trace,
}

impl Default for AdaptiveLedbat {
    fn default() -> Self {
        Self::new(AdaptiveConfig::default())
    }
}

impl AdaptiveLedbat {
    /// A sender with an initial window of `init_cwnd_packets` segments and no history.
    pub fn new(config: AdaptiveConfig) -> Self {
        let init = config.init_cwnd_packets.max(config.min_cwnd_packets) * config.mss;
        Self {
            config,
            cwnd: init as f64,
            flight: 0,
            flight_after_send: 0,
            bulk: DelayFilter::default(),
            small: DelayFilter::default(),
            envelope: Envelope::default(),
            enveloped: false,
            noisy_since: None,
            smoothed: None,
            last_progress: None,
            pinned_since: None,
            started: false,
            restore: None,
            uncapped_until: None,
            one_way: None,
            next_send: None,
            pace_wake: None,
            shared: false,
            trace: Trace::default(),
        }
    }

    /// Bytes per second the pacer lets out: `pacing_gain` windows per smoothed round
    /// trip (`envelope_pacing` while the envelope is in use); `None` without pacing or
    /// before a round trip was measured.
    pub fn pacing_rate(&self) -> Option<f64> {
        let srtt = self.smoothed?.as_secs_f64();
        let gain = if self.on_envelope() {
            self.config.envelope_pacing
        } else {
            self.config.pacing_gain
        };
        (gain > 0.0 && srtt > 0.0).then(|| gain * self.cwnd / srtt)
    }

    /// Whether the window follows the upper envelope of one-way delays: the target held
    /// at `envelope_from` floors for `envelope_hold`, the path is shorter than
    /// `envelope_max_rtt`, enough stamped bulk acks came back to fill the envelope, and,
    /// while other windows of the node send beside it (`set_shared`), bulk is dense
    /// enough for in-order jitter to push its delays up (`dense`).
    pub fn on_envelope(&self) -> bool {
        self.config.envelope
            && self.enveloped
            && self
                .smoothed
                .is_some_and(|srtt| srtt < self.config.envelope_max_rtt)
            && self.envelope.queuing().is_some()
            && (!self.shared || self.dense())
    }

    /// Whether bulk's packets leave closer together than the jitter's range, the only
    /// case where an in-order bearer pushes their delays to its top (what the envelope
    /// sees through). A window a few segments wide samples the path a few times per
    /// round trip; there the minimum filter is right, and the maximum of its last
    /// [`ENVELOPE`](envelope::ENVELOPE) samples spans round trips and reads the queue
    /// another flow (the node's bulk to another peer) builds and drains as a standing
    /// one: such a window stayed at its floor for good beside a fast peer that took the
    /// uplink (docs/congestion.md section 16). Asked only of windows that send beside
    /// others: a lone window that fell sparse in LTE's long-delay seconds and left the
    /// envelope grew on the minimum filter there, and the control loop paid (section 19).
    fn dense(&self) -> bool {
        let Some(srtt) = self.smoothed else {
            return false;
        };
        let spacing = srtt.as_secs_f64() * self.config.mss as f64 / self.cwnd.max(1.0);
        spacing < JITTER_RANGE * self.jitter().as_secs_f64()
    }

    /// The queue the upper envelope of bulk's one-way delays shows; `None` until enough
    /// stamped bulk acks arrived.
    pub fn envelope_queuing(&self) -> Option<Duration> {
        self.envelope.queuing()
    }

    fn cto_deadline(&self) -> Option<Instant> {
        if self.flight == 0 {
            return None;
        }
        self.last_progress.map(|at| at + self.cto())
    }

    /// The congestion window in bytes.
    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    /// The smallest bulk round trip of the base history (the uncongested path as last
    /// measured).
    pub fn base_delay(&self) -> Option<Duration> {
        self.bulk.base().or(self.small.base())
    }

    /// How long the current-delay filter looks back beyond its last [`MIN_FILTER`]
    /// samples: half a smoothed round trip on a jittery path, nothing on a quiet one.
    fn horizon(&self) -> Duration {
        self.horizon_for(self.jittery())
    }

    /// [`horizon`](Self::horizon), given whether the path is jittery now.
    fn horizon_for(&self, jittery: bool) -> Duration {
        if jittery {
            self.smoothed.unwrap_or_default() / 2
        } else {
            Duration::ZERO
        }
    }

    /// The filters with a sample in the last smoothed round trip (or the newest one).
    fn fresh(&self) -> impl Iterator<Item = &DelayFilter> {
        let newest = [&self.bulk, &self.small]
            .into_iter()
            .filter_map(DelayFilter::newest_at)
            .max();
        let window = self.smoothed.unwrap_or_default();
        [&self.bulk, &self.small].into_iter().filter(move |f| {
            f.newest_at()
                .zip(newest)
                .is_some_and(|(at, newest)| newest.saturating_duration_since(at) <= window)
        })
    }

    /// The queue below the node, from bulk's own round trips while they come, else from
    /// the small packets' (an ack names the newest packet, so under a 1 kHz control loop
    /// most acks name a control packet).
    pub fn queuing_delay(&self) -> Option<Duration> {
        self.queuing_delay_for(self.horizon())
    }

    /// [`queuing_delay`](Self::queuing_delay) with the current-delay filter's `horizon`.
    fn queuing_delay_for(&self, horizon: Duration) -> Option<Duration> {
        if self.on_envelope() {
            return self.envelope.queuing();
        }
        let mut fresh = self.fresh();
        let first = fresh.next()?;
        let unbiased = self.shared && !horizon.is_zero();
        let read = |f: &DelayFilter| {
            if unbiased {
                f.queuing_unbiased(horizon)
            } else {
                f.queuing(horizon)
            }
        };
        match read(first) {
            Some(q) if std::ptr::eq(first, &self.bulk) => Some(q),
            other => fresh.next().and_then(read).or(other),
        }
    }

    /// Whether the path's own noise raised the target well above its floor: a radio
    /// link, where the adaptive parts (longer filter, ramp, multiplicative decrease,
    /// re-measured base) apply. On a quiet path the controller is RFC 6817's (see
    /// `check_drift` for its one exception).
    fn jittery(&self) -> bool {
        self.target() >= self.config.min_target * 2
    }

    /// The measured jitter: the noise around the trend of the fresh sample streams.
    pub fn jitter(&self) -> Duration {
        let jitter = self
            .fresh()
            .map(DelayFilter::jitter)
            .fold(f64::NAN, f64::min);
        Duration::from_secs_f64(if jitter.is_nan() { 0.0 } else { jitter })
    }

    /// The delay target now: the jitter times `jitter_gain` (`shared_jitter_gain` while
    /// other windows send beside this one), within the configured bounds.
    pub fn target(&self) -> Duration {
        let lo = self.config.min_target;
        let hi = self.config.max_target.max(lo);
        let gain = if self.shared {
            self.config.shared_jitter_gain
        } else {
            self.config.jitter_gain
        };
        Duration::from_secs_f64(self.jitter().as_secs_f64() * gain).clamp(lo, hi)
    }

    /// The current ack timeout: three smoothed round trips plus 2 ms, within
    /// `min_cto..=cto`.
    pub fn cto(&self) -> Duration {
        match self.smoothed {
            None => self.config.cto,
            Some(srtt) => (srtt * 3 + Duration::from_millis(2))
                .clamp(self.config.min_cto.min(self.config.cto), self.config.cto),
        }
    }

    fn min_cwnd(&self) -> f64 {
        (self.config.min_cwnd_packets * self.config.mss) as f64
    }

    /// Tracks how long the window has sat at its floor with the delay above target, and
    /// re-measures the base once that lasted `rebase_after` smoothed round trips (on a
    /// quiet path `rebase_after_quiet`, for a small rise only): two packets in flight
    /// cannot hold that queue, so the path got longer.
    /// Returns whether it re-measured (the queuing delay changed).
    fn check_drift(&mut self, now: Instant, queuing: Duration, target: Duration) -> bool {
        let jittery = target >= self.config.min_target * 2;
        let srtt = self.smoothed.unwrap_or(self.config.cto);
        let (held, after) = if jittery {
            // At the floor only: on a slow, short path even four packets are a queue of
            // milliseconds, which a re-measured base would then hide for good.
            let at_floor = self.cwnd <= self.min_cwnd() + 1.0;
            (at_floor && queuing > target, self.config.rebase_after)
        } else {
            // On a quiet path only a small rise, held longer, with the window near its
            // floor (there the target wavers about the rise and the window a segment
            // about the floor). Two packets can hold a queue that is a large share of a
            // short path's round trip (a `tbf` link), never a small share of a long one.
            // What it re-measures: a sparse stream wakes idle hosts at every hop (the
            // node, its peer, a router), a few hundred microseconds of round trip that
            // dense bulk never pays, so a base measured while bulk was dense read as a
            // queue above the 250 µs target once the window fell to its floor and held
            // it there for the base history's ten minutes (between real daemons: two of
            // a hub's peers at 1 Mbit/s on an idle 20 Mbit/s uplink, docs/congestion.md
            // section 17).
            let near_floor = self.cwnd <= 2.0 * self.min_cwnd();
            let small = queuing.as_secs_f64() * QUIET_DRIFT_SHARE <= srtt.as_secs_f64();
            (
                near_floor && queuing > self.config.min_target && small,
                self.config.rebase_after_quiet,
            )
        };
        // A spell held on a quiet path does not count on a jittery one (its shorter wait).
        if !held || self.pinned_since.is_some_and(|(_, was)| was != jittery) {
            self.pinned_since = None;
        }
        if !held {
            return false;
        }
        let (since, _) = *self.pinned_since.get_or_insert((now, jittery));
        if now.saturating_duration_since(since) >= srtt * after {
            let horizon = self.horizon_for(jittery);
            self.bulk.rebase(horizon);
            self.small.rebase(horizon);
            self.envelope.rebase(horizon);
            self.pinned_since = None;
            return true;
        }
        false
    }

    /// Takes one ack's samples: `round_trip` for the smoothed round trip, `delay` (the
    /// one-way delay when the peer stamps its acks, else the round trip) for the filters.
    fn sample(&mut self, now: Instant, round_trip: Duration, delay: Duration, bulk: bool) {
        self.last_progress = Some(now);
        self.smoothed = Some(match self.smoothed {
            None => round_trip,
            Some(srtt) => (srtt * 7 + round_trip) / 8,
        });
        if bulk {
            self.bulk.on_sample(now, delay);
        } else {
            self.small.on_sample(now, delay);
        }
    }

    /// Starts the filters over when the kind of delay they hold changes (a peer that
    /// starts or stops stamping its acks): one-way delays and round trips never mix.
    fn delay_kind(&mut self, one_way: bool) {
        if self.one_way.is_some_and(|was| was != one_way) {
            self.bulk = DelayFilter::default();
            self.small = DelayFilter::default();
        }
        self.one_way = Some(one_way);
    }

    /// The window update for `bytes` settled, against the current delay estimate.
    fn update_window(&mut self, now: Instant, bytes: usize) {
        // Slots that passed while the window, not the pacer, held bulk back are not owed:
        // the pacer's catch-up is for a driver that woke late, not a burst on every ack.
        if self.flight + self.config.mss > self.cwnd as usize {
            self.next_send = self.next_send.map(|at| at.max(now));
        }
        // The target, and so whether the path is jittery, cannot change in this update
        // (only a sample moves the filters' jitter; a re-measure moves their bases): it is
        // computed once. Recomputed at each use (up to seven per ack, each going over the
        // filters again) it was a third to a half of the controller's time per ack on a
        // quiet path (docs/benchmarks.md, "The bulk controller per acknowledgement").
        let target = self.target();
        let jittery = target >= self.config.min_target * 2;
        let horizon = self.horizon_for(jittery);
        let floors = target.as_secs_f64() / self.config.min_target.as_secs_f64();
        if floors >= self.config.envelope_from {
            let since = *self.noisy_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.envelope_hold {
                self.enveloped = true;
            }
        } else {
            self.noisy_since = None;
            if !jittery {
                self.enveloped = false;
            }
        }
        let mut queuing = self.queuing_delay_for(horizon).unwrap_or_default();
        if self.check_drift(now, queuing, target) {
            queuing = self.queuing_delay_for(horizon).unwrap_or_default();
        }
        let queuing = queuing.as_secs_f64();
        let t = target.as_secs_f64().max(f64::MIN_POSITIVE);
        // After an outage: the window before it, at once (see the module docs). A queue
        // read at the first ack forfeits it; one the given-back window builds is taken
        // down by the decrease below, at most half per round trip.
        if let Some(to) = self.restore.take()
            && queuing <= t
            && to > self.cwnd
        {
            self.cwnd = to;
            self.uncapped_until = self.smoothed.map(|srtt| now + srtt);
        }
        let srtt = self
            .smoothed
            .unwrap_or(self.config.cto)
            .as_secs_f64()
            .max(1e-4);
        let acked = bytes as f64;
        if queuing > t / 2.0 {
            self.started = true;
        }
        if queuing <= t {
            let below = (t - queuing) / t;
            let mss = self.config.mss as f64;
            // Per round trip: the RFC's one segment, plus `ramp` of the window (a window
            // of a hundred segments on a 60 ms LTE path must not take a hundred round
            // trips to rebuild); doubling until the delay first comes near the target
            // (LEDBAT++'s slowed start). The segment is what brings windows sharing a
            // bottleneck to even shares: growth and decrease both proportional to the
            // window keep whatever ratio the windows drift to (Chiu and Jain), and a
            // hub's fast peer drifted to 0.26 of its fair share in 20 s with the larger
            // of the two instead of their sum. Not on the envelope: there it cost the
            // control loop on Wi-Fi, +0.6 ms of p99 beside TCP in the simulator
            // (docs/congestion.md section 16).
            let segment = mss / self.cwnd;
            let growth = match (jittery, self.started) {
                (false, _) => segment,
                (true, true) if self.on_envelope() => segment.max(self.config.ramp),
                (true, true) => segment + self.config.ramp,
                (true, false) => segment.max(1.0),
            };
            self.cwnd += below * acked * growth;
        } else if jittery {
            // Remove the excess queue within about a round trip, at most half the window
            // per round trip (LEDBAT++'s multiplicative decrease); the RFC's one segment
            // per round trip takes seconds to drain a large window.
            self.cwnd -= acked * ((queuing - t) / srtt).min(0.5);
        } else {
            let mss = self.config.mss as f64;
            self.cwnd -= ((queuing - t) / t) * acked * mss / self.cwnd;
        }
        // The RFC caps the window at what is in flight plus a segment, so an idle sender
        // cannot bank a window; paced, the flight trails the window by design (and acks
        // bunched by jitter empty it at once), and that cap would pin the window there.
        // On the envelope it is held to twice the flight: an application-limited sender
        // (TCP above the tunnel, waiting out a loss) banked a window and spent it at
        // once, at the pacing rate that window implies, when data came again, and the
        // queue reached the control loop (`envelope_cap`).
        let flight = self.flight.max(self.flight_after_send);
        let uncapped = self.uncapped_until.is_some_and(|until| now < until);
        let max_allowed = if uncapped {
            f64::MAX
        } else if self.on_envelope() {
            self.config.envelope_cap * flight as f64 + self.config.mss as f64
        } else {
            (flight + self.config.mss) as f64
        };
        let max_cwnd = (self.config.max_cwnd_packets * self.config.mss) as f64;
        self.cwnd = self
            .cwnd
            .min(max_allowed)
            .min(max_cwnd)
            .max(self.min_cwnd());
        self.flight = self.flight.saturating_sub(bytes);
        self.trace_line(now, bytes);
    }

    /// Whether other windows of this node send bulk now, and may share a bottleneck
    /// with this one (`AutoBulk` tells it from its group). Then the current-delay filter's
    /// minimum is read as a full filter would read it
    /// ([`queuing_unbiased`](DelayFilter::queuing_unbiased)): the minimum of fewer
    /// samples lies higher in the noise, so behind one jittery bottleneck the narrower
    /// window read more queue, shrank, sampled less, and starved beside the wider one
    /// (docs/congestion.md section 18). Alone, a window keeps the plain minimum: on LTE
    /// the correction took a window collapsed in a long-delay second above the loop's
    /// budget in the simulator.
    pub(in crate::path) fn set_shared(&mut self, shared: bool) {
        self.shared = shared;
    }

    /// Whether other windows of this node send bulk beside this one (`set_shared`).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Whether this controller only follows another's pacing (`auto`'s inactive
    /// half), for its trace lines.
    pub(in crate::path) fn set_shadow(&mut self, shadow: bool) {
        self.trace.set_shadow(shadow);
    }

    /// Writes the window's state at debug level every tenth of a second (`trace.rs`).
    fn trace_line(&mut self, now: Instant, bytes: usize) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let Some(p) = self.trace.due(now, bytes) else {
            return;
        };
        let us = |d: Option<Duration>| d.map_or(-1, |d| d.as_micros() as i64);
        tracing::debug!(
            peer = self.trace.peer(),
            pacing = self.trace.pacing(),
            cwnd = self.cwnd as usize,
            flight = self.flight,
            srtt_us = us(self.smoothed),
            target_us = us(Some(self.target())),
            queuing_us = us(self.queuing_delay()),
            envelope_us = us(self.envelope.queuing()),
            on_envelope = self.on_envelope(),
            pacing_mbit = self.pacing_rate().map_or(0.0, |r| r * 8.0 / 1e6),
            acks = p.acks,
            acked_mbit = p.acked_mbit,
            sends = p.sends,
            sent_mbit = p.sent_mbit,
            late_mean_us = p.late_mean_us,
            late_max_us = p.late_max_us,
            "adaptive window"
        );
    }
}

impl CongestionStrategy for AdaptiveLedbat {
    fn name_for_trace(&mut self, peer: &str) {
        self.trace.name(peer);
    }

    fn on_sent(&mut self, now: Instant, bytes: usize) {
        if self.flight == 0 {
            self.last_progress = Some(now);
        }
        self.flight = self.flight.saturating_add(bytes);
        self.flight_after_send = self.flight;
        let slot = self.next_send.filter(|_| self.pacing_rate().is_some());
        self.trace.on_sent(now, bytes, slot);
        if let Some(rate) = self.pacing_rate() {
            // A driver's timer wakes late (tokio's wheel ticks in milliseconds, and a
            // loaded machine adds more): the slots it missed may go at once, up to
            // PACING_CATCH_UP of them. Booked from `now` instead, each wake-up sent one
            // packet: between real daemons on `wifi` the window asked for 100-280 Mbit/s
            // and bulk left at 15-25 (docs/congestion.md section 9).
            let floor = now.checked_sub(PACING_CATCH_UP).unwrap_or(now);
            let from = self.next_send.map_or(now, |at| at.max(floor));
            let next = from + Duration::from_secs_f64(bytes as f64 / rate);
            self.next_send = Some(next);
            self.pace_wake = Some(next);
        }
    }

    fn on_ack(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        self.delay_kind(false);
        self.sample(now, round_trip, round_trip, true);
        self.update_window(now, bytes);
    }

    fn on_settled(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        self.delay_kind(false);
        self.sample(now, round_trip, round_trip, false);
        self.update_window(now, bytes);
    }

    fn on_feedback(&mut self, now: Instant, feedback: Feedback) {
        if let Some(one_way) = feedback.one_way.filter(|_| feedback.bulk) {
            self.envelope.on_sample(now, one_way);
        }
        let one_way = feedback.one_way.filter(|_| self.config.one_way_delay);
        self.delay_kind(one_way.is_some());
        let delay = one_way.unwrap_or(feedback.round_trip);
        self.sample(now, feedback.round_trip, delay, feedback.bulk);
        self.update_window(now, feedback.bytes);
    }

    fn on_loss(&mut self, now: Instant, bytes: usize) {
        let _ = now;
        self.flight = self.flight.saturating_sub(bytes);
        self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd());
    }

    fn forget(&mut self, bytes: usize) {
        self.flight = self.flight.saturating_sub(bytes);
    }

    fn can_send_bulk(&self, now: Instant, bytes: usize) -> bool {
        // An empty pipe always admits one packet, so an oversized packet cannot wedge bulk.
        self.flight == 0
            || ((self.flight.saturating_add(bytes)) as f64 <= self.cwnd
                && self.next_send.is_none_or(|at| at <= now))
    }

    fn bytes_in_flight(&self) -> usize {
        self.flight
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.cto_deadline(), self.pace_wake]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.pace_wake.is_some_and(|at| at <= now) {
            self.pace_wake = None;
        }
        if self.cto_deadline().is_some_and(|deadline| deadline <= now) {
            self.flight = 0;
            let before = self.restore.unwrap_or_default().max(self.cwnd);
            self.restore = (before > self.min_cwnd()).then_some(before);
            self.cwnd = self.min_cwnd();
            self.last_progress = Some(now);
        }
    }
}

#[cfg(test)]
mod tests;
