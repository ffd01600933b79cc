//! The seed's results table and appendix timeline, from the measurements of every trial:
//! each figure is the median over the trials with the range beside it. Nothing here is a
//! typed-in number; a row whose measurement is missing says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::phases::{Kind, Outcome};

/// One trial: the outcome of each phase that ran.
#[derive(Debug, Default)]
pub(crate) struct Trial {
    pub(crate) phases: BTreeMap<Kind, Outcome>,
}

/// Facts measured once for the whole run.
#[derive(Debug, Default)]
pub(crate) struct RunFacts {
    pub(crate) hub_peak_rss_mib: Option<f64>,
    /// Key types that signed the TUF root, from the hub's `root.json`.
    pub(crate) root_signatures: Vec<String>,
    /// Key types of the targets role.
    pub(crate) targets_keys: Vec<String>,
}

/// Median, min and max of `v` (sorted copy); `None` when empty.
pub(crate) fn summary(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

/// `median [min–max]` with `f` formatting each value; the range only when it differs.
fn fmt_summary(v: &[f64], f: impl Fn(f64) -> String) -> String {
    match summary(v) {
        None => "not measured".into(),
        Some((m, lo, hi)) if lo == hi => f(m),
        Some((m, lo, hi)) => format!("{} [{}–{}]", f(m), f(lo), f(hi)),
    }
}

fn metric(trials: &[Trial], kind: Kind, key: &str) -> Vec<f64> {
    trials
        .iter()
        .filter_map(|t| t.phases.get(&kind)?.metrics.get(key).copied())
        .collect()
}

fn metric_all(trials: &[Trial], key: &str) -> Vec<f64> {
    Kind::ALL
        .iter()
        .flat_map(|k| metric(trials, *k, key))
        .collect()
}

fn count(trials: &[Trial], kind: Kind, pred: impl Fn(&Outcome) -> bool) -> String {
    let ran: Vec<&Outcome> = trials.iter().filter_map(|t| t.phases.get(&kind)).collect();
    let ok = ran.iter().filter(|o| pred(o)).count();
    format!("{ok}/{}", ran.len())
}

fn has_state(o: &Outcome, state: &str) -> bool {
    o.events.iter().any(|e| e.state == state)
}

fn bytes(b: f64) -> String {
    if b >= f64::from(1u32 << 30) {
        format!("{:.2} GiB", b / f64::from(1u32 << 30))
    } else if b >= f64::from(1u32 << 20) {
        format!("{:.1} MiB", b / f64::from(1u32 << 20))
    } else if b >= 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn us(v: f64) -> String {
    format!("{v:.0}")
}

/// The results table (the seed's section 4), measured.
pub(crate) fn results_table(trials: &[Trial], facts: &RunFacts) -> String {
    use Kind::*;
    let n = trials.len();
    let mut rows: Vec<(&str, String)> = Vec::new();
    let size = fmt_summary(&metric(trials, Clean, "image_bytes"), bytes);
    let chunks = fmt_summary(&metric(trials, Clean, "chunk_count"), |v| format!("{v:.0}"));
    rows.push((
        "Firmware package size",
        format!("{size} (virtual payload), {chunks} chunks of 64 KiB"),
    ));
    rows.push((
        "Clean deployment, deploy to active",
        format!(
            "{} s ({} MB/s); transfer PENDING_VALIDATION to VALID {} s",
            fmt_summary(
                &metric(trials, Clean, "deploy_to_committed_s"),
                |v| format!("{v:.1}")
            ),
            fmt_summary(&metric(trials, Clean, "throughput_mb_s"), |v| if v < 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }),
            fmt_summary(&metric(trials, Clean, "transfer_s"), |v| format!("{v:.1}")),
        ),
    ));
    rows.push((
        "Resume capability",
        format!(
            "CHECKPOINT_LOADED in {} trials: cut at {} %, resumed from chunk {} ({} %)",
            count(trials, PowerCut, |o| has_state(o, "CHECKPOINT_LOADED")),
            fmt_summary(&metric(trials, PowerCut, "cut_percent"), |v| format!(
                "{v:.1}"
            )),
            fmt_summary(&metric(trials, PowerCut, "resumed_chunks"), |v| format!(
                "{v:.0}"
            )),
            fmt_summary(&metric(trials, PowerCut, "resumed_percent"), |v| format!(
                "{v:.1}"
            )),
        ),
    ));
    rows.push((
        "Data retransferred after power cut",
        format!(
            "{} of verified chunks; fetched after the restart {} = the {} the checkpoint lacked",
            fmt_summary(&metric(trials, PowerCut, "verified_bytes_refetched"), bytes),
            fmt_summary(&metric(trials, PowerCut, "bytes_after_restart"), bytes),
            fmt_summary(&metric(trials, PowerCut, "bytes_missing_at_restart"), bytes),
        ),
    ));
    rows.push((
        "Chunk-level verification",
        format!(
            "BLAKE3 per chunk: {} chunks verified per clean update, {} rejected; link \
             duplicates {}",
            fmt_summary(&metric(trials, Clean, "chunks_verified"), |v| format!(
                "{v:.0}"
            )),
            fmt_summary(&metric_all(trials, "chunks_rejected"), |v| format!(
                "{v:.0}"
            )),
            fmt_summary(&metric_all(trials, "bytes_retransferred"), bytes),
        ),
    ));
    rows.push((
        "Cryptographic signature gate",
        format!(
            "TUF root signed by {}, targets key {}; tampered staged image \
             INVALID_SIGNATURE_REJECTED in {} trials, {} ms after the tamper",
            join_or(&facts.root_signatures, "?"),
            join_or(&facts.targets_keys, "?"),
            count(trials, Tampered, |o| has_state(
                o,
                "INVALID_SIGNATURE_REJECTED"
            )),
            fmt_summary(
                &metric(trials, Tampered, "tamper_to_rejected_ms"),
                |v| format!("{v:.0}")
            ),
        ),
    ));
    rows.push((
        "Staging area isolation",
        format!(
            "versions/<version>/ per update; purged after rejection in {} trials",
            count(trials, Tampered, |o| o.metrics.get("staging_purged")
                == Some(&1.0)),
        ),
    ));
    rows.push((
        "Rollback / activation",
        format!(
            "ATOMIC_ROLLED_BACK with `current` unchanged in {} trials; activation (VALID to \
             ACTIVATED, rename of the symlink) {} ms",
            count(trials, Tampered, |o| o.failures.is_empty()
                && has_state(o, "ATOMIC_ROLLED_BACK")),
            fmt_summary(&metric_all(trials, "valid_to_activated_ms"), |v| format!(
                "{v:.0}"
            )),
        ),
    ));
    rows.push((
        "Control loop RTT, idle (µs)",
        format!(
            "p50 {} / p99 {} / max {} (1 kHz, Critical lane, {} probes per phase)",
            fmt_summary(&metric_all(trials, "idle_p50_us"), us),
            fmt_summary(&metric_all(trials, "idle_p99_us"), us),
            fmt_summary(&metric_all(trials, "idle_max_us"), us),
            fmt_summary(&metric_all(trials, "idle_probes"), |v| format!("{v:.0}")),
        ),
    ));
    rows.push((
        "Control loop RTT, during update (µs)",
        format!(
            "p50 {} / p99 {} / max {} (loss {} %)",
            fmt_summary(&metric_all(trials, "during_p50_us"), us),
            fmt_summary(&metric_all(trials, "during_p99_us"), us),
            fmt_summary(&metric_all(trials, "during_max_us"), us),
            fmt_summary(&metric_all(trials, "during_loss_percent"), |v| format!(
                "{v:.2}"
            )),
        ),
    ));
    rows.push((
        "Peak RSS (VmHWM)",
        format!(
            "robot daemon {} MiB, hub {} MiB",
            fmt_summary(&metric_all(trials, "robot_peak_rss_mib"), |v| format!(
                "{v:.1}"
            )),
            facts
                .hub_peak_rss_mib
                .map_or("not measured".into(), |v| format!("{v:.1}")),
        ),
    ));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "OTA update resiliency and security metrics ({n}-trial summary: median [min–max])\n"
    );
    let _ = writeln!(out, "| Metric | Bauxite, measured |");
    let _ = writeln!(out, "| :--- | :--- |");
    for (k, v) in rows {
        let _ = writeln!(out, "| **{k}** | {v} |");
    }
    out
}

