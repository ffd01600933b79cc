//! `[node]` and `[[peers]]`: what `bauxite run` needs for a hub-less mesh with static
//! peers — the same facts the hub will distribute later.
//!
//! Invariant: a [`RunConfig`] that parsed can be turned into a running node without
//! another check failing: keys are 32 bytes, every peer's address lies inside the node's
//! mesh prefix, and no two peers share an address, a key or a name with each other or
//! with this node's address.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::node::{BulkController, DEFAULT_BULK_TARGET};
use bauxite_conduit::peers::PeerInfo;
use bauxite_conduit::session::Timers;
use bauxite_conduit::tun::DEFAULT_TUN_NAME;
use bauxite_conduit::{PeerId, VirtualIp};
use serde::Deserialize;

use super::lanes::parse_lanes;
use super::ros::{RosConfig, parse_ros};
use super::updates::parse_updates;
use super::{RawConfig, UpdatesConfig, absolute, read};
use crate::error::ConfigError;

/// Where `run` listens for `status` when `node.control_socket` is not set.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/bauxite/control.sock";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    identity: String,
    listen: String,
    virtual_ip: String,
    #[serde(default)]
    cipher: Option<String>,
    #[serde(default)]
    tun_name: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    control_socket: Option<String>,
    #[serde(default)]
    metrics_listen: Option<String>,
    #[serde(default)]
    keepalive_secs: Option<u64>,
    #[serde(default)]
    rekey_timeout_secs: Option<u64>,
    #[serde(default)]
    bulk_target_delay_us: Option<u64>,
    #[serde(default)]
    bulk_controller: Option<String>,
    #[serde(default)]
    bulk_repair: Option<bool>,
    #[serde(default)]
    kernel_offload: Option<bool>,
    #[serde(default)]
    ice: Option<bool>,
    realtime_priority: Option<u8>,
    bonding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    name: String,
    static_public: String,
    signing_public: String,
    virtual_ip: String,
    #[serde(default)]
    endpoint: Option<String>,
    /// More addresses of the peer (another uplink), tried after `endpoint` and kept
    /// alive as a second path with `node.bonding`.
    #[serde(default)]
    candidates: Vec<String>,
}

/// How often a node reports its counters to the hub when `hub.report_secs` is not set.
pub const DEFAULT_REPORT_SECS: u64 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHub {
    url: String,
    /// More replicas of the same hub (one PostgreSQL behind them), tried in turn after
    /// `url` when the connected one goes away.
    #[serde(default)]
    urls: Vec<String>,
    certs_dir: String,
    #[serde(default)]
    advertise: Option<String>,
    #[serde(default)]
    report_secs: Option<u64>,
    #[serde(default)]
    operator_keys: Option<String>,
}

/// The `[hub]` section, written by `bauxite join`: where the hub is and the node's
/// credentials for it. With it, `run` takes its peers and policy from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub URL, `https://host:port`.
    pub url: String,
    /// Every replica of the hub, `url` first then `hub.urls` (duplicates dropped): the
    /// connector moves to the next one when the connected one goes away.
    pub urls: Vec<String>,
    /// Directory holding `ca.crt`, `node.crt` and `node.key` (0600).
    pub certs_dir: PathBuf,
    /// The UDP endpoint other nodes should dial, reported to the hub (`SetEndpoint`).
    pub advertise: Option<SocketAddr>,
    /// Interval between `ReportMetrics` calls.
    pub report_interval: Duration,
    /// The operator lock: the file of pinned operator public keys (`hub.operator_keys`,
    /// inside the state root). When set, a peer from the hub is accepted only with a
    /// key record signed by one of them.
    pub operator_keys: Option<PathBuf>,
}

/// `node.device`: which device carries the node's IP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `auto` (default): the kernel TUN device, or the in-memory pipe without privilege.
    Auto,
    /// `memory`: the in-memory pipe only, never a kernel device, even as root (tests,
    /// demos, several nodes on one machine).
    Memory,
    /// `none`: no IP device; the node carries only service datagrams (echo, updates).
    None,
}

fn parse_device(value: Option<&str>) -> Result<DeviceKind, ConfigError> {
    match value {
        None | Some("auto") => Ok(DeviceKind::Auto),
        Some("memory") => Ok(DeviceKind::Memory),
        Some("none") => Ok(DeviceKind::None),
        Some(other) => Err(invalid(
            "node.device",
            format!("{other:?} is not a device; use \"auto\", \"memory\" or \"none\""),
        )),
    }
}

