//! The hub process: data dir, CA, store, gRPC over TLS, metrics endpoint.
//!
//! Data dir layout (created 0700 on first start):
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` (0600) | the hub CA; its fingerprint is in every join token |
//! | `admin.crt`, `admin.key` (0600) | the operator's client certificate for admin commands |
//! | `hub.db` | redb database: tokens, nodes, policy, audit log (not with `--postgres`) |
//! | `mesh.cidr` | the mesh CIDR chosen on first start |
//! | `admin-ui.passwd` (0600) | the admin web UI's argon2 password hash (`admin-password set`) |
//! | `hub.addr` | the address the running hub listens on (for admin commands) |
//! | `mesh.identity` (0600) | the hub's own mesh node identity (conduit `Identity`) |
//! | `updates/` | the update repository, its online keys and package images ([`crate::updates`]) |
//!
//! The server certificate and its key are issued afresh at every start and kept in memory.

pub mod admin;
pub(crate) mod auth;
pub mod feeds;
pub mod hosting;
pub mod metrics_http;
pub mod provisioning;
pub mod relay;
pub mod tls;
pub mod updates;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::clock::{UnixTime, os_random};
use crate::hub::Hub;
use crate::ipam::MeshCidr;
use crate::mesh::{BoundMesh, MeshConfig};
use crate::pki::{HubCa, files};
use crate::proto::admin::admin_service_server::AdminServiceServer;
use crate::proto::node::metrics_service_server::MetricsServiceServer;
use crate::proto::node::policy_service_server::PolicyServiceServer;
use crate::proto::node::provisioning_service_server::ProvisioningServiceServer;
use crate::proto::node::relay_service_server::RelayServiceServer;
use crate::proto::node::signaling_service_server::SignalingServiceServer;
use crate::proto::node::topology_service_server::TopologyServiceServer;
use crate::proto::node::update_service_server::UpdateServiceServer;
use crate::store::{PgStore, RedbStore, Store};
use crate::updates::{KeySeeds, Opened, RootKeyOut, UpdateRepo};
use crate::{Error, Result};

/// Largest gRPC message the hub decodes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How long a stopping hub waits for open connections after it ended every stream; then
/// it closes them. Streams end at once, so this only bounds a client that keeps a
/// finished connection open.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How to run the hub.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the CA, database and admin credentials live.
    pub data_dir: PathBuf,
    /// Mesh CIDR; `None` keeps the stored one (or the default on first start).
    pub mesh_cidr: Option<MeshCidr>,
    /// Prometheus endpoint address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a new registration has to be confirmed
    /// ([`DEFAULT_CONFIRM_WINDOW_SECS`](crate::hub::DEFAULT_CONFIRM_WINDOW_SECS)).
    pub confirm_window_secs: u64,
    /// Lifetime of issued node certificates in seconds
    /// ([`LEAF_LIFETIME_SECS`](crate::pki::ca::LEAF_LIFETIME_SECS) by default); nodes renew
    /// theirs when a third of it is left, or 7 days, whichever comes first.
    pub node_cert_validity_secs: u64,
    /// UDP address of the hub's mesh node; `None`: the gRPC listener's IP and port.
    pub mesh_listen: Option<SocketAddr>,
    /// The mesh endpoint topology lists for the hub; `None` lists none, and nodes dial the
    /// hub URL's host on the mesh port (equal to the gRPC port by default).
    pub mesh_advertise: Option<SocketAddr>,
    /// Where the update root key goes on first start; `None`: `updates/root.key`.
    pub root_key_out: Option<PathBuf>,
    /// The admin web UI's address (loopback only); `None`: no UI.
    pub admin_ui_listen: Option<SocketAddr>,
    /// TURN servers whose time-limited credentials nodes get; `None`: no TURN.
    pub turn: Option<crate::turn::TurnConfig>,
    /// A PostgreSQL URL: keep the state there, shared with other replicas, instead of in
    /// `hub.db` ([`crate::store::PgStore`]).
    pub postgres: Option<String>,
    /// With `postgres`: the URL nodes reach this replica at, recorded as the relay
    /// presence of its nodes (docs/hub.md, "The relay across replicas"); `None`:
    /// `https://` and the gRPC listen address, unless that is unspecified (0.0.0.0), in
    /// which case nothing is recorded and relay-only nodes meet only on one replica.
    pub replica_url: Option<String>,
}

