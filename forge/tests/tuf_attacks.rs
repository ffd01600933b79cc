//! The attacks TUF and Uptane catalogue, against a real repository (signed by
//! `forge::tuf::repo`) and the real client: each one is refused with its typed reason and
//! leaves the client's trusted metadata and target directory as they were.

// Test support helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bauxite_forge::tuf::Refusal;
use bauxite_forge::tuf::hashes::Hashes;
use common::*;

fn publish_target(f: &mut Fixture, name: &str, content: &[u8]) {
    f.repo.add_target("targets", name, content, None).unwrap();
    f.publish();
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

#[test]
fn clean_update_stores_exact_bytes_and_downloads_verified_target() {
    let mut f = Fixture::new();
    publish_target(&mut f, "hello.txt", b"hello robot");
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    for role in ["root", "targets"] {
        assert_eq!(
            f.stored(role).unwrap(),
            f.meta(&format!("{}.{role}.json", f.stored_version(role).unwrap()))
        );
    }
    assert_eq!(f.stored("timestamp").unwrap(), f.meta("timestamp.json"));
    assert_eq!(f.stored_version("snapshot"), Some(2));
    let info = c.find_target(&mut f.source(), "hello.txt").unwrap();
    let path = c
        .download_target(&mut f.source(), &info, &f.client_targets_dir())
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"hello robot");
}

trait TargetsDir {
    fn client_targets_dir(&self) -> std::path::PathBuf;
}

impl TargetsDir for Fixture {
    fn client_targets_dir(&self) -> std::path::PathBuf {
        let d = self.client_targets();
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

#[test]
fn arbitrary_software_hash_and_length_mismatch_are_refused_and_nothing_is_written() {
    let mut f = Fixture::new();
    publish_target(&mut f, "fw.bin", b"genuine firmware");
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let info = c.find_target(&mut f.source(), "fw.bin").unwrap();
    let served = f.repo.targets_dir().join(&info.url_path);
    let dir = f.client_targets_dir();

    std::fs::write(&served, b"evil!! firmware!").unwrap(); // same length, other bytes
    let r = refusal(c.download_target(&mut f.source(), &info, &dir));
    assert!(matches!(r, Refusal::HashMismatch { .. }), "{r:?}");
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));

    std::fs::write(&served, b"genuine firmware plus a payload").unwrap(); // longer
    let r = refusal(c.download_target(&mut f.source(), &info, &dir));
    assert!(matches!(r, Refusal::TooLarge { limit: 16, .. }), "{r:?}");
    assert!(listing(&dir).is_empty());

    std::fs::write(&served, b"genuine").unwrap(); // shorter
    let r = refusal(c.download_target(&mut f.source(), &info, &dir));
    assert!(
        matches!(
            r,
            Refusal::LengthMismatch {
                expected: 16,
                found: 7,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(listing(&dir).is_empty());
}

#[test]
fn every_listed_known_hash_is_checked_and_unknown_only_hashes_are_refused() {
    let mut f = Fixture::new();
    let content = b"two hashes";
    let mut hashes =
        bauxite_forge::tuf::hashes::hashes_of(content, &bauxite_forge::tuf::HashAlgorithm::ALL);
    hashes.0.insert("blake3".into(), "00".repeat(32)); // sha256 and sha512 right, blake3 wrong
    f.repo
        .add_target_meta("targets", "t.bin", content.len() as u64, &hashes, None)
        .unwrap();
    f.publish();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let info = c.find_target(&mut f.source(), "t.bin").unwrap();
    let path = f.repo.targets_dir().join(&info.url_path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    let r = refusal(c.fetch_target_bytes(&mut f.source(), &info));
    assert_eq!(
        r,
        Refusal::HashMismatch {
            what: "t.bin".into(),
            algorithm: "blake3".into()
        }
    );

    let mut info = info.clone();
    info.hashes = Hashes([("md5".to_owned(), "00".repeat(16))].into());
    let r = refusal(c.fetch_target_bytes(&mut f.source(), &info));
    assert!(matches!(r, Refusal::NoKnownHash { .. }), "{r:?}");
}

#[test]
fn rollback_of_timestamp_snapshot_targets_and_root_is_refused() {
    let mut f = Fixture::new();
    let ts1 = f.meta("timestamp.json");
    let snap1 = f.meta("1.snapshot.json");
    let targets1 = f.meta("1.targets.json");
    publish_target(&mut f, "a", b"a");
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let trusted_ts = f.stored("timestamp").unwrap();

    // Timestamp: an older version replayed.
    let ts2 = f.meta("timestamp.json");
    f.put_meta("timestamp.json", &ts1);
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Rollback {
            role: "timestamp".into(),
            trusted: 2,
            offered: 1
        }
    );
    assert_eq!(f.stored("timestamp").unwrap(), trusted_ts);
    f.put_meta("timestamp.json", &ts2);

    // Snapshot: a new timestamp (validly signed) names the old snapshot.
    let ts_key = &f.keys["timestamp"][0];
    f.put_meta("timestamp.json", &f.craft_timestamp(3, &snap1, ts_key));
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Rollback {
            role: "snapshot (in timestamp)".into(),
            trusted: 2,
            offered: 1
        }
    );
    assert_eq!(f.stored_version("snapshot"), Some(2));

    // Targets: a new snapshot (validly signed) lists the old targets.
    let snap_key = &f.keys["snapshot"][0];
    let snap3 = f.craft_snapshot(3, &[("targets", &targets1)], snap_key);
    f.put_meta("3.snapshot.json", &snap3);
    f.put_meta("timestamp.json", &f.craft_timestamp(3, &snap3, ts_key));
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Rollback {
            role: "targets.json".into(),
            trusted: 2,
            offered: 1
        }
    );
    assert_eq!(f.stored_version("snapshot"), Some(2));
    assert_eq!(f.stored_version("targets"), Some(2));

    // Root: version 1 served as 2.root.json.
    f.put_meta("timestamp.json", &ts2);
    f.put_meta("2.root.json", &f.meta("1.root.json"));
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::VersionMismatch {
            role: "root".into(),
            expected: 2,
            found: 1
        }
    );
}

