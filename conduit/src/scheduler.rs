//! `DataPlaneScheduler`: the three-lane outbound queue between the TUN device and the paths.
//!
//! Invariants:
//! - while a critical packet is queued, [`DataPlaneScheduler::dequeue`] returns nothing else;
//! - no lane ever holds more than its capacity ([`CRITICAL_CAPACITY`], [`TELEMETRY_CAPACITY`],
//!   [`BULK_CAPACITY`]); packets leave a lane in the order they entered it (in the bulk
//!   lane: each peer's packets, in the order they entered);
//! - every packet handed in is counted once in [`LaneStats::enqueued`] and ends up exactly
//!   once as sent, dropped, or still queued (`enqueued == sent + dropped + queued`).
//!
//! Overflow: the critical lane evicts its *oldest* packet (a control loop wants the freshest
//! command); telemetry refuses the *new* packet (tail drop); bulk refuses it too unless the
//! packet's peer has fewer packets queued than the fullest peer, whose oldest is then
//! evicted instead. Either way the buffer that lost comes back in [`Enqueue`], so the caller
//! can recycle it: the lanes allocate their slots once at construction, and the bulk lane
//! a small record the first time it sees a peer.
//!
//! Between telemetry and bulk a byte-based deficit round robin ([`TELEMETRY_QUANTUM`] :
//! [`BULK_QUANTUM`], 3 : 1) shares the link, so a continuous telemetry stream delays bulk but
//! never starves it. Inside the bulk lane each peer has its own FIFO, and a second deficit
//! round robin ([`BULK_PEER_QUANTUM`] bytes per peer per round) shares bulk between peers,
//! all in one pool of [`BULK_CAPACITY`] slots (see `bulk.rs` for why one shared pool).
//! Pacing bulk against the network below is the caller's job, per peer (see
//! [`crate::path::PeerCongestion`] and [`DataPlaneScheduler::dequeue_paced`]).
//!
//! Driving it: `enqueue` each packet read from the TUN device (recycle what comes back), then
//! call `dequeue_paced` until it returns `None`; call `publish` once per loop iteration.

mod bulk;
mod classify;
mod drr;
mod rules;

use std::collections::VecDeque;
use std::fmt;

use ringbuf::HeapRb;
use ringbuf::traits::Observer;

use bulk::{BulkLane, Push};
pub use classify::{SMALL_PACKET_BYTES, TELEMETRY_PORT, classify, classify_with};
use drr::Drr;
pub use rules::{LaneProtocol, LaneRule, LaneRules, MAX_LANE_RULES};

use crate::{Lane, Metrics, PeerId};

/// Critical lane capacity, in packets.
pub const CRITICAL_CAPACITY: usize = 1024;
/// Telemetry lane capacity, in packets.
pub const TELEMETRY_CAPACITY: usize = 2048;
/// Bulk lane capacity, in packets.
pub const BULK_CAPACITY: usize = 4096;
/// Default bytes of credit telemetry gets per round robin turn.
pub const TELEMETRY_QUANTUM: usize = 3 * 1500;
/// Default bytes of credit bulk gets per round robin turn.
pub const BULK_QUANTUM: usize = 1500;
/// Bytes of credit each peer's bulk queue gets per round robin turn inside the bulk lane.
pub const BULK_PEER_QUANTUM: usize = 1500;
/// The peer bulk is queued for when the caller does not say ([`DataPlaneScheduler::enqueue`]).
pub const ANY_PEER: PeerId = PeerId([0; 16]);

/// Per-lane packet counts kept by the scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Packets handed to the lane, whether or not they were kept.
    pub enqueued: u64,
    /// Packets taken out by `dequeue`.
    pub sent: u64,
    /// Packets refused (tail drop) or evicted (critical overflow).
    pub dropped: u64,
}

