//! Outbound: IP packets from TUN into the lanes, and lanes out to the wire.
//!
//! Invariant: a packet from TUN is either queued, or dropped and counted in
//! `tx_dropped` (plus the specific counter: `policy_denied`, a lane's `lane_dropped`) — never
//! silently lost. Buffers cycle through the node's pool, so steady-state forwarding
//! allocates nothing.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::hub::{HUB_ENDPOINT, Via};
use super::mtu::Fit;
use super::{BauxiteNode, Control, peer, tunnel_mut};
use crate::ip::IpView;
use crate::path::feedback::is_control_frame;
use crate::path::frame::probe_ack;
use crate::path::repair::bulk_header;
use crate::path::{Path, RepairHello, SendLog};
use crate::policy::{Flow, Verdict};
use crate::scheduler::Enqueue;
use crate::session::Tunnel;
use crate::wire::{DATA_HEADER_LEN, INIT_LEN, RESP_LEN};
use crate::{Lane, Metrics, PeerId};

/// A datagram `poll_transmit` wrote into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it ([`HUB_ENDPOINT`] when it goes through the hub).
    pub dst: SocketAddr,
    /// On UDP, or through the hub's data channel to a peer.
    pub via: Via,
    /// Its length at the start of the buffer.
    pub len: usize,
    /// The lane of the packet inside, or `None` for handshakes and keepalives.
    pub lane: Option<Lane>,
    /// A path MTU probe: larger than what the path is known to carry, so it may be lost
    /// (or refused by the local interface). Send it on its own, not in a batch with data.
    pub probe: bool,
}

/// What became of a packet read from TUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunVerdict {
    /// Queued in this lane.
    Queued(Lane),
    /// Dropped: not IPv4/IPv6 or larger than the MTU.
    Malformed,
    /// Dropped: no peer owns the destination address.
    NoRoute,
    /// Dropped by policy.
    Denied,
    /// Dropped: the lane was full.
    LaneFull(Lane),
}

impl BauxiteNode {
    /// Classifies, filters and queues one IP packet read from the TUN device.
    pub fn handle_tun_packet(&mut self, _now: Instant, packet: &[u8]) -> TunVerdict {
        self.route_packet(packet, None)
    }

    /// Queues a packet in a chosen lane (OTA chunks go to [`Lane::Bulk`]).
    pub fn handle_tun_packet_in(&mut self, _now: Instant, lane: Lane, packet: &[u8]) -> TunVerdict {
        self.route_packet(packet, Some(lane))
    }

    fn route_packet(&mut self, packet: &[u8], lane: Option<Lane>) -> TunVerdict {
        let peer = match self.check_outbound(packet) {
            Ok(peer) => peer,
            Err(verdict) => {
                Metrics::inc(&self.metrics.tx_dropped);
                return verdict;
            }
        };
        let mut buf = self.take_buffer();
        buf.extend_from_slice(packet);
        // Bulk joins its peer's own queue in the bulk lane (round robin across peers).
        let outcome = match lane {
            Some(lane) => self.scheduler.enqueue_for(peer, lane, buf),
            None => self.scheduler.enqueue_to(peer, buf),
        };
        let lane = outcome.lane();
        Metrics::inc_lane(&self.metrics.lane_enqueued, lane);
        let verdict = match &outcome {
            Enqueue::Dropped { .. } => TunVerdict::LaneFull(lane),
            _ => TunVerdict::Queued(lane),
        };
        if !matches!(outcome, Enqueue::Queued(_)) {
            Metrics::inc_lane(&self.metrics.lane_dropped, lane);
            Metrics::inc(&self.metrics.tx_dropped);
        }
        if let Some(spare) = outcome.into_spare() {
            self.recycle(spare);
        }
        verdict
    }

    /// Checks a packet can be routed: the peer it goes to, or why it is dropped.
    fn check_outbound(&self, packet: &[u8]) -> Result<PeerId, TunVerdict> {
        if packet.len() > self.config.mtu {
            return Err(TunVerdict::Malformed);
        }
        let Ok(view) = IpView::parse(packet) else {
            return Err(TunVerdict::Malformed);
        };
        let Some(peer) = view.dst_v4().and_then(|ip| self.registry.by_ip(ip)) else {
            return Err(TunVerdict::NoRoute);
        };
        if self
            .policy
            .check_counted(Flow::Outbound, peer.id, &view, &self.metrics)
            == Verdict::Deny
        {
            return Err(TunVerdict::Denied);
        }
        Ok(peer.id)
    }

