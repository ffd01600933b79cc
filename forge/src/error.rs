//! The crate's one error type. Variants carry the offending value; messages say what to do.

use std::path::PathBuf;

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
        path: PathBuf,
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
    // --- Chunks, fetch, staging, activation (forge core). ---
    /// The disk holding the staging directory is full.
    #[error(
        "no space left on the device holding {path} ({action}): free space or move the state \
         root to a larger partition; the active version is untouched"
    )]
    NoSpace {
        /// What was being done.
        action: &'static str,
        /// The path being written.
        path: PathBuf,
    },
    /// The staging directory or state root cannot be written.
    #[error(
        "{path} is read-only ({action}: {source}): remount the state root read-write or fix \
         its permissions; the active version is untouched"
    )]
    ReadOnly {
        /// What was being done.
        action: &'static str,
        /// The path that refused the write.
        path: PathBuf,
        /// The OS error (EROFS, EACCES or EPERM).
        #[source]
        source: std::io::Error,
    },
    /// A version string that cannot name a directory safely.
    #[error("invalid version {version:?}: {reason}; use letters, digits, '.', '_', '+' or '-'")]
    InvalidVersion {
        /// The refused string.
        version: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A path resolved outside the state root (a symlink or a crafted name).
    #[error("{path} resolves to {resolved}, outside the state root {root}: remove the link")]
    PathEscapesRoot {
        /// The path as built.
        path: PathBuf,
        /// Where it really points.
        resolved: PathBuf,
        /// The state root.
        root: PathBuf,
    },
    /// A chunk index whose length does not match the image it describes.
    #[error(
        "chunk index of {got} bytes does not describe an image of {image_len} bytes \
         ({expected} bytes expected): the target metadata is inconsistent, re-publish it"
    )]
    IndexLength {
        /// Bytes received.
        got: usize,
        /// Bytes an index for `image_len` must have.
        expected: u64,
        /// The image length the index claims to describe.
        image_len: u64,
    },
    /// An image too large for 32-bit chunk numbers.
    #[error("an image of {len} bytes has more than 2^32 chunks: split the update")]
    ImageTooLarge {
        /// The refused length.
        len: u64,
    },
    /// A chunk number beyond the image.
    #[error("chunk {chunk} is beyond the image's {count} chunks")]
    ChunkOutOfRange {
        /// The refused chunk number.
        chunk: u32,
        /// Chunks in the image.
        count: u32,
    },
    /// A buffer too small for a chunk.
    #[error("a buffer of {got} bytes cannot hold chunk {chunk} of {needed} bytes")]
    BufferTooSmall {
        /// The chunk.
        chunk: u32,
        /// Its length.
        needed: usize,
        /// The buffer's length.
        got: usize,
    },
    /// A file image whose size is not what the caller expected.
    #[error("{path} holds {got} bytes, {expected} expected: the file changed or is the wrong one")]
    SourceLength {
        /// The file.
        path: PathBuf,
        /// Its size.
        got: u64,
        /// The expected size.
        expected: u64,
    },
    /// A version that was rolled back is never re-activated automatically.
    #[error(
        "version {version} was rolled back earlier and is blocked: publish a new version, or \
         clear the block with an explicit operator command"
    )]
    VersionBlocked {
        /// The blocked version.
        version: String,
    },
    /// A rollback was asked for but nothing was active before.
    #[error("no previous version to roll back to (the first install has no backup)")]
    NoPreviousVersion,
    /// `current` exists but does not point to `versions/<valid version>`.
    #[error("{path} points to {target:?}, not to versions/<version>: repair the link by hand")]
    BadCurrentLink {
        /// The `current` link.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
    },
    /// The rollback marker cannot be parsed.
    #[error("{path} is unreadable ({reason}): inspect it, then delete it to start clean")]
    BadMarker {
        /// The marker file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Purging the version `current` points to would leave no active version.
    #[error("refusing to purge {version}: it is the active version")]
    WouldPurgeActive {
        /// The active version.
        version: String,
    },
    /// A source file cannot serve chunks.
    #[error("cannot read chunk {chunk} from {path}: {source}")]
    SourceRead {
        /// The chunk being read.
        chunk: u32,
        /// The source file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the MCAP telemetry failed.
    #[error("telemetry {path}: {reason}")]
    Telemetry {
        /// The recording.
        path: PathBuf,
        /// What the mcap writer reported.
        reason: String,
    },
    /// A fetch client needs at least one server.
    #[error("no server to fetch from: give the hub or a peer that holds the image")]
    NoServers,
    /// A resume set over another number of chunks than the image has.
    #[error("resume set covers {got} chunks, the image has {expected}: discard the checkpoint")]
    ResumeSetMismatch {
        /// Chunks in the given set.
        got: u32,
        /// Chunks in the image.
        expected: u32,
    },
    /// Datagrams too small to carry a fragment.
    #[error("datagrams of {max_datagram} bytes are too small for fetch fragments (minimum {min})")]
    DatagramTooSmall {
        /// The configured size.
        max_datagram: usize,
        /// The smallest size that works.
        min: usize,
    },
    // --- End of forge core. ---
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an IO error on `path` to the crate's error, singling out a full disk and a
/// read-only file system so callers (and users) get a typed, actionable answer.
pub(crate) fn io_error(action: &'static str, path: &std::path::Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    let path = path.to_path_buf();
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::NoSpace { action, path },
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => Error::ReadOnly {
            action,
            path,
            source: e,
        },
        _ => Error::Io {
            action,
            path,
            source: e,
        },
    }
}

/// A closure form of [`io_error`] for `map_err`.
pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| io_error(action, path, e)
}
