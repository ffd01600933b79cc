//! What the node does with an inner packet larger than its peer's path carries: TCP MSS
//! clamping, ICMP "fragmentation needed" / ICMPv6 "packet too big" answers to the local
//! sender, and fragmentation of IPv4 packets that allow it.
//!
//! Invariant: every function here is total over arbitrary bytes — a malformed packet is
//! left untouched or refused, never a panic — and a packet it rewrites keeps valid
//! checksums. None allocates beyond the caller's buffer.

use super::build::{fold, internet_checksum, ones_sum};
use super::{IPV4_MIN_HEADER, IPV6_HEADER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP};

/// TCP/IPv4 header bytes between an IPv4 MTU and its MSS.
pub const MSS_OVERHEAD_V4: usize = 40;
/// TCP/IPv6 header bytes between an IPv6 MTU and its MSS.
pub const MSS_OVERHEAD_V6: usize = 60;
/// Most bytes of the offending packet an ICMPv4 error quotes (RFC 1812 §4.3.2.3: the
/// error stays within 576 bytes).
const ICMP_V4_QUOTE: usize = 576 - IPV4_MIN_HEADER - 8;
/// Most bytes an ICMPv6 error quotes (RFC 4443 §2.4: within the minimum MTU).
const ICMP_V6_QUOTE: usize = 1280 - IPV6_HEADER - 8;

/// Lowers the MSS option of a TCP SYN or SYN-ACK to what an `mtu`-byte IP packet carries
/// (minus 40 bytes for IPv4, 60 for IPv6), fixing the TCP checksum incrementally (RFC
/// 1624). Returns the old MSS when it rewrote one; leaves every other packet (not TCP,
/// not a SYN, a later fragment, no MSS option, an MSS already small enough, malformed
/// options) untouched.
pub fn clamp_mss(packet: &mut [u8], mtu: usize) -> Option<u16> {
    let (l4, end, protocol, overhead) = match packet.first()? >> 4 {
        4 => {
            let header = packet.get(..IPV4_MIN_HEADER)?;
            let ihl = usize::from(header[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
            if ihl < IPV4_MIN_HEADER || total < ihl || offset != 0 {
                return None;
            }
            (ihl, total, header[9], MSS_OVERHEAD_V4)
        }
        6 => {
            let header = packet.get(..IPV6_HEADER)?;
            let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
            (
                IPV6_HEADER,
                IPV6_HEADER + payload,
                header[6],
                MSS_OVERHEAD_V6,
            )
        }
        _ => return None,
    };
    if protocol != PROTO_TCP {
        return None;
    }
    let max = u16::try_from(mtu.checked_sub(overhead)?).unwrap_or(u16::MAX);
    let tcp = packet.get_mut(l4..end)?;
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return None;
    }
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < 20 || data_offset > tcp.len() {
        return None;
    }
    let mut i = 20;
    while i < data_offset {
        match tcp[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*tcp.get(i + 1)?);
                if len < 2 || i + len > data_offset {
                    return None;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old <= max {
                        return None;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&max.to_be_bytes());
                    // The checksum sums 16-bit words from the segment's start: a field at
                    // an odd offset straddles two words, which sums its bytes swapped.
                    let (was, now) = if (i + 2) % 2 == 0 {
                        (old, max)
                    } else {
                        (old.swap_bytes(), max.swap_bytes())
                    };
                    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
                    tcp[16..18].copy_from_slice(&adjust(sum, was, now).to_be_bytes());
                    return Some(old);
                }
                i += len;
            }
        }
    }
    None
}

/// RFC 1624 eq. 3: the checksum after a 16-bit word changed from `old` to `new`.
fn adjust(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!checksum) + u64::from(!old) + u64::from(new);
    fold(sum)
}

/// Whether an IPv4 packet forbids fragmentation (DF set); false for anything else.
pub fn dont_fragment(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| b >> 4 == 4) && packet.get(6).is_some_and(|f| f & 0x40 != 0)
}

