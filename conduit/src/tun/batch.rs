//! Reusable buffers for batched device IO: [`RecvBatch`] holds the packets of one read
//! (a TSO/USO super-packet split at the MTU), [`SendBatch`] the decrypted packets of one
//! batched write (coalesced into super-packets before they reach the kernel).
//!
//! Invariant: both are allocated once, at their full size, and never grow: a packet is
//! copied into a buffer that already has room for it, and the coalescing in
//! [`tun_rs::GROTable`] only extends a buffer within the capacity reserved here.

use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Largest IP packet, and the largest super-packet a read or a coalesced write carries.
pub const MAX_PACKET: usize = 65_535;

/// Headroom before each packet of a [`SendBatch`], where the virtio header is written.
pub const SEND_OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// Packets read from the device in one call.
pub struct RecvBatch {
    /// The raw read: virtio header and an unsplit super-packet (kernel device with offload).
    pub(super) original: Vec<u8>,
    /// One packet per buffer. The first holds a whole packet of any size (a read without
    /// offload lands there); the others hold one MTU-sized segment each.
    pub(super) packets: Vec<Vec<u8>>,
    /// Length of each packet of the last read.
    pub(super) sizes: Vec<usize>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("buffers", &self.packets.len())
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Buffers for a device of this MTU. A 64 KiB super-packet split at the smallest
    /// segment TCP uses still fits: [`IDEAL_BATCH_SIZE`] (128) buffers.
    pub fn new(mtu: usize) -> Self {
        let mut packets = Vec::with_capacity(IDEAL_BATCH_SIZE);
        packets.push(vec![0; MAX_PACKET]);
        packets.resize_with(IDEAL_BATCH_SIZE, || vec![0; mtu.max(1)]);
        Self {
            original: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            packets,
            sizes: vec![0; IDEAL_BATCH_SIZE],
        }
    }

    /// The first `n` packets of the last read.
    pub fn packets(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.packets
            .iter()
            .zip(&self.sizes)
            .take(n)
            .map(|(buf, &len)| buf.get(..len).unwrap_or_default())
    }
}

/// Decrypted packets waiting for one batched device write.
pub struct SendBatch {
    /// Each packet at [`SEND_OFFSET`]; capacity for a coalesced 64 KiB super-packet.
    pub(super) bufs: Vec<Vec<u8>>,
    /// How many of `bufs` hold a packet.
    pub(super) len: usize,
    /// Coalescing state, reused for every write.
    pub(super) gro: GROTable,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("len", &self.len)
            .field("capacity", &self.bufs.len())
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    /// Room for `packets` packets per write.
    pub fn new(packets: usize) -> Self {
        // The coalescer refuses to grow a buffer past its capacity, and asks for the
        // offset twice over on top of the coalesced length.
        let capacity = 2 * SEND_OFFSET + MAX_PACKET;
        Self {
            bufs: (0..packets.max(1))
                .map(|_| Vec::with_capacity(capacity))
                .collect(),
            len: 0,
            gro: GROTable::new(),
        }
    }

    /// Queues a copy of `packet`; false (and nothing queued) when the batch is full or
    /// the packet is larger than [`MAX_PACKET`].
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Some(buf) = self.bufs.get_mut(self.len) else {
            return false;
        };
        if packet.len() > MAX_PACKET {
            return false;
        }
        buf.clear();
        buf.resize(SEND_OFFSET, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
        true
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the next [`push`](Self::push) would be refused.
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// The queued packets, each after its [`SEND_OFFSET`] headroom.
    pub(super) fn queued(&mut self) -> &mut [Vec<u8>] {
        let len = self.len.min(self.bufs.len());
        self.bufs.get_mut(..len).unwrap_or_default()
    }

    /// Forgets the queued packets (after a write).
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_batch_fills_without_growing() {
        let mut batch = SendBatch::new(2);
        let capacities: Vec<_> = batch.bufs.iter().map(Vec::capacity).collect();
        assert!(batch.push(&[0x45; 1350]));
        assert!(!batch.is_full());
        assert!(batch.push(&[0x45; 60]));
        assert!(batch.is_full());
        assert!(!batch.push(&[0x45; 60]), "a full batch refuses");
        assert_eq!(batch.len(), 2);
        let queued = batch.queued();
        assert_eq!(queued[0].len(), SEND_OFFSET + 1350);
        assert_eq!(&queued[1][SEND_OFFSET..], &[0x45; 60]);
        let after: Vec<_> = batch.bufs.iter().map(Vec::capacity).collect();
        assert_eq!(capacities, after);
        batch.clear();
        assert!(batch.is_empty());
        assert!(
            !batch.push(&vec![0; MAX_PACKET + 1]),
            "oversized packets are refused"
        );
    }

    #[test]
    fn recv_batch_reports_the_packets_of_the_last_read() {
        let mut batch = RecvBatch::new(1350);
        batch.packets[0][..3].copy_from_slice(&[1, 2, 3]);
        batch.packets[1][..2].copy_from_slice(&[4, 5]);
        batch.sizes[..2].copy_from_slice(&[3, 2]);
        let got: Vec<_> = batch.packets(2).collect();
        assert_eq!(got, [&[1u8, 2, 3][..], &[4, 5][..]]);
        assert_eq!(batch.packets(1).count(), 1);
    }
}
