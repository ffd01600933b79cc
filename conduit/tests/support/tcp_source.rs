//! A TCP-like bulk sender above the tunnel, for the simulator: what `iperf3` over a real
//! TUN device is, as far as the tunnel's bulk controller can tell. Its window is CUBIC's
//! (RFC 9438, with the Reno-friendly estimate), losses are found from the acks' order
//! (the paths are in order, so a packet three behind an acked one is lost: RACK's rule
//! with no reordering window), the window is cut once per round of losses, and a
//! retransmission timeout starts it over. A packet lost is simply not delivered: what is
//! sent next carries new data, which is all the tunnel sees either way.
//!
//! Why it exists: with a backlog that never runs dry the tunnel's sender is never
//! application-limited, and between real daemons it was: TCP, cut by the link's random
//! losses, sent less than the tunnel's window allowed, the window grew on the little that
//! flowed, and when TCP caught up the banked window left at once (docs/congestion.md
//! section 10, session 25).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// CUBIC's multiplicative decrease.
const BETA: f64 = 0.7;
/// CUBIC's scaling constant, in packets per second cubed.
const C: f64 = 0.4;
/// Linux's initial window, in packets.
const INITIAL_WINDOW: f64 = 10.0;
/// Linux's least retransmission timeout beyond the round trip (`TCP_RTO_MIN`).
const MIN_RTO: Duration = Duration::from_millis(200);
/// Acked packets after a missing one that declare it lost.
const REORDER_THRESHOLD: u32 = 3;

/// A CUBIC sender with an unlimited amount to send, counting in packets.
pub(crate) struct TcpSource {
    cwnd: f64,
    ssthresh: f64,
    /// The window before the last cut.
    w_max: f64,
    /// The Reno-friendly window estimate since the last cut.
    w_est: f64,
    /// When the window started growing after the last cut.
    epoch: Option<Instant>,
    next_seq: u32,
    /// Sequence number to send time, for every packet neither acked nor lost.
    in_flight: BTreeMap<u32, Instant>,
    /// Losses of packets below this belong to the round already cut for.
    recovery_until: u32,
    srtt: Option<Duration>,
    rttvar: Duration,
    /// What the tunnel refused (its bulk lane full) or the paths lost, and what was cut.
    pub(crate) lost: u64,
    pub(crate) cuts: u64,
    pub(crate) timeouts: u64,
}

impl TcpSource {
    pub(crate) fn new() -> Self {
        Self {
            cwnd: INITIAL_WINDOW,
            ssthresh: f64::INFINITY,
            w_max: 0.0,
            w_est: 0.0,
            epoch: None,
            next_seq: 0,
            in_flight: BTreeMap::new(),
            recovery_until: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            lost: 0,
            cuts: 0,
            timeouts: 0,
        }
    }

    /// The window, in packets.
    pub(crate) fn cwnd(&self) -> f64 {
        self.cwnd
    }

    /// Packets neither acked nor lost.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The sequence number of the next packet if the window lets one go now.
    pub(crate) fn next(&self) -> Option<u32> {
        ((self.in_flight.len() as f64) < self.cwnd.floor()).then_some(self.next_seq)
    }

