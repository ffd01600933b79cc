//! Update hosting: what ties the repository on disk, the store and the mesh node together
//! for the admin calls (packages, the offline root) and the re-signing timer.
//!
//! Invariant: file and signing work runs on blocking threads (`spawn_blocking`), so a
//! package of any size never stalls the hub's other calls; a package is published in the
//! signed metadata before the store records it, and served on the mesh only after both.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::spawn_blocking;

use crate::clock::UnixTime;
use crate::hub::updates::target_name;
use crate::hub::{Caller, Hub};
use crate::mesh::MeshHandle;
use crate::store::{PackageImage, PackageRecord};
use crate::updates::UpdateRepo;
use crate::updates::build::{self, Built};
use crate::updates::resign::CHECK_EVERY;
use crate::{Error, Result};

/// Where a new package's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewImage {
    /// A file on the hub's machine (absolute path), copied into the data dir.
    File(PathBuf),
    /// The deterministic virtual image.
    Virtual {
        /// Length in bytes.
        size: u64,
        /// Generator seed.
        seed: u64,
    },
}

/// The repository, the hub and its mesh node, for update hosting.
#[derive(Clone)]
pub struct Hosting {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The TUF repository.
    pub repo: Arc<UpdateRepo>,
    /// The mesh node serving images.
    pub mesh: MeshHandle,
}

fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| Error::Io {
        action: "run",
        path: "update repository task".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

impl Hosting {
    /// Builds, publishes, records and serves a package. A 3 GiB virtual image takes a
    /// few seconds of one core (see docs/benchmarks.md), on a blocking thread.
    pub async fn create_package(
        &self,
        caller: Caller,
        name: String,
        version: String,
        image: NewImage,
    ) -> Result<PackageRecord> {
        self.hub.check_new_package(&name, &version)?;
        let images = self.repo.images_dir();
        let started = bauxite_conduit::io::clock::now();
        let (built, image) = joined(
            spawn_blocking(move || -> Result<(Built, PackageImage)> {
                match image {
                    NewImage::File(path) => {
                        let (built, file) = build::import_file(&path, &images)?;
                        Ok((built, PackageImage::File { file }))
                    }
                    NewImage::Virtual { size, seed } => Ok((
                        build::build_virtual(size, seed)?,
                        PackageImage::Virtual { size, seed },
                    )),
                }
            })
            .await,
        )?;
        let target = target_name(&name, &version);
        let repo = self.repo.clone();
        let (t, v, b) = (target.clone(), version.clone(), built.clone());
        let published = joined(
            spawn_blocking(move || repo.publish_firmware(&t, &v, &b, UnixTime::now())).await,
        )?;
        let record = PackageRecord {
            name,
            version,
            target,
            image,
            length: built.length,
            chunk_count: built.chunk_count(),
            index_digest: built.digest.0,
            created_at: UnixTime::now(),
            revoked_at: None,
        };
        if let Err(e) = self
            .hub
            .record_package(UnixTime::now(), caller, record.clone())
        {
            // Not recorded, so not offered: take it out of the metadata again.
            let repo = self.repo.clone();
            let target = record.target.clone();
            let _ = spawn_blocking(move || repo.remove_firmware(&target, UnixTime::now())).await;
            return Err(e);
        }
        self.mesh
            .add_image(&record, &self.repo.images_dir())
            .await?;
        tracing::info!(
            package = %record.name, version = %record.version, kind = record.image.kind(),
            bytes = record.length, chunks = record.chunk_count,
            targets_version = published.targets.get("targets").copied().unwrap_or_default(),
            took_ms = started.elapsed().as_millis() as u64,
            "package created"
        );
        Ok(record)
    }

    /// Removes a package's targets from the signed metadata, records the revocation and
    /// stops serving its image.
    pub async fn revoke_package(
        &self,
        caller: Caller,
        name: &str,
        version: &str,
    ) -> Result<PackageRecord> {
        let record = self
            .hub
            .package(name, version)
            .ok_or_else(|| Error::UnknownPackage {
                name: name.to_owned(),
                version: version.to_owned(),
            })?;
        if record.revoked_at.is_some() {
            return Ok(record);
        }
        let repo = self.repo.clone();
        let target = record.target.clone();
        joined(spawn_blocking(move || repo.remove_firmware(&target, UnixTime::now())).await)?;
        let record = self
            .hub
            .revoke_package(UnixTime::now(), caller, name, version)?;
        self.mesh.remove_image(&record).await?;
        tracing::info!(package = %name, %version, "package revoked");
        Ok(record)
    }

    /// The unsigned next root (see [`UpdateRepo::export_root`]).
    pub async fn export_root(
        &self,
        new_root_keys: Vec<[u8; 32]>,
        threshold: u64,
    ) -> Result<Vec<u8>> {
        let repo = self.repo.clone();
        joined(
            spawn_blocking(move || repo.export_root(UnixTime::now(), &new_root_keys, threshold))
                .await,
        )
    }

    /// Imports and publishes a root signed offline; audited.
    pub async fn import_root(&self, caller: Caller, signed: Vec<u8>) -> Result<u64> {
        let repo = self.repo.clone();
        let version =
            joined(spawn_blocking(move || repo.import_root(&signed, UnixTime::now())).await)?;
        self.hub.record_update_event(
            UnixTime::now(),
            caller,
            "update.root",
            format!("TUF root version {version} imported and published"),
        )?;
        Ok(version)
    }

    /// Re-signs the online roles before they expire, every [`CHECK_EVERY`], until the hub
    /// stops.
    pub async fn resign_forever(self) {
        let mut closing = self.hub.closing();
        loop {
            let repo = self.repo.clone();
            match joined(spawn_blocking(move || repo.refresh(UnixTime::now())).await) {
                Ok(plan) => {
                    if plan.publish {
                        tracing::info!(
                            targets = plan.targets,
                            "update metadata re-signed before expiry"
                        );
                    }
                    if plan.root_expiring {
                        tracing::warn!(
                            "the update root expires within 30 days: run `bauxite-dispatch package keys export-root`, sign it offline, import it"
                        );
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "re-signing update metadata failed; retrying")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = crate::server::feeds::stopping(&mut closing) => return,
            }
        }
    }
}
