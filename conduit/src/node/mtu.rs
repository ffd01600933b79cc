//! The node's MTU handling: path MTU discovery per peer ([`Pmtu`], probes as control
//! frames), and what happens to an inner packet the peer's path cannot carry.
//!
//! Invariant: no data datagram larger than the peer's confirmed path MTU leaves the node.
//! A packet that would need one is, at the moment it leaves its lane (when the path's
//! size is as fresh as it gets): fragmented when it is IPv4 without DF, otherwise dropped,
//! counted (`tx_too_big`) and answered with an ICMP "fragmentation needed" / "packet too
//! big" written back to TUN (at most [`ICMP_BURST`] at once, one per [`ICMP_INTERVAL`]
//! after that), so the sender learns the size instead of retransmitting into a black
//! hole. TCP SYNs in both directions have their MSS clamped once the path is known to be
//! narrower than the device, so most connections never need the ICMP at all.
//!
//! Before a peer's path has a session nothing is limited: packets wait for the session
//! (staged) and are checked when they leave. Discovery starts when a session becomes
//! usable, and restarts when the peer's endpoint changes (a new path). Until its first
//! answer about sizes above the base ([`Pmtu::undecided`]: one or two round trips), a
//! packet too large for the base waits in the peer's stage instead of being refused: on
//! a path that carries it, its sender never hears of a smaller size (the kernel would
//! keep one for ten minutes).

use std::time::{Duration, Instant};

use super::{BauxiteNode, Control};
use crate::ip::mtu::{Fragments, clamp_mss, dont_fragment, too_big_reply};
use crate::path::frame::{PROBE_HEADER_LEN, write_probe};
use crate::path::{Pmtu, PmtuPhase};
use crate::wire::DATA_OVERHEAD;
use crate::{Lane, Metrics, PeerId};

/// ICMP answers the node may write back to TUN at once.
pub const ICMP_BURST: u32 = 10;
/// One more ICMP answer is allowed per this interval (100 per second).
pub const ICMP_INTERVAL: Duration = Duration::from_millis(10);
/// Locally generated packets waiting for the shell (`poll_local_packet`).
const LOCAL_QUEUE: usize = 64;

/// A token bucket for ICMP answers: a sender flooding oversized packets gets enough
/// answers to learn, and the TUN device is not flooded back.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IcmpLimit {
    tokens: u32,
    refilled: Option<Instant>,
}

impl IcmpLimit {
    fn allow(&mut self, now: Instant) -> bool {
        match self.refilled {
            None => {
                self.tokens = ICMP_BURST;
                self.refilled = Some(now);
            }
            Some(at) => {
                let earned =
                    now.saturating_duration_since(at).as_nanos() / ICMP_INTERVAL.as_nanos();
                if earned > 0 {
                    let earned = u32::try_from(earned).unwrap_or(u32::MAX);
                    self.tokens = self.tokens.saturating_add(earned).min(ICMP_BURST);
                    self.refilled = Some(now);
                }
            }
        }
        let allowed = self.tokens > 0;
        self.tokens = self.tokens.saturating_sub(1);
        allowed
    }
}

/// What became of a packet checked against its peer's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fit {
    /// It fits (its MSS may have been clamped): seal it.
    Send,
    /// It was fragmented or refused; the caller recycles the buffer.
    Consumed,
    /// Too large for the size confirmed so far, but the first probe of a larger one is
    /// out: the caller stages it until discovery answers.
    Hold,
}

/// What one peer's path allows an inner packet.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Largest inner packet that may be sent.
    send: usize,
    /// The MTU SYNs are clamped to, if any.
    mss: Option<usize>,
    /// Discovery's first answer above the base is still out.
    undecided: bool,
}

impl BauxiteNode {
    /// The largest inner IP packet the path to `peer` carries now; the device MTU while
    /// no discovery runs on it.
    pub fn path_inner_mtu(&self, peer: PeerId) -> usize {
        self.limits(peer).send
    }

    /// What `peer`'s path allows, from one look at its record (this runs per packet).
    fn limits(&self, peer: PeerId) -> Limits {
        let device = self.config.mtu;
        let Some(pmtu) = self.peers.get(&peer).map(|s| &s.pmtu) else {
            return Limits {
                send: device,
                mss: None,
                undecided: false,
            };
        };
        let send = pmtu
            .max_datagram()
            .map_or(device, |d| d.saturating_sub(DATA_OVERHEAD).min(device));
        Limits {
            send,
            // Before the path is known to be narrower than the device, the hosts' own
            // MSS (from the device MTU) stands.
            mss: pmtu.narrower_than_max().then_some(send),
            undecided: pmtu.undecided(),
        }
    }

