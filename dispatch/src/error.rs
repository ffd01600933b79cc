//! The hub's one error type, with sub-enums for what a joining node, a token or a caller got
//! wrong. (The client has its own, [`bauxite_dispatch_api::Error`].)
//!
//! Every message says what happened and, where the operator or node can act, what to do.
//! A refusal reaches the caller as a [`tonic::Status`] carrying a typed
//! [`Refusal`] in its details (see `From<Error> for Status`), never only as text.

use std::path::PathBuf;

use bauxite_conduit::PeerId;
pub use bauxite_dispatch_api::TokenFormat;
use bauxite_dispatch_api::{ProofRejected, Refusal};

use crate::clock::UnixTime;
use crate::token::{CaFingerprint, TokenId};

/// Everything that can go wrong in the hub.
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
    /// PostgreSQL failed or could not be reached (the URL is never repeated: it may hold a
    /// password).
    #[error(
        "PostgreSQL: could not {action}: {source}; check that the database is up and reachable with the configured URL"
    )]
    Postgres {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        source: Box<postgres::Error>,
    },
    /// A PostgreSQL schema migration failed; nothing after it was applied.
    #[error(
        "PostgreSQL migration failed: {0}; fix the database and run `bauxite-dispatch migrate`"
    )]
    Migrate(Box<refinery::Error>),
    /// The store's database thread is gone (the hub is stopping or it crashed).
    #[error("the store is closed; restart the hub")]
    StoreClosed,
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
    /// An audit log page was asked for at a cursor outside the log.
    #[error(transparent)]
    AuditCursor(#[from] crate::audit::page::BadCursor),
    /// The named node does not exist.
    #[error("no node with ID {0}; see `bauxite-dispatch nodes list`")]
    UnknownNode(String),
    /// Any other error of the contract crate (its client side, which the hub does not use
    /// to serve).
    #[error(transparent)]
    Contract(bauxite_dispatch_api::Error),
    /// The caller's certificate does not let it in.
    #[error("{0}")]
    CallRefused(#[from] CallRefused),
    /// No package with this name and version was ever created.
    #[error("no package {name} {version}; see `bauxite-dispatch package list`")]
    UnknownPackage {
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// A package with this name and version exists (perhaps revoked).
    #[error(
        "package {name} {version} exists already (a name and version name one image for ever); use a new version"
    )]
    PackageExists {
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// The package was revoked; it cannot be deployed.
    #[error("package {name} {version} was revoked; deploy another version")]
    PackageRevoked {
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// The node is the hub's own mesh node, which is not a robot.
    #[error("node {0} is the hub's own mesh node: it cannot be revoked or updated")]
    HubNode(PeerId),
    /// A file the update service was asked for is not published.
    #[error("{what} {name:?} is not published by this hub")]
    NotPublished {
        /// `metadata` or `target`.
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The update repository (TUF metadata, keys, package images) failed.
    #[error("update repository: {0}")]
    Updates(#[from] bauxite_forge::Error),
    /// The admin UI was turned on but no admin password was set.
    #[error(
        "the admin UI needs a password and {} does not exist: set one with `bauxite-dispatch --data-dir DIR admin-password set` (it reads the password from stdin)",
        path.display()
    )]
    NoAdminPassword {
        /// Where the password hash is expected.
        path: std::path::PathBuf,
    },
    /// The stored admin password hash is unusable.
    #[error(
        "admin password hash in {}: {problem}; set the password again with `bauxite-dispatch admin-password set`",
        path.display()
    )]
    AdminPasswordFile {
        /// The hash file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// The one answer for an unknown token ID and for a known one with a wrong secret.
const UNKNOWN_OR_WRONG_SECRET: &str = "this hub has no join token with this ID and secret \
     (mistyped, forged, or for another hub); copy the whole token printed by \
     `bauxite-dispatch token create`";

/// Why the hub refused a join token. Refusals change nothing in the hub's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejected {
    /// No token with this ID exists. Says exactly what [`WrongSecret`](Self::WrongSecret)
    /// says, so a caller cannot tell which token IDs exist.
    #[error("{}", UNKNOWN_OR_WRONG_SECRET)]
    Unknown(TokenId),
    /// The secret does not match the stored hash (same message as [`Unknown`](Self::Unknown)).
    #[error("{}", UNKNOWN_OR_WRONG_SECRET)]
    WrongSecret(TokenId),
    /// The token's lifetime is over.
    #[error(
        "token {id} expired at {expired_at}; create a new one with `bauxite-dispatch token create`"
    )]
    Expired {
        /// The token.
        id: TokenId,
        /// When it expired (shown as RFC 3339 UTC).
        expired_at: UnixTime,
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

/// Why an authenticated call was refused although TLS accepted the certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallRefused {
    /// No client certificate was presented.
    #[error("this call needs the node's client certificate (mutual TLS); run `bauxite join` first")]
    NoClientCertificate,
    /// The certificate names a node this hub has no record of.
    #[error(
        "node {0} is not known to this hub: it was never registered here, or its \
         registration expired unconfirmed; join again with a new token"
    )]
    UnknownNode(PeerId),
    /// The node was revoked.
    #[error("node {node} was revoked at {at}; join again with a new identity and token")]
    Revoked {
        /// The node.
        node: PeerId,
        /// When it was revoked.
        at: UnixTime,
    },
    /// The certificate names a known node but is not the one issued to it.
    #[error("this certificate is not the one issued to node {0}")]
    NotIssued(PeerId),
    /// The node's registration is pending: only `ConfirmProvision` is accepted.
    #[error(
        "node {0} has not confirmed its registration; `bauxite join` confirms it after \
         writing its credentials, and `bauxite run` does on its first connection"
    )]
    NotConfirmed(PeerId),
    /// The registration was not confirmed in time and was deleted.
    #[error(
        "the registration of node {node} expired at {at} before it was confirmed; its \
         address was freed: join again with a new token"
    )]
    RegistrationExpired {
        /// The node.
        node: PeerId,
        /// When the confirmation window closed.
        at: UnixTime,
    },
    /// The certificate presented for renewal has expired.
    #[error(
        "the certificate of node {node} expired at {at} and cannot be renewed; join again \
         with a new token (`bauxite join --force`)"
    )]
    CertificateExpired {
        /// The node.
        node: PeerId,
        /// The certificate's notAfter.
        at: UnixTime,
    },
}

