//! The bulk lane: one FIFO per peer inside one pool of [`BULK_CAPACITY`](super::BULK_CAPACITY)
//! slots, served by deficit round robin across peers, each peer gated by its own
//! congestion controller.
//!
//! Invariants: the lane never holds more packets than its pool has slots, and the pool is
//! allocated once, whatever the number of peers; a peer's packets leave in the order they
//! entered; while several peers are backlogged and allowed to send, each is offered
//! `quantum` bytes per round, so a slow or lossy peer whose controller holds it back
//! neither blocks the others (it loses its turn) nor takes their share.
//!
//! Why one shared pool rather than a pool per peer: the lane's memory stays what the design
//! sizes it to (4096 packets) for a node with one peer or a hub with a thousand, and one
//! backlogged peer alone may use all of it (a single OTA transfer is the common case). When
//! the pool is full, a packet for a peer that holds fewer packets than the fullest one
//! evicts the *oldest* packet of that fullest peer (fq_codel's overload rule, RFC 8290
//! section 4.1.3), so a slow peer's backlog cannot lock the others out of the lane.

use std::collections::{BTreeMap, VecDeque};

use crate::PeerId;

/// End of a slot chain.
const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Slot {
    packet: Option<Vec<u8>>,
    next: u32,
}

/// One peer's queue: a chain of slots, and its round robin credit.
#[derive(Clone, Copy, Debug)]
struct Flow {
    head: u32,
    tail: u32,
    len: usize,
    deficit: usize,
}

impl Flow {
    const EMPTY: Flow = Flow {
        head: NIL,
        tail: NIL,
        len: 0,
        deficit: 0,
    };
}

/// What [`BulkLane::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    /// Queued.
    Queued,
    /// Queued; the pool was full, so the fullest peer's oldest packet was evicted.
    Evicted(Vec<u8>),
    /// The pool was full and this peer is the fullest: the packet is refused.
    Refused(Vec<u8>),
}

/// Per-peer bulk queues in one slot pool. See the module docs.
#[derive(Debug)]
pub(super) struct BulkLane {
    slots: Box<[Slot]>,
    free: u32,
    flows: BTreeMap<PeerId, Flow>,
    /// Peers with queued packets, in round robin order; the front is served.
    active: VecDeque<PeerId>,
    /// Whether the front peer got its quantum for this turn.
    credited: bool,
    len: usize,
    quantum: usize,
}

impl BulkLane {
    /// A lane of `capacity` slots (at most `u32::MAX - 1`) granting `quantum` bytes (at
    /// least 1) per peer per round.
    pub(super) fn new(capacity: usize, quantum: usize) -> Self {
        let capacity = capacity.min(NIL as usize - 1);
        let slots = (0..capacity)
            .map(|i| Slot {
                packet: None,
                next: if i + 1 < capacity { i as u32 + 1 } else { NIL },
            })
            .collect();
        Self {
            slots,
            free: if capacity > 0 { 0 } else { NIL },
            flows: BTreeMap::new(),
            active: VecDeque::new(),
            credited: false,
            len: 0,
            quantum: quantum.max(1),
        }
    }

    /// Packets queued, all peers together.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Peers with packets queued.
    pub(super) fn backlogged(&self) -> usize {
        self.active.len()
    }

    /// Packets queued for `peer`.
    pub(super) fn len_of(&self, peer: PeerId) -> usize {
        self.flows.get(&peer).map_or(0, |f| f.len)
    }

