//! A fleet of simulated nodes (real gRPC clients over mutual TLS) against several
//! `bauxite-dispatch serve --postgres` replicas on one throwaway PostgreSQL cluster.
//!
//! Shared by the test suite (`dispatch/tests/hub/fleet.rs`: 200 nodes, one replica killed)
//! and the benchmark (`dispatch/examples/replica_bench.rs`: 10 000 nodes). It measures the
//! join rate, how long a topology change takes to reach every node (p50/p99), the latency
//! of a signaling message from a node on one replica to a node on another, each replica's
//! CPU time and memory (from `/proc`), and, when a replica is killed during the load, how
//! long each of its nodes takes to be served by another replica and whether everything a
//! replica acknowledged before it died (provisioned nodes, audit entries, a policy) is
//! still there.
//!
//! Each simulated node does what `bauxite run` does with several hub URLs (the same
//! [`Replicas`] rule): on its replica's loss it tries another URL at once, each in turn in
//! an order rotated by its seed, and backs off only after all of them failed in a row; every connection confirms its provisioning and opens a
//! topology stream with deltas, naming the version it holds (as `bauxite run` does with
//! its `TopologyFollower`), so a reconnection gets one delta rather than the whole fleet
//! when the replica's journal covers it. A simulated node keeps only that version and its
//! digest, not the peers (10 000 copies of a 10 000-peer topology would not fit).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bauxite_conduit::identity::Identity;
use bauxite_dispatch_api::client::{HubClient, NodeCredentials, confirm, join};
use bauxite_dispatch_api::proto::admin::{
    CreateTokenRequest, ListNodesRequest, SetPolicyRequest, ShowAuditRequest, VerifyAuditRequest,
};
use bauxite_dispatch_api::proto::node::{
    ConfirmProvisionRequest, PolicyRequest, SetEndpointRequest, Signal, SignalKind, TopologyRequest,
};
use bauxite_dispatch_api::replicas::Replicas;
use bauxite_dispatch_api::token::JoinToken;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::pg_cluster::PgCluster;

/// How long any one phase may take before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// Longest pause between two rounds of connection attempts of one simulated node.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct FleetConfig {
    /// Simulated nodes.
    pub(crate) nodes: usize,
    /// Node pairs on different replicas that time a signaling message each round.
    pub(crate) signal_pairs: usize,
    /// Joins in flight at once.
    pub(crate) join_concurrency: usize,
    /// Topology-change rounds (and signaling rounds) before the kill.
    pub(crate) rounds: usize,
    /// Kill replica 0 (SIGKILL) during the load, with writes in flight on it.
    pub(crate) kill: bool,
    /// How long every node may take to get its first topology once all joined.
    pub(crate) connect_limit: Duration,
}

/// One `serve --postgres` process; killed on drop.
pub(crate) struct Replica {
    child: Child,
    dir: PathBuf,
    url: String,
    alive: bool,
}

/// CPU time and memory of one process, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    /// User + system CPU seconds so far.
    pub(crate) cpu_secs: f64,
    /// Resident set, MB.
    pub(crate) rss_mb: f64,
    /// Peak resident set, MB.
    pub(crate) hwm_mb: f64,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The usage of process `pid` (zeros once it is gone).
pub(crate) fn usage_of(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the name.
    let cpu_secs = (ticks(11) + ticks(12)) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Usage {
        cpu_secs,
        rss_mb: kb("VmRSS:") / 1024.0,
        hwm_mb: kb("VmHWM:") / 1024.0,
    }
}

/// Polls `f` every `every` until it returns `Some`, or panics after `limit`.
async fn wait_for<T>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

