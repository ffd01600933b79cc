//! Why the client refused metadata or a target: a typed value, never text to match.
//!
//! A refusal means the repository (or someone between it and us) served something the
//! TUF workflow must not trust; the trusted state is left as it was before the offending
//! file was read.

use jiff::Timestamp;

/// A refusal by the TUF client workflow; each variant names the offending file or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The bytes are not TUF metadata of the expected shape.
    #[error("{role}: malformed metadata ({reason}); the repository published a broken file")]
    Malformed {
        /// The role the file was fetched as.
        role: String,
        /// What did not parse.
        reason: String,
    },
    /// The `_type` field names another role (a file served in place of another).
    #[error("{role}: metadata says it is `{found}`; refusing a file served under the wrong name")]
    WrongType {
        /// The role the file was fetched as.
        role: String,
        /// The `_type` it carries.
        found: String,
    },
    /// The metadata's `spec_version` has a major version this client does not implement.
    #[error("{role}: unsupported spec_version {found}; this client implements TUF 1.x")]
    SpecVersion {
        /// The role.
        role: String,
        /// The `spec_version` it carries.
        found: String,
    },
    /// Two signatures carry the same key id.
    #[error("{role}: two signatures with key id {keyid}; refusing to count one key twice")]
    DuplicateSignature {
        /// The role.
        role: String,
        /// The repeated key id.
        keyid: String,
    },
    /// Fewer valid signatures from the role's keys than its threshold.
    #[error("{role}: {valid} valid signature(s) of a threshold of {threshold}")]
    Threshold {
        /// The role (for a root update: "root (old keys)" or "root (new keys)").
        role: String,
        /// Signatures required.
        threshold: u64,
        /// Valid signatures found.
        valid: u64,
    },
    /// The role is not delegated by the metadata that should vouch for it.
    #[error("{role}: not delegated by {delegator}")]
    NotDelegated {
        /// The role.
        role: String,
        /// Who was asked to vouch for it.
        delegator: String,
    },
    /// The version inside the file is not the one it must be (URL, snapshot or N+1 rule).
    #[error("{role}: version {found} where version {expected} was required")]
    VersionMismatch {
        /// The role.
        role: String,
        /// The version required.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// A version older than the trusted one (a rollback attack).
    #[error("{role}: version {offered} is older than the trusted version {trusted} (rollback)")]
    Rollback {
        /// The role or metadata file.
        role: String,
        /// The version already trusted.
        trusted: u64,
        /// The version offered.
        offered: u64,
    },
    /// A new snapshot no longer lists a file the trusted snapshot listed.
    #[error("snapshot: {file} was listed by the trusted snapshot and is missing from the new one")]
    RemovedFromSnapshot {
        /// The metadata file name.
        file: String,
    },
    /// The snapshot does not list a targets role that is needed.
    #[error("snapshot does not list {file}; the repository must publish it in snapshot")]
    MissingFromSnapshot {
        /// The metadata file name.
        file: String,
    },
    /// The metadata is past its expiry (a freeze attack, or a repository that stopped).
    #[error("{role}: expired at {expires} (now {now}); the repository must re-sign it")]
    Expired {
        /// The role.
        role: String,
        /// Its `expires`.
        expires: Timestamp,
        /// The time it was checked at.
        now: Timestamp,
    },
    /// Length differs from the signed length.
    #[error("{what}: {found} bytes where {expected} were signed")]
    LengthMismatch {
        /// The file.
        what: String,
        /// Signed length.
        expected: u64,
        /// Length received.
        found: u64,
    },
    /// A hash differs from the signed hash.
    #[error("{what}: {algorithm} hash does not match the signed hash")]
    HashMismatch {
        /// The file.
        what: String,
        /// The algorithm that failed.
        algorithm: String,
    },
    /// The signed hashes use no algorithm this client implements (sha256, sha512, blake3).
    #[error("{what}: no known hash algorithm among {algorithms:?}; refusing unverifiable bytes")]
    NoKnownHash {
        /// The file.
        what: String,
        /// The algorithms listed.
        algorithms: Vec<String>,
    },
    /// More bytes than the limit (an endless-data attack or a wrong limit).
    #[error("{what}: more than {limit} bytes; refusing endless data")]
    TooLarge {
        /// The file.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// No role reachable for this path lists the target.
    #[error("target {name} is not listed by any role trusted for that path")]
    TargetNotFound {
        /// The target path.
        name: String,
    },
    /// A target or role name that cannot be used safely.
    #[error("unsafe name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A firmware target's `custom.bauxite` object is missing or inconsistent.
    #[error("{target}: firmware metadata {reason}; the package must be re-created")]
    BadFirmwareInfo {
        /// The target.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// A firmware version older than (or equal to) the installed one.
    #[error("firmware {offered} is not newer than the installed {installed} (downgrade)")]
    Downgrade {
        /// Installed version.
        installed: String,
        /// Offered version.
        offered: String,
    },
}
