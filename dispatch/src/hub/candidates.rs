//! Where other nodes can dial a node: its server-reflexive addresses (learned from the
//! hub's STUN answers on the mesh port), the address the hub saw it at and the addresses
//! the node reported, kept in memory and published in the topology as `Peer.candidates`
//! with their kinds in `Peer.candidate_kinds`.
//!
//! Invariant: a published candidate is a unicast `ip:port` with a non-zero port, never
//! the node's advertised endpoint again (that one is `Peer.endpoint`), with no repeats and
//! at most [`MAX_CANDIDATES`] per node. Candidates are observations, not operator changes:
//! they live in memory (nodes report them again on every connection, so a restarted hub
//! has them as soon as the nodes are back), are not audited, and a change bumps the
//! topology version (stored, so versions only grow). A store shared by replicas also
//! keeps them (`Change::observed`), so a node's peers on other replicas see them.

use std::net::{IpAddr, SocketAddr};

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::proto::node::CandidateKind;

use super::Hub;
use crate::store::Change;
use crate::{Error, Result};

/// Most candidate addresses kept per node; more reported ones are ignored.
pub const MAX_CANDIDATES: usize = 8;

/// One published address and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The UDP address.
    pub addr: SocketAddr,
    /// Where it comes from.
    pub kind: CandidateKind,
}

impl Candidate {
    /// A candidate of `kind` at `addr`.
    pub fn new(addr: SocketAddr, kind: CandidateKind) -> Self {
        Self { addr, kind }
    }
}

/// Whether another node could send to `addr` at all.
fn dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != IpAddr::from([255, 255, 255, 255])
}

/// The candidates of a node, best first: the server-reflexive addresses it learned over
/// STUN (its NAT's mapping, verified on the UDP path), `observed` (the IP its gRPC
/// connection came from) with `listen_port` (0: do not pair; a guess that is right when
/// the NAT keeps the port), the TURN-relayed `relay` addresses, then `local` as
/// reported. Unparsable or undialable reported
/// addresses are refused with the offending text.
pub fn candidate_list(
    observed: Option<IpAddr>,
    listen_port: u32,
    reflexive: &[String],
    local: &[String],
    relay: &[String],
) -> Result<Vec<Candidate>> {
    let port = u16::try_from(listen_port).map_err(|_| Error::InvalidArgument {
        field: "listen_port",
        problem: format!("{listen_port} is not a UDP port"),
    })?;
    let observed = observed
        .filter(|_| port != 0)
        .map(|ip| SocketAddr::new(ip.to_canonical(), port))
        .filter(dialable);
    let reflexive = parse_all("reflexive_addresses", reflexive)?;
    let local = parse_all("local_addresses", local)?;
    let relay = parse_all("relay_addresses", relay)?;
    let mut out: Vec<Candidate> = Vec::new();
    let all = reflexive
        .into_iter()
        .map(|a| Candidate::new(a, CandidateKind::ServerReflexive))
        .chain(observed.map(|a| Candidate::new(a, CandidateKind::Observed)))
        // Before the host addresses, so the cap never cuts the TURN path off; nodes do
        // not dial it directly whatever its place.
        .chain(
            relay
                .into_iter()
                .map(|a| Candidate::new(a, CandidateKind::Relay)),
        )
        .chain(
            local
                .into_iter()
                .map(|a| Candidate::new(a, CandidateKind::Host)),
        );
    for candidate in all {
        if !out.iter().any(|c| c.addr == candidate.addr) && out.len() < MAX_CANDIDATES {
            out.push(candidate);
        }
    }
    Ok(out)
}

