//! The repository on real files, checked with forge's own TUF client.

use std::os::unix::fs::PermissionsExt as _;

use bauxite_forge::tuf::repo::{RoleKey, sign_root};
use bauxite_forge::tuf::{Client, DirSource, DirStore, Limits};
use jiff::SignedDuration;

use super::*;

const T0: UnixTime = UnixTime(1_780_000_000);

fn seeds() -> Result<KeySeeds> {
    Ok([[1; 32], [2; 32], [3; 32], [4; 32]])
}

fn source(repo: &UpdateRepo) -> DirSource {
    DirSource::new(
        repo.dir().join("repo/metadata"),
        repo.dir().join("repo/targets"),
    )
}

fn client(dir: &Path, root: &[u8]) -> Client<DirStore> {
    let mut c = Client::new(DirStore::new(dir), Limits::default());
    c.init(root).unwrap();
    c
}

fn at(t: UnixTime, hours: i64) -> Timestamp {
    tuf_time(t) + SignedDuration::from_hours(hours)
}

#[test]
fn first_start_writes_the_root_key_once_and_a_restart_opens_the_same_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, opened) =
        UpdateRepo::open_or_create(tmp.path(), T0, &RootKeyOut::DataDir, seeds).unwrap();
    let key = tmp.path().join("updates/root.key");
    assert_eq!(
        opened,
        Opened::Created {
            root_key: key.clone()
        }
    );
    assert_eq!(repo.root_key_on_hub(), Some(key.clone()));
    for file in [
        "root.key",
        "keys/targets.key",
        "keys/snapshot.key",
        "keys/timestamp.key",
    ] {
        let mode = std::fs::metadata(tmp.path().join("updates").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // The root key is the one root.json names, and it is not one of the online keys.
    let root_key = RoleKey::load(&key).unwrap();
    let root: serde_json::Value = serde_json::from_slice(&repo.root_json()).unwrap();
    assert_eq!(
        root["signed"]["roles"]["root"]["keyids"][0],
        root_key.key_id()
    );
    for role in keys::ONLINE_ROLES {
        assert_ne!(
            root["signed"]["roles"][role]["keyids"][0],
            root_key.key_id()
        );
    }
    let first = repo.root_json();
    drop(repo);
    // Moved offline: the hub keeps working without it.
    let offline = tmp.path().join("offline-root.key");
    std::fs::rename(&key, &offline).unwrap();
    let (repo, opened) =
        UpdateRepo::open_or_create(tmp.path(), T0.plus(60), &RootKeyOut::DataDir, || {
            panic!("an existing repository makes no keys")
        })
        .unwrap();
    assert_eq!(opened, Opened::Existing);
    assert_eq!(repo.root_json(), first);
    assert_eq!(repo.root_key_on_hub(), None);
}

#[test]
fn a_root_key_file_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("root.key");
    std::fs::write(&out, b"precious").unwrap();
    let err = UpdateRepo::open_or_create(tmp.path(), T0, &RootKeyOut::File(out.clone()), seeds)
        .unwrap_err();
    assert!(err.to_string().contains("choose another path"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
}

#[test]
fn published_firmware_verifies_with_the_tuf_client_and_revocation_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("elsewhere/root.key");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (repo, _) =
        UpdateRepo::open_or_create(&tmp.path().join("hub"), T0, &RootKeyOut::File(out), seeds)
            .unwrap();
    assert_eq!(repo.root_key_on_hub(), None);
    let built = build::build_virtual(5 * 65536 + 17, 3).unwrap();
    repo.publish_firmware("fw/1.0.0.img", "1.0.0", &built, T0)
        .unwrap();

    let mut c = client(&tmp.path().join("client"), &repo.root_json());
    let mut src = source(&repo);
    c.refresh(&mut src, at(T0, 1)).unwrap();
    let fw = c.find_firmware(&mut src, "fw/1.0.0.img").unwrap();
    assert_eq!(fw.image.length, built.length);
    assert_eq!(fw.info.chunk_count, 6);
    assert_eq!(
        c.fetch_target_bytes(&mut src, &fw.index).unwrap(),
        built.index
    );
    // The consistent-snapshot name of the index resolves through target_path.
    assert!(repo.target_path(&fw.index.url_path).is_ok());
    assert!(repo.metadata_path("timestamp.json").is_ok());
    assert!(repo.metadata_path("../keys/targets.key").is_err());
    assert!(repo.target_path("../../keys/targets.key").is_err());

    repo.remove_firmware("fw/1.0.0.img", T0.plus(10)).unwrap();
    c.refresh(&mut src, at(T0, 2)).unwrap();
    assert!(c.find_firmware(&mut src, "fw/1.0.0.img").is_err());
    assert!(repo.listed_targets().is_empty());
}

#[test]
fn an_offline_root_rotation_is_followed_by_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let old_key = tmp.path().join("offline/root.key");
    std::fs::create_dir_all(old_key.parent().unwrap()).unwrap();
    let (repo, _) = UpdateRepo::open_or_create(
        &tmp.path().join("hub"),
        T0,
        &RootKeyOut::File(old_key.clone()),
        seeds,
    )
    .unwrap();
    let first_root = repo.root_json();
    let mut c = client(&tmp.path().join("client"), &first_root);
    let mut src = source(&repo);
    c.refresh(&mut src, at(T0, 1)).unwrap();

    let new_key = RoleKey::from_seed([9; 32]);
    let new_key_file = tmp.path().join("offline/new-root.key");
    new_key.write(&new_key_file, false).unwrap();
    let public = {
        let json: serde_json::Value = serde_json::to_value(new_key.public()).unwrap();
        let hex_key = json["keyval"]["public"].as_str().unwrap().to_owned();
        <[u8; 32]>::try_from(hex::decode(hex_key).unwrap()).unwrap()
    };
    let unsigned = repo.export_root(T0.plus(60), &[public], 1).unwrap();
    // Exporting changed nothing live: a publish still works and root is still v1.
    repo.refresh(UnixTime(T0.0 + 20 * 3600)).unwrap();
    assert_eq!(repo.root_json(), first_root);
    // Signed by the new key alone, the rotation is refused (the old threshold is missing).
    let only_new = sign_root(&unsigned, &new_key_file).unwrap();
    assert!(repo.import_root(&only_new, T0.plus(120)).is_err());
    let both = sign_root(&only_new, &old_key).unwrap();
    assert_eq!(repo.import_root(&both, T0.plus(120)).unwrap(), 2);
    assert_ne!(repo.root_json(), first_root);

    c.refresh(&mut src, at(T0, 21)).unwrap();
    let trusted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("client/root.json")).unwrap())
            .unwrap();
    assert_eq!(trusted["signed"]["version"], 2);
    assert_eq!(
        trusted["signed"]["roles"]["root"]["keyids"][0],
        new_key.key_id()
    );
    // The next rotation needs only the new key: the old one is retired.
    let unsigned = repo.export_root(T0.plus(200), &[], 1).unwrap();
    assert!(
        repo.import_root(&sign_root(&unsigned, &old_key).unwrap(), T0.plus(200))
            .is_err()
    );
    let v3 = sign_root(&unsigned, &new_key_file).unwrap();
    assert_eq!(repo.import_root(&v3, T0.plus(200)).unwrap(), 3);
}

