//! Inbound: UDP datagrams to handshakes, keepalives and IP packets for TUN.
//!
//! Invariant: nothing reaches TUN unless it authenticated under a live session, passed
//! the replay window, carries the sending peer's own virtual IP as its source, and is
//! allowed by policy. Everything refused is counted by reason and never panics, whatever
//! the bytes.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use super::{BauxiteNode, Control, Event, tunnel_mut};
use crate::ip::IpView;
use crate::path::feedback::is_control_frame;
use crate::path::frame::ControlFrame;
use crate::path::repair::FRAME_BULK;
use crate::path::{Feedback, RateDropFrame};
use crate::policy::{Flow, Verdict};
use crate::session::Tunnel;
use crate::session::noise;
use crate::wire::{self, DataHeader, Demux, INIT_LEN, Message, RESP_LEN};
use crate::{MalformedPacket, Metrics, PeerId, PeerMisbehaved};

/// A rate-drop report is believed when its packets took longer than `1 / this` of their
/// send time to arrive (the link, not jitter, stretched them).
const RATE_DROP_CONFIRM: f64 = 0.8;

/// What the caller should do with a datagram it handed to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Write `datagram[range]` (a decrypted IP packet) to the TUN device.
    Deliver(Range<usize>),
    /// A STUN message: hand it to the ICE agent.
    Stun,
    /// Handled inside the node (handshake, keepalive); nothing to do.
    Consumed,
    /// Refused and counted.
    Dropped(DropReason),
}

/// Why an inbound datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a well-formed mesh packet.
    Malformed(MalformedPacket),
    /// Failed authentication, replay or handshake checks.
    Misbehaved(PeerMisbehaved),
    /// Decrypted, but its source address is not the sender's virtual IP.
    Spoofed,
    /// Decrypted, but policy denies it.
    Denied,
}

