//! Bulk beside a 1 kHz control loop on the links robots live on: the simulator plays
//! `bauxite_netem`'s LTE and Wi-Fi profiles (rate steps, base delay moving with the rate,
//! in-order jitter, bursty loss, deep buffers, outages), and the bulk controller must take
//! most of the capacity while the control loop's p99 stays near the idle link's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bauxite_conduit::ip::build;
use bauxite_conduit::node::{BulkController, NodeConfig, TunVerdict};
use bauxite_conduit::path::{
    AdaptiveConfig, AdaptiveLedbat, AutoBulk, AutoConfig, AutoGroup, CongestionStrategy, Feedback,
    Ledbat, LedbatConfig, MakeStrategy, PmtuPhase, RateBulk, RateConfig,
};
use bauxite_conduit::sim::{LinkConfig, SimNet};
use bauxite_conduit::{Lane, VirtualIp};
use bauxite_netem::Profile;

#[path = "support/tcp_source.rs"]
mod tcp_source;
use tcp_source::TcpSource;

/// Bulk packets kept queued at the sender: always more than the link takes in a tick.
const BULK_BACKLOG: usize = 256;
/// Inner bulk packet size: the TUN MTU.
const BULK_LEN: usize = 1350;
/// The controllers' segment, as the node sets it: the TUN MTU (`BX_MSS` overrides it in
/// the diagnosis: the datagram, 1379 bytes, was tried in session 26).
fn segment() -> usize {
    std::env::var("BX_MSS").map_or(BULK_LEN, |v| v.parse().unwrap())
}

fn ip(v: VirtualIp) -> Ipv4Addr {
    v.addr()
}

/// The bulk beside the control loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    /// No bulk: the idle link.
    Idle,
    /// A backlog the tunnel can never drain: its sender is never application-limited.
    Backlog,
    /// A TCP-like sender ([`TcpSource`]), acked out of band one base delay after each
    /// arrival: what `iperf3` over a TUN device is.
    Tcp,
}

/// What one run measured.
struct Run {
    /// One-way delays of the control loop's packets, sorted.
    delays: Vec<Duration>,
    /// Each control packet's send time since the start and its one-way delay, in send
    /// order (`BX_STEPS`' breakdown by profile step).
    sent: Vec<(Duration, Duration)>,
    /// Each bulk packet's arrival since the start and its length.
    bulk_arrivals: Vec<(Duration, usize)>,
    lost: usize,
    /// Inner bulk bytes delivered per second while the loop ran, in bit/s.
    goodput: f64,
    /// The profile's average rate over the same interval (blackouts count as 0), bit/s.
    capacity: f64,
    /// Node 0's path MTU towards node 1 at the end, and its discovery phase.
    path_mtu: (Option<u16>, PmtuPhase),
    /// The TCP-like sender's losses, window cuts and timeouts, if it ran.
    tcp: Option<(u64, u64, u64, u64)>,
}

impl Run {
    fn p(&self, q: usize) -> Duration {
        self.delays[(self.delays.len() * q / 100).min(self.delays.len() - 1)]
    }
}

/// The traced controller's state after its newest ack (`BX_TRACE`).
static TRACE: LazyLock<Sink> = LazyLock::new(Sink::default);

/// Where a [`Traced`] controller writes its state.
type Sink = Arc<Mutex<String>>;

/// A controller whose state the trace can print.
trait Snapshot: CongestionStrategy {
    fn snapshot(&self) -> String;
}

impl Snapshot for RateBulk {
    fn snapshot(&self) -> String {
        let c = self;
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        format!(
            "{:?} bw {:.2} pace {:.2} Mbit/s min_rtt {:.2} srtt {:.2} q {:.2} target {:.2} ms cap {} flight {}",
            c.phase(),
            c.bw() * 8e-6,
            c.pacing_rate() * 8e-6,
            ms(c.min_rtt()),
            ms(c.smoothed_rtt()),
            ms(c.queuing_delay()),
            ms(Some(c.target())),
            c.cwnd(),
            c.bytes_in_flight(),
        )
    }
}

impl Snapshot for AdaptiveLedbat {
    fn snapshot(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        format!(
            "cwnd {} flight {} q {:.2} target {:.2} jitter {:.2} base {:.2} ms env {:.2} {}",
            self.cwnd(),
            self.bytes_in_flight(),
            ms(self.queuing_delay()),
            ms(Some(self.target())),
            ms(Some(self.jitter())),
            ms(self.base_delay()),
            ms(self.envelope_queuing()),
            if self.on_envelope() { "E" } else { "-" },
        )
    }
}

impl Snapshot for AutoBulk {
    fn snapshot(&self) -> String {
        format!(
            "{:?} ({} switches) jitter {:.3} ms target {:.3} ms cwnd {} | {}",
            self.mode(),
            self.switches(),
            self.adaptive().jitter().as_secs_f64() * 1e3,
            self.adaptive().target().as_secs_f64() * 1e3,
            self.adaptive().cwnd(),
            self.rate().snapshot()
        )
    }
}

/// A controller that writes its state to its sink ([`TRACE`] unless given one) after
/// every ack: the diagnosis' per-millisecond log of phase, bw, round trips, window cap
/// and flight.
struct Traced<C>(C, Sink);

impl<C> Traced<C> {
    fn global(inner: C) -> Self {
        Self(inner, TRACE.clone())
    }
}

impl<C: Snapshot> Traced<C> {
    fn record(&self) {
        *self.1.lock().unwrap() = self.0.snapshot();
    }
}

impl<C: Snapshot> CongestionStrategy for Traced<C> {
    fn on_sent(&mut self, now: Instant, bytes: usize) {
        self.0.on_sent(now, bytes);
        if std::env::var("BX_TRACE_EVENTS").is_ok() {
            eprintln!("  {now:?} sent {bytes} next at {:?}", self.0.poll_timeout());
        }
    }
    fn on_ack(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        self.0.on_ack(now, bytes, round_trip);
        self.record();
    }
    fn on_feedback(&mut self, now: Instant, feedback: Feedback) {
        self.0.on_feedback(now, feedback);
        if std::env::var("BX_TRACE_EVENTS").is_ok() {
            eprintln!("  {now:?} ack {feedback:?}");
        }
        self.record();
    }
    fn on_loss(&mut self, now: Instant, bytes: usize) {
        self.0.on_loss(now, bytes);
    }
    fn forget(&mut self, bytes: usize) {
        self.0.forget(bytes);
    }
    fn can_send_bulk(&self, now: Instant, bytes: usize) -> bool {
        self.0.can_send_bulk(now, bytes)
    }
    fn bytes_in_flight(&self) -> usize {
        self.0.bytes_in_flight()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        if std::env::var("BX_TRACE_EVENTS").is_ok() {
            eprintln!("  {now:?} timer");
        }
        self.0.handle_timeout(now);
    }
}