impl ServeConfig {
    /// A hub on `listen` with its data in `data_dir`, everything else by default.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            mesh_cidr: None,
            metrics_listen: None,
            confirm_window_secs: crate::hub::DEFAULT_CONFIRM_WINDOW_SECS,
            node_cert_validity_secs: crate::pki::ca::LEAF_LIFETIME_SECS,
            mesh_listen: None,
            mesh_advertise: None,
            root_key_out: None,
            admin_ui_listen: None,
            turn: None,
            postgres: None,
            replica_url: None,
        }
    }
}

/// A hub whose sockets are bound, ready to [`run`](BoundHub::run).
pub struct BoundHub {
    hub: Arc<Hub>,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    admin_ui: Option<(TcpListener, Arc<crate::admin_ui::AdminUi>)>,
    tls: rustls::ServerConfig,
    data_dir: PathBuf,
    mesh: BoundMesh,
    hosting: hosting::Hosting,
    turn: Option<Arc<crate::turn::TurnConfig>>,
    /// Follows the other replicas' commits (PostgreSQL only); stops when dropped.
    replicas: Option<crate::store::postgres::listen::Listener>,
}

fn key_seeds() -> Result<KeySeeds> {
    let mut seeds = [[0u8; 32]; 4];
    for seed in &mut seeds {
        os_random(seed)?;
    }
    Ok(seeds)
}

/// Opens (or creates) the update repository and says where the root key is.
fn update_repo(dir: &Path, now: UnixTime, root_key_out: Option<&Path>) -> Result<UpdateRepo> {
    let out = match root_key_out {
        Some(path) => RootKeyOut::File(path.to_path_buf()),
        None => RootKeyOut::DataDir,
    };
    let (repo, opened) = UpdateRepo::open_or_create(dir, now, &out, key_seeds)?;
    match opened {
        Opened::Created { root_key } => tracing::info!(
            root_key = %root_key.display(),
            "update repository created; its root key was written once and is not kept by the hub"
        ),
        Opened::Existing if root_key_out.is_some() => tracing::warn!(
            "--root-key-out is only used when the update repository is created; ignored"
        ),
        Opened::Existing => {}
    }
    if let Some(path) = repo.root_key_on_hub() {
        tracing::warn!(
            path = %path.display(),
            "the update root key is on the hub: move it to offline storage (the hub never needs it; `package keys sign-root` uses it elsewhere)"
        );
    }
    Ok(repo)
}

fn mesh_cidr(dir: &Path, wanted: Option<MeshCidr>) -> Result<MeshCidr> {
    let path = dir.join("mesh.cidr");
    if path.exists() {
        let stored: MeshCidr = files::read_text(&path)?.trim().parse()?;
        if let Some(wanted) = wanted.filter(|w| *w != stored) {
            return Err(Error::InvalidArgument {
                field: "mesh CIDR",
                problem: format!(
                    "this hub was created with {stored}; nodes hold addresses from it. Drop --mesh-cidr {wanted} or use a new data dir"
                ),
            });
        }
        return Ok(stored);
    }
    let cidr = wanted.unwrap_or_default();
    files::write_atomic(&path, format!("{cidr}\n").as_bytes(), 0o644)?;
    Ok(cidr)
}

