//! `HubClient`: an mTLS channel to the hub and typed access to its services.

use std::path::Path;

use bauxite_conduit::peers::PeerInfo;
use bauxite_conduit::{PeerId, VirtualIp};
use tonic::transport::Channel;

use super::channel::connect;
use super::join::NodeCredentials;
use super::tls::mtls_config;
use crate::pki::files;
use crate::proto::admin::admin_service_client::AdminServiceClient;
use crate::proto::node::metrics_service_client::MetricsServiceClient;
use crate::proto::node::policy_service_client::PolicyServiceClient;
use crate::proto::node::provisioning_service_client::ProvisioningServiceClient;
use crate::proto::node::relay_service_client::RelayServiceClient;
use crate::proto::node::signaling_service_client::SignalingServiceClient;
use crate::proto::node::topology_service_client::TopologyServiceClient;
use crate::proto::node::update_service_client::UpdateServiceClient;
use crate::proto::node::{Peer, TopologySnapshot};
use crate::{Error, Result};

/// An authenticated connection to the hub (cheap to clone; one HTTP/2 connection).
#[derive(Clone, Debug)]
pub struct HubClient {
    channel: Channel,
}

impl HubClient {
    /// Connects with a node's (or the admin's) credentials.
    pub async fn connect_mtls(hub: &str, credentials: &NodeCredentials) -> Result<Self> {
        let tls = mtls_config(
            &credentials.ca_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )?;
        Ok(Self {
            channel: connect(hub, tls).await?,
        })
    }

    /// Connects as the operator with `data_dir/admin.{crt,key}`, to `hub` (`host:port` or
    /// `https://host:port`) or, when `None`, to the address the running hub wrote to
    /// `data_dir/hub.addr`.
    pub async fn connect_admin(data_dir: &Path, hub: Option<&str>) -> Result<Self> {
        let addr = match hub {
            Some(hub) => hub.trim().to_owned(),
            None => files::read_text(&data_dir.join("hub.addr"))
                .map_err(|_| Error::Connect {
                    addr: data_dir.join("hub.addr").display().to_string(),
                    reason: "no hub.addr: is `bauxite-dispatch serve` running on this data dir? (or pass --hub)".into(),
                })?
                .trim()
                .to_owned(),
        };
        let credentials = NodeCredentials {
            ca_pem: files::read_text(&data_dir.join("ca.crt"))?,
            cert_pem: files::read_text(&data_dir.join("admin.crt"))?,
            key_pem: zeroize::Zeroizing::new(files::read_secret(&data_dir.join("admin.key"))?),
        };
        // `hub.addr` and `--hub` name an address, not a URL; the channel takes URLs.
        let url = if addr.contains("://") {
            addr
        } else {
            format!("https://{addr}")
        };
        Self::connect_mtls(&url, &credentials).await
    }

    /// The underlying channel.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Provisioning (`ConfirmProvision` over mutual TLS).
    pub fn provisioning(&self) -> ProvisioningServiceClient<Channel> {
        ProvisioningServiceClient::new(self.channel.clone())
    }

    /// Topology feed and endpoint updates.
    pub fn topology(&self) -> TopologyServiceClient<Channel> {
        TopologyServiceClient::new(self.channel.clone())
    }

    /// Policy document and feed.
    pub fn policy(&self) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(self.channel.clone())
    }

    /// Metric reports.
    pub fn metrics(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.channel.clone())
    }

    /// Signaling relay (`ExchangeCandidates`).
    pub fn signaling(&self) -> SignalingServiceClient<Channel> {
        SignalingServiceClient::new(self.channel.clone())
    }

    /// The data channel (`Relay`): mesh datagrams through the hub when UDP is blocked.
    pub fn relay(&self) -> RelayServiceClient<Channel> {
        RelayServiceClient::new(self.channel.clone())
    }

    /// Updates: TUF metadata and chunk indexes, the node's assignment feed, its reports.
    pub fn updates(&self) -> UpdateServiceClient<Channel> {
        UpdateServiceClient::new(self.channel.clone())
    }

    /// Admin commands (admin certificate only).
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }
}

fn key(bytes: &[u8], field: &'static str) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| Error::InvalidArgument {
        field,
        problem: format!("{} bytes, expected 32", bytes.len()),
    })
}

