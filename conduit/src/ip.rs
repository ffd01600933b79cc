//! Zero-copy view of the IP header of a packet read from the TUN device.
//!
//! Invariant: [`IpView::parse`] is total. Any byte slice yields either a view whose every
//! accessor is infallible, or [`MalformedPacket::NotIp`]; it never panics and never
//! allocates, so it is safe to run on every packet, trusted or not.
//!
//! Scope, chosen for the classifier and the policy engine rather than for routing:
//! - IPv4: the IHL is honoured (options are skipped); ports are read only from the first
//!   fragment, since later fragments carry no L4 header. The header checksum is not
//!   verified: packets come from the local kernel, which already did.
//! - IPv6: the fixed header only. The next-header byte is read directly, so a packet with
//!   extension headers reports that extension's number as its protocol and has no ports.
//! - Ports are reported only when the whole minimal TCP (20 bytes) or UDP (8 bytes) header
//!   lies inside the packet's declared length.

pub mod build;
pub mod mtu;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Error, MalformedPacket, VirtualIp};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv6 next-header number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER: usize = 40;

const TCP_MIN_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// A parsed, borrowed view of one IPv4 or IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpView<'a> {
    /// Exactly the packet's declared length; link padding after it is cut off.
    packet: &'a [u8],
    header_len: usize,
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    ports: Option<(u16, u16)>,
}

impl<'a> IpView<'a> {
    /// Parses the IP header at the start of `bytes`; never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let first = *bytes.first().ok_or(not_ip("empty buffer"))?;
        match first >> 4 {
            4 => Self::parse_v4(bytes),
            6 => Self::parse_v6(bytes),
            _ => Err(not_ip("version nibble is neither 4 nor 6")),
        }
    }

    fn parse_v4(bytes: &'a [u8]) -> Result<Self, Error> {
        let header: &[u8; IPV4_MIN_HEADER] = bytes
            .get(..IPV4_MIN_HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or(not_ip("IPv4 header truncated"))?;
        let header_len = usize::from(header[0] & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER {
            return Err(not_ip("IPv4 IHL below 5"));
        }
        let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if total_len < header_len {
            return Err(not_ip("IPv4 total length shorter than its header"));
        }
        let packet = bytes
            .get(..total_len)
            .ok_or(not_ip("IPv4 total length exceeds the buffer"))?;
        let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
        let protocol = header[9];
        let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
        let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
        // Later fragments start mid-segment: their first bytes are payload, not ports.
        let ports = if fragment_offset == 0 {
            read_ports(protocol, packet, header_len)
        } else {
            None
        };
        Ok(Self {
            packet,
            header_len,
            protocol,
            src: src.into(),
            dst: dst.into(),
            ports,
        })
    }

    fn parse_v6(bytes: &'a [u8]) -> Result<Self, Error> {
        let header: &[u8; IPV6_HEADER] = bytes
            .get(..IPV6_HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or(not_ip("IPv6 header truncated"))?;
        let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let packet = bytes
            .get(..IPV6_HEADER + payload_len)
            .ok_or(not_ip("IPv6 payload length exceeds the buffer"))?;
        let protocol = header[6];
        let mut src = [0u8; 16];
        src.copy_from_slice(&header[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&header[24..40]);
        Ok(Self {
            packet,
            header_len: IPV6_HEADER,
            protocol,
            src: Ipv6Addr::from(src).into(),
            dst: Ipv6Addr::from(dst).into(),
            ports: read_ports(protocol, packet, IPV6_HEADER),
        })
    }

    /// IP version: 4 or 6.
    pub fn version(&self) -> u8 {
        if self.src.is_ipv4() { 4 } else { 6 }
    }

    /// IPv4 protocol or IPv6 next-header number.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.dst
    }

    /// Source as a mesh address, when the packet is IPv4.
    pub fn src_v4(&self) -> Option<VirtualIp> {
        match self.src {
            IpAddr::V4(addr) => Some(addr.into()),
            IpAddr::V6(_) => None,
        }
    }

    /// Destination as a mesh address, when the packet is IPv4.
    pub fn dst_v4(&self) -> Option<VirtualIp> {
        match self.dst {
            IpAddr::V4(addr) => Some(addr.into()),
            IpAddr::V6(_) => None,
        }
    }

    /// Declared packet length in bytes (IPv4 total length, or 40 + IPv6 payload length).
    pub fn total_len(&self) -> usize {
        self.packet.len()
    }

    /// Length of the IP header (IPv4 with options, or the fixed 40-byte IPv6 header).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The packet, cut to its declared length.
    pub fn packet(&self) -> &'a [u8] {
        self.packet
    }

    /// Everything after the IP header.
    pub fn payload(&self) -> &'a [u8] {
        self.packet.get(self.header_len..).unwrap_or_default()
    }

    /// TCP/UDP source port, when the L4 header is present.
    pub fn src_port(&self) -> Option<u16> {
        self.ports.map(|(src, _)| src)
    }

    /// TCP/UDP destination port, when the L4 header is present.
    pub fn dst_port(&self) -> Option<u16> {
        self.ports.map(|(_, dst)| dst)
    }
}

fn not_ip(why: &'static str) -> Error {
    Error::Malformed(MalformedPacket::NotIp(why))
}

fn read_ports(protocol: u8, packet: &[u8], l4_start: usize) -> Option<(u16, u16)> {
    let needed = match protocol {
        PROTO_TCP => TCP_MIN_HEADER,
        PROTO_UDP => UDP_HEADER,
        _ => return None,
    };
    let l4 = packet.get(l4_start..)?;
    if l4.len() < needed {
        return None;
    }
    Some((
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

#[cfg(test)]
mod tests;
