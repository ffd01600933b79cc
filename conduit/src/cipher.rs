//! AEAD for handshake and data packets: ChaCha20-Poly1305 by default, AES-256-GCM in
//! FIPS mode.
//!
//! Invariant: a nonce is built only from the caller's 64-bit counter, exactly as the
//! Noise framework does (ChaChaPoly: 32 zero bits then the counter little-endian;
//! AESGCM: 32 zero bits then the counter big-endian), so uniqueness of nonces reduces to
//! the session never reusing a counter, which [`crate::session::SecureChannel`] enforces.
//! Sealing and opening work in place on caller buffers and never allocate.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::PeerMisbehaved;

/// Length of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of a symmetric key.
pub const KEY_LEN: usize = 32;

/// Which AEAD a node uses. Both ends of a session must agree (it is part of the Noise
/// protocol name, so a mismatch fails the handshake rather than corrupting data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CipherSuite {
    /// ChaCha20-Poly1305 (RFC 8439): fast everywhere, constant-time without AES-NI.
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM: for deployments that must use FIPS-approved algorithms.
    Aes256Gcm,
}

impl CipherSuite {
    /// The Noise name of the cipher ("ChaChaPoly" or "AESGCM").
    pub fn noise_name(self) -> &'static str {
        match self {
            CipherSuite::ChaCha20Poly1305 => "ChaChaPoly",
            CipherSuite::Aes256Gcm => "AESGCM",
        }
    }
}

/// A keyed AEAD instance. Enum dispatch keeps it allocation-free and `Send`.
#[derive(Clone)]
pub enum PacketCipher {
    /// ChaCha20-Poly1305 with the key expanded once.
    ChaCha(Box<ChaCha20Poly1305>),
    /// AES-256-GCM with the key schedule computed once.
    Aes(Box<Aes256Gcm>),
}

impl PacketCipher {
    /// Builds a cipher for `suite` from a 32-byte key (the key bytes are wiped after use).
    pub fn new(suite: CipherSuite, mut key: [u8; KEY_LEN]) -> Self {
        let cipher = match suite {
            CipherSuite::ChaCha20Poly1305 => {
                PacketCipher::ChaCha(Box::new(ChaCha20Poly1305::new(&key.into())))
            }
            CipherSuite::Aes256Gcm => PacketCipher::Aes(Box::new(Aes256Gcm::new(&key.into()))),
        };
        key.zeroize();
        cipher
    }

    /// The suite this cipher implements.
    pub fn suite(&self) -> CipherSuite {
        match self {
            PacketCipher::ChaCha(_) => CipherSuite::ChaCha20Poly1305,
            PacketCipher::Aes(_) => CipherSuite::Aes256Gcm,
        }
    }

