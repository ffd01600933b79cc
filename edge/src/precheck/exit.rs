//! Precheck exit codes. The mapping is a pure function of the error variant, so every
//! failure path is fail-closed by construction: only `Ok` lets `bauxite.service` start.

use crate::error::Error;

/// The process exit status of `bauxite precheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Clean, initialised or reconstructed.
    Ok = 0,
    /// Config parse or validation error (also: a helper tool failed).
    Config = 1,
    /// State-root error: bad path, ephemeral filesystem, corrupt state, unreadable OS facts.
    StateRoot = 2,
    /// mTLS certificate unreadable or expiring within 7 days.
    Certificate = 3,
    /// Reconstruction failed: the daemon must not start.
    Reconstruction = 5,
}

impl ExitStatus {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Maps a precheck error to its exit status.
pub fn exit_status(err: &Error) -> ExitStatus {
    match err {
        Error::Config(_) | Error::Tool(_) => ExitStatus::Config,
        Error::StateRoot(_) | Error::Fingerprint(_) => ExitStatus::StateRoot,
        Error::Certificate(_) => ExitStatus::Certificate,
        Error::Reconstruction(_) => ExitStatus::Reconstruction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;
    use std::path::PathBuf;

    #[test]
    fn each_error_family_has_its_code() {
        let p = PathBuf::from("x");
        let cases: [(Error, u8); 5] = [
            (
                ConfigError::Invalid {
                    key: "state_root.root",
                    reason: String::new(),
                }
                .into(),
                1,
            ),
            (StateRootError::NotAbsolute { path: p.clone() }.into(), 2),
            (
                FingerprintError::Corrupt {
                    path: p.clone(),
                    reason: String::new(),
                }
                .into(),
                2,
            ),
            (
                CertError::Unreadable {
                    path: p.clone(),
                    source: std::io::ErrorKind::NotFound.into(),
                }
                .into(),
                3,
            ),
            (ReconstructionError::MissingVerifyKey { path: p }.into(), 5),
        ];
        for (e, code) in cases {
            assert_eq!(exit_status(&e).code(), code, "{e}");
        }
    }
}
