//! The admin UI password: an argon2id hash (PHC string) in `DATA_DIR/admin-ui.passwd`, 0600.
//! The salt comes from the caller (the shell's OS RNG).

use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::pki::files;
use crate::{Error, Result};

/// The hash file's name in the data dir.
pub const PASSWORD_FILE: &str = "admin-ui.passwd";
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (argon2 hashes any length; this bounds the request).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Where the hash lives in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(PASSWORD_FILE)
}

/// Hashes `password` with argon2id (the crate's default parameters) and `salt`.
pub fn hash(password: &str, salt: &[u8; 16]) -> Result<String> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(Error::InvalidArgument {
            field: "admin password",
            problem: format!(
                "{chars} characters; use {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS}"
            ),
        });
    }
    let salt = SaltString::encode_b64(salt).map_err(|e| Error::InvalidArgument {
        field: "salt",
        problem: e.to_string(),
    })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::InvalidArgument {
            field: "admin password",
            problem: e.to_string(),
        })
}

/// Whether `password` matches the PHC string `phc` (the argon2 crate compares in constant
/// time).
pub fn verify(phc: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_CHARS * 4 {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Stores the hash of `password` in `data_dir` (0600, replacing any previous one).
pub fn set(data_dir: &Path, password: &str, salt: &[u8; 16]) -> Result<()> {
    files::create_private_dir(data_dir)?;
    let phc = hash(password, salt)?;
    files::write_secret(&path(data_dir), format!("{phc}\n").as_bytes())?;
    Ok(())
}

/// Loads the stored hash, checking it parses.
pub fn load(data_dir: &Path) -> Result<String> {
    let path = path(data_dir);
    if !path.exists() {
        return Err(Error::NoAdminPassword { path });
    }
    let phc = files::read_text(&path)?.trim().to_owned();
    PasswordHash::new(&phc).map_err(|e| Error::AdminPasswordFile {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    Ok(phc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_password_verifies_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "correct horse battery", &[7; 16]).unwrap();
        let phc = load(dir.path()).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify(&phc, "correct horse battery"));
        assert!(!verify(&phc, "correct horse batterY"));
        assert!(!verify(&phc, ""));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path(dir.path())).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn short_passwords_and_missing_or_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            set(dir.path(), "short", &[1; 16]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            load(dir.path()),
            Err(Error::NoAdminPassword { .. })
        ));
        std::fs::write(path(dir.path()), "not a hash\n").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(Error::AdminPasswordFile { .. })
        ));
    }
}
