//! `GsoBatch`: consecutive sealed datagrams for one destination, gathered back to back in
//! one buffer so that a single `sendmsg` with UDP GSO carries them all.
//!
//! Invariant: a batch holds datagrams for one destination, all of one length except a
//! shorter last one (the kernel's GSO contract), and once *complete* it only shrinks —
//! datagrams leave from the front, each exactly once. At most one datagram beyond a
//! complete batch is held: the one whose destination or length closed it, which opens the
//! next batch once this one has gone. So what waits outside the node is bounded by one
//! batch plus one datagram.
//!
//! # Driving a batch
//!
//! ```text
//! loop {
//!     if let Some(u) = batch.unsent() { send u; batch.mark_sent(n); continue }  // or stop if the socket is full
//!     let Some(tail) = batch.tail(max_segments) else { continue };             // complete: send first
//!     match node.poll_transmit(now, tail) {
//!         Some(t) => batch.push(t.dst, t.len),
//!         None if batch.is_empty() => break,
//!         None => batch.finish(),
//!     }
//! }
//! ```

use std::net::SocketAddr;

/// Most bytes gathered into one batch. The kernel would take 64 KiB (65 535 minus the
/// IPv4 and UDP headers), but on a slow link a batch leaves as one burst that a critical
/// packet sealed after it waits behind: 32 KiB is 13 ms at 20 Mbit/s instead of 26. In
/// the namespace bench (20 Mbit/s tbf, ping under a bulk flow) p99 fell from 57 ms to
/// 33 ms, while the cost in CPU per byte stayed within the noise — the syscall is
/// already shared by ~23 datagrams.
pub(super) const MAX_BATCH_BYTES: usize = 32 * 1024;

/// The kernel's limit on segments per GSO send (`UDP_MAX_SEGMENTS`).
pub(super) const MAX_GSO_SEGMENTS: usize = 64;

/// Where a freshly sealed datagram goes relative to the batch being gathered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Joins the batch, which stays open for more.
    Append,
    /// Joins the batch as its shorter last segment; the batch is complete.
    Last,
    /// Cannot join (another destination, or longer than the segment size): the batch is
    /// complete and this datagram opens the next one.
    Next,
}

/// Where a datagram for `dst` of `len` bytes goes, given the open batch's destination
/// and segment size (`None` while the batch is empty).
pub(super) fn place(open: Option<(SocketAddr, usize)>, dst: SocketAddr, len: usize) -> Place {
    match open {
        None => Place::Append,
        Some((to, _)) if to != dst => Place::Next,
        Some((_, segment)) if len == segment => Place::Append,
        Some((_, segment)) if len < segment => Place::Last,
        Some(_) => Place::Next,
    }
}

/// The part of a complete batch still to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unsent<'a> {
    /// Destination of every datagram.
    pub(super) dst: SocketAddr,
    /// Length of each datagram but the last, which may be shorter.
    pub(super) segment: usize,
    /// How many datagrams `bytes` holds.
    pub(super) datagrams: usize,
    /// The datagrams, back to back.
    pub(super) bytes: &'a [u8],
}

/// Datagrams gathered for one GSO send. Allocated once; see the module docs.
pub(super) struct GsoBatch {
    buf: Vec<u8>,
    /// What `poll_transmit` needs at the tail before it may be called.
    capacity: usize,
    /// Destination and segment size; `None` while empty.
    open: Option<(SocketAddr, usize)>,
    /// Datagrams in the batch, and their total length.
    count: usize,
    bytes: usize,
    /// No datagram may join any more; send it.
    complete: bool,
    /// Datagrams of a complete batch already sent (or given up).
    sent: usize,
    /// The datagram that closed the batch, stored right after it.
    carry: Option<(SocketAddr, usize)>,
}

