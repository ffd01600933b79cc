use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::ip::build::internet_checksum;

const LOCAL: VirtualIp = VirtualIp(0x6440_0001); // 100.64.0.1
const PEER: VirtualIp = VirtualIp(0x6440_0002); // 100.64.0.2

fn port(n: u16) -> ServicePort {
    ServicePort::new(n).unwrap()
}

fn any_port(_: ServicePort) -> bool {
    true
}

/// A datagram from PEER:`src_port` to LOCAL:`dst_port`.
fn incoming(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(PEER, port(src_port), LOCAL, dst_port, payload, &mut out).unwrap();
    out
}

#[test]
fn port_zero_is_no_port() {
    assert_eq!(ServicePort::new(0), None);
    assert_eq!(port(7400).get(), 7400);
    assert_eq!(port(7400).to_string(), "7400");
}

#[test]
fn encode_appends_a_checksummed_udp_packet() {
    let mut out = vec![0xEE; 3];
    let range = encode(LOCAL, port(7400), PEER, 7401, b"chunk", &mut out).unwrap();
    assert_eq!(range, 3..3 + HEADER_LEN + 5);
    assert_eq!(&out[..3], &[0xEE; 3], "what was there stays");
    let packet = &out[range];
    let view = IpView::parse(packet).unwrap();
    assert_eq!(view.protocol(), PROTO_UDP);
    assert_eq!((view.src_v4(), view.dst_v4()), (Some(LOCAL), Some(PEER)));
    assert_eq!((view.src_port(), view.dst_port()), (Some(7400), Some(7401)));
    assert_eq!(internet_checksum(&packet[..IPV4_MIN_HEADER]), 0);
    // The same bytes the IP builder makes: one code path for every UDP packet.
    let mut built = Vec::new();
    build::ipv4_udp(LOCAL.addr(), PEER.addr(), 7400, 7401, b"chunk", &mut built);
    assert_eq!(packet, &built[..]);
}

#[test]
fn encode_refuses_what_no_ipv4_packet_can_carry() {
    let mut out = Vec::new();
    let max = 65535 - HEADER_LEN;
    assert!(encode(LOCAL, port(1), PEER, 2, &vec![0; max], &mut out).is_ok());
    out.clear();
    assert_eq!(
        encode(LOCAL, port(1), PEER, 2, &vec![0; max + 1], &mut out),
        Err(ServiceError::TooLarge { len: max + 1, max })
    );
    assert!(out.is_empty(), "nothing written on refusal");
    assert_eq!(max_payload(1350), 1322);
}

#[test]
fn parse_finds_a_datagram_for_a_bound_port() {
    let packet = incoming(5000, 7400, b"hello");
    let got = parse(&packet, LOCAL, |p| p == port(7400)).unwrap();
    assert_eq!(
        got,
        ServiceDatagram {
            src_ip: PEER,
            src_port: 5000,
            dst_port: port(7400),
            payload: b"hello",
        }
    );
    assert_eq!(parse(&packet, LOCAL, |p| p == port(7401)), None, "unbound");
    assert_eq!(parse(&packet, PEER, any_port), None, "for another address");
}

#[test]
fn parse_ignores_what_is_not_a_whole_udp_datagram() {
    let udp = incoming(5000, 7400, &[1; 40]);
    let mut tcp = Vec::new();
    build::ipv4_tcp(PEER.addr(), LOCAL.addr(), 5000, 7400, &[1; 40], &mut tcp);
    assert_eq!(parse(&tcp, LOCAL, any_port), None, "TCP");
    let mut v6 = Vec::new();
    build::ipv6(
        Ipv4Addr::new(0, 0, 0, 1).to_ipv6_mapped(),
        Ipv4Addr::new(0, 0, 0, 2).to_ipv6_mapped(),
        PROTO_UDP,
        &udp[IPV4_MIN_HEADER..],
        &mut v6,
    );
    assert_eq!(parse(&v6, LOCAL, any_port), None, "IPv6");
    let mut first_fragment = udp.clone();
    first_fragment[6] |= 0x20; // more fragments
    assert_eq!(parse(&first_fragment, LOCAL, any_port), None);
    let mut later_fragment = udp.clone();
    later_fragment[7] = 1; // offset 8
    assert_eq!(parse(&later_fragment, LOCAL, any_port), None);
    let mut to_port_zero = udp.clone();
    to_port_zero[IPV4_MIN_HEADER + 2..IPV4_MIN_HEADER + 4].fill(0);
    assert_eq!(parse(&to_port_zero, LOCAL, any_port), None);
    for bad_len in [0u16, 7, 49, 0xffff] {
        let mut wrong = udp.clone();
        wrong[IPV4_MIN_HEADER + 4..IPV4_MIN_HEADER + 6].copy_from_slice(&bad_len.to_be_bytes());
        assert_eq!(parse(&wrong, LOCAL, any_port), None, "UDP length {bad_len}");
    }
    // A UDP length shorter than the packet is honoured (the rest is padding).
    let mut padded = udp;
    padded[IPV4_MIN_HEADER + 4..IPV4_MIN_HEADER + 6].copy_from_slice(&12u16.to_be_bytes());
    assert_eq!(parse(&padded, LOCAL, any_port).unwrap().payload, &[1; 4]);
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes, LOCAL, any_port);
    }

    #[test]
    fn parse_never_panics_on_mangled_datagrams(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut packet = incoming(1, 2, &payload);
        for (at, value) in flips {
            let at = at % packet.len();
            packet[at] = value;
        }
        packet.truncate(cut % (packet.len() + 1));
        if let Some(d) = parse(&packet, LOCAL, any_port) {
            // Whatever it finds lies inside the packet, after both headers.
            prop_assert!(d.payload.len() + HEADER_LEN <= packet.len());
        }
    }

    #[test]
    fn encode_then_parse_round_trips(
        src_port in 1u16..,
        dst_port in 1u16..,
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        before in 0usize..64,
    ) {
        let mut out = vec![0u8; before];
        let range = encode(PEER, port(src_port), LOCAL, dst_port, &payload, &mut out).unwrap();
        let got = parse(&out[range], LOCAL, |p| p.get() == dst_port).unwrap();
        prop_assert_eq!(got.src_ip, PEER);
        prop_assert_eq!(got.src_port, src_port);
        prop_assert_eq!(got.dst_port.get(), dst_port);
        prop_assert_eq!(got.payload, &payload[..]);
    }
}
