//! Firmware target metadata: the `custom.bauxite` object a firmware target carries.
//!
//! ```json
//! {"bauxite": {"format": 1, "version": "2.0.0", "chunk_size": 65536,
//!              "chunk_count": 49152, "chunk_index": "firmware/2.0.0.chunks"}}
//! ```
//!
//! Invariant: a parsed [`FirmwareInfo`] is self-consistent (chunk count covers the signed
//! image length exactly, the chunk index is its own target of `32 * chunk_count` bytes),
//! so the transfer can trust every chunk hash the index holds once the index target
//! itself passed its signed length and hashes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{Client, TargetInfo};
use super::hashes::Hashes;
use super::refusal::Refusal;
use super::repo::Repository;
use super::source::MetadataSource;
use super::store::MetadataStore;
use crate::error::Error;

/// Key of the object inside a target's `custom`.
pub const CUSTOM_KEY: &str = "bauxite";
/// The format this code reads and writes.
pub const FORMAT: u32 = 1;
/// Chunk size of every Bauxite package: 64 KiB.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// Bytes per chunk hash in a chunk index (BLAKE3).
pub const CHUNK_HASH_LEN: u64 = 32;

/// Firmware description signed in a target's `custom` metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareInfo {
    /// Format of this object ([`FORMAT`]).
    pub format: u32,
    /// Firmware version, dotted numbers (`2.0.0`).
    pub version: String,
    /// Chunk size in bytes ([`CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Number of chunks: the image length divided by the chunk size, rounded up.
    pub chunk_count: u64,
    /// Target name of the chunk index (concatenated 32-byte BLAKE3 hashes, in order).
    pub chunk_index: String,
}

fn bad(target: &str, reason: impl Into<String>) -> Refusal {
    Refusal::BadFirmwareInfo {
        target: target.to_owned(),
        reason: reason.into(),
    }
}

impl FirmwareInfo {
    /// Describes an image of `image_length` bytes in [`CHUNK_SIZE`] chunks.
    pub fn new(version: &str, image_length: u64, chunk_index: &str) -> Self {
        Self {
            format: FORMAT,
            version: version.to_owned(),
            chunk_size: CHUNK_SIZE,
            chunk_count: image_length.div_ceil(u64::from(CHUNK_SIZE)),
            chunk_index: chunk_index.to_owned(),
        }
    }

    /// Reads and checks the object from a target's `custom` (`target` names the image,
    /// `image_length` is its signed length).
    pub fn from_custom(
        target: &str,
        custom: Option<&Value>,
        image_length: u64,
    ) -> Result<Self, Refusal> {
        let value = custom
            .and_then(|c| c.get(CUSTOM_KEY))
            .ok_or_else(|| bad(target, format!("has no `custom.{CUSTOM_KEY}` object")))?;
        let info: Self =
            serde_json::from_value(value.clone()).map_err(|e| bad(target, e.to_string()))?;
        info.check(target, image_length)?;
        Ok(info)
    }

    /// The `custom` object to sign for this firmware.
    pub fn to_custom(&self) -> Value {
        serde_json::json!({ CUSTOM_KEY: self })
    }

    /// Checks format, version syntax, chunk size and count against `image_length`.
    pub fn check(&self, target: &str, image_length: u64) -> Result<(), Refusal> {
        if self.format != FORMAT {
            return Err(bad(
                target,
                format!("format {} (this build reads {FORMAT})", self.format),
            ));
        }
        parse_version(&self.version)
            .ok_or_else(|| bad(target, format!("version {:?}", self.version)))?;
        if self.chunk_size != CHUNK_SIZE {
            return Err(bad(
                target,
                format!("chunk_size {} (must be {CHUNK_SIZE})", self.chunk_size),
            ));
        }
        let expected = image_length.div_ceil(u64::from(self.chunk_size));
        if self.chunk_count != expected {
            return Err(bad(
                target,
                format!(
                    "chunk_count {} for {image_length} bytes (must be {expected})",
                    self.chunk_count
                ),
            ));
        }
        if self.chunk_index.is_empty() || self.chunk_index == target {
            return Err(bad(target, "chunk_index must name another target"));
        }
        Ok(())
    }

    /// Signed length the chunk index target must have.
    pub fn index_length(&self) -> u64 {
        self.chunk_count * CHUNK_HASH_LEN
    }

    /// Refuses this firmware unless it is newer than `installed` (downgrade protection).
    pub fn check_newer_than(&self, installed: &str) -> Result<(), Refusal> {
        let downgrade = || Refusal::Downgrade {
            installed: installed.to_owned(),
            offered: self.version.clone(),
        };
        let offered = parse_version(&self.version).ok_or_else(downgrade)?;
        let current = parse_version(installed).ok_or_else(downgrade)?;
        if offered > current {
            Ok(())
        } else {
            Err(downgrade())
        }
    }
}

/// Parses `1.2.3` (one to four dot-separated numbers) into comparable parts, padded so
/// that `2.0` and `2.0.0` compare equal.
pub fn parse_version(v: &str) -> Option<[u64; 4]> {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut out = [0u64; 4];
    for (slot, part) in out.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some(out)
}

/// A firmware image and its chunk index, as trusted metadata describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareTarget {
    /// The image target.
    pub image: TargetInfo,
    /// Its `custom.bauxite` description.
    pub info: FirmwareInfo,
    /// The chunk index target (`32 * chunk_count` bytes of BLAKE3 chunk hashes).
    pub index: TargetInfo,
}

impl<S: MetadataStore> Client<S> {
    /// Looks up firmware `name` and its chunk index, checking that they agree: the index
    /// is found through the same delegation search and has exactly the signed length the
    /// chunk count requires.
    pub fn find_firmware(
        &mut self,
        source: &mut dyn MetadataSource,
        name: &str,
    ) -> Result<FirmwareTarget, Error> {
        let image = self.find_target(source, name)?;
        let info = FirmwareInfo::from_custom(name, image.custom.as_ref(), image.length)?;
        let index = self.find_target(source, &info.chunk_index)?;
        if index.length != info.index_length() {
            return Err(bad(
                name,
                format!(
                    "chunk index {} is {} bytes, {} chunks need {}",
                    index.name,
                    index.length,
                    info.chunk_count,
                    info.index_length()
                ),
            )
            .into());
        }
        Ok(FirmwareTarget { image, info, index })
    }
}

impl Repository {
    /// Publishes-to-be a firmware image described by the caller (`image_length`,
    /// `image_hashes`, never read here, so a lazily generated image works) with its chunk
    /// index `chunk_index` (written as target `<image>.chunks`). Returns the description
    /// signed in the image's `custom`.
    pub fn add_firmware(
        &mut self,
        role: &str,
        image: &str,
        version: &str,
        image_length: u64,
        image_hashes: &Hashes,
        chunk_index: &[u8],
    ) -> Result<FirmwareInfo, Error> {
        let index_name = format!("{image}.chunks");
        let info = FirmwareInfo::new(version, image_length, &index_name);
        info.check(image, image_length)?;
        if chunk_index.len() as u64 != info.index_length() {
            return Err(Error::TufRepo {
                reason: format!(
                    "chunk index of {} bytes for {} chunks (needs {})",
                    chunk_index.len(),
                    info.chunk_count,
                    info.index_length()
                ),
            });
        }
        self.add_target(role, &index_name, chunk_index, None)?;
        self.add_target_meta(
            role,
            image,
            image_length,
            image_hashes,
            Some(info.to_custom()),
        )?;
        Ok(info)
    }
}
