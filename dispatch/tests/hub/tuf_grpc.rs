//! forge's TUF client over the hub's `UpdateService` (GetMetadata, GetTarget), as a node
//! would run it: the sync sources block on the gRPC calls, so the client runs on a
//! blocking thread.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::GetFileRequest;
use bauxite_dispatch_api::proto::node::update_service_client::UpdateServiceClient;
use bauxite_forge::tuf::{
    Client, DirStore, FetchError, FirmwareTarget, Limits, MetadataSource, TargetSource,
};
use tonic::transport::Channel;

pub(crate) struct GrpcSource {
    client: UpdateServiceClient<Channel>,
    rt: tokio::runtime::Handle,
}

impl GrpcSource {
    pub(crate) fn new(hub: &HubClient) -> Self {
        Self {
            client: hub.updates(),
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// One file, asking for one byte more than `max_len` so endless data is detectable.
    fn get(&mut self, metadata: bool, name: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let request = GetFileRequest {
            name: name.to_owned(),
            max_length: max_len.saturating_add(1),
        };
        let mut client = self.client.clone();
        let path = name.to_owned();
        self.rt.block_on(async move {
            let response = if metadata {
                client.get_metadata(request).await
            } else {
                client.get_target(request).await
            };
            let mut stream = match response {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => {
                    return Err(FetchError::NotFound { path });
                }
                Err(s) => {
                    return Err(FetchError::Transport {
                        path,
                        reason: s.to_string(),
                    });
                }
            };
            let mut bytes = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(piece)) => {
                        assert!(piece.data.len() <= 64 * 1024, "pieces of at most 64 KiB");
                        bytes.extend_from_slice(&piece.data);
                    }
                    Ok(None) => return Ok(bytes),
                    Err(s) => {
                        return Err(FetchError::Transport {
                            path,
                            reason: s.to_string(),
                        });
                    }
                }
            }
        })
    }
}

impl MetadataSource for GrpcSource {
    fn fetch_metadata(
        &mut self,
        file_name: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError> {
        Ok(Box::new(Cursor::new(self.get(true, file_name, max_len)?)))
    }
}

impl TargetSource for GrpcSource {
    fn fetch_target(&mut self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, FetchError> {
        Ok(Box::new(Cursor::new(self.get(false, path, max_len)?)))
    }
}

/// A TUF client whose trusted metadata lives in `dir`, initialised with `root` if `dir`
/// holds none yet.
pub(crate) fn tuf_client(dir: &Path, root: &[u8]) -> Client<DirStore> {
    let mut client = Client::new(DirStore::new(dir), Limits::default());
    if !dir.join("root.json").exists() {
        client.init(root).unwrap();
    }
    client
}

/// Refreshes the client in `dir` over the hub and looks up firmware `name`; returns the
/// firmware and its verified chunk index.
pub(crate) async fn fetch_firmware(
    hub: &HubClient,
    dir: PathBuf,
    root: Vec<u8>,
    name: &str,
) -> Result<(FirmwareTarget, Vec<u8>), bauxite_forge::Error> {
    let mut source = GrpcSource::new(hub);
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut client = tuf_client(&dir, &root);
        client.refresh(&mut source, jiff::Timestamp::now())?;
        let fw = client.find_firmware(&mut source, &name)?;
        let index = client.fetch_target_bytes(&mut source, &fw.index)?;
        Ok((fw, index))
    })
    .await
    .unwrap()
}

/// The version of the root the client in `dir` trusts after a refresh over the hub.
pub(crate) async fn refreshed_root_version(hub: &HubClient, dir: PathBuf, root: Vec<u8>) -> u64 {
    let mut source = GrpcSource::new(hub);
    tokio::task::spawn_blocking(move || {
        let mut client = tuf_client(&dir, &root);
        client.refresh(&mut source, jiff::Timestamp::now()).unwrap();
        let trusted: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("root.json")).unwrap()).unwrap();
        trusted["signed"]["version"].as_u64().unwrap()
    })
    .await
    .unwrap()
}
