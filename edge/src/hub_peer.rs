//! The hub's own mesh node in topology (`Peer.hub`): where to dial it, and telling the
//! update agent its virtual IP.
//!
//! Rule: the hub's peer entry carries the UDP endpoint the hub advertises
//! (`--mesh-advertise`); when it is empty, the node dials the hub URL's host and port
//! over UDP (the hub's mesh socket listens on the gRPC port number by default), resolved
//! when the connector connects. Other peers are left as the hub described them.
//!
//! Invariant: only the entry flagged `hub: true` is touched, and only its missing
//! endpoint; a topology without a hub entry clears the agent's view of it.

use std::net::SocketAddr;

use bauxite_conduit::VirtualIp;
use bauxite_conduit::peers::PeerInfo;
use bauxite_dispatch_api::proto::node::TopologySnapshot;
use tokio::sync::watch;

/// The UDP address of the hub URL's host and port (`https://host:port`), resolved.
pub async fn hub_udp_addr(url: &str) -> Option<SocketAddr> {
    let addr = bauxite_dispatch_api::client::hub_addr(url).ok()?;
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(a);
    }
    tokio::net::lookup_host(addr.as_str()).await.ok()?.next()
}

/// Applies the rule to `peers` (converted from `snapshot`) and publishes the hub
/// node's virtual IP on `hub_peer`. Returns where the hub's mesh node is dialled (its
/// mesh port, which also answers STUN), if the topology has one.
pub fn apply(
    snapshot: &TopologySnapshot,
    peers: &mut [PeerInfo],
    hub_udp: Option<SocketAddr>,
    hub_peer: &watch::Sender<Option<VirtualIp>>,
) -> Option<SocketAddr> {
    let hub = snapshot
        .peers
        .iter()
        .find(|p| p.hub)
        .and_then(|p| p.virtual_ip.parse::<std::net::Ipv4Addr>().ok())
        .map(VirtualIp::from);
    if let Some(ip) = hub
        && let Some(entry) = peers.iter_mut().find(|p| p.virtual_ip == ip)
        && entry.endpoint.is_none()
    {
        entry.endpoint = hub_udp;
    }
    hub_peer.send_if_modified(|v| {
        let changed = *v != hub;
        *v = hub;
        changed
    });
    let ip = hub?;
    peers
        .iter()
        .find(|p| p.virtual_ip == ip)
        .and_then(|p| p.dial_order().first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_conduit::identity::Identity;
    use bauxite_dispatch_api::client::peers_from_snapshot;
    use bauxite_dispatch_api::proto::node::Peer;

    fn peer(seed: u8, ip: &str, endpoint: &str, hub: bool) -> Peer {
        let id = Identity::from_secrets([seed; 32], [seed + 1; 32]);
        let public = id.public();
        Peer {
            node_id: id.peer_id().to_string(),
            name: format!("n{seed}"),
            virtual_ip: ip.into(),
            x25519_public: public.static_public.to_vec(),
            ed25519_public: public.signing_public.to_vec(),
            endpoint: endpoint.into(),
            candidates: Vec::new(),
            hub,
            candidate_kinds: Vec::new(),
            ..Peer::default()
        }
    }

    #[tokio::test]
    async fn an_empty_hub_endpoint_is_the_hub_url_over_udp() {
        let udp = hub_udp_addr("https://127.0.0.1:7443").await;
        assert_eq!(udp, Some("127.0.0.1:7443".parse().unwrap()));
        assert_eq!(
            hub_udp_addr("https://localhost:7443")
                .await
                .map(|a| a.port()),
            Some(7443)
        );
        let snapshot = TopologySnapshot {
            version: 3,
            peers: vec![
                peer(1, "100.64.0.1", "", true),
                peer(3, "100.64.0.2", "", false),
            ],
            ..TopologySnapshot::default()
        };
        let mut peers = peers_from_snapshot(&snapshot, None).unwrap();
        let (tx, rx) = watch::channel(None);
        assert_eq!(
            apply(&snapshot, &mut peers, udp, &tx),
            udp,
            "the STUN server"
        );
        assert_eq!(peers[0].endpoint, udp);
        assert_eq!(peers[1].endpoint, None, "only the hub's entry is filled in");
        assert_eq!(
            *rx.borrow(),
            Some(VirtualIp::from(std::net::Ipv4Addr::new(100, 64, 0, 1)))
        );

        // An advertised endpoint is kept; no hub entry clears the agent's view.
        let advertised = TopologySnapshot {
            version: 4,
            peers: vec![peer(1, "100.64.0.1", "192.0.2.1:9000", true)],
            ..TopologySnapshot::default()
        };
        let mut peers = peers_from_snapshot(&advertised, None).unwrap();
        assert_eq!(
            apply(&advertised, &mut peers, udp, &tx),
            Some("192.0.2.1:9000".parse().unwrap())
        );
        assert_eq!(peers[0].endpoint, Some("192.0.2.1:9000".parse().unwrap()));
        let none = TopologySnapshot {
            version: 5,
            peers: vec![peer(3, "100.64.0.2", "", false)],
            ..TopologySnapshot::default()
        };
        let mut peers = peers_from_snapshot(&none, None).unwrap();
        assert_eq!(apply(&none, &mut peers, udp, &tx), None);
        assert_eq!(*rx.borrow(), None);
    }
}
