//! The hub as a mesh node: a conduit shell without a device (no TUN, unprivileged) that
//! answers echo probes and serves update images to nodes over the encrypted mesh.
//!
//! Invariant: the shell's peer table is the hub's topology (every active node but the hub
//! itself), replaced on every topology change; the hub dials nodes that advertise an
//! endpoint and learns the others' from their handshakes (roaming), so nodes behind NAT
//! reach it by dialling the hub's advertised endpoint, or the hub URL's host on the UDP
//! port of the same number when it advertises none. Images leave only on the Bulk lane.
//!
//! A node whose UDP is blocked reaches the hub's node through the hub's data channel like
//! any other peer: the mesh node is attached to the hub's
//! [`DatagramRelay`](crate::hub::relay::DatagramRelay) in-process (no
//! gRPC stream), under the same rules and rate budget as a node's stream, and relays to a
//! node after [`DEFAULT_HUB_RELAY_AFTER`] without a direct answer, as nodes do.
//!
//! Tasks, all ending when the hub shuts down: the shell, the echo responder
//! (`ServicePort::ECHO`, Critical lane), the forge server (`ServicePort::FORGE`, see
//! [`serve`]), the topology follower, and the relay pump.

pub mod serve;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bauxite_conduit::identity::Identity;
use bauxite_conduit::io::service::DEFAULT_RECV_QUEUE;
use bauxite_conduit::io::{
    DeviceConfig, HubRelayPort, Query, ServiceSocket, Shell, ShellConfig, clock, echo,
};
use bauxite_conduit::node::{DEFAULT_HUB_RELAY_AFTER, NodeConfig};
use bauxite_conduit::peers::PeerRegistry;
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::{BauxiteNode, Metrics, VirtualIp};
use bauxite_dispatch_api::client::peers_from_snapshot;
use bauxite_dispatch_api::proto::node::CandidateKind;
use bauxite_forge::chunk::IndexDigest;
use bauxite_forge::fetch::{ServerCounters, TransferId};
use bauxite_forge::image::{FileImage, VirtualImage};
use tokio::sync::mpsc;

pub use self::serve::{ImageCommand, PackageSource};
use crate::clock::UnixTime;
use crate::hub::Hub;
use crate::hub::candidates::Candidate;
use crate::hub::relay::RelayDrop;
use crate::proto::node::RelayFrame;
use crate::store::{NodeRecord, PackageImage, PackageRecord};
use crate::updates::build::image_path;
use crate::{Error, Result};

/// The identity file of the hub's mesh node in the data dir.
pub const IDENTITY_FILE: &str = "mesh.identity";

/// Image commands waiting for the forge server.
const COMMAND_QUEUE: usize = 64;

/// Where the mesh node listens and what it advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// UDP address of the mesh node.
    pub listen: SocketAddr,
    /// The endpoint listed in topology (`None`: nodes dial the hub URL's host on the
    /// port of `listen`).
    pub advertise: Option<SocketAddr>,
}

/// A mesh node whose socket is bound, ready to [`run`](BoundMesh::run).
pub struct BoundMesh {
    shell: Shell,
    relay: HubRelayPort,
    echo: ServiceSocket,
    forge: ServiceSocket,
    commands: mpsc::Receiver<ImageCommand>,
    handle: MeshHandle,
}

/// What the rest of the hub uses of its mesh node (cheap to clone).
#[derive(Clone, Debug)]
pub struct MeshHandle {
    /// The node's record (virtual IP, keys, advertised endpoint).
    pub record: NodeRecord,
    /// The bound UDP address.
    pub local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    counters: Arc<Mutex<ServerCounters>>,
    commands: mpsc::Sender<ImageCommand>,
}

