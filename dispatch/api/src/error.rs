//! The client's error type, with a sub-enum for what is wrong with a join token's text.
//!
//! Every message says what happened and, where the node or operator can act, what to do.
//! The hub has its own error enum (in `bauxite-dispatch`); the two meet only as a
//! [`tonic::Status`] carrying a typed [`Refusal`].

use std::path::PathBuf;

use crate::refusal::Refusal;
use crate::token::CaFingerprint;

/// Everything that can go wrong on the node's side of the contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A join token's text does not follow the `bx1.<id>.<secret>.<ca-sha256>` format.
    #[error(
        "malformed join token: {0}; copy the whole token printed by `bauxite-dispatch token create`"
    )]
    TokenFormat(#[from] TokenFormat),
    /// The hub's CA is not the one the join token names.
    #[error(
        "the hub's CA fingerprint is {found} but the join token expects {expected}: \
         wrong hub address, or someone is intercepting the connection; do not retry, check the hub URL"
    )]
    CaFingerprintMismatch {
        /// Fingerprint carried by the token.
        expected: CaFingerprint,
        /// Fingerprint of the CA the server presented (all zeros if it sent none).
        found: CaFingerprint,
    },
    /// A file could not be read or written.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A private key file is readable by group or others.
    #[error(
        "{path} has mode {mode:o}; a private key must not be readable by others: chmod 600 {path}"
    )]
    KeyTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A certificate could not be made, parsed, or does not bind what it must.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// A TLS configuration or handshake problem.
    #[cfg(feature = "client")]
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// Connecting to the hub failed.
    #[cfg(feature = "client")]
    #[error(
        "could not connect to the hub at {addr}: {reason}; check the address and that the hub is running"
    )]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The hub refused the call and said why ([`Refusal`] from the status details): its
    /// meaning, then the hub's particulars and fix.
    #[error("{}: {message}", refusal.meaning())]
    Refused {
        /// The typed reason.
        refusal: Refusal,
        /// The hub's explanation, for people.
        message: String,
    },
    /// The hub answered with an error status that carries no [`Refusal`] (a transport or
    /// server problem, or a hub that predates typed refusals).
    #[error("{}", rpc_text(.0))]
    Rpc(tonic::Status),
    /// A value has the wrong form (a URL, or a field the hub sent).
    #[error("invalid {field}: {problem}")]
    InvalidArgument {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// What is wrong with a join token's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFormat {
    /// The token does not start with `bx1.`.
    #[error("expected the prefix \"bx1\", found {found:?}")]
    WrongPrefix {
        /// The first dot-separated part.
        found: String,
    },
    /// The token does not have four dot-separated parts.
    #[error("expected 4 dot-separated parts, found {found}")]
    WrongPartCount {
        /// How many parts there were.
        found: usize,
    },
    /// A part is not lower-case hex of the right length.
    #[error("the {field} must be {len} lower-case hex digits")]
    BadField {
        /// Which part.
        field: &'static str,
        /// Its required length in hex digits.
        len: usize,
    },
}

/// Why a proof of possession does not hold ([`crate::proof::verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofRejected {
    /// The Ed25519 key is not a valid or is a weak (small-order) key.
    #[error("{field} is not a valid 32-byte public key")]
    BadKey {
        /// Which key.
        field: &'static str,
    },
    /// The signature does not verify over the challenge.
    #[error(
        "proof of possession does not verify; the node must sign the challenge with its own Ed25519 key"
    )]
    BadProof,
}

/// Why a key record's bytes or text are not a record ([`crate::operator`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRecordRejected {
    /// The text does not start with the expected prefix.
    #[error("expected text starting with {expected:?}; copy the whole line the command printed")]
    Prefix {
        /// The prefix required.
        expected: &'static str,
    },
    /// The text after the prefix is not lower-case hex.
    #[error("not lower-case hex; copy the whole line the command printed")]
    Hex,
    /// The bytes have the wrong length.
    #[error("{found} bytes where a record has {expected}")]
    Length {
        /// The layout's length.
        expected: usize,
        /// What was given.
        found: usize,
    },
    /// An unknown layout version.
    #[error("layout version {0} is not known; upgrade this node or the tool that signed it")]
    Version(u8),
    /// The node ID does not derive from the record's Ed25519 key.
    #[error("node ID {0} does not derive from the record's Ed25519 key")]
    NodeIdMismatch(bauxite_conduit::PeerId),
    /// The operator key is not a valid or is a weak Ed25519 key.
    #[error("the operator key is not a valid Ed25519 public key")]
    BadOperatorKey,
    /// The signature does not verify under the operator key the record names.
    #[error(
        "the operator signature does not verify; sign the record again with `bauxite operator sign`"
    )]
    BadSignature,
    /// An operator key file lists no key.
    #[error("no operator key: the file must hold at least one 64-hex-digit Ed25519 public key")]
    NoOperatorKey,
}

/// Why a node with the operator lock on refuses a peer the hub listed
/// ([`crate::operator::OperatorLock::check`]). The text is what `bauxite status` shows
/// after `refused: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockRefusal {
    /// The hub sent no operator signature for the peer.
    #[error(
        "key not signed by operator (sign it: `bauxite operator sign`, then `bauxite-dispatch nodes sign`)"
    )]
    Unsigned,
    /// The signature field is not a signed record.
    #[error("operator signature malformed: {0}")]
    Malformed(KeyRecordRejected),
    /// Signed by a key this node does not trust (its first 8 bytes, hex).
    #[error("key signed by operator key {0}..., which this node does not trust")]
    UnknownOperator(String),
    /// The signature does not verify.
    #[error("operator signature does not verify (forged or corrupted)")]
    BadSignature,
    /// The hub's entry differs from the signed record: substituted keys or address.
    #[error("the hub's {field} differs from the operator-signed record (substituted by the hub?)")]
    KeysMismatch {
        /// Which fact differs.
        field: &'static str,
    },
    /// The signed record expired.
    #[error("operator signature expired at unix {not_after}; re-sign the node's record")]
    Expired {
        /// Its expiry (Unix seconds).
        not_after: u64,
    },
}

impl LockRefusal {
    /// A stable one-word code for scripts (`status --json`).
    pub fn code(&self) -> &'static str {
        match self {
            LockRefusal::Unsigned => "unsigned",
            LockRefusal::Malformed(_) => "malformed",
            LockRefusal::UnknownOperator(_) => "unknown_operator",
            LockRefusal::BadSignature => "bad_signature",
            LockRefusal::KeysMismatch { .. } => "keys_mismatch",
            LockRefusal::Expired { .. } => "expired",
        }
    }
}

/// One line for a status without a refusal: a transport failure's innermost cause, or
/// the hub's code and message.
fn rpc_text(status: &tonic::Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost {
        Some(inner) => format!("lost the connection to the hub: {inner}"),
        None if status.message().is_empty() => format!("the hub answered {:?}", status.code()),
        None => format!("the hub answered {:?}: {}", status.code(), status.message()),
    }
}

/// A gRPC status becomes [`Error::Refused`] when it carries a [`Refusal`], else [`Error::Rpc`].
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        match Refusal::from_status(&status) {
            Some(refusal) => Error::Refused {
                refusal,
                message: status.message().to_owned(),
            },
            None => Error::Rpc(status),
        }
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// The hub's typed refusal, if this error is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