#[test]
fn indefinite_freeze_expired_metadata_of_each_role_is_refused() {
    let f = Fixture::new();
    // `now` one day after T0; exactly one role expired 4 hours after T0 in each round.
    let now = f.now.checked_add(days(1)).unwrap();
    let (stale, fresh) = ("2027-01-15T12:00:00Z", "2040-01-01T00:00:00Z");
    for role in ["timestamp", "snapshot", "targets", "root"] {
        let exp = |r: &str| if r == role { stale } else { fresh };
        let root_key = &f.keys["root"][0];
        let root2 = resign(&f.meta("1.root.json"), &[root_key], |s| {
            s["version"] = 2.into();
            s["expires"] = exp("root").into();
        });
        f.put_meta("2.root.json", &root2);
        let targets = resign(&f.meta("1.targets.json"), &[&f.keys["targets"][0]], |s| {
            s["expires"] = exp("targets").into()
        });
        f.put_meta("1.targets.json", &targets);
        let snap = f.craft_snapshot(1, &[("targets", &targets)], &f.keys["snapshot"][0]);
        let snap = resign(&snap, &[&f.keys["snapshot"][0]], |s| {
            s["expires"] = exp("snapshot").into()
        });
        f.put_meta("1.snapshot.json", &snap);
        let ts = f.craft_timestamp(1, &snap, &f.keys["timestamp"][0]);
        let ts = resign(&ts, &[&f.keys["timestamp"][0]], |s| {
            s["expires"] = exp("timestamp").into()
        });
        f.put_meta("timestamp.json", &ts);

        let store = tempfile::tempdir().unwrap();
        let mut client = bauxite_forge::tuf::Client::new(
            bauxite_forge::tuf::DirStore::new(store.path()),
            bauxite_forge::tuf::Limits::default(),
        );
        client.init(&f.meta("1.root.json")).unwrap();
        let r = refusal(client.refresh(&mut f.source(), now));
        match r {
            Refusal::Expired { role: got, .. } => assert_eq!(got, role),
            other => panic!("{role}: {other:?}"),
        }
        // The same metadata one hour before the stale expiry is accepted.
        client.refresh(&mut f.source(), at(3 * 3600)).unwrap();
    }
}

#[test]
fn mix_and_match_of_snapshot_and_targets_from_other_publications_is_refused() {
    let mut f = Fixture::new();
    publish_target(&mut f, "a", b"publication A");
    let snap_a = f.meta("2.snapshot.json");
    let targets_a = f.meta("2.targets.json");
    publish_target(&mut f, "b", b"publication B");
    let mut c = f.init_client();

    // Targets of A served under B's snapshot (which signs B's targets hash and version).
    f.put_meta("3.targets.json", &targets_a);
    let r = refusal(f.refresh(&mut c));
    assert!(
        matches!(
            r,
            Refusal::LengthMismatch { .. } | Refusal::HashMismatch { .. }
        ),
        "{r:?}"
    );
    assert_eq!(f.stored("targets"), None);

    // Snapshot of A served under B's timestamp, to a client that has no snapshot yet.
    f.put_meta("3.snapshot.json", &snap_a);
    let f2_client = tempfile::tempdir().unwrap();
    let mut c = bauxite_forge::tuf::Client::new(
        bauxite_forge::tuf::DirStore::new(f2_client.path()),
        bauxite_forge::tuf::Limits::default(),
    );
    c.init(&f.meta("1.root.json")).unwrap();
    let r = refusal(c.refresh(&mut f.source(), f.now));
    assert!(
        matches!(
            r,
            Refusal::LengthMismatch { .. } | Refusal::HashMismatch { .. }
        ),
        "{r:?}"
    );
    assert!(!f2_client.path().join("snapshot.json").exists());
}