impl BauxiteNode {
    /// Processes one UDP datagram received from `from`; decrypts data in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Received {
        match wire::demux(datagram) {
            Demux::Stun => return Received::Stun,
            Demux::Other => {
                let first = datagram.first().copied().unwrap_or(0);
                return self.malformed(MalformedPacket::NotMesh(first));
            }
            Demux::Mesh => {}
        }
        let message = match wire::parse(datagram) {
            Ok(message) => message,
            Err(e) => return self.malformed(e),
        };
        let result = match message {
            Message::Init(msg) => {
                let msg = *msg;
                self.on_init(now, from, &msg).map(|()| Received::Consumed)
            }
            Message::Resp(msg) => {
                let msg = *msg;
                self.on_resp(now, from, &msg).map(|()| Received::Consumed)
            }
            Message::Data(header) => return self.on_data(now, from, header, datagram),
        };
        result.unwrap_or_else(|e| {
            Metrics::inc(&self.metrics.handshakes_rejected);
            Metrics::inc(&self.metrics.rx_dropped);
            tracing::debug!(%from, error = %e, "handshake refused");
            Received::Dropped(DropReason::Misbehaved(e))
        })
    }

    /// Like [`handle_datagram`](Self::handle_datagram), for a datagram the kernel stamped
    /// when it arrived (`arrived`, no later than `now`). The receive times this node's acks
    /// report come from the stamp, not from `now`: the peer's bulk controller reads queue
    /// from them, and the time a datagram waited in the socket behind the rest of its
    /// batch, or for this node to be scheduled, is not queue on the path.
    pub fn handle_stamped_datagram(
        &mut self,
        now: Instant,
        arrived: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Received {
        self.arrived_at = Some(arrived.min(now));
        let received = self.handle_datagram(now, from, datagram);
        self.arrived_at = None;
        received
    }

    /// Processes one datagram that came through this node's own TURN allocation from
    /// `from` (the peer's address as the TURN server saw it). Like
    /// [`handle_datagram`](Self::handle_datagram), except that an authenticated peer is
    /// answered through the allocation ([`Via::Turn`](super::Via::Turn)) instead of having
    /// `from` learned as its direct endpoint.
    pub fn handle_turn_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Received {
        self.arrival_turn = true;
        let received = self.handle_datagram(now, from, datagram);
        self.arrival_turn = false;
        received
    }

    pub(super) fn malformed(&self, e: MalformedPacket) -> Received {
        Metrics::inc(&self.metrics.rx_malformed);
        Metrics::inc(&self.metrics.rx_dropped);
        Received::Dropped(DropReason::Malformed(e))
    }

    fn on_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &[u8; INIT_LEN],
    ) -> Result<(), PeerMisbehaved> {
        let received = noise::receive_init(&self.identity, self.config.suite, msg)?;
        let peer = self
            .registry
            .by_static_public(&received.initiator_static)
            .ok_or(PeerMisbehaved::UnknownStaticKey)?;
        let (id, remote_static) = (peer.id, peer.static_public);
        let leader = self.leads(&remote_static);
        let tunnel = self
            .peers
            .get_mut(&id)
            .ok_or(PeerMisbehaved::UnknownStaticKey)?
            .tunnel
            .get_or_insert_with(|| Tunnel::new(id, remote_static, leader));
        // From here the initiation is authentic and fresh (a replay stops here), so its
        // source address is where the peer is.
        tunnel.accept_timestamp(received.timestamp)?;
        if leader && tunnel.handshake_pending() {
            // Both sides initiated: the lower static key wins (`leads`),
            // so only one session forms and both ends send on the same one. Ours completes
            // it — if the peer has it: it may have refused it (it did not know our key
            // yet), or it was lost or went to an address the peer has left. This
            // initiation is authentic and fresh, so the peer knows us now and is at
            // `from`: send ours again, the same bytes, rather than wait for our retry
            // timer. If the peer already answered it, it refuses the copy as stale. One
            // initiation in, at most one of the same size out, to a peer that proved its
            // key; the follower answers and never resends, so nothing loops.
            let resend = tunnel.resend_initiation(now);
            self.learn_endpoint(now, id, from);
            if let Some(msg) = resend {
                tracing::debug!(peer = %id, "simultaneous initiation; ours wins, sent again");
                self.control.push_back(Control::Init { peer: id, msg });
            }
            return Ok(());
        }
        let ephemeral = self.random_bytes();
        let index = self.allocate_index(id);
        let Some(tunnel) = tunnel_mut(&mut self.peers, id) else {
            self.indices.remove(&index);
            return Ok(());
        };
        let mut resp = [0u8; RESP_LEN];
        let answered = tunnel.on_init(
            self.config.suite,
            received,
            ephemeral,
            index,
            now,
            &mut resp,
        );
        if let Err(e) = answered {
            self.indices.remove(&index);
            return Err(e);
        }
        self.forget_retired(id);
        self.learn_endpoint(now, id, from);
        self.control.push_back(Control::Resp {
            peer: id,
            msg: resp,
        });
        Ok(())
    }

    fn on_resp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &[u8; RESP_LEN],
    ) -> Result<(), PeerMisbehaved> {
        let index = wire::u32_le(&msg[wire::resp::RECEIVER]);
        let peer = *self
            .indices
            .get(&index)
            .ok_or(PeerMisbehaved::UnexpectedResponse(index))?;
        let timers = self.config.timers;
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(PeerMisbehaved::UnexpectedResponse(index))?;
        let tunnel = state
            .tunnel
            .as_mut()
            .filter(|t| t.pending_index() == Some(index))
            .ok_or(PeerMisbehaved::UnexpectedResponse(index))?;
        let was_usable = tunnel.is_established(now, &timers);
        let times = tunnel.pending_times();
        tunnel.on_resp(&self.identity, self.config.suite, msg, now)?;
        let (staged, keepalive) = (tunnel.has_staged(), tunnel.keepalive_due());
        if let Some((sent_at, first_attempt)) = times {
            state
                .measured
                .sample_rtt(now.saturating_duration_since(sent_at));
            state.measured.connect_time = Some(now.saturating_duration_since(first_attempt));
        }
        if !was_usable {
            state.measured.connected_since = Some(now);
        }
        self.forget_retired(peer);
        self.learn_endpoint(now, peer, from);
        self.ensure_pmtu(now, peer);
        if !was_usable {
            self.ice_gauges(peer);
        }
        Metrics::inc(&self.metrics.handshakes_completed);
        self.events.push_back(Event::HandshakeCompleted {
            peer,
            initiator: true,
        });
        if staged {
            self.ready.push_back(peer);
        } else if keepalive {
            // Confirms the session to the responder, which waits for it before sending.
            self.control.push_back(Control::Keepalive { peer });
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: DataHeader,
        datagram: &mut [u8],
    ) -> Received {
        let refuse = |node: &Self, e: PeerMisbehaved| {
            if let PeerMisbehaved::Duplicate(counter) = e {
                // Expected with bonding or redundancy: not an attack, not worth a log line
                // above trace.
                Metrics::inc(&node.metrics.rx_duplicates);
                Metrics::inc(&node.metrics.rx_dropped);
                tracing::trace!(%from, counter, "duplicate dropped");
                return Received::Dropped(DropReason::Misbehaved(e));
            }
            let counter = match e {
                PeerMisbehaved::Replay(_) => &node.metrics.rx_replayed,
                PeerMisbehaved::UnknownSession(_) => &node.metrics.rx_unknown_session,
                _ => &node.metrics.rx_auth_failed,
            };
            Metrics::inc(counter);
            Metrics::inc(&node.metrics.rx_dropped);
            tracing::trace!(%from, error = %e, "data packet refused");
            Received::Dropped(DropReason::Misbehaved(e))
        };
        let Some(peer) = self.indices.get(&header.receiver_index).copied() else {
            return refuse(self, PeerMisbehaved::UnknownSession(header.receiver_index));
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return refuse(self, PeerMisbehaved::UnknownSession(header.receiver_index));
        };
        let Some(tunnel) = state.tunnel.as_mut() else {
            return refuse(self, PeerMisbehaved::UnknownSession(header.receiver_index));
        };
        let was_usable = tunnel.is_established(now, &self.config.timers);
        let (range, confirmed) = match tunnel.open(header, datagram, now, &self.config.timers) {
            Ok(opened) => (opened.range, opened.confirmed),
            Err(e) => return refuse(self, e),
        };
        let staged = tunnel.has_staged();
        if confirmed && !was_usable {
            state.measured.connected_since = Some(now);
        }
        self.forget_retired(peer);
        // Authenticated and not a replay: the peer is at `from` (roaming, NAT rebinding).
        self.learn_endpoint(now, peer, from);
        self.ensure_pmtu(now, peer);
        if confirmed && !was_usable {
            // Once per session, not per packet: the gauge takes a lock.
            self.ice_gauges(peer);
        }
        if confirmed {
            self.on_confirmed(peer, staged);
        }
        if range.is_empty() {
            return Received::Consumed;
        }
        // Sequenced bulk is data (acknowledged, delivered); other control frames are not.
        let sequenced = datagram[range.start] == FRAME_BULK;
        if is_control_frame(&datagram[range.clone()]) && !sequenced {
            return self.on_control(now, peer, &datagram[range]);
        }
        let len = datagram.len();
        let arrived = self.arrived_at.unwrap_or(now);
        let detect = self.config.rate_drop_feedback;
        let (owed, drop) = self.peers.get_mut(&peer).map_or((false, None), |s| {
            let (index, counter) = (header.receiver_index, header.counter);
            let drop = detect
                .then(|| s.feedback.arrival.on_packet(index, counter, len, arrived))
                .flatten();
            (
                s.feedback.acks.on_packet(index, counter, len, arrived),
                drop,
            )
        });
        if let Some(frame) = drop {
            // Ahead of the ack: the sender should cut before anything else.
            self.control.push_front(Control::RateDrop { peer, frame });
        }
        if owed {
            self.control.push_back(Control::Ack { peer });
        }
        if sequenced {
            return self.on_bulk_frame(now, peer, header.receiver_index, datagram, range);
        }
        self.offer_repair(now, peer, header.receiver_index);
        self.admit(peer, datagram, range)
    }

    /// An authenticated control frame: acknowledgements, path MTU probes and their
    /// answers.
    fn on_control(&mut self, now: Instant, peer: PeerId, frame: &[u8]) -> Received {
        let ack = match ControlFrame::parse(frame) {
            Ok(ControlFrame::Ack(ack)) => ack,
            Ok(ControlFrame::Probe { id }) => {
                self.control.push_back(Control::ProbeAck { peer, id });
                return Received::Consumed;
            }
            Ok(ControlFrame::ProbeAck { id }) => {
                self.on_probe_ack(now, peer, id);
                return Received::Consumed;
            }
            Ok(ControlFrame::RateDrop(frame)) => {
                self.on_rate_drop(now, peer, frame);
                return Received::Consumed;
            }
            Ok(ControlFrame::Nack(frame)) => {
                self.on_nack(peer, frame);
                return Received::Consumed;
            }
            Ok(ControlFrame::RepairHello(hello)) => {
                self.on_repair_hello(peer, hello);
                return Received::Consumed;
            }
            Err(e) => return self.malformed(e),
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return Received::Consumed;
        };
        let sample = state
            .feedback
            .sent
            .as_mut()
            .and_then(|log| log.on_ack(ack, now));
        if let Some(sample) = sample {
            state.measured.sample_rtt(sample.round_trip);
            let sent_at = |round_trip| now.checked_sub(round_trip).unwrap_or(now);
            let mut probe = state
                .pmtu
                .on_acked(now, sent_at(sample.round_trip), sample.len);
            if let Some(largest) = sample.largest {
                // The batch's largest packet arrived: the path carries its size, however
                // many others a full buffer dropped.
                probe |= state
                    .pmtu
                    .on_acked(now, sent_at(largest.round_trip), largest.len);
            }
            if probe {
                self.control.push_back(Control::Probe { peer });
            }
            Metrics::inc(&self.metrics.acks_received);
            self.congestion
                .peer(peer)
                .on_feedback(now, Feedback::from_ack(&sample));
        }
        Received::Consumed
    }

    /// The peer saw our packets arrive slower. Believed only when our own log agrees:
    /// the same packets took longer to arrive than to send, by more than jitter's share
    /// (then the link, not we, set their pace); the rate they got through at goes to the
    /// peer's bulk controller.
    fn on_rate_drop(&mut self, now: Instant, peer: PeerId, frame: RateDropFrame) {
        if !self.config.rate_drop_feedback {
            return;
        }
        let Some((sent, bulk_bytes)) = self
            .peers
            .get(&peer)
            .and_then(|s| s.feedback.sent.as_ref())
            .and_then(|log| log.window(frame.index, frame.first, frame.last))
        else {
            return;
        };
        let arrived = Duration::from_micros(frame.span_us);
        if arrived.mul_f64(RATE_DROP_CONFIRM) <= sent || bulk_bytes == 0 {
            return;
        }
        let delivered = bulk_bytes as f64 / arrived.as_secs_f64();
        self.congestion.peer(peer).on_rate_drop(now, delivered);
    }

    fn on_confirmed(&mut self, peer: PeerId, staged: bool) {
        Metrics::inc(&self.metrics.handshakes_completed);
        self.events.push_back(Event::HandshakeCompleted {
            peer,
            initiator: false,
        });
        if staged {
            self.ready.push_back(peer);
        }
    }

    /// Applies the anti-spoofing and policy checks to a decrypted packet.
    pub(super) fn admit(
        &mut self,
        peer: PeerId,
        datagram: &mut [u8],
        range: Range<usize>,
    ) -> Received {
        // A SYN from the peer: the local host answers with segments that must fit the path
        // back to the peer.
        self.clamp(peer, &mut datagram[range.clone()]);
        let packet = &datagram[range.clone()];
        let drop = |node: &Self, reason| {
            Metrics::inc(&node.metrics.rx_dropped);
            Received::Dropped(reason)
        };
        let Ok(view) = IpView::parse(packet) else {
            Metrics::inc(&self.metrics.rx_malformed);
            return drop(
                self,
                DropReason::Malformed(MalformedPacket::NotIp("inner packet")),
            );
        };
        let expected = self.registry.by_id(peer).map(|p| p.virtual_ip);
        if view.src_v4().is_none() || view.src_v4() != expected {
            return drop(self, DropReason::Spoofed);
        }
        if self
            .policy
            .check_counted(Flow::Inbound, peer, &view, &self.metrics)
            == Verdict::Deny
        {
            return drop(self, DropReason::Denied);
        }
        Metrics::inc(&self.metrics.rx_packets);
        Metrics::add(&self.metrics.rx_bytes, packet.len() as u64);
        Received::Deliver(range)
    }
}