/// Writes into `out` the ICMP error that tells the sender of `packet` to send at most
/// `mtu`-byte packets: "fragmentation needed" (type 3 code 4, RFC 1191) for IPv4,
/// "packet too big" (RFC 4443) for IPv6. It comes from the packet's destination, as if
/// the tunnel were the router in front of it, so the sender's kernel takes it (its own
/// address as source would be a martian). False (and `out` cleared) for a packet that
/// must not be answered: malformed, an ICMP error itself, a later IPv4 fragment.
pub fn too_big_reply(packet: &[u8], mtu: u16, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Ok(view) = super::IpView::parse(packet) else {
        return false;
    };
    let packet = view.packet();
    let payload = view.payload();
    match (view.src(), view.dst()) {
        (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) => {
            let offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            let icmp_error = view.protocol() == PROTO_ICMP
                && payload
                    .first()
                    .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
            if offset != 0 || icmp_error || src.is_unspecified() || src.is_multicast() {
                return false;
            }
            let quote = &packet[..packet.len().min(ICMP_V4_QUOTE)];
            let total = IPV4_MIN_HEADER + 8 + quote.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&(total as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 64, PROTO_ICMP, 0, 0]);
            out.extend_from_slice(&dst.octets());
            out.extend_from_slice(&src.octets());
            let sum = internet_checksum(&out[..IPV4_MIN_HEADER]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
            out.extend_from_slice(&mtu.to_be_bytes());
            out.extend_from_slice(quote);
            let sum = internet_checksum(&out[IPV4_MIN_HEADER..]);
            out[IPV4_MIN_HEADER + 2..IPV4_MIN_HEADER + 4].copy_from_slice(&sum.to_be_bytes());
            true
        }
        (std::net::IpAddr::V6(src), std::net::IpAddr::V6(dst)) => {
            let icmp_error =
                view.protocol() == PROTO_ICMPV6 && payload.first().is_some_and(|t| *t < 128);
            if icmp_error || src.is_unspecified() || src.is_multicast() {
                return false;
            }
            let quote = &packet[..packet.len().min(ICMP_V6_QUOTE)];
            let len = 8 + quote.len();
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&[PROTO_ICMPV6, 64]);
            out.extend_from_slice(&dst.octets());
            out.extend_from_slice(&src.octets());
            // RFC 8200 §5: an IPv6 link carries 1280 bytes, so no smaller MTU is told.
            out.extend_from_slice(&[2, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&mtu.max(1280).to_be_bytes());
            out.extend_from_slice(quote);
            let mut pseudo = [0u8; 40];
            pseudo[..16].copy_from_slice(&dst.octets());
            pseudo[16..32].copy_from_slice(&src.octets());
            pseudo[32..36].copy_from_slice(&(len as u32).to_be_bytes());
            pseudo[39] = PROTO_ICMPV6;
            let sum = fold(ones_sum(&out[IPV6_HEADER..], ones_sum(&pseudo, 0)));
            out[IPV6_HEADER + 2..IPV6_HEADER + 4].copy_from_slice(&sum.to_be_bytes());
            true
        }
        _ => false,
    }
}

/// Splits an IPv4 packet without DF into fragments of at most `mtu` bytes, one per
/// [`next_into`](Self::next_into) call (RFC 791). A fragment may be fragmented again:
/// offsets add up and the last piece keeps the original's more-fragments flag.
#[derive(Debug)]
pub struct Fragments<'a> {
    header: &'a [u8],
    payload: &'a [u8],
    /// Bytes of `payload` already emitted.
    done: usize,
    /// Payload bytes per fragment (a multiple of 8).
    step: usize,
    /// The original's fragment offset, in 8-byte units.
    base: u16,
    more: bool,
    finished: bool,
}

impl<'a> Fragments<'a> {
    /// `None` when `packet` is not a well-formed IPv4 packet, has DF set, carries IP
    /// options (which fragments would have to sort by their copy flag; the kernel never
    /// sends them through a tunnel), or `mtu` leaves no room for 8 payload bytes.
    pub fn new(packet: &'a [u8], mtu: usize) -> Option<Self> {
        let view = super::IpView::parse(packet).ok()?;
        let packet = view.packet();
        if view.version() != 4 || view.header_len() != IPV4_MIN_HEADER || dont_fragment(packet) {
            return None;
        }
        let step = mtu.checked_sub(IPV4_MIN_HEADER)? & !7;
        if step == 0 {
            return None;
        }
        let flags = u16::from_be_bytes([packet[6], packet[7]]);
        Some(Self {
            header: &packet[..IPV4_MIN_HEADER],
            payload: view.payload(),
            done: 0,
            step,
            base: flags & 0x1fff,
            more: flags & 0x2000 != 0,
            finished: false,
        })
    }

    /// Writes the next fragment into `out` (cleared first); false when all are out.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        if self.finished {
            return false;
        }
        let rest = self.payload.len() - self.done;
        let len = rest.min(self.step);
        let last = len == rest;
        let offset = self.base.saturating_add((self.done / 8) as u16);
        let more = !last || self.more;
        let flags = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
        out.extend_from_slice(self.header);
        out[2..4].copy_from_slice(&((IPV4_MIN_HEADER + len) as u16).to_be_bytes());
        out[6..8].copy_from_slice(&flags.to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&out[..IPV4_MIN_HEADER]);
        out[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&self.payload[self.done..self.done + len]);
        self.done += len;
        self.finished = last;
        true
    }
}

#[cfg(test)]
mod tests;
