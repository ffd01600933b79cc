//! Delegations: pre-order search, terminating roles, out-of-scope paths ignored without
//! rejecting the repository, lazy loading of only the roles a lookup needs, and
//! consistent-snapshot targets in sub-folders.

// Test support helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;

use bauxite_forge::tuf::repo::Delegation;
use bauxite_forge::tuf::{DirSource, FetchError, MetadataSource, Refusal};
use common::*;

/// Records every metadata file fetched.
struct Counting {
    inner: DirSource,
    fetched: Vec<String>,
}

impl MetadataSource for Counting {
    fn fetch_metadata(
        &mut self,
        file_name: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError> {
        self.fetched.push(file_name.to_owned());
        self.inner.fetch_metadata(file_name, max_len)
    }
}

fn delegation(name: &str, key_seed: u8, paths: &[&str], terminating: bool) -> Delegation {
    Delegation {
        name: name.to_owned(),
        keys: spec(&[&key(key_seed)], 1),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        terminating,
    }
}

/// targets -> A (a/*), B (b/*, terminating), C (*); A -> A1 (a/x/*); B -> B1 (*).
fn tree() -> Fixture {
    let mut f = Fixture::new();
    f.repo
        .delegate("targets", &delegation("A", 50, &["a/*", "a/*/*"], false))
        .unwrap();
    f.repo
        .delegate("targets", &delegation("B", 51, &["b/*"], true))
        .unwrap();
    f.repo
        .delegate("targets", &delegation("C", 52, &["*", "b/*", "q/*"], false))
        .unwrap();
    f.repo
        .delegate("A", &delegation("A1", 53, &["a/x/*"], false))
        .unwrap();
    // B1 asks for more than B was given: only b/* can ever reach it.
    f.repo
        .delegate("B", &delegation("B1", 54, &["*", "b/*", "q/*"], false))
        .unwrap();
    for (role, seed) in [("A", 50u8), ("B", 51), ("C", 52), ("A1", 53), ("B1", 54)] {
        f.keys.insert(role.into(), vec![key(seed)]);
    }
    f.repo.add_target("A", "a/one", b"a one", None).unwrap();
    f.repo
        .add_target("A1", "a/x/deep", b"a x deep", None)
        .unwrap();
    f.repo
        .add_target("B1", "b/fw", b"b firmware", None)
        .unwrap();
    f.repo
        .add_target("B1", "q/escape", b"outside B's paths", None)
        .unwrap();
    f.repo
        .add_target("C", "b/fw", b"C must never win b/*", None)
        .unwrap();
    f.repo.add_target("C", "c", b"c", None).unwrap();
    f.publish();
    f
}

fn lookup(f: &Fixture, name: &str) -> (Result<Vec<u8>, bauxite_forge::Error>, Vec<String>) {
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let mut src = Counting {
        inner: f.source(),
        fetched: Vec::new(),
    };
    let result = c
        .find_target(&mut src, name)
        .and_then(|info| c.fetch_target_bytes(&mut f.source(), &info));
    let _ = std::fs::remove_dir_all(f.client_metadata());
    (result, src.fetched)
}

#[test]
fn search_is_preorder_and_loads_only_roles_on_the_path() {
    let f = tree();
    let (got, fetched) = lookup(&f, "a/x/deep");
    assert_eq!(got.unwrap(), b"a x deep");
    assert_eq!(fetched, ["1.A.json", "1.A1.json"]);

    let (got, fetched) = lookup(&f, "c");
    assert_eq!(got.unwrap(), b"c");
    assert_eq!(fetched, ["1.C.json"]);
}

#[test]
fn terminating_delegation_stops_the_search_for_its_paths() {
    let f = tree();
    let (got, fetched) = lookup(&f, "b/fw");
    assert_eq!(got.unwrap(), b"b firmware");
    assert_eq!(fetched, ["1.B.json", "1.B1.json"]);
    // C also lists b/fw but is never consulted: B is terminating for b/*.
    let (got, fetched) = lookup(&f, "b/missing");
    assert!(matches!(
        got,
        Err(bauxite_forge::Error::TufRefused(
            Refusal::TargetNotFound { .. }
        ))
    ));
    assert_eq!(fetched, ["1.B.json", "1.B1.json"]);
}

#[test]
fn a_path_outside_the_parents_delegation_is_ignored_not_fatal() {
    let f = tree();
    // B1 lists q/escape, but B was only trusted for b/*: the search never reaches B1.
    let (got, fetched) = lookup(&f, "q/escape");
    assert!(
        matches!(
            got,
            Err(bauxite_forge::Error::TufRefused(
                Refusal::TargetNotFound { .. }
            ))
        ),
        "{got:?}"
    );
    assert_eq!(fetched, ["1.C.json"]);
    // The rest of the repository still works, including B1's in-scope target.
    assert_eq!(lookup(&f, "b/fw").0.unwrap(), b"b firmware");
    assert_eq!(lookup(&f, "a/one").0.unwrap(), b"a one");
}

#[test]
fn a_delegated_role_signed_by_the_wrong_key_is_refused() {
    let f = tree();
    let forged = resign(&f.meta("1.A.json"), &[&key(99)], |_| {});
    f.put_meta("1.A.json", &forged);
    let snap_bytes = f.meta("2.snapshot.json");
    let mut snap: serde_json::Value = serde_json::from_slice(&snap_bytes).unwrap();
    snap["signed"]["meta"]["A.json"] = meta_info(&forged);
    let snap = resign(
        &serde_json::to_vec(&snap).unwrap(),
        &[&f.keys["snapshot"][0]],
        |s| s["version"] = 3.into(),
    );
    f.put_meta("3.snapshot.json", &snap);
    f.put_meta(
        "timestamp.json",
        &f.craft_timestamp(3, &snap, &f.keys["timestamp"][0]),
    );
    let (got, _) = lookup(&f, "a/one");
    assert!(
        matches!(got, Err(bauxite_forge::Error::TufRefused(Refusal::Threshold { ref role, valid: 0, .. })) if role == "A"),
        "{got:?}"
    );
}

#[test]
fn consistent_snapshot_targets_live_hash_prefixed_in_their_sub_folders() {
    let mut f = Fixture::new();
    let hashes = f
        .repo
        .add_target("targets", "fw/robot-7/image.bin", b"image bytes", None)
        .unwrap();
    f.publish();
    let sha = hashes
        .get(bauxite_forge::tuf::HashAlgorithm::Sha256)
        .unwrap()
        .to_owned();
    let on_disk = f
        .repo
        .targets_dir()
        .join(format!("fw/robot-7/{sha}.image.bin"));
    assert_eq!(std::fs::read(on_disk).unwrap(), b"image bytes");
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let info = c
        .find_target(&mut f.source(), "fw/robot-7/image.bin")
        .unwrap();
    assert_eq!(info.url_path, format!("fw/robot-7/{sha}.image.bin"));
    let dir = f.client_targets();
    std::fs::create_dir_all(&dir).unwrap();
    let path = c.download_target(&mut f.source(), &info, &dir).unwrap();
    assert_eq!(path, dir.join("fw%2Frobot-7%2Fimage.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), b"image bytes");
    // A second download reuses the verified file without fetching.
    struct Refuse;
    impl bauxite_forge::tuf::TargetSource for Refuse {
        fn fetch_target(&mut self, path: &str, _: u64) -> Result<Box<dyn Read + '_>, FetchError> {
            Err(FetchError::NotFound {
                path: path.to_owned(),
            })
        }
    }
    assert_eq!(c.download_target(&mut Refuse, &info, &dir).unwrap(), path);
}
