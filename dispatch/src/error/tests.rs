use bauxite_dispatch_api::Refusal;
use tonic::{Code, Status};

use super::*;

fn status(e: impl Into<Error>) -> Status {
    Status::from(e.into())
}

const NODE: PeerId = PeerId([7; 16]);

#[test]
fn every_refusal_keeps_its_code_and_carries_its_typed_reason() {
    let token = TokenId([1; 8]);
    let ca = CaFingerprint([2; 32]);
    let cases: Vec<(Error, Code, Refusal)> = vec![
        (
            CallRefused::Revoked {
                node: NODE,
                at: UnixTime(5),
            }
            .into(),
            Code::PermissionDenied,
            Refusal::Revoked,
        ),
        (
            CallRefused::NotIssued(NODE).into(),
            Code::PermissionDenied,
            Refusal::CertificateNotIssued,
        ),
        (
            CallRefused::NotConfirmed(NODE).into(),
            Code::FailedPrecondition,
            Refusal::NotConfirmed,
        ),
        (
            CallRefused::RegistrationExpired {
                node: NODE,
                at: UnixTime(5),
            }
            .into(),
            Code::Unauthenticated,
            Refusal::UnknownNode,
        ),
        (
            CallRefused::CertificateExpired {
                node: NODE,
                at: UnixTime(5),
            }
            .into(),
            Code::Unauthenticated,
            Refusal::CertificateExpired,
        ),
        (
            CallRefused::NoClientCertificate.into(),
            Code::Unauthenticated,
            Refusal::NoClientCertificate,
        ),
        (
            CallRefused::UnknownNode(NODE).into(),
            Code::Unauthenticated,
            Refusal::UnknownNode,
        ),
        (
            TokenRejected::Unknown(token).into(),
            Code::PermissionDenied,
            Refusal::TokenUnknownOrWrongSecret,
        ),
        (
            TokenRejected::WrongSecret(token).into(),
            Code::PermissionDenied,
            Refusal::TokenUnknownOrWrongSecret,
        ),
        (
            TokenRejected::Expired {
                id: token,
                expired_at: UnixTime(9),
            }
            .into(),
            Code::PermissionDenied,
            Refusal::TokenExpired,
        ),
        (
            TokenRejected::UsedUp { id: token, uses: 1 }.into(),
            Code::PermissionDenied,
            Refusal::TokenUsedUp,
        ),
        (
            TokenRejected::WrongHub { token: ca, hub: ca }.into(),
            Code::PermissionDenied,
            Refusal::CaMismatch,
        ),
        (
            ProvisionRejected::BadKey { field: "x" }.into(),
            Code::InvalidArgument,
            Refusal::BadKey,
        ),
        (
            ProvisionRejected::BadProof.into(),
            Code::InvalidArgument,
            Refusal::BadProof,
        ),
        (
            ProvisionRejected::BadName.into(),
            Code::InvalidArgument,
            Refusal::BadName,
        ),
        (
            ProvisionRejected::AlreadyJoined("n".into()).into(),
            Code::AlreadyExists,
            Refusal::AlreadyJoined,
        ),
        (
            ProvisionRejected::KeyInUse {
                field: "x",
                owner: "n".into(),
            }
            .into(),
            Code::AlreadyExists,
            Refusal::KeyInUse,
        ),
        (
            ProvisionRejected::MeshFull("10.0.0.0/30".into()).into(),
            Code::ResourceExhausted,
            Refusal::MeshFull,
        ),
    ];
    for (error, code, refusal) in cases {
        let text = error.to_string();
        let status = status(error);
        assert_eq!(status.code(), code, "{text}");
        // The refusal's own text, without the outer "join token rejected: " prefix (the
        // client prints the refusal's meaning before it).
        assert!(text.ends_with(status.message()), "{text}");
        assert!(
            !status.message().contains("rejected: "),
            "{}",
            status.message()
        );
        assert_eq!(Refusal::from_status(&status), Some(refusal), "{text}");
    }
}

#[test]
fn errors_that_are_not_refusals_carry_no_refusal() {
    for (error, code) in [
        (Error::UnknownNode("x".into()), Code::NotFound),
        (Error::Conflict("token"), Code::Aborted),
        (Error::InvalidPolicy("bad".into()), Code::InvalidArgument),
        (Error::Certificate("bad".into()), Code::Internal),
    ] {
        let status = status(error);
        assert_eq!(status.code(), code);
        assert_eq!(Refusal::from_status(&status), None);
    }
}

#[test]
fn proof_rejections_become_provisioning_rejections() {
    assert_eq!(
        ProvisionRejected::from(ProofRejected::BadProof),
        ProvisionRejected::BadProof
    );
    assert_eq!(
        ProvisionRejected::from(ProofRejected::BadKey {
            field: "ed25519_public"
        }),
        ProvisionRejected::BadKey {
            field: "ed25519_public"
        }
    );
}

#[test]
fn contract_file_errors_keep_their_kind_in_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let e = Error::from(crate::pki::files::read_text(&missing).unwrap_err());
    assert!(
        matches!(e, Error::Io { ref path, .. } if *path == missing),
        "{e}"
    );
}