/// The validated `[node]` section and peer list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// The node's identity file (created by `bauxite keygen --identity`).
    pub identity: PathBuf,
    /// UDP address for mesh packets and STUN.
    pub listen: SocketAddr,
    /// This node's virtual IP.
    pub virtual_ip: Ipv4Addr,
    /// Prefix length of the mesh network.
    pub prefix: u8,
    /// The AEAD every node of the mesh uses.
    pub cipher: CipherSuite,
    /// TUN device name.
    pub tun_name: String,
    /// Which device carries the node's IP packets.
    pub device: DeviceKind,
    /// Unix socket where `bauxite status` asks the daemon.
    pub control_socket: PathBuf,
    /// Local address serving Prometheus text, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Session timers (keepalive and retry intervals are configurable).
    pub timers: Timers,
    /// Queueing delay the bulk lane may build below the lanes (`None`: bulk unpaced).
    pub bulk_target: Option<Duration>,
    /// Which controller paces bulk (`node.bulk_controller`: "auto", the default,
    /// "adaptive" or "rate").
    pub bulk_controller: BulkController,
    /// Whether bulk's losses are repaired inside the tunnel (`node.bulk_repair`, default
    /// true; docs/congestion.md section 15).
    pub bulk_repair: bool,
    /// The static peers.
    pub peers: Vec<PeerInfo>,
    /// The hub, if the node joined one (`bauxite join`).
    pub hub: Option<HubConfig>,
    /// `[state_root] root`, when the file has one (`run` locks it).
    pub state_root: Option<PathBuf>,
    /// `[updates]`: the update agent (runs with `[hub]` and `[state_root]`).
    pub updates: UpdatesConfig,
    /// `[ros]`: ROS 2 discovery over the mesh, if configured.
    pub ros: Option<RosConfig>,
    /// `[[lanes]]`: the operator's port-to-lane rules.
    pub lane_rules: bauxite_conduit::scheduler::LaneRules,
    /// `[[turn]]`: TURN servers with static credentials, after the hub's.
    pub turn: Vec<super::StaticTurn>,
    /// `node.kernel_offload` (default true): the kernel's part of the lanes — the TC
    /// classifier, the TUN steering program and the Critical socket. `false` leaves the
    /// userspace classifier alone (to compare, or on a kernel that misbehaves).
    pub kernel_offload: bool,
    /// `node.ice` (default true): ICE sessions with every peer, signaled through the
    /// hub (needs `[hub]`; without one it does nothing): a webrtc-ice agent per peer on
    /// the mesh port finds the direct pair; TURN takes the session after 300 ms without a
    /// direct answer while the checks run. `false`: the hub's candidates are dialled one
    /// after another.
    pub ice: bool,
    /// `node.realtime_priority` (default [`crate::realtime::DEFAULT_PRIORITY`], 0 = off):
    /// the `SCHED_FIFO` priority the daemon asks for its data-plane thread.
    pub realtime_priority: u8,
    /// `node.bonding` (default off): keep a peer's second direct path alive and send
    /// copies over it.
    pub bonding: bauxite_conduit::path::Bonding,
}

impl RunConfig {
    /// Parses and validates the `[node]` and `[[peers]]` sections; `path` is only used in
    /// error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw = RawConfig::parse(text, path)?;
        let node = raw.node.ok_or_else(|| ConfigError::MissingSection {
            path: path.to_path_buf(),
            section: "node",
            hint: "add `[node]` with identity, listen and virtual_ip (see `bauxite keygen --help`)",
        })?;
        let (virtual_ip, prefix) = parse_cidr(&node.virtual_ip)?;
        let mut timers = Timers::default();
        if let Some(secs) = node.keepalive_secs {
            timers.keepalive_timeout = positive_secs("node.keepalive_secs", secs)?;
        }
        if let Some(secs) = node.rekey_timeout_secs {
            timers.rekey_timeout = positive_secs("node.rekey_timeout_secs", secs)?;
        }
        let config = Self {
            identity: absolute("node.identity", &node.identity)?,
            listen: socket_addr("node.listen", &node.listen)?,
            virtual_ip,
            prefix,
            cipher: parse_cipher(node.cipher.as_deref())?,
            tun_name: parse_tun_name(node.tun_name.as_deref())?,
            device: parse_device(node.device.as_deref())?,
            control_socket: match &node.control_socket {
                Some(p) => absolute("node.control_socket", p)?,
                None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
            },
            metrics_listen: node
                .metrics_listen
                .as_deref()
                .map(|a| socket_addr("node.metrics_listen", a))
                .transpose()?,
            timers,
            bulk_target: match node.bulk_target_delay_us {
                None => Some(DEFAULT_BULK_TARGET),
                Some(0) => None,
                Some(us) => Some(Duration::from_micros(us)),
            },
            bulk_controller: parse_bulk_controller(node.bulk_controller.as_deref())?,
            bulk_repair: node.bulk_repair.unwrap_or(true),
            peers: Vec::new(),
            hub: None,
            state_root: raw
                .state_root
                .as_ref()
                .map(|s| absolute("state_root.root", &s.root))
                .transpose()?,
            updates: parse_updates(raw.updates.as_ref())?,
            ros: parse_ros(raw.ros.as_ref())?,
            lane_rules: parse_lanes(&raw.lanes)?,
            turn: super::turn::parse_turn(&raw.turn)?,
            kernel_offload: node.kernel_offload.unwrap_or(true),
            ice: node.ice.unwrap_or(true),
            realtime_priority: parse_realtime_priority(node.realtime_priority)?,
            bonding: parse_bonding(node.bonding.as_deref())?,
        };
        let peers = parse_peers(&raw.peers, &config)?;
        let hub = raw
            .hub
            .as_ref()
            .map(|h| parse_hub(h, config.state_root.as_deref()))
            .transpose()?;
        Ok(Self {
            peers,
            hub,
            ..config
        })
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }
}

