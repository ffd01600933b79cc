//! Path MTU on the simulator: a link that drops datagrams above its MTU (as a path with
//! DF set and fragments or ICMP filtered does). Discovery converges to the link's size,
//! a shrinking path is detected as a black hole and re-searched, an inner packet too
//! large for the path is answered with ICMP (or fragmented, without DF) instead of being
//! lost, and TCP SYNs are clamped. "Never blackholed" is checked against the ground
//! truth: every packet handed to a node is delivered, fragmented and delivered, or
//! answered.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::time::{Duration, Instant};

use bauxite_conduit::Metrics;
use bauxite_conduit::ip::build;
use bauxite_conduit::ip::{IpView, PROTO_ICMP};
use bauxite_conduit::node::{NodeConfig, PeerStatus, TunVerdict};
use bauxite_conduit::path::PmtuPhase;
use bauxite_conduit::sim::{LinkConfig, SimNet};

/// IPv4 + UDP + the mesh's data overhead: an inner packet of `mtu - OUTER` fits.
const OUTER: usize = 28 + 29;

/// The largest datagram discovery searches for: the largest plaintext (the TUN MTU, plus
/// loss repair's 5-byte header on numbered bulk) and [`OUTER`].
fn searched_max() -> u16 {
    (NodeConfig::default().max_plaintext() + OUTER) as u16
}

fn net_with_mtu(mtu: Option<usize>, seed: u64) -> SimNet {
    let link = LinkConfig {
        mtu,
        ..LinkConfig::default()
    };
    SimNet::new(NodeConfig::default(), link, seed, Instant::now())
}

/// A UDP packet of `len` bytes in total from node `from` to the other, DF set.
fn udp(net: &SimNet, from: usize, len: usize, tag: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let (src, dst) = (net.vips[from].addr(), net.vips[1 - from].addr());
    build::ipv4_udp(src, dst, 40000, 9000, &vec![tag; len - 28], &mut out);
    out
}

fn clear_df(packet: &mut [u8]) {
    packet[6] &= !0x40;
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = build::internet_checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

fn status(net: &SimNet, i: usize) -> PeerStatus {
    net.nodes[i].peer_status(net.now).remove(0)
}

/// Connects the two nodes with a small packet and lets discovery run.
fn connect(net: &mut SimNet) {
    let ping = udp(net, 0, 100, 0);
    assert_eq!(
        net.send_from(0, &ping),
        TunVerdict::Queued(bauxite_conduit::Lane::Bulk)
    );
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.delivered[1].len(), 1, "session up");
}

/// The next-hop MTUs of the ICMP "fragmentation needed" answers node `i` wrote back to
/// its TUN, after checking each is a well-formed answer to one of `i`'s packets.
fn frag_needed(net: &SimNet, i: usize) -> Vec<u16> {
    net.local[i]
        .iter()
        .map(|d| {
            let view = IpView::parse(&d.packet).unwrap();
            assert_eq!(view.protocol(), PROTO_ICMP);
            assert_eq!(view.dst(), std::net::IpAddr::from(net.vips[i].addr()));
            assert_eq!(view.src(), std::net::IpAddr::from(net.vips[1 - i].addr()));
            let icmp = view.payload();
            assert_eq!(build::internet_checksum(icmp), 0);
            assert_eq!((icmp[0], icmp[1]), (3, 4));
            u16::from_be_bytes([icmp[6], icmp[7]])
        })
        .collect()
}

#[test]
fn discovery_converges_to_the_link_mtu_on_both_sides() {
    for link_mtu in [1200, 1280, 1333, 1400] {
        let mut net = net_with_mtu(Some(link_mtu), 1);
        connect(&mut net);
        for i in 0..2 {
            let s = status(&net, i);
            assert_eq!(
                s.path_mtu,
                Some(link_mtu as u16),
                "node {i}, link {link_mtu}"
            );
            assert_eq!(s.pmtu_phase, PmtuPhase::Complete);
            assert_eq!(
                net.nodes[i].path_inner_mtu(net.nodes[1 - i].peer_id()),
                link_mtu - OUTER
            );
        }
        let probes_lost = net.stats.mtu_dropped;
        // The largest inner packet that fits arrives; nothing data-sized hit the limit.
        let fits = udp(&net, 0, link_mtu - OUTER, 1);
        net.send_from(0, &fits);
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.delivered[1].last().unwrap().packet, fits);
        assert_eq!(
            net.stats.mtu_dropped, probes_lost,
            "only probes were ever too large"
        );
        assert!(net.local[0].is_empty());
    }
}

