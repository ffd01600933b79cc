//! `[ros]`: ROS 2 discovery over the mesh (citadel) — the domain, the discovery server
//! this node runs (`[ros.server]`) and the fleet's servers its ROS processes use
//! (`[[ros.servers]]`, by peer name or virtual IP).
//!
//! Invariant: a parsed [`RosConfig`] names no server ID twice among the servers it
//! lists, its domain maps to valid RTPS ports, and every count and time is positive.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bauxite_citadel::env::MAX_DOMAIN_ID;
use bauxite_citadel::{DEFAULT_DOMAIN_ID, DEFAULT_PORT, DEFAULT_PROGRAM, SupervisorConfig};
use serde::Deserialize;

use super::absolute;
use crate::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRos {
    #[serde(default)]
    domain_id: Option<u32>,
    #[serde(default)]
    server: Option<RawServer>,
    #[serde(default)]
    servers: Vec<RawServerRef>,
    #[serde(default)]
    zenoh_bridge: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    id: Option<u8>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    max_crashes: Option<u32>,
    #[serde(default)]
    crash_window_secs: Option<u64>,
    #[serde(default)]
    backup_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerRef {
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    id: Option<u8>,
    #[serde(default)]
    port: Option<u16>,
}

/// The validated `[ros]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosConfig {
    /// `ROS_DOMAIN_ID` for ROS processes (default 42).
    pub domain_id: u16,
    /// The discovery server this node runs, if any.
    pub server: Option<RosServer>,
    /// The fleet's discovery servers on other nodes.
    pub servers: Vec<ServerRef>,
    /// Supervise a zenoh ROS 2 bridge on this node (needs the `zenoh` build feature).
    pub zenoh_bridge: bool,
}

/// `[ros.server]`: the discovery server this node runs on its virtual IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosServer {
    /// Its server ID (its position in `ROS_DISCOVERY_SERVER`).
    pub id: u8,
    /// Its UDP port.
    pub port: u16,
    /// The server binary.
    pub program: PathBuf,
    /// Where it keeps its backup database (`None`: `citadel/` under the state root,
    /// else beside the identity file).
    pub backup_dir: Option<PathBuf>,
    /// Restart and give-up tuning.
    pub supervisor: SupervisorConfig,
}

/// Where another node's server is: by peer name (resolved against the peer table, which
/// the hub fills) or by virtual IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTarget {
    /// A peer's name, as `bauxite status` shows it.
    Peer(String),
    /// A virtual IP.
    Address(IpAddr),
}

/// One `[[ros.servers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    /// Which node.
    pub target: ServerTarget,
    /// Its server ID.
    pub id: u8,
    /// Its UDP port.
    pub port: u16,
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

pub(super) fn parse_ros(raw: Option<&RawRos>) -> Result<Option<RosConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let domain = raw.domain_id.unwrap_or(u32::from(DEFAULT_DOMAIN_ID));
    let domain_id = u16::try_from(domain)
        .ok()
        .filter(|d| *d <= MAX_DOMAIN_ID)
        .ok_or_else(|| {
            invalid(
                "ros.domain_id",
                format!(
                    "{domain} is out of range; use 0 to {MAX_DOMAIN_ID} (ROS 2 uses 0-101 safely)"
                ),
            )
        })?;
    let server = raw.server.as_ref().map(parse_server).transpose()?;
    let mut ids = BTreeMap::new();
    if let Some(s) = &server {
        ids.insert(s.id, "[ros.server]".to_string());
    }
    let mut servers = Vec::with_capacity(raw.servers.len());
    for (index, r) in raw.servers.iter().enumerate() {
        let target = match (&r.peer, &r.address) {
            (Some(peer), None) if !peer.trim().is_empty() => ServerTarget::Peer(peer.trim().into()),
            (None, Some(address)) => ServerTarget::Address(address.trim().parse().map_err(|_| {
                invalid(
                    "ros.servers.address",
                    format!("{address:?} (entry {index}) is not an IP address; give the server node's virtual IP, e.g. \"100.64.0.1\""),
                )
            })?),
            _ => {
                return Err(invalid(
                    "ros.servers",
                    format!("entry {index} needs exactly one of `peer = \"NAME\"` or `address = \"VIRTUAL_IP\"`"),
                ));
            }
        };
        let id = r.id.unwrap_or(0);
        if let Some(first) = ids.insert(id, format!("[[ros.servers]] entry {index}")) {
            return Err(invalid(
                "ros.servers.id",
                format!(
                    "server ID {id} is used by {first} and entry {index}; each server needs its own ID"
                ),
            ));
        }
        servers.push(ServerRef {
            target,
            id,
            port: r.port.unwrap_or(DEFAULT_PORT),
        });
    }
    let zenoh_bridge = raw.zenoh_bridge.unwrap_or(false);
    if zenoh_bridge && !cfg!(feature = "zenoh") {
        return Err(invalid(
            "ros.zenoh_bridge",
            "this bauxite was built without the zenoh bridge; rebuild with `cargo build --features zenoh` or remove the key".into(),
        ));
    }
    Ok(Some(RosConfig {
        domain_id,
        server,
        servers,
        zenoh_bridge,
    }))
}

