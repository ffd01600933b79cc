//! The hub relay: a peer's packets go through the hub's data channel when no UDP path
//! answers, and come back to UDP as soon as one does.
//!
//! Invariants: the decision is the node's, from its inputs alone. A peer goes on the hub
//! when something that expects an answer (an initiation, a response, a data packet: every
//! data packet is acknowledged) went out on a UDP path and nothing authenticated came back
//! on one for [`NodeConfig::hub_relay_after`](super::NodeConfig::hub_relay_after), when it
//! has no UDP path at all, or when an authenticated packet of it arrives through the hub
//! (it cannot reach us over UDP, so our answers should not go there either). While on the
//! hub, a keepalive goes to a direct candidate every [`HUB_PROBE_INTERVAL`] (rotating
//! through them), so the peer hears us directly as soon as the path opens. The first
//! authenticated packet that arrives on a UDP path moves the peer back to it: no
//! handshake, the session keys do not depend on the path, and packets still in flight on
//! the hub decrypt on arrival (the replay window takes the overlap).
//!
//! Nothing here trusts the hub: what it relays is sealed end to end, is authenticated like
//! any datagram, and only ever moves us *onto* the hub after it authenticated.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::{BauxiteNode, Control, Event};
use crate::PeerId;

/// The address relayed datagrams are handed in from ([`BauxiteNode::handle_datagram`]):
/// `0.0.0.0:0`, which no UDP datagram can come from.
pub const HUB_ENDPOINT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// How often a peer on the hub relay is probed on a direct candidate.
pub const HUB_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A good default for [`NodeConfig::hub_relay_after`](super::NodeConfig::hub_relay_after):
/// shorter than a handshake retry (5 s), longer than any sane round trip.
pub const DEFAULT_HUB_RELAY_AFTER: Duration = Duration::from_secs(3);

/// How a transmit leaves the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A UDP datagram to [`Transmit::dst`](super::Transmit::dst).
    Udp,
    /// Through the hub's data channel to this peer (`dst` is [`HUB_ENDPOINT`]).
    Hub(PeerId),
}

/// The hub-relay bookkeeping of one peer.
#[derive(Debug, Default)]
pub(super) struct HubWatch {
    /// The first send on a UDP path that expects an answer, since the last authenticated
    /// packet that came on one.
    unanswered_since: Option<Instant>,
    /// While on the hub: when to probe a direct candidate next.
    next_probe: Option<Instant>,
}

impl HubWatch {
    /// When this peer's hub state has work, if ever.
    pub(super) fn deadline(&self, on_hub: bool, after: Duration) -> Option<Instant> {
        if on_hub {
            self.next_probe
        } else {
            self.unanswered_since.map(|since| since + after)
        }
    }
}

impl BauxiteNode {
    /// Whether this node relays through the hub at all.
    pub(super) fn hub_enabled(&self) -> bool {
        self.config.hub_relay_after.is_some()
    }

    /// Something expecting an answer went to `peer` on a UDP path.
    pub(super) fn sent_expecting_answer(&mut self, now: Instant, peer: PeerId) {
        if !self.hub_enabled() {
            return;
        }
        if let Some(state) = self.peers.get_mut(&peer)
            && !state.path.on_hub()
        {
            state.hub.unanswered_since.get_or_insert(now);
        }
    }

    /// An authenticated packet of `peer` came from `from`. Returns whether `from` is a
    /// UDP address the caller may learn (not the hub's pseudo-endpoint).
    pub(super) fn heard_on(&mut self, now: Instant, peer: PeerId, from: SocketAddr) -> bool {
        let enabled = self.hub_enabled();
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        if from == HUB_ENDPOINT {
            if enabled && !state.path.on_hub() {
                self.go_hub(now, peer, "the peer reaches us through the hub");
            }
            return false;
        }
        state.hub.unanswered_since = None;
        if state.path.on_hub() {
            state.path.set_hub(false);
            state.hub.next_probe = None;
            tracing::info!(%peer, endpoint = %from, "direct path works; leaving the hub relay");
            self.events.push_back(Event::HubRelay {
                peer,
                active: false,
            });
        }
        true
    }

    fn go_hub(&mut self, now: Instant, peer: PeerId, why: &'static str) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.path.set_hub(true);
        state.hub.unanswered_since = None;
        state.hub.next_probe = Some(now + HUB_PROBE_INTERVAL);
        let pending = state.tunnel.as_ref().is_some_and(|t| t.handshake_pending());
        tracing::info!(%peer, why, "relaying through the hub");
        self.events
            .push_back(Event::HubRelay { peer, active: true });
        // An initiation lost on the UDP path would wait for its retry timer: send a fresh
        // one through the hub now.
        if pending {
            self.start_handshake(now, peer);
        }
    }

    /// The earliest hub-relay deadline of any peer.
    pub(super) fn hub_timeout(&self) -> Option<Instant> {
        let after = self.config.hub_relay_after?;
        self.peers
            .values()
            .filter_map(|s| s.hub.deadline(s.path.on_hub(), after))
            .min()
    }

    /// Moves silent peers onto the hub and probes direct candidates of peers on it.
    pub(super) fn hub_timeouts(&mut self, now: Instant) {
        let Some(after) = self.config.hub_relay_after else {
            return;
        };
        let due: Vec<(PeerId, bool)> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                s.hub
                    .deadline(s.path.on_hub(), after)
                    .is_some_and(|at| at <= now)
            })
            .map(|(&peer, s)| (peer, s.path.on_hub()))
            .collect();
        for (peer, on_hub) in due {
            if !on_hub {
                self.go_hub(now, peer, "no UDP path answered");
                continue;
            }
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            state.hub.next_probe = Some(now + HUB_PROBE_INTERVAL);
            // Each probe tries the next candidate; with one (or a learned one), it stays.
            if state.path.rotate().is_some() || state.path.direct().is_some() {
                self.control.push_back(Control::DirectProbe { peer });
            }
        }
    }
}
