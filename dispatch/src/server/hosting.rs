//! Update hosting: what ties the repository on disk, the store and the mesh node together
//! for the admin calls (packages, the offline root) and the re-signing timer.
//!
//! Invariant: file and signing work runs on blocking threads (`spawn_blocking`), so a
//! package of any size never stalls the hub's other calls; a package is published in the
//! signed metadata before the store records it, and served on the mesh only after both;
//! one name and version is built by one call at a time (a second is refused while the
//! first runs, so it can never overwrite or unpublish the first one's targets). A crash
//! between publishing and recording is repaired at the next start ([`reconcile`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::task::spawn_blocking;

use crate::clock::UnixTime;
use crate::hub::updates::target_name;
use crate::hub::{Caller, Hub};
use crate::mesh::MeshHandle;
use crate::store::updates::package_key;
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
    /// Packages being built now, by store key.
    pub building: Arc<Mutex<BTreeSet<Vec<u8>>>>,
}

/// Holds a package's name and version while it is built; released when dropped.
struct Building {
    set: Arc<Mutex<BTreeSet<Vec<u8>>>>,
    key: Vec<u8>,
}

impl Drop for Building {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
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
        let key = package_key(&name, &version);
        if !self
            .building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return Err(Error::PackageExists { name, version });
        }
        let _building = Building {
            set: self.building.clone(),
            key,
        };
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
        remove_copy(&self.repo, &record);
        tracing::info!(package = %name, %version, "package revoked");
        Ok(record)
    }

    /// The unsigned next root (see [`UpdateRepo::export_root`]); audited, so the log shows
    /// every root ceremony from its start.
    pub async fn export_root(
        &self,
        caller: Caller,
        new_root_keys: Vec<[u8; 32]>,
        threshold: u64,
    ) -> Result<Vec<u8>> {
        let repo = self.repo.clone();
        let rotating = new_root_keys.len();
        let json = joined(
            spawn_blocking(move || repo.export_root(UnixTime::now(), &new_root_keys, threshold))
                .await,
        )?;
        let detail = if rotating == 0 {
            "next TUF root exported for offline signing".to_owned()
        } else {
            format!(
                "next TUF root exported for offline signing, with {rotating} new root key(s), threshold {threshold}"
            )
        };
        self.hub
            .record_update_event(UnixTime::now(), caller, "update.root_export", detail)?;
        Ok(json)
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

/// Deletes a revoked file package's image copy (the server may still hold it open until
/// its queued jobs end; the bytes go with the last descriptor).
fn remove_copy(repo: &UpdateRepo, record: &PackageRecord) {
    if let PackageImage::File { file } = &record.image
        && let Ok(path) = build::image_path(&repo.images_dir(), file)
        && let Err(error) = std::fs::remove_file(&path)
    {
        tracing::warn!(path = %path.display(), %error, "revoked package's image copy not removed");
    }
}

/// Repairs what a crash between two steps of create or revoke left: targets listed
/// without an active package are unpublished, and an active package whose targets are
/// gone (an interrupted revoke) is recorded as revoked. Runs at start, before the mesh
/// node loads the images it serves.
pub fn reconcile(hub: &Hub, repo: &UpdateRepo) -> Result<()> {
    let packages = hub.packages();
    let active: BTreeSet<String> = packages
        .iter()
        .filter(|p| p.revoked_at.is_none())
        .map(|p| p.target.clone())
        .collect();
    let listed: BTreeSet<String> = repo.listed_targets().into_iter().collect();
    for target in listed.iter().filter(|t| !t.ends_with(".chunks")) {
        if !active.contains(target) {
            tracing::warn!(%target, "unpublishing a target no active package records (an interrupted package create)");
            repo.remove_firmware(target, UnixTime::now())?;
        }
    }
    for p in packages.iter().filter(|p| p.revoked_at.is_none()) {
        if !listed.contains(&p.target) {
            tracing::warn!(package = %p.name, version = %p.version, "completing an interrupted revoke");
            let record = hub.revoke_package_as(UnixTime::now(), "hub", &p.name, &p.version)?;
            remove_copy(repo, &record);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::MeshCidr;
    use crate::pki::HubCa;
    use crate::store::MemoryStore;
    use crate::updates::{KeySeeds, RootKeyOut};

    const T0: UnixTime = UnixTime(1_780_000_000);

    #[test]
    fn reconcile_repairs_an_interrupted_create_and_an_interrupted_revoke() {
        let tmp = tempfile::tempdir().unwrap();
        let seeds = || -> Result<KeySeeds> { Ok([[1; 32], [2; 32], [3; 32], [4; 32]]) };
        let (repo, _) =
            UpdateRepo::open_or_create(tmp.path(), T0, &RootKeyOut::DataDir, seeds).unwrap();
        let hub = Hub::open(
            Box::new(MemoryStore::new()),
            HubCa::generate(T0).unwrap(),
            MeshCidr::default(),
            T0,
        )
        .unwrap();
        let built = build::build_virtual(3 * 65536, 1).unwrap();
        // Create interrupted after the publish: listed, never recorded.
        repo.publish_firmware("fw/1.0.0.img", "1.0.0", &built, T0)
            .unwrap();
        // Revoke interrupted after the unpublish: recorded active, not listed.
        let record = PackageRecord {
            name: "fw".into(),
            version: "2.0.0".into(),
            target: target_name("fw", "2.0.0"),
            image: PackageImage::Virtual {
                size: built.length,
                seed: 1,
            },
            length: built.length,
            chunk_count: built.chunk_count(),
            index_digest: built.digest.0,
            created_at: T0,
            revoked_at: None,
        };
        hub.record_package(T0, Caller::Admin, record).unwrap();
        // A complete package stays as it is.
        repo.publish_firmware("fw/3.0.0.img", "3.0.0", &built, T0)
            .unwrap();
        let mut complete = hub.package("fw", "2.0.0").unwrap();
        complete.version = "3.0.0".into();
        complete.target = target_name("fw", "3.0.0");
        hub.record_package(T0, Caller::Admin, complete).unwrap();

        reconcile(&hub, &repo).unwrap();
        assert_eq!(
            repo.listed_targets(),
            vec!["fw/3.0.0.img".to_owned(), "fw/3.0.0.img.chunks".to_owned()]
        );
        assert!(hub.package("fw", "2.0.0").unwrap().revoked_at.is_some());
        assert!(hub.package("fw", "3.0.0").unwrap().revoked_at.is_none());
        let last = hub.audit_entries().unwrap().pop().unwrap();
        assert_eq!(
            (last.body.actor.as_str(), last.body.action.as_str()),
            ("hub", "package.revoke")
        );
        // Nothing left to repair: a second pass changes nothing.
        let before = hub.audit_entries().unwrap().len();
        reconcile(&hub, &repo).unwrap();
        assert_eq!(hub.audit_entries().unwrap().len(), before);
    }
}
