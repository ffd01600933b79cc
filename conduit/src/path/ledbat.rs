//! LEDBAT (RFC 6817): a delay-based scavenger window for the bulk lane.
//!
//! Invariant: the window never drops below `min_cwnd_packets * mss` bytes, grows only while
//! the measured queuing delay is under `target`, and shrinks in proportion to how far the
//! delay is above it, so firmware downloads yield to anything that builds a queue, the
//! robot's own critical and telemetry traffic included.
//!
//! Mapping to the RFC's pseudo-code (section 2.4.2): `on_ack` runs the per-ACK update with
//! one delay sample; `base_delays` is the 10-bucket minute history of minima (BASE_HISTORY),
//! `current_delays` the last 4 samples with FILTER = MIN (CURRENT_FILTER); `on_loss` halves
//! the window at most once per `loss_interval` (the RFC's "once per RTT": no RTT estimate
//! exists here, so the interval is configured); with no ACK for `cto` the in-flight bytes
//! are presumed lost and the window falls to its minimum.

use std::time::{Duration, Instant};

use super::CongestionStrategy;

const BASE_HISTORY: usize = 10;
const CURRENT_FILTER: usize = 4;
const BASE_BUCKET: Duration = Duration::from_secs(60);

/// LEDBAT parameters; [`Default`] suits the LAN-scale links of a robot fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LedbatConfig {
    /// Queuing delay to aim for. RFC 6817 caps it at 100 ms; 25 ms keeps control loops
    /// responsive on LAN and Wi-Fi links.
    pub target: Duration,
    /// Window gain per ACK; the RFC requires at most 1 (Reno-like ramp-up).
    pub gain: f64,
    /// Segment size in bytes (the mesh MTU).
    pub mss: usize,
    /// Initial window, in segments.
    pub init_cwnd_packets: usize,
    /// Smallest window, in segments.
    pub min_cwnd_packets: usize,
    /// Largest window, in segments: acknowledgements can only be matched for the last
    /// [`SEND_LOG_SLOTS`](super::feedback::SEND_LOG_SLOTS) packets, so a larger window
    /// could never be acknowledged in full.
    pub max_cwnd_packets: usize,
    /// How far past the bytes in flight the window may grow, in segments (ALLOWED_INCREASE).
    pub allowed_increase_packets: usize,
    /// Minimum time between two loss reactions.
    pub loss_interval: Duration,
    /// Longest time without ACKs before in-flight bytes are presumed lost (the RFC's CTO
    /// before any round trip is measured).
    pub cto: Duration,
    /// Shortest such time once round trips are measured: the timeout is three smoothed
    /// round trips plus 2 ms, within `min_cto..=cto`. A fixed second would stall a lossy
    /// link for a whole second each time a small window is lost entirely.
    pub min_cto: Duration,
}

impl Default for LedbatConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(25),
            gain: 1.0,
            mss: 1350,
            init_cwnd_packets: 2,
            min_cwnd_packets: 2,
            max_cwnd_packets: 960,
            allowed_increase_packets: 1,
            loss_interval: Duration::from_millis(100),
            cto: Duration::from_secs(1),
            min_cto: Duration::from_millis(10),
        }
    }
}

/// A LEDBAT sender for the bulk lane.
#[derive(Clone, Debug)]
pub struct Ledbat {
    config: LedbatConfig,
    /// Window in bytes; fractional so small per-ACK increments accumulate.
    cwnd: f64,
    flight: usize,
    /// Bytes in flight right after the last send. Acks are handled in batches (a whole
    /// socket read before the next send), so "flight size before this ACK" of the RFC's
    /// application-limited check is this peak, not what earlier acks of the batch left.
    flight_after_send: usize,
    current_delays: [Duration; CURRENT_FILTER],
    current_next: usize,
    base_delays: [Duration; BASE_HISTORY],
    base_tail: usize,
    last_rollover: Option<Instant>,
    last_loss: Option<Instant>,
    last_progress: Option<Instant>,
    /// Smoothed delay sample (EWMA, 1/8 gain as TCP's SRTT).
    smoothed: Option<Duration>,
}

impl Default for Ledbat {
    fn default() -> Self {
        Self::new(LedbatConfig::default())
    }
}

impl Ledbat {
    /// A sender with an initial window of `init_cwnd_packets` segments and no delay history.
    pub fn new(config: LedbatConfig) -> Self {
        let init = config.init_cwnd_packets.max(config.min_cwnd_packets) * config.mss;
        Self {
            config,
            cwnd: init as f64,
            flight: 0,
            flight_after_send: 0,
            // Empty slots hold Duration::MAX, the RFC's +infinity, so they never win a MIN.
            current_delays: [Duration::MAX; CURRENT_FILTER],
            current_next: 0,
            base_delays: [Duration::MAX; BASE_HISTORY],
            base_tail: 0,
            last_rollover: None,
            last_loss: None,
            last_progress: None,
            smoothed: None,
        }
    }

