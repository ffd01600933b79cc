//! Loss repair of the bulk lane, the node's half ([`crate::path::repair`] has the
//! sans-IO parts and the design): numbering our bulk for peers that read the numbers,
//! sending the repairs their NACKs ask for, putting their bulk in order, and the hellos
//! that say we read sequenced bulk.
//!
//! Invariants: a repair is paced by the peer's bulk controller like any bulk packet and
//! overtakes only bulk (never the critical lane); a peer gets sequenced bulk only on the
//! session it said it reads them on; a held packet already passed every inbound check
//! (authentication, anti-spoofing, policy) before it was held.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::inbound::Received;
use super::outbound::Transmit;
use super::peer::Repair;
use super::{BauxiteNode, Control, recycle_into};
use crate::path::repair::{
    Arrival, BULK_HEADER_LEN, NODE_HOLD_MAX, NODE_KEEP_MAX, NackFrame, RepairHello, bulk_header,
    parse_bulk,
};
use crate::path::{BulkReorder, RepairSender};
use crate::wire::DATA_OVERHEAD;
use crate::{Lane, Metrics, PeerId};

/// How often a receiver says, at most, that it reads sequenced bulk, while the peer still
/// sends it unsequenced data on the session.
const HELLO_INTERVAL: Duration = Duration::from_secs(1);
/// Hellos per session: the peer that does not answer them with sequenced bulk is an older
/// node (or sends no bulk); a lossy path loses all of them rarely.
const HELLOS_PER_SESSION: u8 = 5;

/// Packets loss repair keeps (as a sender) and holds (as a receiver) over all peers,
/// for the node-wide bounds. Kept exact by taking each peer's counts before and after
/// every call that can change them.
#[derive(Debug, Default)]
pub(super) struct Totals {
    kept: usize,
    held: usize,
}

impl Totals {
    fn counts(repair: &Repair) -> (usize, usize) {
        (
            repair.sender.as_ref().map_or(0, |s| s.kept()),
            repair.reorder.as_ref().map_or(0, |r| r.held()),
        )
    }

    /// A peer's counts were `before` and are now what `repair` holds.
    fn update(&mut self, before: (usize, usize), repair: &Repair) {
        let (kept, held) = Self::counts(repair);
        self.kept = self.kept - before.0 + kept;
        self.held = self.held - before.1 + held;
    }

    /// A peer went away with its kept and held packets.
    pub(super) fn forget(&mut self, repair: &Repair) {
        let (kept, held) = Self::counts(repair);
        self.kept -= kept;
        self.held -= held;
    }
}

impl BauxiteNode {
    /// Bulk packets kept for repair and held behind holes now, over all peers (at most
    /// [`NODE_KEEP_MAX`] and [`NODE_HOLD_MAX`]).
    pub fn repair_buffers(&self) -> (usize, usize) {
        (self.repair_totals.kept, self.repair_totals.held)
    }

    /// The sequence number for a bulk packet of `len` bytes to `peer`, if the peer reads
    /// sequenced bulk on the session it will be sealed on and the path carries its header.
    pub(super) fn bulk_seq(&mut self, peer: PeerId, len: usize) -> Option<u32> {
        if !self.config.bulk_repair || !self.fits_framed(peer, len) {
            return None;
        }
        let state = self.peers.get_mut(&peer)?;
        let index = state.tunnel.as_ref()?.sending_index()?;
        if state.repair.peer_reads != Some(index) {
            return None;
        }
        let pool = &mut self.pool;
        let before = Totals::counts(&state.repair);
        let seq = state
            .repair
            .sender
            .get_or_insert_with(RepairSender::new)
            .next_seq(index, |buf| recycle_into(pool, buf));
        self.repair_totals.update(before, &state.repair);
        seq
    }

    /// Whether a bulk packet of `len` bytes still fits `peer`'s path with the sequenced
    /// header in front of it.
    fn fits_framed(&self, peer: PeerId, len: usize) -> bool {
        let searched = self.config.max_plaintext() + DATA_OVERHEAD;
        let max = self
            .peers
            .get(&peer)
            .and_then(|s| s.pmtu.max_datagram())
            .unwrap_or(searched);
        len + BULK_HEADER_LEN + DATA_OVERHEAD <= max
    }

