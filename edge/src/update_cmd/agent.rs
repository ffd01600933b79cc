//! `bauxite update status | check | apply | rollback | heartbeat`: the client side of
//! the daemon's update agent, over the control socket. `status --follow` draws a progress
//! bar (indicatif, with rate and ETA) on a terminal and prints one plain line per second
//! otherwise.
//!
//! Invariant: these commands only read and ask; every decision is the daemon's. A follow
//! loop is bounded by the agent's phase (it ends when nothing moves), by the daemon going
//! away, and by `--timeout`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::control::{self, ControlError, UpdateRequest};
use crate::update_agent::UpdateStatus;

/// How often `--follow` asks.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

fn rate(bps: f64) -> String {
    format!("{}/s", HumanBytes(bps.max(0.0) as u64))
}

fn eta(secs: Option<f64>) -> String {
    secs.map_or_else(
        || "-".to_owned(),
        |s| HumanDuration(Duration::from_secs_f64(s.clamp(0.0, 1e7))).to_string(),
    )
}

fn phase_name(s: &UpdateStatus) -> String {
    serde_json::to_value(s.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The status as text.
pub fn render_status(s: &UpdateStatus) -> String {
    let mut out = String::new();
    let hub = if s.hub_connected {
        "connected".to_owned()
    } else {
        format!("not connected ({})", s.hub_error.as_deref().unwrap_or("-"))
    };
    let _ = writeln!(out, "update agent: {}   hub: {hub}", phase_name(s));
    let state = s.state.as_deref().unwrap_or("-");
    match &s.assignment {
        Some(a) if !a.target.is_empty() => {
            let _ = writeln!(
                out,
                "state:     {state} (assigned {} {} as #{}{})",
                a.target,
                a.version,
                a.sequence,
                if a.rollback { ", rollback" } else { "" }
            );
        }
        _ => {
            let _ = writeln!(out, "state:     {state} (nothing assigned)");
        }
    }
    let _ = writeln!(
        out,
        "active:    {}   target: {}",
        s.active_version.as_deref().unwrap_or("none"),
        s.target_version.as_deref().unwrap_or("-")
    );
    if let Some(p) = &s.progress {
        let _ = writeln!(
            out,
            "progress:  {:.1}%  {}/{} chunks  {} of {}  {}  ETA {}",
            p.percent,
            p.chunks_done,
            p.chunk_count,
            HumanBytes(p.bytes_done),
            HumanBytes(p.image_len),
            rate(p.rate_bytes_per_sec),
            eta(p.eta_secs)
        );
        let _ = writeln!(
            out,
            "bytes:     transferred {}, retransferred {}, verified refetched {}, resumed {} chunks",
            HumanBytes(p.bytes_transferred),
            HumanBytes(p.bytes_retransferred),
            HumanBytes(p.verified_bytes_refetched),
            s.resumed_chunks
        );
    }
    if let Some(pr) = &s.probe {
        let _ = writeln!(
            out,
            "probe:     {} Hz  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  loss {:.1}% ({} sent)",
            s.probe_hz,
            pr.p50_us as f64 / 1e3,
            pr.p99_us as f64 / 1e3,
            pr.max_us as f64 / 1e3,
            pr.loss_percent,
            pr.sent
        );
    }
    if let Some(w) = &s.watchdog {
        let _ = writeln!(
            out,
            "watchdog:  {} start {} of {}, {} within {} s",
            w.version,
            w.attempt,
            w.max_starts,
            if w.heartbeat_required {
                "heartbeat required"
            } else {
                "no heartbeat required"
            },
            w.health_timeout_secs
        );
    }
    if let Some(r) = &s.recording {
        let _ = writeln!(out, "recording: {r}");
    }
    if let Some(d) = &s.detail {
        let _ = writeln!(out, "detail:    {d}");
    }
    out
}

/// One plain progress line (for `--follow` without a terminal).
pub fn render_line(s: &UpdateStatus, elapsed: Duration) -> String {
    let state = s.state.as_deref().unwrap_or("-");
    let mut line = format!(
        "[{:>6.1}s] {state} {}",
        elapsed.as_secs_f64(),
        phase_name(s)
    );
    if let Some(p) = &s.progress {
        let _ = write!(
            line,
            " {:.1}% {}/{} chunks {} ETA {} retransferred {}",
            p.percent,
            p.chunks_done,
            p.chunk_count,
            rate(p.rate_bytes_per_sec),
            eta(p.eta_secs),
            HumanBytes(p.bytes_retransferred)
        );
    }
    line
}

/// Follows the agent until nothing moves; returns the last status.
#[allow(clippy::disallowed_methods)] // a command's own elapsed time, read in its shell
pub fn follow(
    socket: &Path,
    json: bool,
    timeout: Option<Duration>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<UpdateStatus> {
    let terminal = !json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let bar = terminal.then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        // Rate and ETA come from the daemon (its meter sees every datagram); indicatif's
        // own estimate would start from the first poll, mid-transfer.
        let style = ProgressStyle::with_template("[{bar:40}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar
    });
    let start = std::time::Instant::now();
    let mut last_line = String::new();
    let mut polls = 0u64;
    // Bounded: ends when nothing moves, the daemon goes away, or the timeout passes.
    loop {
        polls += 1;
        let s = control::query_update_status(socket)?;
        if let Some(bar) = &bar {
            let (rate_text, eta_text) = s.progress.as_ref().map_or_else(
                || ("-".to_owned(), "-".to_owned()),
                |p| (rate(p.rate_bytes_per_sec), eta(p.eta_secs)),
            );
            bar.set_message(format!(
                "{rate_text} ETA {eta_text}  {} {}",
                s.state.as_deref().unwrap_or("-"),
                phase_name(&s)
            ));
            if let Some(p) = &s.progress {
                bar.set_length(p.image_len);
                bar.set_position(p.bytes_done);
            }
        } else if json {
            writeln!(out, "{}", serde_json::to_string(&s)?)?;
        } else {
            let line = render_line(&s, start.elapsed());
            // Once a second, or as soon as something changed.
            let key = line.split_once(']').map_or("", |(_, rest)| rest).to_owned();
            if key != last_line || polls % 2 == 1 {
                writeln!(out, "{line}")?;
                last_line = key;
            }
        }
        out.flush()?;
        if !s.phase.is_moving() {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(s);
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            anyhow::bail!(
                "the update is still {} after {:?} (--timeout)",
                phase_name(&s),
                timeout.unwrap_or_default()
            );
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Runs `check`, `apply`, `rollback` or `heartbeat`; returns the daemon's answer.
pub fn command(socket: &Path, request: UpdateRequest) -> Result<serde_json::Value, ControlError> {
    control::query_update(socket, request)
}

/// An answer as text.
pub fn render_answer(request: UpdateRequest, v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    match request {
        UpdateRequest::Check => match v.get("signed") {
            Some(signed) if !signed.is_null() => format!(
                "assigned: {} version {} ({} bytes, {} chunks); active: {}; newer than active: {}{}\n",
                signed["target"].as_str().unwrap_or("-"),
                signed["version"].as_str().unwrap_or("-"),
                signed["length"],
                signed["chunk_count"],
                s("active_version").unwrap_or_else(|| "none".into()),
                v["newer_than_active"],
                if v["blocked"].as_bool() == Some(true) {
                    "; BLOCKED (rolled back before)"
                } else {
                    ""
                }
            ),
            _ => format!(
                "nothing assigned; metadata up to date; active: {}\n",
                s("active_version").unwrap_or_else(|| "none".into())
            ),
        },
        UpdateRequest::Apply => {
            if let Some(version) = s("started") {
                format!("update to {version} started\n")
            } else if v.get("resumed").is_some() {
                "released from the hold point: verifying and activating\n".to_owned()
            } else if let Some(version) = s("already_active") {
                format!("{version} is already active\n")
            } else {
                format!("an update is already running ({})\n", v["phase"])
            }
        }
        UpdateRequest::Rollback => format!(
            "rolled back: current -> {}; {} is blocked\n",
            s("restored").unwrap_or_default(),
            s("rejected").unwrap_or_default()
        ),
        UpdateRequest::Heartbeat => {
            if v["awaiting_health"].as_bool() == Some(true) {
                format!(
                    "heartbeat for {}: {}\n",
                    s("version").unwrap_or_default(),
                    if v["committed"].as_bool() == Some(true) {
                        "committed"
                    } else {
                        "recorded"
                    }
                )
            } else {
                format!(
                    "no new version awaits a heartbeat (active: {})\n",
                    s("active_version").unwrap_or_else(|| "none".into())
                )
            }
        }
        UpdateRequest::Status => v.to_string(),
    }
}