fn parse_server(raw: &RawServer) -> Result<RosServer, ConfigError> {
    let defaults = SupervisorConfig::default();
    let max_crashes = raw.max_crashes.unwrap_or(defaults.max_crashes);
    if max_crashes == 0 {
        return Err(invalid(
            "ros.server.max_crashes",
            "must be at least 1".into(),
        ));
    }
    let crash_window = match raw.crash_window_secs {
        None => defaults.crash_window,
        Some(0) => {
            return Err(invalid(
                "ros.server.crash_window_secs",
                "must be at least 1 second".into(),
            ));
        }
        Some(secs) => Duration::from_secs(secs),
    };
    let port = raw.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err(invalid(
            "ros.server.port",
            "must be a fixed port (clients are told it); the default is 11811".into(),
        ));
    }
    Ok(RosServer {
        id: raw.id.unwrap_or(0),
        port,
        program: match &raw.program {
            Some(p) => absolute("ros.server.program", p)?,
            None => PathBuf::from(DEFAULT_PROGRAM),
        },
        backup_dir: raw
            .backup_dir
            .as_deref()
            .map(|d| absolute("ros.server.backup_dir", d))
            .transpose()?,
        supervisor: SupervisorConfig {
            max_crashes,
            crash_window,
            ..defaults
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RosConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            ros: Option<RawRos>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| invalid("ros", e.to_string()))?;
        parse_ros(doc.ros.as_ref())
    }

    #[test]
    fn defaults_are_domain_42_and_port_11811() {
        let c = parse("[ros.server]\n").unwrap().unwrap();
        assert_eq!(c.domain_id, 42);
        let s = c.server.unwrap();
        assert_eq!((s.id, s.port), (0, 11811));
        assert_eq!(s.program, PathBuf::from("/usr/bin/fast-discovery-server"));
        assert!(c.servers.is_empty());
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn servers_by_peer_or_address() {
        let c = parse(
            "[ros]\ndomain_id = 7\n[[ros.servers]]\npeer = \"base\"\n[[ros.servers]]\naddress = \"100.64.0.9\"\nid = 1\nport = 11900\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.domain_id, 7);
        assert_eq!(c.servers[0].target, ServerTarget::Peer("base".into()));
        assert_eq!(
            c.servers[1],
            ServerRef {
                target: ServerTarget::Address("100.64.0.9".parse().unwrap()),
                id: 1,
                port: 11900
            }
        );
    }

    #[test]
    fn the_zenoh_bridge_needs_the_feature() {
        let parsed = parse("[ros]\nzenoh_bridge = true\n");
        if cfg!(feature = "zenoh") {
            assert!(parsed.unwrap().unwrap().zenoh_bridge);
        } else {
            let e = parsed.unwrap_err();
            assert!(e.to_string().contains("--features zenoh"), "{e}");
        }
        assert!(!parse("[ros]\n").unwrap().unwrap().zenoh_bridge);
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, key, needle) in [
            ("[ros]\ndomain_id = 300\n", "ros.domain_id", "0 to 232"),
            ("[[ros.servers]]\nid = 1\n", "ros.servers", "exactly one of"),
            (
                "[[ros.servers]]\npeer = \"a\"\naddress = \"100.64.0.1\"\n",
                "ros.servers",
                "exactly one of",
            ),
            (
                "[[ros.servers]]\naddress = \"base\"\n",
                "ros.servers.address",
                "not an IP",
            ),
            (
                "[ros.server]\n[[ros.servers]]\npeer = \"b\"\n",
                "ros.servers.id",
                "server ID 0 is used by [ros.server]",
            ),
            (
                "[ros.server]\nmax_crashes = 0\n",
                "ros.server.max_crashes",
                "at least 1",
            ),
            ("[ros.server]\nport = 0\n", "ros.server.port", "fixed port"),
            (
                "[ros.server]\nprogram = \"fds\"\n",
                "ros.server.program",
                "absolute",
            ),
            (
                "[ros.server]\nbackup_dir = \"db\"\n",
                "ros.server.backup_dir",
                "absolute",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, reason }) => {
                    assert_eq!(k, key, "{text}");
                    assert!(reason.contains(needle), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