/// `hub.operator_keys`: an absolute path without `..`, inside the state root when the
/// file names one (the trust anchor lives with the node's other state, where precheck
/// and backups look).
fn parse_operator_keys(value: &str, state_root: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let path = absolute("hub.operator_keys", value)?;
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid(
            "hub.operator_keys",
            format!("{value:?} must not contain `..`"),
        ));
    }
    if let Some(root) = state_root
        && !path.starts_with(root)
    {
        return Err(invalid(
            "hub.operator_keys",
            format!(
                "{value:?} is outside the state root {}; keep it there (`bauxite join --operator-key` writes {}/trust/operator.keys)",
                root.display(),
                root.display()
            ),
        ));
    }
    Ok(path)
}

/// A hub URL as the client accepts it, so `run` refuses exactly the URLs `join` refuses.
fn hub_url(key: &'static str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    bauxite_dispatch_api::client::hub_addr(url).map_err(|e| match e {
        bauxite_dispatch_api::Error::InvalidArgument { problem, .. } => invalid(key, problem),
        other => invalid(key, other.to_string()),
    })?;
    Ok(url.to_owned())
}

fn parse_hub(hub: &RawHub, state_root: Option<&Path>) -> Result<HubConfig, ConfigError> {
    let url = hub_url("hub.url", &hub.url)?;
    let mut urls = vec![url.clone()];
    for more in &hub.urls {
        let more = hub_url("hub.urls", more)?;
        if !urls.contains(&more) {
            urls.push(more);
        }
    }
    Ok(HubConfig {
        url,
        urls,
        certs_dir: absolute("hub.certs_dir", &hub.certs_dir)?,
        advertise: hub
            .advertise
            .as_deref()
            .map(|a| socket_addr("hub.advertise", a))
            .transpose()?,
        report_interval: positive_secs(
            "hub.report_secs",
            hub.report_secs.unwrap_or(DEFAULT_REPORT_SECS),
        )?,
        operator_keys: hub
            .operator_keys
            .as_deref()
            .map(|v| parse_operator_keys(v, state_root))
            .transpose()?,
    })
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

fn socket_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an IP:port address, e.g. \"0.0.0.0:51820\""),
        )
    })
}

fn positive_secs(key: &'static str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 {
        return Err(invalid(key, "must be at least 1 second".into()));
    }
    Ok(Duration::from_secs(secs))
}

/// `node.realtime_priority`: a `SCHED_FIFO` priority (1–99), 0 for the default policy.
fn parse_realtime_priority(value: Option<u8>) -> Result<u8, ConfigError> {
    match value {
        None => Ok(crate::realtime::DEFAULT_PRIORITY),
        Some(p) if p <= 99 => Ok(p),
        Some(p) => Err(invalid(
            "node.realtime_priority",
            format!("{p} is not a SCHED_FIFO priority: use 1-99, or 0 for the default policy"),
        )),
    }
}

fn parse_cidr(value: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let bad = || {
        invalid(
            "node.virtual_ip",
            format!("{value:?} is not an IPv4 address with prefix, e.g. \"100.64.0.1/10\""),
        )
    };
    let (ip, prefix) = value.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(invalid(
            "node.virtual_ip",
            format!("prefix /{prefix} must be between /8 and /30 so the mesh has room for peers"),
        ));
    }
    Ok((ip, prefix))
}

