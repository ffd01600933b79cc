//! `[updates]`: the daemon's update agent — the watchdog after an activation, the
//! control-loop probe, where recordings go, and the pause point before activation.
//!
//! Invariant: a parsed [`UpdatesConfig`] can drive the agent without another check
//! failing: times are positive, the start limit is at least one, the probe rate is
//! bounded, and every path is absolute.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::absolute;
use crate::error::ConfigError;

/// Default time a freshly activated version has to report healthy.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 60;
/// Default starts a freshly activated version gets before it is rolled back.
pub const DEFAULT_MAX_FAILED_STARTS: u32 = 3;
/// Highest control-loop probe rate accepted.
pub const MAX_PROBE_HZ: u32 = 10_000;
/// Where recordings go, relative to the state root, unless `recording_dir` says otherwise.
pub const DEFAULT_RECORDING_DIR: &str = "forge/recordings";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpdates {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    health_timeout_secs: Option<u64>,
    #[serde(default)]
    max_failed_starts: Option<u32>,
    #[serde(default)]
    heartbeat_required: Option<bool>,
    #[serde(default)]
    probe_hz: Option<u32>,
    #[serde(default)]
    recording_dir: Option<String>,
    #[serde(default)]
    hold_before_activate: Option<bool>,
    #[serde(default)]
    auto_apply: Option<bool>,
}

/// The validated `[updates]` section (every key optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatesConfig {
    /// Run the update agent when the node has a `[hub]` and a `[state_root]`.
    pub enabled: bool,
    /// Time each start of a freshly activated version has to report healthy.
    pub health_timeout: Duration,
    /// Starts a freshly activated version gets (counted across reboots) before rollback.
    pub max_failed_starts: u32,
    /// Wait for `bauxite update heartbeat` before committing a new version; without it the
    /// daemon running on after the swap counts as healthy.
    pub heartbeat_required: bool,
    /// Echo probes per second to the image source during a transfer, on the Critical lane
    /// (0: off).
    pub probe_hz: u32,
    /// Directory of the MCAP recordings (`None`: `{state_root}/forge/recordings`).
    pub recording_dir: Option<PathBuf>,
    /// Stop after the download, before the final verification and the swap, until
    /// `bauxite update apply`.
    pub hold_before_activate: bool,
    /// Start an assigned update at once (`false`: wait for `bauxite update apply`).
    pub auto_apply: bool,
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            health_timeout: Duration::from_secs(DEFAULT_HEALTH_TIMEOUT_SECS),
            max_failed_starts: DEFAULT_MAX_FAILED_STARTS,
            heartbeat_required: false,
            probe_hz: 0,
            recording_dir: None,
            hold_before_activate: false,
            auto_apply: true,
        }
    }
}

impl UpdatesConfig {
    /// The recording directory under `state_root` unless configured.
    pub fn recording_dir(&self, state_root: &Path) -> PathBuf {
        self.recording_dir
            .clone()
            .unwrap_or_else(|| state_root.join(DEFAULT_RECORDING_DIR))
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

pub(super) fn parse_updates(raw: Option<&RawUpdates>) -> Result<UpdatesConfig, ConfigError> {
    let d = UpdatesConfig::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let health = raw
        .health_timeout_secs
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS);
    if health == 0 {
        return Err(invalid(
            "updates.health_timeout_secs",
            "must be at least 1 second",
        ));
    }
    let starts = raw.max_failed_starts.unwrap_or(DEFAULT_MAX_FAILED_STARTS);
    if starts == 0 {
        return Err(invalid(
            "updates.max_failed_starts",
            "must be at least 1 (the first start of the new version counts)",
        ));
    }
    let probe_hz = raw.probe_hz.unwrap_or(0);
    if probe_hz > MAX_PROBE_HZ {
        return Err(invalid(
            "updates.probe_hz",
            format!("{probe_hz} is above the {MAX_PROBE_HZ} Hz limit"),
        ));
    }
    Ok(UpdatesConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        health_timeout: Duration::from_secs(health),
        max_failed_starts: starts,
        heartbeat_required: raw.heartbeat_required.unwrap_or(d.heartbeat_required),
        probe_hz,
        recording_dir: raw
            .recording_dir
            .as_deref()
            .map(|p| absolute("updates.recording_dir", p))
            .transpose()?,
        hold_before_activate: raw.hold_before_activate.unwrap_or(d.hold_before_activate),
        auto_apply: raw.auto_apply.unwrap_or(d.auto_apply),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UpdatesConfig, ConfigError> {
        let raw: RawUpdates = toml::from_str(text).unwrap();
        parse_updates(Some(&raw))
    }

    #[test]
    fn defaults_and_every_key() {
        assert_eq!(parse_updates(None).unwrap(), UpdatesConfig::default());
        let c = parse(
            "enabled = false\nhealth_timeout_secs = 5\nmax_failed_starts = 2\n\
             heartbeat_required = true\nprobe_hz = 1000\nrecording_dir = \"/tmp/rec\"\n\
             hold_before_activate = true\nauto_apply = false\n",
        )
        .unwrap();
        assert!(!c.enabled && c.heartbeat_required && c.hold_before_activate && !c.auto_apply);
        assert_eq!(c.health_timeout, Duration::from_secs(5));
        assert_eq!(c.max_failed_starts, 2);
        assert_eq!(c.probe_hz, 1000);
        assert_eq!(c.recording_dir(Path::new("/s")), PathBuf::from("/tmp/rec"));
        assert_eq!(
            UpdatesConfig::default().recording_dir(Path::new("/s")),
            PathBuf::from("/s/forge/recordings")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("health_timeout_secs = 0", "updates.health_timeout_secs"),
            ("max_failed_starts = 0", "updates.max_failed_starts"),
            ("probe_hz = 20000", "updates.probe_hz"),
            ("recording_dir = \"rel\"", "updates.recording_dir"),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
