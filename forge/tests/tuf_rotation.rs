//! Root rotation (online and with an offline root key), bad rotations, and the
//! fast-forward attack recovery after timestamp / snapshot key rotation.

// Test support helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bauxite_forge::tuf::repo::{RoleKey, sign_root};
use bauxite_forge::tuf::{Refusal, TopRole};
use common::*;

#[test]
fn online_root_rotation_is_followed_and_old_keys_stop_counting() {
    let mut f = Fixture::new();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    // Root 1 -> 2 with a new root key: signed by the old and the new.
    let new_root = key(11);
    f.repo
        .set_role_keys(TopRole::Root, &spec(&[&new_root], 1))
        .unwrap();
    f.keys.get_mut("root").unwrap().push(key(11));
    let published = f.publish();
    assert_eq!(published.root, Some(2));
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("root"), Some(2));
    assert_eq!(f.stored("root").unwrap(), f.meta("2.root.json"));

    // A root 3 signed only by the retired key is refused.
    let forged = resign(&f.meta("2.root.json"), &[&key(1)], |s| {
        s["version"] = 3.into()
    });
    f.put_meta("3.root.json", &forged);
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Threshold {
            role: "root (trusted keys)".into(),
            threshold: 1,
            valid: 0
        }
    );
    assert_eq!(f.stored_version("root"), Some(2));
}

#[test]
fn root_rotation_must_carry_both_old_and_new_thresholds() {
    let f = Fixture::new();
    let mut c = f.init_client();
    let (old, new) = (key(1), key(12));
    let next = |signers: &[&RoleKey]| {
        resign(&f.meta("1.root.json"), signers, |s| {
            s["version"] = 2.into();
            let id = new.key_id();
            s["keys"][&id] = serde_json::to_value(new.public()).unwrap();
            s["roles"]["root"]["keyids"] = serde_json::json!([id]);
        })
    };
    f.put_meta("2.root.json", &next(&[&new]));
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Threshold {
            role: "root (trusted keys)".into(),
            threshold: 1,
            valid: 0
        }
    );
    f.put_meta("2.root.json", &next(&[&old]));
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Threshold {
            role: "root (new keys)".into(),
            threshold: 1,
            valid: 0
        }
    );
    assert_eq!(f.stored_version("root"), Some(1));
    f.put_meta("2.root.json", &next(&[&old, &new]));
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("root"), Some(2));
}

#[test]
fn offline_root_export_sign_import_rotates_snapshot_and_timestamp_keys() {
    let mut f = Fixture::new();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    // The root key lives only in a 0600 file "on another machine".
    let offline = tempfile::tempdir().unwrap();
    let root_key_file = offline.path().join("root.key");
    key(1).write(&root_key_file, false).unwrap();
    f.keys.remove("root");

    // Rotate timestamp and snapshot keys: root must change, and no root key is online.
    f.repo
        .set_role_keys(TopRole::Timestamp, &spec(&[&key(14)], 1))
        .unwrap();
    f.repo
        .set_role_keys(TopRole::Snapshot, &spec(&[&key(13)], 1))
        .unwrap();
    f.keys.insert("timestamp".into(), vec![key(14)]);
    f.keys.insert("snapshot".into(), vec![key(13)]);
    let mut signers = bauxite_forge::tuf::repo::Signers::new();
    let (k13, k14, k2) = (key(13), key(14), key(2));
    signers
        .add("snapshot", &k13)
        .add("timestamp", &k14)
        .add("targets", &k2);
    let err = f.repo.publish(&signers, f.now).unwrap_err();
    assert!(err.to_string().contains("offline root key"), "{err}");

    let unsigned = f.repo.export_root(f.now).unwrap();
    let signed = sign_root(&unsigned, &root_key_file).unwrap();
    // The unsigned export itself is refused: it carries no root signature.
    assert!(f.repo.import_root(&unsigned, f.now).is_err());
    assert_eq!(f.repo.import_root(&signed, f.now).unwrap(), 2);
    f.repo.publish(&signers, f.now).unwrap();

    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("root"), Some(2));
    assert_eq!(f.stored("timestamp").unwrap(), f.meta("timestamp.json"));
}

#[test]
fn timestamp_key_rotation_recovers_from_a_fast_forward_attack() {
    let mut f = Fixture::new();
    let mut c = f.init_client();
    // An attacker with the timestamp key fast-forwarded the client to version 1000.
    let ts_key = f.keys["timestamp"][0].clone_key();
    let snap = f.meta("1.snapshot.json");
    f.put_meta("timestamp.json", &f.craft_timestamp(1000, &snap, &ts_key));
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("timestamp"), Some(1000));

    // The repository rotates the timestamp key; its honest timestamp is version 2.
    f.repo
        .set_role_keys(TopRole::Timestamp, &spec(&[&key(40)], 1))
        .unwrap();
    f.keys.insert("timestamp".into(), vec![key(40)]);
    f.publish();
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("timestamp"), Some(2));
    assert_eq!(f.stored_version("root"), Some(2));
}

#[test]
fn snapshot_key_rotation_recovers_targets_rolled_back_by_the_repository() {
    let mut f = Fixture::new();
    let mut c = f.init_client();
    // A compromised snapshot key pinned targets at version 500.
    let targets = f.meta("1.targets.json");
    let snap_key = f.keys["snapshot"][0].clone_key();
    let forged_targets = resign(&targets, &[&f.keys["targets"][0]], |s| {
        s["version"] = 500.into()
    });
    f.put_meta("500.targets.json", &forged_targets);
    let snap = f.craft_snapshot(2, &[("targets", &forged_targets)], &snap_key);
    f.put_meta("2.snapshot.json", &snap);
    f.put_meta(
        "timestamp.json",
        &f.craft_timestamp(2, &snap, &f.keys["timestamp"][0]),
    );
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("targets"), Some(500));

    // Rotating the snapshot key stops the old snapshot from pinning targets versions.
    f.repo
        .set_role_keys(TopRole::Snapshot, &spec(&[&key(30)], 1))
        .unwrap();
    f.keys.insert("snapshot".into(), vec![key(30)]);
    f.repo.touch("targets").unwrap();
    // Keep snapshot and timestamp versions above what the client saw.
    for _ in 0..2 {
        f.publish();
    }
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored_version("root"), Some(2));
    assert!(f.stored_version("targets").unwrap() < 500);
}

trait CloneKey {
    fn clone_key(&self) -> RoleKey;
}

impl CloneKey for RoleKey {
    fn clone_key(&self) -> RoleKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        self.write(&path, false).unwrap();
        RoleKey::load(&path).unwrap()
    }
}
