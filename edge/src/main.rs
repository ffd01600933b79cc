//! The `bauxite` edge binary: argument parsing, logging, the clock, and exit codes.
//! All logic lives in the `bauxite` library.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser as _;
use time::OffsetDateTime;

use bauxite::config::{Config, RunConfig};
use bauxite::precheck::epoch::NoCrash;
use bauxite::precheck::exit::{ExitStatus, exit_status};
use bauxite::precheck::fingerprint::{CompositeHash, OsSources};
use bauxite::precheck::state_root::{SKIP_MOUNT_CHECK_ENV, StateRoot};
use bauxite::precheck::{self, Clock};
use bauxite::{cert_cmd, fingerprint_cmd, keygen, manifest_cmd};
use cli::{
    CertCommand, Cli, Command, FingerprintCommand, LogFormat, ManifestCommand, OperatorCommand,
    RosCommand, TufClientAction, UpdateCommand,
};

/// The real clocks; the only place the binary reads time.
struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from(SystemTime::now())
    }
    #[allow(clippy::disallowed_methods)]
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// `default_level` applies unless `RUST_LOG` says otherwise.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a person at a terminal: journald, files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        // journald stamps each line; a second timestamp would be noise.
        LogFormat::Text => builder.without_time().init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a report: its nodes' routine events would interleave with it.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    let clock = SystemClock::new();
    match cli.command {
        Command::Precheck(args) => run_precheck(&cli.config, args, &clock),
        Command::Run => match bauxite::run_cmd::run(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", bauxite::error::one_message(&e));
                ExitCode::from(e.exit_code())
            }
        },
        command => match run_tool(&cli.config, command, &clock) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", bauxite::error::one_message(e.as_ref()));
                ExitCode::from(ExitStatus::Config.code())
            }
        },
    }
}

fn run_precheck(
    config: &std::path::Path,
    args: cli::PrecheckArgs,
    clock: &SystemClock,
) -> ExitCode {
    let req = precheck::Request {
        config_path: config.to_path_buf(),
        skip_mount_check: std::env::var(SKIP_MOUNT_CHECK_ENV).is_ok_and(|v| v == "1"),
        os: OsSources {
            os_release: args.os_release,
            usr_lib_os_release: args.usr_lib_os_release,
            kernel_release: args.kernel_release,
        },
    };
    match precheck::run(&req, clock, &mut NoCrash, &mut |e| e.log()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let status = exit_status(&e);
            let event = match status {
                ExitStatus::Reconstruction => "edge.os.reconstruction_failed",
                _ => "edge.precheck.failed",
            };
            tracing::error!(exit_code = status.code(), error = %e, "{event}");
            ExitCode::from(status.code())
        }
    }
}

fn run_operator(
    config: &std::path::Path,
    command: OperatorCommand,
    clock: &SystemClock,
) -> anyhow::Result<()> {
    use bauxite::operator_cmd;
    match command {
        OperatorCommand::Keygen { out, force } => {
            let paths = operator_cmd::keygen(&out, &bauxite::keygen::os_seed()?, force)?;
            println!("operator public key:  {}", paths.public.display());
            println!(
                "operator private key: {} (mode 0600; keep it off the hub)",
                paths.private.display()
            );
        }
        OperatorCommand::Request => {
            let run = RunConfig::load(config)?;
            let identity = bauxite_conduit::identity::Identity::load(&run.identity)
                .with_context(|| format!("reading {}", run.identity.display()))?;
            let facts = bauxite::operator_lock::own_facts(&identity.public(), run.virtual_ip);
            println!("{}", facts.to_text());
        }
        OperatorCommand::Sign {
            key,
            request,
            valid_days,
            serial,
        } => {
            anyhow::ensure!(
                (1..=3650).contains(&valid_days),
                "--valid-days must be 1 to 3650"
            );
            let request = if request == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                request
            };
            let key = operator_cmd::load_signing_key(&key)?;
            let now = u64::try_from(clock.now().unix_timestamp()).unwrap_or(0);
            let signed = operator_cmd::sign(
                &key,
                &request,
                now.saturating_add(valid_days * 86_400),
                serial.unwrap_or(now),
            )?;
            eprintln!(
                "signed node {} ({}) until unix {}, serial {}",
                signed.record.facts.node_id,
                signed.record.facts.virtual_ip,
                signed.record.not_after,
                signed.record.serial
            );
            println!("{}", signed.to_text());
        }
    }
    Ok(())
}

fn state_root_of(config: &std::path::Path, explicit: Option<PathBuf>) -> anyhow::Result<StateRoot> {
    let root = match explicit {
        Some(r) => r,
        None => Config::load(config)?.state_root,
    };
    let root = std::fs::canonicalize(&root)
        .with_context(|| format!("state root {} does not exist", root.display()))?;
    Ok(StateRoot::at(root))
}