impl GsoBatch {
    /// A batch whose datagrams come from `poll_transmit` with `capacity`-byte buffers.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; MAX_BATCH_BYTES.max(capacity)],
            capacity,
            open: None,
            count: 0,
            bytes: 0,
            complete: false,
            sent: 0,
            carry: None,
        }
    }

    /// The buffer for the next datagram, or `None` when the batch is complete (send it
    /// first). Completes the batch when `max_segments` are in or the next datagram might
    /// push it past [`MAX_BATCH_BYTES`].
    pub(super) fn tail(&mut self, max_segments: usize) -> Option<&mut [u8]> {
        if self.complete {
            return None;
        }
        let full = self.count >= max_segments.clamp(1, MAX_GSO_SEGMENTS)
            || self.bytes + self.capacity > MAX_BATCH_BYTES;
        if self.count > 0 && full {
            self.complete = true;
            return None;
        }
        self.buf.get_mut(self.bytes..)
    }

    /// Records the datagram `poll_transmit` just wrote into [`tail`](Self::tail).
    pub(super) fn push(&mut self, dst: SocketAddr, len: usize) {
        // A datagram longer than the tail cannot have been written there; clamp so that
        // a broken promise costs a datagram, not a panic.
        let len = len.min(self.buf.len().saturating_sub(self.bytes));
        match place(self.open, dst, len) {
            Place::Append => self.append(dst, len),
            Place::Last => {
                self.append(dst, len);
                self.complete = true;
            }
            Place::Next => {
                self.carry = Some((dst, len));
                self.complete = true;
            }
        }
    }

    fn append(&mut self, dst: SocketAddr, len: usize) {
        if self.open.is_none() {
            self.open = Some((dst, len));
        }
        self.count += 1;
        self.bytes += len;
    }

    /// The node has nothing more for now: what is gathered goes as it is.
    pub(super) fn finish(&mut self) {
        if self.count > 0 {
            self.complete = true;
        }
    }

    /// Whether no datagram is held (none gathered, none carried).
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The datagrams of the complete batch not yet sent; `None` while it is still open.
    pub(super) fn unsent(&self) -> Option<Unsent<'_>> {
        if !self.complete {
            return None;
        }
        let (dst, segment) = self.open?;
        let start = (self.sent * segment).min(self.bytes);
        Some(Unsent {
            dst,
            segment,
            datagrams: self.count.saturating_sub(self.sent),
            bytes: self.buf.get(start..self.bytes).unwrap_or_default(),
        })
    }

    /// Marks the first `n` unsent datagrams as gone (sent, or refused by the OS). When
    /// the batch is done, the carried datagram moves to the front and opens the next.
    pub(super) fn mark_sent(&mut self, n: usize) {
        self.sent += n;
        if self.sent < self.count {
            return;
        }
        let (start, carry) = (self.bytes, self.carry.take());
        self.open = None;
        self.count = 0;
        self.bytes = 0;
        self.sent = 0;
        self.complete = false;
        if let Some((dst, len)) = carry {
            self.buf.copy_within(start..start + len, 0);
            self.append(dst, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    /// Feeds `transmits` through a batch the way the shell does (every send succeeds)
    /// and returns each send as (destination, segment size, datagram lengths).
    fn batches(
        transmits: &[(u16, usize)],
        max_segments: usize,
        capacity: usize,
    ) -> Vec<(u16, usize, Vec<usize>)> {
        let mut batch = GsoBatch::new(capacity);
        let mut input = transmits.iter().enumerate();
        let mut sends = Vec::new();
        loop {
            if let Some(u) = batch.unsent() {
                let mut lens = Vec::new();
                for chunk in u.bytes.chunks(u.segment) {
                    // Each datagram carries its index in its first byte.
                    assert_eq!(chunk.len(), transmits[usize::from(chunk[0])].1);
                    lens.push(chunk.len());
                }
                assert_eq!(lens.len(), u.datagrams);
                sends.push((u.dst.port(), u.segment, lens));
                batch.mark_sent(u.datagrams);
                continue;
            }
            let Some(tail) = batch.tail(max_segments) else {
                continue;
            };
            match input.next() {
                Some((i, &(port, len))) => {
                    tail[..len].fill(u8::try_from(i).unwrap());
                    batch.push(addr(port), len);
                }
                None if batch.is_empty() => return sends,
                None => batch.finish(),
            }
        }
    }

    #[test]
    fn place_follows_the_gso_contract() {
        let open = Some((addr(1), 1000));
        assert_eq!(place(None, addr(1), 1000), Place::Append);
        assert_eq!(place(open, addr(1), 1000), Place::Append);
        assert_eq!(place(open, addr(1), 999), Place::Last);
        assert_eq!(place(open, addr(1), 1001), Place::Next);
        assert_eq!(place(open, addr(2), 1000), Place::Next);
    }

    #[test]
    fn equal_datagrams_to_one_destination_share_a_send() {
        let t = [(1, 1000), (1, 1000), (1, 1000), (1, 400), (1, 1000)];
        assert_eq!(
            batches(&t, 64, 1400),
            [
                (1, 1000, vec![1000, 1000, 1000, 400]),
                (1, 1000, vec![1000])
            ]
        );
    }

    #[test]
    fn a_new_destination_or_a_longer_datagram_starts_the_next_batch() {
        let t = [(1, 500), (2, 500), (2, 500), (2, 900), (1, 900)];
        assert_eq!(
            batches(&t, 64, 1400),
            [
                (1, 500, vec![500]),
                (2, 500, vec![500, 500]),
                (2, 900, vec![900]),
                (1, 900, vec![900])
            ]
        );
    }

    #[test]
    fn batches_stop_at_the_segment_and_byte_limits() {
        let t = vec![(1, 1000); 10];
        let sizes: Vec<_> = batches(&t, 4, 1400).iter().map(|b| b.2.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        // Without GSO every datagram goes alone.
        assert!(batches(&t, 1, 1400).iter().all(|b| b.2.len() == 1));
        // A batch stops polling once another full datagram might not fit.
        let t = vec![(1, 1400); 100];
        let sizes: Vec<_> = batches(&t, 64, 1400).iter().map(|b| b.2.len()).collect();
        assert!(
            sizes.iter().all(|&n| n * 1400 <= MAX_BATCH_BYTES),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert_eq!(sizes[0], MAX_BATCH_BYTES / 1400);
    }

    #[test]
    fn a_partly_sent_batch_resumes_where_it_stopped() {
        let mut batch = GsoBatch::new(100);
        for i in 0..3u8 {
            let tail = batch.tail(64).unwrap();
            tail[..100].fill(i);
            batch.push(addr(1), 100);
        }
        // A datagram for elsewhere closes the batch and is carried.
        batch.tail(64).unwrap()[..50].fill(9);
        batch.push(addr(2), 50);
        assert!(batch.tail(64).is_none(), "complete: nothing joins");
        let u = batch.unsent().unwrap();
        assert_eq!((u.datagrams, u.bytes.len()), (3, 300));
        batch.mark_sent(1);
        let u = batch.unsent().unwrap();
        assert_eq!((u.datagrams, u.bytes[0], u.bytes.len()), (2, 1, 200));
        batch.mark_sent(2);
        // The carried datagram now opens the next batch, intact.
        assert!(batch.unsent().is_none());
        assert!(!batch.is_empty());
        batch.finish();
        let u = batch.unsent().unwrap();
        assert_eq!((u.dst, u.datagrams, u.bytes), (addr(2), 1, &[9u8; 50][..]));
        batch.mark_sent(1);
        assert!(batch.is_empty());
    }
}
