//! The crate's one error type, with sub-enums for what a joining node or a token got wrong.
//!
//! Every message says what happened and, where the operator or node can act, what to do.

use std::path::PathBuf;

use crate::token::{CaFingerprint, TokenId};

/// Everything that can go wrong in the hub or its client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A join token's text does not follow the `bx1.<id>.<secret>.<ca-sha256>` format.
    #[error(
        "malformed join token: {0}; copy the whole token printed by `bauxite-dispatch token create`"
    )]
    TokenFormat(#[from] TokenFormat),
    /// The hub refused a join token.
    #[error("join token rejected: {0}")]
    TokenRejected(#[from] TokenRejected),
    /// The hub refused a provisioning request for a reason other than the token.
    #[error("provisioning refused: {0}")]
    ProvisionRejected(#[from] ProvisionRejected),
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
    /// The embedded database failed.
    #[error("database error: {0}")]
    Store(#[from] Box<redb::Error>),
    /// A stored record could not be decoded (corrupt or written by a newer hub).
    #[error("stored {what} could not be decoded: {source}")]
    Decode {
        /// Which kind of record.
        what: &'static str,
        /// The decoder's error.
        source: postcard::Error,
    },
    /// Another writer changed the store first (a compare-and-swap failed); nothing was written.
    #[error("conflicting update to {0}; retry")]
    Conflict(&'static str),
    /// Issuing or parsing a certificate failed.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// A TLS configuration or handshake problem.
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// Connecting to the hub failed.
    #[error(
        "could not connect to the hub at {addr}: {reason}; check the address and that the hub is running"
    )]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The hub answered with an error status.
    #[error("hub refused: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    /// A policy document is not valid.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// A request field has a bad value.
    #[error("invalid {field}: {problem}")]
    InvalidArgument {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The named node does not exist.
    #[error("no node with ID {0}; see `bauxite-dispatch nodes list`")]
    UnknownNode(String),
    /// The caller presented no usable client certificate.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but not allowed to do this.
    #[error("{0}")]
    PermissionDenied(String),
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

/// Why the hub refused a join token. Refusals change nothing in the hub's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejected {
    /// No token with this ID exists.
    #[error("token {0} is unknown to this hub; create one with `bauxite-dispatch token create`")]
    Unknown(TokenId),
    /// The secret does not match the stored hash.
    #[error("token {0} has a wrong secret (forged or mistyped)")]
    WrongSecret(TokenId),
    /// The token's lifetime is over.
    #[error("token {id} expired at unix time {expired_at}; create a new one")]
    Expired {
        /// The token.
        id: TokenId,
        /// When it expired (unix seconds).
        expired_at: u64,
    },
    /// The token was already used as often as allowed.
    #[error("token {id} was already used {uses} time(s), its limit; create a new one")]
    UsedUp {
        /// The token.
        id: TokenId,
        /// Its use limit.
        uses: u32,
    },
    /// The token names a different hub CA.
    #[error("token was issued for the hub CA {token} but this hub's CA is {hub}")]
    WrongHub {
        /// Fingerprint in the token.
        token: CaFingerprint,
        /// This hub's fingerprint.
        hub: CaFingerprint,
    },
}

/// Why a provisioning request was refused although its token was fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionRejected {
    /// A public key field is not 32 bytes or not a valid key.
    #[error("{field} is not a valid 32-byte public key")]
    BadKey {
        /// Which key.
        field: &'static str,
    },
    /// The proof of possession does not verify under the node's Ed25519 key.
    #[error(
        "proof of possession does not verify; the node must sign the challenge with its own Ed25519 key"
    )]
    BadProof,
    /// A node with this key already joined.
    #[error(
        "node {0} already joined this hub; a node joins once (revoked nodes cannot rejoin with the same key)"
    )]
    AlreadyJoined(String),
    /// Another node already uses this X25519 or TLS key.
    #[error("the {field} is already used by node {owner}")]
    KeyInUse {
        /// Which key.
        field: &'static str,
        /// The node that holds it.
        owner: String,
    },
    /// Every address of the mesh CIDR is taken.
    #[error("no free virtual IP left in {0}; widen --mesh-cidr")]
    MeshFull(String),
    /// The node name is too long or has control characters.
    #[error("node name must be 1-64 printable characters")]
    BadName,
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

    pub(crate) fn store(e: impl Into<redb::Error>) -> Error {
        Error::Store(Box::new(e.into()))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        let text = e.to_string();
        match e {
            Error::TokenFormat(_) | Error::InvalidArgument { .. } | Error::InvalidPolicy(_) => {
                Status::invalid_argument(text)
            }
            Error::TokenRejected(_) | Error::PermissionDenied(_) => Status::permission_denied(text),
            Error::ProvisionRejected(ProvisionRejected::AlreadyJoined(_))
            | Error::ProvisionRejected(ProvisionRejected::KeyInUse { .. }) => {
                Status::already_exists(text)
            }
            Error::ProvisionRejected(ProvisionRejected::MeshFull(_)) => {
                Status::resource_exhausted(text)
            }
            Error::ProvisionRejected(_) => Status::invalid_argument(text),
            Error::UnknownNode(_) => Status::not_found(text),
            Error::Unauthenticated(_) => Status::unauthenticated(text),
            Error::Conflict(_) => Status::aborted(text),
            Error::Rpc(status) => status,
            _ => Status::internal(text),
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
