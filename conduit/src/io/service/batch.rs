//! The arenas service datagrams travel in: [`Packets`] (datagrams back to back in one
//! buffer), and the two batches users hold — [`OutgoingBatch`] and [`IncomingBatch`].
//!
//! Invariant: every datagram of a `Packets` is the bytes between the previous one's end
//! and its own, in push order; clearing keeps the buffers' capacity, so an arena that
//! reached its working size never allocates again.

use super::SEND_QUEUE;
use super::{check_len, encode};
use crate::error::ServiceError;
use crate::service::{ServiceDatagram, ServicePort};
use crate::{Lane, VirtualIp};

/// Datagrams back to back in one buffer, each with its lane (outgoing) or its source
/// (incoming).
#[derive(Debug)]
pub(super) struct Packets<M> {
    pub(super) bytes: Vec<u8>,
    /// Per datagram: its metadata and where it ends in `bytes`.
    pub(super) ends: Vec<(M, usize)>,
}

impl<M> Default for Packets<M> {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl<M: Copy> Packets<M> {
    pub(super) fn with_capacity(datagrams: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(datagrams),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub(super) fn get(&self, i: usize) -> Option<(M, &[u8])> {
        let &(meta, end) = self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].1);
        Some((meta, self.bytes.get(start..end)?))
    }

    pub(super) fn push(&mut self, meta: M, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.ends.push((meta, self.bytes.len()));
    }

    /// Appends `other`'s datagrams.
    pub(super) fn append(&mut self, other: &Self) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends
            .extend(other.ends.iter().map(|&(meta, end)| (meta, base + end)));
    }
}

/// The source of a received datagram.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source {
    pub(super) ip: VirtualIp,
    pub(super) port: u16,
    pub(super) to: ServicePort,
}

/// Datagrams for one [`ServiceSender::send_batch`](super::ServiceSender::send_batch), encoded as they are pushed (so the
/// sender's task, not the shell, pays for headers and checksums). Get one from
/// [`ServiceSender::batch`](super::ServiceSender::batch); reuse it: a sent batch comes back empty with its buffers.
#[derive(Debug)]
pub struct OutgoingBatch {
    pub(super) src: VirtualIp,
    pub(super) port: ServicePort,
    pub(super) max_payload: usize,
    pub(super) packets: Packets<Lane>,
}

impl OutgoingBatch {
    /// Encodes one datagram to `peer`:`port` for `lane`. Refused when the payload is too
    /// large, or when the batch already holds [`SEND_QUEUE`] datagrams (send it first).
    pub fn push(
        &mut self,
        peer: VirtualIp,
        port: u16,
        lane: Lane,
        payload: &[u8],
    ) -> Result<(), ServiceError> {
        check_len(payload, self.max_payload)?;
        if self.packets.len() >= SEND_QUEUE {
            return Err(ServiceError::Full {
                port: self.port.get(),
            });
        }
        encode(
            &mut self.packets,
            self.src,
            self.port,
            peer,
            port,
            lane,
            payload,
        );
        Ok(())
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packets.len() == 0
    }

    /// Whether [`push`](Self::push) would refuse for lack of room.
    pub fn is_full(&self) -> bool {
        self.packets.len() >= SEND_QUEUE
    }

    /// Forgets the datagrams pushed so far.
    pub fn clear(&mut self) {
        self.packets.clear();
    }
}

/// Datagrams taken from a socket's receive queue by [`ServiceSocket::recv_batch`](super::ServiceSocket::recv_batch).
#[derive(Debug, Default)]
pub struct IncomingBatch {
    pub(super) packets: Packets<Source>,
}

impl IncomingBatch {
    /// An empty batch; its buffers grow to the working size once, then are reused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packets.len() == 0
    }

    /// The `i`-th datagram, in arrival order.
    pub fn get(&self, i: usize) -> Option<ServiceDatagram<'_>> {
        let (from, payload) = self.packets.get(i)?;
        Some(ServiceDatagram {
            src_ip: from.ip,
            src_port: from.port,
            dst_port: from.to,
            payload,
        })
    }

    /// The datagrams, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = ServiceDatagram<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}
