//! `PeerRegistry`: who is in the mesh, found by virtual IP, peer ID or static key.
//!
//! Invariant: the three indices always describe the same set of peers. Every peer has
//! exactly one virtual IP and one X25519 static key, no two peers share either, and every
//! peer's ID is derived from its Ed25519 key ([`PeerId::from_signing_public`]), so the hub
//! cannot pair one peer's ID with another's key. A rejected change leaves the registry as it
//! was. [`PeerRegistry::version`] increases on every change that takes effect.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::{Error, PeerId, VirtualIp};

/// What the data plane knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Identity, derived from `signing_public`.
    pub id: PeerId,
    /// Human-readable name from the hub (not unique, not trusted).
    pub name: String,
    /// The peer's address inside the mesh.
    pub virtual_ip: VirtualIp,
    /// X25519 static public key, used by the handshake.
    pub static_public: [u8; 32],
    /// Ed25519 public key, from which `id` is derived.
    pub signing_public: [u8; 32],
    /// Last known underlay endpoint, if any: the first address to dial.
    pub endpoint: Option<SocketAddr>,
    /// More addresses to try, best first, when the handshake to `endpoint` goes
    /// unanswered (the hub's `Peer.candidates`); empty for a static peer.
    pub candidates: Vec<SocketAddr>,
    /// Where the hub says some of these addresses come from (`Peer.candidate_kinds`), for
    /// status output only: path selection never trusts it.
    pub candidate_kinds: Vec<(SocketAddr, CandidateKind)>,
}

/// Where a candidate address of a peer comes from, as the hub labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateKind {
    /// An address of one of the peer's interfaces.
    Host,
    /// The peer's NAT mapping, as the hub's STUN answer showed it.
    ServerReflexive,
    /// The IP the hub saw the peer's connection come from, with its listen port.
    Observed,
    /// The peer's relayed address on its TURN server: reached through the server, never
    /// dialled as a direct address.
    Relay,
}

impl CandidateKind {
    /// Short name for status output (`host`, `srflx`, `observed`, `relay`), as ICE
    /// spells them.
    pub fn name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::Observed => "observed",
            CandidateKind::Relay => "relay",
        }
    }
}

impl PeerInfo {
    /// Builds a record whose `id` is derived from `signing_public`.
    pub fn new(
        name: impl Into<String>,
        virtual_ip: VirtualIp,
        static_public: [u8; 32],
        signing_public: [u8; 32],
        endpoint: Option<SocketAddr>,
    ) -> Self {
        Self {
            id: PeerId::from_signing_public(&signing_public),
            name: name.into(),
            virtual_ip,
            static_public,
            signing_public,
            endpoint,
            candidates: Vec::new(),
            candidate_kinds: Vec::new(),
        }
    }

    /// The same record with `candidates` as the addresses to try after `endpoint`.
    pub fn with_candidates(mut self, candidates: Vec<SocketAddr>) -> Self {
        self.candidates = candidates;
        self
    }

    /// The same record with the hub's labels for its addresses.
    pub fn with_candidate_kinds(mut self, kinds: Vec<(SocketAddr, CandidateKind)>) -> Self {
        self.candidate_kinds = kinds;
        self
    }

    /// Every address to dial directly, in order: `endpoint`, then `candidates`, without
    /// repeats and without the relay candidate (see [`relay_candidate`](Self::relay_candidate)).
    pub fn dial_order(&self) -> Vec<SocketAddr> {
        let relay = self.relay_candidate();
        let mut out: Vec<SocketAddr> = Vec::with_capacity(1 + self.candidates.len());
        for addr in self.endpoint.iter().chain(&self.candidates) {
            if !out.contains(addr) && Some(*addr) != relay {
                out.push(*addr);
            }
        }
        out
    }

    /// The peer's relayed address on its TURN server: the first candidate the hub labels
    /// [`CandidateKind::Relay`]. The label only sorts the address onto the TURN rung of
    /// path selection (below direct); whatever arrives from there still authenticates.
    pub fn relay_candidate(&self) -> Option<SocketAddr> {
        self.candidate_kinds
            .iter()
            .find(|(addr, kind)| *kind == CandidateKind::Relay && self.candidates.contains(addr))
            .map(|(addr, _)| *addr)
    }
}

