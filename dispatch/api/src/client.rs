//! The client library the edge binary uses: `join` once, then `HubClient` over mTLS.
//!
//! ```no_run
//! # async fn demo(token: &str, identity: &bauxite_conduit::identity::Identity) -> bauxite_dispatch_api::Result<()> {
//! use bauxite_dispatch_api::client::{HubClient, join, peers_from_snapshot};
//! let token = bauxite_dispatch_api::token::JoinToken::parse(token)?;
//! let joined = join(&token, "https://hub.example:7443", identity, "robot-7").await?;
//! joined.credentials.save(std::path::Path::new("/var/lib/bauxite/certs"))?;
//! bauxite_dispatch_api::client::confirm("https://hub.example:7443", &joined.credentials).await?;
//! let hub = HubClient::connect_mtls("https://hub.example:7443", &joined.credentials).await?;
//! let mut feed = hub.topology().stream_topology(bauxite_dispatch_api::proto::node::TopologyRequest::default()).await?.into_inner();
//! while let Some(snapshot) = feed.message().await? {
//!     let peers = peers_from_snapshot(&snapshot, Some(joined.node_id))?; // -> PeerRegistry::replace_all
//! #   let _ = peers;
//! }
//! # Ok(()) }
//! ```

mod channel;
mod hub_client;
mod join;
mod renew;
pub mod tls;

pub use channel::{CONNECT_TIMEOUT, connect, hub_addr};
pub use hub_client::{HubClient, peer_info, peers_from_snapshot};
pub use join::{JoinResult, NodeCredentials, confirm, join};
pub use renew::renew;