impl BoundHub {
    /// Opens (or initialises) the data dir and binds the listeners.
    pub async fn bind(config: &ServeConfig) -> Result<Self> {
        let now = UnixTime::now();
        let dir = &config.data_dir;
        files::create_private_dir(dir)?;
        let ca = HubCa::load_or_create(dir, now)?;
        if !dir.join("admin.crt").exists() {
            let admin = ca.issue_admin(now)?;
            if let Some(key) = &admin.key_pem {
                files::write_secret(&dir.join("admin.key"), key.as_bytes())?;
            }
            files::write_atomic(&dir.join("admin.crt"), admin.cert_pem.as_bytes(), 0o644)?;
        }
        let tls = tls::server_config(&ca, &ca.issue_server(now)?)?;
        let cidr = mesh_cidr(dir, config.mesh_cidr)?;
        let store: Box<dyn Store> = match &config.postgres {
            Some(url) => Box::new(PgStore::open(url)?),
            None => Box::new(RedbStore::open(&dir.join("hub.db"))?),
        };
        let hub = Arc::new(
            Hub::open(store, ca, cidr, now)?
                .with_confirm_window(config.confirm_window_secs)
                .with_node_cert_validity(config.node_cert_validity_secs),
        );
        let replicas = match &config.postgres {
            Some(url) => {
                let follower = hub.clone();
                let signals = hub.clone();
                Some(
                    crate::store::postgres::listen::Listener::start_with_signals(
                        url,
                        move || follower.sync().map(drop),
                        move |to| signals.take_forwarded(to),
                    )?,
                )
            }
            None => None,
        };
        // Registrations that expired while the hub was down go first.
        for node in hub.expire_pending(now)? {
            tracing::info!(%node, "registration expired unconfirmed; address freed");
        }
        match hub.verify_audit()? {
            (_, Err(problem)) => {
                tracing::error!(%problem, "audit log verification failed; run `bauxite-dispatch audit verify`")
            }
            (entries, Ok(_)) => tracing::info!(entries, "audit log verified"),
        }
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(Error::io("listen on", config.listen.to_string()))?;
        let grpc_addr = grpc
            .local_addr()
            .map_err(Error::io("read address of", "gRPC listener"))?;
        if config.postgres.is_some() {
            match replica_url(config.replica_url.as_deref(), grpc_addr) {
                Some(url) => {
                    tracing::info!(%url, "relay presence recorded under this replica URL");
                    hub.set_replica_url(url);
                }
                None => tracing::warn!(
                    "listening on an unspecified address without --replica-url: relay-only nodes on other replicas cannot meet this replica's nodes"
                ),
            }
        }
        let repo = Arc::new(update_repo(dir, now, config.root_key_out.as_deref())?);
        hosting::reconcile(&hub, &repo)?;
        let mesh_config = MeshConfig {
            listen: config.mesh_listen.unwrap_or(grpc_addr),
            advertise: config.mesh_advertise,
        };
        let mesh = BoundMesh::bind(&hub, dir, mesh_config, &repo.images_dir()).await?;
        let hosting = hosting::Hosting {
            hub: hub.clone(),
            repo,
            mesh: mesh.handle(),
            building: Arc::default(),
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(Error::io("listen on", addr.to_string()))?,
            ),
            None => None,
        };
        let admin_ui = match config.admin_ui_listen {
            Some(addr) => {
                // A missing password stops the start: a UI nobody can log in to is a mistake.
                let phc = crate::admin_ui::password::load(dir)?;
                let ui = Arc::new(crate::admin_ui::AdminUi::new(hub.clone(), &phc)?);
                Some((crate::admin_ui::bind(addr).await?, ui))
            }
            None => None,
        };
        // Written before anyone is told the hub is up, so admin commands can always find it.
        let addr = grpc
            .local_addr()
            .map_err(Error::io("read address of", "gRPC listener"))?;
        files::write_atomic(&dir.join("hub.addr"), format!("{addr}\n").as_bytes(), 0o644)?;
        Ok(Self {
            hub,
            grpc,
            metrics,
            admin_ui,
            tls,
            data_dir: dir.clone(),
            mesh,
            hosting,
            turn: config.turn.clone().map(Arc::new),
            replicas,
        })
    }

    /// The gRPC address actually bound.
    pub fn addr(&self) -> Result<SocketAddr> {
        self.grpc
            .local_addr()
            .map_err(Error::io("read address of", "gRPC listener"))
    }

    /// The metrics address actually bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The admin web UI's address actually bound, if it is on.
    pub fn admin_ui_addr(&self) -> Option<SocketAddr> {
        self.admin_ui
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    /// The hub.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// The hub's mesh node: its record (virtual IP) and bound UDP address.
    pub fn mesh(&self) -> crate::mesh::MeshHandle {
        self.mesh.handle()
    }

    /// The update repository.
    pub fn updates(&self) -> Arc<UpdateRepo> {
        self.hosting.repo.clone()
    }

    /// Serves until `shutdown` completes, then stops: no new connections, every open
    /// stream ended ([`Hub::begin_shutdown`]), connections closed after at most
    /// [`SHUTDOWN_GRACE`]; finally removes `hub.addr` (written by [`bind`](Self::bind)).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let addr = self.addr()?;
        let addr_file = self.data_dir.join("hub.addr");
        // Other replicas' changes keep reaching this one's nodes until it has stopped.
        let _replicas = self.replicas;
        if let Some(listener) = self.metrics {
            tokio::spawn(metrics_http::serve(
                listener,
                self.hub.clone(),
                self.hosting.mesh.clone(),
            ));
        }
        if let Some((listener, ui)) = self.admin_ui {
            tokio::spawn(crate::admin_ui::serve(listener, ui));
        }
        let sweeper = tokio::spawn(expire_registrations(self.hub.clone()));
        let presence = tokio::spawn(sweep_relay_presence(self.hub.clone()));
        let hub = self.hub;
        self.mesh.run(hub.clone());
        let hosting = self.hosting;
        tokio::spawn(hosting.clone().resign_forever());
        let mut closing = hub.closing();
        let stopper = hub.clone();
        let shutdown = async move {
            shutdown.await;
            stopper.begin_shutdown();
        };
        let serve = Server::builder()
            .add_service(
                ProvisioningServiceServer::new(provisioning::Provisioning(
                    hub.clone(),
                    hosting.repo.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                TopologyServiceServer::new(feeds::Topology(hub.clone(), self.turn.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                PolicyServiceServer::new(feeds::Policy(hub.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                MetricsServiceServer::new(relay::Metrics(hub.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                SignalingServiceServer::new(relay::Signaling(hub.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                RelayServiceServer::new(relay::Relay(hub.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                UpdateServiceServer::new(updates::Updates {
                    hub: hub.clone(),
                    repo: hosting.repo.clone(),
                })
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                AdminServiceServer::new(admin::Admin(hub.clone(), hosting.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(tls::incoming(self.grpc, self.tls), shutdown);
        let deadline = async {
            feeds::stopping(&mut closing).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            result = serve => result.map_err(|e| Error::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            }),
            () = deadline => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace; closing them");
                Ok(())
            }
        };
        sweeper.abort();
        presence.abort();
        let _ = std::fs::remove_file(&addr_file);
        result
    }
}

/// The URL recorded as this replica's relay presence: `configured`, or `https://` and the
/// listen address when it is a specific one.
fn replica_url(configured: Option<&str>, listen: SocketAddr) -> Option<String> {
    match configured {
        Some(url) => Some(url.trim_end_matches('/').to_owned()),
        None if listen.ip().is_unspecified() => None,
        None => Some(format!("https://{listen}")),
    }
}

/// Reconciles the relay presence every [`SWEEP_INTERVAL`](crate::hub::presence::SWEEP_INTERVAL):
/// dead replicas' rows go, this replica's lost ones come back (a no-op without replicas).
async fn sweep_relay_presence(hub: Arc<Hub>) {
    if hub.replica_url().is_none() {
        return;
    }
    let mut tick = tokio::time::interval(crate::hub::presence::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let swept = hub.clone();
        match tokio::task::spawn_blocking(move || swept.sweep_relay_presence()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(changed)) => tracing::info!(changed, "relay presence reconciled"),
            Ok(Err(error)) => tracing::warn!(%error, "relay presence sweep failed; retrying"),
            Err(error) => tracing::warn!(%error, "relay presence sweep stopped"),
        }
    }
}

/// Expires unconfirmed registrations when their window closes (checked every second:
/// windows are whole seconds, and a sweep with nothing due only takes the lock).
async fn expire_registrations(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if hub.next_expiry().is_none_or(|at| at > UnixTime::now()) {
            continue;
        }
        match hub.expire_pending(UnixTime::now()) {
            Ok(expired) => {
                for node in expired {
                    tracing::warn!(%node, "registration not confirmed in time; address freed");
                }
            }
            Err(error) => tracing::error!(%error, "expiring registrations failed"),
        }
    }
}