    /// The packet [`next`](Self::next) offered left at `now`.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.in_flight.insert(self.next_seq, now);
        self.next_seq = self.next_seq.wrapping_add(1);
    }

    /// The receiver's (selective) ack of `seq` reached the sender at `now`.
    pub(crate) fn on_ack(&mut self, now: Instant, seq: u32) {
        let Some(sent) = self.in_flight.remove(&seq) else {
            return; // declared lost already, or acked twice
        };
        self.sample(now - sent);
        let lost: Vec<u32> = self
            .in_flight
            .range(..seq.saturating_sub(REORDER_THRESHOLD - 1))
            .map(|(&s, _)| s)
            .collect();
        for s in &lost {
            self.in_flight.remove(s);
        }
        if let Some(&first) = lost.first() {
            self.lost += lost.len() as u64;
            if first >= self.recovery_until {
                self.cut();
            }
            return;
        }
        if seq < self.recovery_until {
            return; // still in the round that was cut for
        }
        self.grow(now);
    }

    /// The retransmission timeout: a window whose acks all went missing starts over.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        let Some((_, &oldest)) = self.in_flight.first_key_value() else {
            return;
        };
        if now - oldest < self.rto() {
            return;
        }
        self.lost += self.in_flight.len() as u64;
        self.in_flight.clear();
        self.timeouts += 1;
        self.w_max = self.cwnd;
        self.ssthresh = (self.cwnd * BETA).max(2.0);
        self.cwnd = 1.0;
        self.epoch = None;
        self.recovery_until = self.next_seq;
    }

    /// Linux's retransmission timeout: the smoothed round trip plus the variation, with
    /// the least RTO bounding the variation term, not the sum (`tcp_rtt_estimator` keeps
    /// `rttvar_us` at `tcp_rto_min` or more; `__tcp_set_rto` adds it to `srtt`). So a
    /// Linux sender waits at least 200 ms beyond its round trip, where RFC 6298's
    /// `max(srtt + 4 rttvar, 1 s)` would wait less on long paths with little variation.
    fn rto(&self) -> Duration {
        self.srtt.map_or(Duration::from_secs(1), |s| {
            s + (4 * self.rttvar).max(MIN_RTO)
        })
    }

    /// RFC 6298's smoothed round trip.
    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    fn cut(&mut self) {
        self.cuts += 1;
        self.w_max = self.cwnd;
        self.cwnd = (self.cwnd * BETA).max(2.0);
        self.ssthresh = self.cwnd;
        self.epoch = None;
        self.recovery_until = self.next_seq;
    }

    /// One acked packet's growth: slow start below `ssthresh`, else CUBIC's curve or the
    /// Reno-friendly estimate, whichever is larger (RFC 9438 section 4).
    fn grow(&mut self, now: Instant) {
        if self.cwnd < self.ssthresh {
            self.cwnd += 1.0;
            return;
        }
        let epoch = *self.epoch.get_or_insert_with(|| {
            self.w_est = self.cwnd;
            now
        });
        let k = (self.w_max.max(self.cwnd) * (1.0 - BETA) / C).cbrt();
        let t = (now - epoch).as_secs_f64() + self.srtt.unwrap_or_default().as_secs_f64();
        let target = C * (t - k).powi(3) + self.w_max.max(self.cwnd);
        self.w_est += 3.0 * (1.0 - BETA) / (1.0 + BETA) / self.cwnd;
        let goal = target.max(self.w_est).min(1.5 * self.cwnd);
        if goal > self.cwnd {
            self.cwnd += (goal - self.cwnd) / self.cwnd;
        } else {
            self.cwnd += 0.01 / self.cwnd;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acks every packet in flight one round trip after `now`, in order.
    fn round(tcp: &mut TcpSource, now: &mut Instant, rtt: Duration, drop: &[u32]) {
        let mut sent = Vec::new();
        while let Some(seq) = tcp.next() {
            tcp.sent(*now);
            sent.push(seq);
        }
        *now += rtt;
        for seq in sent.into_iter().filter(|s| !drop.contains(s)) {
            tcp.on_ack(*now, seq);
        }
    }

    #[test]
    fn slow_start_doubles_the_window_each_round_trip() {
        let mut tcp = TcpSource::new();
        let mut now = Instant::now();
        round(&mut tcp, &mut now, Duration::from_millis(50), &[]);
        assert_eq!(tcp.cwnd(), 20.0);
        round(&mut tcp, &mut now, Duration::from_millis(50), &[]);
        assert_eq!(tcp.cwnd(), 40.0);
    }

    #[test]
    fn a_loss_cuts_the_window_once_per_round() {
        let mut tcp = TcpSource::new();
        let mut now = Instant::now();
        let rtt = Duration::from_millis(50);
        round(&mut tcp, &mut now, rtt, &[]);
        round(&mut tcp, &mut now, rtt, &[]);
        // Two losses in the third round (packets 30..70 in flight): one cut.
        round(&mut tcp, &mut now, rtt, &[40, 50]);
        assert_eq!(tcp.cuts, 1);
        assert_eq!(tcp.lost, 2);
        // Cut to 0.7 of the window when the first loss was seen (slow start had taken it
        // past 40 by then), and not again for the second loss.
        assert!(tcp.cwnd() < 40.0, "{}", tcp.cwnd());
        assert_eq!(tcp.in_flight(), 0);
        // Then the window grows again, slower than slow start.
        let before = tcp.cwnd();
        round(&mut tcp, &mut now, rtt, &[]);
        assert!(tcp.cwnd() > before && tcp.cwnd() < 2.0 * before);
    }

    #[test]
    fn a_window_whose_acks_all_vanish_times_out_to_one_packet() {
        let mut tcp = TcpSource::new();
        let mut now = Instant::now();
        let rtt = Duration::from_millis(50);
        round(&mut tcp, &mut now, rtt, &[]);
        while tcp.next().is_some() {
            tcp.sent(now);
        }
        // Linux waits the round trip and then at least 200 ms more (the ten equal
        // samples left little variation).
        tcp.on_tick(now + rtt + MIN_RTO - Duration::from_millis(1));
        assert_eq!(tcp.timeouts, 0);
        tcp.on_tick(now + rtt + MIN_RTO);
        assert_eq!(tcp.timeouts, 1);
        assert_eq!(tcp.cwnd(), 1.0);
        assert_eq!(tcp.in_flight(), 0);
    }
}
