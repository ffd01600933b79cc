//! How this node reaches its peers, reported to the hub with its metrics: how many peers
//! it reaches directly, through TURN, through the hub's data channel, or not at all. The
//! hub's admin UI shows each node's path types from these reports (what the node itself
//! sees, not what the hub guesses from the topology).

use bauxite_conduit::io::Query;
use bauxite_conduit::path::Path as MeshPath;
use tokio::sync::{mpsc, oneshot};

/// Metric names, in the order [`counts`] returns them.
pub const NAMES: [&str; 4] = ["paths_direct", "paths_turn", "paths_hub", "paths_none"];

/// How many of `paths` are direct, TURN (either kind of relayed path), hub, or none.
pub fn counts<'a>(paths: impl IntoIterator<Item = &'a MeshPath>) -> [(&'static str, f64); 4] {
    let mut n = [0u32; 4];
    for path in paths {
        let slot = match path {
            MeshPath::Direct(_) => 0,
            MeshPath::Relay(_) | MeshPath::Turn(_) => 1,
            MeshPath::Hub => 2,
            MeshPath::Drop => 3,
        };
        n[slot] += 1;
    }
    [0, 1, 2, 3].map(|i| (NAMES[i], f64::from(n[i])))
}

/// The current counts from the shell, or nothing when it does not answer (it stopped).
pub async fn from_shell(queries: &mpsc::Sender<Query>) -> Vec<(&'static str, f64)> {
    let (reply, answer) = oneshot::channel();
    if queries.send(Query::Status(reply)).await.is_err() {
        return Vec::new();
    }
    match answer.await {
        Ok(status) => counts(status.peers.iter().map(|p| &p.path)).to_vec(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_path_is_counted_once_and_relays_count_as_turn() {
        let a = "192.0.2.1:5000".parse().unwrap();
        let paths = [
            MeshPath::Direct(a),
            MeshPath::Direct(a),
            MeshPath::Relay(a),
            MeshPath::Turn(a),
            MeshPath::Hub,
            MeshPath::Drop,
        ];
        assert_eq!(
            counts(&paths),
            [
                ("paths_direct", 2.0),
                ("paths_turn", 2.0),
                ("paths_hub", 1.0),
                ("paths_none", 1.0)
            ]
        );
        assert!(counts(&[]).iter().all(|(_, n)| *n == 0.0));
    }
}
