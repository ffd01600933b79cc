//! The ring backend against the RustCrypto reference: for random keys, counters,
//! associated data and packets, both produce the same ciphertext and tag for each suite,
//! each opens what the other sealed, and both reject any single corrupted byte of
//! ciphertext, tag or associated data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use bauxite_conduit::PeerMisbehaved;
use bauxite_conduit::cipher::{AeadBackend, CipherSuite, KEY_LEN, PacketCipher, TAG_LEN};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

const SUITES: [CipherSuite; 2] = [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm];

/// Seals `plaintext` with `cipher`; returns ciphertext followed by the tag.
fn seal(cipher: &PacketCipher, counter: u64, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buf = plaintext.to_vec();
    buf.resize(plaintext.len() + TAG_LEN, 0);
    let len = cipher
        .seal_append(counter, aad, &mut buf, plaintext.len())
        .unwrap();
    assert_eq!(len, buf.len());
    buf
}

/// Opens `sealed` (ciphertext then tag) with `cipher`; returns the plaintext.
fn open(
    cipher: &PacketCipher,
    counter: u64,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, PeerMisbehaved> {
    let mut buf = sealed.to_vec();
    let len = cipher.open_split(counter, aad, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

proptest! {
    #[test]
    fn ring_and_rust_crypto_agree_byte_for_byte(
        key in any::<[u8; KEY_LEN]>(),
        counter in any::<u64>(),
        aad in vec(any::<u8>(), 0..64),
        plaintext in vec(any::<u8>(), 0..2000),
        flip_at in any::<Index>(),
        flip_mask in 1u8..=255,
    ) {
        for suite in SUITES {
            let ring = PacketCipher::with_backend(suite, AeadBackend::Ring, key);
            let reference = PacketCipher::with_backend(suite, AeadBackend::RustCrypto, key);

            let by_ring = seal(&ring, counter, &aad, &plaintext);
            let by_reference = seal(&reference, counter, &aad, &plaintext);
            prop_assert_eq!(&by_ring, &by_reference, "{:?}: ciphertext or tag differs", suite);

            // The detached-tag entry points agree as well.
            let mut detached = plaintext.clone();
            let tag = ring.seal_in_place(counter, &aad, &mut detached);
            prop_assert_eq!(&detached[..], &by_ring[..plaintext.len()]);
            prop_assert_eq!(&tag[..], &by_ring[plaintext.len()..]);
            reference.open_in_place(counter, &aad, &mut detached, &tag).unwrap();
            prop_assert_eq!(&detached, &plaintext);

            prop_assert_eq!(open(&reference, counter, &aad, &by_ring), Ok(plaintext.clone()));
            prop_assert_eq!(open(&ring, counter, &aad, &by_reference), Ok(plaintext.clone()));

            // One corrupted byte anywhere in ciphertext, tag or associated data.
            let at = flip_at.index(by_ring.len() + aad.len());
            let (mut sealed, mut bad_aad) = (by_ring.clone(), aad.clone());
            match at.checked_sub(sealed.len()) {
                None => sealed[at] ^= flip_mask,
                Some(i) => bad_aad[i] ^= flip_mask,
            }
            for cipher in [&ring, &reference] {
                prop_assert_eq!(
                    open(cipher, counter, &bad_aad, &sealed),
                    Err(PeerMisbehaved::BadTag),
                    "{:?} {:?} accepted a flipped byte at {}", suite, cipher.backend(), at
                );
            }
        }
    }
}
