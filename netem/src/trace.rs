//! The trace file format: plain text, one step per line,
//!
//! ```text
//! # time_ms rate_kbit delay_ms      (comments and blank lines are ignored)
//! 0     30000 20
//! 1000   5000 38
//! 2500      0 38                    (rate 0: an outage until the next step)
//! period 6000                       (optional: the trace repeats every 6 s)
//! ```
//!
//! Times are strictly increasing milliseconds since the start; rates are kbit/s; delays
//! are one-way milliseconds. Everything else (jitter, loss, buffer) comes from the base
//! impairments the trace is applied to.

use std::fmt::Write as _;
use std::time::Duration;

use crate::{Error, Impairments, Profile, Step};

/// Longest line accepted: a trace is small text, anything longer is not one.
const MAX_LINE: usize = 256;

/// Parses a trace into a profile over `base`.
pub fn parse(text: &str, base: Impairments) -> Result<Profile, Error> {
    let mut steps: Vec<Step> = Vec::new();
    let mut period = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason| Error::TraceLine {
            line,
            text: raw.chars().take(MAX_LINE).collect(),
            reason,
        };
        if raw.len() > MAX_LINE {
            return Err(bad("line too long"));
        }
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let number = |s: &str| s.parse::<u64>().map_err(|_| bad("not a whole number"));
        match fields.as_slice() {
            ["period", ms] => {
                let ms = number(ms)?;
                if ms == 0 {
                    return Err(bad("the period must be positive"));
                }
                period = Some(Duration::from_millis(ms));
            }
            [time, rate, delay] => {
                let at = Duration::from_millis(number(time)?);
                let kbit = number(rate)?;
                let delay = Duration::from_millis(number(delay)?);
                if steps.last().is_some_and(|s| s.at >= at) {
                    return Err(bad("times must increase"));
                }
                let rate_bps = kbit
                    .checked_mul(1000)
                    .ok_or_else(|| bad("rate too large"))?;
                steps.push(Step {
                    at,
                    rate_bps: Some(rate_bps),
                    delay,
                });
            }
            _ => return Err(bad("expected three fields")),
        }
    }
    if steps.is_empty() {
        return Err(Error::EmptyTrace);
    }
    if let (Some(p), Some(last)) = (period, steps.last())
        && last.at >= p
    {
        return Err(Error::TraceLine {
            line: 0,
            text: format!("period {}", p.as_millis()),
            reason: "the period must be longer than the last step's time",
        });
    }
    Ok(Profile {
        base,
        steps,
        blackouts: Vec::new(),
        period,
    })
}

/// Writes a profile's steps (and period) in the trace format; `parse` reads it back.
/// Unlimited-rate steps have no trace form and are written as the largest rate.
pub fn format(profile: &Profile) -> String {
    let mut out = String::from("# time_ms rate_kbit delay_ms\n");
    for s in &profile.steps {
        let kbit = s.rate_bps.map_or(u64::MAX / 1000, |bps| bps / 1000);
        let _ = writeln!(out, "{} {} {}", s.at.as_millis(), kbit, s.delay.as_millis());
    }
    if let Some(p) = profile.period {
        let _ = writeln!(out, "period {}", p.as_millis());
    }
    out
}