impl Replica {
    /// `serve` on `dir`, with PostgreSQL at `postgres` (`None`: its own redb file).
    fn start(bin: &Path, dir: &Path, postgres: Option<&str>) -> Replica {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut command = Command::new(bin);
        if let Some(url) = postgres {
            command.env("BAUXITE_DISPATCH_POSTGRES", url);
        }
        let child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            // BAUXITE_FLEET_LOG sets the replicas' log filter (their logs are then kept).
            .env(
                "RUST_LOG",
                std::env::var("BAUXITE_FLEET_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Replica {
            child,
            dir: dir.to_path_buf(),
            url: String::new(),
            alive: true,
        }
    }

    async fn wait_started(&mut self) {
        let file = self.dir.join("hub.addr");
        let addr = wait_for(
            Duration::from_secs(60),
            Duration::from_millis(20),
            "hub.addr",
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.with_extension("log"));
                    panic!("replica exited with {status}: {}", log.unwrap_or_default());
                }
                let text = std::fs::read_to_string(&file).ok()?;
                let text = text.trim().to_owned();
                (!text.is_empty()).then_some(text)
            },
        )
        .await;
        self.url = format!("https://{addr}");
    }

    /// Its CPU and memory so far.
    pub(crate) fn usage(&self) -> Usage {
        usage_of(self.child.id())
    }

    /// SIGKILL: no goodbye to its nodes, its database sessions end.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.alive {
            self.kill();
        }
    }
}

/// The keys every replica shares: the first replica's data dir, without its runtime files
/// (its address file, and an embedded database a replica on PostgreSQL must not read).
pub(crate) fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_file(to.join("hub.addr"));
    let _ = std::fs::remove_file(to.join("hub.db"));
}

/// What each simulated node shares with the driver.
#[derive(Default)]
struct NodeState {
    /// The newest topology version it received.
    version: AtomicU64,
    /// The replica it is connected to.
    replica: AtomicUsize,
    /// Whether its topology stream is open.
    connected: AtomicBool,
    /// When its current connection completed its first topology, the whole snapshot or
    /// the delta from the version it held (ns since the run's start).
    connected_at: AtomicU64,
    /// Whether its current connection started with a delta from the version it held
    /// (resumed) rather than a full snapshot.
    resumed: AtomicBool,
    /// Whether its current connection named a version it held (it had a whole one).
    asked: AtomicBool,
}

/// A joined node and how long its join took.
type Joined = (SimNode, Duration);

/// A joined node.
struct SimNode {
    id: String,
    credentials: NodeCredentials,
    home: usize,
}