/// `BX_TRACE=FROM,TO` (ms since start): the window the loaded run logs, one line per
/// millisecond: the sender's uplink queue and the traced controller's state.
fn trace_window() -> Option<(u64, u64)> {
    let v = std::env::var("BX_TRACE").ok()?;
    let (a, b) = v.split_once(',')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Runs a 1 kHz control loop (64-byte ICMP echoes on the critical lane) from node 0 to
/// node 1 for `seconds`, beside a saturating bulk stream when `bulk`, after `warmup` of
/// the same (so the controller has found the link), on `profile`; node 0's bulk
/// controllers come from `make` if given.
fn control_loop(
    config: NodeConfig,
    make: Option<MakeStrategy>,
    profile: &Profile,
    bulk: Bulk,
    warmup: Duration,
    seconds: u64,
    seed: u64,
) -> Run {
    let start = Instant::now();
    let mut net = SimNet::new(config, LinkConfig::default(), seed, start);
    net.profile = Some(profile.clone());
    if let Some(make) = make {
        net.nodes[0].set_congestion(make);
    }
    let mut bulk_packet = Vec::new();
    let mut bulk_payload = [0u8; BULK_LEN - 28];
    let (src, dst) = (ip(net.vips[0]), ip(net.vips[1]));
    build::ipv4_udp(src, dst, 40000, 9000, &bulk_payload, &mut bulk_packet);
    let mut tcp = TcpSource::new();
    // TCP's packets the tunnel refused: its bulk lane was full.
    let mut refused = 0u64;
    // Acks on their way back: (when they reach the sender, sequence number).
    let mut acks = std::collections::BinaryHeap::new();
    let mut acked_upto = 0;
    // The session comes up before anything is measured.
    let mut hello = Vec::new();
    build::ipv4_icmp_echo(
        ip(net.vips[0]),
        ip(net.vips[1]),
        7,
        1,
        &[0xff; 36],
        &mut hello,
    );
    net.send_from(0, &hello);
    let mut tick = 0u32;
    let mut sent_at = Vec::new();
    let mut measuring = false;
    let mut first = 0;
    let mut begin = start;
    let total = warmup + Duration::from_secs(seconds);
    while net.now < start + total {
        if !measuring && net.now >= start + warmup {
            measuring = true;
            first = net.delivered[1].len();
            begin = net.now;
        }
        match bulk {
            Bulk::Idle => {}
            Bulk::Backlog => {
                while net.nodes[0].scheduler().len(Lane::Bulk) < BULK_BACKLOG {
                    assert_eq!(
                        net.send_from(0, &bulk_packet),
                        TunVerdict::Queued(Lane::Bulk)
                    );
                }
            }
            Bulk::Tcp => {
                // The receiver acks each arrival; the ack takes the path's base delay.
                for d in &net.delivered[1][acked_upto..] {
                    if d.packet[9] == 17 && d.packet.len() == BULK_LEN {
                        let seq = u32::from_be_bytes(d.packet[28..32].try_into().unwrap());
                        let back = profile.at(d.at - start).delay;
                        acks.push(std::cmp::Reverse((d.at + back, seq)));
                    }
                }
                acked_upto = net.delivered[1].len();
                while let Some(&std::cmp::Reverse((at, seq))) = acks.peek() {
                    if at > net.now {
                        break;
                    }
                    acks.pop();
                    tcp.on_ack(net.now, seq);
                }
                tcp.on_tick(net.now);
                while let Some(seq) = tcp.next() {
                    bulk_payload[..4].copy_from_slice(&seq.to_be_bytes());
                    bulk_packet.clear();
                    build::ipv4_udp(src, dst, 40000, 9000, &bulk_payload, &mut bulk_packet);
                    // A packet the tunnel refuses is a loss TCP finds from the acks.
                    if let TunVerdict::LaneFull(_) = net.send_from(0, &bulk_packet) {
                        refused += 1;
                    }
                    tcp.sent(net.now);
                }
            }
        }
        if measuring {
            let mut payload = [0u8; 36];
            payload[..4].copy_from_slice(&tick.to_be_bytes());
            let mut ping = Vec::new();
            build::ipv4_icmp_echo(ip(net.vips[0]), ip(net.vips[1]), 7, 1, &payload, &mut ping);
            assert_eq!(net.send_from(0, &ping), TunVerdict::Queued(Lane::Critical));
            sent_at.push(net.now);
            tick += 1;
        }
        // An idle net does not move its clock by itself.
        let next = net.now + Duration::from_millis(1);
        net.run_until(next);
        net.now = net.now.max(next);
        if let Some((from, to)) = trace_window().filter(|_| bulk != Bulk::Idle) {
            let ms = (net.now - start).as_millis() as u64;
            if (from..to).contains(&ms) {
                eprintln!(
                    "{ms} ms: uplink queue {:.2} ms; tunnel bulk {}; tcp cwnd {:.1} flight {}; {}",
                    net.uplink_backlog(0).as_secs_f64() * 1e3,
                    net.nodes[0].scheduler().len(Lane::Bulk),
                    tcp.cwnd(),
                    tcp.in_flight(),
                    TRACE.lock().unwrap()
                );
            }
        }
    }
    let end = net.now;
    if bulk == Bulk::Tcp {
        use bauxite_conduit::Metrics;
        let (sender, receiver) = (net.nodes[0].metrics(), net.nodes[1].metrics());
        eprintln!(
            "loss repair under TCP: {} repairs sent, {} NACKs, {} packets held, {} given up",
            Metrics::get(&sender.bulk_repairs_sent),
            Metrics::get(&receiver.bulk_nacks_sent),
            Metrics::get(&receiver.bulk_held),
            Metrics::get(&receiver.bulk_given_up),
        );
    }
    let status = net.nodes[0].peer_status(end);
    let path_mtu = status
        .first()
        .map_or((None, PmtuPhase::Idle), |s| (s.path_mtu, s.pmtu_phase));
    net.profile = None;
    net.run_for(Duration::from_secs(1));
    let mut delays = Vec::new();
    let mut sent = Vec::new();
    let mut bulk_arrivals = Vec::new();
    let mut bulk_bytes = 0usize;
    for d in &net.delivered[1][first..] {
        if d.packet[9] == 1 && d.packet[28] != 0xff {
            let id = u32::from_be_bytes(d.packet[28..32].try_into().unwrap()) as usize;
            delays.push(d.at - sent_at[id]);
            sent.push((sent_at[id] - start, d.at - sent_at[id]));
        } else if d.at <= end {
            bulk_bytes += d.packet.len();
            bulk_arrivals.push((d.at - start, d.packet.len()));
        }
    }
    delays.sort();
    let secs = (end - begin).as_secs_f64();
    Run {
        lost: sent_at.len() - delays.len(),
        goodput: bulk_bytes as f64 * 8.0 / secs,
        capacity: profile
            .capacity_bits(begin - start, end - start)
            .unwrap_or_default()
            / secs,
        delays,
        sent,
        bulk_arrivals,
        path_mtu,
        tcp: (bulk == Bulk::Tcp).then_some((tcp.lost, refused, tcp.cuts, tcp.timeouts)),
    }
}

/// `BX_STEPS=1`: where in the profile's period the loaded run's bulk went and which of
/// its control packets rose above the idle p99: per step of the schedule, bulk's share
/// of that step's capacity, the share of the loop's packets sent in the step, and how
/// many of them ended above the idle p99 and above the idle p99 + 2 ms (the acceptance
/// counts only those: a p99 is lifted by the top 1 %). With `BX_LATE=1` also the share
/// of all loop packets above the idle p99 + 2 ms (under 1 %: the promise held), with
/// `BX_LATE=2` those packets per 50 ms of the run, each bucket's count and worst.
fn by_step(profile: &Profile, idle: &Run, loaded: &Run) {
    if std::env::var("BX_STEPS").is_err() {
        return;
    }
    let Some(period) = profile.period else {
        return;
    };
    let step_of = |t: Duration| {
        let t = Duration::from_nanos((t.as_nanos() % period.as_nanos()) as u64);
        profile
            .steps
            .partition_point(|s| s.at <= t)
            .saturating_sub(1)
    };
    let n = profile.steps.len().max(1);
    let (first, last) = (
        loaded.sent.first().map_or(Duration::ZERO, |s| s.0),
        loaded.sent.last().map_or(Duration::ZERO, |s| s.0),
    );
    let mut cap = vec![0.0f64; n];
    let mut ms = first.as_millis() as u64;
    while ms <= last.as_millis() as u64 {
        let at = Duration::from_millis(ms);
        let imp = profile.at(at);
        if !imp.blackout {
            cap[step_of(at)] += imp.rate_bps.unwrap_or(0) as f64 / 1e3;
        }
        ms += 1;
    }
    let mut bulk = vec![0.0f64; n];
    for &(at, len) in &loaded.bulk_arrivals {
        if at >= first && at <= last {
            bulk[step_of(at)] += (len * 8) as f64;
        }
    }
    let idle99 = idle.p(99);
    let budget = idle99 + Duration::from_millis(2);
    let mut pkts = vec![(0usize, 0usize, 0usize); n];
    for &(at, delay) in &loaded.sent {
        let c = &mut pkts[step_of(at)];
        c.0 += 1;
        c.1 += usize::from(delay > idle99);
        c.2 += usize::from(delay > budget);
    }
    let total = loaded.sent.len().max(1) as f64;
    let late_mode = std::env::var("BX_LATE").ok();
    if late_mode.is_some() {
        let late: usize = pkts.iter().map(|c| c.2).sum();
        eprintln!("  late total {:.3} %", 100.0 * late as f64 / total);
    }
    if late_mode.as_deref() == Some("2") {
        let mut buckets = std::collections::BTreeMap::new();
        for &(at, delay) in loaded.sent.iter().filter(|(_, d)| *d > budget) {
            let b = buckets
                .entry(at.as_millis() / 50 * 50)
                .or_insert((0, Duration::ZERO));
            b.0 += 1;
            b.1 = b.1.max(delay - budget);
        }
        for (at, (count, worst)) in buckets {
            eprintln!(
                "  late at {at} ms: {count} packets, worst {:.2} ms over",
                worst.as_secs_f64() * 1e3
            );
        }
    }
    for (i, step) in profile.steps.iter().enumerate() {
        eprintln!(
            "  step {i} ({} Mbit/s, {} ms): bulk {:.0} % of its capacity; loop packets {:.1} %, \
             above idle p99 {:.2} %, above idle p99 + 2 ms {:.2} % (of all)",
            step.rate_bps.unwrap_or(0) / 1_000_000,
            step.delay.as_millis(),
            100.0 * bulk[i] / cap[i].max(1.0),
            100.0 * pkts[i].0 as f64 / total,
            100.0 * pkts[i].1 as f64 / total,
            100.0 * pkts[i].2 as f64 / total,
        );
    }
}

/// Issue 14's promise: the loop's p99 beside bulk within 2 ms of the idle link's.
fn assert_keeps_the_promise(name: &str, idle: &Run, loaded: &Run) {
    assert!(
        loaded.p(99) <= idle.p(99) + Duration::from_millis(2),
        "{name}: p99 {:?} against {:?} idle",
        loaded.p(99),
        idle.p(99)
    );
}

fn report(name: &str, idle: &Run, loaded: &Run) {
    eprintln!(
        "{name}: idle p50/p99 {:.2}/{:.2} ms; loaded p50/p99 {:.2}/{:.2} ms (lost {} of {}); \
         bulk {:.2} of {:.2} Mbit/s = {:.0} %; path MTU {:?}{}",
        idle.p(50).as_secs_f64() * 1e3,
        idle.p(99).as_secs_f64() * 1e3,
        loaded.p(50).as_secs_f64() * 1e3,
        loaded.p(99).as_secs_f64() * 1e3,
        loaded.lost,
        loaded.delays.len() + loaded.lost,
        loaded.goodput / 1e6,
        loaded.capacity / 1e6,
        100.0 * loaded.goodput / loaded.capacity,
        loaded.path_mtu,
        loaded
            .tcp
            .map_or(String::new(), |(lost, refused, cuts, timeouts)| format!(
                "; tcp lost {lost} ({refused} refused by the tunnel's full bulk lane), {cuts} cuts, {timeouts} timeouts"
            )),
    );
}

/// RFC 6817 LEDBAT with `target`, the controller before issue 14.
fn rfc_ledbat(target: Duration) -> MakeStrategy {
    Box::new(move || {
        Box::new(Ledbat::new(LedbatConfig {
            target,
            ..LedbatConfig::default()
        }))
    })
}

/// The diagnosis' knobs: `BX_OLD=1` runs RFC LEDBAT; `BX_CTRL=rate` the rate model
/// ([`rate_from_env`]); `BX_CTRL=auto` the per-path choice ([`AutoBulk`]), whose
/// thresholds `BX_QUIET`, `BX_NOISY` (in floors) and hold `BX_QUIET_S` (seconds) set;
/// `BX_TRACE=FROM,TO` (ms) logs the rate model's or the choice's state every millisecond
/// of that window, `BX_TRACE_EVENTS=1` every send, ack and timer too;
/// `BX_CTRL=adaptive` the adaptive LEDBAT, whose `jitter_gain`, `shared_jitter_gain`,
/// `ramp`, `pacing_gain` and `envelope_pacing` `BX_GAIN`, `BX_SGAIN`, `BX_RAMP`,
/// `BX_PACE` and `BX_EPACE` set, `BX_EMAXRTT` (ms) its `envelope_max_rtt`, `BX_ECAPF` its
/// `envelope_cap` (1000: uncapped); `BX_OWD=1` turns on its
/// `one_way_delay`, `BX_NOENV=1` off its `envelope` (all of these set `auto`'s window
/// too).
fn strategy_from_env(target: Duration) -> MakeStrategy {
    if std::env::var("BX_OLD").is_ok() {
        return rfc_ledbat(target);
    }
    let knob =
        |name: &str, default: f64| std::env::var(name).map_or(default, |v| v.parse().unwrap());
    if std::env::var("BX_CTRL").is_ok_and(|c| c == "rate") {
        return rate_from_env(target);
    }
    let config = adaptive_from_env(target);
    if std::env::var("BX_CTRL").is_ok_and(|c| c == "auto") {
        let d = AutoConfig::with_floor(target, segment());
        let config = AutoConfig {
            adaptive: config,
            quiet_below: knob("BX_QUIET", d.quiet_below),
            noisy_above: knob("BX_NOISY", d.noisy_above),
            quiet_for: Duration::from_secs_f64(knob("BX_QUIET_S", d.quiet_for.as_secs_f64())),
            ..d
        };
        // One group per node, as the node builds it.
        let group = AutoGroup::new();
        if trace_window().is_some() {
            return Box::new(move || Box::new(Traced::global(AutoBulk::in_group(config, &group))));
        }
        return Box::new(move || Box::new(AutoBulk::in_group(config, &group)));
    }
    // Otherwise the adaptive LEDBAT, whatever the node's default.
    if trace_window().is_some() {
        return Box::new(move || Box::new(Traced::global(AdaptiveLedbat::new(config))));
    }
    Box::new(move || Box::new(AdaptiveLedbat::new(config)))
}

/// The adaptive window's configuration with the knobs of [`strategy_from_env`] (also
/// `auto`'s window).
fn adaptive_from_env(target: Duration) -> AdaptiveConfig {
    let knob =
        |name: &str, default: f64| std::env::var(name).map_or(default, |v| v.parse().unwrap());
    let defaults = AdaptiveConfig::default();
    AdaptiveConfig {
        min_target: target,
        mss: segment(),
        jitter_gain: knob("BX_GAIN", defaults.jitter_gain),
        shared_jitter_gain: knob("BX_SGAIN", defaults.shared_jitter_gain),
        ramp: knob("BX_RAMP", defaults.ramp),
        pacing_gain: knob("BX_PACE", defaults.pacing_gain),
        envelope: std::env::var("BX_NOENV").is_err(),
        envelope_max_rtt: Duration::from_secs_f64(
            knob("BX_EMAXRTT", defaults.envelope_max_rtt.as_secs_f64() * 1e3) / 1e3,
        ),
        envelope_pacing: knob("BX_EPACE", defaults.envelope_pacing),
        envelope_cap: knob("BX_ECAPF", defaults.envelope_cap),
        one_way_delay: std::env::var("BX_OWD").is_ok(),
        ..defaults
    }
}

/// The rate model's knobs: `BX_CRUISE`, `BX_PROBE`, `BX_DRAIN` (gains), `BX_ROUNDS`
/// (cruise rounds), `BX_LIMIT` (limited ratio), `BX_CWND` (window cap in BDPs),
/// `BX_PQT` (most queue a probe adds, in brake targets),
/// `BX_JGAIN` (brake target per unit of jitter), `BX_STARTUP`.
fn rate_from_env(target: Duration) -> MakeStrategy {
    let d = RateConfig::default();
    let knob =
        |name: &str, default: f64| std::env::var(name).map_or(default, |v| v.parse().unwrap());
    let config = RateConfig {
        min_target: target,
        mss: segment(),
        cruise_gain: knob("BX_CRUISE", d.cruise_gain),
        probe_gain: knob("BX_PROBE", d.probe_gain),
        probe_queue_targets: knob("BX_PQT", d.probe_queue_targets),
        drain_gain: knob("BX_DRAIN", d.drain_gain),
        startup_gain: knob("BX_STARTUP", d.startup_gain),
        cruise_rounds: knob("BX_ROUNDS", f64::from(d.cruise_rounds)) as u32,
        limited_ratio: knob("BX_LIMIT", d.limited_ratio),
        sample_rounds: knob("BX_SAMPLE", d.sample_rounds),
        cwnd_gain: knob("BX_CWND", d.cwnd_gain),
        jitter_gain: knob("BX_JGAIN", d.jitter_gain),
        ..d
    };
    if trace_window().is_some() {
        return Box::new(move || Box::new(Traced::global(RateBulk::new(config))));
    }
    Box::new(move || Box::new(RateBulk::new(config)))
}

/// Prints the figures of controller settings on the profiles (the diagnosis of issue
/// 14's collapse); run with `--ignored --nocapture`. Knobs: `BX_PROFILES` (tbf,
/// fixed2rate, lte, lte-literal, wifi, fixed2), `BX_TARGETS` (µs, 0 = unpaced), `BX_SECS`, `BX_WARM`,
/// `BX_SEED`, `BX_LOSS` (the profile's random loss scaled: 0 none, 0.1 a tenth, the
/// same bursts), `BX_DROP` (the receiver's rate-drop reports on: `rate_drop_feedback`),
/// `BX_TCP` (bulk from a TCP-like sender instead of a backlog: [`Bulk::Tcp`]), `BX_MSS`
/// (the controllers' segment, [`segment`]),
/// and those of [`strategy_from_env`].
#[test]
#[ignore = "a report, not a check: prints figures"]
fn diagnose() {
    let fixed2 = Profile::fixed(bauxite_netem::Impairments {
        delay: Duration::from_millis(2),
        ..Default::default()
    });
    let fixed2_rate = Profile::fixed(bauxite_netem::Impairments {
        delay: Duration::from_millis(2),
        rate_bps: Some(50_000_000),
        buffer_bytes: Some(150_000),
        ..Default::default()
    });
    let targets: Vec<Option<Duration>> = std::env::var("BX_TARGETS")
        .unwrap_or_else(|_| "250".into())
        .split(',')
        .map(|us| match us.parse::<u64>().unwrap() {
            0 => None,
            us => Some(Duration::from_micros(us)),
        })
        .collect();
    let only = std::env::var("BX_PROFILES").unwrap_or_default();
    let secs: u64 = std::env::var("BX_SECS").map_or(12, |s| s.parse().unwrap());
    let warm = Duration::from_secs(std::env::var("BX_WARM").map_or(6, |s| s.parse().unwrap()));
    let seed: u64 = std::env::var("BX_SEED").map_or(3, |s| s.parse().unwrap());
    let tbf = Profile::fixed(bauxite_netem::Impairments {
        delay: Duration::from_micros(50),
        rate_bps: Some(20_000_000),
        buffer_bytes: Some(1_000_000),
        ..Default::default()
    });
    for (name, profile) in [
        ("tbf", tbf),
        ("fixed2rate", fixed2_rate),
        ("lte", Profile::lte()),
        ("lte-literal", Profile::lte_literal()),
        ("wifi", Profile::wifi()),
        ("fixed2", fixed2),
    ] {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        let mut profile = profile;
        if let Ok(scale) = std::env::var("BX_LOSS") {
            // The same bursts, `scale` times as often (0: none).
            let loss = profile.base.loss;
            profile.base.loss = bauxite_netem::GilbertElliott::bursty(
                loss.mean_loss() * scale.parse::<f64>().unwrap(),
                1.0 / loss.to_good,
            );
        }
        let idle = control_loop(
            NodeConfig::default(),
            None,
            &profile,
            Bulk::Idle,
            warm,
            secs,
            seed,
        );
        for &target in &targets {
            let config = NodeConfig {
                bulk_target: target,
                rate_drop_feedback: std::env::var("BX_DROP").is_ok(),
                bulk_repair: std::env::var("BX_REPAIR").map_or(true, |v| v != "0"),
                ..NodeConfig::default()
            };
            let make = target.map(strategy_from_env);
            let bulk = if std::env::var("BX_TCP").is_ok() {
                Bulk::Tcp
            } else {
                Bulk::Backlog
            };
            let loaded = control_loop(config, make, &profile, bulk, warm, secs, seed);
            report(&format!("{name}, target {target:?}"), &idle, &loaded);
            by_step(&profile, &idle, &loaded);
        }
    }
}

/// The fairness runs over seeds, with and without loss repair, for each controller: each
/// fast peer's bulk against its fair share (as [`fair_shares`] computes it), and the
/// worst per configuration (docs/congestion.md sections 15 and 16).
///
/// `BX_CTRL=auto|rate|adaptive` (default: rate and auto), `BX_FIRST_SEED=1`,
/// `BX_SEEDS=16` (the last seed), `BX_FAIR_SECS=5`, `BX_FAIR_LOSS=0.02` (the slow hop's
/// loss), `BX_FAIR_JITTER=0` (ms: in-order jitter of ± that on each fast peer's own hop
/// after the shared uplink, two robots on one busy radio), `BX_FAIR_CELLS=R1,R2` (Mbit/s:
/// each fast peer on a cell of its own, printing each cell's queue), `BX_FAIR_PROFILE` (a profile,
/// e.g. `wifi`, playing every uplink instead of the 20 Mbit/s one: two robots on one
/// access point; each run's Mbit/s are printed too); `BX_TRACE=FROM,TO` (ms) prints
/// every peer's window every 10 ms of that span, the adaptive window then pacing the
/// sender's bulk whatever the configuration.
///
/// ```sh
/// cargo test --release -p bauxite-conduit --test bulk_links fair_sweep -- --ignored --nocapture
/// ```
#[test]
#[ignore = "a report, not a check: prints figures"]
fn fair_sweep() {
    let controllers = match std::env::var("BX_CTRL") {
        Ok(name) => vec![BulkController::from_name(&name).expect("auto, rate or adaptive")],
        Err(_) => vec![BulkController::Rate, BulkController::Auto],
    };
    let seeds: u64 = std::env::var("BX_SEEDS").map_or(16, |v| v.parse().unwrap());
    let first: u64 = std::env::var("BX_FIRST_SEED").map_or(1, |v| v.parse().unwrap());
    let secs: u64 = std::env::var("BX_FAIR_SECS").map_or(5, |v| v.parse().unwrap());
    let loss: f64 = std::env::var("BX_FAIR_LOSS").map_or(0.02, |v| v.parse().unwrap());
    let jitter: f64 = std::env::var("BX_FAIR_JITTER").map_or(0.0, |v| v.parse().unwrap());
    let jitter = Duration::from_secs_f64(jitter / 1e3);
    let profile = std::env::var("BX_FAIR_PROFILE")
        .ok()
        .map(|name| Profile::named(&name).expect("a profile name"));
    // `BX_FAIR_CELLS=R1,R2`: each fast robot on a cell of its own, a bottleneck of R1
    // and R2 Mbit/s (100 kB of buffer) after the uplink, with the hops' jitter: windows
    // that do not share a bottleneck. Prints the queue in each cell.
    let cells: Option<[u64; 2]> = std::env::var("BX_FAIR_CELLS").ok().map(|v| {
        let rates: Vec<u64> = v.split(',').map(|r| r.parse().expect("Mbit/s")).collect();
        [rates[0] * 1_000_000, rates[1] * 1_000_000]
    });
    for bulk_controller in controllers {
        for bulk_repair in [false, true] {
            let mut worst = f64::INFINITY;
            let mut under = 0;
            for seed in first..=seeds {
                let config = NodeConfig {
                    bulk_controller,
                    bulk_repair,
                    ..NodeConfig::default()
                };
                let hops = Hops {
                    loss,
                    jitter,
                    cells,
                };
                let got = one_sender_three_receivers(config, secs, hops, profile.clone(), seed);
                let [a, b, slow] = got.goodput;
                if let Some(cells) = got.cell_queues {
                    for (i, [p50, p99]) in cells.into_iter().enumerate() {
                        eprintln!(
                            "  fast peer {i}: its cell's queue p50 {p50:.1} ms, p99 {p99:.1} ms"
                        );
                    }
                }
                if profile.is_some() || cells.is_some() {
                    eprintln!(
                        "seed {seed}: fast peers {:.2} and {:.2} Mbit/s, slow {:.2}",
                        a / 1e6,
                        b / 1e6,
                        slow / 1e6
                    );
                }
                let fair = fair_share(slow, bulk_repair);
                let (a, b) = (a / fair, b / fair);
                worst = worst.min(a).min(b);
                under += usize::from(a.min(b) < 0.8);
                eprintln!(
                    "{bulk_controller:?}, repair {bulk_repair}, seed {seed}: fast peers {a:.3} and {b:.3} of their fair share, slow {:.2} Mbit/s",
                    slow / 1e6
                );
            }
            eprintln!(
                "{bulk_controller:?}, repair {bulk_repair}: worst {worst:.3}, {under} of {seeds} seeds under 0.8"
            );
        }
    }
}

/// A hub sending bulk to eight robots, each on a cell of its own (6 Mbit/s, 100 kB of
/// buffer, `BX_CELLS_JITTER` ms of delay and in-order jitter, 2 by default) behind a fast
/// uplink: windows that do not share a bottleneck, many of them on the envelope beside
/// each other, where a correlation found by chance would have one read another's queue
/// (docs/congestion.md section 20). Prints each cell's queue (p50 / p99, ms) and the
/// robots' goodput, for `BX_SEEDS` seeds (4) of `BX_FAIR_SECS` (10).
///
/// ```sh
/// cargo test --release -p bauxite-conduit --test bulk_links many_cells_sweep -- --ignored --nocapture
/// ```
#[test]
#[ignore = "a report, not a check: prints figures"]
fn many_cells_sweep() {
    use bauxite_conduit::sim::NodeSpec;
    use bauxite_netem::Impairments;
    const ROBOTS: usize = 8;
    let seeds: u64 = std::env::var("BX_SEEDS").map_or(4, |v| v.parse().unwrap());
    let secs: u64 = std::env::var("BX_FAIR_SECS").map_or(10, |v| v.parse().unwrap());
    let jitter: f64 = std::env::var("BX_CELLS_JITTER").map_or(2.0, |v| v.parse().unwrap());
    let jitter = Duration::from_secs_f64(jitter / 1e3);
    for seed in 1..=seeds {
        let start = Instant::now();
        let link = LinkConfig {
            latency: Duration::from_millis(10),
            rate_bps: Some(200_000_000),
            queue_limit: Some(150_000),
            ..LinkConfig::default()
        };
        let mut net: SimNet<{ ROBOTS + 1 }> = SimNet::build(
            NodeConfig::default(),
            link,
            seed,
            start,
            [NodeSpec::public(); ROBOTS + 1],
        );
        for to in 1..=ROBOTS {
            net.set_hop(
                0,
                to,
                Impairments {
                    rate_bps: Some(6_000_000),
                    buffer_bytes: Some(100_000),
                    delay: jitter,
                    jitter,
                    ..Impairments::default()
                },
            );
        }
        let (packets, peers) = bulk_from_node_0(&net);
        let warmup = start + Duration::from_secs(1);
        let end = warmup + Duration::from_secs(secs);
        let mut first = [0usize; ROBOTS + 1];
        let mut queues: Vec<Vec<f64>> = vec![Vec::new(); ROBOTS];
        let mut measuring = false;
        while net.now < end {
            if !measuring && net.now >= warmup {
                measuring = true;
                first = std::array::from_fn(|i| net.delivered[i].len());
            }
            keep_bulk_queued(&mut net, &packets, &peers);
            if measuring {
                for (to, queue) in (1..=ROBOTS).zip(&mut queues) {
                    queue.push(net.hop_backlog(0, to).unwrap_or_default().as_secs_f64());
                }
            }
            let next = net.now + Duration::from_millis(1);
            net.run_until(next);
            net.now = net.now.max(next);
        }
        let cells: Vec<String> = queues
            .iter_mut()
            .map(|queue| {
                let [p50, p99] = p50_p99_ms(queue);
                format!("{p50:.1}/{p99:.1}")
            })
            .collect();
        let goodput: f64 = (1..=ROBOTS)
            .map(|to| goodput_bps(&net, to, first[to], end, secs))
            .sum();
        eprintln!(
            "seed {seed}: cells' queues (p50/p99 ms) {}; robots' total {:.1} Mbit/s",
            cells.join(" "),
            goodput / 1e6
        );
    }
}

/// The p50 and p99 of `samples` (seconds), in ms; sorts them.
fn p50_p99_ms(samples: &mut [f64]) -> [f64; 2] {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] * 1e3;
    [at(0.5), at(0.99)]
}

