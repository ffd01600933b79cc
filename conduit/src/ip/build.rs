//! Builders for well-formed test packets, used by simulations, benches and tests.
//!
//! Invariant: every packet written here carries a correct IPv4 header checksum and a
//! correct ICMP/UDP/TCP checksum, so a real kernel would accept it from a TUN device.
//! Each builder clears `out` and writes into it, so a reused buffer allocates nothing.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{IPV4_MIN_HEADER, IPV6_HEADER, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Builds an IPv4 (no options, DF set, TTL 64) packet around a ready-made L4 segment.
///
/// # Panics
/// If the packet would exceed 65535 bytes.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8], out: &mut Vec<u8>) {
    out.clear();
    push_ipv4_header(src, dst, protocol, l4.len(), out);
    out.extend_from_slice(l4);
}

/// Builds an IPv4 UDP datagram with a valid UDP checksum.
///
/// # Panics
/// If the packet would exceed 65535 bytes.
pub fn ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    append_ipv4_udp(src, dst, src_port, dst_port, payload, out);
}

/// Like [`ipv4_udp`], but appends the packet after what `out` already holds (datagrams
/// packed back to back in one reused buffer).
///
/// # Panics
/// If the packet would exceed 65535 bytes.
pub fn append_ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let l4_len = 8 + payload.len();
    push_ipv4_header(src, dst, PROTO_UDP, l4_len, out);
    out.extend_from_slice(&src_port.to_be_bytes());
    out.extend_from_slice(&dst_port.to_be_bytes());
    out.extend_from_slice(&(l4_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let l4 = start + IPV4_MIN_HEADER;
    let sum = l4_checksum_v4(src, dst, PROTO_UDP, &out[l4..]);
    // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    let sum = if sum == 0 { 0xffff } else { sum };
    out[l4 + 6..l4 + 8].copy_from_slice(&sum.to_be_bytes());
}

/// Builds an IPv4 TCP segment (20-byte header, PSH|ACK, seq 0) with a valid checksum.
///
/// # Panics
/// If the packet would exceed 65535 bytes.
pub fn ipv4_tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    push_ipv4_header(src, dst, PROTO_TCP, 20 + payload.len(), out);
    out.extend_from_slice(&src_port.to_be_bytes());
    out.extend_from_slice(&dst_port.to_be_bytes());
    out.extend_from_slice(&[0; 8]); // sequence and acknowledgement numbers
    out.extend_from_slice(&[5 << 4, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // offset, flags, window
    out.extend_from_slice(payload);
    let sum = l4_checksum_v4(src, dst, PROTO_TCP, &out[IPV4_MIN_HEADER..]);
    out[IPV4_MIN_HEADER + 16..IPV4_MIN_HEADER + 18].copy_from_slice(&sum.to_be_bytes());
}

/// Builds an IPv4 TCP SYN (or SYN-ACK with `ack`) carrying an MSS option, with a valid
/// checksum: what MSS clamping rewrites.
pub fn ipv4_tcp_syn(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    mss: u16,
    ack: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    push_ipv4_header(src, dst, PROTO_TCP, 28, out);
    out.extend_from_slice(&ports.0.to_be_bytes());
    out.extend_from_slice(&ports.1.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 0]); // sequence and acknowledgement numbers
    let flags = if ack { 0x12 } else { 0x02 };
    out.extend_from_slice(&[7 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]); // offset, flags, window
    out.extend_from_slice(&[2, 4]); // MSS option
    out.extend_from_slice(&mss.to_be_bytes());
    out.extend_from_slice(&[1, 1, 1, 0]); // NOP, NOP, NOP, end of options
    let sum = l4_checksum_v4(src, dst, PROTO_TCP, &out[IPV4_MIN_HEADER..]);
    out[IPV4_MIN_HEADER + 16..IPV4_MIN_HEADER + 18].copy_from_slice(&sum.to_be_bytes());
}

/// Builds an IPv4 ICMP echo request with a valid ICMP checksum.
///
/// # Panics
/// If the packet would exceed 65535 bytes.
pub fn ipv4_icmp_echo(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    push_ipv4_header(src, dst, PROTO_ICMP, 8 + payload.len(), out);
    out.extend_from_slice(&[8, 0, 0, 0]); // type 8 (echo request), code 0, checksum
    out.extend_from_slice(&ident.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    let sum = internet_checksum(&out[IPV4_MIN_HEADER..]);
    out[IPV4_MIN_HEADER + 2..IPV4_MIN_HEADER + 4].copy_from_slice(&sum.to_be_bytes());
}

/// Builds an IPv6 packet (hop limit 64) around a ready-made L4 segment, checksum untouched.
///
/// # Panics
/// If `l4` exceeds 65535 bytes.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4: &[u8], out: &mut Vec<u8>) {
    out.clear();
    assert!(l4.len() <= usize::from(u16::MAX), "IPv6 payload too long");
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    out.extend_from_slice(&[next_header, 64]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    debug_assert_eq!(out.len(), IPV6_HEADER);
    out.extend_from_slice(l4);
}

/// The RFC 1071 internet checksum of `data` (odd lengths padded with a zero byte).
pub fn internet_checksum(data: &[u8]) -> u16 {
    fold(ones_sum(data, 0))
}

fn push_ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: usize, out: &mut Vec<u8>) {
    let total = IPV4_MIN_HEADER + l4_len;
    assert!(total <= usize::from(u16::MAX), "IPv4 packet too long");
    let start = out.len();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]); // id, DF, TTL, proto, csum
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = internet_checksum(&out[start..start + IPV4_MIN_HEADER]);
    out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

pub(crate) fn l4_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = protocol;
    pseudo[10..].copy_from_slice(&(segment.len() as u16).to_be_bytes());
    // The pseudo-header has even length, so summing the two parts separately is exact.
    fold(ones_sum(segment, ones_sum(&pseudo, 0)))
}

pub(crate) fn ones_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut pairs = data.chunks_exact(2);
    for pair in &mut pairs {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
