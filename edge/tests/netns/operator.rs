//! The operator lock against a malicious hub (issue 11 item 2): a real hub and two nodes
//! that pin an operator key (`join --operator-key`) talk once the operator signed their
//! key records (`bauxite operator request|sign`, `bauxite-dispatch nodes sign`). Then the
//! hub turns malicious the realistic way: it is stopped, node b's X25519 key in its
//! database is replaced by an attacker's with the hub's own library (what anyone with
//! disk access to the hub can do), and it is started again. Node a refuses the
//! substituted b (its status says why, its counters count it), and an attacker daemon
//! holding the substituted key, dialling a, gets no session. With the lock off, the same
//! a accepts the substituted key and the attacker gets a session: the contrast.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bauxite_dispatch::store::{Change, RedbStore, Store};
use serde_json::Value;

use crate::hub::{Hub, dispatch_binary, established_with, node_id, vip_of};
use crate::support::{BAUXITE, NetPair, Node, PORT, can_run, keygen, wait_for, wait_for_or};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `bauxite` with `args`; panics with its output unless it succeeds; its stdout.
fn bauxite(args: &[&str]) -> String {
    let out = Command::new(BAUXITE).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "bauxite {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `bauxite join` with the operator key pinned.
fn join_locked(
    net: &NetPair,
    i: usize,
    token: &str,
    url: &str,
    root: &Path,
    name: &str,
    operator_pub: &Path,
) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns[i],
            BAUXITE,
            "join",
            token,
            url,
            "--state-root",
        ])
        .arg(root)
        .args(["--name", name, "--listen", &format!("0.0.0.0:{PORT}")])
        .args(["--advertise", &net.endpoint(i).to_string()])
        .arg("--control-socket")
        .arg(root.join("control.sock"))
        .arg("--operator-key")
        .arg(operator_pub)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "join {name}: {text}");
    assert!(
        text.contains("operator lock on: 1 operator key(s)"),
        "{text}"
    );
    text
}

/// The operator signs `request` and the admin uploads the record to the hub.
fn sign_and_upload(hub: &Hub, operator_key: &Path, request: &str) {
    let signed = bauxite(&[
        "operator",
        "sign",
        "--key",
        operator_key.to_str().unwrap(),
        "--request",
        request.trim(),
        "--valid-days",
        "1",
    ]);
    assert!(signed.starts_with("bxop1."), "{signed}");
    let out = hub.admin(&["nodes", "sign", signed.trim()]);
    assert!(out.contains("operator signature stored"), "{out}");
}

/// The 32-byte key in a `[[peers]]` entry's `static_public = "..."` line.
fn static_public(entry: &str) -> [u8; 32] {
    let hex = entry
        .lines()
        .find_map(|l| l.strip_prefix("static_public = \""))
        .and_then(|l| l.split('"').next())
        .unwrap();
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex, &mut key).unwrap();
    key
}

