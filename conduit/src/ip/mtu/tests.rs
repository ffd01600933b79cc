use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::ip::IpView;
use crate::ip::build::{self, l4_checksum_v4};

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let view = IpView::parse(packet).unwrap();
    match (view.src(), view.dst()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            l4_checksum_v4(s, d, PROTO_TCP, view.payload()) == 0
        }
        _ => unreachable!("IPv4 only here"),
    }
}

fn mss_of(packet: &[u8]) -> u16 {
    let tcp = &packet[20..];
    let mut i = 20;
    while i < usize::from(tcp[12] >> 4) * 4 {
        match tcp[i] {
            1 => i += 1,
            2 => return u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]),
            _ => i += usize::from(tcp[i + 1]),
        }
    }
    panic!("no MSS option")
}

#[test]
fn syn_and_syn_ack_are_clamped_with_a_valid_checksum() {
    for ack in [false, true] {
        let mut packet = Vec::new();
        build::ipv4_tcp_syn(A, B, (40000, 5001), 1460, ack, &mut packet);
        assert!(tcp_checksum_ok(&packet));
        assert_eq!(clamp_mss(&mut packet, 1143), Some(1460));
        assert_eq!(mss_of(&packet), 1103);
        assert!(tcp_checksum_ok(&packet));
        assert_eq!(clamp_mss(&mut packet, 1143), None, "already small enough");
    }
}

#[test]
fn non_syn_segments_and_other_protocols_are_untouched() {
    let mut packet = Vec::new();
    build::ipv4_tcp(A, B, 1, 2, &[2, 4, 5, 0xb4], &mut packet);
    let before = packet.clone();
    assert_eq!(clamp_mss(&mut packet, 600), None);
    assert_eq!(packet, before);
    build::ipv4_udp(A, B, 1, 2, &[0x02; 40], &mut packet);
    let before = packet.clone();
    assert_eq!(clamp_mss(&mut packet, 600), None);
    assert_eq!(packet, before);
}

#[test]
fn ipv6_syn_is_clamped_to_mtu_minus_60() {
    let (s, d) = (
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    let mut v4 = Vec::new();
    build::ipv4_tcp_syn(A, B, (1, 2), 1440, false, &mut v4);
    let mut packet = Vec::new();
    build::ipv6(s, d, PROTO_TCP, &v4[20..], &mut packet);
    assert_eq!(clamp_mss(&mut packet, 1280), Some(1440));
    let tcp = &packet[40..];
    assert_eq!(u16::from_be_bytes([tcp[22], tcp[23]]), 1220);
}

#[test]
fn ipv4_too_big_reply_is_a_valid_frag_needed_from_the_destination() {
    let mut packet = Vec::new();
    build::ipv4_tcp(A, B, 40000, 5001, &[7; 1300], &mut packet);
    let mut reply = Vec::new();
    assert!(too_big_reply(&packet, 1143, &mut reply));
    let view = IpView::parse(&reply).unwrap();
    assert_eq!((view.src(), view.dst()), (B.into(), A.into()));
    assert_eq!(view.protocol(), PROTO_ICMP);
    assert!(reply.len() <= 576);
    assert_eq!(internet_checksum(&reply[..20]), 0, "IP header checksum");
    let icmp = view.payload();
    assert_eq!(internet_checksum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[..2], &[3, 4]);
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1143);
    assert_eq!(
        &icmp[8..36],
        &packet[..28],
        "quotes the header and the ports"
    );
    // No error about an error.
    let mut again = Vec::new();
    assert!(!too_big_reply(&reply, 1143, &mut again));
    assert!(again.is_empty());
}

#[test]
fn ipv6_packet_too_big_has_a_valid_checksum_and_never_says_below_1280() {
    let (s, d) = (
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    let mut packet = Vec::new();
    build::ipv6(s, d, 17, &[0; 1400], &mut packet);
    let mut reply = Vec::new();
    assert!(too_big_reply(&packet, 1143, &mut reply));
    assert!(reply.len() <= 1280);
    let icmp = &reply[40..];
    assert_eq!(icmp[0], 2);
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1280
    );
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&d.octets());
    pseudo[16..32].copy_from_slice(&s.octets());
    pseudo[32..36].copy_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo[39] = PROTO_ICMPV6;
    assert_eq!(fold(ones_sum(icmp, ones_sum(&pseudo, 0))), 0);
}

fn fragment_all(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut fragments = Fragments::new(packet, mtu).expect("fragmentable");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while fragments.next_into(&mut buf) {
        out.push(buf.clone());
        assert!(out.len() < 10_000, "fragmentation ends");
    }
    out
}