/// Why a change to the peer registry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum PeerConflict {
    /// The virtual IP already belongs to another peer.
    #[error("virtual IP {ip} already belongs to peer {owner}; move or remove that peer first")]
    VirtualIpInUse {
        /// The contested address.
        ip: VirtualIp,
        /// Its current owner.
        owner: PeerId,
    },
    /// The static key already belongs to another peer.
    #[error("static key already belongs to peer {owner}")]
    StaticKeyInUse {
        /// Its current owner.
        owner: PeerId,
    },
    /// `insert` was given a peer that is already registered.
    #[error("peer {0} is already registered; use upsert to change it")]
    AlreadyRegistered(PeerId),
    /// The peer ID is not the one derived from its signing key.
    #[error("peer ID {0} does not match its signing key; the record is forged or corrupt")]
    IdMismatch(PeerId),
}

/// The mesh's peer table, indexed three ways.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRegistry {
    peers: BTreeMap<PeerId, PeerInfo>,
    by_ip: BTreeMap<VirtualIp, PeerId>,
    by_static: BTreeMap<[u8; 32], PeerId>,
    version: u64,
}

impl PeerRegistry {
    /// An empty registry at version 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a new peer; refuses one whose ID, IP or static key is already registered.
    pub fn insert(&mut self, peer: PeerInfo) -> Result<(), Error> {
        if self.peers.contains_key(&peer.id) {
            return Err(PeerConflict::AlreadyRegistered(peer.id).into());
        }
        self.upsert(peer).map(drop)
    }

    /// Adds a peer or replaces the record with the same ID, returning the old record.
    ///
    /// A changed virtual IP or static key moves: the old one is released. Refused if the
    /// new IP or key belongs to a *different* peer; to swap addresses between peers, use
    /// [`replace_all`](Self::replace_all).
    pub fn upsert(&mut self, peer: PeerInfo) -> Result<Option<PeerInfo>, Error> {
        self.check(&peer)?;
        if self.peers.get(&peer.id) == Some(&peer) {
            return Ok(Some(peer));
        }
        let old = self.remove_indices(peer.id);
        self.by_ip.insert(peer.virtual_ip, peer.id);
        self.by_static.insert(peer.static_public, peer.id);
        self.peers.insert(peer.id, peer);
        self.version += 1;
        Ok(old)
    }

    /// Replaces the whole table at once (topology sync, snapshot restore), so addresses can
    /// move between peers in any order; all-or-nothing. Bumps the version only on change.
    pub fn replace_all(&mut self, peers: impl IntoIterator<Item = PeerInfo>) -> Result<(), Error> {
        let mut next = PeerRegistry::new();
        for peer in peers {
            next.upsert(peer)?;
        }
        if next.peers != self.peers {
            next.version = self.version + 1;
            *self = next;
        }
        Ok(())
    }

    /// Removes a peer, returning its record.
    pub fn remove(&mut self, id: PeerId) -> Option<PeerInfo> {
        let old = self.remove_indices(id);
        if old.is_some() {
            self.version += 1;
        }
        old
    }

    /// The peer owning a virtual IP (the outbound routing lookup).
    pub fn by_ip(&self, ip: VirtualIp) -> Option<&PeerInfo> {
        self.by_ip.get(&ip).and_then(|id| self.peers.get(id))
    }

    /// The peer with this ID.
    pub fn by_id(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&id)
    }

    /// The peer with this X25519 static key (the handshake's lookup).
    pub fn by_static_public(&self, key: &[u8; 32]) -> Option<&PeerInfo> {
        self.by_static.get(key).and_then(|id| self.peers.get(id))
    }

    /// Records a newly learned underlay endpoint; returns false for an unknown peer.
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        if peer.endpoint != endpoint {
            peer.endpoint = endpoint;
            self.version += 1;
        }
        true
    }

    /// All peers in ascending ID order.
    pub fn iter(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Change counter: increases on every change that takes effect.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn check(&self, peer: &PeerInfo) -> Result<(), PeerConflict> {
        if PeerId::from_signing_public(&peer.signing_public) != peer.id {
            return Err(PeerConflict::IdMismatch(peer.id));
        }
        if let Some(&owner) = self.by_ip.get(&peer.virtual_ip).filter(|&&o| o != peer.id) {
            return Err(PeerConflict::VirtualIpInUse {
                ip: peer.virtual_ip,
                owner,
            });
        }
        if let Some(&owner) = self
            .by_static
            .get(&peer.static_public)
            .filter(|&&o| o != peer.id)
        {
            return Err(PeerConflict::StaticKeyInUse { owner });
        }
        Ok(())
    }

    fn remove_indices(&mut self, id: PeerId) -> Option<PeerInfo> {
        let old = self.peers.remove(&id)?;
        self.by_ip.remove(&old.virtual_ip);
        self.by_static.remove(&old.static_public);
        Some(old)
    }
}

#[cfg(test)]
mod tests;
