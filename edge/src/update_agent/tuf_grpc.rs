//! TUF over the hub's `UpdateService`: forge's [`MetadataSource`] and [`TargetSource`]
//! on `GetMetadata` / `GetTarget`, and the preparation of an update from an assignment
//! (refresh, firmware lookup, chunk index) — everything the transfer needs before the
//! first chunk is asked for.
//!
//! Invariant: nothing received here is trusted before forge's TUF client verified it; a
//! file is read to at most the limit the client gives plus one byte (forge refuses that
//! byte as endless data), whatever the hub streams; and every call is bounded in time.
//!
//! These sources are blocking (forge's client is synchronous): run them on a blocking
//! thread (`spawn_blocking`), never on the daemon's runtime thread, which they wait on.

use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bauxite_dispatch_api::proto::node::update_service_client::UpdateServiceClient;
use bauxite_dispatch_api::proto::node::{FileChunk, GetFileRequest};
use bauxite_forge::agent::UpdatePlan;
use bauxite_forge::chunk::ChunkIndex;
use bauxite_forge::layout::Version;
use bauxite_forge::tuf::{
    Client, DirStore, FetchError, FirmwareTarget, Limits, MetadataSource, TargetSource,
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tonic::transport::Channel;

use super::trust;

/// How long one file may take to arrive.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an assignment could not be prepared. Nothing was staged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// `join` installed no update root.
    #[error(
        "no trusted update root in {dir}: this node cannot verify updates; re-join with \
         `bauxite join --force --update-root ROOT_JSON` (or a hub that serves one)"
    )]
    NoTrust {
        /// The TUF directory.
        dir: String,
    },
    /// TUF refused the metadata or the target, or could not fetch it.
    #[error("update metadata: {0}")]
    Tuf(#[from] bauxite_forge::Error),
    /// The hub's label disagrees with the signed metadata.
    #[error(
        "the hub assigned version {assigned} of {target}, but its signed metadata says \
         {signed}; the assignment is refused (ask the operator to deploy the signed version)"
    )]
    VersionMismatch {
        /// The target.
        target: String,
        /// What the hub said.
        assigned: String,
        /// What the metadata signs.
        signed: String,
    },
    /// The blocking task failed.
    #[error("update preparation stopped: {0}")]
    Task(String),
}

/// The firmware the signed metadata describes for an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedFirmware {
    /// TUF target name.
    pub target: String,
    /// Signed version.
    pub version: String,
    /// Signed image length.
    pub length: u64,
    /// 64 KiB chunks.
    pub chunk_count: u64,
    /// Chunk index target.
    pub chunk_index: String,
}

impl From<&FirmwareTarget> for SignedFirmware {
    fn from(f: &FirmwareTarget) -> Self {
        Self {
            target: f.image.name.clone(),
            version: f.info.version.clone(),
            length: f.image.length,
            chunk_count: f.info.chunk_count,
            chunk_index: f.index.name.clone(),
        }
    }
}

/// A prepared update: what forge's agent installs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The plan (target, version, verified chunk index).
    pub plan: UpdatePlan,
    /// What the metadata signs.
    pub signed: SignedFirmware,
}

/// Files over the hub's `UpdateService`, fetched from a blocking thread.
#[derive(Debug, Clone)]
pub struct GrpcFiles {
    handle: Handle,
    client: UpdateServiceClient<Channel>,
}

#[derive(Clone, Copy)]
enum Kind {
    Metadata,
    Target,
}

impl GrpcFiles {
    /// Files through `client`, whose calls run on the runtime behind `handle`.
    pub fn new(handle: Handle, client: UpdateServiceClient<Channel>) -> Self {
        Self { handle, client }
    }

