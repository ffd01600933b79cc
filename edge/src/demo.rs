//! `bauxite demo`: two nodes in one process over a simulated link, showing the
//! handshake, ping over the mesh, an attacker refused, and the critical lane holding its
//! latency while bulk traffic saturates the link — then the same load through one FIFO
//! queue for comparison, and on a slow uplink whose buffer sits below the node, with bulk
//! pacing and without.
//!
//! Everything runs on the simulator's virtual clock ([`bauxite_conduit::sim`]), so the
//! figures are the data plane's scheduling behaviour, identical on every machine, not a
//! measurement of this host. Real-network figures live in `docs/benchmarks.md`.

use std::io::Write;
use std::time::{Duration, Instant};

use bauxite_conduit::Lane;
use bauxite_conduit::ip::build;
use bauxite_conduit::metrics::Metrics;
use bauxite_conduit::node::{Event, NodeConfig};
use bauxite_conduit::sim::{Attacker, LinkConfig, SimNet};

/// Demo parameters.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    /// Simulated link rate.
    pub link_mbps: u64,
    /// Seconds of saturating bulk traffic.
    pub bulk_seconds: u64,
    /// Seed of the simulation.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            link_mbps: 20,
            bulk_seconds: 5,
            seed: 2026,
        }
    }
}

/// Latency percentiles of a stream of packets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Maximum.
    pub max: Duration,
    /// Packets measured.
    pub count: usize,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).copied().unwrap_or_default()
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
            count: samples.len(),
        }
    }
}

/// What the demo measured.
#[derive(Clone, Debug, Default)]
pub struct DemoReport {
    /// Virtual time from first packet to a confirmed session.
    pub handshake: Duration,
    /// Echo requests sent and replies received.
    pub pings: (usize, usize),
    /// Round-trip times of the pings.
    pub ping_rtt: Latency,
    /// Copies injected by the attacker (replays, tampered).
    pub attacks: (u64, u64),
    /// Refusals counted by the nodes (replays, authentication failures).
    pub refused: (u64, u64),
    /// Control-loop one-way latency with lanes, bulk saturating.
    pub control_with_lanes: Latency,
    /// Control-loop one-way latency through a single FIFO queue, same load.
    pub control_fifo: Latency,
    /// Bulk goodput with lanes, in Mbit/s.
    pub bulk_mbps: f64,
    /// Control-loop latency on a buffered uplink with bulk pacing (the default), and the
    /// bulk goodput there in Mbit/s.
    pub paced: (Latency, f64),
    /// The same without bulk pacing.
    pub unpaced: (Latency, f64),
}

const CONTROL_PORT: u16 = 7000;

fn udp(net: &SimNet, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (src, dst) = (net.vips[0].addr(), net.vips[1].addr());
    build::ipv4_udp(src, dst, port, port, payload, &mut out);
    out
}

/// Runs the demo, writing a narrated report to `out`.
pub fn run(
    out: &mut impl Write,
    options: DemoOptions,
    start: Instant,
) -> std::io::Result<DemoReport> {
    let mut report = DemoReport::default();
    let link = LinkConfig {
        latency: Duration::from_millis(5),
        loss: 0.01,
        reorder: 0.05,
        rate_bps: Some(options.link_mbps * 1_000_000),
        ..LinkConfig::default()
    };
    writeln!(out, "Bauxite demo: two nodes in one process, virtual clock")?;
    writeln!(
        out,
        "  link: {} Mbit/s, 5 ms one-way, 1% loss, 5% reordering; cipher ChaCha20-Poly1305",
        options.link_mbps
    )?;

    let mut net = SimNet::new(NodeConfig::default(), link, options.seed, start);
    net.attacker = Attacker {
        replay_every: 5,
        tamper_every: 7,
    };
    handshake_and_ping(out, &mut net, &mut report)?;
    // Let the attacker's last copies land before counting.
    net.run_for(Duration::from_millis(100));

    let s = &net.stats;
    report.attacks = (s.replays_injected, s.tampers_injected);
    let sum = |f: fn(&Metrics) -> u64| net.nodes.iter().map(|n| f(n.metrics())).sum::<u64>();
    report.refused = (
        // A replay of a recent packet is refused before decryption as a duplicate.
        sum(|m| Metrics::get(&m.rx_replayed) + Metrics::get(&m.rx_duplicates)),
        sum(|m| Metrics::get(&m.rx_auth_failed) + Metrics::get(&m.rx_unknown_session)),
    );
    writeln!(
        out,
        "[3] attacker on the path: injected {} replays and {} tampered copies -> refused {} as replays, {} as forgeries; none delivered",
        report.attacks.0, report.attacks.1, report.refused.0, report.refused.1
    )?;

    let (with_lanes, bulk_mbps) = saturate(&mut net, options, false);
    report.control_with_lanes = with_lanes;
    report.bulk_mbps = bulk_mbps;
    let mut fifo_net = SimNet::new(NodeConfig::default(), link, options.seed, start);
    let (fifo, _) = saturate(&mut fifo_net, options, true);
    report.control_fifo = fifo;
    writeln!(
        out,
        "[4] 1 kHz control loop (64-byte UDP) while bulk saturates the link for {} s:",
        options.bulk_seconds
    )?;
    print_latency(out, "critical lane     ", with_lanes)?;
    print_latency(out, "single FIFO queue ", fifo)?;
    writeln!(
        out,
        "    bulk goodput {:.1} Mbit/s of {} Mbit/s",
        bulk_mbps, options.link_mbps
    )?;
    buffered_uplink(out, options, start, &mut report)?;
    Ok(report)
}