fn refused_entry(status: &Value, name: &str) -> Option<Value> {
    status["operator_lock"]["refused"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

fn lists_peer(status: &Value, name: &str) -> bool {
    status["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().any(|p| p["name"] == name))
}

/// A static-config daemon holding `identity`, claiming `vip`, with `a_entry` (a's
/// `[[peers]]` entry, address filled in) as its one peer, dialled at `endpoint`: the
/// attacker who got its key into the hub's topology as node b's.
fn attacker_config(
    dir: &Path,
    identity: &Path,
    vip: &str,
    a_entry: &str,
    endpoint: &str,
) -> PathBuf {
    let config = dir.join("attacker.toml");
    fs::write(
        &config,
        format!(
            "[node]\nidentity = \"{}\"\nlisten = \"0.0.0.0:{}\"\nvirtual_ip = \"{vip}/10\"\ndevice = \"memory\"\ncontrol_socket = \"{}\"\nkeepalive_secs = 1\nrekey_timeout_secs = 1\n\n{a_entry}\nendpoint = \"{endpoint}\"\n",
            identity.display(),
            PORT + 1,
            dir.join("attacker.sock").display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn the_operator_lock_refuses_a_static_key_the_hub_substituted() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let net = NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(&bin, &net.ns[0], dir.path(), &format!("{}:0", net.addr[0]));
    let hub_addr = hub.addr();
    let url = format!("https://{hub_addr}");

    // The operator's key, made off the hub.
    let op_dir = dir.path().join("operator");
    bauxite(&["operator", "keygen", "--out", op_dir.to_str().unwrap()]);
    let (op_pub, op_key) = (op_dir.join("operator.pub"), op_dir.join("operator.key"));

    let names = ["a", "b"];
    let roots = names.map(|n| dir.path().join(n));
    let mut ids = Vec::new();
    for i in 0..2 {
        let token = hub.admin(&["token", "create", "--name", names[i]]);
        let out = join_locked(&net, i, &token, &url, &roots[i], names[i], &op_pub);
        ids.push(node_id(&out));
        // The node prints its own request; the operator signs it (out of band).
        let config = roots[i].join("config.toml");
        let request = bauxite(&["operator", "request", "--config", config.to_str().unwrap()]);
        assert!(
            out.contains(request.trim()),
            "join printed another request: {out}"
        );
        sign_and_upload(&hub, &op_key, &request);
    }
    // The hub's own mesh node is a peer like any other: the operator signs it too.
    let hub_out = fs::read_to_string(hub.out()).unwrap();
    let hub_node = hub_out
        .lines()
        .find_map(|l| l.strip_prefix("mesh node "))
        .and_then(|l| l.split(['(', ')']).nth(1))
        .unwrap()
        .to_string();
    let hub_request = hub.admin(&["nodes", "key-request", &hub_node]);
    sign_and_upload(&hub, &op_key, &hub_request);

    let mut nodes = [0, 1].map(|i| {
        Node::from_config(
            &net.ns[i],
            roots[i].join("config.toml"),
            dir.path().join(format!("{}.log", names[i])),
        )
    });
    let logs = |nodes: &[Node; 2], hub: &Hub| {
        format!(
            "--- a ---\n{}\n--- b ---\n{}\n--- hub ---\n{}",
            nodes[0].log(),
            nodes[1].log(),
            hub.log()
        )
    };
    for i in 0..2 {
        let other = names[1 - i];
        wait_for(
            LIMIT,
            &format!("{} to reach {other} with the lock on", names[i]),
            || established_with(&nodes[i], other),
        );
    }
    let vip_b = vip_of(&nodes[1]);
    let vip_a = vip_of(&nodes[0]);
    assert!(net.ping(0, &vip_b, 2), "a -> b\n{}", logs(&nodes, &hub));
    let status = nodes[0].status().unwrap();
    assert_eq!(
        status["operator_lock"]["refused"],
        Value::Array(vec![]),
        "{status}"
    );
    assert_eq!(status["counters"]["operator_refusals_total"], 0, "{status}");
    assert!(status["operator_lock"].get("own").is_none(), "{status}");

    // The hub turns malicious: stopped, b's static key replaced in its database by the
    // attacker's (with the hub's own store library), started again.
    let attacker = keygen(dir.path(), "attacker");
    hub.kill9();
    {
        let store = RedbStore::open(&hub.data.join("hub.db")).unwrap();
        let mut b = store
            .nodes()
            .unwrap()
            .into_iter()
            .find(|n| n.id.to_string() == ids[1])
            .unwrap();
        b.x25519 = static_public(&attacker.entry);
        let change = Change {
            nodes: vec![b],
            topology_version: Some(store.topology_version().unwrap() + 1),
            ..Change::default()
        };
        store.commit(&change).unwrap();
    }
    hub.spawn(&hub_addr);

    // a refuses the substituted b: out of its peer table, the reason in its status.
    let refused = wait_for(LIMIT, "a to refuse the substituted b", || {
        let status = nodes[0].status()?;
        let entry = refused_entry(&status, "b")?;
        (!lists_peer(&status, "b")).then_some(entry)
    });
    assert_eq!(refused["code"], "keys_mismatch", "{refused}");
    assert_eq!(refused["id"], ids[1].as_str());
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("X25519 static key differs from the operator-signed record"),
        "{refused}"
    );
    assert!(nodes[0].counter("operator_refusals_total") >= 1);
    let text = bauxite(&["status", "--config", nodes[0].config.to_str().unwrap()]);
    assert!(
        text.contains("refused: the hub's X25519 static key differs"),
        "{text}"
    );
    assert!(
        nodes[0].log().contains("operator lock: peer refused"),
        "{}",
        nodes[0].log()
    );
    // b sees its own entry carry another key: evidence the hub is lying about it.
    wait_for(LIMIT, "b to notice its own substituted entry", || {
        let own = nodes[1].status()?["operator_lock"]["own"]
            .as_str()?
            .to_string();
        own.contains("another X25519 static key").then_some(())
    });
    assert!(
        !net.ping(0, &vip_b, 1),
        "a still reaches b through a refused peer"
    );

    // The attacker, holding the substituted key, dials a: no session.
    let a_entry: String = bauxite(&[
        "keygen",
        "--identity",
        roots[0].join("identity/node.identity").to_str().unwrap(),
        "--name",
        "a",
    ])
    .lines()
    .filter(|l| !l.starts_with('#'))
    .map(|l| format!("{}\n", l.split(" #").next().unwrap_or(l)))
    .collect();
    let a_entry = a_entry.replace("100.64.0.X", &vip_a);
    let config = attacker_config(
        dir.path(),
        &attacker.path,
        &vip_b,
        &a_entry,
        &net.endpoint(0).to_string(),
    );
    let rejected = nodes[0].counter("handshakes_rejected");
    let intruder = Node::from_config(&net.ns[1], config, dir.path().join("attacker.log"));
    nodes[0].wait_counter_above("handshakes_rejected", rejected);
    let status = wait_for(LIMIT, "the attacker's status", || intruder.status());
    assert_eq!(status["peers"][0]["name"], "a", "{status}");
    assert_eq!(status["peers"][0]["established"], false, "{status}");
    assert!(established_with(&nodes[0], "b").is_none());

    // The contrast: a without the lock accepts the same substitution, and the attacker
    // gets its session.
    assert!(nodes[0].terminate(), "{}", logs(&nodes, &hub));
    let config = fs::read_to_string(&nodes[0].config).unwrap();
    let unlocked: String = config
        .lines()
        .filter(|l| !l.starts_with("operator_keys") && !l.contains("operator lock"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(unlocked, config, "the lock line was not in the config");
    fs::write(&nodes[0].config, unlocked).unwrap();
    nodes[0].restart();
    wait_for_or(
        LIMIT,
        "the attacker's session with the unlocked a",
        || {
            let status = intruder.status()?;
            (status["peers"][0]["established"] == true).then_some(())
        },
        || {
            format!(
                "{}\n--- attacker ---\n{}",
                logs(&nodes, &hub),
                intruder.log()
            )
        },
    );
    wait_for(LIMIT, "the unlocked a to list the attacker as b", || {
        established_with(&nodes[0], "b")
    });
    let status = nodes[0].status().unwrap();
    assert!(status.get("operator_lock").is_none(), "{status}");
    drop(intruder);
}