/// Inner bytes node `to` received from its `first` delivery up to `end`, per second of
/// `seconds`, in bit/s.
fn goodput_bps<const N: usize>(
    net: &SimNet<N>,
    to: usize,
    first: usize,
    end: Instant,
    seconds: u64,
) -> f64 {
    let bytes: usize = net.delivered[to][first..]
        .iter()
        .filter(|d| d.at <= end)
        .map(|d| d.packet.len())
        .sum();
    bytes as f64 * 8.0 / seconds as f64
}

/// A bulk packet from node 0 to each other node of `net`, and each one's peer id.
fn bulk_from_node_0<const N: usize>(
    net: &SimNet<N>,
) -> (Vec<Vec<u8>>, Vec<bauxite_conduit::PeerId>) {
    let packets = (1..N)
        .map(|to| {
            let mut p = Vec::new();
            build::ipv4_udp(
                ip(net.vips[0]),
                ip(net.vips[to]),
                40000,
                9000,
                &[0u8; BULK_LEN - 28],
                &mut p,
            );
            p
        })
        .collect();
    let peers = (1..N).map(|to| net.nodes[to].peer_id()).collect();
    (packets, peers)
}

/// Tops node 0's bulk queue for each of `peers` up to 128 packets of its `packets`.
fn keep_bulk_queued<const N: usize>(
    net: &mut SimNet<N>,
    packets: &[Vec<u8>],
    peers: &[bauxite_conduit::PeerId],
) {
    for (packet, peer) in packets.iter().zip(peers) {
        while net.nodes[0].scheduler().bulk_len_for(*peer) < 128 {
            assert_eq!(net.send_from(0, packet), TunVerdict::Queued(Lane::Bulk));
        }
    }
}