    /// Queues `packet` for `peer`; see the module docs for what happens when the pool is
    /// full.
    pub(super) fn push(&mut self, peer: PeerId, packet: Vec<u8>) -> Push {
        let mut evicted = None;
        if self.free == NIL {
            let mine = self.len_of(peer);
            let fullest = self
                .flows
                .iter()
                .max_by_key(|(_, f)| f.len)
                .map(|(p, f)| (*p, f.len));
            match fullest {
                Some((victim, len)) if len > mine + 1 => {
                    evicted = self.pop_flow(victim);
                }
                _ => return Push::Refused(packet),
            }
        }
        let Some(slot) = self.take_slot(packet) else {
            // Unreachable: the pool had a free slot or one was just freed. Refusing keeps
            // the bound even so.
            return Push::Refused(evicted.unwrap_or_default());
        };
        let flow = self.flows.entry(peer).or_insert(Flow::EMPTY);
        if flow.len == 0 {
            flow.head = slot;
            self.active.push_back(peer);
        } else {
            self.slots[flow.tail as usize].next = slot;
        }
        flow.tail = slot;
        flow.len += 1;
        self.len += 1;
        match evicted {
            Some(old) => Push::Evicted(old),
            None => Push::Queued,
        }
    }

    /// Length of the next packet of the peer at the front of the round (what the lane
    /// offers the telemetry/bulk round robin when pacing is not asked).
    pub(super) fn front_len(&self) -> Option<usize> {
        let flow = self.flows.get(self.active.front()?)?;
        self.head_len(flow)
    }

    /// Advances the round to a peer whose controller lets its head packet go
    /// (`may_send(peer, len)`) and whose credit covers it, and returns that packet's
    /// length; `None` if every backlogged peer is held back. Peers passed over keep their
    /// packets; a held-back peer loses its credit (it is not competing this round).
    pub(super) fn pick(
        &mut self,
        mut may_send: impl FnMut(PeerId, usize) -> bool,
    ) -> Option<usize> {
        // Each visit either serves, or grants one quantum, or rotates: a full pass of held
        // back peers ends it, and an oversized head needs `len / quantum` passes at most.
        let passes = 2 + u16::MAX as usize / self.quantum;
        let mut held_in_a_row = 0;
        for _ in 0..self.active.len().saturating_mul(passes) {
            let peer = *self.active.front()?;
            let flow = *self.flows.get(&peer)?;
            let head = self.head_len(&flow)?;
            if !may_send(peer, head) {
                self.set_deficit(peer, 0);
                self.rotate();
                held_in_a_row += 1;
                if held_in_a_row >= self.active.len() {
                    return None;
                }
                continue;
            }
            held_in_a_row = 0;
            let mut deficit = flow.deficit;
            if !self.credited {
                deficit = deficit.saturating_add(self.quantum);
                self.credited = true;
                self.set_deficit(peer, deficit);
            }
            if head <= deficit {
                return Some(head);
            }
            self.rotate();
        }
        None
    }

    /// Takes the head packet of the front peer (the one [`pick`](Self::pick) chose),
    /// charging its credit.
    pub(super) fn pop(&mut self) -> Option<(PeerId, Vec<u8>)> {
        let peer = *self.active.front()?;
        let packet = self.pop_flow(peer)?;
        if let Some(flow) = self.flows.get_mut(&peer) {
            flow.deficit = flow.deficit.saturating_sub(packet.len());
        }
        Some((peer, packet))
    }

    /// Takes every packet queued for `peer` (it is gone), oldest first, into `out`.
    pub(super) fn drain_peer(&mut self, peer: PeerId, mut out: impl FnMut(Vec<u8>)) {
        while let Some(packet) = self.pop_flow(peer) {
            out(packet);
        }
        self.flows.remove(&peer);
    }

    fn head_len(&self, flow: &Flow) -> Option<usize> {
        self.slots
            .get(flow.head as usize)?
            .packet
            .as_ref()
            .map(Vec::len)
    }

    fn set_deficit(&mut self, peer: PeerId, deficit: usize) {
        if let Some(flow) = self.flows.get_mut(&peer) {
            flow.deficit = deficit;
        }
    }

    /// Ends the front peer's turn.
    fn rotate(&mut self) {
        self.active.rotate_left(1.min(self.active.len()));
        self.credited = false;
    }

