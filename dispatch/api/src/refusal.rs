//! Why the hub refused a call, as a typed value in the gRPC status details.
//!
//! Invariant: a client decides what a refusal means only from the [`Refusal`] decoded out
//! of the status details, never from the status code or message text; a status without a
//! decodable refusal is a generic error ([`Refusal::from_status`] returns `None`).
//!
//! Wire form: the `grpc-status-details-bin` trailer holds a `google.rpc.Status` (gRPC's
//! richer error model, so `grpcurl` and other tools show it) whose `details` contain one
//! `google.protobuf.Any` of type [`TYPE_URL`], a [`crate::proto::node::Refusal`] message.

use prost::Message as _;
use tonic::{Code, Status};

use crate::proto::node::{self as proto, RefusalReason};

/// The `Any` type URL of the refusal message in status details.
pub const TYPE_URL: &str = "type.googleapis.com/bauxite.dispatch.node.v1.Refusal";

/// Why the hub refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The node was revoked: stop reconnecting; only a new identity and token get back in.
    Revoked,
    /// The call needs a client certificate and none was presented.
    NoClientCertificate,
    /// The certificate names a node this hub does not know.
    UnknownNode,
    /// The certificate names a known node but is not the one the hub issued to it.
    CertificateNotIssued,
    /// A node certificate was used for an admin call.
    AdminOnly,
    /// The admin certificate was used for a node call.
    NodesOnly,
    /// The join token is unknown or its secret is wrong (one reason, so callers cannot
    /// probe which token IDs exist).
    TokenUnknownOrWrongSecret,
    /// The join token expired.
    TokenExpired,
    /// The join token was used as often as it allows.
    TokenUsedUp,
    /// The join token names another hub's CA.
    CaMismatch,
    /// A public key in the request is not a valid 32-byte key.
    BadKey,
    /// The proof of possession does not verify.
    BadProof,
    /// A node with this identity key already joined.
    AlreadyJoined,
    /// Another node holds this X25519 or TLS key.
    KeyInUse,
    /// No virtual IP is left in the mesh CIDR.
    MeshFull,
    /// The node name is empty, too long or has control characters.
    BadName,
    /// The node's registration is not confirmed yet (two-phase provisioning): only
    /// `ConfirmProvision` is accepted until it is.
    NotConfirmed,
    /// The presented certificate has expired, so it cannot be renewed.
    CertificateExpired,
}

impl Refusal {
    /// The status code the hub sends with this refusal.
    pub fn code(self) -> Code {
        match self {
            Refusal::NoClientCertificate | Refusal::UnknownNode => Code::Unauthenticated,
            Refusal::Revoked
            | Refusal::CertificateNotIssued
            | Refusal::AdminOnly
            | Refusal::NodesOnly
            | Refusal::TokenUnknownOrWrongSecret
            | Refusal::TokenExpired
            | Refusal::TokenUsedUp
            | Refusal::CaMismatch => Code::PermissionDenied,
            Refusal::BadKey | Refusal::BadProof | Refusal::BadName => Code::InvalidArgument,
            Refusal::NotConfirmed => Code::FailedPrecondition,
            Refusal::CertificateExpired => Code::Unauthenticated,
            Refusal::AlreadyJoined | Refusal::KeyInUse => Code::AlreadyExists,
            Refusal::MeshFull => Code::ResourceExhausted,
        }
    }

    /// The protobuf reason.
    pub fn reason(self) -> RefusalReason {
        match self {
            Refusal::Revoked => RefusalReason::Revoked,
            Refusal::NoClientCertificate => RefusalReason::NoClientCertificate,
            Refusal::UnknownNode => RefusalReason::UnknownNode,
            Refusal::CertificateNotIssued => RefusalReason::CertificateNotIssued,
            Refusal::AdminOnly => RefusalReason::AdminOnly,
            Refusal::NodesOnly => RefusalReason::NodesOnly,
            Refusal::TokenUnknownOrWrongSecret => RefusalReason::TokenUnknownOrWrongSecret,
            Refusal::TokenExpired => RefusalReason::TokenExpired,
            Refusal::TokenUsedUp => RefusalReason::TokenUsedUp,
            Refusal::CaMismatch => RefusalReason::CaMismatch,
            Refusal::BadKey => RefusalReason::BadKey,
            Refusal::BadProof => RefusalReason::BadProof,
            Refusal::AlreadyJoined => RefusalReason::AlreadyJoined,
            Refusal::KeyInUse => RefusalReason::KeyInUse,
            Refusal::MeshFull => RefusalReason::MeshFull,
            Refusal::BadName => RefusalReason::BadName,
            Refusal::NotConfirmed => RefusalReason::NotConfirmed,
            Refusal::CertificateExpired => RefusalReason::CertificateExpired,
        }
    }

