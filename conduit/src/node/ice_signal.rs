//! ICE signaling messages as they cross the hub (`ExchangeCandidates` payloads), signed
//! by the sender's static identity.
//!
//! Invariant: a decoded signal is trusted only after [`SignedSignal::open`] verified its
//! Ed25519 signature against the signing key the peer table lists for the sender, over
//! the sender, the receiver, the session and the message — so a hub that rewrites the
//! ICE credentials or a candidate, replays one to another peer or moves it to another
//! session is detected and the message refused.

use serde::{Deserialize, Serialize};

use crate::PeerId;

/// Largest encoded signal accepted (the hub relays at most 16 KiB).
pub const MAX_SIGNAL: usize = 16 * 1024;

/// Domain separation of the signed bytes.
const CONTEXT: &[u8] = b"bauxite ice signal v1";

/// One ICE signaling message (the seed's roles: the lower peer ID invites, the other
/// answers with OFFER and ANSWER, then both trickle candidates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IceSignal {
    /// The controlling side's credentials: start a session.
    Invite {
        /// ICE username fragment.
        ufrag: String,
        /// ICE password.
        pwd: String,
    },
    /// The controlled side's credentials, in answer to an INVITE.
    Offer {
        /// ICE username fragment.
        ufrag: String,
        /// ICE password.
        pwd: String,
    },
    /// The controlled side accepted the session (sent after its OFFER).
    Answer,
    /// One candidate (SDP `candidate` attribute text), trickled as it is gathered.
    Candidate(String),
    /// The session is over (the peer left the topology, or its agent gave up).
    Bye,
}

impl IceSignal {
    /// The `SignalKind` number this message travels under in node.proto.
    pub fn kind(&self) -> i32 {
        match self {
            IceSignal::Invite { .. } => 1,
            IceSignal::Offer { .. } => 2,
            IceSignal::Answer => 3,
            IceSignal::Candidate(_) => 4,
            IceSignal::Bye => 6,
        }
    }
}

/// Why a received signal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalRefused {
    /// Not a signal of this version, or longer than [`MAX_SIGNAL`].
    #[error("the payload is not an ICE signal (corrupt, oversized or another version)")]
    Malformed,
    /// The signature does not verify under the sender's listed key: rewritten on the
    /// way (the hub), or sent by someone else.
    #[error("the signature does not verify under the sender's key: the signal was altered")]
    BadSignature,
    /// The sender's listed signing key is not a valid Ed25519 key.
    #[error("the sender's signing key in the peer table is not a valid Ed25519 key")]
    BadKey,
}

/// A signal with its session number and the sender's signature, as encoded in the
/// `payload` of a node.proto `Signal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSignal {
    /// The ICE session this belongs to (the inviter's number; answers repeat it).
    pub session: u64,
    /// The message.
    pub signal: IceSignal,
    /// Ed25519 over [`signed_bytes`] (64 bytes; a `Vec` because serde has no `[u8; 64]`).
    signature: Vec<u8>,
}

/// What the signature covers: the context, both peer IDs, the session, the message.
fn signed_bytes(from: PeerId, to: PeerId, session: u64, signal: &IceSignal) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(128);
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(&from.0);
    bytes.extend_from_slice(&to.0);
    bytes.extend_from_slice(&session.to_be_bytes());
    // postcard of an owned enum of strings cannot fail; an empty tail would still sign
    // everything before it.
    bytes.extend_from_slice(&postcard::to_allocvec(signal).unwrap_or_default());
    bytes
}

impl SignedSignal {
    /// Signs `signal` from `identity` to `to` in `session`.
    pub fn seal(
        identity: &crate::identity::Identity,
        to: PeerId,
        session: u64,
        signal: IceSignal,
    ) -> Self {
        let signature = identity
            .sign(&signed_bytes(identity.peer_id(), to, session, &signal))
            .to_vec();
        Self {
            session,
            signal,
            signature,
        }
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses a payload (not yet trusted: [`open`](Self::open) it).
    pub fn decode(bytes: &[u8]) -> Result<Self, SignalRefused> {
        if bytes.len() > MAX_SIGNAL {
            return Err(SignalRefused::Malformed);
        }
        postcard::from_bytes(bytes).map_err(|_| SignalRefused::Malformed)
    }

    /// Verifies the signature of `from` (whose listed Ed25519 key is `signing_public`)
    /// for delivery to `to`, and returns the session and the message.
    pub fn open(
        self,
        from: PeerId,
        signing_public: &[u8; 32],
        to: PeerId,
    ) -> Result<(u64, IceSignal), SignalRefused> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(signing_public)
            .map_err(|_| SignalRefused::BadKey)?;
        let signature = <[u8; 64]>::try_from(self.signature.as_slice())
            .map_err(|_| SignalRefused::BadSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        key.verify_strict(
            &signed_bytes(from, to, self.session, &self.signal),
            &signature,
        )
        .map_err(|_| SignalRefused::BadSignature)?;
        Ok((self.session, self.signal))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::identity::Identity;

    fn identity(b: u8) -> Identity {
        Identity::from_secrets([b; 32], [b.wrapping_add(1); 32])
    }

    #[test]
    fn a_sealed_signal_opens_for_its_receiver_only() {
        let (a, b, c) = (identity(1), identity(2), identity(3));
        let invite = IceSignal::Invite {
            ufrag: "abcd".into(),
            pwd: "p".repeat(22),
        };
        let sealed = SignedSignal::seal(&a, b.peer_id(), 7, invite.clone());
        let decoded = SignedSignal::decode(&sealed.encode()).unwrap();
        let key = a.public().signing_public;
        assert_eq!(
            decoded.clone().open(a.peer_id(), &key, b.peer_id()),
            Ok((7, invite))
        );
        // Forwarded to another peer, or claimed by another sender: refused.
        assert_eq!(
            decoded.clone().open(a.peer_id(), &key, c.peer_id()),
            Err(SignalRefused::BadSignature)
        );
        let c_key = c.public().signing_public;
        assert_eq!(
            decoded.open(c.peer_id(), &c_key, b.peer_id()),
            Err(SignalRefused::BadSignature)
        );
    }

    #[test]
    fn a_rewritten_credential_or_session_is_refused() {
        let (a, b) = (identity(1), identity(2));
        let key = a.public().signing_public;
        let sealed = SignedSignal::seal(
            &a,
            b.peer_id(),
            7,
            IceSignal::Offer {
                ufrag: "abcd".into(),
                pwd: "p".repeat(22),
            },
        );
        let mut rewritten = sealed.clone();
        rewritten.signal = IceSignal::Offer {
            ufrag: "hubx".into(),
            pwd: "p".repeat(22),
        };
        assert_eq!(
            rewritten.open(a.peer_id(), &key, b.peer_id()),
            Err(SignalRefused::BadSignature)
        );
        let mut moved = sealed;
        moved.session = 8;
        assert_eq!(
            moved.open(a.peer_id(), &key, b.peer_id()),
            Err(SignalRefused::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SignedSignal::decode(&bytes);
        }

        #[test]
        fn candidates_round_trip(line in ".{0,200}", session in any::<u64>()) {
            let (a, b) = (identity(1), identity(2));
            let signal = IceSignal::Candidate(line);
            let sealed = SignedSignal::seal(&a, b.peer_id(), session, signal.clone());
            let opened = SignedSignal::decode(&sealed.encode())
                .and_then(|s| s.open(a.peer_id(), &a.public().signing_public, b.peer_id()));
            prop_assert_eq!(opened, Ok((session, signal)));
        }
    }
}
