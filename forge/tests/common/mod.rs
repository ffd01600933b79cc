//! A real TUF repository in a temp dir, built and signed by `forge::tuf::repo`, and a
//! client over a directory source, for the `tuf_*` tests. Attacks are crafted by editing
//! published files and re-signing them with real keys (the attacker's or the role's).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bauxite_forge::Error;
use bauxite_forge::tuf::repo::{
    RepoOptions, Repository, RoleKey, RoleSpec, Signers, sign_metadata,
};
use bauxite_forge::tuf::{Client, DirSource, DirStore, Limits, Refusal, TopRole};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sha2::Digest as _;

/// The fixed "now" of every test (2027-01-15T08:00:00Z).
pub const T0: i64 = 1_800_000_000;

pub fn at(seconds_after_t0: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds_after_t0).unwrap()
}

pub fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// A deterministic Ed25519 key.
pub fn key(n: u8) -> RoleKey {
    RoleKey::from_seed([n; 32])
}

pub fn spec(keys: &[&RoleKey], threshold: u64) -> RoleSpec {
    RoleSpec {
        keys: keys.iter().map(|k| k.public()).collect(),
        threshold,
    }
}

pub struct Fixture {
    pub repo_dir: tempfile::TempDir,
    pub client_dir: tempfile::TempDir,
    pub repo: Repository,
    pub keys: BTreeMap<String, Vec<RoleKey>>,
    pub now: Timestamp,
}

impl Fixture {
    /// Root, targets, snapshot and timestamp keys 1..=4, threshold 1, published at T0.
    pub fn new() -> Self {
        let repo_dir = tempfile::tempdir().unwrap();
        let mut keys = BTreeMap::new();
        for (role, n) in [
            ("root", 1u8),
            ("targets", 2),
            ("snapshot", 3),
            ("timestamp", 4),
        ] {
            keys.insert(role.to_owned(), vec![key(n)]);
        }
        let mut specs = BTreeMap::new();
        for role in TopRole::ALL {
            let k = &keys[role.name()];
            specs.insert(role, spec(&k.iter().collect::<Vec<_>>(), 1));
        }
        let repo =
            Repository::create(repo_dir.path(), RepoOptions::default(), &specs, at(0)).unwrap();
        let mut f = Self {
            repo_dir,
            client_dir: tempfile::tempdir().unwrap(),
            repo,
            keys,
            now: at(0),
        };
        f.publish();
        f
    }

    pub fn signers(&self) -> Signers<'_> {
        let mut s = Signers::new();
        for (role, keys) in &self.keys {
            for k in keys {
                s.add(role, k);
            }
        }
        s
    }

    pub fn publish(&mut self) -> bauxite_forge::tuf::repo::Published {
        let mut s = Signers::new();
        for (role, keys) in &self.keys {
            for k in keys {
                s.add(role, k);
            }
        }
        self.repo.publish(&s, self.now).unwrap()
    }

    pub fn source(&self) -> DirSource {
        DirSource::new(self.repo.metadata_dir(), self.repo.targets_dir())
    }

    pub fn client_metadata(&self) -> PathBuf {
        self.client_dir.path().join("metadata")
    }

    pub fn client_targets(&self) -> PathBuf {
        self.client_dir.path().join("targets")
    }

    pub fn client(&self) -> Client<DirStore> {
        Client::new(DirStore::new(self.client_metadata()), Limits::default())
    }

    /// A client initialised with the first published root.
    pub fn init_client(&self) -> Client<DirStore> {
        let first = std::fs::read(self.repo.metadata_dir().join("1.root.json")).unwrap();
        let mut c = self.client();
        c.init(&first).unwrap();
        c
    }

    pub fn refresh(&self, client: &mut Client<DirStore>) -> Result<(), Error> {
        client.refresh(&mut self.source(), self.now)
    }

    pub fn meta(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.repo.metadata_dir().join(file)).unwrap()
    }

    pub fn put_meta(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.repo.metadata_dir().join(file), bytes).unwrap();
    }

    /// What the client stored for `role`, if anything.
    pub fn stored(&self, role: &str) -> Option<Vec<u8>> {
        std::fs::read(self.client_metadata().join(format!("{role}.json"))).ok()
    }

    pub fn stored_version(&self, role: &str) -> Option<u64> {
        self.stored(role).map(|b| version_of(&b))
    }

    /// Snapshot `version` listing `entries` (role, exact bytes), signed by `signer`.
    pub fn craft_snapshot(
        &self,
        version: u64,
        entries: &[(&str, &[u8])],
        signer: &RoleKey,
    ) -> Vec<u8> {
        let mut meta = serde_json::Map::new();
        for (role, bytes) in entries {
            meta.insert(format!("{role}.json"), meta_info(bytes));
        }
        let snapshot = json!({
            "signed": {"_type": "snapshot", "spec_version": "1.0.31", "version": version,
                       "expires": "2030-01-01T00:00:00Z", "meta": meta},
            "signatures": [],
        });
        sign_metadata(&serde_json::to_vec(&snapshot).unwrap(), signer).unwrap()
    }

    /// Timestamp `version` naming `snapshot` bytes, signed by `signer`.
    pub fn craft_timestamp(&self, version: u64, snapshot: &[u8], signer: &RoleKey) -> Vec<u8> {
        let ts = json!({
            "signed": {"_type": "timestamp", "spec_version": "1.0.31", "version": version,
                       "expires": "2030-01-01T00:00:00Z",
                       "meta": {"snapshot.json": meta_info(snapshot)}},
            "signatures": [],
        });
        sign_metadata(&serde_json::to_vec(&ts).unwrap(), signer).unwrap()
    }
}

/// `{"version", "length", "hashes": {"sha256"}}` of a metadata file.
pub fn meta_info(bytes: &[u8]) -> Value {
    json!({
        "version": version_of(bytes),
        "length": bytes.len(),
        "hashes": {"sha256": hex::encode(sha2::Sha256::digest(bytes))},
    })
}

pub fn version_of(bytes: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    v["signed"]["version"].as_u64().unwrap()
}

/// Edits the `signed` object of `bytes` and re-signs it with `keys` only.
pub fn resign(bytes: &[u8], keys: &[&RoleKey], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut v["signed"]);
    v["signatures"] = json!([]);
    let mut out = serde_json::to_vec(&v).unwrap();
    for k in keys {
        out = sign_metadata(&out, k).unwrap();
    }
    out
}

/// The refusal inside an error (panics on any other error, naming it).
pub fn refusal(result: Result<impl std::fmt::Debug, Error>) -> Refusal {
    match result {
        Err(Error::TufRefused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}
