//! `policy set` through the real binary against a running hub: warnings about unknown
//! peers and redundant rules, the change against the current policy, `--dry-run` setting
//! nothing, an unchanged document keeping its version, `{}` meaning allow-all, friendly
//! port forms, and a bad file refused before any hub is contacted.

use bauxite_dispatch_api::proto::node::PolicyRequest;

use crate::common::{HubProc, within};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_set_warns_shows_the_change_and_dry_run_sets_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (robot, client) = hub.node(1).await;
    let stranger = "0123456789abcdef0123456789abcdef";
    let file = tmp.path().join("policy.json");
    let ssh = format!(
        r#"{{"peer": "{}", "protocol": "tcp", "ports": "22", "direction": "inbound"}}"#,
        robot.node_id
    );
    let replies = r#"{"protocol": "tcp", "ports": "1024-65535"}"#;
    std::fs::write(
        &file,
        format!(r#"{{"rules": [{ssh}, {replies}, {{"peer": "{stranger}"}}, {replies}]}}"#),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let out = hub.cli(&["policy", "set", path, "--dry-run"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let unknown = format!("rule 2 names peer {stranger}, which is not a node of this mesh");
    for needle in [unknown.as_str(), "warning: rule 3 repeats rule 1"] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    for needle in [
        "against no policy set yet",
        "before: no policy: allow all",
        "after:  allow-list of 4 rules (default deny)",
        r#"+ {"peer":""#,
        r#"(peer "robot-1")"#,
        "(peer not in this mesh)",
        "dry run: nothing was set",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in {stdout}");
    }
    assert!(hub.admin_ok(&["policy", "show"]).contains("no policy set"));
    let seen = client.policy().get_policy(PolicyRequest {}).await.unwrap();
    assert_eq!(seen.into_inner().version, 0, "a dry run sets nothing");

    // For real: set, and the node sees the stored form (default explicit, ports a pair).
    let out = text(&hub.cli(&["policy", "set", path]).stdout);
    assert!(out.contains("policy version 1 set"), "{out}");
    let doc = within(client.policy().get_policy(PolicyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(doc.version, 1);
    assert!(doc.json.contains(r#""ports":[22,22]"#), "{}", doc.json);
    assert!(doc.json.contains(r#""default":"deny""#), "{}", doc.json);

    // The same document again changes nothing and keeps the version.
    let out = text(&hub.cli(&["policy", "set", path]).stdout);
    assert!(
        out.contains("no change") && out.contains("policy version 1 kept"),
        "{out}"
    );

    // `{}` is allow-all, and the summary says what goes away.
    std::fs::write(&file, "{}").unwrap();
    let out = text(&hub.cli(&["policy", "set", path]).stdout);
    for needle in [
        "against the current policy (version 1)",
        "after:  allow all (no rules)",
        r#"- {"protocol":"tcp","ports":"1024-65535"}"#,
        "policy version 2 set",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    let doc = client
        .policy()
        .get_policy(PolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    let stored: bauxite_conduit::policy::Policy = serde_json::from_str(&doc.json).unwrap();
    assert_eq!(stored.default, bauxite_conduit::policy::Verdict::Allow);
}

#[test]
fn a_bad_policy_file_is_refused_before_the_hub_is_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("policy.json");
    std::fs::write(&file, r#"{"rules": [{"protocol": "tcp", "ports": "ssh"}]}"#).unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .arg("--data-dir")
        .arg(tmp.path().join("no-hub-here"))
        .args(["policy", "set", file.to_str().unwrap(), "--dry-run"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(r#""ssh" is not a port or a range"#) && stderr.contains("1000-2000"),
        "{stderr}"
    );
    assert!(!stderr.contains("hub.addr"), "{stderr}");
}
