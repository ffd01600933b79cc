//! Service datagrams: how in-process users (OTA transfer, the hub's services) send and
//! receive over the encrypted mesh without a TUN device.
//!
//! Invariant: a service datagram is an ordinary IPv4/UDP packet from the local virtual
//! IP and a service port to a peer's virtual IP, so everything the mesh applies to IP
//! packets — policy, lanes, bulk pacing, counters, encryption, anti-spoofing — applies to
//! it unchanged; only its lane is chosen by the caller instead of the classifier.
//! [`parse`] is total: any bytes give a borrowed view or `None`, never a panic, never an
//! allocation.
//!
//! The UDP checksum is written (so a kernel on the far side accepts the packet from its
//! TUN device) but not verified on receipt: a delivered packet authenticated under the
//! session's AEAD, so its bytes are exactly what the peer's node sealed, and its source
//! address is the sending peer's own virtual IP (checked by the node before delivery).

use std::fmt;
use std::num::NonZeroU16;
use std::ops::Range;

use crate::VirtualIp;
use crate::error::ServiceError;
use crate::ip::{IPV4_MIN_HEADER, IpView, PROTO_UDP, build};

/// Bytes of IPv4 and UDP header in front of a service payload.
pub const HEADER_LEN: usize = IPV4_MIN_HEADER + UDP_HEADER;

const UDP_HEADER: usize = 8;

/// The largest payload of one service datagram on a mesh of this MTU.
pub const fn max_payload(mtu: usize) -> usize {
    mtu.saturating_sub(HEADER_LEN)
}

/// A UDP port on the node's virtual IP that an in-process user binds (never 0).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort(NonZeroU16);

impl ServicePort {
    /// The port, or `None` for 0 (which names no port).
    pub const fn new(port: u16) -> Option<Self> {
        match NonZeroU16::new(port) {
            Some(port) => Some(Self(port)),
            None => None,
        }
    }

    /// The port number.
    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServicePort({})", self.0)
    }
}

/// A service datagram found in a delivered IP packet; borrows its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceDatagram<'a> {
    /// The sending peer's virtual IP.
    pub src_ip: VirtualIp,
    /// The sender's UDP port (reply there).
    pub src_port: u16,
    /// The bound local port it is for.
    pub dst_port: ServicePort,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Appends one service datagram (IPv4 without options, UDP, both checksums) to `out`
/// and returns where it lies there. `out` is not cleared, so datagrams can be packed
/// back to back in one reused buffer; a buffer with room allocates nothing.
pub fn encode(
    src: VirtualIp,
    src_port: ServicePort,
    dst: VirtualIp,
    dst_port: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<Range<usize>, ServiceError> {
    let max = usize::from(u16::MAX) - HEADER_LEN;
    if payload.len() > max {
        return Err(ServiceError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    let start = out.len();
    build::append_ipv4_udp(
        src.addr(),
        dst.addr(),
        src_port.get(),
        dst_port,
        payload,
        out,
    );
    Ok(start..out.len())
}

/// The service datagram in `packet`, if it is a whole (unfragmented) IPv4/UDP packet to
/// `local` on a port `bound` accepts; `None` for anything else.
pub fn parse(
    packet: &[u8],
    local: VirtualIp,
    bound: impl Fn(ServicePort) -> bool,
) -> Option<ServiceDatagram<'_>> {
    let view = IpView::parse(packet).ok()?;
    if view.protocol() != PROTO_UDP || view.dst_v4()? != local {
        return None;
    }
    // More-fragments flag or a fragment offset: not a whole datagram.
    let flags = view.packet().get(6..8)?;
    if u16::from_be_bytes([flags[0], flags[1]]) & 0x3fff != 0 {
        return None;
    }
    let udp = view.payload();
    let header = udp.get(..UDP_HEADER)?;
    let src_port = u16::from_be_bytes([header[0], header[1]]);
    let dst_port = ServicePort::new(u16::from_be_bytes([header[2], header[3]]))?;
    let udp_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if !bound(dst_port) {
        return None;
    }
    let payload = udp.get(UDP_HEADER..udp_len)?;
    Some(ServiceDatagram {
        src_ip: view.src_v4()?,
        src_port,
        dst_port,
        payload,
    })
}

#[cfg(test)]
mod tests;