    /// Clamps the MSS of a TCP SYN between us and `peer`.
    pub(super) fn clamp(&self, peer: PeerId, packet: &mut [u8]) {
        self.clamp_to(peer, self.limits(peer).mss, packet);
    }

    fn clamp_to(&self, peer: PeerId, mss_mtu: Option<usize>, packet: &mut [u8]) {
        if let Some(mtu) = mss_mtu
            && let Some(old) = clamp_mss(packet, mtu)
        {
            Metrics::inc(&self.metrics.mss_clamped);
            tracing::trace!(%peer, old, mtu, "MSS clamped");
        }
    }

    /// Checks a packet leaving its lane for `peer` against the path: clamps, fragments
    /// or answers with ICMP (see the module documentation).
    pub(super) fn fit(&mut self, now: Instant, peer: PeerId, lane: Lane, buf: &mut [u8]) -> Fit {
        let limits = self.limits(peer);
        self.clamp_to(peer, limits.mss, buf);
        let limit = limits.send;
        if buf.len() <= limit {
            return Fit::Send;
        }
        if limits.undecided {
            return Fit::Hold;
        }
        if !dont_fragment(buf)
            && let Some(mut fragments) = Fragments::new(buf, limit)
        {
            Metrics::inc(&self.metrics.tx_fragmented);
            loop {
                let mut piece = self.take_buffer();
                if !fragments.next_into(&mut piece) {
                    self.recycle(piece);
                    break;
                }
                self.fragments.push_back((peer, lane, piece));
            }
            return Fit::Consumed;
        }
        Metrics::inc(&self.metrics.tx_too_big);
        Metrics::inc(&self.metrics.tx_dropped);
        let mtu = u16::try_from(limit).unwrap_or(u16::MAX);
        if self.local.len() < LOCAL_QUEUE && self.icmp_limit.allow(now) {
            let mut reply = self.take_buffer();
            if too_big_reply(buf, mtu, &mut reply) {
                Metrics::inc(&self.metrics.icmp_too_big_sent);
                tracing::debug!(%peer, len = buf.len(), mtu, "packet too big for the path; ICMP sent");
                self.local.push_back(reply);
            } else {
                self.recycle(reply);
            }
        }
        Fit::Consumed
    }

    /// Writes the next packet the node itself addresses to the local host (ICMP too-big
    /// answers) into `out`; write `out[..len]` to the TUN device. A packet longer than
    /// `out` is cut to it (give at least the device MTU).
    pub fn poll_local_packet(&mut self, out: &mut [u8]) -> Option<usize> {
        let packet = self.local.pop_front()?;
        let len = packet.len().min(out.len());
        out[..len].copy_from_slice(&packet[..len]);
        self.recycle(packet);
        Some(len)
    }

    /// Starts discovery on `peer`'s path if its session is usable and none runs.
    pub(super) fn ensure_pmtu(&mut self, now: Instant, peer: PeerId) {
        // Runs for every authenticated packet: the common case (running) returns first.
        if self
            .peers
            .get(&peer)
            .is_none_or(|s| s.pmtu.phase() != PmtuPhase::Idle)
        {
            return;
        }
        let max_datagram = self.config.max_plaintext() + DATA_OVERHEAD;
        let timers = self.config.timers;
        // The hub's data channel is a TCP stream: it carries any datagram, nothing to probe.
        let dst = match super::peer::select(&self.peers, peer, self.hub_enabled()) {
            crate::path::Path::Direct(dst) | crate::path::Path::Relay(dst) => dst,
            // Through our TURN allocation the shell's TURN client frames the datagram:
            // not ours to probe.
            crate::path::Path::Turn(_) | crate::path::Path::Hub | crate::path::Path::Drop => {
                return;
            }
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let usable = state
            .tunnel
            .as_ref()
            .is_some_and(|t| t.is_established(now, &timers));
        if !usable {
            return;
        }
        let v6 = match dst {
            std::net::SocketAddr::V4(_) => false,
            std::net::SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
        };
        if state.pmtu.start(v6, max_datagram) {
            self.control.push_back(Control::Probe { peer });
        }
        self.metrics.path_mtu.set(peer, state.pmtu.plpmtu());
    }

    /// Forgets what discovery learned of `peer`'s path (a new endpoint is a new path).
    pub(super) fn reset_pmtu(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.pmtu = Pmtu::default();
        }
        self.metrics.path_mtu.set(peer, None);
    }

