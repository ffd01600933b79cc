//! `bauxite update tuf-client`: a plain TUF client over HTTP, with exactly the interface
//! of the tuf-conformance suite's client-under-test CLI, so tools that know TUF can check
//! the trust logic of `bauxite-forge` from outside.
//!
//! ```text
//! bauxite update tuf-client --metadata-dir DIR init ROOT_JSON
//! bauxite update tuf-client --metadata-dir DIR --metadata-url URL refresh
//! bauxite update tuf-client --metadata-dir DIR --metadata-url URL --target-name NAME \
//!     [--target-name NAME2 ...] --target-base-url URL --target-dir DIR download
//! ```
//!
//! Metadata is stored under its plain role name (`root.json`, `timestamp.json`, ...,
//! percent-encoded delegated role names), byte for byte as verified; targets are stored
//! in the target directory under their percent-encoded target path.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bauxite_forge::Error;
use bauxite_forge::tuf::{Client, DirStore, FetchError, Limits, MetadataSource, TargetSource};
use jiff::Timestamp;

/// Blocking HTTP(S) source rooted at a base URL, with connect and response timeouts.
pub struct HttpSource {
    base: String,
    agent: ureq::Agent,
}

impl HttpSource {
    /// A source for files under `base_url` (a trailing `/` is optional).
    pub fn new(base_url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .http_status_as_error(true)
            .build();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            agent: config.into(),
        }
    }

    fn get(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, FetchError> {
        let url = format!("{}/{}", self.base, path);
        let transport = |reason: String| FetchError::Transport {
            path: url.clone(),
            reason,
        };
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(403 | 404)) => {
                return Err(FetchError::NotFound { path: url });
            }
            Err(e) => return Err(transport(e.to_string())),
        };
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_len) {
            return Err(FetchError::TooLarge {
                path: url,
                limit: max_len,
            });
        }
        // The client stops reading at max_len + 1 bytes whatever the server sends; the
        // body limit here only has to be above that.
        let reader = response
            .into_body()
            .into_with_config()
            .limit(max_len.saturating_add(1))
            .reader();
        Ok(Box::new(reader))
    }
}

impl MetadataSource for HttpSource {
    fn fetch_metadata(
        &mut self,
        file_name: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError> {
        self.get(file_name, max_len)
    }
}

impl TargetSource for HttpSource {
    fn fetch_target(&mut self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, FetchError> {
        self.get(path, max_len)
    }
}

/// `init`: stores the trusted root after checking it is signed by its own threshold.
pub fn init(metadata_dir: &Path, root_json: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(root_json).map_err(|source| Error::Io {
        action: "read",
        path: root_json.to_path_buf(),
        source,
    })?;
    Client::new(DirStore::new(metadata_dir), Limits::default()).init(&bytes)
}

/// `refresh`: the TUF client workflow for the top-level roles at `now`.
pub fn refresh(metadata_dir: &Path, metadata_url: &str, now: Timestamp) -> Result<(), Error> {
    let mut client = Client::new(DirStore::new(metadata_dir), Limits::default());
    client.refresh(&mut HttpSource::new(metadata_url), now)
}

/// `download`: refresh, then each target in order (stopping at the first failure);
/// returns the files written (or reused from an earlier verified download).
pub fn download(
    metadata_dir: &Path,
    metadata_url: &str,
    target_names: &[String],
    target_base_url: &str,
    target_dir: &Path,
    now: Timestamp,
) -> Result<Vec<PathBuf>, Error> {
    let mut client = Client::new(DirStore::new(metadata_dir), Limits::default());
    let mut metadata = HttpSource::new(metadata_url);
    let mut targets = HttpSource::new(target_base_url);
    client.refresh(&mut metadata, now)?;
    std::fs::create_dir_all(target_dir).map_err(|source| Error::Io {
        action: "create directory",
        path: target_dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(target_names.len());
    for name in target_names {
        let info = client.find_target(&mut metadata, name)?;
        written.push(client.download_target(&mut targets, &info, target_dir)?);
    }
    Ok(written)
}