impl MeshHandle {
    /// The shell's counters (per lane, service datagrams, handshakes).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The forge server's counters.
    pub fn server_counters(&self) -> ServerCounters {
        *self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving a package's image.
    pub async fn add_image(&self, package: &PackageRecord, images_dir: &Path) -> Result<()> {
        let source = open_source(package, images_dir)?;
        self.send(ImageCommand::Add(transfer_id(package), source))
            .await
    }

    /// Stops serving a package's image.
    pub async fn remove_image(&self, package: &PackageRecord) -> Result<()> {
        self.send(ImageCommand::Remove(transfer_id(package))).await
    }

    async fn send(&self, command: ImageCommand) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Connect {
                addr: self.local_addr.to_string(),
                reason: "the hub's mesh node stopped".into(),
            })
    }
}

/// The transfer ID a package's image travels under (from its index digest).
pub fn transfer_id(package: &PackageRecord) -> TransferId {
    TransferId::from(IndexDigest(package.index_digest))
}

/// The chunk source of a package.
pub fn open_source(package: &PackageRecord, images_dir: &Path) -> Result<PackageSource> {
    Ok(match &package.image {
        PackageImage::File { file } => PackageSource::File(FileImage::open_expecting(
            &image_path(images_dir, file)?,
            package.length,
        )?),
        PackageImage::Virtual { size, seed } => {
            PackageSource::Virtual(VirtualImage::new(*seed, *size)?)
        }
    })
}

