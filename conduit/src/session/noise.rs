//! The handshake: Noise `IK` over X25519, SHA-256 and the node's AEAD
//! (`Noise_IK_25519_ChaChaPoly_SHA256`, or `..._AESGCM_...` in FIPS mode).
//!
//! Invariant: transport keys come only out of a completed `IK` exchange, so they depend on
//! both static keys and both ephemeral keys. Whoever relays the messages (a TURN server,
//! the hub) sees only public values and AEAD ciphertexts; without a static private key it
//! can neither derive the keys nor produce a message that verifies. A DH result that is
//! all zeros (a small-order point) aborts the handshake.
//!
//! Each message carries a `mac1` (BLAKE3 keyed by the receiver's static public key) that
//! is checked in constant time before any Diffie-Hellman work, so random traffic and
//! handshakes meant for someone else cost one hash.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::PeerMisbehaved;
use crate::cipher::{CipherSuite, PacketCipher, TAG_LEN};
use crate::identity::Identity;
use crate::wire::{self, INIT_LEN, MAC_LEN, RESP_LEN};

/// Bound into every handshake hash: a Bauxite handshake can never be confused with
/// another Noise protocol's.
pub const PROLOGUE: &[u8] = b"bauxite mesh v1";

/// Keys for one direction each, output of a completed handshake.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TransportKeys {
    /// Key for packets this side sends.
    pub send: [u8; 32],
    /// Key for packets this side receives.
    pub recv: [u8; 32],
}

/// Noise `SymmetricState`: chaining key, handshake hash and the current cipher key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
    k: Option<[u8; 32]>,
    n: u64,
    #[zeroize(skip)]
    suite: CipherSuite,
}

impl Symmetric {
    fn new(suite: CipherSuite, responder_static: &[u8; 32]) -> Self {
        let name = format!("Noise_IK_25519_{}_SHA256", suite.noise_name());
        let mut h = [0u8; 32];
        if name.len() <= 32 {
            h[..name.len()].copy_from_slice(name.as_bytes());
        } else {
            h = Sha256::digest(name.as_bytes()).into();
        }
        let mut s = Self {
            ck: h,
            h,
            k: None,
            n: 0,
            suite,
        };
        s.mix_hash(PROLOGUE);
        s.mix_hash(responder_static);
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h = hasher.finalize().into();
    }

    fn mix_key(&mut self, ikm: &[u8; 32]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
    }

    fn mix_dh(&mut self, secret: &StaticSecret, public: &[u8; 32]) -> Result<(), PeerMisbehaved> {
        let shared = secret.diffie_hellman(&PublicKey::from(*public));
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::BadTag);
        }
        self.mix_key(shared.as_bytes());
        Ok(())
    }

    /// Seals `buf[..len - TAG_LEN]` into `buf` (plaintext then tag) and hashes it.
    fn encrypt_and_hash(&mut self, buf: &mut [u8]) {
        let key = self.k.unwrap_or_default();
        let cipher = PacketCipher::new(self.suite, key);
        let plain = buf.len() - TAG_LEN;
        let _ = cipher.seal_append(self.n, &self.h, buf, plain);
        self.n += 1;
        self.mix_hash(buf);
    }

    /// Opens `buf` (ciphertext then tag) in place and hashes the ciphertext.
    fn decrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<(), PeerMisbehaved> {
        let key = self.k.unwrap_or_default();
        let cipher = PacketCipher::new(self.suite, key);
        let mut copy = [0u8; 64];
        let ciphertext = copy.get_mut(..buf.len()).ok_or(PeerMisbehaved::BadTag)?;
        ciphertext.copy_from_slice(buf);
        cipher.open_split(self.n, &self.h, buf)?;
        self.n += 1;
        self.mix_hash(ciphertext);
        Ok(())
    }

    fn split(&self) -> ([u8; 32], [u8; 32]) {
        hkdf2(&self.ck, &[])
    }
}