    /// The current ack timeout: see [`LedbatConfig::min_cto`].
    pub fn cto(&self) -> Duration {
        match self.smoothed {
            None => self.config.cto,
            Some(srtt) => (srtt * 3 + Duration::from_millis(2))
                .clamp(self.config.min_cto.min(self.config.cto), self.config.cto),
        }
    }

    /// The congestion window in bytes.
    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    /// The smallest delay seen over the base history (the uncongested path delay).
    pub fn base_delay(&self) -> Option<Duration> {
        min_of(&self.base_delays)
    }

    /// The current queuing delay estimate: filtered current delay minus base delay.
    pub fn queuing_delay(&self) -> Option<Duration> {
        Some(min_of(&self.current_delays)?.saturating_sub(self.base_delay()?))
    }

    fn min_cwnd(&self) -> f64 {
        (self.config.min_cwnd_packets * self.config.mss) as f64
    }

    fn update_base_delay(&mut self, now: Instant, delay: Duration) {
        let rolled = self
            .last_rollover
            .is_none_or(|at| now.saturating_duration_since(at) >= BASE_BUCKET);
        if rolled {
            // A new minute: the oldest bucket is forgotten, so a lasting route change
            // (longer base delay) is learned within BASE_HISTORY minutes.
            self.last_rollover = Some(now);
            if self.base_delays[self.base_tail] != Duration::MAX {
                self.base_tail = (self.base_tail + 1) % BASE_HISTORY;
            }
            self.base_delays[self.base_tail] = delay;
        } else {
            let tail = &mut self.base_delays[self.base_tail];
            *tail = (*tail).min(delay);
        }
    }

    fn update_current_delay(&mut self, delay: Duration) {
        self.current_delays[self.current_next] = delay;
        self.current_next = (self.current_next + 1) % CURRENT_FILTER;
    }
}

impl CongestionStrategy for Ledbat {
    fn on_sent(&mut self, now: Instant, bytes: usize) {
        if self.flight == 0 {
            self.last_progress = Some(now);
        }
        self.flight = self.flight.saturating_add(bytes);
        self.flight_after_send = self.flight;
    }

    fn on_ack(&mut self, now: Instant, bytes: usize, one_way_delay: Duration) {
        self.last_progress = Some(now);
        self.smoothed = Some(match self.smoothed {
            None => one_way_delay,
            Some(srtt) => (srtt * 7 + one_way_delay) / 8,
        });
        self.update_base_delay(now, one_way_delay);
        self.update_current_delay(one_way_delay);
        let queuing = self.queuing_delay().unwrap_or_default().as_secs_f64();
        let target = self.config.target.as_secs_f64().max(f64::MIN_POSITIVE);
        let off_target = (target - queuing) / target;
        let mss = self.config.mss as f64;
        self.cwnd += self.config.gain * off_target * bytes as f64 * mss / self.cwnd;
        // Growth only while the window is used: an application-limited sender must not
        // build up a window it never tested against the network.
        let max_allowed = (self.flight.max(self.flight_after_send)
            + self.config.allowed_increase_packets * self.config.mss)
            as f64;
        let max_cwnd = (self.config.max_cwnd_packets * self.config.mss) as f64;
        self.cwnd = self
            .cwnd
            .min(max_allowed)
            .min(max_cwnd)
            .max(self.min_cwnd());
        self.flight = self.flight.saturating_sub(bytes);
    }

    fn on_loss(&mut self, now: Instant, bytes: usize) {
        self.flight = self.flight.saturating_sub(bytes);
        let recent = self
            .last_loss
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.loss_interval);
        if !recent {
            self.last_loss = Some(now);
            self.cwnd = self.cwnd.min((self.cwnd / 2.0).max(self.min_cwnd()));
        }
    }

    fn forget(&mut self, bytes: usize) {
        self.flight = self.flight.saturating_sub(bytes);
    }

    fn can_send_bulk(&self, _now: Instant, bytes: usize) -> bool {
        // An empty pipe always admits one packet, so an oversized packet cannot wedge bulk.
        self.flight == 0 || (self.flight.saturating_add(bytes)) as f64 <= self.cwnd
    }

    fn bytes_in_flight(&self) -> usize {
        self.flight
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.flight == 0 {
            return None;
        }
        self.last_progress.map(|at| at + self.cto())
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| deadline <= now) {
            self.flight = 0;
            self.cwnd = self.min_cwnd();
            self.last_progress = Some(now);
        }
    }
}

fn min_of(delays: &[Duration]) -> Option<Duration> {
    delays.iter().copied().min().filter(|&d| d != Duration::MAX)
}

#[cfg(test)]
mod tests;
