//! Warm start: the node's peer table saved as a conduit [`StateSnapshot`] (postcard,
//! checksummed) before an activation and at shutdown, and loaded at start, so the node
//! dials its peers before the hub answers; the first topology snapshot then replaces it.
//!
//! Invariant: a snapshot holds public keys and addresses only (conduit's type cannot hold
//! a session key); one that is missing, corrupt, or taken by another node identity is
//! ignored with a log line, never half-applied (`restore_into` is all-or-nothing).

use std::path::{Path, PathBuf};

use bauxite_conduit::PeerId;
use bauxite_conduit::peers::PeerRegistry;
use bauxite_conduit::snapshot::StateSnapshot;

/// The snapshot file, relative to the state root.
pub const SNAPSHOT_FILE: &str = "warm-start.snapshot";

/// `{state_root}/warm-start.snapshot`.
pub fn path(state_root: &Path) -> PathBuf {
    state_root.join(SNAPSHOT_FILE)
}

/// Writes `snapshot` atomically (0600: the peer table maps the fleet).
pub fn save(state_root: &Path, snapshot: &StateSnapshot) -> Result<PathBuf, String> {
    let file = path(state_root);
    let bytes = snapshot.to_bytes().map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(&file, &bytes, 0o600)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    tracing::info!(path = %file.display(), peers = snapshot.peers.len(), "warm-start snapshot saved");
    Ok(file)
}

/// Restores the snapshot of node `me` into `registry`; returns how many peers it
/// restored (0 when there is none or it is unusable).
pub fn load_into(state_root: &Path, me: PeerId, registry: &mut PeerRegistry) -> usize {
    let file = path(state_root);
    let bytes = match crate::fsutil::read_optional(&file) {
        Ok(Some(b)) => b,
        Ok(None) => return 0,
        Err(error) => {
            tracing::warn!(path = %file.display(), %error, "warm-start snapshot unreadable; ignored");
            return 0;
        }
    };
    let snapshot = match StateSnapshot::from_bytes(&bytes) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(path = %file.display(), %error, "warm-start snapshot invalid; ignored");
            return 0;
        }
    };
    if snapshot.node != me {
        tracing::warn!(path = %file.display(), node = %snapshot.node, "warm-start snapshot of another node identity; ignored");
        return 0;
    }
    match snapshot.restore_into(registry) {
        Ok(()) => {
            tracing::info!(path = %file.display(), peers = snapshot.peers.len(), taken_at_unix = snapshot.taken_at_unix, "warm start: peer table restored");
            snapshot.peers.len()
        }
        Err(error) => {
            tracing::warn!(path = %file.display(), %error, "warm-start snapshot refused; ignored");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_conduit::VirtualIp;
    use bauxite_conduit::identity::Identity;
    use bauxite_conduit::peers::PeerInfo;

    #[test]
    fn save_then_load_restores_peers_of_this_node_only() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::from_secrets([1; 32], [2; 32]).peer_id();
        let other = Identity::from_secrets([3; 32], [4; 32]).public();
        let mut reg = PeerRegistry::new();
        reg.insert(PeerInfo::new(
            String::from("hub"),
            VirtualIp::from(std::net::Ipv4Addr::new(100, 64, 0, 1)),
            other.static_public,
            other.signing_public,
            Some("127.0.0.1:7443".parse().unwrap()),
        ))
        .unwrap();
        let snap = StateSnapshot::capture(me, &reg, 42);
        save(dir.path(), &snap).unwrap();
        let mut back = PeerRegistry::new();
        assert_eq!(load_into(dir.path(), me, &mut back), 1);
        assert_eq!(back.iter().count(), 1);
        let stranger = Identity::from_secrets([5; 32], [6; 32]).peer_id();
        let mut none = PeerRegistry::new();
        assert_eq!(load_into(dir.path(), stranger, &mut none), 0);
        // A torn file is ignored.
        let bytes = std::fs::read(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()), &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(load_into(dir.path(), me, &mut none), 0);
        assert_eq!(none.iter().count(), 0);
    }
}