/// Noise's HKDF with two outputs: HKDF-SHA256 (RFC 5869) with salt `ck`, empty info.
fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let hk = Hkdf::<Sha256>::new(Some(ck), ikm);
    let mut okm = [0u8; 64];
    // 64 bytes is far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(&[], &mut okm);
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (a, b)
}

fn mac_key(receiver_static: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("bauxite 2026 handshake mac1", receiver_static)
}

fn mac(receiver_static: &[u8; 32], covered: &[u8]) -> [u8; MAC_LEN] {
    let full = blake3::keyed_hash(&mac_key(receiver_static), covered);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
    out
}

fn mac_ok(receiver_static: &[u8; 32], covered: &[u8], tag: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&mac(receiver_static, covered)[..], tag).into()
}

/// An initiation this node sent, waiting for the response.
#[derive(Clone)]
pub struct Initiation {
    state: Symmetric,
    ephemeral: StaticSecret,
    /// Our session index, echoed back by the responder.
    pub local_index: u32,
    /// The responder's static public key.
    pub remote_static: [u8; 32],
}

impl std::fmt::Debug for Initiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiation")
            .field("local_index", &self.local_index)
            .finish_non_exhaustive()
    }
}

/// Writes a handshake initiation to `remote_static` into `out`.
///
/// `ephemeral` must be fresh random bytes; `timestamp` must grow with every call for the
/// same responder (it is how the responder refuses replayed initiations).
pub fn initiate(
    local: &Identity,
    suite: CipherSuite,
    remote_static: &[u8; 32],
    ephemeral: [u8; 32],
    local_index: u32,
    timestamp: u64,
    out: &mut [u8; INIT_LEN],
) -> Result<Initiation, PeerMisbehaved> {
    let mut s = Symmetric::new(suite, remote_static);
    let ephemeral = StaticSecret::from(ephemeral);
    let e_pub = PublicKey::from(&ephemeral).to_bytes();
    out[0] = wire::TYPE_INIT;
    out[wire::init::EPHEMERAL].copy_from_slice(&e_pub);
    s.mix_hash(&e_pub);
    s.mix_dh(&ephemeral, remote_static)?;
    let static_field = &mut out[wire::init::STATIC];
    static_field[..32].copy_from_slice(&local.public().static_public);
    s.encrypt_and_hash(static_field);
    s.mix_dh(local.static_secret(), remote_static)?;
    let payload = &mut out[wire::init::PAYLOAD];
    payload[..4].copy_from_slice(&local_index.to_le_bytes());
    payload[4..12].copy_from_slice(&timestamp.to_le_bytes());
    s.encrypt_and_hash(payload);
    let tag = mac(remote_static, &out[..wire::init::MAC.start]);
    out[wire::init::MAC].copy_from_slice(&tag);
    Ok(Initiation {
        state: s,
        ephemeral,
        local_index,
        remote_static: *remote_static,
    })
}

/// A verified initiation, before the responder decides to answer it.
pub struct ReceivedInit {
    state: Symmetric,
    remote_ephemeral: [u8; 32],
    /// The initiator's static public key (authenticated by the `ss` DH).
    pub initiator_static: [u8; 32],
    /// The initiator's session index.
    pub sender_index: u32,
    /// The initiator's timestamp, which must exceed the last one accepted from it.
    pub timestamp: u64,
}

