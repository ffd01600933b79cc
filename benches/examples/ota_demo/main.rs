//! The OTA demonstration's orchestrator (`docs/demos/ota_resilient/run.sh` builds and
//! runs it): a real hub and a real robot daemon on loopback, unprivileged, and the
//! seed's three phases per trial — clean deployment, `kill -9` at about 47 % and a
//! restart, 8 bytes tampered in the staged image — with a 1 kHz control loop on the
//! Critical lane idle and during each update. Prints one verdict line per phase, the
//! results table and the timeline from measured values, and writes one MCAP recording.
//! Exit status 0 only when every phase of every trial passed its checks.
//!
//! ```text
//! ota_demo --bauxite BIN --dispatch BIN --work DIR --out DIR [--trials N] [--size 3GiB]
//!          [--seed N] [--idle-probes N] [--cut-at 47] [--timeout SECS]
//!          [--hub-listen ADDR] [--robot-listen ADDR] [--hub-wrap CMD] [--robot-wrap CMD]
//! ```
//!
//! The last four put hub and robot in network namespaces (`benches/netns/ota.sh`: the
//! hub listens on ADDR, each side's processes start under `ip netns exec NS`) or at
//! real-time priority (`run.sh --rt`: `chrt -f 10`, as the systemd unit runs the
//! daemon). A wrap command must exec the program in place, so pids stay the real ones.

mod phases;
mod procs;
mod recording;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use phases::{Kind, Outcome, Params};
use procs::{Env, Hub, Robot, unix_ms};
use recording::DemoEvent;
use report::{RunFacts, Trial};

/// The stable version every trial starts from, and the three phases' versions.
const BASE: &str = "1.0.0";
const VERSIONS: [(Kind, &str); 3] = [
    (Kind::Clean, "2.0.0"),
    (Kind::PowerCut, "3.0.0"),
    (Kind::Tampered, "4.0.0"),
];

#[derive(Debug)]
struct Args {
    bauxite: PathBuf,
    dispatch: PathBuf,
    work: PathBuf,
    out: PathBuf,
    trials: u32,
    size: String,
    seed: u64,
    idle_probes: u64,
    cut_at: f64,
    timeout_secs: u64,
    hub_listen: String,
    robot_listen: String,
    hub_wrap: Vec<String>,
    robot_wrap: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        bauxite: PathBuf::new(),
        dispatch: PathBuf::new(),
        work: PathBuf::new(),
        out: PathBuf::new(),
        trials: 10,
        size: "3GiB".into(),
        seed: 2026,
        idle_probes: 3000,
        cut_at: 47.0,
        timeout_secs: 600,
        hub_listen: "127.0.0.1:0".into(),
        robot_listen: "127.0.0.1:0".into(),
        hub_wrap: Vec::new(),
        robot_wrap: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bauxite" => a.bauxite = val()?.into(),
            "--dispatch" => a.dispatch = val()?.into(),
            "--work" => a.work = val()?.into(),
            "--out" => a.out = val()?.into(),
            "--trials" => a.trials = val()?.parse()?,
            "--size" => a.size = val()?,
            "--seed" => a.seed = val()?.parse()?,
            "--idle-probes" => a.idle_probes = val()?.parse()?,
            "--cut-at" => a.cut_at = val()?.parse()?,
            "--timeout" => a.timeout_secs = val()?.parse()?,
            "--hub-listen" => a.hub_listen = val()?,
            "--robot-listen" => a.robot_listen = val()?,
            "--hub-wrap" => a.hub_wrap = val()?.split_whitespace().map(String::from).collect(),
            "--robot-wrap" => {
                a.robot_wrap = val()?.split_whitespace().map(String::from).collect();
            }
            other => bail!("unknown argument {other}"),
        }
    }
    for (p, name) in [
        (&a.bauxite, "--bauxite"),
        (&a.dispatch, "--dispatch"),
        (&a.work, "--work"),
        (&a.out, "--out"),
    ] {
        if p.as_os_str().is_empty() {
            bail!("{name} is required");
        }
    }
    if a.trials == 0 || !(1.0..99.0).contains(&a.cut_at) {
        bail!("--trials must be at least 1 and --cut-at between 1 and 99");
    }
    Ok(a)
}

/// Key types of the root's signatures and of the targets role, from the hub's
/// published `root.json`.
fn root_facts(hub_data: &Path, facts: &mut RunFacts) {
    let Ok(bytes) = fs::read(hub_data.join("updates/repo/metadata/root.json")) else {
        return;
    };
    let Ok(root) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return;
    };
    let keys = &root["signed"]["keys"];
    let keytype = |id: &serde_json::Value| {
        id.as_str()
            .and_then(|id| keys[id]["keytype"].as_str())
            .unwrap_or("unknown")
            .to_owned()
    };
    if let Some(sigs) = root["signatures"].as_array() {
        facts.root_signatures = sigs
            .iter()
            .map(|s| format!("1 {} key", keytype(&s["keyid"])))
            .collect();
    }
    if let Some(ids) = root["signed"]["roles"]["targets"]["keyids"].as_array() {
        facts.targets_keys = ids.iter().map(keytype).collect();
    }
}

fn run_phase(hub: &Hub, robot: &mut Robot, kind: Kind, v: &str, p: &Params) -> Result<Outcome> {
    match kind {
        Kind::Clean => phases::clean(hub, robot, v, p),
        Kind::PowerCut => phases::power_cut(hub, robot, v, p),
        Kind::Tampered => phases::tampered(hub, robot, v, p),
    }
}

