//! A carrier that relays handshake messages (a TURN relay, the hub relay) and knows every
//! public key cannot substitute an ephemeral key. Even with `mac1` recomputed — it is keyed
//! by the receiver's *public* static key, which the hub itself distributes — the message
//! is refused past `mac1`: the ephemeral is mixed into the handshake hash and every later
//! field is AEAD-encrypted under keys that need a static private key (`es`, `ss`, `se`).
//! (docs/security.md, "A compromised or malicious hub".)
#![allow(clippy::unwrap_used)]

use bauxite_conduit::PeerMisbehaved;
use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::identity::Identity;
use bauxite_conduit::session::noise::{initiate, receive_init, respond};
use bauxite_conduit::wire::{self, INIT_LEN, RESP_LEN};

const SUITE: CipherSuite = CipherSuite::ChaCha20Poly1305;

/// `mac1` as anyone holding the receiver's public key computes it.
fn mac1(receiver_static: &[u8; 32], covered: &[u8]) -> [u8; 16] {
    let key = blake3::derive_key("bauxite 2026 handshake mac1", receiver_static);
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::keyed_hash(&key, covered).as_bytes()[..16]);
    out
}

/// The relay's own ephemeral public key.
fn relay_ephemeral() -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from([0x66; 32]);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

fn nodes() -> (Identity, Identity) {
    (
        Identity::from_secrets([1; 32], [2; 32]),
        Identity::from_secrets([3; 32], [4; 32]),
    )
}

#[test]
fn a_substituted_initiator_ephemeral_is_refused_past_mac1() {
    let (a, b) = nodes();
    let mut init = [0u8; INIT_LEN];
    initiate(
        &a,
        SUITE,
        &b.public().static_public,
        [5; 32],
        1,
        1,
        &mut init,
    )
    .unwrap();
    let mut relayed = init;
    relayed[wire::init::EPHEMERAL].copy_from_slice(&relay_ephemeral());
    let tag = mac1(&b.public().static_public, &relayed[..wire::init::MAC.start]);
    relayed[wire::init::MAC].copy_from_slice(&tag);
    let refused = receive_init(&b, SUITE, &relayed).err();
    assert!(refused.is_some(), "a swapped ephemeral was accepted");
    assert_ne!(
        refused,
        Some(PeerMisbehaved::BadMac),
        "the relay's mac1 holds"
    );
    // The untouched initiation still works.
    assert!(receive_init(&b, SUITE, &init).is_ok());
}

#[test]
fn a_substituted_responder_ephemeral_is_refused_past_mac1() {
    let (a, b) = nodes();
    let mut init = [0u8; INIT_LEN];
    let pending = initiate(
        &a,
        SUITE,
        &b.public().static_public,
        [5; 32],
        1,
        1,
        &mut init,
    )
    .unwrap();
    let received = receive_init(&b, SUITE, &init).unwrap();
    let mut resp = [0u8; RESP_LEN];
    respond(received, [6; 32], 2, &mut resp).unwrap();
    let mut relayed = resp;
    relayed[wire::resp::EPHEMERAL].copy_from_slice(&relay_ephemeral());
    let tag = mac1(&a.public().static_public, &relayed[..wire::resp::MAC.start]);
    relayed[wire::resp::MAC].copy_from_slice(&tag);
    let refused = pending.receive_resp(&a, &relayed).err();
    assert!(refused.is_some(), "a swapped ephemeral was accepted");
    assert_ne!(
        refused,
        Some(PeerMisbehaved::BadMac),
        "the relay's mac1 holds"
    );
    // The genuine response still completes the handshake.
    assert!(pending.receive_resp(&a, &resp).is_ok());
}
