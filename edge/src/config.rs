//! `config.toml`: the edge node's configuration. Parsing is pure ([`Config::parse`],
//! [`RunConfig::parse`]); every rejection names the offending key so an operator can fix
//! it without guessing.
//!
//! One file serves every command: `precheck` reads `[state_root]` and `[transport]`,
//! `run` and `status` read `[node]` and `[[peers]]` ([`RunConfig`]). Each command requires
//! only its own sections, and unknown keys are refused everywhere.

mod lanes;
mod ros;
mod run;
mod turn;
mod updates;

pub use ros::{RosConfig, RosServer, ServerRef, ServerTarget};
pub use run::{DEFAULT_CONTROL_SOCKET, DEFAULT_REPORT_SECS, DeviceKind, HubConfig, RunConfig};
pub use turn::{MAX_TURN_SERVERS, StaticTurn};
pub use updates::{
    DEFAULT_HEALTH_TIMEOUT_SECS, DEFAULT_MAX_FAILED_STARTS, DEFAULT_RECORDING_DIR, MAX_PROBE_HZ,
    UpdatesConfig,
};

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// Default location of the configuration file (inside the default state root).
pub const DEFAULT_CONFIG_PATH: &str = "/var/lib/bauxite/config.toml";

/// The validated edge configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the persistent state root.
    pub state_root: PathBuf,
    /// mTLS material checked by precheck.
    pub transport: Transport,
}

/// The `[transport]` section: the node's mTLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Node certificate (PEM or DER); its expiry is checked.
    pub cert_file: PathBuf,
    /// Node private key.
    pub key_file: PathBuf,
    /// CA certificate bundle.
    pub ca_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_root: Option<RawStateRoot>,
    transport: Option<RawTransport>,
    node: Option<run::RawNode>,
    #[serde(default)]
    peers: Vec<run::RawPeer>,
    hub: Option<run::RawHub>,
    updates: Option<updates::RawUpdates>,
    ros: Option<ros::RawRos>,
    #[serde(default)]
    lanes: Vec<lanes::RawLane>,
    #[serde(default)]
    turn: Vec<turn::RawTurn>,
}

impl RawConfig {
    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })
    }
}

/// Largest config file read: a real one is a few hundred bytes, and parsing is done in
/// memory (a 67 MB file once took 813 MB).
pub const MAX_CONFIG_BYTES: u64 = crate::fsutil::MAX_SMALL_FILE;

fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = crate::fsutil::read_capped(path, MAX_CONFIG_BYTES).map_err(|source| {
        if source.kind() == std::io::ErrorKind::FileTooLarge {
            ConfigError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_CONFIG_BYTES,
            }
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStateRoot {
    root: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransport {
    cert_file: String,
    key_file: String,
    ca_file: String,
}

impl Config {
    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw = RawConfig::parse(text, path)?;
        let missing = |section, hint| ConfigError::MissingSection {
            path: path.to_path_buf(),
            section,
            hint,
        };
        let state_root = raw.state_root.ok_or_else(|| {
            missing(
                "state_root",
                "add `[state_root]` with `root = \"/var/lib/bauxite\"` (an absolute path)",
            )
        })?;
        let transport = raw.transport.ok_or_else(|| {
            missing(
                "transport",
                "add `[transport]` with the absolute paths cert_file, key_file and ca_file",
            )
        })?;
        Ok(Self {
            state_root: absolute("state_root.root", &state_root.root)?,
            transport: Transport {
                cert_file: absolute("transport.cert_file", &transport.cert_file)?,
                key_file: absolute("transport.key_file", &transport.key_file)?,
                ca_file: absolute("transport.ca_file", &transport.ca_file)?,
            },
        })
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }
}

pub(crate) fn absolute(key: &'static str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            reason: "must not be empty".into(),
        });
    }
    let p = PathBuf::from(value);
    if !p.is_absolute() {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("{value:?} must be an absolute path"),
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[state_root]
root = "/var/lib/bauxite"
[transport]
cert_file = "/etc/bauxite/node.crt"
key_file = "/etc/bauxite/node.key"
ca_file = "/etc/bauxite/ca.crt"
"#;

    #[test]
    fn parses_valid_config() {
        let c = Config::parse(GOOD, Path::new("c.toml")).unwrap();
        assert_eq!(c.state_root, PathBuf::from("/var/lib/bauxite"));
        assert_eq!(c.transport.ca_file, PathBuf::from("/etc/bauxite/ca.crt"));
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = GOOD.replace("cert_file", "cret_file");
        let e = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("cret_file"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let bad = GOOD.replace("ca_file = \"/etc/bauxite/ca.crt\"\n", "");
        let e = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
    }

    #[test]
    fn relative_root_is_named() {
        let bad = GOOD.replace("/var/lib/bauxite", "var/lib");
        let e = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    key: "state_root.root",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn missing_section_is_named() {
        let bad = GOOD.replace("[transport]", "[node_unused]").replace(
            "[node_unused]\ncert_file = \"/etc/bauxite/node.crt\"\nkey_file = \"/etc/bauxite/node.key\"\nca_file = \"/etc/bauxite/ca.crt\"\n",
            "",
        );
        let e = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::MissingSection {
                    section: "transport",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn an_oversized_file_is_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 64 MiB that take no disk and would take far more memory to parse.
        file.set_len(64 << 20).unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("right file"), "{e}");
        let e = RunConfig::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let e = Config::parse("[state_root\nroot=", Path::new("c.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }));
    }
}
