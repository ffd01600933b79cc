//! Relays: a peer's packets go through TURN when no direct pair answers, through the
//! hub's data channel when no UDP path answers at all, and come back to the better path
//! as soon as it works. The order is direct > TURN > hub > drop.
//!
//! Invariants: the decision is the node's, from its inputs alone. A peer goes on TURN
//! when it has a TURN path (its `relay` candidate, or it reached us through our own
//! allocation) and something that expects an answer (an initiation, a response, a data
//! packet: every data packet is acknowledged) went out and nothing authenticated came back
//! for [`NodeConfig::turn_after`](super::NodeConfig::turn_after), or when an
//! authenticated packet of it arrives through TURN (it cannot reach us directly, so our
//! answers should not go there either). It goes on the hub when nothing on UDP (direct
//! or TURN) answered for [`NodeConfig::hub_relay_after`](super::NodeConfig::hub_relay_after),
//! when it has no UDP path at all, or when an authenticated packet of it arrives through
//! the hub. While on a relay, a keepalive goes to a direct candidate every
//! [`HUB_PROBE_INTERVAL`] (rotating through them), so the peer hears us directly as soon
//! as the path opens; a peer on the hub that has a TURN path (its address may arrive
//! after the peer went there) gets one through TURN too. The first authenticated packet
//! that arrives on a direct path moves the peer back to it, and one that arrives through
//! TURN moves it off the hub onto TURN — so direct > TURN > hub holds from every rung —,
//! and a keepalive on the new path tells the peer at once: no
//! handshake, the session keys do not depend on the path, and packets still in flight on
//! the relay decrypt on arrival (the replay window takes the overlap). A peer moved off a
//! pair its ICE agents proved restarts ICE ([`ice_restart`](super::ice_restart)).
//!
//! Nothing here trusts the hub or the TURN server: what they relay is sealed end to end,
//! is authenticated like any datagram, and only ever moves us *onto* a relay after it
//! authenticated.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::{BauxiteNode, Control, Event};
use crate::PeerId;

/// The address relayed datagrams are handed in from ([`BauxiteNode::handle_datagram`]):
/// `0.0.0.0:0`, which no UDP datagram can come from.
pub const HUB_ENDPOINT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// How often a peer on a relay (TURN or the hub) is probed on a direct candidate.
pub const HUB_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long after an authenticated packet of a peer on UDP (direct or TURN) one that
/// arrives through the hub does not move the peer onto the hub: it was in flight when
/// the peer moved off the hub. Shorter than [`DEFAULT_HUB_RELAY_AFTER`], the least time
/// a peer whose UDP path broke stays silent on UDP before it moves to the hub itself.
pub const HUB_ARRIVAL_HOLD: Duration = Duration::from_secs(2);

/// A good default for [`NodeConfig::hub_relay_after`](super::NodeConfig::hub_relay_after):
/// shorter than a handshake retry (5 s), longer than any sane round trip.
pub const DEFAULT_HUB_RELAY_AFTER: Duration = Duration::from_secs(3);

/// A good default for [`NodeConfig::turn_after`](super::NodeConfig::turn_after): a
/// direct pair that works answers within a round trip or two (both sides dial at once,
/// so the first initiation opens the other's NAT); waiting longer only delays a peer
/// behind a symmetric NAT.
pub const DEFAULT_TURN_AFTER: Duration = Duration::from_millis(1000);

/// How a transmit leaves the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A UDP datagram to [`Transmit::dst`](super::Transmit::dst).
    Udp,
    /// Through this node's own TURN allocation, to [`Transmit::dst`](super::Transmit::dst)
    /// (the peer's address as the TURN server sees it).
    Turn,
    /// Through the hub's data channel to this peer (`dst` is [`HUB_ENDPOINT`]).
    Hub(PeerId),
}