fn join_or(v: &[String], none: &str) -> String {
    if v.is_empty() {
        none.to_owned()
    } else {
        v.join(", ")
    }
}

/// One aggregated timeline row.
struct Row {
    state: String,
    times: Vec<f64>,
    chunks: Vec<f64>,
    percents: Vec<f64>,
    refetched: Vec<f64>,
}

/// The appendix: every phase's state changes and progress marks, time from the
/// deployment command, aggregated over the trials by row.
pub(crate) fn timeline(trials: &[Trial]) -> String {
    let mut out = String::new();
    let n = trials.len();
    let _ = writeln!(
        out,
        "Checkpoint and update progress log ({n} trials: median [min–max]; time from the \
         deploy command)\n"
    );
    let _ = writeln!(
        out,
        "| Time (s) | Phase | Chunk Index | Progress (%) | State | Verified Bytes Retransferred |"
    );
    let _ = writeln!(out, "| :---: | :---: | :---: | :---: | :--- | :---: |");
    for kind in Kind::ALL {
        // In the order first seen (the agent's order for states of one instant).
        let mut rows: Vec<(String, Row)> = Vec::new();
        for t in trials {
            let Some(o) = t.phases.get(&kind) else {
                continue;
            };
            for e in &o.events {
                let i = match rows.iter().position(|(k, _)| *k == e.key) {
                    Some(i) => i,
                    None => {
                        rows.push((
                            e.key.clone(),
                            Row {
                                state: e.state.clone(),
                                times: Vec::new(),
                                chunks: Vec::new(),
                                percents: Vec::new(),
                                refetched: Vec::new(),
                            },
                        ));
                        rows.len() - 1
                    }
                };
                let r = &mut rows[i].1;
                r.times.push(e.unix_ms.saturating_sub(o.t0_ms) as f64 / 1e3);
                r.chunks.extend(e.chunk.map(|c| c as f64));
                r.percents.extend(e.percent);
                r.refetched.extend(e.refetched.map(|b| b as f64));
            }
        }
        let mut rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
        rows.sort_by(|a, b| {
            let ma = summary(&a.times).map_or(0.0, |s| s.0);
            let mb = summary(&b.times).map_or(0.0, |s| s.0);
            ma.total_cmp(&mb)
        });
        for r in rows {
            let dash = |v: &[f64], f: &dyn Fn(f64) -> String| {
                if v.is_empty() {
                    "—".to_owned()
                } else {
                    fmt_summary(v, f)
                }
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                fmt_summary(&r.times, |v| format!("{v:.2}")),
                kind.label(),
                dash(&r.chunks, &|v| format!("{v:.0}")),
                dash(&r.percents, &|v| format!("{v:.1}")),
                r.state,
                dash(&r.refetched, &|v| format!("{v:.0}")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Event;

    #[test]
    fn summary_is_median_and_range() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&[f64::NAN, 5.0]), Some((5.0, 5.0, 5.0)));
    }

    fn event(key: &str, ms: u64, chunk: u64) -> Event {
        Event {
            key: key.into(),
            state: key.into(),
            unix_ms: ms,
            chunk: Some(chunk),
            percent: Some(chunk as f64),
            refetched: Some(0),
        }
    }

    fn power_cut(t0: u64, cut: f64, refetched: f64) -> Trial {
        let mut o = Outcome {
            t0_ms: t0,
            ..Outcome::default()
        };
        // Two states of one instant keep the agent's order.
        o.events = vec![
            event("PENDING_VALIDATION", t0 + 10, 0),
            event("POWER_FAILURE_CUT", t0 + 4000, 47),
            event("CHECKPOINT_LOADED", t0 + 4000, 47),
            event("VALID", t0 + 9000, 100),
        ];
        o.metrics.insert("cut_percent", cut);
        o.metrics.insert("verified_bytes_refetched", refetched);
        let mut t = Trial::default();
        t.phases.insert(Kind::PowerCut, o);
        t
    }

    #[test]
    fn tables_show_medians_ranges_and_the_agent_order() {
        let trials = [
            power_cut(1_000, 47.0, 0.0),
            power_cut(50_000, 48.0, 0.0),
            power_cut(90_000, 47.5, 0.0),
        ];
        let table = results_table(&trials, &RunFacts::default());
        assert!(table.contains("cut at 47.5 [47.0–48.0] %"), "{table}");
        assert!(table.contains("| 0 B of verified chunks"), "{table}");
        // A phase that did not run is not measured, never zero.
        assert!(table.contains("not measured"), "{table}");
        let tl = timeline(&trials);
        let cut = tl.find("POWER_FAILURE_CUT").unwrap();
        let loaded = tl.find("CHECKPOINT_LOADED").unwrap();
        assert!(cut < loaded, "{tl}");
        assert!(
            tl.contains("| 4.00 | Power Cut | 47 | 47.0 | POWER_FAILURE_CUT | 0 |"),
            "{tl}"
        );
    }
}