fn run_tool(config: &std::path::Path, command: Command, clock: &SystemClock) -> anyhow::Result<()> {
    match command {
        Command::Precheck(_) => unreachable!("dispatched in main"),
        Command::Demo(args) => {
            let options = bauxite::demo::DemoOptions {
                link_mbps: args.link_mbps,
                bulk_seconds: args.bulk_seconds,
                seed: args.seed,
            };
            #[allow(clippy::disallowed_methods)] // the simulator's virtual clock starts here
            let start = Instant::now();
            bauxite::demo::run(&mut std::io::stdout().lock(), options, start)?;
        }
        Command::Update(UpdateCommand::TufClient(args)) => run_tuf_client(args, clock)?,
        Command::Update(command) => run_update(config, command)?,
        Command::Ros(command) => {
            let run = RunConfig::load(config)?;
            let env = bauxite::ros_cmd::resolve(&run, || bauxite::ros_cmd::daemon_view(&run))?;
            match command {
                RosCommand::Env => print!("{}", env.exports()),
                RosCommand::Exec { command } => {
                    return Err(bauxite::ros_cmd::exec(&env, &command).into());
                }
            }
        }
        Command::Ping(args) => {
            let run = RunConfig::load(config)?;
            let request = bauxite::ping::PingRequest {
                target: args.target,
                rate_hz: args.rate,
                count: args.count,
                size: args.size,
            };
            request.check().map_err(anyhow::Error::msg)?;
            let report = bauxite::control::query_ping(&run.control_socket, &request)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            anyhow::ensure!(
                report.stats.received > 0,
                "no reply from {} to {} probes",
                report.virtual_ip,
                report.stats.sent
            );
        }
        Command::Join(args) => {
            // Without --name the hub names the node after the token (`token create --name`).
            let name = args.name.unwrap_or_default();
            let options = bauxite::join_cmd::JoinOptions {
                token: args.token,
                hub_url: args.hub_url,
                state_root: args.state_root,
                name,
                listen: args.listen,
                advertise: args.advertise,
                control_socket: args.control_socket,
                force: args.force,
                update_root: args.update_root,
                operator_keys: args.operator_keys,
            };
            let joined = bauxite::join_cmd::run_blocking(&options)?;
            println!(
                "joined as {} with virtual IP {}; config written to {}",
                joined.node_id,
                joined.virtual_ip,
                joined.config.display()
            );
            if let Some(why) = &joined.unconfirmed {
                let by = time::OffsetDateTime::from_unix_timestamp(
                    i64::try_from(joined.confirm_by_unix).unwrap_or(i64::MAX),
                )
                .map(precheck::fingerprint::rfc3339)
                .unwrap_or_else(|_| joined.confirm_by_unix.to_string());
                eprintln!(
                    "warning: the hub has not confirmed this node yet ({why}); `bauxite run` \
                     confirms it on its first connection, which must happen before {by}, \
                     or the registration expires and the node must join again"
                );
            }
            match (&joined.update_root, &joined.update_root_warning) {
                (Some((path, origin)), _) => println!(
                    "update root ({}) trusted: {}",
                    match origin {
                        bauxite::update_agent::trust::RootOrigin::Pinned =>
                            "pinned with --update-root",
                        bauxite::update_agent::trust::RootOrigin::Hub => "from the hub",
                    },
                    path.display()
                ),
                (None, Some(warning)) => eprintln!("warning: {warning}"),
                (None, None) => {}
            }
            if let Some((path, keys)) = &joined.operator_keys {
                println!(
                    "operator lock on: {keys} operator key(s) pinned in {}; peers are accepted only \
                     with a signed key record. This node's own request, for the operator to sign: {}",
                    path.display(),
                    joined.key_request
                );
            }
            println!(
                "start the node with: bauxite run --config {}",
                joined.config.display()
            );
        }
        Command::Run => unreachable!("dispatched in main"),
        Command::Operator(command) => run_operator(config, command, clock)?,
        Command::Status(args) => {
            let run = RunConfig::load(config)?;
            let report = bauxite::control::query_status(&run.control_socket)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
        }
        Command::Keygen(args) if !args.raw => {
            let path = match args.identity {
                Some(path) => path,
                None => {
                    RunConfig::load(config)
                        .context("pass --identity FILE, or a --config with [node] identity")?
                        .identity
                }
            };
            let (identity, created) = keygen::load_or_create_identity(&path)?;
            let verb = if created { "created" } else { "existing" };
            println!(
                "# {verb} identity {} (peer id {}); paste this into the other nodes' config:",
                path.display(),
                identity.peer_id()
            );
            print!("{}", keygen::peer_entry(&identity.public(), &args.name));
        }
        Command::Keygen(args) => {
            let out_dir = args.out_dir.context("--raw needs --out-dir DIR")?;
            let paths = keygen::write_raw_keypair(&out_dir, &keygen::os_seed()?, args.force)?;
            println!("public key:  {} (32 bytes, raw)", paths.public.display());
            println!(
                "private key: {} (32 bytes, raw, mode 0600)",
                paths.private.display()
            );
        }
        Command::Manifest(ManifestCommand::Sign { file, key }) => {
            let sig = manifest_cmd::sign(&file, &key)?;
            println!("signed: {} (64 bytes)", sig.display());
        }
        Command::Manifest(ManifestCommand::Verify { file, public_key }) => {
            manifest_cmd::verify(&file, &public_key)?;
            println!("signature OK: {}", file.display());
        }
        Command::Fingerprint(FingerprintCommand::Show { state_root, field }) => {
            let root = state_root_of(config, state_root)?;
            print!("{}", fingerprint_cmd::show(&root, field.as_deref())?);
        }
        Command::Fingerprint(FingerprintCommand::Tamper { state_root, hash }) => {
            let root = state_root_of(config, state_root)?;
            let hash: CompositeHash = hash.parse().map_err(anyhow::Error::msg)?;
            let (before, after) = fingerprint_cmd::tamper(&root, hash)?;
            println!(
                "before: composite_hash={} boot_epoch={}",
                before.composite_hash, before.boot_epoch
            );
            println!(
                "after:  composite_hash={} boot_epoch={} (simulated OS replacement)",
                after.composite_hash, after.boot_epoch
            );
        }
        Command::Cert(CertCommand::SelfSigned {
            cn,
            days,
            cert_out,
            key_out,
        }) => {
            let until = cert_cmd::write_self_signed(&cn, clock.now(), days, &cert_out, &key_out)?;
            println!(
                "certificate: {} valid until {}",
                cert_out.display(),
                precheck::fingerprint::rfc3339(until)
            );
        }
    }
    Ok(())
}