#[test]
fn endless_data_is_refused_at_the_limit() {
    let mut f = Fixture::new();
    let mut c = f.init_client();
    // Timestamp beyond the 16 KiB limit: whitespace keeps it valid JSON and validly signed.
    let mut ts = f.meta("timestamp.json");
    ts.extend(std::iter::repeat_n(b' ', 20_000));
    f.put_meta("timestamp.json", &ts);
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::TooLarge {
            what: "timestamp.json".into(),
            limit: 16_384
        }
    );
    // Snapshot longer than the length the timestamp signs.
    f.publish();
    let mut snap = f.meta("2.snapshot.json");
    let limit = snap.len() as u64;
    snap.extend(std::iter::repeat_n(b' ', 10));
    f.put_meta("2.snapshot.json", &snap);
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::TooLarge {
            what: "2.snapshot.json".into(),
            limit
        }
    );
}

#[test]
fn fewer_signatures_than_threshold_a_wrong_key_and_another_roles_key_are_refused() {
    let mut f = Fixture::new();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let snap = f.meta("1.snapshot.json");
    let attacker = key(99);
    let snapshot_key = &f.keys["snapshot"][0];
    for (label, signer) in [
        ("attacker's key", &attacker),
        ("snapshot key", snapshot_key),
    ] {
        let ts = f.craft_timestamp(5, &snap, signer);
        f.put_meta("timestamp.json", &ts);
        let r = refusal(f.refresh(&mut c));
        assert_eq!(
            r,
            Refusal::Threshold {
                role: "timestamp".into(),
                threshold: 1,
                valid: 0
            },
            "{label}"
        );
        assert_eq!(f.stored_version("timestamp"), Some(1), "{label}");
    }
    // Threshold 2 of 2 for targets, signed by one.
    let extra = key(21);
    let mut both = f.keys["targets"].iter().collect::<Vec<_>>();
    both.push(&extra);
    f.repo
        .set_role_keys(bauxite_forge::tuf::TopRole::Targets, &spec(&both, 2))
        .unwrap();
    f.keys.get_mut("targets").unwrap().push(key(21));
    f.publish();
    let targets = f.meta("2.targets.json");
    let one = resign(&targets, &[&f.keys["targets"][0]], |_| {});
    f.put_meta("2.targets.json", &one);
    let snap_key = &f.keys["snapshot"][0];
    let snap = f.craft_snapshot(3, &[("targets", &one)], snap_key);
    f.put_meta("3.snapshot.json", &snap);
    f.put_meta(
        "timestamp.json",
        &f.craft_timestamp(6, &snap, &f.keys["timestamp"][0]),
    );
    let r = refusal(f.refresh(&mut c));
    assert_eq!(
        r,
        Refusal::Threshold {
            role: "targets".into(),
            threshold: 2,
            valid: 1
        }
    );
    assert_eq!(f.stored_version("root"), Some(2));
    assert_eq!(f.stored_version("targets"), Some(1));
}

#[test]
fn same_version_timestamp_with_new_content_is_ignored() {
    let f = Fixture::new();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let trusted = f.stored("timestamp").unwrap();
    let forged = resign(&f.meta("timestamp.json"), &[&f.keys["timestamp"][0]], |s| {
        s["meta"]["snapshot.json"]["version"] = 100.into();
    });
    f.put_meta("timestamp.json", &forged);
    f.refresh(&mut c).unwrap();
    assert_eq!(f.stored("timestamp").unwrap(), trusted);
    assert_eq!(f.stored_version("snapshot"), Some(1));
}

#[test]
fn duplicate_signatures_do_not_reach_a_threshold() {
    let f = Fixture::new();
    let mut c = f.init_client();
    let mut v: serde_json::Value = serde_json::from_slice(&f.meta("timestamp.json")).unwrap();
    let sig = v["signatures"][0].clone();
    v["signatures"].as_array_mut().unwrap().push(sig);
    f.put_meta("timestamp.json", &serde_json::to_vec(&v).unwrap());
    let r = refusal(f.refresh(&mut c));
    assert!(matches!(r, Refusal::DuplicateSignature { .. }), "{r:?}");
    assert_eq!(f.stored("timestamp"), None);
}
