//! Topology: applying the hub's full peer list, and deciding whom to dial because of it.
//!
//! Invariant: after [`BauxiteNode::replace_peers`] the registry holds exactly the listed
//! peers that were not refused, a peer whose static key changed has no session left from
//! the old key, and every change is reported as an [`Event`] — the shell only logs them.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{BauxiteNode, Control, Event};
use crate::peers::PeerInfo;
use crate::{Error, PeerId};

impl BauxiteNode {
    /// Applies a full peer list (the hub's topology): removes the peers not in it, adds or
    /// updates the others, and dials at once every listed peer that has an address and is
    /// new, has a new static key, or has a new first address — even over an initiation in
    /// flight to the old address, where (behind a NAT) the peer is not. A connected peer is
    /// not redialled (its session already follows it); one whose first address moved gets
    /// a keepalive there at once, which opens our NAT to the peer's new mapping. Each change is reported as an
    /// [`Event`] ([`PeerAdded`](Event::PeerAdded), [`PeerRemoved`](Event::PeerRemoved),
    /// [`PeerKeyChanged`](Event::PeerKeyChanged), [`PeerRefused`](Event::PeerRefused)).
    pub fn replace_peers(&mut self, now: Instant, peers: Vec<PeerInfo>) {
        let keep: BTreeSet<PeerId> = peers.iter().map(|p| p.id).collect();
        let gone: Vec<PeerId> = self
            .registry
            .iter()
            .map(|p| p.id)
            .filter(|id| !keep.contains(id))
            .collect();
        // Removals first, so an address or key a removed peer held can move to another.
        for id in gone {
            if let Some(peer) = self.remove_peer(id) {
                self.events.push_back(Event::PeerRemoved {
                    peer: id,
                    name: peer.name,
                });
            }
        }
        for peer in peers {
            self.apply_peer(now, peer);
        }
    }

    fn apply_peer(&mut self, now: Instant, peer: PeerInfo) {
        let id = peer.id;
        let name = peer.name.clone();
        let first = peer.dial_order().first().copied();
        let before = self
            .registry
            .by_id(id)
            .map(|b| (b.dial_order().first().copied(), b.static_public));
        let key_changed = before.is_some_and(|(_, key)| key != peer.static_public);
        let moved = before.is_some_and(|(old, _)| old != first);
        let dial = first.is_some() && (before.is_none() || key_changed || moved);
        match self.upsert_peer(peer) {
            Ok(()) => {}
            Err(Error::PeerConflict(reason)) => {
                self.events
                    .push_back(Event::PeerRefused { peer: id, reason });
                return;
            }
            Err(error) => {
                // `upsert_peer` refuses only conflicts; keep the table as it was.
                tracing::warn!(peer = %id, %error, "peer refused");
                return;
            }
        }
        if before.is_none() {
            self.events.push_back(Event::PeerAdded { peer: id, name });
        } else if key_changed {
            self.events.push_back(Event::PeerKeyChanged { peer: id });
            self.ice_close(id);
        }
        if (before.is_none() || key_changed)
            && let Err(error) = self.ice_begin(now, id)
        {
            tracing::warn!(peer = %id, %error, "cannot start ICE");
        }
        if dial && self.is_connected(id, now) && moved && !key_changed {
            // The session follows the peer, but behind a NAT the peer only gets through
            // once we have sent to its new address (our router drops the rest as
            // unsolicited): a keepalive there at once opens the way — after a NAT
            // rebinding, without it, nothing would until our next packet to the peer.
            self.control.push_back(Control::Keepalive { peer: id });
        } else if dial
            && !self.is_connected(id, now)
            && let Err(error) = self.redial(now, id)
        {
            // Unreachable: the peer was just registered.
            tracing::warn!(peer = %id, %error, "cannot start handshake");
        }
    }
}
