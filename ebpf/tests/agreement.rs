//! The kernel program and the userspace classifier agree: the program runs under
//! `BPF_PROG_TEST_RUN` on generated IPv4/IPv6 packets (well-formed, malformed, truncated,
//! padded, fragmented) and the lane it wrote into `skb->priority` is compared with
//! conduit's `classify` (default rules) and with `LaneRules::classify` (random rules,
//! written to the map of the already loaded program). Needs root (CAP_BPF).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};

use bauxite_conduit::Lane;
use bauxite_conduit::ip::{PROTO_TCP, PROTO_UDP, build};
use bauxite_conduit::scheduler::{TELEMETRY_PORT, classify};
use bauxite_ebpf::{LaneRules, ProgramTester, abi};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const RULE_PORTS: [u16; 6] = [TELEMETRY_PORT, 22, 53, 443, 1234, 9000];

#[derive(Clone, Debug)]
enum Mutation {
    None,
    Truncate(usize),
    SetByte(usize, u8),
    Pad(Vec<u8>),
    Fragment(u16),
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![proptest::sample::select(RULE_PORTS.to_vec()), any::<u16>()]
}

fn protocol() -> impl Strategy<Value = u8> {
    prop_oneof![Just(1u8), Just(6), Just(17), Just(58), Just(0), any::<u8>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Pad),
        1 => any::<u16>().prop_map(Mutation::Fragment),
    ]
}

/// One packet: a shape (0-4), protocol, ports, payload length, and a mutation.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..5,
        protocol(),
        port(),
        port(),
        0usize..1400,
        mutation(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(shape, proto, sport, dport, len, mutation, noise)| {
            let payload = vec![0xa5; len];
            let mut l4 = Vec::with_capacity(len + 4);
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&payload);
            let mut pkt = Vec::new();
            match shape {
                0 => build::ipv4_udp(A, B, sport, dport, &payload, &mut pkt),
                1 => build::ipv4_tcp(A, B, sport, dport, &payload, &mut pkt),
                2 => build::ipv4(A, B, proto, &l4, &mut pkt),
                3 => {
                    let next = if len % 3 == 0 {
                        PROTO_UDP
                    } else if len % 3 == 1 {
                        PROTO_TCP
                    } else {
                        proto
                    };
                    build::ipv6(
                        Ipv6Addr::LOCALHOST,
                        Ipv6Addr::LOCALHOST,
                        next,
                        &l4,
                        &mut pkt,
                    );
                }
                _ => pkt = noise,
            }
            match mutation {
                Mutation::None => {}
                Mutation::Truncate(n) => pkt.truncate(n % (pkt.len() + 1)),
                Mutation::SetByte(i, b) => {
                    if !pkt.is_empty() {
                        let at = i % pkt.len().min(48);
                        pkt[at] = b;
                    }
                }
                Mutation::Pad(bytes) => pkt.extend_from_slice(&bytes),
                Mutation::Fragment(bits) => {
                    if pkt.len() >= 8 {
                        pkt[6..8].copy_from_slice(&bits.to_be_bytes());
                    }
                }
            }
            pkt
        })
}

fn rules() -> impl Strategy<Value = LaneRules> {
    proptest::collection::vec(
        (
            proptest::sample::select(RULE_PORTS.to_vec()),
            proptest::sample::select(Lane::ALL.to_vec()),
        ),
        0..5,
    )
    .prop_map(|entries| {
        let mut rules = LaneRules::empty();
        for (port, lane) in entries {
            rules.set(port, lane).unwrap();
        }
        rules
    })
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn kernel_agrees_with_conduit_classify_on_generated_packets() {
    if !common::can_run() {
        return;
    }
    let tester = RefCell::new(ProgramTester::load(&LaneRules::default()).unwrap());
    let seen = RefCell::new([0usize; 3]);
    runner()
        .run(&packet(), |pkt| {
            let kernel = tester.borrow_mut().lane_of(&pkt).unwrap();
            prop_assert_eq!(kernel, classify(&pkt), "packet {:02x?}", pkt);
            seen.borrow_mut()[kernel.index()] += 1;
            Ok(())
        })
        .unwrap();
    // The generator reaches every lane often, so agreement is not agreement on one answer.
    let seen = seen.into_inner();
    assert!(seen.iter().all(|n| *n >= 100), "lanes seen: {seen:?}");
}

#[test]
fn kernel_agrees_with_the_rules_it_was_given_without_reload() {
    if !common::can_run() {
        return;
    }
    let tester = RefCell::new(ProgramTester::load(&LaneRules::default()).unwrap());
    runner()
        .run(&(rules(), packet()), |(rules, pkt)| {
            let mut tester = tester.borrow_mut();
            tester.set_rules(&rules).unwrap();
            let kernel = tester.lane_of(&pkt).unwrap();
            prop_assert_eq!(
                kernel,
                rules.classify(&pkt),
                "rules {:?} packet {:02x?}",
                rules,
                pkt
            );
            Ok(())
        })
        .unwrap();
}

/// The TUN steering program classifies with the same code: queue 0 exactly for the
/// packets `classify` calls Critical, under random rules too.
#[test]
fn steering_program_sends_exactly_the_critical_packets_to_queue_0() {
    if !common::can_run() {
        return;
    }
    let tester = RefCell::new(ProgramTester::load(&LaneRules::default()).unwrap());
    let seen = RefCell::new([0usize; 2]);
    runner()
        .run(&(rules(), packet()), |(rules, pkt)| {
            let mut tester = tester.borrow_mut();
            tester.set_rules(&rules).unwrap();
            let queue = tester.steer_queue_of(&pkt).unwrap();
            let critical = rules.classify(&pkt) == Lane::Critical;
            let expected = if critical {
                abi::STEER_QUEUE_CRITICAL
            } else {
                abi::STEER_QUEUE_OTHER
            };
            prop_assert_eq!(queue, expected, "rules {:?} packet {:02x?}", rules, pkt);
            seen.borrow_mut()[usize::from(critical)] += 1;
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    assert!(seen.iter().all(|n| *n >= 100), "queues seen: {seen:?}");
}

#[test]
fn test_runs_are_counted_per_lane() {
    if !common::can_run() {
        return;
    }
    let mut tester = ProgramTester::load(&LaneRules::default()).unwrap();
    let mut telemetry = Vec::new();
    build::ipv4_udp(A, B, 40000, TELEMETRY_PORT, &[0; 300], &mut telemetry);
    let mut bulk = Vec::new();
    build::ipv4_tcp(A, B, 40000, 443, &[0; 1000], &mut bulk);
    for _ in 0..3 {
        assert_eq!(tester.lane_of(&telemetry).unwrap(), Lane::Telemetry);
    }
    assert_eq!(tester.lane_of(&bulk).unwrap(), Lane::Bulk);
    assert_eq!(tester.lane_of(&[0x45; 10]).unwrap(), Lane::Critical);
    let counts = tester.counts().unwrap();
    assert_eq!(counts[Lane::Critical.index()].packets, 1);
    assert_eq!(counts[Lane::Critical.index()].bytes, 10);
    assert_eq!(counts[Lane::Telemetry.index()].packets, 3);
    assert_eq!(
        counts[Lane::Telemetry.index()].bytes,
        3 * telemetry.len() as u64
    );
    assert_eq!(counts[Lane::Bulk.index()].packets, 1);
    assert_eq!(counts[Lane::Bulk.index()].bytes, bulk.len() as u64);
}