    /// Writes the next datagram to send into `out` (at least
    /// [`NodeConfig::datagram_capacity`](super::NodeConfig::datagram_capacity) bytes).
    /// Returns `None` without sending if `out` is smaller than that.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if out.len() < self.config.datagram_capacity() {
            return None;
        }
        loop {
            // A copy goes right after its original, before anything else queues up.
            if let Some(t) = self.poll_copies(now, out) {
                return Some(t);
            }
            if let Some(t) = self.poll_control(now, out) {
                return Some(t);
            }
            if let Some(t) = self.poll_staged(now, out) {
                return Some(t);
            }
            if let Some(t) = self.poll_fragments(now, out) {
                return Some(t);
            }
            // Repairs of lost bulk go before new bulk (and telemetry: they are few, and
            // late ones are given up), never before the critical lane.
            if self.scheduler.len(Lane::Critical) == 0
                && let Some(t) = self.poll_repairs(now, out)
            {
                return Some(t);
            }
            // Each peer's bulk is paced by its own controller; the scheduler's round robin
            // skips a peer held back and serves the next.
            let congestion = &self.congestion;
            let (lane, buf) = self
                .scheduler
                .dequeue_paced(|peer, bytes| congestion.can_send_bulk(peer, now, bytes))?;
            let Some(peer) = IpView::parse(&buf)
                .ok()
                .and_then(|v| v.dst_v4())
                .and_then(|ip| self.registry.by_ip(ip))
                .map(|p| p.id)
            else {
                // The peer left between enqueue and dequeue.
                Metrics::inc(&self.metrics.tx_dropped);
                self.recycle(buf);
                continue;
            };
            let mut buf = buf;
            match self.fit(now, peer, lane, &mut buf) {
                Fit::Send => {}
                Fit::Consumed => {
                    self.recycle(buf);
                    continue;
                }
                Fit::Hold => {
                    self.stage(now, peer, lane, buf);
                    continue;
                }
            }
            let by_rule = self.rule_duplicates(peer, lane, &buf);
            // Bulk to a peer that repairs goes numbered, and is kept for its repair.
            let seq = (lane == Lane::Bulk)
                .then(|| self.bulk_seq(peer, buf.len()))
                .flatten();
            let sealed = match seq {
                Some(seq) => {
                    let path = peer::select(&self.peers, peer, self.hub_enabled());
                    self.seal_packet_on(now, peer, path, (&bulk_header(seq), &buf), out)
                }
                None => self.seal_packet(now, peer, &buf, out),
            };
            if let (Some(seq), false) = (seq, matches!(sealed, Sealed::Sent(..))) {
                self.unnumber(peer, seq);
            }
            match sealed {
                Sealed::Sent(len, dst, via) => {
                    let bulk = if lane == Lane::Bulk { len } else { 0 };
                    if bulk > 0 {
                        self.congestion.peer(peer).on_sent(now, bulk);
                    }
                    match seq {
                        Some(seq) => self.keep_for_repair(now, peer, seq, buf),
                        None => self.recycle(buf),
                    }
                    self.plan_copy(now, peer, lane, by_rule, &out[..len], (dst, via));
                    return Some(self.lane_sent(now, peer, out, lane, (len, dst, via), bulk));
                }
                // Staging may queue a handshake: the next turn sends it.
                Sealed::NoSession => self.stage(now, peer, lane, buf),
                Sealed::Dropped => self.recycle(buf),
            }
        }
    }

    /// Sends packets that waited for a session that is now established.
    fn poll_staged(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        while let Some(peer) = self.ready.front().copied() {
            let Some((lane, mut buf)) =
                tunnel_mut(&mut self.peers, peer).and_then(Tunnel::take_staged)
            else {
                self.ready.pop_front();
                continue;
            };
            // A session exists (the peer is ready), so its path's size is known.
            self.ensure_pmtu(now, peer);
            match self.fit(now, peer, lane, &mut buf) {
                Fit::Send => {}
                Fit::Consumed => {
                    self.recycle(buf);
                    continue;
                }
                Fit::Hold => {
                    if let Some(t) = tunnel_mut(&mut self.peers, peer) {
                        t.unstage_front(lane, buf);
                    }
                    self.ready.pop_front();
                    continue;
                }
            }
            match self.seal_packet(now, peer, &buf, out) {
                Sealed::Sent(len, dst, via) => {
                    self.recycle(buf);
                    // Staged packets bypassed the bulk window, so they settle no bulk bytes.
                    return Some(self.lane_sent(now, peer, out, lane, (len, dst, via), 0));
                }
                Sealed::NoSession => {
                    if let Some(t) = tunnel_mut(&mut self.peers, peer) {
                        t.unstage_front(lane, buf);
                    }
                    self.ready.pop_front();
                }
                Sealed::Dropped => self.recycle(buf),
            }
        }
        None
    }

    /// Sends the fragments of a packet too large for its peer's path (already checked
    /// against it; fragments do not shrink again).
    fn poll_fragments(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        while let Some((peer, lane, buf)) = self.fragments.pop_front() {
            match self.seal_packet(now, peer, &buf, out) {
                Sealed::Sent(len, dst, via) => {
                    self.recycle(buf);
                    return Some(self.lane_sent(now, peer, out, lane, (len, dst, via), 0));
                }
                Sealed::NoSession => self.stage(now, peer, lane, buf),
                Sealed::Dropped => self.recycle(buf),
            }
        }
        None
    }

    fn poll_control(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        while let Some(control) = self.control.pop_front() {
            let (peer, len) = match control {
                Control::Init { peer, msg } => (peer, copy_into(out, &msg)),
                Control::Resp { peer, msg } => (peer, copy_into(out, &msg)),
                Control::Keepalive { peer } => {
                    match self.seal_control(now, peer, &[], out, |m| &m.keepalives_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::Ack { peer } => {
                    let Some(ack) = self
                        .peers
                        .get_mut(&peer)
                        .and_then(|s| s.feedback.acks.take())
                    else {
                        continue;
                    };
                    let (frame, len) = ack.encode();
                    let frame = frame.get(..len).unwrap_or_default();
                    match self.seal_control(now, peer, frame, out, |m| &m.acks_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::Probe { peer } => match self.seal_probe(now, peer, out) {
                    Some(t) => return Some(t),
                    None => continue,
                },
                Control::DirectProbe { peer } => {
                    let Some(direct) = self.peers.get(&peer).and_then(|s| s.path.direct()) else {
                        continue;
                    };
                    let path = Path::Direct(direct.addr);
                    match self.seal_keepalive_on(now, peer, path, out, |m| &m.keepalives_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::TurnProbe { peer } => {
                    let Some(state) = self.peers.get(&peer).map(|s| s.path.get()) else {
                        continue;
                    };
                    let Some(path) = state.turn.map(Path::Turn).or(state.relay.map(Path::Relay))
                    else {
                        continue;
                    };
                    match self.seal_keepalive_on(now, peer, path, out, |m| &m.keepalives_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::BondProbe { peer, addr } => {
                    let path = Path::Direct(addr);
                    match self.seal_keepalive_on(now, peer, path, out, |m| &m.bond_probes_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::RateDrop { peer, frame } => {
                    let frame = frame.encode();
                    match self.seal_control(now, peer, &frame, out, |m| &m.acks_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::Nack { peer, frame } => {
                    let frame = frame.encode();
                    match self.seal_control(now, peer, &frame, out, |m| &m.bulk_nacks_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::RepairHello { peer, index } => {
                    let frame = RepairHello { index }.encode();
                    match self.seal_control(now, peer, &frame, out, |m| &m.acks_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
                Control::ProbeAck { peer, id } => {
                    let ack = probe_ack(id);
                    match self.seal_control(now, peer, &ack, out, |m| &m.acks_sent) {
                        Some(t) => return Some(t),
                        None => continue,
                    }
                }
            };
            let path = peer::select(&self.peers, peer, self.hub_enabled());
            let Some((dst, via)) = target(path, peer) else {
                Metrics::inc(&self.metrics.tx_dropped);
                continue;
            };
            if !matches!(via, Via::Hub(_)) {
                // Handshake messages are answered (a response, a confirming packet).
                self.sent_expecting_answer(now, peer);
            }
            return Some(Transmit {
                dst,
                via,
                len,
                lane: None,
                probe: false,
            });
        }
        None
    }

    /// Seals a keepalive (empty) or control frame for `peer` and counts it in `counter`;
    /// `None` if there is no session or path to send it on.
    pub(super) fn seal_control(
        &mut self,
        now: Instant,
        peer: PeerId,
        payload: &[u8],
        out: &mut [u8],
        counter: fn(&Metrics) -> &AtomicU64,
    ) -> Option<Transmit> {
        let sealed = self.seal_packet(now, peer, payload, out);
        self.control_transmit(sealed, counter)
    }

    /// An empty packet (a keepalive) to `peer` on `path` rather than its selected one: a
    /// probe of a direct or bonded path, counted in `counter`.
    fn seal_keepalive_on(
        &mut self,
        now: Instant,
        peer: PeerId,
        path: Path,
        out: &mut [u8],
        counter: fn(&Metrics) -> &AtomicU64,
    ) -> Option<Transmit> {
        let sealed = self.seal_packet_on(now, peer, path, (&[], &[]), out);
        self.control_transmit(sealed, counter)
    }

    /// The transmit of a sealed control packet (no lane, not a PMTU probe), counted.
    fn control_transmit(
        &self,
        sealed: Sealed,
        counter: fn(&Metrics) -> &AtomicU64,
    ) -> Option<Transmit> {
        match sealed {
            Sealed::Sent(len, dst, via) => {
                Metrics::inc(counter(&self.metrics));
                Some(Transmit {
                    dst,
                    via,
                    len,
                    lane: None,
                    probe: false,
                })
            }
            Sealed::NoSession | Sealed::Dropped => None,
        }
    }

    /// Seals `packet` for `peer` into `out`, for the peer's selected path.
    fn seal_packet(&mut self, now: Instant, peer: PeerId, packet: &[u8], out: &mut [u8]) -> Sealed {
        let path = peer::select(&self.peers, peer, self.hub_enabled());
        self.seal_packet_on(now, peer, path, (&[], packet), out)
    }

    /// Seals a sequenced bulk packet (`header`, then the IP packet) for `peer` into
    /// `out`, for the peer's selected path: its length, destination and way if it went.
    pub(super) fn seal_framed(
        &mut self,
        now: Instant,
        peer: PeerId,
        header: &[u8],
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr, Via)> {
        let path = peer::select(&self.peers, peer, self.hub_enabled());
        match self.seal_packet_on(now, peer, path, (header, packet), out) {
            Sealed::Sent(len, dst, via) => Some((len, dst, via)),
            Sealed::NoSession | Sealed::Dropped => None,
        }
    }

    /// Seals `header` then `packet` (the header empty but for sequenced bulk) for `peer`
    /// into `out`, for `path`.
    fn seal_packet_on(
        &mut self,
        now: Instant,
        peer: PeerId,
        path: Path,
        (header, packet): (&[u8], &[u8]),
        out: &mut [u8],
    ) -> Sealed {
        let Some(tunnel) = tunnel_mut(&mut self.peers, peer)
            .filter(|t| t.is_established(now, &self.config.timers))
        else {
            // Staged until a session exists, whether or not there is a path yet: a peer
            // without an endpoint may dial us.
            return Sealed::NoSession;
        };
        let Some((dst, via)) = target(path, peer) else {
            Metrics::inc(&self.metrics.tx_dropped);
            return Sealed::Dropped;
        };
        let plaintext = header.len() + packet.len();
        let Some(body) = out.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + plaintext) else {
            Metrics::inc(&self.metrics.tx_dropped);
            return Sealed::Dropped;
        };
        let (front, back) = body.split_at_mut(header.len());
        front.copy_from_slice(header);
        back.copy_from_slice(packet);
        match tunnel.seal(out, plaintext, now, &self.config.timers) {
            None => Sealed::NoSession,
            Some(Ok(len)) => {
                let data = !header.is_empty() || (!packet.is_empty() && !is_control_frame(packet));
                if data {
                    Metrics::inc(&self.metrics.tx_packets);
                    Metrics::add(&self.metrics.tx_bytes, packet.len() as u64);
                }
                let rekey = tunnel.wants_handshake(now, &self.config.timers);
                if rekey {
                    self.start_handshake(now, peer);
                }
                if data && !matches!(via, Via::Hub(_)) {
                    // Every data packet is acknowledged: we expect to hear back.
                    self.sent_expecting_answer(now, peer);
                }
                Sealed::Sent(len, dst, via)
            }
            Some(Err(_)) => {
                Metrics::inc(&self.metrics.tx_dropped);
                Sealed::Dropped
            }
        }
    }

    /// Remembers a sealed data packet (its header is at the start of `out`) so the peer's
    /// acknowledgement of it yields a delay sample and settles `bulk` bytes; `len` is its
    /// length, which path MTU black-hole detection watches.
    /// Books a sealed packet of `lane` (its lane counter and the send log, settling `bulk`
    /// bytes of the bulk window) and says where it goes.
    pub(super) fn lane_sent(
        &mut self,
        now: Instant,
        peer: PeerId,
        out: &[u8],
        lane: Lane,
        (len, dst, via): (usize, SocketAddr, Via),
        bulk: usize,
    ) -> Transmit {
        Metrics::inc_lane(&self.metrics.lane_sent, lane);
        self.log_sent(now, peer, out, len, bulk);
        Transmit {
            dst,
            via,
            len,
            lane: Some(lane),
            probe: false,
        }
    }

    fn log_sent(&mut self, now: Instant, peer: PeerId, out: &[u8], len: usize, bulk: usize) {
        let index = crate::wire::u32_le(&out[1..5]);
        let counter = crate::wire::u64_le(&out[5..DATA_HEADER_LEN]);
        if let Some(state) = self.peers.get_mut(&peer) {
            // The peer acknowledges every data packet: from here we expect to hear back.
            state.measured.awaiting_since.get_or_insert(now);
            state.pmtu.on_sent(now, len);
            state
                .feedback
                .sent
                .get_or_insert_with(SendLog::new)
                .record(index, counter, now, bulk, len);
        }
    }

    /// Holds a packet of `lane` until `peer`'s session exists, starting a handshake if
    /// needed.
    fn stage(&mut self, now: Instant, peer: PeerId, lane: Lane, buf: Vec<u8>) {
        let Some(remote_static) = self.registry.by_id(peer).map(|p| p.static_public) else {
            Metrics::inc(&self.metrics.tx_dropped);
            self.recycle(buf);
            return;
        };
        let leader = self.leads(&remote_static);
        let Some(state) = self.peers.get_mut(&peer) else {
            Metrics::inc(&self.metrics.tx_dropped);
            self.recycle(buf);
            return;
        };
        let tunnel = state
            .tunnel
            .get_or_insert_with(|| Tunnel::new(peer, remote_static, leader));
        let evicted = tunnel.stage(lane, buf);
        let wants = tunnel.wants_handshake(now, &self.config.timers);
        if let Some(old) = evicted {
            Metrics::inc(&self.metrics.tx_dropped);
            self.recycle(old);
        }
        if wants {
            self.start_handshake(now, peer);
        }
    }
}

enum Sealed {
    Sent(usize, SocketAddr, Via),
    NoSession,
    Dropped,
}

/// Where a datagram for `peer` on `path` goes; `None` for [`Path::Drop`].
fn target(path: Path, peer: PeerId) -> Option<(SocketAddr, Via)> {
    match path {
        Path::Direct(dst) | Path::Relay(dst) => Some((dst, Via::Udp)),
        Path::Turn(dst) => Some((dst, Via::Turn)),
        Path::Hub => Some((HUB_ENDPOINT, Via::Hub(peer))),
        Path::Drop => None,
    }
}

/// `out` was checked to hold `datagram_capacity`, which covers both handshake messages.
fn copy_into<const N: usize>(out: &mut [u8], msg: &[u8; N]) -> usize {
    const { assert!(N == INIT_LEN || N == RESP_LEN) };
    out[..N].copy_from_slice(msg);
    N
}
