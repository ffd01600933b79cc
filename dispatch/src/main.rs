//! `bauxite-dispatch`: run the hub, or administer a running one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use bauxite_dispatch::audit;
use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch::ipam::MeshCidr;
use bauxite_dispatch::policy_review;
use bauxite_dispatch::server::{BoundHub, ServeConfig};
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::admin as proto;
use clap::{Parser, Subcommand, ValueEnum};

mod updates_cli;

use updates_cli::{PackageCommand, UpdateCommand};

/// The Bauxite hub: provisioning, topology, policy, signaling and audit for a robot mesh.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Hub data dir (CA, database, admin credentials).
    #[arg(
        long,
        global = true,
        env = "BAUXITE_DISPATCH_DATA_DIR",
        default_value = "/var/lib/bauxite-dispatch"
    )]
    data_dir: PathBuf,
    /// Hub address for admin commands (default: read from DATA_DIR/hub.addr).
    #[arg(long, global = true)]
    hub: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: the size of `Serve`'s options costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the hub.
    Serve {
        /// gRPC address; port 0 picks a free port (printed on stdout).
        #[arg(long, default_value = "0.0.0.0:7443")]
        listen: SocketAddr,
        /// Mesh CIDR virtual IPs come from (fixed at first start).
        #[arg(long)]
        mesh_cidr: Option<MeshCidr>,
        /// Prometheus endpoint address (GET /metrics).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// How long a joining node has to confirm it wrote its credentials before its
        /// registration expires (its address freed, its token use given back): 90s, 10m.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        confirm_within: u64,
        /// Lifetime of the node certificates this hub issues (at least 60s): 90d, 365d.
        /// Nodes renew theirs over mutual TLS when a third of it is left (or 7 days,
        /// whichever comes first).
        #[arg(long, default_value = "3650d", value_parser = parse_duration)]
        node_cert_validity: u64,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// UDP address of the hub's mesh node (default: the --listen IP and port, on UDP).
        #[arg(long)]
        mesh_listen: Option<SocketAddr>,
        /// The mesh endpoint nodes are told to dial (default: none listed; nodes then dial
        /// the hub URL's host on the mesh port, which equals the gRPC port by default).
        #[arg(long)]
        mesh_advertise: Option<SocketAddr>,
        /// First start only: write the update repository's root key to this file (take
        /// it offline) instead of DATA_DIR/updates/root.key.
        #[arg(long)]
        root_key_out: Option<PathBuf>,
        /// Serve the admin web UI on this loopback address (plain HTTP; port 0 picks one,
        /// printed on stdout). Needs `admin-password set` first. Off by default.
        #[arg(long)]
        admin_ui_listen: Option<SocketAddr>,
        /// A TURN server nodes get time-limited credentials for (`turn:host:port`, UDP;
        /// repeat for several). Needs the secret it shares with them (coturn's
        /// `static-auth-secret`) in --turn-secret-file or $BAUXITE_TURN_SECRET.
        #[arg(long = "turn-url")]
        turn_urls: Vec<String>,
        /// File holding the TURN shared secret (never logged).
        #[arg(long)]
        turn_secret_file: Option<PathBuf>,
        /// Lifetime of the TURN credentials handed to nodes: 1h, 24h.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        turn_ttl: u64,
        /// Keep the hub's state in this PostgreSQL database (`postgresql://user@host/db`),
        /// shared by every replica given the same URL, instead of DATA_DIR/hub.db. Prefer
        /// the environment variable: a URL with a password on the command line is visible
        /// to every local user.
        #[arg(long, env = "BAUXITE_DISPATCH_POSTGRES", hide_env_values = true)]
        postgres: Option<String>,
        /// With --postgres: the URL nodes reach this replica at (as they list it in
        /// `hub.urls`), published to peers so two relay-only nodes on different replicas
        /// meet on one. Default: https:// and the --listen address, when it is not 0.0.0.0.
        #[arg(long)]
        replica_url: Option<String>,
    },
    /// Apply the PostgreSQL schema migrations this hub needs (`serve --postgres` also does
    /// at start); prints each one applied.
    Migrate {
        /// The database (see `serve --postgres`).
        #[arg(long, env = "BAUXITE_DISPATCH_POSTGRES", hide_env_values = true)]
        postgres: String,
    },
    /// The admin web UI's password.
    #[command(subcommand)]
    AdminPassword(AdminPasswordCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Provisioned nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// The mesh firewall policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Update packages and the update repository's keys.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Deploy updates and follow them.
    #[command(subcommand)]
    Update(UpdateCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new join token on stdout.
    Create {
        /// Lifetime: 90s, 30m, 1h, 7d (at most 30d).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: u64,
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Label, e.g. the robot it is for.
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Subcommand)]
enum AdminPasswordCommand {
    /// Read a new password from stdin (first line, 12 to 1024 characters) and store its
    /// argon2 hash in DATA_DIR/admin-ui.passwd (0600). A running hub reads it at start.
    Set,
}

#[derive(Subcommand)]
enum NodesCommand {
    /// List nodes.
    List,
    /// Revoke a node by peer ID.
    Revoke {
        /// The node's 32-hex-digit ID.
        id: String,
    },
    /// Upload an operator-signed key record (`bauxite operator sign` prints it); the hub
    /// distributes it with the node so nodes with the operator lock on accept it.
    Sign {
        /// The signed record (`bxop1.…`), or `-` to read it from stdin.
        record: String,
    },
    /// Print the node's key request (`bxkr1.…`) as the hub holds it, for `bauxite
    /// operator sign`. Prefer the one the node prints itself (`bauxite operator request`):
    /// this one is only as trustworthy as the hub.
    KeyRequest {
        /// The node's 32-hex-digit ID.
        id: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Set the policy from a JSON file (docs/policy.md): prints warnings and the change
    /// against the current policy first.
    Set {
        /// The policy file.
        file: PathBuf,
        /// Print the warnings and the change, set nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the current policy.
    Show,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the entries, oldest first (every entry unless limited), fetched page by page.
    Show {
        /// Print at most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// Start after the entry with this index (the first column).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Check the hash chain; exit 1 and name the first bad entry if it was tampered with.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 90s, 30m, 1h, 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald, files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
    tracing::info!("shutting down");
}

async fn serve(cli: &Cli, config: ServeConfig) -> Result<()> {
    let bound = BoundHub::bind(&config).await?;
    let hub = bound.hub();
    println!("bauxite-dispatch listening on {}", bound.addr()?);
    if let Some(addr) = bound.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    if let Some(addr) = bound.admin_ui_addr() {
        println!("admin UI on http://{addr}/");
    }
    let mesh = bound.mesh();
    println!(
        "mesh node {} ({}) on udp {}",
        mesh.record.virtual_ip, mesh.record.id, mesh.local_addr
    );
    println!("hub CA fingerprint {}", hub.ca().fingerprint());
    tracing::info!(addr = %bound.addr()?, mesh = %hub.cidr(), data_dir = %cli.data_dir.display(), "hub started");
    bound.run(shutdown_signal()).await?;
    Ok(())
}

async fn admin(cli: &Cli) -> Result<ExitCode> {
    // A bad policy file is reported without needing a running hub.
    if let Command::Policy(PolicyCommand::Set { file, .. }) = &cli.command {
        policy_review::load(file)?;
    }
    // The offline root steps run on a machine without a hub.
    if let Command::Package(PackageCommand::Keys(keys)) = &cli.command
        && let Some(code) = updates_cli::offline_keys(keys)?
    {
        return Ok(code);
    }
    let hub = HubClient::connect_admin(&cli.data_dir, cli.hub.as_deref()).await?;
    // Whole listings in one message: `nodes list` and the update listings at fleet scale
    // can exceed gRPC's default 4 MB (the audit log is paged).
    let mut admin = hub.admin().max_decoding_message_size(usize::MAX);
    match &cli.command {
        Command::Serve { .. } | Command::AdminPassword(_) | Command::Migrate { .. } => {
            bail!("not a command for a running hub")
        }
        Command::Package(command) => updates_cli::run(&mut admin, command).await?,
        Command::Update(command) => updates_cli::update(&mut admin, command).await?,
        Command::Token(TokenCommand::Create { ttl, uses, name }) => {
            let request = proto::CreateTokenRequest {
                ttl_seconds: *ttl,
                uses: *uses,
                name: name.clone(),
            };
            let token = admin.create_token(request).await?.into_inner();
            eprintln!(
                "token {} ({uses} use(s)) expires {}",
                token.token_id,
                UnixTime(token.expires_at_unix)
            );
            println!("{}", token.token);
        }
        Command::Nodes(NodesCommand::List) => {
            let nodes = admin
                .list_nodes(proto::ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            let updates = admin
                .list_updates(proto::ListUpdatesRequest {})
                .await?
                .into_inner()
                .nodes;
            print!("{}", updates_cli::nodes_table(&nodes, &updates));
        }
        Command::Nodes(NodesCommand::Revoke { id }) => {
            admin
                .revoke_node(proto::RevokeNodeRequest {
                    node_id: id.clone(),
                })
                .await?;
            println!("revoked {id}");
        }
        Command::Nodes(NodesCommand::Sign { record }) => {
            let text = if record == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                record.clone()
            };
            let answer = admin
                .sign_node(proto::SignNodeRequest {
                    signed_record: text.trim().to_owned(),
                })
                .await?
                .into_inner();
            println!(
                "operator signature stored for {} (topology version {})",
                answer.node_id, answer.version
            );
        }
        Command::Nodes(NodesCommand::KeyRequest { id }) => {
            let nodes = admin
                .list_nodes(proto::ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            let Some(node) = nodes.iter().find(|n| n.node_id == *id) else {
                bail!("no node with ID {id}; see `bauxite-dispatch nodes list`");
            };
            println!("{}", key_request(node)?);
        }
        Command::Policy(PolicyCommand::Set { file, dry_run }) => {
            let policy = policy_review::load(file)?;
            let current = admin
                .show_policy(proto::PolicyRequest {})
                .await?
                .into_inner();
            let current_policy = match current.version {
                0 => None,
                _ => Some(policy_review::parse(current.json.as_bytes()).map_err(|e| {
                    anyhow::anyhow!("the hub's current policy does not parse: {e}")
                })?),
            };
            let names: policy_review::NodeNames = admin
                .list_nodes(proto::ListNodesRequest {})
                .await?
                .into_inner()
                .nodes
                .into_iter()
                .filter(|n| !n.revoked)
                .filter_map(|n| Some((bauxite_conduit::PeerId::from_hex(&n.node_id)?, n.name)))
                .collect();
            for warning in policy_review::warnings(&policy, &names) {
                eprintln!("warning: {warning}");
            }
            let change = policy_review::diff(current_policy.as_ref(), &policy);
            let label = file.display().to_string();
            print!(
                "{}",
                policy_review::render(&label, current.version, &change, &names)
            );
            if *dry_run {
                println!("dry run: nothing was set");
            } else if change.unchanged {
                println!("policy version {} kept", current.version);
            } else {
                let json = serde_json::to_string(&policy)?;
                let doc = admin
                    .set_policy(proto::SetPolicyRequest { json })
                    .await?
                    .into_inner();
                println!("policy version {} set", doc.version);
            }
        }
        Command::Policy(PolicyCommand::Show) => {
            let doc = admin
                .show_policy(proto::PolicyRequest {})
                .await?
                .into_inner();
            if doc.version == 0 {
                println!("no policy set (nodes allow all traffic)");
            } else {
                println!("# version {}\n{}", doc.version, doc.json);
            }
        }
        Command::Audit(AuditCommand::Show { limit, after }) => {
            audit_show(&mut admin, *limit, *after).await?;
        }
        Command::Audit(AuditCommand::Verify) => {
            let report = admin
                .verify_audit(proto::VerifyAuditRequest {})
                .await?
                .into_inner();
            if report.ok {
                println!(
                    "audit log OK: {} entries, head {}",
                    report.entries, report.head
                );
            } else {
                println!("audit log TAMPERED: {}", report.problem);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit show`: pages through the log from `after`, printing up to `limit` entries; warns
/// (on stderr) when the hub could not verify the chain.
async fn audit_show(
    admin: &mut proto::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    limit: Option<u64>,
    mut after: Option<u64>,
) -> Result<()> {
    let mut left = limit.unwrap_or(u64::MAX);
    let mut problem = None;
    // Each page moves the cursor forward or ends the walk, and the log is finite; the
    // bound only stops a hub that keeps answering with more.
    for _ in 0..u32::MAX {
        if left == 0 {
            break;
        }
        let page = admin
            .show_audit(proto::ShowAuditRequest {
                after,
                limit: u32::try_from(left.min(audit::page::MAX_LIMIT as u64)).unwrap_or(u32::MAX),
            })
            .await?
            .into_inner();
        if !page.verified && problem.is_none() {
            problem = Some(page.problem);
        }
        for e in page
            .entries
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
        {
            let id = e.hash.get(..16).unwrap_or(&e.hash);
            println!(
                "{:>5}  {id}  {}  {:<16}  {:<18}  {}",
                e.index,
                UnixTime(e.at_unix),
                e.actor.get(..16).unwrap_or(&e.actor),
                e.action,
                e.detail
            );
        }
        left = left.saturating_sub(page.entries.len() as u64);
        match page.next_after {
            // The cursor moves forward (an undecodable entry is left out of the page but
            // still passed), or the walk would not end.
            Some(next) if after.is_none_or(|a| next > a) => after = Some(next),
            Some(next) => bail!("the hub's next audit page does not move on (after {next})"),
            None => break,
        }
    }
    if let Some(problem) = problem {
        eprintln!("audit log TAMPERED: {problem} (see `bauxite-dispatch audit verify`)");
    }
    Ok(())
}

/// `migrate`: the schema up to date, each applied migration named.
fn migrate(url: &str) -> Result<ExitCode> {
    let applied = bauxite_dispatch::store::postgres::migrate(url)?;
    for name in &applied {
        println!("applied {name}");
    }
    println!("PostgreSQL schema up to date ({} applied)", applied.len());
    Ok(ExitCode::SUCCESS)
}

/// `admin-password set`: the first line of stdin, hashed into the data dir.
fn set_admin_password(cli: &Cli) -> Result<ExitCode> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    let mut salt = [0u8; 16];
    bauxite_dispatch::clock::os_random(&mut salt)?;
    bauxite_dispatch::admin_ui::password::set(&cli.data_dir, password, &salt)?;
    println!(
        "admin UI password set in {}; restart the hub to use it",
        bauxite_dispatch::admin_ui::password::path(&cli.data_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `bxkr1.` request for a listed node.
fn key_request(node: &proto::NodeInfo) -> Result<String> {
    use bauxite_dispatch_api::operator::NodeKeyFacts;
    let key = |bytes: &[u8], what: &str| -> Result<[u8; 32]> {
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the hub sent a {}-byte {what}", bytes.len()))
    };
    let facts = NodeKeyFacts {
        node_id: bauxite_conduit::PeerId::from_hex(&node.node_id)
            .ok_or_else(|| anyhow::anyhow!("the hub sent a bad node ID {:?}", node.node_id))?,
        ed25519: key(&node.ed25519_public, "Ed25519 key")?,
        x25519: key(&node.x25519_public, "X25519 key")?,
        virtual_ip: node
            .virtual_ip
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| anyhow::anyhow!("the hub sent a bad address {:?}", node.virtual_ip))?
            .into(),
    };
    // Re-parsed so a node ID that does not derive from its key is refused here too.
    Ok(NodeKeyFacts::from_text(&facts.to_text())?.to_text())
}

/// An error and the causes its text does not already contain, on one line: typed errors
/// that embed their cause (and wrappers that repeat it) are printed once.
fn one_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve {
            listen,
            mesh_cidr,
            metrics_listen,
            confirm_within,
            node_cert_validity,
            log_format,
            mesh_listen,
            mesh_advertise,
            root_key_out,
            admin_ui_listen,
            turn_urls,
            turn_secret_file,
            turn_ttl,
            postgres,
            replica_url,
        } => {
            init_logs(*log_format);
            let turn = if turn_urls.is_empty() {
                None
            } else {
                match bauxite_dispatch::turn::TurnConfig::load(
                    turn_urls.clone(),
                    turn_secret_file.as_deref(),
                    *turn_ttl,
                ) {
                    Ok(turn) => Some(turn),
                    Err(e) => {
                        eprintln!("bauxite-dispatch: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            let config = ServeConfig {
                mesh_cidr: *mesh_cidr,
                metrics_listen: *metrics_listen,
                confirm_window_secs: *confirm_within,
                node_cert_validity_secs: *node_cert_validity,
                mesh_listen: *mesh_listen,
                mesh_advertise: *mesh_advertise,
                root_key_out: root_key_out.clone(),
                admin_ui_listen: *admin_ui_listen,
                turn,
                postgres: postgres.clone(),
                replica_url: replica_url.clone(),
                ..ServeConfig::new(*listen, cli.data_dir.clone())
            };
            serve(&cli, config).await.map(|()| ExitCode::SUCCESS)
        }
        Command::AdminPassword(AdminPasswordCommand::Set) => set_admin_password(&cli),
        Command::Migrate { postgres } => migrate(postgres),
        _ => admin(&cli).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bauxite-dispatch: {}", one_message(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
