//! The optional zenoh bridge (`zenoh` feature): `zenoh-bridge-ros2dds` (or the older
//! `zenoh-bridge-dds`) routes a robot's DDS traffic over one zenoh session instead of
//! discovery plus per-participant UDP, which scales to larger fleets. Citadel supervises
//! it like the discovery server; it does not ship it.
//!
//! Invariant: a bridge is only ever started from an absolute path found on the `PATH`
//! given, and a missing bridge is an error naming both programs, never a restart loop.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::Error;
use crate::env::ServerAddr;
use crate::server::{ServerHandle, spawn_supervised};
use crate::spawn::{ProcessSpawner, SpawnSpec};
use crate::supervisor::SupervisorConfig;

/// Bridge programs, preferred first.
pub const BRIDGES: [&str; 2] = ["zenoh-bridge-ros2dds", "zenoh-bridge-dds"];
/// zenoh's default TCP port.
pub const DEFAULT_ZENOH_PORT: u16 = 7447;

/// The first bridge program on `path` (a `PATH`-style list), as an absolute path.
pub fn find_bridge(path: &OsStr) -> Result<PathBuf, Error> {
    for name in BRIDGES {
        for dir in std::env::split_paths(path) {
            let candidate = dir.join(name);
            if dir.is_absolute() && candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Error::NotOnPath {
        tried: BRIDGES.to_vec(),
    })
}

/// The bridge's command line: DDS domain `domain`, zenoh listening on `listen`:`port`
/// (the node's virtual IP, so peers reach it over the mesh).
pub fn bridge_spec(program: PathBuf, domain: u16, listen: IpAddr, port: u16) -> SpawnSpec {
    let endpoint = format!("tcp/{}", SocketAddr::new(listen, port));
    SpawnSpec {
        program,
        args: ["-d", &domain.to_string(), "-l", &endpoint]
            .into_iter()
            .map(Into::into)
            .collect(),
        env: BTreeMap::from([("ROS_DOMAIN_ID".into(), domain.to_string().into())]),
        cwd: None,
        package: "zenoh-bridge-ros2dds",
    }
}

/// Finds the bridge on `path` and starts it under supervision.
pub fn spawn_bridge<S: ProcessSpawner>(
    spawner: S,
    path: &OsStr,
    domain: u16,
    listen: IpAddr,
    supervisor: SupervisorConfig,
    seed: u64,
) -> Result<ServerHandle, Error> {
    let program = find_bridge(path)?;
    let spec = bridge_spec(program, domain, listen, DEFAULT_ZENOH_PORT);
    let address = ServerAddr {
        id: 0,
        addr: SocketAddr::new(listen, DEFAULT_ZENOH_PORT),
    };
    Ok(spawn_supervised(spawner, spec, supervisor, seed, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bridge_names_both_programs() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_bridge(dir.path().as_os_str()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("zenoh-bridge-ros2dds") && text.contains("zenoh-bridge-dds"),
            "{text}"
        );
    }

    #[test]
    fn the_ros2dds_bridge_is_preferred_and_found_by_absolute_path() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("zenoh-bridge-dds"), "").unwrap();
        std::fs::write(b.path().join("zenoh-bridge-ros2dds"), "").unwrap();
        let path = std::env::join_paths(["relative/dir".as_ref(), a.path(), b.path()]).unwrap();
        assert_eq!(
            find_bridge(&path).unwrap(),
            b.path().join("zenoh-bridge-ros2dds")
        );
        let spec = bridge_spec("/x".into(), 42, "100.64.0.2".parse().unwrap(), 7447);
        let args: Vec<_> = spec.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["-d", "42", "-l", "tcp/100.64.0.2:7447"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_found_bridge_is_supervised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zenoh-bridge-dds"), "").unwrap();
        let mock = crate::MockSpawner::new();
        let handle = spawn_bridge(
            mock.clone(),
            dir.path().as_os_str(),
            42,
            "100.64.0.2".parse().unwrap(),
            SupervisorConfig::default(),
            1,
        )
        .unwrap();
        let mut status = handle.watch();
        status.wait_for(|s| s.phase.code() == 1).await.unwrap();
        assert_eq!(mock.specs()[0].program, dir.path().join("zenoh-bridge-dds"));
        let last = handle.stop().await;
        assert_eq!(last.phase.name(), "stopped");
    }
}