#[test]
fn a_path_that_carries_everything_is_found_at_once() {
    let mut net = net_with_mtu(None, 2);
    connect(&mut net);
    let s = status(&net, 0);
    assert_eq!(s.path_mtu, Some(searched_max()));
    let m = net.nodes[0].metrics();
    assert_eq!(
        Metrics::get(&m.pmtu_probes_sent),
        2,
        "the base, then the maximum"
    );
    assert_eq!(Metrics::get(&m.pmtu_probes_acked), 2);
}

#[test]
fn a_first_large_packet_waits_for_discovery_instead_of_being_refused() {
    // A path that carries it: the packet that opened the session arrives, no ICMP.
    let mut net = net_with_mtu(None, 3);
    let big = udp(&net, 0, 1350, 7);
    net.send_from(0, &big);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.delivered[1].len(), 1);
    assert_eq!(net.delivered[1][0].packet, big);
    assert!(net.local[0].is_empty(), "no sender told a smaller size");

    // A narrow one: answered with the base size as soon as the maximum is lost, then
    // with the discovered size.
    let mut net = net_with_mtu(Some(1250), 3);
    let big = udp(&net, 0, 1350, 7);
    net.send_from(0, &big);
    net.run_for(Duration::from_secs(10));
    assert!(net.delivered[1].is_empty());
    assert_eq!(frag_needed(&net, 0), [1200 - OUTER as u16]);
    net.send_from(0, &big);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        frag_needed(&net, 0),
        [1200 - OUTER as u16, 1250 - OUTER as u16]
    );
    let m = net.nodes[0].metrics();
    assert_eq!(Metrics::get(&m.tx_too_big), 2);
    assert_eq!(Metrics::get(&m.icmp_too_big_sent), 2);
}

#[test]
fn an_oversized_packet_is_answered_or_fragmented_never_lost() {
    let mut net = net_with_mtu(Some(1280), 4);
    connect(&mut net);
    let limit = 1280 - OUTER;
    // DF set: refused with "fragmentation needed", next-hop MTU = what fits.
    let df = udp(&net, 0, limit + 1, 2);
    net.send_from(0, &df);
    net.run_for(Duration::from_secs(1));
    assert_eq!(frag_needed(&net, 0), [limit as u16]);
    let icmp = &net.local[0][0].packet;
    assert_eq!(&icmp[28..48], &df[..20], "quotes the refused packet");
    assert_eq!(net.delivered[1].len(), 1, "only the first ping");

    // No DF: fragmented, every fragment fits and arrives, and they reassemble.
    let mut loose = udp(&net, 0, 1350, 3);
    clear_df(&mut loose);
    net.send_from(0, &loose);
    net.run_for(Duration::from_secs(1));
    let fragments: Vec<_> = net.delivered[1][1..]
        .iter()
        .map(|d| d.packet.clone())
        .collect();
    assert_eq!(fragments.len(), 2);
    let mut payload = Vec::new();
    for f in &fragments {
        assert!(f.len() <= limit);
        let offset = usize::from(u16::from_be_bytes([f[6], f[7]]) & 0x1fff) * 8;
        assert_eq!(offset, payload.len());
        payload.extend_from_slice(&f[20..]);
    }
    assert_eq!(payload, loose[20..]);
    assert_eq!(Metrics::get(&net.nodes[0].metrics().tx_fragmented), 1);
    assert_eq!(
        frag_needed(&net, 0).len(),
        1,
        "no ICMP for a packet that may be fragmented"
    );
}

