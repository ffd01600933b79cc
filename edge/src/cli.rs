//! Command-line grammar of the `bauxite` binary. Global options (`--config`,
//! `--log-format`) may be given before or after the subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use bauxite::config::DEFAULT_CONFIG_PATH;

/// Bauxite edge node: mesh VPN + OTA for robots.
#[derive(Debug, Parser)]
#[command(name = "bauxite", version, about)]
pub(crate) struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "BAUXITE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub(crate) config: PathBuf,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `LEVEL event.name key=value ...`
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// OS-replacement survival check; exit 0 clean, 1 config, 2 state root, 3 mTLS cert,
    /// 5 reconstruction failed (the daemon must not start).
    Precheck(PrecheckArgs),
    /// Create the node identity and print it as a `[[peers]]` entry; with `--raw`,
    /// generate a manifest-signing Ed25519 key pair instead.
    Keygen(KeygenArgs),
    /// Join a hub with a token: generate the node identity, get certificates and a virtual
    /// IP, write `config.toml` under the state root.
    Join(JoinArgs),
    /// Run the node: static peers from `[node]` and `[[peers]]`, or peers and policy from
    /// the hub in `[hub]`; UDP + TUN (`bauxite0`), until SIGTERM or SIGINT.
    Run,
    /// Show a running node's peers, paths, handshake ages and counters.
    Status(StatusArgs),
    /// Sign or verify a runtime manifest.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Inspect or tamper with the stored OS fingerprint.
    #[command(subcommand)]
    Fingerprint(FingerprintCommand),
    /// Certificate helpers.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Two nodes in one process over a simulated link: handshake, ping, attacker,
    /// and control-loop latency with bulk saturating (no root, no network).
    Demo(DemoArgs),
    /// Over-the-air updates.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Echo probes to a peer over the mesh on the Critical lane (sent by the running
    /// daemon); reports sent, received, loss and round-trip p50/p99/max. Exit 1 when no
    /// probe was answered.
    Ping(PingArgs),
    /// ROS 2 over the mesh: the environment that points ROS processes at the fleet's
    /// discovery servers (`[ros]` in the config; see docs/ros2.md).
    #[command(subcommand)]
    Ros(RosCommand),
    /// The operator lock: an operator key held off the hub signs each node's keys; nodes
    /// that pin it (`join --operator-key`) accept only signed peers.
    #[command(subcommand)]
    Operator(OperatorCommand),
}

/// `bauxite ros ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RosCommand {
    /// Print `export` lines for ROS_DISCOVERY_SERVER and ROS_DOMAIN_ID
    /// (`eval "$(bauxite ros env)"`).
    Env,
    /// Run COMMAND with ROS_DISCOVERY_SERVER and ROS_DOMAIN_ID added to the environment
    /// (executed directly, no shell): `bauxite ros exec -- ros2 run demo_nodes_cpp talker`.
    Exec {
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
}

/// `bauxite operator ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Create an operator key pair: DIR/operator.key (0600) and DIR/operator.pub. Keep
    /// the private key off the hub (an offline machine, a token).
    Keygen {
        /// Directory receiving the key files (created 0700).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// On a node: print its key request (`bxkr1.…`: node ID, keys, virtual IP) from the
    /// config's identity and address, for the operator to sign.
    Request,
    /// Sign a node's key request; prints the signed record (`bxop1.…`) to upload with
    /// `bauxite-dispatch nodes sign`.
    Sign {
        /// The operator's private key (`operator.key`, mode 0600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The node's key request (`bxkr1.…`), or `-` to read it from stdin.
        #[arg(long, value_name = "TEXT")]
        request: String,
        /// Days the signature stays valid (1 to 3650); re-sign before it ends.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        valid_days: u64,
        /// The record's serial (default: the current Unix time, so a later signature has
        /// a higher one).
        #[arg(long, value_name = "N")]
        serial: Option<u64>,
    },
}

