//! Small value types shared by every module: who a peer is, where it lives in the mesh,
//! and which lane a packet rides.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A node's identity in the mesh: the first 16 bytes of BLAKE3 over its Ed25519 public key.
///
/// Self-certifying (derived from the key, not assigned), fixed size and `Copy`, so it is
/// cheap on the packet path. Its total order picks the handshake initiator.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 16]);

impl PeerId {
    /// Derives the ID from an Ed25519 public key.
    pub fn from_signing_public(public: &[u8; 32]) -> Self {
        let digest = blake3::derive_key("bauxite 2026 peer id", public);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    /// Parses the 32-hex-digit form printed by `Display`.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(Self(id))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// A node's IPv4 address inside the mesh (the address of its `bauxite0`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VirtualIp(pub u32);

impl VirtualIp {
    /// The address as a standard library value.
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.0)
    }
}

impl From<Ipv4Addr> for VirtualIp {
    fn from(addr: Ipv4Addr) -> Self {
        Self(u32::from(addr))
    }
}

impl fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

impl fmt::Debug for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtualIp({})", self.addr())
    }
}

/// The scheduler lane a packet travels in, highest priority first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Control loops: ICMP and packets under 100 bytes. Freshest wins on overflow.
    Critical,
    /// State streams: UDP/TCP port 5006.
    Telemetry,
    /// Everything else, including OTA chunks.
    Bulk,
}

impl Lane {
    /// All lanes, highest priority first.
    pub const ALL: [Lane; 3] = [Lane::Critical, Lane::Telemetry, Lane::Bulk];

    /// Dense index for per-lane arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Critical => "critical",
            Lane::Telemetry => "telemetry",
            Lane::Bulk => "bulk",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_through_hex() {
        let id = PeerId::from_signing_public(&[7u8; 32]);
        assert_eq!(PeerId::from_hex(&id.to_string()), Some(id));
        assert_eq!(PeerId::from_hex("zz"), None);
    }

    #[test]
    fn peer_id_depends_on_key() {
        assert_ne!(
            PeerId::from_signing_public(&[1u8; 32]),
            PeerId::from_signing_public(&[2u8; 32])
        );
    }

    #[test]
    fn virtual_ip_displays_dotted() {
        let ip = VirtualIp::from(Ipv4Addr::new(100, 64, 0, 7));
        assert_eq!(ip.to_string(), "100.64.0.7");
    }
}
