//! The userspace lane classifier: a pure function of the packet bytes.
//!
//! Invariant: every byte slice maps to exactly one lane, without panicking or allocating;
//! bytes that are not IP fall through to [`Lane::Bulk`] unless they are small.

use super::rules::LaneRules;
use crate::Lane;
use crate::ip::{IpView, PROTO_ICMP, PROTO_ICMPV6};

/// Packets shorter than this many bytes ride the critical lane (control messages are small).
pub const SMALL_PACKET_BYTES: usize = 100;

/// TCP/UDP port whose traffic (either direction) rides the telemetry lane.
pub const TELEMETRY_PORT: u16 = 5006;

/// Picks the lane for an outbound IP packet, first matching rule wins:
/// 1. shorter than [`SMALL_PACKET_BYTES`], or ICMP (IPv4 protocol 1) / ICMPv6 (IPv6 next
///    header 58): [`Lane::Critical`];
/// 2. TCP or UDP with source or destination port [`TELEMETRY_PORT`]: [`Lane::Telemetry`];
/// 3. everything else, unparseable packets included: [`Lane::Bulk`].
pub fn classify(packet: &[u8]) -> Lane {
    classify_with(&LaneRules::default(), packet)
}

/// [`classify`] with the operator's [`LaneRules`] between rules 1 and 2: small and ICMP
/// packets stay critical, then the first matching rule decides, then port 5006 and bulk.
pub fn classify_with(rules: &LaneRules, packet: &[u8]) -> Lane {
    // Size first: it needs no parsing, and a small packet is latency-bound whatever it is.
    if packet.len() < SMALL_PACKET_BYTES {
        return Lane::Critical;
    }
    let Ok(view) = IpView::parse(packet) else {
        return Lane::Bulk;
    };
    match (view.version(), view.protocol()) {
        (4, PROTO_ICMP) | (6, PROTO_ICMPV6) => return Lane::Critical,
        _ => {}
    }
    if let Some(lane) = rules.lane_for(&view) {
        return lane;
    }
    // Ports are only present for TCP and UDP (see `ip`), so this is the whole port rule.
    if view.src_port() == Some(TELEMETRY_PORT) || view.dst_port() == Some(TELEMETRY_PORT) {
        return Lane::Telemetry;
    }
    Lane::Bulk
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::ip::{PROTO_UDP, build};

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

    #[test]
    fn small_and_icmp_packets_are_critical() {
        let mut pkt = Vec::new();
        build::ipv4_udp(A, B, 1, 2, &[0; 20], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Critical, "48-byte UDP");
        build::ipv4_icmp_echo(A, B, 1, 1, &[0; 1000], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Critical, "large ICMP echo");
        build::ipv6(
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            PROTO_ICMPV6,
            &[0; 200],
            &mut pkt,
        );
        assert_eq!(classify(&pkt), Lane::Critical, "ICMPv6");
        assert_eq!(classify(&[]), Lane::Critical, "empty is small");
    }

    #[test]
    fn port_5006_is_telemetry_either_way() {
        let mut pkt = Vec::new();
        build::ipv4_udp(A, B, 40000, TELEMETRY_PORT, &[0; 200], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Telemetry);
        build::ipv4_tcp(A, B, TELEMETRY_PORT, 40000, &[0; 200], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Telemetry);
        let mut udp = vec![0x13, 0x8e, 0x9c, 0x40, 0, 0, 0, 0];
        udp.resize(200, 0);
        build::ipv6(
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            PROTO_UDP,
            &udp,
            &mut pkt,
        );
        assert_eq!(classify(&pkt), Lane::Telemetry, "IPv6 UDP from 5006");
    }

    #[test]
    fn everything_else_is_bulk() {
        let mut pkt = Vec::new();
        build::ipv4_tcp(A, B, 40000, 443, &[0; 1200], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Bulk);
        // Protocol 58 means nothing special inside IPv4.
        build::ipv4(A, B, PROTO_ICMPV6, &[0; 200], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Bulk);
        assert_eq!(classify(&[0xff; 500]), Lane::Bulk, "not IP");
    }

    use std::ops::RangeInclusive;

    use crate::scheduler::{LaneProtocol, LaneRule, LaneRules};

    fn rule(protocol: LaneProtocol, ports: RangeInclusive<u16>, lane: Lane) -> LaneRule {
        LaneRule {
            protocol,
            ports,
            lane,
        }
    }

    /// ROS 2 domain 42 (see citadel's `rtps`): participant 0's user-data unicast port is
    /// 7400 + 250 × 42 + 11 = 17911; the domain owns 17900-18149.
    #[test]
    fn rtps_ports_of_domain_42_follow_the_configured_rules() {
        let rules = LaneRules::new(vec![
            rule(LaneProtocol::Udp, 17911..=17911, Lane::Critical),
            rule(LaneProtocol::Udp, 17900..=18149, Lane::Telemetry),
        ])
        .unwrap();
        let mut pkt = Vec::new();
        build::ipv4_udp(A, B, 40000, 17911, &[0; 300], &mut pkt);
        assert_eq!(classify(&pkt), Lane::Bulk, "no rules: bulk");
        assert_eq!(
            classify_with(&rules, &pkt),
            Lane::Critical,
            "/cmd_vel's port"
        );
        build::ipv4_udp(A, B, 17911, 40000, &[0; 300], &mut pkt);
        assert_eq!(
            classify_with(&rules, &pkt),
            Lane::Critical,
            "either direction"
        );
        build::ipv4_udp(A, B, 40000, 17913, &[0; 300], &mut pkt);
        assert_eq!(
            classify_with(&rules, &pkt),
            Lane::Telemetry,
            "rest of the domain"
        );
        build::ipv4_tcp(A, B, 40000, 17911, &[0; 300], &mut pkt);
        assert_eq!(
            classify_with(&rules, &pkt),
            Lane::Bulk,
            "a UDP rule ignores TCP"
        );
        build::ipv4_udp(A, B, 40000, 18150, &[0; 300], &mut pkt);
        assert_eq!(
            classify_with(&rules, &pkt),
            Lane::Bulk,
            "outside the domain"
        );
        // Small packets stay critical whatever the rules say.
        let bulk = LaneRules::new(vec![rule(LaneProtocol::Any, 0..=65535, Lane::Bulk)]).unwrap();
        build::ipv4_udp(A, B, 40000, 17911, &[0; 20], &mut pkt);
        assert_eq!(classify_with(&bulk, &pkt), Lane::Critical);
        // Rules come before the built-in telemetry port.
        build::ipv4_udp(A, B, 40000, TELEMETRY_PORT, &[0; 300], &mut pkt);
        assert_eq!(classify_with(&bulk, &pkt), Lane::Bulk);
    }

    #[test]
    fn bad_rule_lists_are_refused_by_index() {
        let e = LaneRules::new(vec![
            rule(LaneProtocol::Any, 1..=2, Lane::Bulk),
            rule(LaneProtocol::Udp, RangeInclusive::new(9, 3), Lane::Critical),
        ])
        .unwrap_err();
        assert!(e.contains("lane rule 1") && e.contains("backwards"), "{e}");
        let many = vec![rule(LaneProtocol::Any, 1..=1, Lane::Bulk); 65];
        assert!(LaneRules::new(many).unwrap_err().contains("at most 64"));
    }

    proptest! {
        /// Rules never move a small packet off the critical lane, and no rules is the
        /// built-in classifier.
        #[test]
        fn rules_keep_the_built_in_guarantees(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            lo in any::<u16>(),
            span in 0u16..100,
        ) {
            let rules = LaneRules::new(vec![rule(LaneProtocol::Any, lo..=lo.saturating_add(span), Lane::Bulk)]).unwrap();
            if bytes.len() < SMALL_PACKET_BYTES {
                prop_assert_eq!(classify_with(&rules, &bytes), Lane::Critical);
            }
            prop_assert_eq!(classify_with(&LaneRules::default(), &bytes), classify(&bytes));
        }
    }

    proptest! {
        #[test]
        fn classify_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let lane = classify(&bytes);
            if bytes.len() < SMALL_PACKET_BYTES {
                prop_assert_eq!(lane, Lane::Critical);
            }
        }
    }
}
