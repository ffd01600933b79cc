//! A node's long-term keys: Ed25519 for signatures, X25519 for the handshake.
//!
//! Invariant: a private key file is only ever created with mode 0600 inside a 0700
//! directory, replaced atomically (temp file, fsync, rename, fsync directory), and only
//! ever loaded after its size, permissions, header and checksum were checked — a file
//! that fails any check is refused with an error naming it and the fix.
//!
//! File layout (`identity.key`, 100 bytes):
//! `"BXIDENT1"` | Ed25519 seed 32 | X25519 secret 32 | BLAKE3(previous 72 bytes)[..28]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{Error, KeyFileProblem, PeerId};

const MAGIC: &[u8; 8] = b"BXIDENT1";
const CHECK_LEN: usize = 28;
/// Size of an identity file.
pub const FILE_LEN: usize = 8 + 32 + 32 + CHECK_LEN;

/// The public half of an identity: what peers and the hub know about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublicIdentity {
    /// Ed25519 verifying key (signatures, certificates, [`PeerId`]).
    pub signing_public: [u8; 32],
    /// X25519 static public key (handshake).
    pub static_public: [u8; 32],
}

impl PublicIdentity {
    /// The node's mesh ID, derived from its signing key.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from_signing_public(&self.signing_public)
    }
}

/// A node's private keys. Secrets are wiped from memory on drop.
pub struct Identity {
    signing: SigningKey,
    static_secret: StaticSecret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.public().peer_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Builds an identity from secret bytes (e.g. from a seeded RNG in tests).
    pub fn from_secrets(signing_seed: [u8; 32], static_secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&signing_seed),
            static_secret: StaticSecret::from(static_secret),
        }
    }

    /// Generates a fresh identity from a cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        rng.fill_bytes(secret.as_mut());
        Self::from_secrets(*seed, *secret)
    }

    /// Generates a fresh identity from the operating system's RNG.
    #[allow(clippy::disallowed_methods)] // IO shell: the one place that reads OS randomness.
    pub fn generate_os() -> Result<Self, Error> {
        let mut bytes = Zeroizing::new([0u8; 64]);
        getrandom::fill(bytes.as_mut()).map_err(|e| Error::Io {
            action: "read OS randomness for",
            path: PathBuf::from("identity"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut seed = [0u8; 32];
        let mut secret = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        secret.copy_from_slice(&bytes[32..]);
        Ok(Self::from_secrets(seed, secret))
    }

    /// The public keys.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            signing_public: self.signing.verifying_key().to_bytes(),
            static_public: PublicKey::from(&self.static_secret).to_bytes(),
        }
    }

    /// The node's mesh ID.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// The X25519 static secret, for the handshake.
    pub fn static_secret(&self) -> &StaticSecret {
        &self.static_secret
    }

    /// Signs `message` with the Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    fn encode(&self) -> Zeroizing<[u8; FILE_LEN]> {
        let mut out = Zeroizing::new([0u8; FILE_LEN]);
        out[..8].copy_from_slice(MAGIC);
        out[8..40].copy_from_slice(&self.signing.to_bytes());
        out[40..72].copy_from_slice(self.static_secret.as_bytes());
        let check = blake3::hash(&out[..72]);
        out[72..].copy_from_slice(&check.as_bytes()[..CHECK_LEN]);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, KeyFileProblem> {
        if bytes.len() != FILE_LEN {
            return Err(KeyFileProblem::WrongSize {
                expected: FILE_LEN,
                found: bytes.len(),
            });
        }
        if &bytes[..8] != MAGIC {
            return Err(KeyFileProblem::BadHeader);
        }
        let check = blake3::hash(&bytes[..72]);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &check.as_bytes()[..CHECK_LEN],
            &bytes[72..],
        )) {
            return Err(KeyFileProblem::Mismatch);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut secret = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[8..40]);
        secret.copy_from_slice(&bytes[40..72]);
        Ok(Self::from_secrets(*seed, *secret))
    }

    /// Writes the identity to `path` (0600, parent directory 0700), atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |action: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        // Directories we create are 0700; an existing one keeps its mode (it may be
        // shared, like /etc or /tmp, and is the operator's to choose).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create directory", dir))?;
        let tmp = path.with_extension("key.tmp");
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(self.encode().as_ref())
            .map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))?;
        Ok(())
    }

    /// Loads an identity, refusing files that are malformed or readable by others.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let refuse = |problem| Error::KeyFile {
            path: path.to_path_buf(),
            problem,
        };
        let meta = fs::metadata(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(refuse(KeyFileProblem::TooOpen { mode }));
        }
        if meta.len() != FILE_LEN as u64 {
            return Err(refuse(KeyFileProblem::WrongSize {
                expected: FILE_LEN,
                found: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            }));
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?);
        Self::decode(&bytes).map_err(refuse)
    }

    /// Loads `path` if it exists, otherwise generates a new identity and saves it there.
    pub fn load_or_generate(path: &Path) -> Result<Self, Error> {
        if path.exists() {
            Self::load(path)
        } else {
            let id = Self::generate_os()?;
            id.save(path)?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixed() -> Identity {
        Identity::from_secrets([1u8; 32], [2u8; 32])
    }

    #[test]
    fn saving_into_an_existing_shared_directory_leaves_its_mode_alone() {
        // `bauxite keygen --identity /tmp/x.identity` must not chmod /tmp to 0700.
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        fixed().save(&dir.path().join("node.identity")).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
    }

    #[test]
    fn save_load_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/identity.key");
        let id = fixed();
        id.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.public(), id.public());
        assert_eq!(loaded.sign(b"x"), id.sign(b"x"));
    }

    #[test]
    fn refuses_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        fixed().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("identity.key") && text.contains("chmod 600"),
            "{text}"
        );
        assert!(matches!(
            err,
            Error::KeyFile {
                problem: KeyFileProblem::TooOpen { mode: 0o644 },
                ..
            }
        ));
    }

    #[test]
    fn refuses_wrong_size_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let write = |bytes: &[u8]| {
            let _ = fs::remove_file(&path);
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        write(&[0u8; 10]);
        assert!(matches!(
            Identity::load(&path),
            Err(Error::KeyFile {
                problem: KeyFileProblem::WrongSize {
                    expected: FILE_LEN,
                    found: 10
                },
                ..
            })
        ));
        write(&[0u8; FILE_LEN]);
        assert!(matches!(
            Identity::load(&path),
            Err(Error::KeyFile {
                problem: KeyFileProblem::BadHeader,
                ..
            })
        ));
        let mut good = *fixed().encode();
        good[50] ^= 1;
        write(&good);
        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(
            err,
            Error::KeyFile {
                problem: KeyFileProblem::Mismatch,
                ..
            }
        ));
        assert!(err.to_string().contains("regenerate"));
    }

    #[test]
    fn missing_file_names_path() {
        let err = Identity::load(Path::new("/nonexistent/bx/identity.key")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bx/identity.key"));
    }

    #[test]
    fn load_or_generate_creates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = Identity::load_or_generate(&path).unwrap();
        let b = Identity::load_or_generate(&path).unwrap();
        assert_eq!(a.public(), b.public());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..150)) {
            let _ = Identity::decode(&bytes);
        }

        #[test]
        fn any_single_bit_flip_is_refused(pos in 0usize..FILE_LEN, bit in 0u8..8) {
            let mut bytes = *fixed().encode();
            bytes[pos] ^= 1 << bit;
            prop_assert!(Identity::decode(&bytes).is_err());
        }
    }
}