/// The hops after node 0's uplink in [`one_sender_three_receivers`].
#[derive(Clone, Copy, Default)]
struct Hops {
    /// Loss on the slow robot's 2 Mbit/s hop.
    loss: f64,
    /// In-order jitter (and as much delay) on each fast robot's hop; none when zero.
    jitter: Duration,
    /// A rate limit (bit/s) on each fast robot's hop: a cell of its own.
    cells: Option<[u64; 2]>,
}

/// What [`one_sender_three_receivers`] measured.
struct Received {
    /// Bulk goodput (inner bytes, bit/s) to each of nodes 1-3.
    goodput: [f64; 3],
    /// With cells: the queue in each fast peer's cell, p50 and p99 in ms, sampled every
    /// millisecond.
    cell_queues: Option<[[f64; 2]; 2]>,
}

/// Bulk goodput (inner bytes, bit/s) from node 0 to each of nodes 1–3 over `seconds`,
/// node 3 behind a 2 Mbit/s hop that loses `hops.loss` of its datagrams, nodes 1 and 2
/// each behind a hop of `hops.jitter` (in order; none when zero) and, with `hops.cells`,
/// a rate limit of their own; every peer's bulk queue kept full, after a second of
/// warm-up; `seed` drives the hops' losses and jitter. With cells, also the queue in each
/// fast peer's cell.
fn one_sender_three_receivers(
    config: NodeConfig,
    seconds: u64,
    hops: Hops,
    profile: Option<Profile>,
    seed: u64,
) -> Received {
    let Hops {
        loss,
        jitter,
        cells,
    } = hops;
    use bauxite_conduit::sim::NodeSpec;
    use bauxite_netem::{GilbertElliott, Impairments};
    let start = Instant::now();
    let link = LinkConfig {
        latency: Duration::from_millis(10),
        rate_bps: Some(20_000_000),
        queue_limit: Some(150_000),
        ..LinkConfig::default()
    };
    let adaptive = AdaptiveConfig {
        min_target: config.bulk_target.expect("bulk is paced"),
        mss: config.mtu,
        ..AdaptiveConfig::default()
    };
    let mut net: SimNet<4> = SimNet::build(config, link, seed, start, [NodeSpec::public(); 4]);
    net.profile = profile;
    net.set_hop(
        0,
        3,
        Impairments {
            rate_bps: Some(2_000_000),
            loss: GilbertElliott::bernoulli(loss),
            buffer_bytes: Some(50_000),
            ..Impairments::default()
        },
    );
    if !jitter.is_zero() || cells.is_some() {
        for to in [1, 2] {
            net.set_hop(
                0,
                to,
                Impairments {
                    delay: jitter,
                    jitter,
                    rate_bps: cells.map(|rates| rates[to - 1]),
                    buffer_bytes: cells.map(|_| 100_000),
                    ..Impairments::default()
                },
            );
        }
    }
    let (packets, peers) = bulk_from_node_0(&net);
    // `BX_TRACE=FROM,TO`: each peer's adaptive window (in the order their first bulk
    // packet made them), every 10 ms of that window, with what each peer got since.
    let trace = trace_window();
    let sinks: Arc<Mutex<Vec<Sink>>> = Arc::default();
    if trace.is_some() {
        let sinks = sinks.clone();
        net.nodes[0].set_congestion(Box::new(move || {
            let sink = Sink::default();
            sinks.lock().unwrap().push(sink.clone());
            Box::new(Traced(AdaptiveLedbat::new(adaptive), sink))
        }));
    }
    let mut traced = [0usize; 4];
    // With cells: each fast peer's cell's queue, every millisecond measured.
    let mut cell_queues: Vec<Vec<f64>> = Vec::new();
    if cells.is_some() {
        cell_queues = vec![Vec::new(), Vec::new()];
    }
    let warmup = start + Duration::from_secs(1);
    let end = warmup + Duration::from_secs(seconds);
    let mut first = [0usize; 4];
    let mut measuring = false;
    while net.now < end {
        if !measuring && net.now >= warmup {
            measuring = true;
            first = std::array::from_fn(|i| net.delivered[i].len());
        }
        keep_bulk_queued(&mut net, &packets, &peers);
        if measuring && cells.is_some() {
            for (to, queue) in [1, 2].into_iter().zip(&mut cell_queues) {
                queue.push(net.hop_backlog(0, to).unwrap_or_default().as_secs_f64());
            }
        }
        let next = net.now + Duration::from_millis(1);
        net.run_until(next);
        net.now = net.now.max(next);
        let ms = (net.now - start).as_millis() as u64;
        if trace.is_some_and(|(from, to)| (from..to).contains(&ms)) && ms.is_multiple_of(10) {
            let got: Vec<usize> = (1..4)
                .map(|i| {
                    net.delivered[i].len()
                        - std::mem::replace(&mut traced[i], net.delivered[i].len())
                })
                .collect();
            eprintln!(
                "{ms} ms: uplink {:.2} ms, got {got:?}",
                net.uplink_backlog(0).as_secs_f64() * 1e3
            );
            for (i, sink) in sinks.lock().unwrap().iter().enumerate() {
                eprintln!("  {i}: {}", sink.lock().unwrap());
            }
        }
    }
    let cell_queues = cells.map(|_| std::array::from_fn(|i| p50_p99_ms(&mut cell_queues[i])));
    let goodput = std::array::from_fn(|i| goodput_bps(&net, i + 1, first[i + 1], end, seconds));
    Received {
        goodput,
        cell_queues,
    }
}