/// What happened to a packet handed to the scheduler.
#[must_use = "a dropped or evicted buffer should be recycled"]
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueue {
    /// The packet was queued in this lane.
    Queued(Lane),
    /// The packet was queued; the lane was full, so an older packet was evicted: the
    /// critical lane's oldest, or in the bulk lane the oldest packet of the peer with the
    /// most queued.
    Evicted {
        /// The lane (critical or bulk).
        lane: Lane,
        /// The evicted buffer, for recycling.
        oldest: Vec<u8>,
    },
    /// The lane was full; the new packet was refused and is handed back.
    Dropped {
        /// The lane the packet was meant for.
        lane: Lane,
        /// The refused buffer, for recycling.
        packet: Vec<u8>,
    },
}

impl Enqueue {
    /// The lane the packet was classified into.
    pub fn lane(&self) -> Lane {
        match self {
            Enqueue::Queued(lane)
            | Enqueue::Evicted { lane, .. }
            | Enqueue::Dropped { lane, .. } => *lane,
        }
    }

    /// Whether the packet handed in is now queued.
    pub fn is_queued(&self) -> bool {
        !matches!(self, Enqueue::Dropped { .. })
    }

    /// The buffer that lost (evicted or refused), if any, for the caller's buffer pool.
    pub fn into_spare(self) -> Option<Vec<u8>> {
        match self {
            Enqueue::Queued(_) => None,
            Enqueue::Evicted { oldest: buf, .. } | Enqueue::Dropped { packet: buf, .. } => {
                Some(buf)
            }
        }
    }
}

/// The three-lane outbound scheduler. See the module docs for the rules.
pub struct DataPlaneScheduler {
    critical: VecDeque<Vec<u8>>,
    telemetry: HeapRb<Vec<u8>>,
    bulk: BulkLane,
    drr: Drr,
    bytes: [usize; 3],
    stats: [LaneStats; 3],
    /// Counts already added to a `Metrics`, so `publish` adds only the difference.
    published: [LaneStats; 3],
    /// The operator's port rules ([`classify_with`]).
    rules: LaneRules,
}

impl Default for DataPlaneScheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl DataPlaneScheduler {
    /// A scheduler with the default 3 : 1 telemetry : bulk quanta.
    pub fn new() -> Self {
        Self::with_quanta(TELEMETRY_QUANTUM, BULK_QUANTUM)
    }

    /// A scheduler with custom round robin quanta in bytes (each raised to at least 1).
    ///
    /// Choosing a dequeue costs about `packet size / quantum` steps when both lanes are
    /// busy, so quanta near the MTU keep it O(1).
    pub fn with_quanta(telemetry_quantum: usize, bulk_quantum: usize) -> Self {
        Self {
            critical: VecDeque::with_capacity(CRITICAL_CAPACITY),
            telemetry: HeapRb::new(TELEMETRY_CAPACITY),
            bulk: BulkLane::new(BULK_CAPACITY, BULK_PEER_QUANTUM),
            drr: Drr::new(telemetry_quantum.max(1), bulk_quantum.max(1)),
            bytes: [0; 3],
            stats: [LaneStats::default(); 3],
            published: [LaneStats::default(); 3],
            rules: LaneRules::default(),
        }
    }

    /// Replaces the operator's port-to-lane rules used by [`DataPlaneScheduler::enqueue`].
    pub fn set_lane_rules(&mut self, rules: LaneRules) {
        self.rules = rules;
    }

    /// Classifies `packet` with [`classify_with`] and the configured rules and queues it.
    pub fn enqueue(&mut self, packet: Vec<u8>) -> Enqueue {
        let lane = classify_with(&self.rules, &packet);
        self.enqueue_in(lane, packet)
    }

    /// Queues `packet` in `lane` without classifying it (OTA chunks are forced into bulk);
    /// bulk goes to the queue of [`ANY_PEER`].
    pub fn enqueue_in(&mut self, lane: Lane, packet: Vec<u8>) -> Enqueue {
        self.enqueue_for(ANY_PEER, lane, packet)
    }

    /// Classifies `packet` and queues it for `peer` (whose bulk queue it joins if bulk).
    pub fn enqueue_to(&mut self, peer: PeerId, packet: Vec<u8>) -> Enqueue {
        let lane = classify_with(&self.rules, &packet);
        self.enqueue_for(peer, lane, packet)
    }

