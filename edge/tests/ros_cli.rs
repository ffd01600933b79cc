//! `bauxite ros env` and `bauxite ros exec` as a user runs them (no root, no daemon):
//! the printed exports, a command run with the two variables added to the caller's
//! environment and its arguments passed untouched, and the refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const BAUXITE: &str = env!("CARGO_BIN_EXE_bauxite");

fn config(dir: &Path, ros: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nidentity = \"{}\"\nlisten = \"0.0.0.0:51820\"\nvirtual_ip = \"100.64.0.5/10\"\ncontrol_socket = \"{}\"\n\n{ros}",
            dir.join("node.identity").display(),
            dir.join("control.sock").display(),
        ),
    )
    .unwrap();
    path
}

fn bauxite(config: &Path, args: &[&str]) -> Output {
    Command::new(BAUXITE)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CITADEL_TEST_MARKER", "kept")
        .env("ROS_DOMAIN_ID", "7") // replaced, not duplicated
        .output()
        .unwrap()
}

#[test]
fn exec_adds_the_ros_variables_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ros = "[ros]\ndomain_id = 42\n[[ros.servers]]\naddress = \"100.64.0.1\"\n[[ros.servers]]\naddress = \"100.64.0.9\"\nid = 2\nport = 11900\n";
    let config = config(dir.path(), ros);
    let out = bauxite(&config, &["ros", "env"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "export ROS_DISCOVERY_SERVER='100.64.0.1:11811;;100.64.0.9:11900'\nexport ROS_DOMAIN_ID='42'\n"
    );
    // No shell: `;` and `$HOME` reach the program as they are.
    let out = bauxite(&config, &["ros", "exec", "--", "/usr/bin/env", "-0"]);
    assert!(out.status.success(), "{out:?}");
    let vars: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(vars.contains(&"ROS_DISCOVERY_SERVER=100.64.0.1:11811;;100.64.0.9:11900".to_string()));
    assert!(vars.contains(&"ROS_DOMAIN_ID=42".to_string()));
    assert_eq!(
        vars.iter()
            .filter(|v| v.starts_with("ROS_DOMAIN_ID="))
            .count(),
        1
    );
    assert!(vars.contains(&"CITADEL_TEST_MARKER=kept".to_string()));
    let out = bauxite(
        &config,
        &[
            "ros",
            "exec",
            "--",
            "/usr/bin/printf",
            "%s|",
            "a;b",
            "$HOME",
        ],
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "a;b|$HOME|");
}

#[test]
fn refusals_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = bauxite(&config(dir.path(), ""), &["ros", "env"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[ros.server]"),
        "{out:?}"
    );

    let dup = "[ros]\n[[ros.servers]]\naddress = \"100.64.0.1\"\n[[ros.servers]]\naddress = \"100.64.0.2\"\n";
    let out = bauxite(&config(dir.path(), dup), &["ros", "env"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server ID 0 is used by"),
        "{out:?}"
    );

    let one = "[ros]\n[[ros.servers]]\naddress = \"100.64.0.1\"\n";
    let out = bauxite(
        &config(dir.path(), one),
        &["ros", "exec", "--", "/nonexistent/talker"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run \"/nonexistent/talker\""),
        "{out:?}"
    );

    // A peer name with no daemon to ask.
    let named = "[ros]\n[[ros.servers]]\npeer = \"base\"\n";
    let out = bauxite(&config(dir.path(), named), &["ros", "env"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"base\"") && err.contains("is `bauxite run` running"),
        "{err}"
    );
}