#[test]
fn the_timer_re_signs_before_expiry_so_clients_never_see_stale_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) =
        UpdateRepo::open_or_create(tmp.path(), T0, &RootKeyOut::DataDir, seeds).unwrap();
    let root = repo.root_json();
    // Without re-signing, a client a day and an hour later refuses the expired timestamp.
    let mut late = client(&tmp.path().join("late"), &root);
    assert!(late.refresh(&mut source(&repo), at(T0, 25)).is_err());

    // Checked 11 hours in: nothing due. 13 hours in: snapshot and timestamp re-signed.
    assert!(!repo.refresh(UnixTime(T0.0 + 11 * 3600)).unwrap().publish);
    let before = repo.expiries().unwrap();
    let plan = repo.refresh(UnixTime(T0.0 + 13 * 3600)).unwrap();
    assert!(plan.publish && !plan.targets);
    let after = repo.expiries().unwrap();
    assert!(after.timestamp > before.timestamp && after.snapshot > before.snapshot);
    assert_eq!(after.targets, before.targets);
    let mut c = client(&tmp.path().join("fresh"), &root);
    c.refresh(&mut source(&repo), at(T0, 25)).unwrap();

    // 46 days in, targets are re-signed too.
    let plan = repo.refresh(UnixTime(T0.0 + 46 * 86400)).unwrap();
    assert!(plan.targets);
    assert!(repo.expiries().unwrap().targets > after.targets);
}