/// Verifies an initiation addressed to `local`. Does not check the initiator is a known
/// peer or that the timestamp is fresh: the caller owns that state.
pub fn receive_init(
    local: &Identity,
    suite: CipherSuite,
    msg: &[u8; INIT_LEN],
) -> Result<ReceivedInit, PeerMisbehaved> {
    let local_static = local.public().static_public;
    if !mac_ok(
        &local_static,
        &msg[..wire::init::MAC.start],
        &msg[wire::init::MAC],
    ) {
        return Err(PeerMisbehaved::BadMac);
    }
    let mut m = *msg;
    let mut s = Symmetric::new(suite, &local_static);
    let mut e_pub = [0u8; 32];
    e_pub.copy_from_slice(&m[wire::init::EPHEMERAL]);
    s.mix_hash(&e_pub);
    s.mix_dh(local.static_secret(), &e_pub)?;
    s.decrypt_and_hash(&mut m[wire::init::STATIC])?;
    let mut initiator_static = [0u8; 32];
    initiator_static.copy_from_slice(&m[wire::init::STATIC][..32]);
    s.mix_dh(local.static_secret(), &initiator_static)?;
    s.decrypt_and_hash(&mut m[wire::init::PAYLOAD])?;
    let payload = &m[wire::init::PAYLOAD];
    Ok(ReceivedInit {
        state: s,
        remote_ephemeral: e_pub,
        initiator_static,
        sender_index: wire::u32_le(&payload[..4]),
        timestamp: wire::u64_le(&payload[4..12]),
    })
}

/// Writes the response to a verified initiation and returns the responder's keys.
pub fn respond(
    received: ReceivedInit,
    ephemeral: [u8; 32],
    local_index: u32,
    out: &mut [u8; RESP_LEN],
) -> Result<TransportKeys, PeerMisbehaved> {
    let mut s = received.state.clone();
    let ephemeral = StaticSecret::from(ephemeral);
    let e_pub = PublicKey::from(&ephemeral).to_bytes();
    out[0] = wire::TYPE_RESP;
    out[wire::resp::RECEIVER].copy_from_slice(&received.sender_index.to_le_bytes());
    out[wire::resp::EPHEMERAL].copy_from_slice(&e_pub);
    s.mix_hash(&e_pub);
    s.mix_dh(&ephemeral, &received.remote_ephemeral)?;
    s.mix_dh(&ephemeral, &received.initiator_static)?;
    let payload = &mut out[wire::resp::PAYLOAD];
    payload[..4].copy_from_slice(&local_index.to_le_bytes());
    s.encrypt_and_hash(payload);
    let tag = mac(&received.initiator_static, &out[..wire::resp::MAC.start]);
    out[wire::resp::MAC].copy_from_slice(&tag);
    let (initiator_to_responder, responder_to_initiator) = s.split();
    Ok(TransportKeys {
        send: responder_to_initiator,
        recv: initiator_to_responder,
    })
}

impl Initiation {
    /// Verifies the response; returns our keys and the responder's session index. Leaves
    /// `self` intact on failure so a forged response cannot cancel the handshake.
    pub fn receive_resp(
        &self,
        local: &Identity,
        msg: &[u8; RESP_LEN],
    ) -> Result<(TransportKeys, u32), PeerMisbehaved> {
        let local_static = local.public().static_public;
        if !mac_ok(
            &local_static,
            &msg[..wire::resp::MAC.start],
            &msg[wire::resp::MAC],
        ) {
            return Err(PeerMisbehaved::BadMac);
        }
        let mut m = *msg;
        let mut s = self.state.clone();
        let mut e_pub = [0u8; 32];
        e_pub.copy_from_slice(&m[wire::resp::EPHEMERAL]);
        s.mix_hash(&e_pub);
        s.mix_dh(&self.ephemeral, &e_pub)?;
        s.mix_dh(local.static_secret(), &e_pub)?;
        s.decrypt_and_hash(&mut m[wire::resp::PAYLOAD])?;
        let remote_index = wire::u32_le(&m[wire::resp::PAYLOAD][..4]);
        let (initiator_to_responder, responder_to_initiator) = s.split();
        Ok((
            TransportKeys {
                send: initiator_to_responder,
                recv: responder_to_initiator,
            },
            remote_index,
        ))
    }

