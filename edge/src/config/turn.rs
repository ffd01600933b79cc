//! `[[turn]]`: TURN servers the node uses besides the ones the hub hands out (the hub's
//! come first), with static long-term credentials.
//!
//! ```toml
//! [[turn]]
//! url = "turn:203.0.113.5:3478"                       # UDP TURN; turns: is not supported
//! username = "robot-1"
//! password_file = "/var/lib/bauxite/turn.password"    # absolute; read when `run` starts
//! ```
//!
//! Invariant: a parsed entry has a `turn:host:port` URL, a non-empty username and an
//! absolute password file; the password itself never sits in config.toml (which `status`
//! and backups read) and is never logged.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ConfigError;

/// Most `[[turn]]` entries.
pub const MAX_TURN_SERVERS: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTurn {
    url: String,
    username: String,
    password_file: String,
}

/// One `[[turn]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticTurn {
    /// `turn:host:port`.
    pub url: String,
    /// The long-term credential's username.
    pub username: String,
    /// The file holding its password (first line, trailing whitespace trimmed).
    pub password_file: PathBuf,
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// Validates the `[[turn]]` entries.
pub(super) fn parse_turn(raw: &[RawTurn]) -> Result<Vec<StaticTurn>, ConfigError> {
    if raw.len() > MAX_TURN_SERVERS {
        return Err(invalid(
            "turn",
            format!("{} entries; at most {MAX_TURN_SERVERS}", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, t)| {
            let host = t
                .url
                .strip_prefix("turn:")
                .map(|h| h.strip_suffix("?transport=udp").unwrap_or(h))
                .filter(|h| {
                    !h.contains('?')
                        && h.rsplit_once(':').is_some_and(|(a, p)| {
                            !a.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0)
                        })
                });
            if host.is_none() {
                return Err(invalid(
                    "turn.url",
                    format!("entry {i}: {:?} is not turn:host:port (UDP TURN)", t.url),
                ));
            }
            if t.username.trim().is_empty() {
                return Err(invalid("turn.username", format!("entry {i}: empty")));
            }
            let password_file = PathBuf::from(&t.password_file);
            if !password_file.is_absolute() {
                return Err(invalid(
                    "turn.password_file",
                    format!("entry {i}: {:?} is not an absolute path", t.password_file),
                ));
            }
            Ok(StaticTurn {
                url: t.url.clone(),
                username: t.username.clone(),
                password_file,
            })
        })
        .collect()
}
