use super::*;
use proptest::prelude::*;

const ALL: [Refusal; 18] = [
    Refusal::CertificateExpired,
    Refusal::Revoked,
    Refusal::NoClientCertificate,
    Refusal::UnknownNode,
    Refusal::CertificateNotIssued,
    Refusal::AdminOnly,
    Refusal::NodesOnly,
    Refusal::TokenUnknownOrWrongSecret,
    Refusal::TokenExpired,
    Refusal::TokenUsedUp,
    Refusal::CaMismatch,
    Refusal::BadKey,
    Refusal::BadProof,
    Refusal::AlreadyJoined,
    Refusal::KeyInUse,
    Refusal::MeshFull,
    Refusal::BadName,
    Refusal::NotConfirmed,
];

/// What a client receives: the status re-read from its wire form (code, message and the
/// `grpc-status-details-bin` trailer), as tonic's client does.
fn over_the_wire(status: &Status) -> Status {
    let mut headers = http::HeaderMap::new();
    status.add_header(&mut headers).unwrap();
    Status::from_header_map(&headers).unwrap()
}

#[test]
fn every_refusal_survives_the_wire_with_its_code() {
    for refusal in ALL {
        let received = over_the_wire(&refusal.to_status("because"));
        assert_eq!(received.code(), refusal.code(), "{refusal:?}");
        assert_eq!(received.message(), "because");
        assert_eq!(Refusal::from_status(&received), Some(refusal));
    }
}

#[test]
fn every_reason_maps_back_and_unspecified_is_none() {
    for refusal in ALL {
        assert_eq!(Refusal::from_reason(refusal.reason()), Some(refusal));
    }
    assert_eq!(Refusal::from_reason(RefusalReason::Unspecified), None);
}

#[test]
fn revoked_is_read_from_the_details_not_the_code() {
    let revoked = over_the_wire(&Refusal::Revoked.to_status("node x was revoked"));
    assert_eq!(Refusal::from_status(&revoked), Some(Refusal::Revoked));
    // The same code and text without details is a generic error, not a revocation.
    let bare = over_the_wire(&Status::permission_denied("node x was revoked"));
    assert_eq!(Refusal::from_status(&bare), None);
    assert!(matches!(crate::Error::from(bare), crate::Error::Rpc(_)));
    assert!(matches!(
        crate::Error::from(revoked),
        crate::Error::Refused {
            refusal: Refusal::Revoked,
            ..
        }
    ));
}

#[test]
fn foreign_or_unknown_details_are_not_a_refusal() {
    let any = |type_url: &str, value: Vec<u8>| {
        let envelope = tonic_types::pb::Status {
            code: Code::PermissionDenied.into(),
            message: String::new(),
            details: vec![prost_types::Any {
                type_url: type_url.into(),
                value,
            }],
        };
        Status::with_details(Code::PermissionDenied, "x", envelope.encode_to_vec().into())
    };
    let revoked = proto::Refusal {
        reason: RefusalReason::Revoked.into(),
    }
    .encode_to_vec();
    // A refusal under another type URL is someone else's message.
    assert_eq!(
        Refusal::from_status(&any("type.googleapis.com/other.Thing", revoked.clone())),
        None
    );
    assert_eq!(
        Refusal::from_status(&any(TYPE_URL, revoked)),
        Some(Refusal::Revoked)
    );
    // A reason from a newer hub, and an unspecified one, are unknown here.
    let future = proto::Refusal { reason: 999 }.encode_to_vec();
    assert_eq!(Refusal::from_status(&any(TYPE_URL, future)), None);
    assert_eq!(
        Refusal::from_status(&any(TYPE_URL, proto::Refusal::default().encode_to_vec())),
        None
    );
}

proptest! {
    #[test]
    fn arbitrary_details_never_panic(details in proptest::collection::vec(any::<u8>(), 0..256)) {
        let status = Status::with_details(Code::PermissionDenied, "x", details.into());
        let _ = Refusal::from_status(&status);
    }
}