/// Parses reported addresses, refusing the first unparsable or undialable one.
fn parse_all(field: &'static str, texts: &[String]) -> Result<Vec<SocketAddr>> {
    texts
        .iter()
        .map(|text| {
            let addr: SocketAddr = text.parse().map_err(|_| Error::InvalidArgument {
                field,
                problem: format!("{text:?} is not ip:port"),
            })?;
            if !dialable(&addr) {
                return Err(Error::InvalidArgument {
                    field,
                    problem: format!("{addr} cannot be dialled (unspecified, multicast or port 0)"),
                });
            }
            Ok(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
        })
        .collect()
}

impl Hub {
    /// Records where `node` can be dialled besides its advertised endpoint; returns the
    /// topology version and everything other nodes will try for it (endpoint first).
    pub fn set_candidates(
        &self,
        node: PeerId,
        candidates: Vec<Candidate>,
    ) -> Result<(u64, Vec<SocketAddr>)> {
        let mut state = self.write()?;
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
            .chain(
                candidates
                    .iter()
                    .map(|c| c.addr)
                    .filter(|c| Some(*c) != endpoint),
            )
            .collect();
        if state.candidates.get(&node) == Some(&candidates) {
            return Ok((state.topology_version, published));
        }
        let version = state.topology_version + 1;
        let mut observed = state.observed(node);
        observed.candidates = candidates
            .iter()
            .map(|c| (c.addr, i32::from(c.kind)))
            .collect();
        self.store.commit(&Change {
            topology_version: Some(version),
            observed: vec![(node, observed)],
            ..Change::default()
        })?;
        state.touched.insert(node);
        state.candidates.insert(node, candidates);
        state.topology_version = version;
        self.publish_topology(&mut state);
        Ok((version, published))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    fn addrs(list: &[Candidate]) -> Vec<String> {
        list.iter().map(|c| c.addr.to_string()).collect()
    }

    #[test]
    fn reflexive_first_then_observed_then_reported_without_repeats() {
        let list = candidate_list(
            ip("::ffff:10.0.0.7"),
            51820,
            &[],
            &["10.0.0.7:51820".into(), "192.168.1.7:51820".into()],
            &[],
        )
        .unwrap();
        assert_eq!(
            addrs(&list),
            ["10.0.0.7:51820", "192.168.1.7:51820"],
            "the IPv4-mapped observed address is the reported one"
        );
        assert_eq!(list[0].kind, CandidateKind::Observed);
        assert_eq!(list[1].kind, CandidateKind::Host);
        // Behind a NAT that changes the port, STUN's answer comes first; the observed
        // guess stays as a fallback.
        let list = candidate_list(
            ip("198.18.0.2"),
            51820,
            &["198.18.0.2:30007".into()],
            &["10.1.0.2:51820".into()],
            &["203.0.113.1:49160".into()],
        )
        .unwrap();
        assert_eq!(
            addrs(&list),
            [
                "198.18.0.2:30007",
                "198.18.0.2:51820",
                "203.0.113.1:49160",
                "10.1.0.2:51820"
            ]
        );
        let kinds: Vec<_> = list.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                CandidateKind::ServerReflexive,
                CandidateKind::Observed,
                CandidateKind::Relay,
                CandidateKind::Host
            ]
        );
        // A NAT that keeps the port: the observed guess is the reflexive address, once.
        let list = candidate_list(
            ip("198.18.0.2"),
            51820,
            &["198.18.0.2:51820".into()],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            list,
            [Candidate::new(
                "198.18.0.2:51820".parse().unwrap(),
                CandidateKind::ServerReflexive
            )]
        );
        // Port 0: the node's socket cannot be reached at the observed address.
        let list = candidate_list(ip("10.0.0.7"), 0, &[], &[], &[]).unwrap();
        assert!(list.is_empty());
        let many: Vec<String> = (1..=20).map(|i| format!("10.1.0.{i}:1")).collect();
        assert_eq!(
            candidate_list(None, 0, &[], &many, &[]).unwrap().len(),
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
            let e = candidate_list(None, 1, &[], &[bad.into()], &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("local_addresses"), "{bad}: {e}");
            let e = candidate_list(None, 1, &[bad.into()], &[], &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("reflexive_addresses"), "{bad}: {e}");
            let e = candidate_list(None, 1, &[], &[], &[bad.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("relay_addresses"), "{bad}: {e}");
        }
        assert!(candidate_list(None, 70_000, &[], &[], &[]).is_err());
    }
}