/// Issue 14's fairness acceptance: one sender, three receivers, one of them on a 2 Mbit/s
/// lossy path; the other two share what is left of the sender's 20 Mbit/s uplink equally,
/// each within 20 % of its fair share, because each peer has its own bulk queue and
/// controller and the bulk lane serves peers by deficit round robin. With `auto` the
/// node's peers change controller together, so the two fast peers never share the
/// bottleneck window against rate.
#[test]
fn a_slow_lossy_peer_does_not_hold_back_bulk_to_the_others() {
    fair_shares(NodeConfig {
        bulk_controller: BulkController::Auto,
        ..NodeConfig::default()
    });
}

/// The same with the rate model ([`RateBulk`]) pacing each peer's bulk, without loss
/// repair. With it, this seed's two fast peers split 1.20 / 0.78 of their fair share
/// (without, 0.89 / 1.13; over sixteen seeds the worst is 0.778 with repair, 0.803
/// without: `fair_sweep`). The rate model does not bring two identical peers to equal
/// shares within seconds (docs/congestion.md, section 8), and the repairs sent to the
/// slow peer move which way the split falls (section 15). This test is about the
/// per-peer queues and round robin under the rate model, which repair does not touch;
/// the default (`auto`, repair on) is the first test.
#[test]
fn with_the_rate_model_a_slow_lossy_peer_does_not_hold_back_the_others() {
    fair_shares(NodeConfig {
        bulk_controller: BulkController::Rate,
        bulk_repair: false,
        ..NodeConfig::default()
    });
}