#[test]
fn icmp_answers_are_rate_limited() {
    let mut net = net_with_mtu(Some(1280), 5);
    connect(&mut net);
    let df = udp(&net, 0, 1300, 2);
    for _ in 0..100 {
        net.send_from(0, &df);
    }
    net.run_for(Duration::from_millis(1));
    let m = net.nodes[0].metrics();
    assert_eq!(
        Metrics::get(&m.tx_too_big),
        100,
        "every one refused and counted"
    );
    assert_eq!(
        net.local[0].len(),
        bauxite_conduit::node::ICMP_BURST as usize,
        "answered up to the burst"
    );
}

#[test]
fn a_path_that_shrinks_mid_session_is_detected_and_searched_again() {
    let mut net = net_with_mtu(None, 6);
    connect(&mut net);
    assert_eq!(status(&net, 0).path_mtu, Some(searched_max()));
    // A route change: the path now carries 1250 bytes. Full-size packets vanish while
    // small ones (and the peer's acknowledgements of them) still pass.
    net.link.mtu = Some(1250);
    let big = udp(&net, 0, 1350, 4);
    let small = udp(&net, 0, 200, 5);
    let shrunk_at = net.now;
    let mut detected = None;
    for round in 0..60 {
        net.send_from(0, &big);
        net.send_from(0, &small);
        net.run_for(Duration::from_millis(100));
        if detected.is_none() && Metrics::get(&net.nodes[0].metrics().pmtu_black_holes) == 1 {
            detected = Some(net.now - shrunk_at);
        }
        if status(&net, 0).pmtu_phase == PmtuPhase::Complete && detected.is_some() && round > 30 {
            break;
        }
    }
    let detected = detected.expect("black hole detected");
    assert!(
        detected <= Duration::from_secs(3),
        "detected after {detected:?}"
    );
    assert_eq!(status(&net, 0).path_mtu, Some(1250));
    assert_eq!(status(&net, 0).pmtu_phase, PmtuPhase::Complete);
    // From then on every full-size packet is answered with the size that fits.
    let answers = frag_needed(&net, 0);
    assert!(!answers.is_empty());
    assert_eq!(*answers.last().unwrap(), (1250 - OUTER) as u16);
    let before = net.delivered[1].len();
    net.local[0].clear();
    net.send_from(0, &big);
    net.send_from(0, &udp(&net, 0, 1250 - OUTER, 6));
    net.run_for(Duration::from_secs(1));
    assert_eq!(frag_needed(&net, 0), [(1250 - OUTER) as u16]);
    assert_eq!(
        net.delivered[1].len(),
        before + 1,
        "the packet that fits arrives"
    );
}

#[test]
fn tcp_syn_and_syn_ack_are_clamped_to_the_path() {
    let mut net = net_with_mtu(Some(1300), 7);
    connect(&mut net);
    let (a, b) = (net.vips[0].addr(), net.vips[1].addr());
    let mut syn = Vec::new();
    build::ipv4_tcp_syn(a, b, (40000, 5001), 1460, false, &mut syn);
    net.send_from(0, &syn);
    let mut syn_ack = Vec::new();
    build::ipv4_tcp_syn(b, a, (5001, 40000), 1460, true, &mut syn_ack);
    net.send_from(1, &syn_ack);
    net.run_for(Duration::from_secs(1));
    let want = (1300 - OUTER - 40) as u16;
    for (i, sent) in [(1, &syn), (0, &syn_ack)] {
        let got = &net.delivered[i].last().unwrap().packet;
        assert_eq!(got.len(), sent.len());
        let tcp = &got[20..];
        assert_eq!(tcp[13], sent[33], "same flags");
        assert_eq!(u16::from_be_bytes([tcp[22], tcp[23]]), want, "MSS clamped");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&got[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        assert_eq!(
            build::internet_checksum(&pseudo),
            0,
            "TCP checksum still valid"
        );
    }
    assert_eq!(Metrics::get(&net.nodes[0].metrics().mss_clamped), 1);
    assert_eq!(Metrics::get(&net.nodes[1].metrics().mss_clamped), 1);
}