    /// Runs the discovery timers due at `now`, queueing the probes they ask for.
    pub(super) fn pmtu_timeouts(&mut self, now: Instant) {
        for (&peer, state) in &mut self.peers {
            if state.pmtu.poll_timeout().is_none_or(|at| at > now) {
                continue;
            }
            let before = (state.pmtu.phase(), state.pmtu.plpmtu());
            let undecided = state.pmtu.undecided();
            if state.pmtu.handle_timeout(now) {
                self.control.push_back(Control::Probe { peer });
            }
            if undecided && !state.pmtu.undecided() {
                // Held packets may go now: sent, or answered with the size that holds.
                self.ready.push_back(peer);
            }
            let after = (state.pmtu.phase(), state.pmtu.plpmtu());
            if after.1 != before.1 {
                self.metrics.path_mtu.set(peer, after.1);
            }
            if after.0 == PmtuPhase::Base
                && matches!(before.0, PmtuPhase::Searching | PmtuPhase::Complete)
            {
                Metrics::inc(&self.metrics.pmtu_black_holes);
                tracing::info!(%peer, was = ?before.1, "path MTU black hole; back to the base size");
            }
            if after.0 == PmtuPhase::Error && before.0 != PmtuPhase::Error {
                tracing::warn!(%peer, "path MTU: even the base size is lost");
            }
        }
    }

    /// Seals the probe `peer`'s discovery wants now into `out`.
    pub(super) fn seal_probe(
        &mut self,
        now: Instant,
        peer: PeerId,
        out: &mut [u8],
    ) -> Option<super::Transmit> {
        let state = self.peers.get_mut(&peer)?;
        let spec = state.pmtu.take_probe(now, state.measured.rtt)?;
        let len = spec
            .datagram_len
            .checked_sub(DATA_OVERHEAD)
            .filter(|&l| (PROBE_HEADER_LEN..=self.config.max_plaintext()).contains(&l))?;
        let mut pad = std::mem::take(&mut self.probe_pad);
        pad.resize(len, 0);
        write_probe(spec.id, &mut pad);
        let sealed = self.seal_control(now, peer, &pad, out, |m| &m.pmtu_probes_sent);
        self.probe_pad = pad;
        tracing::trace!(%peer, size = spec.size, sent = sealed.is_some(), "path MTU probe");
        sealed.map(|t| super::Transmit { probe: true, ..t })
    }

    /// The peer acknowledged our probe `id`.
    pub(super) fn on_probe_ack(&mut self, now: Instant, peer: PeerId, id: u32) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(sent_at) = state.pmtu.probe_sent_at(id) {
            // The responder of a session may have no other sample: probe timeouts need one.
            state
                .measured
                .sample_rtt(now.saturating_duration_since(sent_at));
        }
        let undecided = state.pmtu.undecided();
        let more = state.pmtu.on_probe_ack(now, id);
        Metrics::inc(&self.metrics.pmtu_probes_acked);
        if undecided && !state.pmtu.undecided() {
            self.ready.push_back(peer);
        }
        if more {
            self.control.push_back(Control::Probe { peer });
        }
        self.metrics.path_mtu.set(peer, state.pmtu.plpmtu());
        if !more {
            let (path_mtu, phase) = (state.pmtu.plpmtu(), state.pmtu.phase());
            tracing::debug!(%peer, ?path_mtu, phase = phase.name(), "path MTU");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_answers_are_rate_limited_and_refill() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut limit = IcmpLimit::default();
        let burst = (0..100).filter(|_| limit.allow(t0)).count();
        assert_eq!(burst, ICMP_BURST as usize);
        assert!(limit.allow(t0 + ICMP_INTERVAL));
        assert!(!limit.allow(t0 + ICMP_INTERVAL));
        let later = t0 + ICMP_INTERVAL * 1000;
        let refilled = (0..100).filter(|_| limit.allow(later)).count();
        assert_eq!(refilled, ICMP_BURST as usize);
    }
}