impl TokenRejected {
    /// The typed refusal sent to the node.
    pub fn refusal(&self) -> Refusal {
        match self {
            TokenRejected::Unknown(_) | TokenRejected::WrongSecret(_) => {
                Refusal::TokenUnknownOrWrongSecret
            }
            TokenRejected::Expired { .. } => Refusal::TokenExpired,
            TokenRejected::UsedUp { .. } => Refusal::TokenUsedUp,
            TokenRejected::WrongHub { .. } => Refusal::CaMismatch,
        }
    }
}

impl ProvisionRejected {
    /// The typed refusal sent to the node.
    pub fn refusal(&self) -> Refusal {
        match self {
            ProvisionRejected::BadKey { .. } => Refusal::BadKey,
            ProvisionRejected::BadProof => Refusal::BadProof,
            ProvisionRejected::AlreadyJoined(_) => Refusal::AlreadyJoined,
            ProvisionRejected::KeyInUse { .. } => Refusal::KeyInUse,
            ProvisionRejected::MeshFull(_) => Refusal::MeshFull,
            ProvisionRejected::BadName => Refusal::BadName,
        }
    }
}

impl CallRefused {
    /// The typed refusal sent to the caller.
    pub fn refusal(&self) -> Refusal {
        match self {
            CallRefused::NoClientCertificate => Refusal::NoClientCertificate,
            CallRefused::UnknownNode(_) => Refusal::UnknownNode,
            CallRefused::Revoked { .. } => Refusal::Revoked,
            CallRefused::NotIssued(_) => Refusal::CertificateNotIssued,
            CallRefused::NotConfirmed(_) => Refusal::NotConfirmed,
            CallRefused::RegistrationExpired { .. } => Refusal::UnknownNode,
            CallRefused::CertificateExpired { .. } => Refusal::CertificateExpired,
        }
    }
}

impl From<ProofRejected> for ProvisionRejected {
    fn from(e: ProofRejected) -> Self {
        match e {
            ProofRejected::BadKey { field } => ProvisionRejected::BadKey { field },
            _ => ProvisionRejected::BadProof,
        }
    }
}

/// The shared key-file and certificate helpers of the contract crate report in its error
/// type; the hub reports the same facts in its own.
impl From<bauxite_dispatch_api::Error> for Error {
    fn from(e: bauxite_dispatch_api::Error) -> Self {
        use bauxite_dispatch_api::Error as Api;
        match e {
            Api::TokenFormat(e) => Error::TokenFormat(e),
            Api::Io {
                action,
                path,
                source,
            } => Error::Io {
                action,
                path,
                source,
            },
            Api::KeyTooOpen { path, mode } => Error::KeyTooOpen { path, mode },
            Api::Certificate(text) => Error::Certificate(text),
            Api::InvalidArgument { field, problem } => Error::InvalidArgument { field, problem },
            other => Error::Contract(other),
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

    pub(crate) fn postgres(action: &'static str) -> impl FnOnce(postgres::Error) -> Error {
        move |source| Error::Postgres {
            action,
            source: Box::new(source),
        }
    }

    pub(crate) fn store(e: impl Into<redb::Error>) -> Error {
        Error::Store(Box::new(e.into()))
    }
}

/// Refusals carry their [`Refusal`] in the status details (and its status code); other
/// errors are plain statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        let text = e.to_string();
        // A refusal's own text: the client prints the refusal's meaning before it, so the
        // outer "join token rejected: " would only say the same thing twice.
        match e {
            Error::TokenRejected(r) => r.refusal().to_status(r.to_string()),
            Error::ProvisionRejected(r) => r.refusal().to_status(r.to_string()),
            Error::CallRefused(r) => r.refusal().to_status(r.to_string()),
            Error::TokenFormat(_)
            | Error::InvalidArgument { .. }
            | Error::InvalidPolicy(_)
            | Error::AuditCursor(_) => Status::invalid_argument(text),
            Error::UnknownNode(_) | Error::UnknownPackage { .. } | Error::NotPublished { .. } => {
                Status::not_found(text)
            }
            Error::PackageExists { .. } => Status::already_exists(text),
            Error::PackageRevoked { .. } | Error::HubNode(_) => Status::failed_precondition(text),
            Error::Updates(bauxite_forge::Error::TufRefused(_)) => Status::invalid_argument(text),
            Error::Updates(bauxite_forge::Error::TufRepo { .. }) => {
                Status::failed_precondition(text)
            }
            Error::Conflict(_) => Status::aborted(text),
            // The node retries, possibly on another replica.
            Error::Postgres { .. } | Error::StoreClosed => Status::unavailable(text),
            _ => Status::internal(text),
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