/// The same with the rate model and the receivers' rate-drop reports on: the slow
/// peer's reports cut only its own controller.
#[test]
fn with_rate_drop_reports_a_slow_lossy_peer_does_not_hold_back_the_others() {
    fair_shares(NodeConfig {
        bulk_controller: BulkController::Rate,
        rate_drop_feedback: true,
        ..NodeConfig::default()
    });
}

/// The same with the adaptive window ([`AdaptiveLedbat`]) pacing each peer's bulk.
#[test]
fn with_the_adaptive_window_a_slow_lossy_peer_does_not_hold_back_the_others() {
    fair_shares(NodeConfig {
        bulk_controller: BulkController::Adaptive,
        ..NodeConfig::default()
    });
}

/// Twenty seconds, at 1 % loss on the slow hop and the default configuration (loss
/// repair on): two windows sharing the uplink neither drift apart nor lock one out. Until
/// the adaptive window grew by a segment per round trip besides its ramp and left the
/// envelope to sparse windows, this seed ended at 1.69 and 0.26 of the fair share
/// (docs/congestion.md section 16).
#[test]
fn over_twenty_seconds_the_fast_peers_keep_their_fair_shares() {
    fair_shares_over(NodeConfig::default(), 20, 0.01, 4);
}

/// Two robots on one busy radio behind the hub's uplink: each fast peer's own hop
/// jitters by ±1 ms (in order), 20 s at 1 % loss on the slow hop, the default
/// configuration. The narrower window's minimum filter took fewer samples, read more
/// queue, and shrank further: this seed split 1.46 / 0.54 of the fair share, and 13 of
/// 16 seeds fell under 0.8, until windows that send beside each other read their queue
/// as a full filter would (docs/congestion.md section 18).
#[test]
fn behind_jittery_hops_the_fast_peers_keep_their_fair_shares() {
    fair_shares_jittered(NodeConfig::default(), 20, 0.01, Duration::from_millis(1), 3);
}

