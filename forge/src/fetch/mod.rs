//! A sans-IO chunk-fetch protocol over unreliable datagrams.
//!
//! Invariant: a chunk is yielded by the [`FetchClient`] only after its bytes matched the
//! [`ChunkIndex`](crate::chunk::ChunkIndex); a chunk that fails is discarded whole,
//! counted, and fetched again. The [`FetchServer`] holds at most a fixed number of chunk
//! buffers and a bounded job queue, whatever the image size or the number of clients.
//!
//! The datagrams (see [`wire`]) travel as conduit service datagrams on the Bulk lane, but
//! nothing here knows that: both sides take bytes in and give bytes out, with a peer
//! address of the caller's type `A` and the time `now` as inputs.
//!
//! # Driving rules
//!
//! Both state machines are driven the same way (quinn-proto style):
//!
//! 1. When a datagram arrives, call `handle_datagram(now, from, bytes)`.
//! 2. When the instant returned by `poll_timeout()` has passed, call
//!    `handle_timeout(now)` (the server has no timers and no `handle_timeout`).
//! 3. After any `handle_*` call, and whenever the link has room again, call
//!    `poll_transmit(now, &mut buf)` until it returns `None`, sending each
//!    [`Transmit`]'s `buf[..len]` to its `dst`. `buf` must hold the configured
//!    `max_datagram` bytes. The server emits one fragment per call and reads a chunk from
//!    its source only when a fragment of it is due, so a caller that polls only while its
//!    bulk lane has room keeps the server's memory and the queues below it bounded.
//! 4. On the client, call `poll_event()` until it returns `None`; a
//!    [`FetchEvent::Chunk`] hands over a verified chunk (give its buffer back with
//!    [`FetchClient::recycle`] to avoid an allocation); [`FetchEvent::Finished`] ends the
//!    transfer. Chunks not yet taken with `poll_event` count against the window, so a
//!    slow consumer slows the transfer instead of growing memory.
//! 5. Then wait for the next datagram or `poll_timeout()`, whichever comes first.

mod client;
mod rtt;
mod server;
pub mod wire;

pub use client::{ClientConfig, FetchClient, FetchEvent, FetchStats, ServerStats, VerifiedChunk};
pub use server::{FetchServer, ServerConfig, ServerCounters};
pub use wire::TransferId;

/// A datagram to send: `buf[..len]` of the buffer passed to `poll_transmit`, to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Where to send it.
    pub dst: A,
    /// Its length in the caller's buffer.
    pub len: usize,
}

/// Number of fragments of a chunk of `chunk_len` bytes at `frag_size` bytes each.
pub(crate) fn frag_count(chunk_len: usize, frag_size: usize) -> usize {
    chunk_len.div_ceil(frag_size.max(1))
}

/// A set of fragment numbers of one chunk (at most [`wire::MAX_FRAGS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FragSet([u64; wire::MAX_FRAGS / 64]);

impl FragSet {
    /// Fragments `0..n`.
    pub(crate) fn first_n(n: usize) -> Self {
        let mut s = Self::default();
        for i in 0..n.min(wire::MAX_FRAGS) {
            s.0[i / 64] |= 1 << (i % 64);
        }
        s
    }

    pub(crate) fn contains(&self, i: usize) -> bool {
        i < wire::MAX_FRAGS && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds `i`; returns whether it was new.
    pub(crate) fn insert(&mut self, i: usize) -> bool {
        if i >= wire::MAX_FRAGS || self.contains(i) {
            return false;
        }
        self.0[i / 64] |= 1 << (i % 64);
        true
    }

    pub(crate) fn remove(&mut self, i: usize) {
        if i < wire::MAX_FRAGS {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub(crate) fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub(crate) fn first(&self) -> Option<usize> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
    }

    /// `self` minus `other`.
    pub(crate) fn minus(&self, other: &Self) -> Self {
        let mut out = *self;
        for (o, x) in out.0.iter_mut().zip(other.0) {
            *o &= !x;
        }
        out
    }

    /// Adds the fragments named by a request entry, keeping only those below `n`.
    pub(crate) fn add_mask(&mut self, first_frag: u16, mask: u64, n: usize) {
        for b in 0..64 {
            if mask & (1 << b) != 0 {
                let i = usize::from(first_frag) + b;
                if i < n {
                    self.insert(i);
                }
            }
        }
    }

    /// The set as request entries (`first_frag`, `mask`), one per non-empty 64-block.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0)
            // At most MAX_FRAGS / 64 blocks, so `i * 64` fits a u16.
            .map(|(i, w)| ((i * 64) as u16, *w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragset_blocks_round_trip() {
        let mut s = FragSet::first_n(130);
        s.remove(3);
        assert_eq!(s.count(), 129);
        let mut back = FragSet::default();
        for (first, mask) in s.blocks() {
            back.add_mask(first, mask, 130);
        }
        assert_eq!(back, s);
        let mut clipped = FragSet::default();
        clipped.add_mask(128, u64::MAX, 130);
        assert_eq!(
            clipped.count(),
            2,
            "bits past the chunk's fragments are dropped"
        );
        assert_eq!(FragSet::first_n(130).minus(&s).first(), Some(3));
        assert_eq!(frag_count(65536, 1270), 52);
    }
}