/// Step 5: the lanes cannot reorder a queue below the node (a modem's or a qdisc's
/// buffer); bulk pacing keeps that queue short.
fn buffered_uplink(
    out: &mut impl Write,
    options: DemoOptions,
    start: Instant,
    report: &mut DemoReport,
) -> std::io::Result<()> {
    let link = LinkConfig {
        latency: Duration::from_millis(5),
        rate_bps: Some(options.link_mbps * 1_000_000),
        queue_limit: Some(1_000_000),
        ..LinkConfig::default()
    };
    // Connected first, so the figures show the queue, not the handshake.
    let connected = |config: NodeConfig| {
        let mut net = SimNet::new(config, link, options.seed, start);
        let hello = udp(&net, 9000, b"hello");
        net.nodes[0].handle_tun_packet(net.now, &hello);
        net.run_for(Duration::from_secs(1));
        net
    };
    report.paced = saturate(&mut connected(NodeConfig::default()), options, false);
    let unpaced_config = NodeConfig {
        bulk_target: None,
        ..NodeConfig::default()
    };
    report.unpaced = saturate(&mut connected(unpaced_config), options, false);
    writeln!(
        out,
        "[5] the same on an uplink with a 1 MB buffer below the node (like a modem or tbf):"
    )?;
    print_latency(out, "bulk paced        ", report.paced.0)?;
    print_latency(out, "bulk unpaced      ", report.unpaced.0)?;
    writeln!(
        out,
        "    bulk goodput {:.1} Mbit/s paced, {:.1} Mbit/s unpaced",
        report.paced.1, report.unpaced.1
    )
}

fn print_latency(out: &mut impl Write, label: &str, l: Latency) -> std::io::Result<()> {
    writeln!(
        out,
        "    {label} one-way p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} packets)",
        l.p50.as_secs_f64() * 1e3,
        l.p99.as_secs_f64() * 1e3,
        l.max.as_secs_f64() * 1e3,
        l.count
    )
}

fn handshake_and_ping(
    out: &mut impl Write,
    net: &mut SimNet,
    report: &mut DemoReport,
) -> std::io::Result<()> {
    let t0 = net.now;
    let mut first = Vec::new();
    build::ipv4_icmp_echo(
        net.vips[0].addr(),
        net.vips[1].addr(),
        1,
        0,
        &[0u8; 56],
        &mut first,
    );
    net.send_from(0, &first);
    let peer = net.nodes[1].peer_id();
    while !net.nodes[0].is_connected(peer, net.now) && net.now < t0 + Duration::from_secs(60) {
        net.run_for(Duration::from_millis(1));
    }
    report.handshake = net.now - t0;
    let initiator = matches!(
        net.nodes[0].poll_event(),
        Some(Event::HandshakeCompleted {
            initiator: true,
            ..
        })
    );
    writeln!(
        out,
        "[1] handshake (Noise IK) {} -> {}: {} in {:.1} ms",
        net.nodes[0].peer_id(),
        peer,
        if initiator { "completed" } else { "FAILED" },
        report.handshake.as_secs_f64() * 1e3
    )?;

    let count = 20;
    let mut rtts = Vec::new();
    for seq in 1..=count {
        let mut request = Vec::new();
        build::ipv4_icmp_echo(
            net.vips[0].addr(),
            net.vips[1].addr(),
            1,
            seq,
            &[0u8; 56],
            &mut request,
        );
        let sent = net.now;
        let seen = net.delivered[0].len();
        net.delivered[1].clear();
        net.send_from(0, &request);
        // Node 1 plays the kernel: answer the echo request that reaches its TUN.
        let deadline = sent + Duration::from_secs(1);
        while net.now < deadline && net.delivered[1].iter().all(|d| d.packet != request) {
            net.run_for(Duration::from_micros(100));
        }
        if net.delivered[1].iter().any(|d| d.packet == request) {
            let mut reply = Vec::new();
            build::ipv4_icmp_echo(
                net.vips[1].addr(),
                net.vips[0].addr(),
                1,
                seq,
                &[0u8; 56],
                &mut reply,
            );
            reply[20] = 0; // ICMP type 0: echo reply
            net.send_from(1, &reply);
        }
        while net.now < deadline && net.delivered[0].len() == seen {
            net.run_for(Duration::from_micros(100));
        }
        if net.delivered[0].len() > seen {
            rtts.push(net.delivered[0][seen].at - sent);
        }
    }
    report.pings = (count as usize, rtts.len());
    report.ping_rtt = Latency::of(rtts);
    writeln!(
        out,
        "[2] ping {} -> {} over the mesh: {}/{} replies, rtt p50 {:.2} ms (1% loss on the link)",
        net.vips[0],
        net.vips[1],
        report.pings.1,
        report.pings.0,
        report.ping_rtt.p50.as_secs_f64() * 1e3
    )
}