    /// The handshake hash so far (for tests and diagnostics).
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.state.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Identity, Identity) {
        (
            Identity::from_secrets([1; 32], [2; 32]),
            Identity::from_secrets([3; 32], [4; 32]),
        )
    }

    fn run(suite: CipherSuite) -> (TransportKeys, TransportKeys) {
        let (a, b) = ids();
        let mut init = [0u8; INIT_LEN];
        let pending = initiate(
            &a,
            suite,
            &b.public().static_public,
            [5; 32],
            11,
            99,
            &mut init,
        )
        .unwrap();
        let received = receive_init(&b, suite, &init).unwrap();
        assert_eq!(received.initiator_static, a.public().static_public);
        assert_eq!((received.sender_index, received.timestamp), (11, 99));
        let mut resp = [0u8; RESP_LEN];
        let kb = respond(received, [6; 32], 22, &mut resp).unwrap();
        let (ka, remote) = pending.receive_resp(&a, &resp).unwrap();
        assert_eq!(remote, 22);
        (ka, kb)
    }

    #[test]
    fn keys_agree_for_both_suites() {
        for suite in [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm] {
            let (a, b) = run(suite);
            assert_eq!(a.send, b.recv);
            assert_eq!(a.recv, b.send);
            assert_ne!(a.send, a.recv);
        }
    }

    #[test]
    fn suites_do_not_interoperate() {
        let (a, b) = ids();
        let mut init = [0u8; INIT_LEN];
        initiate(
            &a,
            CipherSuite::Aes256Gcm,
            &b.public().static_public,
            [5; 32],
            1,
            1,
            &mut init,
        )
        .unwrap();
        assert!(receive_init(&b, CipherSuite::ChaCha20Poly1305, &init).is_err());
    }

    #[test]
    fn every_flipped_bit_in_init_is_refused() {
        let (a, b) = ids();
        let mut init = [0u8; INIT_LEN];
        let suite = CipherSuite::ChaCha20Poly1305;
        initiate(
            &a,
            suite,
            &b.public().static_public,
            [5; 32],
            1,
            1,
            &mut init,
        )
        .unwrap();
        for i in 1..INIT_LEN {
            let mut m = init;
            m[i] ^= 0x40;
            assert!(receive_init(&b, suite, &m).is_err(), "byte {i}");
        }
    }

    #[test]
    fn init_for_someone_else_fails_mac() {
        let (a, b) = ids();
        let c = Identity::from_secrets([7; 32], [8; 32]);
        let mut init = [0u8; INIT_LEN];
        let suite = CipherSuite::ChaCha20Poly1305;
        initiate(
            &a,
            suite,
            &c.public().static_public,
            [5; 32],
            1,
            1,
            &mut init,
        )
        .unwrap();
        assert_eq!(
            receive_init(&b, suite, &init).err(),
            Some(PeerMisbehaved::BadMac)
        );
    }

    #[test]
    fn forged_response_leaves_initiation_usable() {
        let (a, b) = ids();
        let suite = CipherSuite::ChaCha20Poly1305;
        let mut init = [0u8; INIT_LEN];
        let pending = initiate(
            &a,
            suite,
            &b.public().static_public,
            [5; 32],
            1,
            1,
            &mut init,
        )
        .unwrap();
        let received = receive_init(&b, suite, &init).unwrap();
        let mut resp = [0u8; RESP_LEN];
        respond(received, [6; 32], 2, &mut resp).unwrap();
        let mut forged = resp;
        forged[wire::resp::PAYLOAD.start] ^= 1;
        assert!(pending.receive_resp(&a, &forged).is_err());
        assert!(pending.receive_resp(&a, &resp).is_ok());
    }

    #[test]
    fn small_order_ephemeral_is_refused() {
        let (a, b) = ids();
        let suite = CipherSuite::ChaCha20Poly1305;
        let mut init = [0u8; INIT_LEN];
        initiate(
            &a,
            suite,
            &b.public().static_public,
            [5; 32],
            1,
            1,
            &mut init,
        )
        .unwrap();
        // Replace the ephemeral with the identity point and re-MAC: DH gives all zeros.
        init[wire::init::EPHEMERAL].copy_from_slice(&[0u8; 32]);
        let tag = mac(&b.public().static_public, &init[..wire::init::MAC.start]);
        init[wire::init::MAC].copy_from_slice(&tag);
        assert!(receive_init(&b, suite, &init).is_err());
    }
}
