//! `StateSnapshot`: the peer table saved across an update for a warm start.
//!
//! Invariant: a snapshot holds only public data (peer IDs, names, virtual IPs, X25519 and
//! Ed25519 *public* keys, endpoints). It has no field that could hold a session key or any
//! secret, so restoring one can never resurrect a past session: forward secrecy survives
//! the update, and every peer re-handshakes.
//!
//! Encoding: `"BXSNAP"` magic, format version (u32 LE), postcard body, then a BLAKE3 hash of
//! everything before it. Decoding checks all of it and reports what is wrong as
//! [`Error::Snapshot`], never panicking on garbage.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::peers::{PeerInfo, PeerRegistry};
use crate::{Error, PeerId, VirtualIp};

/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 6] = b"BXSNAP";
const HEADER: usize = MAGIC.len() + 4;
const CHECKSUM: usize = 32;

/// The saved peer table of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The node that took the snapshot.
    pub node: PeerId,
    /// Every known peer, in ascending ID order.
    pub peers: Vec<PeerSnapshot>,
    /// Wall-clock time of capture, in seconds since the Unix epoch (passed in by the caller).
    pub taken_at_unix: u64,
}

/// One peer's public record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    /// Identity.
    pub id: PeerId,
    /// Name from the hub.
    pub name: String,
    /// Address inside the mesh.
    pub virtual_ip: VirtualIp,
    /// X25519 static public key.
    pub static_public: [u8; 32],
    /// Ed25519 public key.
    pub signing_public: [u8; 32],
    /// Last known underlay endpoint.
    pub endpoint: Option<SocketAddr>,
}

impl From<&PeerInfo> for PeerSnapshot {
    fn from(peer: &PeerInfo) -> Self {
        Self {
            id: peer.id,
            name: peer.name.clone(),
            virtual_ip: peer.virtual_ip,
            static_public: peer.static_public,
            signing_public: peer.signing_public,
            endpoint: peer.endpoint,
        }
    }
}

impl From<PeerSnapshot> for PeerInfo {
    fn from(peer: PeerSnapshot) -> Self {
        Self {
            id: peer.id,
            name: peer.name,
            virtual_ip: peer.virtual_ip,
            static_public: peer.static_public,
            signing_public: peer.signing_public,
            endpoint: peer.endpoint,
            // Candidate addresses are the hub's current view: the next topology brings them.
            candidates: Vec::new(),
            candidate_kinds: Vec::new(),
        }
    }
}

impl StateSnapshot {
    /// Captures `registry` for `node` at `taken_at_unix` (seconds since the epoch).
    pub fn capture(node: PeerId, registry: &PeerRegistry, taken_at_unix: u64) -> Self {
        Self {
            version: FORMAT_VERSION,
            node,
            peers: registry.iter().map(PeerSnapshot::from).collect(),
            taken_at_unix,
        }
    }

    /// Encodes as magic, version, postcard body and BLAKE3 checksum.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(HEADER + 64 + self.peers.len() * 128 + CHECKSUM);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        let mut out = postcard::to_extend(self, out)
            .map_err(|e| Error::Snapshot(format!("encoding failed: {e}")))?;
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        Ok(out)
    }

    /// Decodes and checks bytes written by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |why: String| Error::Snapshot(why);
        if bytes.len() < HEADER + CHECKSUM {
            return Err(bad(format!(
                "truncated: {} bytes, a snapshot has at least {}",
                bytes.len(),
                HEADER + CHECKSUM
            )));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(bad("not a Bauxite state snapshot (bad magic)".to_owned()));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[MAGIC.len()..HEADER]);
        let version = u32::from_le_bytes(version);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads only {FORMAT_VERSION}"
            )));
        }
        let (covered, checksum) = bytes.split_at(bytes.len() - CHECKSUM);
        if blake3::hash(covered) != *checksum {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupt".to_owned()
            ));
        }
        let (snapshot, rest): (Self, _) =
            postcard::take_from_bytes(&covered[HEADER..]).map_err(|e| bad(format!("body: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!(
                "{} unexpected bytes after the body",
                rest.len()
            )));
        }
        if snapshot.version != version {
            return Err(bad(format!(
                "body says version {}, header says {version}",
                snapshot.version
            )));
        }
        Ok(snapshot)
    }

    /// Replaces `registry`'s peers with the snapshot's; all-or-nothing.
    pub fn restore_into(&self, registry: &mut PeerRegistry) -> Result<(), Error> {
        registry.replace_all(self.peers.iter().cloned().map(PeerInfo::from))
    }
}

#[cfg(test)]
mod tests;