    /// Queues `packet` for `peer` in `lane` without classifying it. When the bulk lane is
    /// full, a peer with fewer packets queued than the fullest one evicts that one's oldest
    /// packet ([`Enqueue::Evicted`]); the fullest peer's own new packet is refused.
    pub fn enqueue_for(&mut self, peer: PeerId, lane: Lane, packet: Vec<u8>) -> Enqueue {
        let stats = &mut self.stats[lane.index()];
        stats.enqueued += 1;
        let len = packet.len();
        let outcome = match lane {
            Lane::Critical => {
                let evicted = if self.critical.len() >= CRITICAL_CAPACITY {
                    self.critical.pop_front()
                } else {
                    None
                };
                self.critical.push_back(packet);
                match evicted {
                    Some(oldest) => {
                        self.bytes[lane.index()] -= oldest.len();
                        Enqueue::Evicted { lane, oldest }
                    }
                    None => Enqueue::Queued(lane),
                }
            }
            Lane::Telemetry => push_or_refuse(&mut self.telemetry, lane, packet),
            Lane::Bulk => match self.bulk.push(peer, packet) {
                Push::Queued => Enqueue::Queued(lane),
                Push::Evicted(oldest) => {
                    self.bytes[lane.index()] -= oldest.len();
                    Enqueue::Evicted { lane, oldest }
                }
                Push::Refused(packet) => Enqueue::Dropped { lane, packet },
            },
        };
        if outcome.is_queued() {
            self.bytes[lane.index()] += len;
        }
        if !matches!(outcome, Enqueue::Queued(_)) {
            stats.dropped += 1;
        }
        outcome
    }

    /// Takes the next packet: critical first, then telemetry and bulk by deficit round robin,
    /// bulk by round robin across peers.
    pub fn dequeue(&mut self) -> Option<(Lane, Vec<u8>)> {
        self.dequeue_paced(|_, _| true)
    }

    /// Like [`dequeue`](Self::dequeue), but a peer's bulk packet leaves only if
    /// `bulk_may_send(peer, len)` agrees; a peer held back loses its turn to the next
    /// peer, and while every peer's bulk is held back telemetry may use the link.
    /// Critical and telemetry packets are never held back.
    pub fn dequeue_paced(
        &mut self,
        bulk_may_send: impl FnMut(PeerId, usize) -> bool,
    ) -> Option<(Lane, Vec<u8>)> {
        if !self.critical.is_empty() {
            return self.pop(Lane::Critical);
        }
        let telemetry = self.telemetry.try_peek().map(Vec::len);
        let bulk = match self.bulk.len() {
            0 => None,
            _ => match self.bulk.pick(bulk_may_send) {
                Some(len) => Some(len),
                // Bulk is throttled below us: it is not competing now, so telemetry takes
                // the turn without being charged for it.
                None => return self.pop(Lane::Telemetry),
            },
        };
        let (lane, drr) = self.drr.next(telemetry, bulk)?;
        self.drr = drr;
        self.pop(lane)
    }

    /// The lane the next `dequeue` would take from, without taking anything (bulk as the
    /// peer at the front of the bulk round offers it).
    ///
    /// Takes `&mut self` only because `ringbuf` 0.6 peeks through `&mut`; nothing changes.
    pub fn peek_lane(&mut self) -> Option<Lane> {
        if !self.critical.is_empty() {
            return Some(Lane::Critical);
        }
        let telemetry = self.telemetry.try_peek().map(Vec::len);
        self.drr
            .next(telemetry, self.bulk.front_len())
            .map(|(lane, _)| lane)
    }

    /// Packets `lane` holds at most.
    pub const fn capacity(lane: Lane) -> usize {
        match lane {
            Lane::Critical => CRITICAL_CAPACITY,
            Lane::Telemetry => TELEMETRY_CAPACITY,
            Lane::Bulk => BULK_CAPACITY,
        }
    }

    /// Packets `lane` takes before it drops (bulk, telemetry) or evicts (critical): a
    /// sender that must not lose packets queues no more than this.
    pub fn room(&self, lane: Lane) -> usize {
        Self::capacity(lane).saturating_sub(self.len(lane))
    }