/// The relay bookkeeping of one peer.
#[derive(Debug, Default)]
pub(super) struct HubWatch {
    /// The first send on a UDP path (direct or TURN) that expects an answer, since the
    /// last authenticated packet that came on one.
    unanswered_since: Option<Instant>,
    /// While on a relay: when to probe a direct candidate next.
    next_probe: Option<Instant>,
    /// The last authenticated packet that came on a UDP path (direct or TURN).
    heard_udp: Option<Instant>,
}

/// Where one peer stands on the ladder, and the node's settings for it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rung {
    on_hub: bool,
    on_turn: bool,
    has_turn: bool,
    hub_after: Option<Duration>,
    turn_after: Option<Duration>,
}

/// What a due relay deadline asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Turn,
    Hub,
    Probe,
}

impl HubWatch {
    /// Whether the UDP path answered every send that expected an answer so far.
    pub(super) fn answered(&self) -> bool {
        self.unanswered_since.is_none()
    }

    /// When this peer's relay state has work, if ever, and what.
    fn next(&self, r: Rung) -> Option<(Instant, Due)> {
        if r.on_hub {
            return self.next_probe.map(|at| (at, Due::Probe));
        }
        let escalate = match (r.on_turn, r.has_turn, r.turn_after, r.hub_after) {
            (false, true, Some(after), _) => Some((after, Due::Turn)),
            (_, _, _, Some(after)) => Some((after, Due::Hub)),
            _ => None,
        };
        let escalate = escalate
            .and_then(|(after, due)| self.unanswered_since.map(|since| (since + after, due)));
        let probe = self
            .next_probe
            .filter(|_| r.on_turn)
            .map(|at| (at, Due::Probe));
        [escalate, probe]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// When this peer's relay state has work, if ever.
    pub(super) fn deadline(&self, r: Rung) -> Option<Instant> {
        self.next(r).map(|(at, _)| at)
    }
}

impl BauxiteNode {
    /// Whether this node relays through the hub at all.
    pub(super) fn hub_enabled(&self) -> bool {
        self.config.hub_relay_after.is_some()
    }

    /// Where `state` stands on the ladder.
    pub(super) fn rung(&self, state: &super::PeerState) -> Rung {
        Rung {
            on_hub: state.path.on_hub(),
            on_turn: state.path.on_turn(),
            has_turn: state.path.get().has_turn(),
            hub_after: self.config.hub_relay_after,
            // ICE checks every pair at once: no need to wait as long for a direct answer.
            turn_after: match &state.ice {
                Some(ice) if !ice.pair_works() => self
                    .config
                    .turn_after
                    .map(|after| after.min(super::ice::ICE_TURN_AFTER)),
                _ => self.config.turn_after,
            },
        }
    }

    /// Something expecting an answer went to `peer` on a UDP path (direct or TURN).
    pub(super) fn sent_expecting_answer(&mut self, now: Instant, peer: PeerId) {
        if !self.hub_enabled() && self.config.turn_after.is_none() {
            return;
        }
        if let Some(state) = self.peers.get_mut(&peer)
            && !state.path.on_hub()
        {
            state.hub.unanswered_since.get_or_insert(now);
        }
    }