    /// Bulk packet `seq` went out to `peer` at `now`: keep it for a repair, unless the
    /// node keeps [`NODE_KEEP_MAX`] packets already.
    pub(super) fn keep_for_repair(
        &mut self,
        now: Instant,
        peer: PeerId,
        seq: u32,
        packet: Vec<u8>,
    ) {
        let room = self.repair_totals.kept < NODE_KEEP_MAX;
        let Some(state) = self.peers.get_mut(&peer) else {
            self.recycle(packet);
            return;
        };
        let before = Totals::counts(&state.repair);
        let (pushed_out, unkept) = match state.repair.sender.as_mut() {
            Some(sender) if room => (sender.keep(seq, packet, now), None),
            Some(sender) => {
                Metrics::inc(&self.metrics.bulk_unkept);
                (sender.forgo(seq), Some(packet))
            }
            None => (None, Some(packet)),
        };
        self.repair_totals.update(before, &state.repair);
        for buf in pushed_out.into_iter().chain(unkept) {
            self.recycle(buf);
        }
    }

    /// Sequence number `seq` was drawn but its packet was not sealed: give it back, so
    /// the peer does not wait for a packet that never left.
    pub(super) fn unnumber(&mut self, peer: PeerId, seq: u32) {
        if let Some(sender) = self
            .peers
            .get_mut(&peer)
            .and_then(|s| s.repair.sender.as_mut())
        {
            sender.unnumber(seq);
        }
    }

    /// Writes the next repair that its peer's bulk controller lets go now into `out`.
    pub(super) fn poll_repairs(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        for _ in 0..self.repair_ready.len() {
            let peer = self.repair_ready.pop_front()?;
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            let sending = state.tunnel.as_ref().and_then(|t| t.sending_index());
            let before = Totals::counts(&state.repair);
            let Some(sender) = state.repair.sender.as_mut() else {
                continue;
            };
            // A repair goes out on the session its number belongs to, or not at all: on
            // a newer session the number names another packet (and the receiver has
            // given the old session's holes up).
            if sender.session() != sending {
                let pool = &mut self.pool;
                sender.clear(&mut |buf| recycle_into(pool, buf));
                self.repair_totals.update(before, &state.repair);
                continue;
            }
            let Some((_, len)) = sender.peek_repair() else {
                continue;
            };
            if !self.congestion.can_send_bulk(peer, now, len) {
                self.repair_ready.push_back(peer);
                continue;
            }
            let Some((seq, packet)) = sender.take_repair() else {
                continue;
            };
            if sender.has_repair() {
                self.repair_ready.push_back(peer);
            }
            self.repair_totals.update(before, &state.repair);
            let sealed = self.seal_framed(now, peer, &bulk_header(seq), &packet, out);
            self.recycle(packet);
            if let Some((len, dst, via)) = sealed {
                self.congestion.peer(peer).on_sent(now, len);
                Metrics::inc(&self.metrics.bulk_repairs_sent);
                return Some(self.lane_sent(now, peer, out, Lane::Bulk, (len, dst, via), len));
            }
        }
        None
    }

    /// The peer asks for bulk packets it missed.
    pub(super) fn on_nack(&mut self, peer: PeerId, nack: NackFrame) {
        let queued = self
            .peers
            .get_mut(&peer)
            .and_then(|s| s.repair.sender.as_mut())
            .map_or(0, |sender| sender.on_nack(nack));
        if queued > 0 && !self.repair_ready.contains(&peer) {
            self.repair_ready.push_back(peer);
        }
    }