    /// The refusal for a protobuf reason; `None` for `UNSPECIFIED`.
    pub fn from_reason(reason: RefusalReason) -> Option<Self> {
        Some(match reason {
            RefusalReason::Unspecified => return None,
            RefusalReason::Revoked => Refusal::Revoked,
            RefusalReason::NoClientCertificate => Refusal::NoClientCertificate,
            RefusalReason::UnknownNode => Refusal::UnknownNode,
            RefusalReason::CertificateNotIssued => Refusal::CertificateNotIssued,
            RefusalReason::AdminOnly => Refusal::AdminOnly,
            RefusalReason::NodesOnly => Refusal::NodesOnly,
            RefusalReason::TokenUnknownOrWrongSecret => Refusal::TokenUnknownOrWrongSecret,
            RefusalReason::TokenExpired => Refusal::TokenExpired,
            RefusalReason::TokenUsedUp => Refusal::TokenUsedUp,
            RefusalReason::CaMismatch => Refusal::CaMismatch,
            RefusalReason::BadKey => Refusal::BadKey,
            RefusalReason::BadProof => Refusal::BadProof,
            RefusalReason::AlreadyJoined => Refusal::AlreadyJoined,
            RefusalReason::KeyInUse => Refusal::KeyInUse,
            RefusalReason::MeshFull => Refusal::MeshFull,
            RefusalReason::BadName => Refusal::BadName,
            RefusalReason::NotConfirmed => Refusal::NotConfirmed,
            RefusalReason::CertificateExpired => Refusal::CertificateExpired,
        })
    }

    /// What the refusal means, in a few words for people; the hub's message then gives
    /// the particulars and the fix ([`Error::Refused`](crate::Error::Refused) prints both).
    pub fn meaning(self) -> &'static str {
        match self {
            Refusal::Revoked => "this node was revoked by the hub's operator",
            Refusal::NoClientCertificate => "the hub needs this node's client certificate",
            Refusal::UnknownNode => "the hub does not know this node",
            Refusal::CertificateNotIssued => "the hub did not issue this certificate",
            Refusal::AdminOnly => "only the hub's operator may do this",
            Refusal::NodesOnly => "only nodes may do this",
            Refusal::TokenUnknownOrWrongSecret => "the join token is not valid for this hub",
            Refusal::TokenExpired => "the join token has expired",
            Refusal::TokenUsedUp => "the join token is used up",
            Refusal::CaMismatch => "the join token belongs to another hub",
            Refusal::BadKey => "the hub refused one of this node's keys",
            Refusal::BadProof => "the hub refused this node's proof of possession",
            Refusal::AlreadyJoined => "this node has joined already",
            Refusal::KeyInUse => "another node holds one of this node's keys",
            Refusal::MeshFull => "the mesh has no free address left",
            Refusal::BadName => "the hub refused the node name",
            Refusal::NotConfirmed => "this node's registration is not confirmed yet",
            Refusal::CertificateExpired => "this node's certificate has expired",
        }
    }

    /// The status the hub answers with: [`code`](Self::code), `message` for people, and
    /// this refusal in the details for programs.
    pub fn to_status(self, message: impl Into<String>) -> Status {
        let message = message.into();
        let refusal = proto::Refusal {
            reason: self.reason().into(),
        };
        let envelope = tonic_types::pb::Status {
            code: self.code().into(),
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: TYPE_URL.to_owned(),
                value: refusal.encode_to_vec(),
            }],
        };
        Status::with_details(self.code(), message, envelope.encode_to_vec().into())
    }

    /// The refusal a status carries, if any. `None` for a status without details, with
    /// details that do not decode, or with a reason this client does not know: the caller
    /// treats those as generic errors.
    pub fn from_status(status: &Status) -> Option<Self> {
        let envelope = tonic_types::pb::Status::decode(status.details()).ok()?;
        envelope
            .details
            .iter()
            .filter(|any| any.type_url == TYPE_URL)
            .find_map(|any| {
                let refusal = proto::Refusal::decode(any.value.as_slice()).ok()?;
                RefusalReason::try_from(refusal.reason)
                    .ok()
                    .and_then(Self::from_reason)
            })
    }
}

#[cfg(test)]
mod tests;