    /// An authenticated packet of `peer` came from `from` (through our TURN allocation
    /// when `self.arrival_turn`). Returns whether `from` is a direct UDP address the
    /// caller may learn (not the hub's pseudo-endpoint, not a TURN address).
    pub(super) fn heard_on(&mut self, now: Instant, peer: PeerId, from: SocketAddr) -> bool {
        let enabled = self.hub_enabled();
        let via_turn = self.arrival_turn;
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        if from == HUB_ENDPOINT && !via_turn {
            // Packets the peer sent through the hub before it moved up to UDP are still
            // arriving for a moment: they do not undo a path that just worked.
            let fresh = state
                .hub
                .heard_udp
                .is_some_and(|at| now.saturating_duration_since(at) < HUB_ARRIVAL_HOLD);
            if enabled && !state.path.on_hub() && !fresh {
                self.go_hub(now, peer, "the peer reaches us through the hub");
            }
            return false;
        }
        state.hub.unanswered_since = None;
        state.hub.heard_udp = Some(now);
        let relayed = via_turn || state.path.get().relay == Some(from);
        if via_turn {
            state.path.set_turn(Some(from));
        }
        if state.path.on_hub() {
            state.path.set_hub(false);
            state.hub.next_probe = None;
            tracing::info!(%peer, endpoint = %from, relayed, "UDP path works; leaving the hub relay");
            self.events.push_back(Event::HubRelay {
                peer,
                active: false,
            });
            // The peer may hear nothing from us on UDP for a while (no traffic, or ours
            // still on its way through the hub): tell it on the path we move to.
            self.control.push_back(Control::Keepalive { peer });
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        if relayed {
            // Packets the peer sent through TURN before its agent selected the pair are
            // still arriving: they do not undo a pair ICE proved.
            let pair_works = state
                .ice
                .as_ref()
                .is_some_and(super::ice::IceSession::pair_works);
            if !state.path.on_turn() && !pair_works {
                self.go_turn(now, peer, "the peer reaches us through TURN");
            } else if state.hub.next_probe.is_none() {
                state.hub.next_probe = Some(now + HUB_PROBE_INTERVAL);
            }
            return false;
        }
        if state.path.on_turn() {
            state.path.set_on_turn(false);
            state.hub.next_probe = None;
            tracing::info!(%peer, endpoint = %from, "direct path works; leaving TURN");
            self.events.push_back(Event::TurnRelay {
                peer,
                active: false,
            });
        }
        true
    }

    pub(super) fn go_turn(&mut self, now: Instant, peer: PeerId, why: &'static str) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.path.set_on_turn(true);
        state.hub.unanswered_since = None;
        state.hub.next_probe = Some(now + HUB_PROBE_INTERVAL);
        let pending = state.tunnel.as_ref().is_some_and(|t| t.handshake_pending());
        let path = state.path.select();
        tracing::info!(%peer, why, ?path, "relaying through TURN");
        self.events
            .push_back(Event::TurnRelay { peer, active: true });
        // An initiation lost on the direct path would wait for its retry timer: send a
        // fresh one through TURN now.
        if pending {
            self.start_handshake(now, peer);
        }
    }

    pub(super) fn go_hub(&mut self, now: Instant, peer: PeerId, why: &'static str) {
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

    /// The earliest relay deadline of any peer.
    pub(super) fn hub_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|s| s.hub.deadline(self.rung(s)))
            .min()
    }

    /// Moves silent peers onto TURN or the hub and probes direct candidates of peers on
    /// a relay.
    pub(super) fn hub_timeouts(&mut self, now: Instant) {
        let due: Vec<(PeerId, Due)> = self
            .peers
            .iter()
            .filter_map(|(&peer, s)| {
                s.hub
                    .next(self.rung(s))
                    .filter(|(at, _)| *at <= now)
                    .map(|(_, due)| (peer, due))
            })
            .collect();
        for (peer, due) in due {
            let pair_worked = self
                .peers
                .get(&peer)
                .and_then(|s| s.ice.as_ref())
                .is_some_and(super::ice::IceSession::pair_works);
            match due {
                Due::Turn => {
                    self.go_turn(now, peer, "no direct pair answered");
                    if pair_worked {
                        self.ice_pair_lost(now, peer, "sends on the ICE pair went unanswered");
                    }
                    continue;
                }
                Due::Hub => {
                    self.go_hub(now, peer, "no UDP path answered");
                    if pair_worked {
                        self.ice_pair_lost(now, peer, "sends on the ICE pair went unanswered");
                    }
                    continue;
                }
                Due::Probe => {}
            }
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            state.hub.next_probe = Some(now + HUB_PROBE_INTERVAL);
            // Each probe tries the next candidate; with one (or a learned one), it stays.
            if state.path.rotate().is_some() || state.path.direct().is_some() {
                self.control.push_back(Control::DirectProbe { peer });
            }
            // From the hub, TURN is a step up too.
            if state.path.on_hub() && state.path.get().has_turn() {
                self.control.push_back(Control::TurnProbe { peer });
            }
        }
    }
}