fn non_df(mut packet: Vec<u8>) -> Vec<u8> {
    packet[6] &= !0x40;
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}

#[test]
fn df_packets_are_not_fragmented() {
    let mut packet = Vec::new();
    build::ipv4_udp(A, B, 1, 2, &[0; 1400], &mut packet);
    assert!(dont_fragment(&packet));
    assert!(Fragments::new(&packet, 1143).is_none());
    assert!(!dont_fragment(&non_df(packet)));
}

proptest! {
    #[test]
    fn clamp_mss_is_total(mut bytes in proptest::collection::vec(any::<u8>(), 0..120), mtu in 0usize..70000) {
        let _ = clamp_mss(&mut bytes, mtu);
        let mut out = Vec::new();
        let _ = too_big_reply(&bytes, 1200, &mut out);
        if let Some(mut f) = Fragments::new(&bytes, mtu) {
            for _ in 0..200 {
                if !f.next_into(&mut out) { break; }
            }
        }
    }

    /// Whatever options surround the MSS and wherever it sits (odd offsets included),
    /// the clamped SYN has the right MSS and a valid checksum.
    #[test]
    fn clamp_keeps_the_checksum_valid(
        nops in 0usize..3, mss in any::<u16>(), mtu in 40usize..2000, ack in any::<bool>(),
        tail in proptest::collection::vec(1u8..2, 0..3),
    ) {
        let mut syn = Vec::new();
        build::ipv4_tcp_syn(A, B, (1, 2), mss, ack, &mut syn);
        // Rebuild the options: `nops` NOPs, the MSS, more NOPs, padded to 4 bytes.
        let mut options = vec![1u8; nops];
        options.extend_from_slice(&[2, 4]);
        options.extend_from_slice(&mss.to_be_bytes());
        options.extend_from_slice(&tail);
        while options.len() % 4 != 0 { options.push(0); }
        let mut tcp = syn[20..40].to_vec();
        tcp[12] = (((20 + options.len()) / 4) << 4) as u8;
        tcp[16..18].copy_from_slice(&[0, 0]);
        tcp.extend_from_slice(&options);
        let sum = l4_checksum_v4(A, B, PROTO_TCP, &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut packet = Vec::new();
        build::ipv4(A, B, PROTO_TCP, &tcp, &mut packet);
        let max = (mtu - 40) as u16;
        let clamped = clamp_mss(&mut packet, mtu);
        prop_assert_eq!(clamped, (mss > max).then_some(mss));
        prop_assert_eq!(mss_of(&packet), mss.min(max));
        prop_assert!(tcp_checksum_ok(&packet));
    }

    /// A TCP segment without SYN is never changed, whatever its options say.
    #[test]
    fn non_syn_is_untouched(flags in any::<u8>(), options in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut packet = Vec::new();
        build::ipv4_tcp(A, B, 1, 2, &options, &mut packet);
        packet[20 + 13] = flags & !0x02;
        packet[20 + 12] = ((5 + options.len() / 4) << 4) as u8;
        let before = packet.clone();
        prop_assert_eq!(clamp_mss(&mut packet, 100), None);
        prop_assert_eq!(packet, before);
    }

    /// Fragments fit the MTU, carry valid header checksums, and reassemble to the
    /// original payload, also when the original was itself a fragment.
    #[test]
    fn fragments_reassemble(len in 0usize..4000, mtu in 28usize..1500, first_of_many in any::<bool>()) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut packet = Vec::new();
        build::ipv4_udp(A, B, 1, 2, &payload, &mut packet);
        let mut packet = non_df(packet);
        if first_of_many {
            packet[6] |= 0x20;
            packet[10..12].copy_from_slice(&[0, 0]);
            let sum = internet_checksum(&packet[..20]);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let fragments = fragment_all(&packet, mtu);
        let mut reassembled = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            prop_assert!(f.len() <= mtu.max(28));
            prop_assert_eq!(internet_checksum(&f[..20]), 0);
            let flags = u16::from_be_bytes([f[6], f[7]]);
            prop_assert_eq!(usize::from(flags & 0x1fff) * 8, reassembled.len());
            let last = i + 1 == fragments.len();
            prop_assert_eq!(flags & 0x2000 != 0, !last || first_of_many);
            prop_assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), f.len());
            reassembled.extend_from_slice(&f[20..]);
        }
        prop_assert_eq!(&reassembled[..], &packet[20..]);
    }
}