/// `bauxite ping` options.
#[derive(Debug, Args)]
pub(crate) struct PingArgs {
    /// The peer: its name (as in `bauxite status`) or its virtual IP.
    pub(crate) target: String,
    /// Probes per second (0.1 to 10000).
    #[arg(long, value_name = "HZ", default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Probes to send (1 to 1000000).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) count: u64,
    /// Payload bytes per probe (24 to 1200).
    #[arg(long, value_name = "BYTES", default_value_t = 36)]
    pub(crate) size: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bauxite update ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum UpdateCommand {
    /// A plain TUF client (the tuf-conformance client contract): `init ROOT_JSON`,
    /// `refresh`, `download`; exit 0 on success, 1 on any refusal.
    TufClient(TufClientArgs),
    /// The update agent's state: phase, state, versions, progress, rate, ETA, bytes,
    /// probe latency.
    Status(UpdateStatusArgs),
    /// Ask the daemon to refresh the update metadata and show what is assigned.
    Check(JsonArg),
    /// Start the assigned update now, resume it after a failure or a rejection, or go on
    /// past the hold point (`[updates] hold_before_activate`).
    Apply(JsonArg),
    /// Restore the previous version and block the current one.
    Rollback(JsonArg),
    /// Report the new version's workload healthy (commits it while the watchdog waits).
    Heartbeat(JsonArg),
}

/// `--json` alone.
#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print the answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bauxite update status` options.
#[derive(Debug, Args)]
pub(crate) struct UpdateStatusArgs {
    /// Print the status as JSON (with `--follow`: one JSON object per line).
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep showing progress until nothing moves (a progress bar with rate and ETA on a
    /// terminal, one line per second otherwise).
    #[arg(long)]
    pub(crate) follow: bool,
    /// With `--follow`: give up after this many seconds (exit 1).
    #[arg(long, value_name = "SECS")]
    pub(crate) timeout: Option<u64>,
}

/// `bauxite update tuf-client` options (given before the action, as the suite does).
#[derive(Debug, Args)]
pub(crate) struct TufClientArgs {
    /// Directory of trusted metadata (root.json, timestamp.json, ...).
    #[arg(long, value_name = "DIR")]
    pub(crate) metadata_dir: PathBuf,
    /// Base URL of the repository's metadata (refresh, download).
    #[arg(long, value_name = "URL")]
    pub(crate) metadata_url: Option<String>,
    /// Target path to download; repeat for several, processed in order (download).
    #[arg(long = "target-name", value_name = "NAME")]
    pub(crate) target_names: Vec<String>,
    /// Base URL of the repository's targets (download).
    #[arg(long, value_name = "URL")]
    pub(crate) target_base_url: Option<String>,
    /// Directory receiving verified targets (download).
    #[arg(long, value_name = "DIR")]
    pub(crate) target_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub(crate) action: TufClientAction,
}

/// `bauxite update tuf-client` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum TufClientAction {
    /// Trust ROOT_JSON (obtained out of band) as the initial root.
    Init {
        /// The initial root metadata file.
        root_json: PathBuf,
    },
    /// Update the top-level metadata (TUF client workflow, section 5).
    Refresh,
    /// Refresh, then download and verify each --target-name into --target-dir.
    Download,
}

/// `bauxite join` options.
#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// The join token from `bauxite-dispatch token create`.
    pub(crate) token: String,
    /// The hub, `https://host:port`.
    pub(crate) hub_url: String,
    /// State root receiving the identity, certificates and config.toml.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/bauxite")]
    pub(crate) state_root: PathBuf,
    /// This node's name in the mesh (default: the name the token was created with, else
    /// `node-` and the first 8 hex digits of its ID, chosen by the hub).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// UDP listen address written to `[node] listen`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:51820")]
    pub(crate) listen: std::net::SocketAddr,
    /// UDP endpoint other nodes dial, reported to the hub.
    #[arg(long, value_name = "ADDR")]
    pub(crate) advertise: Option<std::net::SocketAddr>,
    /// Control socket written to `[node] control_socket`.
    #[arg(long, value_name = "PATH")]
    pub(crate) control_socket: Option<PathBuf>,
    /// Replace the identity and certificates of an already joined state root.
    #[arg(long)]
    pub(crate) force: bool,
    /// Trust this TUF root.json for updates (obtained out of band) instead of the one the
    /// hub sends.
    #[arg(long, value_name = "FILE")]
    pub(crate) update_root: Option<PathBuf>,
    /// Turn the operator lock on: pin the operator public key(s) in FILE
    /// (`operator.pub`); peers are then accepted only with a key record signed by one of
    /// them. Repeat for several files.
    #[arg(long = "operator-key", value_name = "FILE")]
    pub(crate) operator_keys: Vec<PathBuf>,
}