/// p50, p99 and max of `samples` (sorted here).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Spread {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) count: usize,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Spread {
        if samples.is_empty() {
            return Spread::default();
        }
        samples.sort();
        let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
        Spread {
            p50: at(0.5),
            p99: at(0.99),
            max: samples[samples.len() - 1],
            count: samples.len(),
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub(crate) struct FleetReport {
    pub(crate) nodes: usize,
    pub(crate) replicas: usize,
    pub(crate) join: Spread,
    pub(crate) joins_per_sec: f64,
    /// Each round: time until every node had the change (arrivals spread).
    pub(crate) fanout: Vec<Spread>,
    pub(crate) signaling: Spread,
    /// Per replica: CPU seconds during joins, during the rounds, and usage at the end of
    /// the rounds.
    pub(crate) cpu_join: Vec<f64>,
    pub(crate) cpu_rounds: Vec<f64>,
    pub(crate) join_secs: f64,
    pub(crate) rounds_secs: f64,
    pub(crate) usage: Vec<Usage>,
    /// After the kill: how long each of the dead replica's nodes took to be served again.
    pub(crate) reconnect: Spread,
    /// After the kill: how many of the dead replica's nodes each replica serves.
    pub(crate) orphans_on: Vec<usize>,
    /// After the kill: how many of the dead replica's nodes resumed with one delta (the
    /// rest got a full snapshot).
    pub(crate) resumed: usize,
    /// Nodes whose home is the killed replica but that another served when it died (they
    /// failed over before; not in `reconnect`).
    pub(crate) away: usize,
    /// Of the dead replica's nodes not resumed, those that held no whole version to name
    /// (in the middle of a paged snapshot when it died).
    pub(crate) held_none: usize,
    /// The change made after the kill reaching every node.
    pub(crate) fanout_after_kill: Option<Spread>,
    /// Acknowledged by the killed replica in the seconds around its death.
    pub(crate) acked_joins: usize,
    pub(crate) acked_tokens: usize,
    pub(crate) acked_policies: usize,
    /// Of those, missing on the survivors (must be 0).
    pub(crate) lost: Vec<String>,
    /// The survivors' audit verification.
    pub(crate) audit_ok: bool,
    /// Each replica's memory at the end of each stage (joins, streams open, rounds, kill).
    pub(crate) stages: Vec<(&'static str, Vec<Usage>)>,
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} nodes over {} replicas on one PostgreSQL",
            self.nodes, self.replicas
        )?;
        writeln!(
            f,
            "join (provision + confirm): {}; {:.0} joins/s",
            self.join, self.joins_per_sec
        )?;
        for (i, round) in self.fanout.iter().enumerate() {
            writeln!(f, "topology change -> all nodes, round {}: {round}", i + 1)?;
        }
        writeln!(
            f,
            "signal, node on one replica -> node on another: {}",
            self.signaling
        )?;
        for (i, u) in self.usage.iter().enumerate() {
            writeln!(
                f,
                "replica {i}: CPU {:.1} s over {:.1} s of joins ({:.0}%), {:.1} s over {:.1} s of rounds ({:.0}%); RSS {:.0} MB (peak {:.0} MB)",
                self.cpu_join[i],
                self.join_secs,
                100.0 * self.cpu_join[i] / self.join_secs.max(1e-9),
                self.cpu_rounds[i],
                self.rounds_secs,
                100.0 * self.cpu_rounds[i] / self.rounds_secs.max(1e-9),
                u.rss_mb,
                u.hwm_mb
            )?;
        }
        for (stage, usage) in &self.stages {
            let rss: Vec<String> = usage
                .iter()
                .map(|u| format!("{:.0} ({:.0})", u.rss_mb, u.hwm_mb))
                .collect();
            writeln!(f, "replica RSS (peak), MB, {stage}: {}", rss.join(" / "))?;
        }
        if self.reconnect.count > 0 {
            writeln!(
                f,
                "replica 0 killed: its nodes served by another (whole topology held) in {}; by replica: {:?}; resumed with a delta: {} of {} ({} held no whole version); already elsewhere at the kill: {}",
                self.reconnect,
                self.orphans_on,
                self.resumed,
                self.reconnect.count,
                self.held_none,
                self.away
            )?;
            if let Some(after) = &self.fanout_after_kill {
                writeln!(f, "topology change after the kill -> all nodes: {after}")?;
            }
            writeln!(
                f,
                "acknowledged by replica 0 around its death: {} joins, {} tokens, {} policies; lost: {:?}; survivors' audit chain {}",
                self.acked_joins,
                self.acked_tokens,
                self.acked_policies,
                self.lost,
                if self.audit_ok { "verifies" } else { "BROKEN" }
            )?;
        }
        Ok(())
    }
}

/// A deterministic identity per node index (distinct keys in one run's fresh database).
fn identity(i: u64) -> Identity {
    let mut signing = [0x5a; 32];
    let mut static_secret = [0xa5; 32];
    // Away from the bits X25519 clamps (byte 0's low three, byte 31's top two).
    signing[8..16].copy_from_slice(&i.to_le_bytes());
    static_secret[8..16].copy_from_slice(&i.to_le_bytes());
    Identity::from_secrets(signing, static_secret)
}

async fn join_one(
    token: &JoinToken,
    url: &str,
    i: u64,
) -> bauxite_dispatch_api::Result<(String, NodeCredentials)> {
    let joined = join(token, url, &identity(i), &format!("sim-{i}")).await?;
    confirm(url, &joined.credentials).await?;
    Ok((joined.node_id.to_string(), joined.credentials))
}

/// One connection of a simulated node: confirm, open the topology stream from the version
/// it `held`, follow it (keeping `held` up to date). Returns whether it got as far as a
/// first topology message.
async fn session(
    url: &str,
    credentials: &NodeCredentials,
    state: &NodeState,
    held: &mut Option<(u64, Vec<u8>)>,
    replica: usize,
    t0: Instant,
) -> bool {
    let Ok(client) = HubClient::connect_mtls(url, credentials).await else {
        return false;
    };
    if client
        .provisioning()
        .confirm_provision(ConfirmProvisionRequest {})
        .await
        .is_err()
    {
        return false;
    }
    let request = TopologyRequest {
        deltas: true,
        held_version: held.as_ref().map(|(version, _)| *version),
        held_digest: held
            .as_ref()
            .map(|(_, digest)| digest.clone())
            .unwrap_or_default(),
    };
    let asked = request.held_version.is_some();
    let Ok(feed) = client.topology().stream_topology(request).await else {
        return false;
    };
    let mut feed = feed.into_inner();
    let mut first = None;
    while let Ok(Some(message)) = feed.message().await {
        state.version.fetch_max(message.version, Ordering::Relaxed);
        let resumed = *first.get_or_insert(message.delta);
        if message.more {
            // In the middle of a full snapshot: what was held is being replaced.
            *held = None;
            continue;
        }
        *held = Some((message.version, message.digest));
        if !state.connected.load(Ordering::Acquire) {
            state.replica.store(replica, Ordering::Relaxed);
            state.resumed.store(resumed, Ordering::Relaxed);
            state.asked.store(asked, Ordering::Relaxed);
            state
                .connected_at
                .store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            state.connected.store(true, Ordering::Release);
        }
    }
    state.connected.store(false, Ordering::Release);
    first.is_some()
}

