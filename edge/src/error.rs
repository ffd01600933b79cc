//! The edge crate's error type. Every variant maps to exactly one precheck exit code
//! (see [`crate::precheck::exit`]), so fail-closed behaviour is decided by the type,
//! never by matching on message text.

use std::io;
use std::path::PathBuf;

/// Any failure of the `bauxite` edge binary's library code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file is unreadable, not TOML, or fails validation (exit 1).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state root is missing, ephemeral, or its layout is broken (exit 2).
    #[error(transparent)]
    StateRoot(#[from] StateRootError),
    /// The OS fingerprint could not be captured, or the stored one is corrupt (exit 2).
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// The mTLS certificate is unreadable, unparsable or about to expire (exit 3).
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// Reconstruction after an OS update failed; the daemon must not start (exit 5).
    #[error(transparent)]
    Reconstruction(#[from] ReconstructionError),
    /// A helper tool (keygen, manifest sign, cert, fingerprint) failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// Configuration file problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}; create it or pass --config FILE")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The file is larger than any config could be.
    #[error(
        "config file {path} is larger than {limit} bytes; a Bauxite config is a few hundred \
         bytes: is --config pointing at the right file?"
    )]
    TooLarge {
        /// The config path.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not valid TOML or does not match the schema (unknown or missing key).
    #[error("config file {path} is invalid: {message}")]
    Syntax {
        /// The config path.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A key parsed but its value is not acceptable.
    #[error("config key `{key}` is invalid: {reason}")]
    Invalid {
        /// Dotted name of the offending key, e.g. `state_root.root`.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A section a command needs is absent from the file.
    #[error("config file {path} has no [{section}] section; {hint}")]
    MissingSection {
        /// The config path.
        path: PathBuf,
        /// The section name, e.g. `node`.
        section: &'static str,
        /// What to add.
        hint: &'static str,
    },
    /// A `[[peers]]` entry has an unusable value.
    #[error("config key `peers[{index}].{key}` (peer {name:?}) is invalid: {reason}")]
    Peer {
        /// Position of the entry in the file, from 0.
        index: usize,
        /// The entry's `name`.
        name: String,
        /// The offending key inside the entry.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// State-root problems: the persistent partition is missing, ephemeral or malformed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateRootError {
    /// The configured root is not an absolute path.
    #[error("state root {path} must be an absolute path")]
    NotAbsolute {
        /// The configured path.
        path: PathBuf,
    },
    /// The root or a layout entry exists but is not a directory.
    #[error(
        "{path} must be a directory; move the file aside so the state-root layout can be created"
    )]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// The root lives on a filesystem that does not survive a reboot or OS replacement.
    #[error(
        "state root {path} is on {fs}, which does not survive an OS replacement; mount a \
         persistent partition there (tests only: BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK=1)"
    )]
    Ephemeral {
        /// The state root.
        path: PathBuf,
        /// The filesystem kind that was refused.
        fs: &'static str,
    },
    /// A layout directory is a symlink that resolves outside the state root.
    #[error(
        "{path} resolves to {target}, outside the state root {root}; replace the symlink with a directory"
    )]
    Escapes {
        /// The layout entry.
        path: PathBuf,
        /// Where it resolves.
        target: PathBuf,
        /// The canonical state root.
        root: PathBuf,
    },
    /// An IO call on the state root failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
}

/// OS fingerprint problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// A live fingerprint input (os-release) could not be read.
    #[error("cannot read OS fingerprint input {path}: {source}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// `uname` failed or returned a non-UTF-8 release.
    #[error("cannot read the kernel release from uname: {reason}")]
    Kernel {
        /// What went wrong.
        reason: String,
    },
    /// The stored fingerprint file exists but cannot be trusted.
    #[error(
        "stored fingerprint {path} is corrupt ({reason}); restore it from a backup, or move it \
         aside to re-initialise (the boot epoch then restarts at 0)"
    )]
    Corrupt {
        /// The fingerprint file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// Reading or writing the fingerprint file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
}

/// mTLS certificate problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A transport file (certificate, key or CA) could not be read.
    #[error("cannot read mTLS file {path}: {source}; check transport.* in the config")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The certificate is not a parsable X.509 certificate (PEM or DER).
    #[error("mTLS certificate {path} is not a valid X.509 certificate: {reason}")]
    Unparsable {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// The certificate expires within the rotation margin (or has expired).
    #[error(
        "mTLS certificate {path} expires at {not_after} (in {hours_left} h, margin 7 days); rotate it"
    )]
    Expiring {
        /// The file.
        path: PathBuf,
        /// Expiry, RFC 3339.
        not_after: String,
        /// Hours until expiry (negative when already expired).
        hours_left: i64,
    },
    /// The certificate is not valid yet (clock or certificate wrong).
    #[error("mTLS certificate {path} is not valid before {not_before}; check the clock")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Start of validity, RFC 3339.
        not_before: String,
    },
}

