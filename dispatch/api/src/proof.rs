//! Proof of possession for provisioning: the node signs a challenge with its Ed25519 key.
//!
//! Invariant: the challenge binds, in one domain-separated byte string, the token ID, the
//! hub CA fingerprint, the node's Ed25519, X25519 and TLS public keys and its name. A proof
//! therefore cannot be replayed with another token, to another hub, or with a key swapped
//! in by someone on the path. (X25519 keys cannot sign; the node's Ed25519 key vouches for
//! its X25519 key, and the certificate binds both.)

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::ProofRejected;
use crate::token::{CaFingerprint, TokenId};

/// Domain separator at the start of every challenge.
pub const CHALLENGE_CONTEXT: &[u8] = b"bauxite-dispatch 2026 provision v1\0";

/// The public keys a joining node presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeKeys {
    /// Ed25519 identity key (the peer ID derives from it).
    pub ed25519: [u8; 32],
    /// X25519 static key for the data-plane handshake.
    pub x25519: [u8; 32],
    /// Ed25519 key of the node's TLS client certificate.
    pub tls: [u8; 32],
}

/// The bytes a node signs to prove it holds its Ed25519 key.
pub fn challenge(token: TokenId, ca: &CaFingerprint, keys: &NodeKeys, name: &str) -> Vec<u8> {
    let name = name.as_bytes();
    let mut out = Vec::with_capacity(CHALLENGE_CONTEXT.len() + 8 + 32 * 4 + 2 + name.len());
    out.extend_from_slice(CHALLENGE_CONTEXT);
    out.extend_from_slice(&token.0);
    out.extend_from_slice(&ca.0);
    out.extend_from_slice(&keys.ed25519);
    out.extend_from_slice(&keys.x25519);
    out.extend_from_slice(&keys.tls);
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&name[..usize::from(len).min(name.len())]);
    out
}

/// Checks a proof (strict Ed25519 verification: no malleable or small-order keys).
pub fn verify(
    token: TokenId,
    ca: &CaFingerprint,
    keys: &NodeKeys,
    name: &str,
    proof: &[u8],
) -> Result<(), ProofRejected> {
    let key = VerifyingKey::from_bytes(&keys.ed25519).map_err(|_| ProofRejected::BadKey {
        field: "ed25519_public",
    })?;
    if key.is_weak() {
        return Err(ProofRejected::BadKey {
            field: "ed25519_public",
        });
    }
    let signature = Signature::from_slice(proof).map_err(|_| ProofRejected::BadProof)?;
    key.verify_strict(&challenge(token, ca, keys, name), &signature)
        .map_err(|_| ProofRejected::BadProof)
}

/// Domain separator at the start of every certificate-renewal challenge.
pub const RENEW_CONTEXT: &[u8] = b"bauxite-dispatch 2026 renew v1\0";

/// The bytes a node signs to renew its certificate: the hub CA, the node's keys and the
/// SHA-256 of the certificate it presents over mutual TLS, so a proof is good for that
/// one certificate at that one hub.
pub fn renew_challenge(ca: &CaFingerprint, keys: &NodeKeys, presented: &CaFingerprint) -> Vec<u8> {
    let mut out = Vec::with_capacity(RENEW_CONTEXT.len() + 32 * 5);
    out.extend_from_slice(RENEW_CONTEXT);
    out.extend_from_slice(&ca.0);
    out.extend_from_slice(&keys.ed25519);
    out.extend_from_slice(&keys.x25519);
    out.extend_from_slice(&keys.tls);
    out.extend_from_slice(&presented.0);
    out
}

/// Checks a renewal proof (strict Ed25519 verification).
pub fn verify_renewal(
    ca: &CaFingerprint,
    keys: &NodeKeys,
    presented: &CaFingerprint,
    proof: &[u8],
) -> Result<(), ProofRejected> {
    let key = VerifyingKey::from_bytes(&keys.ed25519).map_err(|_| ProofRejected::BadKey {
        field: "ed25519_public",
    })?;
    let signature = Signature::from_slice(proof).map_err(|_| ProofRejected::BadProof)?;
    key.verify_strict(&renew_challenge(ca, keys, presented), &signature)
        .map_err(|_| ProofRejected::BadProof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_conduit::identity::Identity;

    #[test]
    fn proof_binds_every_field() {
        let id = Identity::from_secrets([1; 32], [2; 32]);
        let keys = NodeKeys {
            ed25519: id.public().signing_public,
            x25519: id.public().static_public,
            tls: [5; 32],
        };
        let (tok, ca) = (TokenId([3; 8]), CaFingerprint([4; 32]));
        let proof = id.sign(&challenge(tok, &ca, &keys, "r7"));
        assert_eq!(verify(tok, &ca, &keys, "r7", &proof), Ok(()));
        let bad = Err(ProofRejected::BadProof);
        assert_eq!(verify(TokenId([9; 8]), &ca, &keys, "r7", &proof), bad);
        assert_eq!(
            verify(tok, &CaFingerprint([9; 32]), &keys, "r7", &proof),
            bad
        );
        assert_eq!(
            verify(
                tok,
                &ca,
                &NodeKeys {
                    x25519: [9; 32],
                    ..keys
                },
                "r7",
                &proof
            ),
            bad
        );
        assert_eq!(
            verify(
                tok,
                &ca,
                &NodeKeys {
                    tls: [9; 32],
                    ..keys
                },
                "r7",
                &proof
            ),
            bad
        );
        assert_eq!(verify(tok, &ca, &keys, "r8", &proof), bad);
        assert_eq!(verify(tok, &ca, &keys, "r7", &proof[..10]), bad);
    }

    #[test]
    fn renewal_proof_binds_hub_keys_and_certificate() {
        let id = Identity::from_secrets([1; 32], [2; 32]);
        let keys = NodeKeys {
            ed25519: id.public().signing_public,
            x25519: id.public().static_public,
            tls: [5; 32],
        };
        let (ca, cert) = (CaFingerprint([4; 32]), CaFingerprint([6; 32]));
        let proof = id.sign(&renew_challenge(&ca, &keys, &cert));
        assert_eq!(verify_renewal(&ca, &keys, &cert, &proof), Ok(()));
        let bad = Err(ProofRejected::BadProof);
        assert_eq!(
            verify_renewal(&CaFingerprint([9; 32]), &keys, &cert, &proof),
            bad
        );
        assert_eq!(
            verify_renewal(&ca, &keys, &CaFingerprint([9; 32]), &proof),
            bad
        );
        let swapped = NodeKeys {
            tls: [9; 32],
            ..keys
        };
        assert_eq!(verify_renewal(&ca, &swapped, &cert, &proof), bad);
        // A provisioning proof is no renewal proof (domain separation).
        let provision = id.sign(&challenge(TokenId([3; 8]), &ca, &keys, ""));
        assert_eq!(verify_renewal(&ca, &keys, &cert, &provision), bad);
    }
}
