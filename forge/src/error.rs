//! The crate's one error type. Variants carry the offending value; messages say what to do.

/// Everything that can go wrong while packaging, fetching, staging or activating an update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The path it was done to.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