impl BoundMesh {
    /// Loads (or creates, 0600) `data_dir/mesh.identity`, registers the hub's node, binds
    /// the UDP socket and the service ports, and queues every unrevoked package's image.
    pub async fn bind(
        hub: &Hub,
        data_dir: &Path,
        config: MeshConfig,
        images_dir: &Path,
    ) -> Result<Self> {
        let path = data_dir.join(IDENTITY_FILE);
        let identity = Identity::load_or_generate(&path).map_err(|e| Error::Io {
            action: "load or create the mesh identity",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let endpoint = config.advertise.map(|a| a.to_string());
        let record = hub.register_hub_node(UnixTime::now(), &identity.public(), endpoint)?;
        let seed = clock::os_seed().map_err(Error::io("read OS randomness for", "mesh node"))?;
        let node = BauxiteNode::new(
            identity,
            PeerRegistry::new(),
            NodeConfig {
                hub_relay_after: Some(DEFAULT_HUB_RELAY_AFTER),
                ..NodeConfig::default()
            },
            seed,
            clock::now(),
            clock::unix_nanos(),
        );
        let shell_config = ShellConfig {
            listen: config.listen,
            device: DeviceConfig::None {
                virtual_ip: record.virtual_ip,
            },
        };
        let mut shell = Shell::bind(node, &shell_config)
            .await
            .map_err(|e| Error::Connect {
                addr: config.listen.to_string(),
                reason: format!("{e}; pass --mesh-listen with a free UDP address"),
            })?;
        let bind = |shell: &mut Shell, port: ServicePort| {
            shell
                .bind_service(port, DEFAULT_RECV_QUEUE)
                .map_err(|e| Error::InvalidArgument {
                    field: "service port",
                    problem: e.to_string(),
                })
        };
        // Nodes learn their server-reflexive address (their NAT's mapping) here.
        shell.serve_stun();
        let relay = shell.hub_relay();
        let echo = bind(&mut shell, ServicePort::ECHO)?;
        let forge = bind(&mut shell, ServicePort::FORGE)?;
        let local_addr = shell
            .local_addr()
            .map_err(Error::io("read address of", "mesh socket"))?;
        // A specific listen address is also where nodes can dial the hub (a wildcard one
        // says nothing: nodes then use the advertised endpoint or the hub URL's host).
        let candidates = if local_addr.ip().is_unspecified() {
            Vec::new()
        } else {
            vec![Candidate::new(local_addr, CandidateKind::Host)]
        };
        hub.set_candidates(record.id, candidates)?;
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let handle = MeshHandle {
            record,
            local_addr,
            metrics: shell.metrics(),
            counters: Arc::default(),
            commands: tx,
        };
        for package in hub.packages().iter().filter(|p| p.revoked_at.is_none()) {
            match open_source(package, images_dir) {
                Ok(source) => {
                    // The queue is empty and longer than any burst here; a full one
                    // only delays the image until the server runs.
                    let _ = handle
                        .commands
                        .try_send(ImageCommand::Add(transfer_id(package), source));
                }
                Err(error) => tracing::error!(
                    package = %package.name, version = %package.version, %error,
                    "cannot serve this package's image"
                ),
            }
        }
        Ok(Self {
            shell,
            relay,
            echo,
            forge,
            commands,
            handle,
        })
    }

    /// The handle other parts of the hub use.
    pub fn handle(&self) -> MeshHandle {
        self.handle.clone()
    }

    /// The node's virtual IP.
    pub fn virtual_ip(&self) -> VirtualIp {
        self.handle.record.virtual_ip
    }

    /// Spawns the shell and its services; they run until the hub shuts down.
    pub fn run(self, hub: Arc<Hub>) {
        let (queries, queries_rx) = mpsc::channel(16);
        let mut closing = hub.closing();
        let shutdown = async move {
            crate::server::feeds::stopping(&mut closing).await;
        };
        let me = self.handle.record.id;
        tokio::spawn(async move {
            if let Err(error) = self.shell.run(queries_rx, shutdown).await {
                tracing::error!(%error, "the hub's mesh node stopped");
            }
        });
        tokio::spawn(echo::serve(self.echo));
        tokio::spawn(serve::serve(
            self.forge,
            self.commands,
            self.handle.counters.clone(),
        ));
        tokio::spawn(pump_relay(Arc::clone(&hub), me, self.relay));
        tokio::spawn(follow_topology(hub, me, queries));
    }
}

/// The IO shell's clock for the relay's rate budget.
#[allow(clippy::disallowed_methods)] // The relay pump is an IO shell.
fn relay_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Moves datagrams between the mesh node's hub-relay port and the hub's relay, in both
/// directions, until the hub stops. Drops are counted as a node stream's are; a full
/// inbound port drops (a late datagram is worth nothing; the session retransmits).
async fn pump_relay(hub: Arc<Hub>, me: bauxite_conduit::PeerId, mut port: HubRelayPort) {
    let (stream, mut inbound) = hub.relays().attach(me, relay_now());
    let mut closing = hub.closing();
    loop {
        tokio::select! {
            out = port.outbound.recv() => {
                let Some((to, datagram)) = out else { break };
                let frame = RelayFrame { peer_id: to.0.to_vec(), datagram };
                let len = frame.datagram.len() as u64;
                let routed = hub.relays().route(relay_now(), me, stream, frame);
                count_routed(&hub, routed, len);
                if routed == Err(RelayDrop::SenderDetached) {
                    break;
                }
            }
            frame = inbound.recv() => {
                let Some(frame) = frame else { break };
                let Ok(from) = <[u8; 16]>::try_from(frame.peer_id.as_slice()) else { continue };
                let _ = port.inbound.try_send((bauxite_conduit::PeerId(from), frame.datagram));
            }
            () = crate::server::feeds::stopping(&mut closing) => break,
        }
    }
    hub.relays().detach(me, stream);
}

fn count_routed(hub: &Hub, routed: std::result::Result<(), RelayDrop>, len: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let metrics = hub.metrics();
    match routed {
        Ok(()) => {
            metrics.relay_frames.fetch_add(1, Relaxed);
            metrics.relay_bytes.fetch_add(len, Relaxed);
        }
        Err(_) => {
            metrics.relay_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Replaces the shell's peers with every other active node on each topology change.
async fn follow_topology(hub: Arc<Hub>, me: bauxite_conduit::PeerId, queries: mpsc::Sender<Query>) {
    let mut topology = hub.subscribe_topology();
    loop {
        let snapshot = topology.borrow_and_update().snapshot();
        match peers_from_snapshot(&snapshot, Some(me)) {
            Ok(peers) => {
                if queries.send(Query::ReplacePeers(peers)).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::error!(%error, "topology snapshot not usable by the mesh node"),
        }
        if topology.changed().await.is_err() {
            return;
        }
    }
}