    fn fetch(&mut self, kind: Kind, name: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let mut client = self.client.clone();
        let path = name.to_owned();
        let request = GetFileRequest {
            name: name.to_owned(),
            max_length: max_len,
        };
        let call = async move {
            let answer = match kind {
                Kind::Metadata => client.get_metadata(request).await,
                Kind::Target => client.get_target(request).await,
            };
            let mut stream = answer.map_err(|s| status_error(&path, &s))?.into_inner();
            let mut out = Vec::new();
            // Bounded: stops one byte past the limit, which forge refuses as endless data.
            while let Some(FileChunk { data }) = stream
                .message()
                .await
                .map_err(|s| status_error(&path, &s))?
            {
                out.extend_from_slice(&data);
                if out.len() as u64 > max_len {
                    out.truncate(usize::try_from(max_len.saturating_add(1)).unwrap_or(usize::MAX));
                    break;
                }
            }
            Ok(out)
        };
        self.handle
            .block_on(tokio::time::timeout(FILE_TIMEOUT, call))
            .map_err(|_| FetchError::Transport {
                path: name.to_owned(),
                reason: format!("no answer from the hub within {FILE_TIMEOUT:?}"),
            })?
    }
}

fn status_error(path: &str, status: &tonic::Status) -> FetchError {
    match status.code() {
        tonic::Code::NotFound => FetchError::NotFound {
            path: path.to_owned(),
        },
        code => FetchError::Transport {
            path: path.to_owned(),
            reason: format!("hub answered {code:?}: {}", status.message()),
        },
    }
}

impl MetadataSource for GrpcFiles {
    fn fetch_metadata(
        &mut self,
        file_name: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError> {
        Ok(Box::new(Cursor::new(self.fetch(
            Kind::Metadata,
            file_name,
            max_len,
        )?)))
    }
}

impl TargetSource for GrpcFiles {
    fn fetch_target(&mut self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, FetchError> {
        Ok(Box::new(Cursor::new(self.fetch(
            Kind::Target,
            path,
            max_len,
        )?)))
    }
}

fn client(state_root: &Path) -> Result<Client<DirStore>, PrepareError> {
    if !trust::is_installed(state_root) {
        return Err(PrepareError::NoTrust {
            dir: trust::tuf_dir(state_root).display().to_string(),
        });
    }
    Ok(Client::new(
        DirStore::new(trust::tuf_dir(state_root)),
        Limits::default(),
    ))
}

/// Refreshes the metadata at `now` and looks `target` up as firmware.
pub fn lookup(
    state_root: &Path,
    files: &mut GrpcFiles,
    target: &str,
    now: jiff::Timestamp,
) -> Result<(Client<DirStore>, FirmwareTarget), PrepareError> {
    let mut tuf = client(state_root)?;
    tuf.refresh(files, now)?;
    let firmware = tuf.find_firmware(files, target)?;
    Ok((tuf, firmware))
}

/// Refreshes, finds the assigned firmware, checks its version against the assignment and
/// the active version (no downgrade), and fetches its verified chunk index.
pub fn prepare(
    state_root: &Path,
    files: &mut GrpcFiles,
    target: &str,
    assigned: &str,
    current: Option<&Version>,
    now: jiff::Timestamp,
) -> Result<Prepared, PrepareError> {
    let (tuf, firmware) = lookup(state_root, files, target, now)?;
    let signed = SignedFirmware::from(&firmware);
    if firmware.info.version != assigned {
        return Err(PrepareError::VersionMismatch {
            target: target.to_owned(),
            assigned: assigned.to_owned(),
            signed: firmware.info.version.clone(),
        });
    }
    if let Some(current) = current {
        firmware
            .info
            .check_newer_than(current.as_str())
            .map_err(bauxite_forge::Error::from)?;
    }
    let version = Version::parse(&firmware.info.version)?;
    let bytes = tuf.fetch_target_bytes(files, &firmware.index)?;
    let index = ChunkIndex::parse(firmware.image.length, &bytes)?;
    Ok(Prepared {
        plan: UpdatePlan {
            target: target.to_owned(),
            version,
            index: Arc::new(index),
        },
        signed,
    })
}
