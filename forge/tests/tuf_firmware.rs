//! Firmware targets: the signed `custom.bauxite` object (typed parse/emit, property
//! tested), the chunk-index lookup through trusted metadata, and downgrade refusal.

// Test support helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bauxite_forge::tuf::firmware::{CHUNK_SIZE, FirmwareInfo, parse_version};
use bauxite_forge::tuf::hashes::hashes_of;
use bauxite_forge::tuf::repo::{RepoOptions, Repository, RoleKey};
use bauxite_forge::tuf::{HashAlgorithm, Refusal};
use common::*;
use proptest::prelude::*;

fn chunk_index(image: &[u8]) -> Vec<u8> {
    image
        .chunks(CHUNK_SIZE as usize)
        .flat_map(|c| *blake3::hash(c).as_bytes())
        .collect()
}

#[test]
fn firmware_and_its_chunk_index_are_found_and_verified_through_tuf() {
    let mut f = Fixture::new();
    let image: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let hashes = hashes_of(&image, &[HashAlgorithm::Sha256, HashAlgorithm::Blake3]);
    let index = chunk_index(&image);
    let info = f
        .repo
        .add_firmware(
            "targets",
            "fw/robot/2.0.0.img",
            "2.0.0",
            image.len() as u64,
            &hashes,
            &index,
        )
        .unwrap();
    assert_eq!(info.chunk_count, 4);
    f.publish();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let fw = c
        .find_firmware(&mut f.source(), "fw/robot/2.0.0.img")
        .unwrap();
    assert_eq!(fw.info, info);
    assert_eq!(fw.index.name, "fw/robot/2.0.0.img.chunks");
    let got = c.fetch_target_bytes(&mut f.source(), &fw.index).unwrap();
    assert_eq!(got, index);
    let first: [u8; 32] = got[..32].try_into().unwrap();
    assert_eq!(
        first,
        *blake3::hash(&image[..CHUNK_SIZE as usize]).as_bytes()
    );
    fw.info.check_newer_than("1.9.7").unwrap();
    assert_eq!(
        fw.info.check_newer_than("2.0.0"),
        Err(Refusal::Downgrade {
            installed: "2.0.0".into(),
            offered: "2.0.0".into()
        })
    );
    assert!(matches!(
        fw.info.check_newer_than("10.0"),
        Err(Refusal::Downgrade { .. })
    ));
}

#[test]
fn a_chunk_index_of_the_wrong_length_is_refused_on_both_sides() {
    let mut f = Fixture::new();
    let hashes = hashes_of(b"x", &[HashAlgorithm::Sha256]);
    assert!(
        f.repo
            .add_firmware("targets", "fw.img", "1.0.0", 1, &hashes, &[0; 31])
            .is_err()
    );
    // A firmware whose custom object claims a chunk index the metadata lists at another length.
    let custom = FirmwareInfo::new("1.0.0", 1, "idx").to_custom();
    f.repo
        .add_target_meta("targets", "fw.img", 1, &hashes, Some(custom))
        .unwrap();
    f.repo.add_target("targets", "idx", &[0; 64], None).unwrap();
    f.publish();
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    let r = refusal(c.find_firmware(&mut f.source(), "fw.img"));
    assert!(matches!(r, Refusal::BadFirmwareInfo { .. }), "{r:?}");
}

#[test]
fn role_keys_are_written_0600_and_refused_when_readable_by_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/targets-1.json");
    let k = key(7);
    k.write(&path, false).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(RoleKey::load(&path).unwrap().key_id(), k.key_id());
    assert!(
        k.write(&path, false).is_err(),
        "an existing key is never replaced silently"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(RoleKey::load(&path).is_err());
}

#[test]
fn a_reopened_repository_continues_its_versions() {
    let mut f = Fixture::new();
    f.repo.add_target("targets", "a", b"a", None).unwrap();
    f.publish();
    let reopened = Repository::open(f.repo.dir(), RepoOptions::default()).unwrap();
    f.repo = reopened;
    f.repo.add_target("targets", "b", b"b", None).unwrap();
    let published = f.publish();
    assert_eq!((published.snapshot, published.timestamp), (3, 3));
    assert_eq!(published.targets.get("targets"), Some(&3));
    let mut c = f.init_client();
    f.refresh(&mut c).unwrap();
    assert!(c.find_target(&mut f.source(), "a").is_ok());
    assert!(c.find_target(&mut f.source(), "b").is_ok());
}

fn version_string() -> impl Strategy<Value = String> {
    prop::collection::vec(0u64..100_000, 1..=4).prop_map(|parts| {
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    })
}

proptest! {
    #[test]
    fn custom_object_round_trips(version in version_string(), len in 0u64..(1 << 40), index in "[a-z/]{1,20}\\.chunks") {
        let info = FirmwareInfo::new(&version, len, &index);
        let parsed = FirmwareInfo::from_custom("fw.img", Some(&info.to_custom()), len).unwrap();
        prop_assert_eq!(&parsed, &info);
        prop_assert_eq!(parsed.index_length(), len.div_ceil(u64::from(CHUNK_SIZE)) * 32);
    }

    #[test]
    fn custom_object_parse_never_panics_and_rejects_inconsistent_counts(
        json in "\\PC{0,200}", len in any::<u64>(), count in any::<u64>()
    ) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) {
            let _ = FirmwareInfo::from_custom("fw", Some(&value), len);
        }
        let mut info = FirmwareInfo::new("1.0.0", len, "idx");
        info.chunk_count = count;
        let ok = FirmwareInfo::from_custom("fw", Some(&info.to_custom()), len).is_ok();
        prop_assert_eq!(ok, count == len.div_ceil(u64::from(CHUNK_SIZE)));
    }

    #[test]
    fn version_order_is_numeric(a in version_string(), b in version_string()) {
        let (pa, pb) = (parse_version(&a).unwrap(), parse_version(&b).unwrap());
        let info = FirmwareInfo::new(&a, 0, "idx");
        prop_assert_eq!(info.check_newer_than(&b).is_ok(), pa > pb);
    }

    #[test]
    fn metadata_inspection_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = bauxite_forge::tuf::inspect(&bytes);
    }

    #[test]
    fn delegation_patterns_match_like_fnmatch_per_segment(
        segs in prop::collection::vec("[a-c]{0,3}", 1..4), star_at in 0usize..4
    ) {
        let path = segs.join("/");
        prop_assert!(bauxite_forge::tuf::pattern::path_matches(&path, &path));
        let mut pattern_segs = segs.clone();
        let i = star_at % pattern_segs.len();
        pattern_segs[i] = "*".to_owned();
        prop_assert!(bauxite_forge::tuf::pattern::path_matches(&pattern_segs.join("/"), &path));
        // A wildcard never crosses a separator.
        let deeper = format!("{}/x", path);
        prop_assert!(!bauxite_forge::tuf::pattern::path_matches("*", &deeper));
    }
}
