//! Length and hash checks for metadata and targets.
//!
//! Invariant: bytes pass only if their length equals the signed length and every listed
//! hash of a known algorithm (sha256, sha512, blake3) matches; a list with an unknown
//! algorithm, or with none known, is refused rather than partly checked.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::refusal::Refusal;

/// A hash algorithm this client implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlgorithm {
    /// SHA-256, the one every TUF implementation knows.
    Sha256,
    /// SHA-512.
    Sha512,
    /// BLAKE3 (32-byte output), fast enough to hash firmware as it streams.
    Blake3,
}

impl HashAlgorithm {
    /// Every known algorithm, in the order a target URL prefers them.
    pub const ALL: [HashAlgorithm; 3] = [Self::Sha256, Self::Blake3, Self::Sha512];

    /// The name TUF metadata uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Blake3 => "blake3",
        }
    }

    /// Parses a metadata name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TUF `hashes` object: algorithm name -> lowercase hex digest, as signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hashes(pub BTreeMap<String, String>);

impl Hashes {
    /// The digest listed for `algorithm`, hex.
    pub fn get(&self, algorithm: HashAlgorithm) -> Option<&str> {
        self.0.get(algorithm.name()).map(String::as_str)
    }

    /// The algorithm and digest a consistent-snapshot URL uses: the first known algorithm
    /// in [`HashAlgorithm::ALL`] order that is listed.
    pub fn url_hash(&self) -> Option<(HashAlgorithm, &str)> {
        HashAlgorithm::ALL
            .into_iter()
            .find_map(|a| self.get(a).map(|h| (a, h)))
    }

    /// The listed algorithms, checked: every one must be known, and at least one listed.
    pub(crate) fn algorithms(&self, what: &str) -> Result<Vec<HashAlgorithm>, Refusal> {
        let known: Option<Vec<HashAlgorithm>> =
            self.0.keys().map(|n| HashAlgorithm::from_name(n)).collect();
        match known {
            Some(list) if !list.is_empty() => Ok(list),
            _ => Err(Refusal::NoKnownHash {
                what: what.to_owned(),
                algorithms: self.0.keys().cloned().collect(),
            }),
        }
    }
}

/// Streaming hasher for the algorithms a target lists.
pub(crate) struct MultiHasher {
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
    blake3: Option<Box<blake3::Hasher>>,
    length: u64,
}

impl MultiHasher {
    /// A hasher for `algorithms`.
    pub(crate) fn new(algorithms: &[HashAlgorithm]) -> Self {
        let has = |a| algorithms.contains(&a);
        Self {
            sha256: has(HashAlgorithm::Sha256).then(sha2::Sha256::new),
            sha512: has(HashAlgorithm::Sha512).then(sha2::Sha512::new),
            blake3: has(HashAlgorithm::Blake3).then(|| Box::new(blake3::Hasher::new())),
            length: 0,
        }
    }

    /// Feeds bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.length += bytes.len() as u64;
        if let Some(h) = self.sha256.as_mut() {
            h.update(bytes);
        }
        if let Some(h) = self.sha512.as_mut() {
            h.update(bytes);
        }
        if let Some(h) = self.blake3.as_mut() {
            h.update(bytes);
        }
    }

    /// Bytes fed so far.
    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// The digests, hex.
    pub(crate) fn finish(self) -> BTreeMap<HashAlgorithm, String> {
        let mut out = BTreeMap::new();
        if let Some(h) = self.sha256 {
            out.insert(HashAlgorithm::Sha256, hex::encode(h.finalize()));
        }
        if let Some(h) = self.sha512 {
            out.insert(HashAlgorithm::Sha512, hex::encode(h.finalize()));
        }
        if let Some(h) = self.blake3 {
            out.insert(HashAlgorithm::Blake3, h.finalize().to_hex().to_string());
        }
        out
    }
}

/// Computes `algorithms` over `bytes` as a TUF `hashes` object.
pub fn hashes_of(bytes: &[u8], algorithms: &[HashAlgorithm]) -> Hashes {
    let mut h = MultiHasher::new(algorithms);
    h.update(bytes);
    Hashes(
        h.finish()
            .into_iter()
            .map(|(a, d)| (a.name().to_owned(), d))
            .collect(),
    )
}

/// Checks a finished hasher against the signed length and hashes.
pub(crate) fn check_digests(
    what: &str,
    length: Option<u64>,
    hashes: Option<&Hashes>,
    hasher: MultiHasher,
) -> Result<(), Refusal> {
    let found = hasher.length();
    if let Some(expected) = length
        && expected != found
    {
        return Err(Refusal::LengthMismatch {
            what: what.to_owned(),
            expected,
            found,
        });
    }
    let Some(hashes) = hashes else {
        return Ok(());
    };
    for (algorithm, digest) in hasher.finish() {
        let signed = hashes.get(algorithm).unwrap_or_default();
        if !signed.eq_ignore_ascii_case(&digest) {
            return Err(Refusal::HashMismatch {
                what: what.to_owned(),
                algorithm: algorithm.name().to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks whole `bytes` against an optional signed length and optional hashes.
pub(crate) fn check_bytes(
    what: &str,
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&Hashes>,
) -> Result<(), Refusal> {
    let algorithms = match hashes {
        Some(h) => h.algorithms(what)?,
        None => Vec::new(),
    };
    let mut hasher = MultiHasher::new(&algorithms);
    hasher.update(bytes);
    check_digests(what, length, hashes, hasher)
}
