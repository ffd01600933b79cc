//! The offline root ceremony on the hub's side: export the unsigned next root, import the
//! root signed elsewhere.
//!
//! Invariant: exporting changes nothing in the live repository (the next root is built
//! from a second copy opened from the published files), so a root that is never signed
//! and imported cannot block later publishes; an import is accepted only when the
//! client's own verifier accepts it as the next root (both thresholds), and it is
//! published at once with a snapshot and timestamp signed by the online keys.

use bauxite_forge::tuf::TopRole;
use bauxite_forge::tuf::repo::keys::public_key;
use bauxite_forge::tuf::repo::{Repository, RoleSpec};

use super::{UpdateRepo, lock, tuf_time};
use crate::Result;
use crate::clock::UnixTime;

impl UpdateRepo {
    /// The next root (version + 1, fresh expiry, no signatures). With `new_root_keys`,
    /// those keys and `threshold` replace the root role's, so the file must then be signed
    /// by the old keys' threshold and the new keys' threshold (a rotation clients follow).
    pub fn export_root(
        &self,
        now: UnixTime,
        new_root_keys: &[[u8; 32]],
        threshold: u64,
    ) -> Result<Vec<u8>> {
        let mut copy = Repository::open(self.dir.join("repo"), self.options.clone())?;
        if !new_root_keys.is_empty() {
            copy.set_role_keys(
                TopRole::Root,
                &RoleSpec {
                    keys: new_root_keys.iter().copied().map(public_key).collect(),
                    threshold,
                },
            )?;
        }
        Ok(copy.export_root(tuf_time(now))?)
    }

    /// Takes a root signed offline and publishes it; returns its version.
    pub fn import_root(&self, signed: &[u8], now: UnixTime) -> Result<u64> {
        let mut repo = lock(&self.repo);
        let version = repo.import_root(signed, tuf_time(now))?;
        repo.publish(&self.keys.signers(), tuf_time(now))?;
        self.set_root(&repo);
        Ok(version)
    }
}