    /// Whether a bulk packet read from the device now can be queued for some peer: the
    /// lane has room, or more than one peer is backlogged, so a packet for a peer that
    /// holds fewer than the fullest evicts that one's oldest (see `scheduler/bulk.rs`).
    /// While it is false the device's bulk is left in the kernel's ring. Held back on a
    /// full lane alone, a slow peer's backlog (a 2 Mbit/s robot's four thousand packets)
    /// kept the others' packets in that ring, read only as fast as it drained: between
    /// real daemons every peer of a hub got the slow one's rate (docs/congestion.md
    /// section 16).
    pub fn takes_bulk_reads(&self) -> bool {
        self.room(Lane::Bulk) > 0 || self.bulk.backlogged() > 1
    }

    /// Packets queued in `lane`.
    pub fn len(&self, lane: Lane) -> usize {
        match lane {
            Lane::Critical => self.critical.len(),
            Lane::Telemetry => self.telemetry.occupied_len(),
            Lane::Bulk => self.bulk.len(),
        }
    }

    /// Bulk packets queued for `peer`.
    pub fn bulk_len_for(&self, peer: PeerId) -> usize {
        self.bulk.len_of(peer)
    }

    /// Takes every bulk packet queued for `peer` (it was removed) and hands each to
    /// `recycle`; they count as dropped.
    pub fn remove_peer(&mut self, peer: PeerId, mut recycle: impl FnMut(Vec<u8>)) {
        let (bytes, stats) = (
            &mut self.bytes[Lane::Bulk.index()],
            &mut self.stats[Lane::Bulk.index()],
        );
        self.bulk.drain_peer(peer, |packet| {
            *bytes -= packet.len();
            stats.dropped += 1;
            recycle(packet);
        });
    }

    /// Whether all three lanes are empty.
    pub fn is_empty(&self) -> bool {
        Lane::ALL.iter().all(|&lane| self.len(lane) == 0)
    }

    /// Bytes queued in `lane`.
    pub fn bytes_queued(&self, lane: Lane) -> usize {
        self.bytes[lane.index()]
    }

    /// Bytes queued in the bulk lane (the IO shell bounds this to keep memory flat).
    pub fn bulk_bytes_queued(&self) -> usize {
        self.bytes_queued(Lane::Bulk)
    }

    /// Counts for one lane since construction.
    pub fn stats(&self, lane: Lane) -> LaneStats {
        self.stats[lane.index()]
    }

    /// Adds the counts accumulated since the last call to `metrics`' per-lane counters
    /// (`sent` goes to `lane_sent`). Call once per loop iteration, not per packet.
    pub fn publish(&mut self, metrics: &Metrics) {
        for lane in Lane::ALL {
            let (now, before) = (self.stats[lane.index()], self.published[lane.index()]);
            for (array, delta) in [
                (&metrics.lane_enqueued, now.enqueued - before.enqueued),
                (&metrics.lane_sent, now.sent - before.sent),
                (&metrics.lane_dropped, now.dropped - before.dropped),
            ] {
                Metrics::add(&array[lane.index()], delta);
            }
            self.published[lane.index()] = now;
        }
    }

    fn pop(&mut self, lane: Lane) -> Option<(Lane, Vec<u8>)> {
        let packet = match lane {
            Lane::Critical => self.critical.pop_front(),
            Lane::Telemetry => self.telemetry.try_pop(),
            Lane::Bulk => self.bulk.pop().map(|(_, packet)| packet),
        }?;
        self.bytes[lane.index()] -= packet.len();
        self.stats[lane.index()].sent += 1;
        Some((lane, packet))
    }
}

fn push_or_refuse(ring: &mut HeapRb<Vec<u8>>, lane: Lane, packet: Vec<u8>) -> Enqueue {
    match ring.try_push(packet) {
        Ok(()) => Enqueue::Queued(lane),
        Err(packet) => Enqueue::Dropped { lane, packet },
    }
}

impl fmt::Debug for DataPlaneScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlaneScheduler")
            .field("queued", &Lane::ALL.map(|lane| self.len(lane)))
            .field("bytes", &self.bytes)
            .field("stats", &self.stats)
            .field("drr", &self.drr)
            .finish()
    }
}

#[cfg(test)]
mod tests;