    /// The peer reads sequenced bulk on the session it names.
    pub(super) fn on_repair_hello(&mut self, peer: PeerId, hello: RepairHello) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.repair.peer_reads = Some(hello.index);
        }
    }

    /// An unsequenced IP packet came from `peer` on our session `index`: if we repair
    /// bulk and the peer has not sent us sequenced bulk on it, say we read it.
    pub(super) fn offer_repair(&mut self, now: Instant, peer: PeerId, index: u32) {
        if !self.config.bulk_repair {
            return;
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state
            .repair
            .reorder
            .as_ref()
            .is_some_and(|r| r.session() == Some(index))
        {
            return;
        }
        let due = match state.repair.hello {
            Some((sent_for, count, at)) if sent_for == index => (count < HELLOS_PER_SESSION
                && now.saturating_duration_since(at) >= HELLO_INTERVAL)
                .then_some(count + 1),
            _ => Some(1),
        };
        if let Some(count) = due {
            state.repair.hello = Some((index, count, now));
            self.control.push_back(Control::RepairHello { peer, index });
        }
    }

    /// A sequenced bulk packet from `peer` authenticated on our session `index`:
    /// delivered now, held behind a hole (a NACK asks for the hole's repair), or dropped
    /// as a second copy.
    pub(super) fn on_bulk_frame(
        &mut self,
        now: Instant,
        peer: PeerId,
        index: u32,
        datagram: &mut [u8],
        range: Range<usize>,
    ) -> Received {
        let before = self.peers.get(&peer).map(|s| Totals::counts(&s.repair));
        let received = self.order_bulk(now, peer, index, datagram, range);
        if let (Some(before), Some(state)) = (before, self.peers.get(&peer)) {
            self.repair_totals.update(before, &state.repair);
        }
        received
    }

    /// [`on_bulk_frame`](Self::on_bulk_frame), its counts aside.
    fn order_bulk(
        &mut self,
        now: Instant,
        peer: PeerId,
        index: u32,
        datagram: &mut [u8],
        range: Range<usize>,
    ) -> Received {
        let seq = match parse_bulk(&datagram[range.clone()]) {
            Ok(seq) => seq,
            Err(e) => return self.malformed(e),
        };
        let inner = range.start + BULK_HEADER_LEN..range.end;
        let Some(state) = self.peers.get_mut(&peer) else {
            return Received::Consumed;
        };
        let rtt = state.measured.rtt;
        let reorder = state
            .repair
            .reorder
            .get_or_insert_with(|| Box::new(BulkReorder::new()));
        let arrival = reorder.arrive(now, index, seq, &mut self.released);
        let hold = reorder.hold_time(rtt);
        let nack = match arrival {
            Arrival::Duplicate => {
                Metrics::inc(&self.metrics.bulk_seq_duplicates);
                return Received::Consumed;
            }
            Arrival::Deliver => return self.admit(peer, datagram, inner),
            Arrival::Hold { nack } => nack,
        };
        if let Some(frame) = nack {
            // Ahead of everything else: the repair is a round trip away.
            self.control.push_front(Control::Nack { peer, frame });
        }
        let Received::Deliver(admitted) = self.admit(peer, datagram, inner) else {
            return Received::Consumed;
        };
        let mut buf = self.take_buffer();
        buf.extend_from_slice(&datagram[admitted]);
        if let Some(reorder) = self
            .peers
            .get_mut(&peer)
            .and_then(|s| s.repair.reorder.as_mut())
        {
            reorder.hold(seq, buf, now, hold);
            Metrics::inc(&self.metrics.bulk_held);
            if self.repair_totals.held >= NODE_HOLD_MAX {
                // The node holds all it may: this peer's holes are given up, and what
                // waited behind them goes out in order.
                reorder.release_all(&mut self.released);
                Metrics::inc(&self.metrics.bulk_hold_overflows);
            }
        }
        Received::Consumed
    }

    /// When the first hole any peer's bulk waits behind is given up, or the first kept
    /// packet expires.
    pub(super) fn repair_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|s| {
                let holes = s.repair.reorder.as_ref().and_then(|r| r.poll_timeout());
                let kept = s.repair.sender.as_ref().and_then(|r| r.expires_at());
                holes.into_iter().chain(kept)
            })
            .min()
    }

    /// Gives up the holes whose wait ran out, releasing the bulk behind them, names the
    /// gaps that waited out the reordering window, and gives the kept packets that
    /// expired back to the pool.
    pub(super) fn repair_timeouts(&mut self, now: Instant) {
        let pool = &mut self.pool;
        for (&peer, state) in self.peers.iter_mut() {
            let before = Totals::counts(&state.repair);
            if let Some(reorder) = state.repair.reorder.as_mut()
                && reorder.poll_timeout().is_some_and(|at| at <= now)
            {
                let given_up = reorder.handle_timeout(now, &mut self.released);
                Metrics::add(&self.metrics.bulk_given_up, u64::from(given_up));
                while let Some(frame) = reorder.poll_nack(now) {
                    self.control.push_front(Control::Nack { peer, frame });
                }
            }
            if let Some(sender) = state.repair.sender.as_mut()
                && sender.expires_at().is_some_and(|at| at <= now)
            {
                sender.expire(now, |buf| recycle_into(pool, buf));
            }
            self.repair_totals.update(before, &state.repair);
        }
    }

    /// Writes the next bulk packet released in order (from behind a repaired or given-up
    /// hole) into `out`; the shell writes it to the TUN device like a delivered packet.
    pub fn poll_released(&mut self, out: &mut [u8]) -> Option<usize> {
        let packet = self.released.pop_front()?;
        let len = packet.len().min(out.len());
        out[..len].copy_from_slice(&packet[..len]);
        self.recycle(packet);
        Some(len)
    }
}