fn run_update(config: &std::path::Path, command: UpdateCommand) -> anyhow::Result<()> {
    use bauxite::control::UpdateRequest;
    use bauxite::update_cmd::agent;
    let socket = RunConfig::load(config)?.control_socket;
    let (request, json) = match command {
        UpdateCommand::TufClient(_) => unreachable!("dispatched in run_tool"),
        UpdateCommand::Status(args) => {
            let status = if args.follow {
                let timeout = args.timeout.map(Duration::from_secs);
                agent::follow(&socket, args.json, timeout, &mut std::io::stdout().lock())?
            } else {
                bauxite::control::query_update_status(&socket)?
            };
            if args.json && !args.follow {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else if !args.json {
                print!("{}", agent::render_status(&status));
            }
            return Ok(());
        }
        UpdateCommand::Check(a) => (UpdateRequest::Check, a.json),
        UpdateCommand::Apply(a) => (UpdateRequest::Apply, a.json),
        UpdateCommand::Rollback(a) => (UpdateRequest::Rollback, a.json),
        UpdateCommand::Heartbeat(a) => (UpdateRequest::Heartbeat, a.json),
    };
    let answer = agent::command(&socket, request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", agent::render_answer(request, &answer));
    }
    Ok(())
}

fn run_tuf_client(args: cli::TufClientArgs, clock: &SystemClock) -> anyhow::Result<()> {
    use bauxite::update_cmd::tuf_client;
    let now = jiff::Timestamp::from_second(clock.now().unix_timestamp())?;
    let need = |opt: Option<String>, flag: &str| opt.with_context(|| format!("{flag} is required"));
    match args.action {
        TufClientAction::Init { root_json } => {
            tuf_client::init(&args.metadata_dir, &root_json)?;
            println!("trusted root stored in {}", args.metadata_dir.display());
        }
        TufClientAction::Refresh => {
            let url = need(args.metadata_url, "--metadata-url")?;
            tuf_client::refresh(&args.metadata_dir, &url, now)?;
            println!("metadata up to date in {}", args.metadata_dir.display());
        }
        TufClientAction::Download => {
            let url = need(args.metadata_url, "--metadata-url")?;
            let base = need(args.target_base_url, "--target-base-url")?;
            let dir = args.target_dir.context("--target-dir is required")?;
            anyhow::ensure!(!args.target_names.is_empty(), "--target-name is required");
            let files = tuf_client::download(
                &args.metadata_dir,
                &url,
                &args.target_names,
                &base,
                &dir,
                now,
            )?;
            for file in files {
                println!("verified: {}", file.display());
            }
        }
    }
    Ok(())
}