/// A simulated node for as long as the run lasts, moving between replicas by the rule
/// `bauxite` nodes follow ([`Replicas`]): its home replica first, another at once when a
/// replica is lost (the others in an order rotated by the node's seed, so a dead replica's
/// nodes spread over the survivors), a pause only after all failed in a row.
fn spawn_node(
    node: &SimNode,
    urls: Arc<Vec<String>>,
    state: Arc<NodeState>,
    t0: Instant,
) -> JoinHandle<()> {
    let credentials = node.credentials.clone();
    let n = urls.len();
    let mine: Vec<String> = (0..n).map(|k| urls[(node.home + k) % n].clone()).collect();
    // The node ID is a random key's hash: its first 64 bits are as good a seed as any.
    let seed = node
        .id
        .get(..16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(node.home as u64);
    let mut replicas = Replicas::new(mine, &urls[node.home], seed);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut held = None;
        loop {
            let current = urls
                .iter()
                .position(|u| u == replicas.current())
                .unwrap_or(0);
            if session(&urls[current], &credentials, &state, &mut held, current, t0).await {
                replicas.connected();
                backoff = Duration::from_millis(100);
            }
            if replicas.fail_over().is_none() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    })
}

/// The running system: PostgreSQL, the replicas, the joined nodes.
pub(crate) struct Fleet {
    replicas: Vec<Replica>,
    // Dropped after the replicas (field order): they lose their database last.
    _pg: PgCluster,
    _dir: tempfile::TempDir,
}

/// A signaling stream opened with a node's credentials on its home replica.
struct SignalEnd {
    send: mpsc::Sender<Signal>,
    _client: HubClient,
}

impl Fleet {
    /// Starts PostgreSQL and `replicas` replicas of `bin` on it (`None` without
    /// PostgreSQL); `postgres: false` starts one hub on its own redb file instead (the
    /// single-hub baseline; PostgreSQL still runs, unused).
    pub(crate) async fn start_with(bin: &Path, replicas: usize, postgres: bool) -> Option<Fleet> {
        let pg = PgCluster::start()?;
        let url = pg.create_db("fleet");
        let url = postgres.then_some(url.as_str());
        let replicas = if postgres { replicas } else { 1 };
        let mut dir = tempfile::Builder::new()
            .prefix("bauxite-fleet-")
            .tempdir()
            .unwrap();
        if std::env::var_os("BAUXITE_FLEET_LOG").is_some() {
            dir.disable_cleanup(true);
            eprintln!("replica logs kept in {}", dir.path().display());
        }
        let first = dir.path().join("replica-0");
        let mut all = vec![Replica::start(bin, &first, url)];
        all[0].wait_started().await;
        for i in 1..replicas {
            let data = dir.path().join(format!("replica-{i}"));
            copy_keys(&first, &data);
            all.push(Replica::start(bin, &data, url));
        }
        for replica in &mut all[1..] {
            replica.wait_started().await;
        }
        Some(Fleet {
            replicas: all,
            _pg: pg,
            _dir: dir,
        })
    }

    async fn admin(&self, replica: usize) -> HubClient {
        let r = &self.replicas[replica];
        HubClient::connect_admin(&r.dir, Some(&r.url))
            .await
            .unwrap()
    }

    fn cpu(&self) -> Vec<f64> {
        self.replicas.iter().map(|r| r.usage().cpu_secs).collect()
    }

