//! Where other nodes can dial a node: the address the hub saw it at and the addresses the
//! node reported, kept in memory and published in the topology as `Peer.candidates`.
//!
//! Invariant: a published candidate is a unicast `ip:port` with a non-zero port, never
//! the node's advertised endpoint again (that one is `Peer.endpoint`), with no repeats and
//! at most [`MAX_CANDIDATES`] per node. Candidates are observations, not operator changes:
//! they live in memory (nodes report them again on every connection, so a restarted hub
//! has them as soon as the nodes are back), are not audited, and a change bumps the
//! topology version (stored, so versions only grow).

use std::net::{IpAddr, SocketAddr};

use bauxite_conduit::PeerId;

use super::{Hub, lock, snapshot};
use crate::store::Change;
use crate::{Error, Result};

/// Most candidate addresses kept per node; more reported ones are ignored.
pub const MAX_CANDIDATES: usize = 8;

/// Whether another node could send to `addr` at all.
fn dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != IpAddr::from([255, 255, 255, 255])
}

/// The candidates of a node, best first: `observed` (the IP its gRPC connection came from)
/// with `listen_port` (0: do not pair), then `local` as reported. Unparsable or
/// undialable reported addresses are refused with the offending text.
pub fn candidate_list(
    observed: Option<IpAddr>,
    listen_port: u32,
    local: &[String],
) -> Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let port = u16::try_from(listen_port).map_err(|_| Error::InvalidArgument {
        field: "listen_port",
        problem: format!("{listen_port} is not a UDP port"),
    })?;
    let observed = observed
        .filter(|_| port != 0)
        .map(|ip| SocketAddr::new(ip.to_canonical(), port));
    for text in local {
        let addr: SocketAddr = text.parse().map_err(|_| Error::InvalidArgument {
            field: "local_addresses",
            problem: format!("{text:?} is not ip:port"),
        })?;
        if !dialable(&addr) {
            return Err(Error::InvalidArgument {
                field: "local_addresses",
                problem: format!("{addr} cannot be dialled (unspecified, multicast or port 0)"),
            });
        }
    }
    let reported = local.iter().filter_map(|t| t.parse::<SocketAddr>().ok());
    for addr in observed.into_iter().filter(dialable).chain(reported) {
        if !out.contains(&addr) && out.len() < MAX_CANDIDATES {
            out.push(addr);
        }
    }
    Ok(out)
}

impl Hub {
    /// Records where `node` can be dialled besides its advertised endpoint; returns the
    /// topology version and everything other nodes will try for it (endpoint first).
    pub fn set_candidates(
        &self,
        node: PeerId,
        candidates: Vec<SocketAddr>,
    ) -> Result<(u64, Vec<SocketAddr>)> {
        let mut state = lock(&self.state);
        let record = state
            .nodes
            .get(&node)
            .ok_or_else(|| Error::UnknownNode(node.to_string()))?;
        let endpoint = record
            .endpoint
            .as_deref()
            .and_then(|e| e.parse::<SocketAddr>().ok());
        let published: Vec<SocketAddr> = endpoint
            .into_iter()
            .chain(candidates.iter().copied().filter(|c| Some(*c) != endpoint))
            .collect();
        if state.candidates.get(&node) == Some(&candidates) {
            return Ok((state.topology_version, published));
        }
        let version = state.topology_version + 1;
        self.store.commit(&Change {
            topology_version: Some(version),
            ..Change::default()
        })?;
        state.candidates.insert(node, candidates);
        state.topology_version = version;
        self.topology
            .send_replace(std::sync::Arc::new(snapshot(&state)));
        Ok((version, published))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn observed_first_then_reported_without_repeats() {
        let list = candidate_list(
            ip("::ffff:10.0.0.7"),
            51820,
            &["10.0.0.7:51820".into(), "192.168.1.7:51820".into()],
        )
        .unwrap();
        assert_eq!(
            list,
            [
                "10.0.0.7:51820".parse().unwrap(),
                "192.168.1.7:51820".parse().unwrap()
            ],
            "the IPv4-mapped observed address is the reported one"
        );
        // Port 0: the node's socket cannot be reached at the observed address.
        let list = candidate_list(ip("10.0.0.7"), 0, &[]).unwrap();
        assert!(list.is_empty());
        let many: Vec<String> = (1..=20).map(|i| format!("10.1.0.{i}:1")).collect();
        assert_eq!(
            candidate_list(None, 0, &many).unwrap().len(),
            MAX_CANDIDATES
        );
    }

    #[test]
    fn undialable_or_malformed_reports_are_refused() {
        for bad in [
            "0.0.0.0:51820",
            "10.0.0.1:0",
            "224.0.0.1:5",
            "nope",
            "10.0.0.1",
        ] {
            let e = candidate_list(None, 1, &[bad.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("local_addresses"), "{bad}: {e}");
        }
        assert!(candidate_list(None, 70_000, &[]).is_err());
    }
}