/// Runs a 1 kHz control loop beside a bulk stream at twice the link rate; returns the
/// control loop's one-way latency and the bulk goodput. `fifo` puts everything in one lane.
fn saturate(net: &mut SimNet, options: DemoOptions, fifo: bool) -> (Latency, f64) {
    net.attacker = Attacker::default();
    net.delivered[1].clear();
    let start = net.now;
    let bulk_per_ms = (options.link_mbps * 1_000_000 / 8 / 1000 / 1200 * 2).max(1);
    let bulk_payload = vec![0xB5u8; 1200];
    let mut sent_at = Vec::new();
    let total_ms = options.bulk_seconds * 1000;
    for ms in 0..total_ms {
        let mut tag = [0u8; 36];
        tag[..4].copy_from_slice(&(ms as u32).to_be_bytes());
        let control = udp(net, CONTROL_PORT, &tag);
        let lane = if fifo { Lane::Bulk } else { Lane::Critical };
        net.nodes[0].handle_tun_packet_in(net.now, lane, &control);
        sent_at.push(net.now);
        for _ in 0..bulk_per_ms {
            let bulk = udp(net, 9000, &bulk_payload);
            net.nodes[0].handle_tun_packet_in(net.now, Lane::Bulk, &bulk);
        }
        net.run_for(Duration::from_millis(1));
    }
    let end = net.now;
    net.run_for(Duration::from_secs(30));
    let mut control = Vec::new();
    let mut bulk_bytes = 0usize;
    for d in &net.delivered[1] {
        let port = u16::from_be_bytes([d.packet[22], d.packet[23]]);
        if port == CONTROL_PORT {
            let ms = u32::from_be_bytes([d.packet[28], d.packet[29], d.packet[30], d.packet[31]]);
            if let Some(t) = sent_at.get(ms as usize) {
                control.push(d.at - *t);
            }
        } else if d.at <= end {
            bulk_bytes += d.packet.len();
        }
    }
    let seconds = (end - start).as_secs_f64().max(1e-9);
    (
        Latency::of(control),
        bulk_bytes as f64 * 8.0 / seconds / 1e6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a base instant for the virtual clock
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn demo_shows_handshake_ping_attacks_and_lane_isolation() {
        let mut out = Vec::new();
        let options = DemoOptions {
            bulk_seconds: 2,
            ..DemoOptions::default()
        };
        let r = run(&mut out, options, start()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("[1] handshake (Noise IK)") && text.contains("completed"),
            "{text}"
        );
        assert!(r.handshake < Duration::from_millis(100));
        assert!(r.pings.1 >= 18, "{:?}", r.pings);
        assert!(r.attacks.0 > 0 && r.attacks.1 > 0);
        assert_eq!(r.refused.0 + r.refused.1, r.attacks.0 + r.attacks.1);
        // Bound: 5 ms latency + 3 ms reordering delay + one 1250-byte datagram ahead
        // (0.5 ms at 20 Mbit/s) + its own serialization.
        assert!(
            r.control_with_lanes.p99 < Duration::from_millis(9),
            "{:?}",
            r.control_with_lanes
        );
        assert!(
            r.control_fifo.p99 > Duration::from_millis(100),
            "{:?}",
            r.control_fifo
        );
        assert!(r.bulk_mbps > 17.0, "{}", r.bulk_mbps);
        // Buffered uplink: 5 ms latency plus at most a couple of bulk packets ahead.
        assert!(r.paced.0.p99 < Duration::from_millis(7), "{:?}", r.paced);
        assert!(r.paced.1 > 17.0, "{:?}", r.paced);
        assert!(
            r.unpaced.0.p99 > Duration::from_millis(100),
            "{:?}",
            r.unpaced
        );
        assert!(text.contains("[5]"), "{text}");
    }
}