fn parse_bulk_controller(value: Option<&str>) -> Result<BulkController, ConfigError> {
    match value {
        None => Ok(BulkController::default()),
        Some(name) => BulkController::from_name(name).ok_or_else(|| {
            invalid(
                "node.bulk_controller",
                format!(
                    "{name:?} is not a bulk controller; use \"auto\", \"rate\" or \"adaptive\""
                ),
            )
        }),
    }
}

fn parse_cipher(value: Option<&str>) -> Result<CipherSuite, ConfigError> {
    match value {
        None | Some("chacha20-poly1305") => Ok(CipherSuite::ChaCha20Poly1305),
        Some("aes-256-gcm") => Ok(CipherSuite::Aes256Gcm),
        Some(other) => Err(invalid(
            "node.cipher",
            format!("{other:?} is not a cipher; use \"chacha20-poly1305\" or \"aes-256-gcm\""),
        )),
    }
}

fn parse_bonding(value: Option<&str>) -> Result<bauxite_conduit::path::Bonding, ConfigError> {
    use bauxite_conduit::path::Bonding;
    match value {
        None | Some("off") => Ok(Bonding::Off),
        Some("critical") => Ok(Bonding::Critical),
        Some("all") => Ok(Bonding::All),
        Some(other) => Err(invalid(
            "node.bonding",
            format!("{other:?} is not a bonding mode; use \"off\", \"critical\" or \"all\""),
        )),
    }
}

fn parse_tun_name(value: Option<&str>) -> Result<String, ConfigError> {
    let name = value.unwrap_or(DEFAULT_TUN_NAME);
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(invalid(
            "node.tun_name",
            format!("{name:?} must be 1 to 15 letters, digits, '-' or '_'"),
        ));
    }
    Ok(name.to_string())
}

fn in_prefix(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX << (32 - u32::from(prefix));
    u32::from(ip) & mask == u32::from(net) & mask
}

fn parse_key(hex_text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_text.trim())
        .map_err(|e| format!("not hex ({e}); paste the value `bauxite keygen` printed"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "expected 32 bytes (64 hex characters), found {}",
            bytes.len()
        )
    })
}

fn parse_peers(raw: &[RawPeer], node: &RunConfig) -> Result<Vec<PeerInfo>, ConfigError> {
    let mut ips = BTreeSet::from([node.virtual_ip]);
    let mut keys = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut ids: BTreeSet<PeerId> = BTreeSet::new();
    let mut peers = Vec::with_capacity(raw.len());
    for (index, p) in raw.iter().enumerate() {
        let bad = |key, reason: String| ConfigError::Peer {
            index,
            name: p.name.clone(),
            key,
            reason,
        };
        if p.name.is_empty() || !names.insert(p.name.as_str()) {
            return Err(bad("name", "must be non-empty and unique".into()));
        }
        let static_public = parse_key(&p.static_public).map_err(|r| bad("static_public", r))?;
        let signing_public = parse_key(&p.signing_public).map_err(|r| bad("signing_public", r))?;
        if !keys.insert(static_public) {
            return Err(bad("static_public", "another peer has the same key".into()));
        }
        let ip: Ipv4Addr = p.virtual_ip.parse().map_err(|_| {
            bad(
                "virtual_ip",
                format!("{:?} is not an IPv4 address", p.virtual_ip),
            )
        })?;
        if !in_prefix(ip, node.virtual_ip, node.prefix) {
            return Err(bad(
                "virtual_ip",
                format!(
                    "{ip} is outside this node's mesh {}/{}; packets to it would not enter the tunnel",
                    node.virtual_ip, node.prefix
                ),
            ));
        }
        if !ips.insert(ip) {
            return Err(bad(
                "virtual_ip",
                format!("{ip} is already this node's or another peer's address"),
            ));
        }
        let endpoint = p
            .endpoint
            .as_deref()
            .map(|e| {
                e.parse::<SocketAddr>().map_err(|_| {
                    bad(
                        "endpoint",
                        format!("{e:?} is not an IP:port address, e.g. \"192.0.2.7:51820\""),
                    )
                })
            })
            .transpose()?;
        let mut candidates = Vec::with_capacity(p.candidates.len());
        for c in &p.candidates {
            candidates.push(c.parse::<SocketAddr>().map_err(|_| {
                bad(
                    "candidates",
                    format!("{c:?} is not an IP:port address, e.g. \"198.51.100.7:51820\""),
                )
            })?);
        }
        let mut info = PeerInfo::new(
            p.name.clone(),
            VirtualIp::from(ip),
            static_public,
            signing_public,
            endpoint,
        );
        info.candidates = candidates;
        if !ids.insert(info.id) {
            return Err(bad(
                "signing_public",
                "another peer has the same key".into(),
            ));
        }
        peers.push(info);
    }
    Ok(peers)
}

#[cfg(test)]
mod tests;