fn phase_title(kind: Kind) -> &'static str {
    match kind {
        Kind::Clean => "phase 1 (clean deployment)",
        Kind::PowerCut => "phase 2 (power cut: kill -9, restart)",
        Kind::Tampered => "phase 3 (8 bytes tampered in the staged image)",
    }
}

fn main() -> Result<()> {
    // `run` returns only after every process it started was stopped and dropped.
    if run(&parse_args()?)? {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// The whole demonstration; `Ok(false)` when a check failed.
fn run(a: &Args) -> Result<bool> {
    fs::create_dir_all(&a.out)?;
    let rec_dir = a.out.join("recordings");
    fs::create_dir_all(&rec_dir)?;
    let env = Env {
        bauxite: a.bauxite.clone(),
        dispatch: a.dispatch.clone(),
        work: a.work.clone(),
        hub_listen: a.hub_listen.clone(),
        robot_listen: a.robot_listen.clone(),
        hub_wrap: a.hub_wrap.clone(),
        robot_wrap: a.robot_wrap.clone(),
    };
    let params = Params {
        idle_probes: a.idle_probes,
        cut_at_percent: a.cut_at,
        limit: Duration::from_secs(a.timeout_secs),
    };

    println!(
        "hub: bauxite-dispatch serve --listen {} (data in {})",
        a.hub_listen,
        a.work.join("hub").display()
    );
    let hub = Hub::start(&env)?;
    hub.admin(&[
        "package",
        "create",
        "--version",
        BASE,
        "--virtual-size",
        "1MiB",
        "--seed",
        &a.seed.to_string(),
    ])?;
    for (i, (_, v)) in VERSIONS.iter().enumerate() {
        let t = unix_ms();
        let seed = (a.seed + 1 + i as u64).to_string();
        hub.admin(&[
            "package",
            "create",
            "--version",
            v,
            "--virtual-size",
            &a.size,
            "--seed",
            &seed,
        ])?;
        println!(
            "hub: package firmware {v} created ({} virtual, seed {seed}) in {:.1} s",
            a.size,
            unix_ms().saturating_sub(t) as f64 / 1e3
        );
    }

    let mut trials = Vec::new();
    let mut events = Vec::new();
    let mut recordings = Vec::new();
    let mut failures = Vec::new();
    for n in 1..=a.trials {
        let mut trial = Trial::default();
        let name = format!("robot-{n}");
        let mut robot = Robot::join(&env, &hub, &name)?;
        robot.start(phases::UPDATES)?;
        phases::install_base(&hub, &mut robot, BASE, &params)
            .with_context(|| format!("trial {n}: installing {BASE}"))?;
        println!(
            "trial {n}/{}: robot {name} joined, daemon running (in-memory device), {BASE} active",
            a.trials
        );
        for (kind, v) in VERSIONS {
            events.push(DemoEvent {
                unix_ms: unix_ms(),
                trial: n,
                phase: kind.label(),
                event: format!("{} starts: deploy {v}", phase_title(kind)),
            });
            match run_phase(&hub, &mut robot, kind, v, &params) {
                Ok(o) => {
                    let pass = o.failures.is_empty();
                    println!(
                        "trial {n}/{} {}: {} -> {}",
                        a.trials,
                        phase_title(kind),
                        o.verdict,
                        if pass { "PASS" } else { "FAIL" }
                    );
                    for f in &o.failures {
                        println!("    check failed: {f}");
                        failures.push(format!("trial {n} {}: {f}", phase_title(kind)));
                    }
                    for e in &o.events {
                        events.push(DemoEvent {
                            unix_ms: e.unix_ms,
                            trial: n,
                            phase: kind.label(),
                            event: e.state.clone(),
                        });
                    }
                    trial.phases.insert(kind, o);
                }
                Err(e) => {
                    println!(
                        "trial {n}/{} {}: ERROR {e:#} -> FAIL",
                        a.trials,
                        phase_title(kind)
                    );
                    failures.push(format!("trial {n} {}: {e:#}", phase_title(kind)));
                    break;
                }
            }
        }
        let dir = rec_dir.join(format!("trial-{n}"));
        fs::create_dir_all(&dir)?;
        for r in robot.recordings() {
            if let Some(file) = r.file_name() {
                let to = dir.join(file);
                fs::copy(&r, &to)?;
                recordings.push(to);
            }
        }
        robot.stop()?;
        drop(robot);
        trials.push(trial);
    }

    let mut facts = RunFacts {
        hub_peak_rss_mib: procs::peak_rss_kib(hub.proc.pid()).map(|k| k as f64 / 1024.0),
        ..RunFacts::default()
    };
    root_facts(&a.work.join("hub"), &mut facts);
    let table = report::results_table(&trials, &facts);
    let timeline = report::timeline(&trials);
    println!("\n{table}\n{timeline}");
    let mcap = a.out.join("ota_resilient.mcap");
    let count = recording::merge(&recordings, &events, &mcap)?;
    fs::write(a.out.join("results.md"), format!("{table}\n{timeline}"))?;
    println!(
        "recording: {} ({count} messages; open it in Foxglove with docs/demos/ota_resilient/foxglove_layout.json)",
        mcap.display()
    );
    println!("tables: {}", a.out.join("results.md").display());
    let phases_run: usize = trials.iter().map(|t| t.phases.len()).sum();
    if failures.is_empty() && phases_run == 3 * a.trials as usize {
        println!("RESULT: PASS ({phases_run} phases in {} trials)", a.trials);
        Ok(true)
    } else {
        println!("RESULT: FAIL");
        for f in &failures {
            println!("  {f}");
        }
        Ok(false)
    }
}