/// `bauxite demo` options.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated link rate in Mbit/s.
    #[arg(long, default_value_t = 20)]
    pub(crate) link_mbps: u64,
    /// Seconds of saturating bulk traffic.
    #[arg(long, default_value_t = 5)]
    pub(crate) bulk_seconds: u64,
    /// Simulation seed (same seed, same run).
    #[arg(long, default_value_t = 2026)]
    pub(crate) seed: u64,
}

/// `bauxite precheck` options; the overrides fake an OS for tests and drills.
#[derive(Debug, Args)]
pub(crate) struct PrecheckArgs {
    /// Primary os-release file hashed into the fingerprint.
    #[arg(long, value_name = "FILE", default_value = "/etc/os-release")]
    pub(crate) os_release: PathBuf,
    /// Vendor os-release file (skipped if absent).
    #[arg(long, value_name = "FILE", default_value = "/usr/lib/os-release")]
    pub(crate) usr_lib_os_release: PathBuf,
    /// Use this kernel release instead of `uname -r`.
    #[arg(long, value_name = "RELEASE")]
    pub(crate) kernel_release: Option<String>,
}

/// `bauxite status` options.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bauxite keygen` options.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Node identity file to create (or read, if it exists); defaults to the config's
    /// `node.identity`.
    #[arg(long, value_name = "FILE", conflicts_with = "raw")]
    pub(crate) identity: Option<PathBuf>,
    /// Name to print in the `[[peers]]` entry.
    #[arg(long, default_value = "node", conflicts_with = "raw")]
    pub(crate) name: String,
    /// Write a raw manifest-signing key pair (32-byte public key, 32-byte private seed).
    #[arg(long, requires = "out_dir")]
    pub(crate) raw: bool,
    /// Directory receiving manifest-verify.pub and manifest-verify.key (with `--raw`).
    #[arg(long, value_name = "DIR", requires = "raw")]
    pub(crate) out_dir: Option<PathBuf>,
    /// Overwrite existing key files.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `bauxite manifest ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ManifestCommand {
    /// Write FILE.sig: a raw 64-byte Ed25519 signature over FILE.
    Sign {
        /// The manifest to sign.
        file: PathBuf,
        /// Raw private key (32-byte seed, or 64-byte seed+public).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Check FILE.sig against a raw 32-byte public key.
    Verify {
        /// The manifest to check.
        file: PathBuf,
        /// Raw public key.
        #[arg(long = "pub", value_name = "KEY")]
        public_key: PathBuf,
    },
}

/// `bauxite fingerprint ...`; the state root defaults to the config's.
#[derive(Debug, Subcommand)]
pub(crate) enum FingerprintCommand {
    /// Print the stored fingerprint (or one field of it).
    Show {
        /// State root (instead of reading it from the config).
        #[arg(long, value_name = "DIR")]
        state_root: Option<PathBuf>,
        /// Print only this field, e.g. boot_epoch.
        #[arg(long)]
        field: Option<String>,
    },
    /// Overwrite the stored composite hash, simulating an OS replacement.
    Tamper {
        /// State root (instead of reading it from the config).
        #[arg(long, value_name = "DIR")]
        state_root: Option<PathBuf>,
        /// The hash to store (64 hex characters).
        #[arg(
            long,
            default_value = "0000000000000000000000000000000000000000000000000000000000000000"
        )]
        hash: String,
    },
}

/// `bauxite cert ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Write a self-signed P-256 certificate and key (PEM).
    SelfSigned {
        /// Common name.
        #[arg(long, default_value = "bauxite-node")]
        cn: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Certificate output path.
        #[arg(long, value_name = "FILE")]
        cert_out: PathBuf,
        /// Private key output path (written 0600).
        #[arg(long, value_name = "FILE")]
        key_out: PathBuf,
    },
}