    /// Encrypts `buf` in place and returns the tag. `counter` must never repeat for a key.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = nonce(self.suite(), counter);
        let tag = match self {
            PacketCipher::ChaCha(c) => c.encrypt_inout_detached(&nonce.into(), aad, buf.into()),
            PacketCipher::Aes(c) => c.encrypt_inout_detached(&nonce.into(), aad, buf.into()),
        };
        // Both AEADs accept any length below 2^32 blocks; mesh packets are < 64 KiB.
        match tag {
            Ok(tag) => tag.into(),
            Err(_) => unreachable_too_long(),
        }
    }

    /// Decrypts `buf` in place if `tag` authenticates it and `aad`; on failure `buf` is
    /// left as undefined bytes and must be discarded.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), PeerMisbehaved> {
        let nonce = nonce(self.suite(), counter);
        let result = match self {
            PacketCipher::ChaCha(c) => {
                c.decrypt_inout_detached(&nonce.into(), aad, buf.into(), tag.into())
            }
            PacketCipher::Aes(c) => {
                c.decrypt_inout_detached(&nonce.into(), aad, buf.into(), tag.into())
            }
        };
        result.map_err(|_| PeerMisbehaved::BadTag)
    }

    /// Seals `plaintext_len` bytes at the start of `buf` and writes the tag after them;
    /// returns the ciphertext length (`plaintext_len + TAG_LEN`). `buf` must have room.
    pub fn seal_append(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Option<usize> {
        let total = plaintext_len.checked_add(TAG_LEN)?;
        if buf.len() < total {
            return None;
        }
        let (body, rest) = buf.split_at_mut(plaintext_len);
        let tag = self.seal_in_place(counter, aad, body);
        rest[..TAG_LEN].copy_from_slice(&tag);
        Some(total)
    }

    /// Opens `buf` (ciphertext followed by the tag) in place; returns the plaintext length.
    pub fn open_split(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, PeerMisbehaved> {
        let body_len = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(PeerMisbehaved::BadTag)?;
        let (body, tag) = buf.split_at_mut(body_len);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        self.open_in_place(counter, aad, body, &tag_bytes)?;
        Ok(body_len)
    }
}

/// The 96-bit nonce for `counter`, laid out as the Noise framework specifies per cipher.
pub fn nonce(suite: CipherSuite, counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    match suite {
        CipherSuite::ChaCha20Poly1305 => nonce[4..].copy_from_slice(&counter.to_le_bytes()),
        CipherSuite::Aes256Gcm => nonce[4..].copy_from_slice(&counter.to_be_bytes()),
    }
    nonce
}

#[cold]
fn unreachable_too_long() -> ! {
    // Reaching this would need a packet of more than 256 GiB: a caller bug, not input.
    panic!("AEAD input exceeds the cipher's length limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(suite: CipherSuite) {
        let cipher = PacketCipher::new(suite, [9u8; 32]);
        let mut buf = [0u8; 64 + TAG_LEN];
        buf[..64].copy_from_slice(&[0x42u8; 64]);
        let len = cipher.seal_append(7, b"hdr", &mut buf, 64).unwrap();
        assert_eq!(len, 64 + TAG_LEN);
        assert_ne!(&buf[..64], &[0x42u8; 64][..]);
        let plain = cipher.open_split(7, b"hdr", &mut buf[..len]).unwrap();
        assert_eq!(&buf[..plain], &[0x42u8; 64][..]);
    }

    #[test]
    fn chacha_roundtrip() {
        roundtrip(CipherSuite::ChaCha20Poly1305);
    }

    #[test]
    fn aes_roundtrip() {
        roundtrip(CipherSuite::Aes256Gcm);
    }

    #[test]
    fn wrong_counter_aad_or_flip_fails() {
        for suite in [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm] {
            let cipher = PacketCipher::new(suite, [1u8; 32]);
            let mut sealed = [0u8; 10 + TAG_LEN];
            sealed[..10].copy_from_slice(b"0123456789");
            cipher.seal_append(3, b"a", &mut sealed, 10).unwrap();

            let mut b = sealed;
            assert_eq!(
                cipher.open_split(4, b"a", &mut b),
                Err(PeerMisbehaved::BadTag)
            );
            let mut b = sealed;
            assert_eq!(
                cipher.open_split(3, b"b", &mut b),
                Err(PeerMisbehaved::BadTag)
            );
            for i in 0..sealed.len() {
                let mut b = sealed;
                b[i] ^= 0x01;
                assert_eq!(
                    cipher.open_split(3, b"a", &mut b),
                    Err(PeerMisbehaved::BadTag)
                );
            }
        }
    }

    #[test]
    fn too_short_is_bad_tag_not_panic() {
        let cipher = PacketCipher::new(CipherSuite::ChaCha20Poly1305, [1u8; 32]);
        let mut b = [0u8; 5];
        assert_eq!(
            cipher.open_split(0, b"", &mut b),
            Err(PeerMisbehaved::BadTag)
        );
    }

    #[test]
    fn seal_append_refuses_small_buffer() {
        let cipher = PacketCipher::new(CipherSuite::ChaCha20Poly1305, [1u8; 32]);
        let mut b = [0u8; 20];
        assert_eq!(cipher.seal_append(0, b"", &mut b, 10), None);
    }

    #[test]
    fn nonce_layouts_follow_noise() {
        let n = nonce(CipherSuite::ChaCha20Poly1305, 1);
        assert_eq!(n, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        let n = nonce(CipherSuite::Aes256Gcm, 1);
        assert_eq!(n, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
