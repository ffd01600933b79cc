//! Redundancy: copies of sealed packets on a peer's second path (bonding), or repeated on
//! the same path a short gap later (a policy rule's `redundancy = "duplicate"`), and the
//! probes that keep a second path alive.
//!
//! Invariants: a copy is the very datagram already sent — same session, same counter —
//! so the receiver's anti-replay window accepts whichever copy arrives first and drops
//! the other ([`PeerMisbehaved::Duplicate`](crate::PeerMisbehaved::Duplicate), counted
//! in `rx_duplicates`); the receiver needs no change and a copy can never be delivered
//! twice. Copies are not booked as sends (no lane counter, no send-log entry, no bulk
//! bytes), so acknowledgements and congestion control see each packet once. At most
//! [`MAX_PENDING_COPIES`] wait; beyond that a copy is skipped, never the original.
//!
//! Why duplication rather than forward error correction: a copy needs no new frame and
//! no receiver state, adds no delay when the original arrives, and on a second path its
//! loss is independent of the original's. An XOR parity over k packets costs 1/k of the
//! bytes but recovers only one loss per group, arrives after the group (k packets at
//! 1 kHz is k ms of delay) and needs interleaving against bursts — so for a small, rare
//! control stream the doubled bytes are the better trade.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::hub::Via;
use super::{BauxiteNode, Control, Transmit};
use crate::ip::IpView;
use crate::policy::Redundancy;
use crate::{Lane, Metrics, PeerId};

/// How long after the original a repeat on the same path goes out. Gilbert–Elliott-like
/// loss on radio links comes in bursts of a few packets (a few ms at 1 kHz); a copy 5 ms
/// later usually misses the burst that took the original, and is still in time for a
/// control loop that tolerates a late sample better than a missing one.
pub const REPEAT_GAP: Duration = Duration::from_millis(5);

/// Most copies waiting at once (beyond that a copy is skipped): 5 ms of repeats of a
/// 1 kHz loop to 100 peers, and bounded memory whatever the traffic.
pub const MAX_PENDING_COPIES: usize = 512;

/// A sealed datagram to send again.
#[derive(Debug)]
struct PendingCopy {
    due: Instant,
    dst: SocketAddr,
    via: Via,
    lane: Lane,
    bytes: Vec<u8>,
}

/// Copies waiting: those due at once (second path) and repeats due later, each FIFO in
/// due order.
#[derive(Debug, Default)]
pub(super) struct Copies {
    ready: VecDeque<PendingCopy>,
    later: VecDeque<PendingCopy>,
}

impl Copies {
    fn len(&self) -> usize {
        self.ready.len() + self.later.len()
    }

    /// When the next repeat falls due (copies for a second path are sent by the next
    /// `poll_transmit`, they need no timer).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.later.front().map(|c| c.due)
    }

    /// Moves the repeats due at `now` to the ready queue.
    pub(super) fn promote(&mut self, now: Instant) {
        while self.later.front().is_some_and(|c| c.due <= now) {
            if let Some(copy) = self.later.pop_front() {
                self.ready.push_back(copy);
            }
        }
    }
}

impl BauxiteNode {
    /// Whether a packet of `lane` to `peer` is to be sent twice by a policy rule.
    pub(super) fn rule_duplicates(&self, peer: PeerId, lane: Lane, packet: &[u8]) -> bool {
        lane == Lane::Critical
            && self.policy.has_redundancy()
            && IpView::parse(packet)
                .is_ok_and(|view| self.policy.redundancy(peer, &view) == Redundancy::Duplicate)
    }

    /// A packet of `lane` for `peer` was sealed into `sealed` and goes to `dst` over
    /// `via`: queues its copy if bonding or a rule (`by_rule`) asks for one — on the
    /// peer's second live path when there is one, else (a rule only) on the same path
    /// [`REPEAT_GAP`] later. The hub's TCP channel does not lose packets: no repeat there.
    pub(super) fn plan_copy(
        &mut self,
        now: Instant,
        peer: PeerId,
        lane: Lane,
        by_rule: bool,
        sealed: &[u8],
        (dst, via): (SocketAddr, Via),
    ) {
        let bonded = self.config.bonding.copies(lane);
        if !(bonded || by_rule) || self.copies.len() >= MAX_PENDING_COPIES {
            return;
        }
        let secondary = match via {
            Via::Udp => self
                .peers
                .get(&peer)
                .and_then(|s| s.bond.secondary(Some(dst), now)),
            Via::Turn | Via::Hub(_) => None,
        };
        let (due, dst, via) = match secondary {
            Some(second) => (now, second, Via::Udp),
            None if by_rule && !matches!(via, Via::Hub(_)) => (now + REPEAT_GAP, dst, via),
            None => return,
        };
        let mut bytes = self.take_buffer();
        bytes.extend_from_slice(sealed);
        let copy = PendingCopy {
            due,
            dst,
            via,
            lane,
            bytes,
        };
        if due <= now {
            self.copies.ready.push_back(copy);
        } else {
            self.copies.later.push_back(copy);
        }
    }

    /// Writes the next copy that is due into `out`.
    pub(super) fn poll_copies(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        self.copies.promote(now);
        while let Some(copy) = self.copies.ready.pop_front() {
            let len = copy.bytes.len();
            let Some(slot) = out.get_mut(..len) else {
                // Sealed into a buffer of the same capacity: cannot happen; skip it.
                self.recycle(copy.bytes);
                continue;
            };
            slot.copy_from_slice(&copy.bytes);
            self.recycle(copy.bytes);
            Metrics::inc(&self.metrics.tx_redundant);
            Metrics::add(&self.metrics.tx_redundant_bytes, len as u64);
            return Some(Transmit {
                dst: copy.dst,
                via: copy.via,
                len,
                lane: Some(copy.lane),
                probe: false,
            });
        }
        None
    }

    /// Due probe rounds: with bonding on, a keepalive to each of a peer's direct
    /// addresses every [`BOND_PROBE_INTERVAL`](crate::path::BOND_PROBE_INTERVAL), so each
    /// path is heard from (and stays alive) in both directions while the session lasts.
    /// Also readies the repeats that fell due.
    pub(super) fn bond_timeouts(&mut self, now: Instant) {
        self.copies.promote(now);
        let timers = self.config.timers;
        let mut probes = Vec::new();
        for (&peer, state) in &mut self.peers {
            if state.bond.next_probe().is_none_or(|at| at > now) {
                continue;
            }
            state.bond.probed(now);
            let established = state
                .tunnel
                .as_ref()
                .is_some_and(|t| t.is_established(now, &timers));
            // On a relay the hub module probes the direct candidates itself.
            if !established || state.path.on_hub() || state.path.on_turn() {
                continue;
            }
            for addr in state.bond.probe_targets(state.path.candidates()) {
                probes.push(Control::BondProbe { peer, addr });
            }
        }
        self.control.extend(probes);
    }
}
