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

    // ---- TUF trust (`crate::tuf`) ----
    /// The TUF workflow refused metadata or a target; the trusted state is unchanged.
    #[error("update trust refused: {0}")]
    TufRefused(#[from] crate::tuf::Refusal),
    /// A metadata or target file could not be fetched.
    #[error("fetch failed: {0}")]
    TufFetch(#[from] crate::tuf::FetchError),
    /// The client has no trusted root yet.
    #[error(
        "no trusted root: initialise the client with a root.json obtained out of band \
         (`bauxite update tuf-client --metadata-dir DIR init ROOT_JSON`)"
    )]
    TufNotInitialised,
    /// A target was looked up before a successful refresh.
    #[error("metadata not refreshed: refresh before looking up targets")]
    TufNotRefreshed,
    /// A TUF key file could not be read, parsed or written.
    #[error("TUF key {path}: {reason}")]
    TufKey {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A repository operation could not be carried out.
    #[error("TUF repository: {reason}")]
    TufRepo {
        /// What is wrong, and what to do.
        reason: String,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
