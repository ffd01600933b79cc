//! TUF metadata comes from the repository (or anyone on the path) before anything about
//! it is trusted: parsing, signature-threshold checks and the refresh workflow must be
//! total on any bytes. The input is used as a trusted root, as a parsed file, and as
//! every remote metadata file of a refresh against a real, validly signed root.
#![no_main]
use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::OnceLock;

use bauxite_forge::Error;
use bauxite_forge::tuf::repo::{RepoOptions, Repository, RoleKey, RoleSpec, Signers};
use bauxite_forge::tuf::{Client, FetchError, Limits, MetadataSource, MetadataStore, TopRole};

#[derive(Default)]
struct MemStore(BTreeMap<String, Vec<u8>>);

impl MetadataStore for MemStore {
    fn load(&self, role: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.get(role).cloned())
    }
    fn store(&mut self, role: &str, bytes: &[u8]) -> Result<(), Error> {
        self.0.insert(role.to_owned(), bytes.to_vec());
        Ok(())
    }
}

/// Serves the fuzz input for every file except newer roots.
struct Same<'a>(&'a [u8]);

impl MetadataSource for Same<'_> {
    fn fetch_metadata(&mut self, name: &str, _max: u64) -> Result<Box<dyn Read + '_>, FetchError> {
        if name.ends_with(".root.json") {
            return Err(FetchError::NotFound { path: name.to_owned() });
        }
        Ok(Box::new(Cursor::new(self.0)))
    }
}

fn root() -> &'static [u8] {
    static ROOT: OnceLock<Vec<u8>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bauxite-fuzz-tuf-{}", std::process::id()));
        let keys: Vec<RoleKey> = (1..=4u8).map(|n| RoleKey::from_seed([n; 32])).collect();
        let specs = TopRole::ALL
            .iter()
            .zip(&keys)
            .map(|(r, k)| (*r, RoleSpec { keys: vec![k.public()], threshold: 1 }))
            .collect();
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut repo = Repository::create(&dir, RepoOptions::default(), &specs, now).unwrap();
        let mut signers = Signers::new();
        for (r, k) in TopRole::ALL.iter().zip(&keys) {
            signers.add(r.name(), k);
        }
        repo.publish(&signers, now).unwrap();
        let bytes = repo.root_bytes().unwrap().to_vec();
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bauxite_forge::tuf::inspect(data);
    let _ = Client::new(MemStore::default(), Limits::default()).init(data);
    let mut client = Client::new(MemStore::default(), Limits::default());
    if client.init(root()).is_ok() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        if client.refresh(&mut Same(data), now).is_ok() {
            let _ = client.find_target(&mut Same(data), "fw/image.bin");
        }
    }
});
