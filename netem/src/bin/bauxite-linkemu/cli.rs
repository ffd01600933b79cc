//! Command line: where the two sides go, and the link's profile.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bauxite_netem::{GilbertElliott, Impairments, Profile, trace};
use clap::Parser;

/// Forwards every IP packet between two TUN devices (one per network namespace) through
/// the link model: rate schedule, delay and jitter, bursty loss, blackouts, buffer.
/// Prints `ready` when the devices are up; close stdin (Ctrl-D) to stop and print the
/// counters as one JSON line.
#[derive(Parser, Debug)]
#[command(name = "bauxite-linkemu", version)]
pub(crate) struct Args {
    /// Name of side A's TUN device.
    #[arg(long, default_value = "lemA")]
    pub(crate) dev_a: String,
    /// Name of side B's TUN device.
    #[arg(long, default_value = "lemB")]
    pub(crate) dev_b: String,
    /// Network namespace (a name under /run/netns) side A's device moves into.
    #[arg(long)]
    pub(crate) netns_a: Option<String>,
    /// Network namespace side B's device moves into.
    #[arg(long)]
    pub(crate) netns_b: Option<String>,
    /// Address/prefix for side A's device (e.g. 10.77.0.1/30).
    #[arg(long)]
    pub(crate) addr_a: Option<String>,
    /// Address/prefix for side B's device (e.g. 10.77.0.2/30).
    #[arg(long)]
    pub(crate) addr_b: Option<String>,
    /// MTU of both TUN devices.
    #[arg(long, default_value_t = 1500)]
    pub(crate) dev_mtu: u16,
    /// Preset: `lte`, `lte-literal`, `wifi` or `fixed` (no impairment; set them with the
    /// flags below).
    #[arg(long, default_value = "fixed")]
    pub(crate) profile: String,
    /// Trace file (`time_ms rate_kbit delay_ms` lines) replacing the preset's schedule.
    #[arg(long)]
    pub(crate) trace: Option<PathBuf>,
    /// One-way base delay in milliseconds.
    #[arg(long)]
    pub(crate) delay_ms: Option<f64>,
    /// Jitter: each delay varies uniformly within ± this many milliseconds.
    #[arg(long)]
    pub(crate) jitter_ms: Option<f64>,
    /// Let jitter reorder packets (default: in order, like a real bearer).
    #[arg(long)]
    pub(crate) jitter_reorders: bool,
    /// Rate in kbit/s (0: outage).
    #[arg(long)]
    pub(crate) rate_kbit: Option<u64>,
    /// Mean loss probability.
    #[arg(long)]
    pub(crate) loss: Option<f64>,
    /// Mean loss burst length in packets (1: independent losses).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) loss_burst: f64,
    /// Bytes the buffer in front of the rate limit holds.
    #[arg(long)]
    pub(crate) buffer_bytes: Option<usize>,
    /// Largest packet carried (IP bytes); larger ones are dropped.
    #[arg(long)]
    pub(crate) mtu: Option<usize>,
    /// Duplication probability.
    #[arg(long)]
    pub(crate) duplicate: Option<f64>,
    /// Probability of one flipped bit per packet.
    #[arg(long)]
    pub(crate) corrupt: Option<f64>,
    /// Probability that a packet is held back by --reorder-delay-ms.
    #[arg(long)]
    pub(crate) reorder: Option<f64>,
    /// Hold-back of a reordered packet, in milliseconds.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) reorder_delay_ms: f64,
    /// A blackout, `START_MS+LENGTH_MS` after start (repeatable; repeats with the profile's
    /// period, if it has one).
    #[arg(long)]
    pub(crate) blackout: Vec<String>,
    /// Seed of the model's randomness (direction B→A uses seed + 1).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Packet buffers per direction (bounds everything in flight and queued one way).
    #[arg(long, default_value_t = 4096)]
    pub(crate) slots: usize,
    /// Do not watch stdin (run until killed; no counters printed).
    #[arg(long)]
    pub(crate) no_stdin: bool,
}

fn millis(ms: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0).with_context(|| format!("bad duration {ms} ms"))
}

impl Args {
    /// The profile both directions follow.
    pub(crate) fn profile(&self) -> anyhow::Result<Profile> {
        let mut profile = Profile::named(&self.profile)?;
        let b = &mut profile.base;
        if let Some(ms) = self.delay_ms {
            b.delay = millis(ms)?;
            // An explicit delay wins over the preset's delay steps.
            profile.steps.iter_mut().for_each(|s| s.delay = b.delay);
        }
        let b = &mut profile.base;
        if let Some(ms) = self.jitter_ms {
            b.jitter = millis(ms)?;
        }
        b.jitter_reorders |= self.jitter_reorders;
        if let Some(kbit) = self.rate_kbit {
            b.rate_bps = Some(kbit.saturating_mul(1000));
            // An explicit rate wins over the preset's rate steps (its delay steps stay).
            let rate = b.rate_bps;
            profile.steps.iter_mut().for_each(|s| s.rate_bps = rate);
        }
        let b = &mut profile.base;
        if let Some(p) = self.loss {
            b.loss = if self.loss_burst <= 1.0 {
                GilbertElliott::bernoulli(p)
            } else {
                GilbertElliott::bursty(p, self.loss_burst)
            };
        }
        if let Some(bytes) = self.buffer_bytes {
            b.buffer_bytes = Some(bytes);
        }
        if let Some(mtu) = self.mtu {
            b.mtu = Some(mtu);
        }
        if let Some(p) = self.duplicate {
            b.duplicate = p;
        }
        if let Some(p) = self.corrupt {
            b.corrupt = p;
        }
        if let Some(p) = self.reorder {
            b.reorder = p;
            b.reorder_delay = millis(self.reorder_delay_ms)?;
        }
        if let Some(path) = &self.trace {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading trace {}", path.display()))?;
            profile = trace::parse(&text, profile.base)?;
        }
        for spec in &self.blackout {
            let Some((start, len)) = spec.split_once('+') else {
                bail!("blackout {spec:?}: write START_MS+LENGTH_MS");
            };
            let ms = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .with_context(|| format!("blackout {spec:?}: {s:?} is not milliseconds"))
                    .and_then(millis)
            };
            profile.blackouts.push((ms(start)?, ms(len)?));
        }
        profile.blackouts.sort();
        Ok(profile)
    }
}

/// A profile with the base impairments only (for messages).
pub(crate) fn describe(p: &Profile) -> String {
    let Impairments {
        rate_bps,
        delay,
        jitter,
        loss,
        buffer_bytes,
        ..
    } = p.base;
    format!(
        "rate {rate_bps:?} bit/s, delay {delay:?} ± {jitter:?}, mean loss {:.4}, buffer {buffer_bytes:?} B, {} steps, {} blackouts, period {:?}",
        loss.mean_loss(),
        p.steps.len(),
        p.blackouts.len(),
        p.period
    )
}