fn fair_shares(config: NodeConfig) {
    fair_shares_over(config, 5, 0.02, 5);
}

fn fair_shares_over(config: NodeConfig, seconds: u64, loss: f64, seed: u64) {
    fair_shares_jittered(config, seconds, loss, Duration::ZERO, seed);
}

/// One sender, three receivers for `seconds`, the slow hop losing `loss`, the fast
/// peers' hops jittering by `jitter` (`seed`): both fast peers get their fair share
/// within 20 %, the slow one still gets bulk.
/// Two robots each on a cell of its own (4 and 12 Mbit/s, ± 2 ms of jitter): each
/// window holds its own cell's queue near its target (p99 6-10 ms on every seed). A
/// node-wide reading shared by windows that do not share a bottleneck fills the slow
/// cell: windows that took the smaller of their envelope readings, with no test of
/// whether the two moved together, left this seed's slow cell at 43 ms at the p50 and
/// 185 at the p99 (docs/congestion.md section 20, tried and not kept).
#[test]
fn robots_on_cells_of_their_own_each_read_their_own_queue() {
    let hops = Hops {
        loss: 0.01,
        jitter: Duration::from_millis(2),
        cells: Some([4_000_000, 12_000_000]),
    };
    let got = one_sender_three_receivers(NodeConfig::default(), 10, hops, None, 2);
    let cells = got.cell_queues.expect("cells measured");
    eprintln!("cells' queues (p50, p99 ms): {cells:?}");
    for [_, p99] in cells {
        assert!(p99 < 25.0, "a cell's queue: p99 {p99} ms");
    }
    let [a, b, _] = got.goodput;
    assert!(a > 3e6 && b > 6e6, "both cells carry bulk: {a}, {b}");
}

fn fair_shares_jittered(config: NodeConfig, seconds: u64, loss: f64, jitter: Duration, seed: u64) {
    let config_repair = config.bulk_repair;
    let hops = Hops {
        loss,
        jitter,
        cells: None,
    };
    let [a, b, slow] = one_sender_three_receivers(config, seconds, hops, None, seed).goodput;
    eprintln!(
        "bulk to the fast peers {:.2} and {:.2} Mbit/s, to the slow lossy one {:.2} Mbit/s",
        a / 1e6,
        b / 1e6,
        slow / 1e6
    );
    let fair = fair_share(slow, config_repair);
    for got in [a, b] {
        assert!(
            (0.8 * fair..=1.2 * fair).contains(&got),
            "got {got}, fair share {fair}"
        );
    }
    assert!(
        slow > 0.5e6 && slow < 2e6,
        "the slow peer still gets bulk: {slow}"
    );
}