/// Why a manifest operation was rejected before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpRejection {
    /// The `op` is not one of the typed operations.
    #[error("unsupported op {0:?}; only copy_binary and verify_config exist")]
    UnsupportedOp(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present that this op does not take.
    #[error("field `{0}` is not allowed for this op")]
    UnexpectedField(&'static str),
    /// A path contains a shell metacharacter or control character.
    #[error("`{field}` = {value:?} contains shell metacharacter {ch:?}")]
    ShellMetachar {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The first offending character.
        ch: char,
    },
    /// A path contains a `..` component.
    #[error("`{field}` = {value:?} contains `..`")]
    ParentDir {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A path is empty or names the root itself.
    #[error("`{field}` must name a file")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// An absolute path lies outside the root the field is confined to.
    #[error("`{field}` = {value:?} is outside {root}")]
    OutsideRoot {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The root it must stay under.
        root: PathBuf,
    },
    /// A destination targets precheck's own bookkeeping (identity, epoch, bootstrap, manifest).
    #[error("`dst` = {value:?} is reserved for precheck's own state")]
    Reserved {
        /// The destination.
        value: String,
    },
    /// A path resolves, through a symlink, outside its root.
    #[error("`{field}` resolves to {target} through a symlink, outside {root}")]
    SymlinkEscape {
        /// The field.
        field: &'static str,
        /// Where it resolved.
        target: PathBuf,
        /// The root it must stay under.
        root: PathBuf,
    },
    /// `expected_hash` is not 64 hex characters.
    #[error("`expected_hash` = {0:?} is not a 64-character hex BLAKE3 hash")]
    BadHash(String),
    /// The source file's BLAKE3 hash differs from `expected_hash`.
    #[error("hash mismatch for {path}: expected {expected}, found {actual}")]
    HashMismatch {
        /// The source file.
        path: PathBuf,
        /// Hash from the manifest.
        expected: String,
        /// Hash of the file.
        actual: String,
    },
    /// The source is missing or not a regular file.
    #[error("source {path} is missing or not a regular file")]
    SourceMissing {
        /// The source path.
        path: PathBuf,
    },
}

/// Reconstruction failures. All of them mean: the runtime was not restored, do not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconstructionError {
    /// `identity/manifest-verify.pub` is missing on the reconstruction path.
    #[error(
        "manifest verify key missing on reconstruction path: {path}; install the raw 32-byte Ed25519 public key there"
    )]
    MissingVerifyKey {
        /// The expected key path.
        path: PathBuf,
    },
    /// The verify key is not a raw 32-byte Ed25519 public key.
    #[error("manifest verify key {path} is invalid: {reason}")]
    BadVerifyKey {
        /// The key path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `runtime/manifest.json` or its `.sig` is missing.
    #[error(
        "{path} is missing; deploy the signed runtime manifest (manifest.json + manifest.json.sig)"
    )]
    MissingManifest {
        /// The missing file.
        path: PathBuf,
    },
    /// The signature file is not exactly 64 bytes.
    #[error(
        "manifest signature {path} must be 64 raw bytes, found {len}; re-sign with `bauxite manifest sign`"
    )]
    SignatureLength {
        /// The signature path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The signature does not verify against the key.
    #[error(
        "manifest signature verification failed for {path}; re-sign it with the key matching identity/manifest-verify.pub"
    )]
    BadSignature {
        /// The manifest path.
        path: PathBuf,
    },
    /// The signed manifest is not valid manifest JSON.
    #[error("signed manifest is malformed: {reason}")]
    ManifestMalformed {
        /// What is wrong.
        reason: String,
    },
    /// An operation was rejected during validation; nothing ran.
    #[error("manifest operations[{index}] rejected: {rejection}; nothing was executed")]
    Rejected {
        /// Index in `operations`.
        index: usize,
        /// Why.
        rejection: OpRejection,
    },
    /// An operation failed while running.
    #[error("manifest operations[{index}] ({op}) failed on {path}: {source}")]
    OpFailed {
        /// Index in `operations`.
        index: usize,
        /// The op name.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The boot epoch would overflow.
    #[error("boot epoch overflow")]
    EpochOverflow,
    /// Epoch evidence rotation failed.
    #[error("epoch evidence rotation failed at step {step}: {source}")]
    Rotation {
        /// The step that failed.
        step: &'static str,
        /// The IO error (or injected crash).
        source: io::Error,
    },
    /// Committing the new fingerprint failed.
    #[error("cannot commit the new fingerprint: {0}")]
    Commit(#[source] Box<FingerprintError>),
}

/// Helper-tool failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// A key file has the wrong format.
    #[error("key file {path} is invalid: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Refused to overwrite an existing file.
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    CertGen(String),
    /// Bad command-line value.
    #[error("invalid argument: {0}")]
    Argument(String),
    /// OS randomness unavailable.
    #[error("OS random number generator failed: {0}")]
    Random(String),
}

/// An error and the causes its text does not already contain, on one line. Typed errors
/// here embed their cause in their message; a wrapper that also exposes it as a source
/// would otherwise print the same words two or three times.
pub fn one_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod one_message_tests {
    use super::one_message;

    #[derive(Debug, thiserror::Error)]
    #[error("join failed: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("the hub refused: token used up")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("could not write /x")]
    struct Write(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        assert_eq!(
            one_message(&Outer(Inner)),
            "join failed: the hub refused: token used up"
        );
        let io = Write(std::io::Error::other("disk full"));
        assert_eq!(one_message(&io), "could not write /x: disk full");
    }
}
