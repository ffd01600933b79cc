use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::build::{self, internet_checksum};
use super::*;

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn not_ip(result: Result<IpView<'_>, Error>) -> &'static str {
    match result {
        Err(Error::Malformed(MalformedPacket::NotIp(why))) => why,
        other => panic!("expected NotIp, got {other:?}"),
    }
}

/// Verifies a TCP/UDP/ICMP checksum the way a receiver does: the sum over the pseudo-header
/// (for TCP/UDP) and the segment, checksum included, folds to zero.
fn l4_checksum_ok(view: &IpView<'_>) -> bool {
    let segment = view.payload();
    if view.protocol() == PROTO_ICMP {
        return internet_checksum(segment) == 0;
    }
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (view.src(), view.dst()) else {
        return false;
    };
    let mut buf = Vec::new();
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    buf.extend_from_slice(&[0, view.protocol()]);
    buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    buf.extend_from_slice(segment);
    internet_checksum(&buf) == 0
}

#[test]
fn parses_udp_built_by_the_helper() {
    let mut pkt = Vec::new();
    build::ipv4_udp(A, B, 40000, 5006, b"hello", &mut pkt);
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!(view.version(), 4);
    assert_eq!(view.protocol(), PROTO_UDP);
    assert_eq!(view.src(), IpAddr::V4(A));
    assert_eq!(view.dst_v4(), Some(VirtualIp::from(B)));
    assert_eq!(view.src_v4(), Some(VirtualIp::from(A)));
    assert_eq!(
        (view.src_port(), view.dst_port()),
        (Some(40000), Some(5006))
    );
    assert_eq!(view.total_len(), 20 + 8 + 5);
    assert_eq!(internet_checksum(&pkt[..20]), 0, "IPv4 header checksum");
    assert!(l4_checksum_ok(&view));
}

#[test]
fn parses_tcp_and_icmp_built_by_the_helper() {
    let mut pkt = Vec::new();
    build::ipv4_tcp(A, B, 22, 51000, &[7; 33], &mut pkt);
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!(view.protocol(), PROTO_TCP);
    assert_eq!((view.src_port(), view.dst_port()), (Some(22), Some(51000)));
    assert!(l4_checksum_ok(&view));

    build::ipv4_icmp_echo(A, B, 9, 1, &[1, 2, 3], &mut pkt);
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!(view.protocol(), PROTO_ICMP);
    assert_eq!(view.dst_port(), None);
    assert_eq!(internet_checksum(&pkt[..20]), 0);
    assert!(l4_checksum_ok(&view));
}

#[test]
fn honours_ihl_options() {
    let mut pkt = Vec::new();
    build::ipv4_udp(A, B, 1, 2, b"x", &mut pkt);
    // Insert 4 bytes of options (NOPs) and fix IHL and total length.
    pkt.splice(20..20, [1, 1, 1, 1]);
    pkt[0] = 0x46;
    let total = pkt.len() as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!(view.header_len(), 24);
    assert_eq!((view.src_port(), view.dst_port()), (Some(1), Some(2)));
}

#[test]
fn fragments_after_the_first_have_no_ports() {
    let mut pkt = Vec::new();
    build::ipv4_udp(A, B, 1000, 5006, &[0; 64], &mut pkt);
    pkt[6] = 0x20; // MF set, offset 0: the first fragment still has the UDP header
    assert_eq!(IpView::parse(&pkt).unwrap().dst_port(), Some(5006));
    pkt[7] = 0x10; // offset 16 * 8 bytes: payload bytes, not a header
    assert_eq!(IpView::parse(&pkt).unwrap().dst_port(), None);
}

#[test]
fn cuts_link_padding_and_rejects_short_buffers() {
    let mut pkt = Vec::new();
    build::ipv4_icmp_echo(A, B, 1, 1, &[], &mut pkt);
    let declared = pkt.len();
    pkt.extend_from_slice(&[0xee; 10]);
    assert_eq!(IpView::parse(&pkt).unwrap().total_len(), declared);
    assert_eq!(
        not_ip(IpView::parse(&pkt[..declared - 1])),
        "IPv4 total length exceeds the buffer"
    );
    assert_eq!(not_ip(IpView::parse(&pkt[..19])), "IPv4 header truncated");
    assert_eq!(not_ip(IpView::parse(&[])), "empty buffer");
    assert_eq!(
        not_ip(IpView::parse(&[0x55; 40])),
        "version nibble is neither 4 nor 6"
    );
    let mut bad_ihl = pkt.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(not_ip(IpView::parse(&bad_ihl)), "IPv4 IHL below 5");
}

#[test]
fn truncated_l4_header_means_no_ports() {
    let mut pkt = Vec::new();
    build::ipv4(A, B, PROTO_TCP, &[0, 80, 0, 81, 0, 0, 0, 0], &mut pkt);
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!(view.protocol(), PROTO_TCP);
    assert_eq!(view.src_port(), None, "8 bytes are not a TCP header");
}

#[test]
fn ipv6_fixed_header_and_extension_headers() {
    let (s, d) = (
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    let mut pkt = Vec::new();
    build::ipv6(
        s,
        d,
        PROTO_UDP,
        &[0x13, 0x8e, 0x13, 0x8e, 0, 8, 0, 0],
        &mut pkt,
    );
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!(view.version(), 6);
    assert_eq!((view.src(), view.dst()), (IpAddr::V6(s), IpAddr::V6(d)));
    assert_eq!(view.dst_port(), Some(5006));
    assert_eq!(view.dst_v4(), None);
    assert_eq!(view.total_len(), 48);

    // Hop-by-hop options (0) first: documented as "no ports".
    build::ipv6(
        s,
        d,
        0,
        &[PROTO_UDP, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2],
        &mut pkt,
    );
    let view = IpView::parse(&pkt).unwrap();
    assert_eq!((view.protocol(), view.dst_port()), (0, None));

    assert_eq!(
        not_ip(IpView::parse(&pkt[..pkt.len() - 1])),
        "IPv6 payload length exceeds the buffer"
    );
    assert_eq!(not_ip(IpView::parse(&pkt[..39])), "IPv6 header truncated");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_is_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(view) = IpView::parse(&bytes) {
            prop_assert!(view.total_len() <= bytes.len());
            prop_assert!(view.header_len() <= view.total_len());
            prop_assert_eq!(view.payload().len(), view.total_len() - view.header_len());
            prop_assert_eq!(view.src_port().is_some(), view.dst_port().is_some());
        }
    }

    #[test]
    fn parse_is_total_on_mutated_packets(
        sport in any::<u16>(), idx in 0usize..64, byte in any::<u8>(), cut in 0usize..64,
    ) {
        let mut pkt = Vec::new();
        build::ipv4_tcp(A, B, sport, 443, &[0; 20], &mut pkt);
        let idx = idx % pkt.len();
        pkt[idx] = byte;
        let _ = IpView::parse(&pkt[..pkt.len().saturating_sub(cut)]);
    }

    #[test]
    fn built_ipv4_packets_round_trip(
        src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
        kind in 0u8..3, payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let mut pkt = Vec::new();
        let (proto, ports) = match kind {
            0 => { build::ipv4_udp(src, dst, sport, dport, &payload, &mut pkt); (PROTO_UDP, Some((sport, dport))) }
            1 => { build::ipv4_tcp(src, dst, sport, dport, &payload, &mut pkt); (PROTO_TCP, Some((sport, dport))) }
            _ => { build::ipv4_icmp_echo(src, dst, sport, dport, &payload, &mut pkt); (PROTO_ICMP, None) }
        };
        let view = IpView::parse(&pkt).unwrap();
        prop_assert_eq!(view.protocol(), proto);
        prop_assert_eq!(view.src_v4(), Some(VirtualIp::from(src)));
        prop_assert_eq!(view.dst_v4(), Some(VirtualIp::from(dst)));
        prop_assert_eq!(view.src_port().zip(view.dst_port()), ports);
        prop_assert_eq!(view.total_len(), pkt.len());
        prop_assert_eq!(internet_checksum(&pkt[..20]), 0);
        prop_assert!(l4_checksum_ok(&view));
    }

    #[test]
    fn built_ipv6_packets_round_trip(
        src in any::<u128>(), dst in any::<u128>(), next in any::<u8>(),
        l4 in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        let mut pkt = Vec::new();
        build::ipv6(src, dst, next, &l4, &mut pkt);
        let view = IpView::parse(&pkt).unwrap();
        prop_assert_eq!((view.src(), view.dst()), (IpAddr::V6(src), IpAddr::V6(dst)));
        prop_assert_eq!(view.protocol(), next);
        prop_assert_eq!(view.payload(), &l4[..]);
        let has_ports = match next { PROTO_TCP => l4.len() >= 20, PROTO_UDP => l4.len() >= 8, _ => false };
        prop_assert_eq!(view.dst_port().is_some(), has_ports);
    }
}