/// Each fast peer's fair share of the 20 Mbit/s uplink in inner bytes, when the slow
/// peer got `slow`: what the uplink carries (1350-byte packets in 1379 bytes on the wire,
/// 1384 when numbered for loss repair, + 16), less the slow peer's, split in two.
fn fair_share(slow: f64, bulk_repair: bool) -> f64 {
    let wire = if bulk_repair { 1400.0 } else { 1395.0 };
    (20e6 * 1350.0 / wire - slow) / 2.0
}

/// Issue 14's profiles with the default configuration, two seeds: beside saturating bulk,
/// the 1 kHz control loop's p99 stays within 2 ms of the idle link's, and bulk gets many
/// times what RFC LEDBAT with the same 250 µs target gets (which the jitter holds at two
/// packets per round trip). On `wifi` bulk gets issue 14's 80 % of the capacity (84 and
/// 81 % on these seeds, 79–87 % over seeds 1–24: the envelope of one-way delays,
/// docs/congestion.md sections 9 and 19). On `lte` the envelope (on for LTE's round trips
/// since section 10) gets 58 and 56 % here, 47–58 % over seeds 1–24, checked against 45 %:
/// issue 14's 80 % is not met there (section 10 says why).
#[test]
fn on_lte_and_wifi_bulk_flows_and_the_control_loop_keeps_its_p99() {
    on_lte_and_wifi(Bulk::Backlog, |name, seed, profile, idle, loaded| {
        report(&format!("{name}, seed {seed}"), idle, loaded);
        let config = NodeConfig::default();
        let make = Some(rfc_ledbat(config.bulk_target.unwrap()));
        let rfc = control_loop(config, make, profile, Bulk::Backlog, WARM, 12, seed);
        report(&format!("{name}, seed {seed}, RFC LEDBAT"), idle, &rfc);
        assert_keeps_the_promise(name, idle, loaded);
        let floor = if name == "wifi" { 0.8 } else { 0.45 };
        assert!(
            loaded.goodput >= floor * loaded.capacity,
            "{name}: bulk {} of {}",
            loaded.goodput,
            loaded.capacity
        );
        assert!(
            loaded.goodput >= 5.0 * rfc.goodput,
            "{name}: {} against RFC LEDBAT's {}",
            loaded.goodput,
            rfc.goodput
        );
    });
}

/// Bulk from a TCP-like sender ([`Bulk::Tcp`]), as `iperf3` over a TUN device is between
/// real daemons: its window, cut by the links' random losses, is often below the
/// tunnel's, so the tunnel's sender is application-limited. A window that grew while
/// little flowed was spent at once when TCP caught up, and the queue broke the control
/// loop's p99 between real daemons on LTE (docs/congestion.md section 10) and, in this
/// simulator, on Wi-Fi in 3 of 8 seeds (worst +3.71 ms; seed 5 here +3.27) until the
/// envelope's window cap applied on every path (section 11). The loop keeps its p99 within 2 ms of the idle
/// link's, and the tunnel leaves TCP at least two fifths of what TCP gets through it
/// unpaced on `wifi` (86 % of the link paced with loss repair, 78 % unpaced), and a
/// quarter on `lte`: there the window, small in LTE's long-delay seconds (section 10),
/// holds TCP to 18 and 38 % of the link against 42 and 49 % unpaced, where unpaced TCP
/// raises the loop's p99 by 65 and 100 ms (section 15, since TCP's timeouts are Linux's).
#[test]
fn beside_an_application_limited_tcp_sender_the_control_loop_keeps_its_p99() {
    on_lte_and_wifi(Bulk::Tcp, |name, seed, profile, idle, loaded| {
        let unpaced_config = NodeConfig {
            bulk_target: None,
            ..NodeConfig::default()
        };
        let unpaced = control_loop(unpaced_config, None, profile, Bulk::Tcp, WARM, 12, seed);
        report(&format!("{name}, seed {seed}, tcp"), idle, loaded);
        report(
            &format!("{name}, seed {seed}, tcp, unpaced"),
            idle,
            &unpaced,
        );
        assert_keeps_the_promise(name, idle, loaded);
        let floor = if name == "lte" { 0.25 } else { 0.4 };
        assert!(
            loaded.goodput >= floor * unpaced.goodput,
            "{name}: tcp got {} through the tunnel, {} unpaced",
            loaded.goodput,
            unpaced.goodput
        );
    });
}

/// The acceptance tests' runs: 6 s of warm-up, then 12 s measured.
const WARM: Duration = Duration::from_secs(6);

/// Issue 14's LTE and Wi-Fi profiles on seeds 3 and 5: `check` gets the profile's name,
/// the seed, the profile, and the loop on the idle link and beside `bulk`, both with the
/// default configuration.
fn on_lte_and_wifi(bulk: Bulk, mut check: impl FnMut(&str, u64, &Profile, &Run, &Run)) {
    for seed in [3, 5] {
        for (name, profile) in [("lte", Profile::lte()), ("wifi", Profile::wifi())] {
            let config = NodeConfig::default;
            let idle = control_loop(config(), None, &profile, Bulk::Idle, WARM, 12, seed);
            let loaded = control_loop(config(), None, &profile, bulk, WARM, 12, seed);
            check(name, seed, &profile, &idle, &loaded);
        }
    }
}

/// Issue 14's PMTU bug: with bulk pacing off, bulk overflows the link's drop-tail buffer;
/// path MTU discovery took the drops (and the probes delayed behind hundreds of
/// milliseconds of queue) for a black hole, shrank the path MTU below the 1350-byte
/// packets and goodput fell to 0 on `tbf` and `lte`. Congestion must leave the path MTU
/// alone: it stays at the maximum (1350 + 5 + 29 + 28 bytes: the MTU, the sequenced bulk
/// header of loss repair, the data packet's overhead, IPv4 and UDP), and bulk flows.
#[test]
fn unpaced_bulk_through_a_full_buffer_keeps_the_path_mtu() {
    let tbf = Profile::fixed(bauxite_netem::Impairments {
        delay: Duration::from_micros(50),
        rate_bps: Some(20_000_000),
        buffer_bytes: Some(1_000_000),
        ..Default::default()
    });
    let unpaced = NodeConfig {
        bulk_target: None,
        ..NodeConfig::default()
    };
    for (name, profile) in [("tbf", tbf), ("lte", Profile::lte())] {
        let warm = Duration::from_secs(3);
        let idle = control_loop(
            NodeConfig::default(),
            None,
            &profile,
            Bulk::Idle,
            warm,
            6,
            3,
        );
        let loaded = control_loop(unpaced.clone(), None, &profile, Bulk::Backlog, warm, 6, 3);
        report(&format!("{name}, unpaced"), &idle, &loaded);
        assert_eq!(
            loaded.path_mtu,
            (
                Some(NodeConfig::default().max_plaintext() as u16 + 29 + 28),
                PmtuPhase::Complete
            ),
            "{name}: congestion is not an MTU black hole"
        );
        assert!(
            loaded.goodput >= 0.5 * loaded.capacity,
            "{name}: bulk {} of {}",
            loaded.goodput,
            loaded.capacity
        );
    }
}