    /// Takes the oldest packet of `peer`, leaving the round when it runs empty.
    fn pop_flow(&mut self, peer: PeerId) -> Option<Vec<u8>> {
        let flow = self.flows.get_mut(&peer)?;
        if flow.len == 0 {
            return None;
        }
        let index = flow.head;
        let slot = self.slots.get_mut(index as usize)?;
        let packet = slot.packet.take();
        flow.head = slot.next;
        flow.len -= 1;
        slot.next = self.free;
        self.free = index;
        self.len -= 1;
        if flow.len == 0 {
            // A peer that runs empty forfeits its credit, so idle time is not saved up.
            *flow = Flow::EMPTY;
            if let Some(pos) = self.active.iter().position(|p| *p == peer) {
                if pos == 0 {
                    self.credited = false;
                }
                self.active.remove(pos);
            }
        }
        packet
    }

    fn take_slot(&mut self, packet: Vec<u8>) -> Option<u32> {
        let index = self.free;
        let slot = self.slots.get_mut(index as usize)?;
        self.free = slot.next;
        slot.packet = Some(packet);
        slot.next = NIL;
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 16])
    }

    #[test]
    fn peers_share_bytes_equally_and_keep_their_order() {
        let mut lane = BulkLane::new(64, 1500);
        for i in 0..20u8 {
            assert_eq!(lane.push(peer(1), vec![i; 1400]), Push::Queued);
            assert_eq!(lane.push(peer(2), vec![i; 700]), Push::Queued);
        }
        let mut bytes = [0usize; 3];
        let mut last = [None::<u8>; 3];
        for _ in 0..30 {
            assert!(lane.pick(|_, _| true).is_some());
            let (p, packet) = lane.pop().unwrap();
            let who = p.0[0] as usize;
            assert!(last[who].is_none_or(|l| l < packet[0]), "FIFO per peer");
            last[who] = Some(packet[0]);
            bytes[who] += packet.len();
        }
        let ratio = bytes[1] as f64 / bytes[2] as f64;
        assert!((0.8..1.25).contains(&ratio), "{bytes:?}");
    }

    #[test]
    fn a_held_back_peer_loses_its_turn_not_the_others() {
        let mut lane = BulkLane::new(64, 1500);
        for _ in 0..10 {
            let _ = lane.push(peer(1), vec![1; 1000]);
            let _ = lane.push(peer(2), vec![2; 1000]);
        }
        for _ in 0..5 {
            assert_eq!(lane.pick(|p, _| p != peer(1)), Some(1000));
            assert_eq!(lane.pop().unwrap().0, peer(2));
        }
        assert_eq!(lane.pick(|_, _| false), None, "everyone held back");
        assert_eq!((lane.len_of(peer(1)), lane.len_of(peer(2))), (10, 5));
    }

    #[test]
    fn a_full_pool_evicts_from_the_fullest_peer_only() {
        let mut lane = BulkLane::new(8, 1500);
        for i in 0..8 {
            assert_eq!(lane.push(peer(1), vec![i; 10]), Push::Queued);
        }
        assert_eq!(lane.push(peer(1), vec![9; 10]), Push::Refused(vec![9; 10]));
        assert_eq!(lane.push(peer(2), vec![0; 10]), Push::Evicted(vec![0; 10]));
        assert_eq!(lane.push(peer(2), vec![1; 10]), Push::Evicted(vec![1; 10]));
        assert_eq!((lane.len(), lane.len_of(peer(1))), (8, 6));
        let mut drained = Vec::new();
        lane.drain_peer(peer(1), |p| drained.push(p[0]));
        assert_eq!(drained, vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(lane.len(), 2);
        for _ in 0..6 {
            assert_eq!(lane.push(peer(3), vec![3; 10]), Push::Queued, "slots freed");
        }
    }

    #[test]
    fn oversized_heads_are_served_after_enough_rounds() {
        let mut lane = BulkLane::new(8, 100);
        let _ = lane.push(peer(1), vec![0; 65_535]);
        let _ = lane.push(peer(2), vec![0; 50]);
        let mut order = Vec::new();
        while lane.pick(|_, _| true).is_some() {
            order.push(lane.pop().unwrap().1.len());
        }
        assert_eq!(order, vec![50, 65_535]);
    }
}