/// Converts one topology peer for conduit's `PeerRegistry`, checking that its ID derives
/// from its Ed25519 key (so the hub cannot pair one node's ID with another's key). Its
/// `candidates` become [`PeerInfo::candidates`], tried after `endpoint`.
pub fn peer_info(peer: &Peer) -> Result<PeerInfo> {
    let ip: std::net::Ipv4Addr = peer
        .virtual_ip
        .parse()
        .map_err(|_| Error::InvalidArgument {
            field: "virtual_ip",
            problem: format!("{:?} is not IPv4", peer.virtual_ip),
        })?;
    let endpoint = match peer.endpoint.as_str() {
        "" => None,
        text => Some(text.parse().map_err(|_| Error::InvalidArgument {
            field: "endpoint",
            problem: format!("{text:?} is not ip:port"),
        })?),
    };
    // A candidate that does not parse is skipped, not fatal: the others may work, and a
    // whole topology refused over one address would cost more than it protects.
    let candidates = peer
        .candidates
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    // Kinds pair with `candidates` by position (before junk is skipped); an unknown or
    // missing kind leaves the address unlabelled.
    let kinds = peer
        .candidates
        .iter()
        .zip(&peer.candidate_kinds)
        .filter_map(|(c, k)| Some((c.parse().ok()?, candidate_kind(*k)?)))
        .collect();
    let info = PeerInfo::new(
        peer.name.clone(),
        VirtualIp::from(ip),
        key(&peer.x25519_public, "x25519_public")?,
        key(&peer.ed25519_public, "ed25519_public")?,
        endpoint,
    )
    .with_candidates(candidates)
    .with_candidate_kinds(kinds);
    if PeerId::from_hex(&peer.node_id) != Some(info.id) {
        return Err(Error::InvalidArgument {
            field: "node_id",
            problem: format!("{} does not derive from its ed25519 key", peer.node_id),
        });
    }
    Ok(info)
}

/// The data plane's name for a `CandidateKind` number; `None` for unspecified or unknown.
fn candidate_kind(kind: i32) -> Option<bauxite_conduit::peers::CandidateKind> {
    use bauxite_conduit::peers::CandidateKind as Kind;
    match crate::proto::node::CandidateKind::try_from(kind).ok()? {
        crate::proto::node::CandidateKind::Host => Some(Kind::Host),
        crate::proto::node::CandidateKind::ServerReflexive => Some(Kind::ServerReflexive),
        crate::proto::node::CandidateKind::Observed => Some(Kind::Observed),
        crate::proto::node::CandidateKind::Relay => Some(Kind::Relay),
        crate::proto::node::CandidateKind::Unspecified => None,
    }
}

/// Converts a snapshot, skipping `me` (a node does not peer with itself).
pub fn peers_from_snapshot(
    snapshot: &TopologySnapshot,
    me: Option<PeerId>,
) -> Result<Vec<PeerInfo>> {
    let mut out = Vec::with_capacity(snapshot.peers.len());
    for peer in &snapshot.peers {
        let info = peer_info(peer)?;
        if Some(info.id) != me {
            out.push(info);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_conduit::identity::Identity;

    #[test]
    fn candidates_follow_the_endpoint_and_bad_ones_are_skipped() {
        let public = Identity::from_secrets([1; 32], [2; 32]).public();
        let peer = Peer {
            node_id: PeerId::from_signing_public(&public.signing_public).to_string(),
            name: "a".into(),
            virtual_ip: "100.64.0.1".into(),
            x25519_public: public.static_public.to_vec(),
            ed25519_public: public.signing_public.to_vec(),
            endpoint: String::new(),
            candidates: vec![
                "10.0.0.1:51820".into(),
                "junk".into(),
                "10.0.0.2:51820".into(),
            ],
            hub: false,
            candidate_kinds: Vec::new(),
            ..Peer::default()
        };
        let info = peer_info(&peer).unwrap();
        assert_eq!(info.endpoint, None);
        assert_eq!(
            info.dial_order(),
            vec![
                "10.0.0.1:51820".parse().unwrap(),
                "10.0.0.2:51820".parse().unwrap()
            ]
        );
        let with_endpoint = Peer {
            endpoint: "203.0.113.1:51820".into(),
            ..peer
        };
        let info = peer_info(&with_endpoint).unwrap();
        assert_eq!(info.dial_order()[0], "203.0.113.1:51820".parse().unwrap());
        assert_eq!(info.dial_order().len(), 3);
        assert_eq!(info.candidate_kinds, [], "an older hub labels nothing");

        // Kinds pair with candidates by position, junk and unspecified ones unlabelled.
        use crate::proto::node::CandidateKind as K;
        let labelled = Peer {
            candidate_kinds: vec![
                K::ServerReflexive as i32,
                K::Host as i32,
                K::Unspecified as i32,
            ],
            ..with_endpoint
        };
        let info = peer_info(&labelled).unwrap();
        assert_eq!(
            info.candidate_kinds,
            [(
                "10.0.0.1:51820".parse().unwrap(),
                bauxite_conduit::peers::CandidateKind::ServerReflexive
            )]
        );
    }
}
