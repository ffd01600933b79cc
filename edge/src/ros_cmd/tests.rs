//! `resolve`, `exec`, the backup directory and the zenoh switch, on parsed configs.

use std::path::{Path, PathBuf};

use super::*;

const BASE: &str = r#"
[node]
identity = "/var/lib/bauxite/identity/node.identity"
listen = "0.0.0.0:51820"
virtual_ip = "100.64.0.2/10"
"#;

const PEER: &str = r#"
[[peers]]
name = "base"
static_public = "1111111111111111111111111111111111111111111111111111111111111111"
signing_public = "2222222222222222222222222222222222222222222222222222222222222222"
virtual_ip = "100.64.0.1"
"#;

fn config(extra: &str) -> RunConfig {
    RunConfig::parse(&format!("{BASE}{extra}"), Path::new("c.toml")).unwrap()
}

fn no_daemon() -> Result<DaemonView, ControlError> {
    panic!("the daemon must not be asked")
}

#[test]
fn own_server_and_static_peer_by_name() {
    let c = config(&format!(
        "[ros.server]\nid = 1\n[[ros.servers]]\npeer = \"base\"\n{PEER}"
    ));
    let env = resolve(&c, no_daemon).unwrap();
    assert_eq!(env.discovery_server(), "100.64.0.1:11811;100.64.0.2:11811");
    assert_eq!(env.domain_id(), 42);
}

#[test]
fn a_peer_from_the_hub_is_asked_of_the_daemon_once() {
    let c = config(
        "[ros]\ndomain_id = 3\n[[ros.servers]]\npeer = \"hub-base\"\n[[ros.servers]]\npeer = \"other\"\nid = 1\n",
    );
    let mut asked = 0;
    let env = resolve(&c, || {
        asked += 1;
        Ok(DaemonView {
            peers: vec![
                ("hub-base".into(), "100.64.0.5".parse().unwrap()),
                ("other".into(), "100.64.0.6".parse().unwrap()),
            ],
            servers: vec![],
        })
    })
    .unwrap();
    assert_eq!(asked, 1);
    assert_eq!(env.discovery_server(), "100.64.0.5:11811;100.64.0.6:11811");
    assert_eq!(env.domain_id(), 3);
    let e = resolve(&c, || Ok(DaemonView::default())).unwrap_err();
    assert!(
        matches!(e, RosError::UnknownPeer { ref name } if name == "hub-base"),
        "{e}"
    );
}

#[test]
fn the_backup_lives_under_the_state_root_else_beside_the_identity() {
    let c = config("[ros.server]\n");
    assert_eq!(
        backup_dir(&c),
        Some(PathBuf::from("/var/lib/bauxite/identity/citadel"))
    );
    let c = config("[state_root]\nroot = \"/srv/bx\"\n[ros.server]\n");
    assert_eq!(backup_dir(&c), Some(PathBuf::from("/srv/bx/citadel")));
    let c = config("[ros.server]\nbackup_dir = \"/x\"\n");
    assert_eq!(backup_dir(&c), Some(PathBuf::from("/x")));
    assert_eq!(backup_dir(&config("")), None);
}

#[test]
fn without_server_entries_the_hubs_topology_names_the_servers() {
    let hub_servers = || {
        Ok(DaemonView {
            peers: vec![],
            servers: vec![ServerAddr {
                id: 0,
                addr: "100.64.0.7:11811".parse().unwrap(),
            }],
        })
    };
    let env = resolve(&config("[ros]\n"), hub_servers).unwrap();
    assert_eq!(env.discovery_server(), "100.64.0.7:11811");
    // The server node itself: its own entry and the hub's agree on position 0.
    let own = config("[ros.server]\n");
    let env = resolve(&own, || {
        Ok(DaemonView {
            peers: vec![],
            servers: vec![ServerAddr {
                id: 0,
                addr: "100.64.0.2:11811".parse().unwrap(),
            }],
        })
    })
    .unwrap();
    assert_eq!(env.discovery_server(), "100.64.0.2:11811");
    // No daemon: its own server is enough; with none, the error says why.
    let down = || {
        Err(ControlError::Refused {
            message: "down".into(),
        })
    };
    assert_eq!(
        resolve(&own, down).unwrap().discovery_server(),
        "100.64.0.2:11811"
    );
    let e = resolve(&config("[ros]\n"), down).unwrap_err();
    assert!(e.to_string().contains("hub's topology"), "{e}");
    let e = resolve(&config("[ros]\n"), || Ok(DaemonView::default())).unwrap_err();
    assert!(e.to_string().contains("no ROS discovery server"), "{e}");
}

#[test]
fn no_ros_section_says_what_to_add() {
    let e = resolve(&config(""), no_daemon).unwrap_err();
    assert!(e.to_string().contains("[ros.server]"), "{e}");
}

#[test]
fn exec_without_a_command_or_with_a_missing_one_fails_clearly() {
    let env = resolve(
        &config("[ros]\n[[ros.servers]]\naddress = \"100.64.0.1\"\n"),
        no_daemon,
    )
    .unwrap();
    assert!(matches!(exec(&env, &[]), RosError::NoCommand));
    let e = exec(&env, &["/nonexistent/talker".into()]);
    assert!(e.to_string().contains("/nonexistent/talker"), "{e}");
}