    /// Each replica's CPU and memory now (zeros for a dead one).
    fn usages(&self) -> Vec<Usage> {
        self.replicas.iter().map(Replica::usage).collect()
    }

    /// Prints, every 10 s until aborted, how many joins started and each replica's memory
    /// (a long run shows where it is and how memory grows).
    fn progress(&self, joins: Arc<AtomicUsize>, n: usize, started: Instant) -> JoinHandle<()> {
        let pids: Vec<u32> = self.replicas.iter().map(|r| r.child.id()).collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let rss: Vec<String> = pids
                    .iter()
                    .map(|p| format!("{:.0}", usage_of(*p).rss_mb))
                    .collect();
                eprintln!(
                    "{:.0} s: {} of {n} joins started; replica RSS MB {}",
                    started.elapsed().as_secs_f64(),
                    joins.load(Ordering::Relaxed).min(n),
                    rss.join(" / ")
                );
            }
        })
    }

    /// Runs the load described by `config` and returns what it measured.
    pub(crate) async fn run(&mut self, config: &FleetConfig) -> FleetReport {
        let n = config.nodes;
        let r = self.replicas.len();
        let urls: Arc<Vec<String>> =
            Arc::new(self.replicas.iter().map(|x| x.url.clone()).collect());
        let mut report = FleetReport {
            nodes: n,
            replicas: r,
            ..FleetReport::default()
        };
        let admin = self.admin(0).await;
        let token = admin
            .admin()
            .create_token(CreateTokenRequest {
                ttl_seconds: 86_400,
                uses: u32::try_from(n).unwrap(),
                name: "fleet".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let token = Arc::new(JoinToken::parse(&token).unwrap());

        // Joins, node i through replica i mod R, `join_concurrency` at a time.
        let cpu0 = self.cpu();
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let progress = self.progress(next.clone(), n, started);
        let joined: Arc<Mutex<Vec<Option<Joined>>>> =
            Arc::new(Mutex::new((0..n).map(|_| None).collect()));
        let workers: Vec<_> = (0..config.join_concurrency.max(1))
            .map(|_| {
                let (next, joined, token, urls) =
                    (next.clone(), joined.clone(), token.clone(), urls.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let home = i % urls.len();
                        let start = Instant::now();
                        // As `bauxite join` run again by hand: a refused or timed-out
                        // attempt is retried (bounded), and counts in the latency.
                        let mut attempt = 0;
                        let (id, credentials) = loop {
                            attempt += 1;
                            match join_one(&token, &urls[home], i as u64).await {
                                Ok(joined) => break joined,
                                Err(e) if attempt < 5 => {
                                    eprintln!("join {i} attempt {attempt}: {e}");
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                Err(e) => panic!("join {i} failed {attempt} times: {e}"),
                            }
                        };
                        let took = start.elapsed();
                        joined.lock().unwrap()[i] = Some((
                            SimNode {
                                id,
                                credentials,
                                home,
                            },
                            took,
                        ));
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        report.join_secs = started.elapsed().as_secs_f64();
        report.joins_per_sec = n as f64 / report.join_secs;
        let cpu1 = self.cpu();
        report.cpu_join = cpu1.iter().zip(&cpu0).map(|(a, b)| a - b).collect();
        let (nodes, join_times): (Vec<SimNode>, Vec<Duration>) = Arc::try_unwrap(joined)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .unzip();
        report.join = Spread::of(join_times);
        report.stages.push(("all joined", self.usages()));

        // Every node follows its topology.
        let t0 = Instant::now();
        let states: Vec<Arc<NodeState>> = (0..n).map(|_| Arc::default()).collect();
        let tasks: Vec<JoinHandle<()>> = nodes
            .iter()
            .zip(&states)
            .map(|(node, state)| spawn_node(node, urls.clone(), state.clone(), t0))
            .collect();
        // Every node's first topology message; progress every 10 s (at 10 000 nodes on one
        // hub this phase is the longest: each new stream gets the whole topology).
        let mut shown = Instant::now();
        loop {
            let connected = states
                .iter()
                .filter(|s| s.connected.load(Ordering::Acquire))
                .count();
            if connected == n {
                break;
            }
            assert!(
                t0.elapsed() < config.connect_limit,
                "timed out after {:?}: {connected} of {n} nodes connected",
                config.connect_limit
            );
            if shown.elapsed() >= Duration::from_secs(10) {
                shown = Instant::now();
                let rss: Vec<String> = self
                    .usages()
                    .iter()
                    .map(|u| format!("{:.0}", u.rss_mb))
                    .collect();
                eprintln!(
                    "{:.0} s: {connected} of {n} nodes have their first topology; replica RSS MB {}",
                    started.elapsed().as_secs_f64(),
                    rss.join(" / ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        report.stages.push(("every stream open", self.usages()));
        eprintln!(
            "{:.1} s: every stream open",
            started.elapsed().as_secs_f64()
        );

        // Topology changes and signals, steady state.
        let rounds_start = Instant::now();
        let cpu2 = self.cpu();
        for round in 0..config.rounds {
            let spread = fanout(&urls, &nodes, &states, 0, 5000 + round as u16).await;
            report.fanout.push(spread);
        }
        report.signaling = signal_rounds(&urls, &nodes, config).await;
        report.rounds_secs = rounds_start.elapsed().as_secs_f64();
        let cpu3 = self.cpu();
        report.cpu_rounds = cpu3.iter().zip(&cpu2).map(|(a, b)| a - b).collect();
        report.usage = self.usages();
        report
            .stages
            .push(("after the rounds", report.usage.clone()));
        eprintln!("{:.1} s: rounds done", started.elapsed().as_secs_f64());
        // What is measured so far, in case a later phase fails.
        eprintln!("{report}");

        if config.kill && r > 1 {
            self.kill_phase(config, &urls, &nodes, &states, t0, &mut report)
                .await;
            report.stages.push(("after the kill", self.usages()));
        }
        progress.abort();
        for task in tasks {
            task.abort();
        }
        report
    }

    /// Replica 0 dies (SIGKILL) while it acknowledges joins, tokens and policies; then
    /// every node must be served by a survivor, and the survivors must hold everything
    /// replica 0 acknowledged.
    async fn kill_phase(
        &mut self,
        config: &FleetConfig,
        urls: &Arc<Vec<String>>,
        nodes: &[SimNode],
        states: &[Arc<NodeState>],
        t0: Instant,
        report: &mut FleetReport,
    ) {
        let admin = self.admin(0).await;
        let token = admin
            .admin()
            .create_token(CreateTokenRequest {
                ttl_seconds: 3600,
                uses: 1000,
                name: "around-the-kill".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let token = JoinToken::parse(&token).unwrap();
        let url0 = urls[0].clone();
        let first_extra = config.nodes as u64;
        // How many rounds (join, token, policy) replica 0 has acknowledged so far.
        let (rounds_tx, mut rounds) = tokio::sync::watch::channel(0usize);
        let writer = tokio::spawn(async move {
            let (mut joins, mut tokens, mut policies) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..1000u64 {
                let Ok((id, _)) = join_one(&token, &url0, first_extra + k).await else {
                    break;
                };
                joins.push(id);
                let Ok(t) = admin
                    .admin()
                    .create_token(CreateTokenRequest {
                        ttl_seconds: 60,
                        uses: 1,
                        name: format!("kill-{k}"),
                    })
                    .await
                else {
                    break;
                };
                tokens.push(t.into_inner().token_id);
                let json = format!(
                    r#"{{"rules": [{{"protocol": "udp", "ports": "{}"}}]}}"#,
                    6000 + k
                );
                let Ok(p) = admin.admin().set_policy(SetPolicyRequest { json }).await else {
                    break;
                };
                policies.push(p.into_inner().version);
                rounds_tx.send_replace(policies.len());
            }
            (joins, tokens, policies)
        });
        // Kill once the writer has two whole rounds acknowledged, with its next writes in
        // flight (on a loaded machine the first round alone can take seconds).
        tokio::time::timeout(Duration::from_secs(60), rounds.wait_for(|&n| n >= 2))
            .await
            .expect("replica 0 acknowledged two rounds of writes within 60 s")
            .expect("the writer stopped before two rounds");
        // The dead replica's nodes: those whose home it is, less any a survivor serves
        // already (they failed over earlier, e.g. a connection refused in the join storm,
        // and keep the survivor: they neither reconnect nor resume at the kill).
        let (orphans, away): (Vec<usize>, Vec<usize>) = (0..nodes.len())
            .filter(|&i| nodes[i].home == 0)
            .partition(|&i| {
                !(states[i].connected.load(Ordering::Acquire)
                    && states[i].replica.load(Ordering::Relaxed) != 0)
            });
        report.away = away.len();
        let killed_at = t0.elapsed();
        self.replicas[0].kill();
        let (joins, tokens, policies) = writer.await.unwrap();
        report.acked_joins = joins.len();
        report.acked_tokens = tokens.len();
        report.acked_policies = policies.len();

        // Every node on a survivor, connected after the kill.
        wait_for(
            PHASE_LIMIT,
            Duration::from_millis(5),
            "every node on a survivor",
            || {
                states
                    .iter()
                    .all(|s| {
                        s.connected.load(Ordering::Acquire)
                            && s.replica.load(Ordering::Relaxed) != 0
                    })
                    .then_some(())
            },
        )
        .await;
        report.reconnect = Spread::of(
            orphans
                .iter()
                .map(|&i| {
                    Duration::from_nanos(states[i].connected_at.load(Ordering::Relaxed))
                        .saturating_sub(killed_at)
                })
                .collect(),
        );
        report.resumed = orphans
            .iter()
            .filter(|&&i| states[i].resumed.load(Ordering::Relaxed))
            .count();
        report.held_none = orphans
            .iter()
            .filter(|&&i| !states[i].resumed.load(Ordering::Relaxed))
            .filter(|&&i| !states[i].asked.load(Ordering::Relaxed))
            .count();
        report.orphans_on = vec![0; self.replicas.len()];
        for &i in &orphans {
            if let Some(count) = report
                .orphans_on
                .get_mut(states[i].replica.load(Ordering::Relaxed))
            {
                *count += 1;
            }
        }
        let setter = nodes.iter().position(|n| n.home != 0).unwrap();
        report.fanout_after_kill = Some(fanout(urls, nodes, states, setter, 7000).await);

        // Nothing acknowledged is lost: the survivors hold it all.
        let survivor = self.admin(1).await;
        let listed = survivor
            .admin()
            .list_nodes(ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        let members: HashSet<String> = listed
            .iter()
            .filter(|n| !n.pending && !n.revoked)
            .map(|n| n.node_id.clone())
            .collect();
        // Two replicas never hand out one address.
        let mut ips = HashSet::new();
        for n in &listed {
            if !ips.insert(n.virtual_ip.clone()) {
                report
                    .lost
                    .push(format!("virtual IP {} handed out twice", n.virtual_ip));
            }
        }
        for node in nodes {
            if !members.contains(&node.id) {
                report.lost.push(format!("node {}", node.id));
            }
        }
        for id in &joins {
            if !members.contains(id) {
                report
                    .lost
                    .push(format!("node {id} (joined around the kill)"));
            }
        }
        // The whole log, page by page (at 10 000 nodes it is over 5 MB, past gRPC's
        // default 4 MB for one message).
        let mut audit = Vec::new();
        let mut after = None;
        let mut admin = survivor.admin();
        for _ in 0..10_000 {
            let page = admin
                .show_audit(ShowAuditRequest { after, limit: 2000 })
                .await
                .unwrap()
                .into_inner();
            audit.extend(page.entries);
            after = page.next_after;
            if after.is_none() {
                break;
            }
        }
        let by_action: HashMap<&str, Vec<&str>> = audit.iter().fold(HashMap::new(), |mut m, e| {
            m.entry(e.action.as_str())
                .or_default()
                .push(e.detail.as_str());
            m
        });
        let has = |action: &str, prefix: &str| {
            by_action
                .get(action)
                .is_some_and(|d| d.iter().any(|d| d.starts_with(prefix)))
        };
        for id in &tokens {
            if !has("token.create", &format!("token {id} ")) {
                report.lost.push(format!("audit token.create {id}"));
            }
        }
        for version in &policies {
            if !has("policy.set", &format!("policy v{version}:")) {
                report.lost.push(format!("audit policy.set v{version}"));
            }
        }
        let served = survivor
            .admin()
            .show_policy(PolicyRequest::default())
            .await
            .unwrap()
            .into_inner()
            .version;
        if let Some(last) = policies.last()
            && served < *last
        {
            report
                .lost
                .push(format!("policy v{last} (survivor serves v{served})"));
        }
        report.audit_ok = survivor
            .admin()
            .verify_audit(VerifyAuditRequest {})
            .await
            .unwrap()
            .into_inner()
            .ok;
    }
}

/// Node `setter` changes its endpoint; returns how long each node took to get the new
/// topology version.
async fn fanout(
    urls: &[String],
    nodes: &[SimNode],
    states: &[Arc<NodeState>],
    setter: usize,
    port: u16,
) -> Spread {
    let client = HubClient::connect_mtls(&urls[nodes[setter].home], &nodes[setter].credentials)
        .await
        .unwrap();
    let start = Instant::now();
    let version = client
        .topology()
        .set_endpoint(SetEndpointRequest {
            endpoint: format!("192.0.2.1:{port}"),
            ..SetEndpointRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    let mut arrived: Vec<Option<Duration>> = vec![None; nodes.len()];
    wait_for(
        PHASE_LIMIT,
        Duration::from_millis(1),
        "a topology change at every node",
        || {
            let now = start.elapsed();
            for (slot, state) in arrived.iter_mut().zip(states) {
                if slot.is_none() && state.version.load(Ordering::Relaxed) >= version {
                    *slot = Some(now);
                }
            }
            arrived.iter().all(Option::is_some).then_some(())
        },
    )
    .await;
    Spread::of(arrived.into_iter().map(Option::unwrap).collect())
}

/// Pairs of nodes on different replicas when there are several (node 2p and 2p+1: homes
/// 2p mod R and the next):
/// each pair's first node sends a candidate to the second, `config.rounds` times.
async fn signal_rounds(urls: &[String], nodes: &[SimNode], config: &FleetConfig) -> Spread {
    let pairs = config.signal_pairs.min(nodes.len() / 2);
    if pairs == 0 {
        return Spread::default();
    }
    let arrivals: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut senders = Vec::with_capacity(pairs);
    let mut receivers = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let (a, b) = (&nodes[2 * p], &nodes[2 * p + 1]);
        assert!(
            urls.len() < 2 || a.home != b.home,
            "a pair spans two replicas"
        );
        senders.push(open_signals(&urls[a.home], &a.credentials, None).await);
        receivers.push(open_signals(&urls[b.home], &b.credentials, Some(arrivals.clone())).await);
    }
    let mut latencies = Vec::new();
    for round in 0..config.rounds.max(1) as u64 {
        let mut sent = HashMap::new();
        for (p, sender) in senders.iter().enumerate() {
            let session = round * pairs as u64 + p as u64;
            sent.insert(session, Instant::now());
            sender
                .send
                .send(Signal {
                    peer_id: nodes[2 * p + 1].id.clone(),
                    kind: SignalKind::Candidate as i32,
                    session,
                    payload: b"10.9.0.1:5000".to_vec(),
                })
                .await
                .unwrap();
        }
        wait_for(
            PHASE_LIMIT,
            Duration::from_millis(1),
            "every signal delivered",
            || {
                let got = arrivals.lock().unwrap();
                sent.keys().all(|s| got.contains_key(s)).then_some(())
            },
        )
        .await;
        let got = arrivals.lock().unwrap();
        latencies.extend(sent.iter().map(|(s, at)| got[s].duration_since(*at)));
    }
    drop(receivers);
    Spread::of(latencies)
}

/// A signaling stream for a node; with `arrivals`, a task records when each session's
/// message arrived.
async fn open_signals(
    url: &str,
    credentials: &NodeCredentials,
    arrivals: Option<Arc<Mutex<HashMap<u64, Instant>>>>,
) -> SignalEnd {
    let client = HubClient::connect_mtls(url, credentials).await.unwrap();
    let (send, rx) = mpsc::channel(64);
    let mut inbound = client
        .signaling()
        .exchange_candidates(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            if let Some(arrivals) = &arrivals {
                arrivals
                    .lock()
                    .unwrap()
                    .insert(message.session, Instant::now());
            }
        }
    });
    SignalEnd {
        send,
        _client: client,
    }
}
