//! The offline root ceremony end to end with the real binary: the root key is written
//! outside the data dir on first start, a new root key is made and the next root is
//! signed "elsewhere" (commands that need no hub), the hub publishes the import, and a
//! node's TUF client follows the rotation.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::common::{BIN, HubProc};
use crate::tuf_grpc::refreshed_root_version;

/// Runs a key command the way the offline machine would: no hub, no data dir.
fn offline(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["--data-dir", "/nonexistent/bauxite-dispatch"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_root_rotation_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let offline_dir = tmp.path().join("offline");
    std::fs::create_dir_all(&offline_dir).unwrap();
    let old_key = offline_dir.join("root.key");
    let hub = HubProc::start_with(
        &tmp.path().join("hub"),
        &["--root-key-out", old_key.to_str().unwrap()],
    );
    // The root key went where it was told, 0600, and the hub kept no copy.
    let mode = std::fs::metadata(&old_key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!hub.dir.join("updates/root.key").exists());

    let (joined, client) = hub.node(1).await;
    let trust = tmp.path().join("node-tuf");
    assert_eq!(
        refreshed_root_version(&client, trust.clone(), joined.update_root.clone()).await,
        1
    );

    // On the offline machine: a new root key.
    let new_key = offline_dir.join("root2.key");
    let (ok, out) = offline(&[
        "package",
        "keys",
        "generate-root",
        new_key.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let new_pub = offline_dir.join("root2.pub");
    assert!(new_pub.exists(), "{out}");

    // On the hub: the next root with the new key; nothing changes yet.
    let next = tmp.path().join("next-root.json");
    let next_arg = next.to_str().unwrap();
    let out = hub.admin_ok(&[
        "package",
        "keys",
        "export-root",
        next_arg,
        "--root-key",
        new_pub.to_str().unwrap(),
    ]);
    assert!(out.contains("sign it"), "{out}");
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&next).unwrap()).unwrap();
    assert_eq!(exported["signed"]["version"], 2);
    assert_eq!(exported["signatures"].as_array().unwrap().len(), 0);

    // Signed by the new key only: refused, the old threshold is missing.
    let (ok, out) = offline(&[
        "package",
        "keys",
        "sign-root",
        "--key",
        new_key.to_str().unwrap(),
        next_arg,
    ]);
    assert!(ok, "{out}");
    let refused = hub.cli(&["package", "keys", "import-root", next_arg]);
    assert!(!refused.status.success());
    // Then by the old key too: accepted and published.
    let (ok, out) = offline(&[
        "package",
        "keys",
        "sign-root",
        "--key",
        old_key.to_str().unwrap(),
        next_arg,
    ]);
    assert!(ok, "{out}");
    let out = hub.admin_ok(&["package", "keys", "import-root", next_arg]);
    assert!(out.contains("root version 2 published"), "{out}");

    // The node's client, which trusted root v1, follows to v2.
    assert_eq!(
        refreshed_root_version(&client, trust.clone(), joined.update_root.clone()).await,
        2
    );
    let trusted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(trust.join("root.json")).unwrap()).unwrap();
    let new_id = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&new_pub).unwrap())
        .unwrap()["keyid"]
        .clone();
    assert_eq!(trusted["signed"]["roles"]["root"]["keyids"][0], new_id);
    // A node joining now gets root v2 directly.
    let (later, _) = hub.node(2).await;
    let root: serde_json::Value = serde_json::from_slice(&later.update_root).unwrap();
    assert_eq!(root["signed"]["version"], 2);

    // The old key is retired: the next root signed with it alone is refused.
    let out = hub.admin_ok(&["package", "keys", "export-root", next_arg]);
    assert!(out.contains("written"), "{out}");
    let (ok, _) = offline(&[
        "package",
        "keys",
        "sign-root",
        "--key",
        old_key.to_str().unwrap(),
        next_arg,
    ]);
    assert!(ok);
    assert!(
        !hub.cli(&["package", "keys", "import-root", next_arg])
            .status
            .success()
    );

    let audit = hub.admin_ok(&["audit", "show"]);
    assert_eq!(audit.matches("update.root ").count(), 1, "{audit}");
    assert_eq!(audit.matches("update.root_export").count(), 2, "{audit}");
    hub.stop();
}
