//! The OS fingerprint: a BLAKE3 hash over `/etc/os-release`, `/usr/lib/os-release`
//! (when present) and the kernel release. Any change to any input — including a
//! kernel-only update — changes the hash. Hashing, comparing and (de)serialising the
//! stored record are pure; [`OsSources::read`] is the only IO.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::FingerprintError;

/// Domain separation for the composite hash, so it never collides with another BLAKE3 use.
const HASH_CONTEXT: &str = "bauxite 2026 edge os fingerprint v1";

/// A BLAKE3 composite hash, shown as 64 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompositeHash(pub [u8; 32]);

impl fmt::Display for CompositeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for CompositeHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("composite_hash {s:?} is not 64 hex characters"))?;
        Ok(Self(out))
    }
}

/// The number of OS replacements this node has survived; starts at 0 on first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BootEpoch(pub u64);

impl BootEpoch {
    /// The epoch after a reconstruction; `None` on overflow.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for BootEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The raw inputs of a fingerprint, already read from the OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsInputs {
    /// Bytes of `/etc/os-release`.
    pub os_release: Vec<u8>,
    /// Bytes of `/usr/lib/os-release`, `None` when absent.
    pub usr_lib_os_release: Option<Vec<u8>>,
    /// `uname().release`.
    pub uname_release: String,
}

impl OsInputs {
    /// The composite hash. Each input is framed with a label and its length, so bytes
    /// moving from one input to the next (or a file appearing empty) change the hash.
    pub fn composite_hash(&self) -> CompositeHash {
        let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        frame(&mut h, b"os_release", Some(&self.os_release));
        frame(
            &mut h,
            b"usr_lib_os_release",
            self.usr_lib_os_release.as_deref(),
        );
        frame(
            &mut h,
            b"uname_release",
            Some(self.uname_release.as_bytes()),
        );
        CompositeHash(*h.finalize().as_bytes())
    }
}

fn frame(h: &mut blake3::Hasher, label: &[u8], value: Option<&[u8]>) {
    h.update(&(label.len() as u64).to_le_bytes());
    h.update(label);
    match value {
        None => {
            h.update(&[0]);
        }
        Some(v) => {
            h.update(&[1]);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
    }
}

/// The stored fingerprint: `bootstrap/os_fingerprint.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintRecord {
    /// Hash over the OS inputs.
    pub composite_hash: CompositeHash,
    /// `/etc/os-release` as text (lossy UTF-8), for humans.
    pub os_release: String,
    /// The kernel release.
    pub uname_release: String,
    /// The boot epoch this fingerprint belongs to.
    pub boot_epoch: BootEpoch,
    /// When it was captured (UTC, whole seconds).
    pub captured_at: OffsetDateTime,
}

/// The on-disk shape; field order is the order written.
#[derive(Serialize, Deserialize)]
pub(crate) struct RawRecord {
    composite_hash: String,
    os_release: String,
    uname_release: String,
    boot_epoch: u64,
    captured_at: String,
}

impl FingerprintRecord {
    /// A record for `inputs` at `epoch`, captured at `now`.
    pub fn capture(inputs: &OsInputs, boot_epoch: BootEpoch, now: OffsetDateTime) -> Self {
        Self {
            composite_hash: inputs.composite_hash(),
            os_release: String::from_utf8_lossy(&inputs.os_release).into_owned(),
            uname_release: inputs.uname_release.clone(),
            boot_epoch,
            captured_at: whole_seconds_utc(now),
        }
    }

    /// Parses the stored JSON; never panics on arbitrary bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawRecord) -> Result<Self, String> {
        Ok(Self {
            composite_hash: raw.composite_hash.parse()?,
            os_release: raw.os_release,
            uname_release: raw.uname_release,
            boot_epoch: BootEpoch(raw.boot_epoch),
            captured_at: OffsetDateTime::parse(&raw.captured_at, &Rfc3339)
                .map_err(|e| format!("captured_at {:?}: {e}", raw.captured_at))?,
        })
    }

    pub(crate) fn to_raw(&self) -> RawRecord {
        RawRecord {
            composite_hash: self.composite_hash.to_string(),
            os_release: self.os_release.clone(),
            uname_release: self.uname_release.clone(),
            boot_epoch: self.boot_epoch.0,
            captured_at: rfc3339(self.captured_at),
        }
    }

    /// The JSON value, as stored and embedded in epoch evidence.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self.to_raw()).unwrap_or_default()
    }

    /// Parses the record from a JSON value (as embedded in evidence).
    pub fn from_value(v: serde_json::Value) -> Result<Self, String> {
        let raw: RawRecord = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Self::from_raw(raw)
    }

    /// Pretty JSON bytes with a trailing newline, as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        pretty(&self.to_raw())
    }
}

/// Pretty-printed JSON with a trailing newline.
pub(crate) fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// RFC 3339 text of a timestamp; empty if the year is out of RFC 3339's range.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn whole_seconds_utc(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t)
}

/// What the stored fingerprint says about the live OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No fingerprint stored: initialise at epoch 0.
    FirstRun,
    /// The OS is unchanged.
    Unchanged {
        /// The stored epoch.
        epoch: BootEpoch,
    },
    /// The OS changed: reconstruct and move to `next_epoch`.
    UpdateDetected {
        /// The stored hash.
        previous: CompositeHash,
        /// The live hash.
        current: CompositeHash,
        /// Whether the kernel release differs from the stored one.
        kernel_changed: bool,
        /// The stored epoch.
        epoch: BootEpoch,
    },
}

/// Compares the stored record (if any) with the live inputs.
pub fn decide(stored: Option<&FingerprintRecord>, live: &OsInputs) -> Decision {
    let current = live.composite_hash();
    match stored {
        None => Decision::FirstRun,
        Some(s) if s.composite_hash == current => Decision::Unchanged {
            epoch: s.boot_epoch,
        },
        Some(s) => Decision::UpdateDetected {
            previous: s.composite_hash,
            current,
            kernel_changed: s.uname_release != live.uname_release,
            epoch: s.boot_epoch,
        },
    }
}

/// Where the fingerprint inputs come from; tests point these at a fake OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsSources {
    /// Path of the primary os-release file.
    pub os_release: PathBuf,
    /// Path of the vendor os-release file (skipped if absent).
    pub usr_lib_os_release: PathBuf,
    /// A fixed kernel release; `None` asks `uname`.
    pub kernel_release: Option<String>,
}

impl Default for OsSources {
    fn default() -> Self {
        Self {
            os_release: PathBuf::from("/etc/os-release"),
            usr_lib_os_release: PathBuf::from("/usr/lib/os-release"),
            kernel_release: None,
        }
    }
}

impl OsSources {
    /// Reads the live inputs.
    pub fn read(&self) -> Result<OsInputs, FingerprintError> {
        let os_release = read_input(&self.os_release)?.ok_or_else(|| FingerprintError::Input {
            path: self.os_release.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let usr_lib_os_release = read_input(&self.usr_lib_os_release)?;
        let uname_release = match &self.kernel_release {
            Some(k) => k.clone(),
            None => crate::sys::kernel_release()
                .map_err(|reason| FingerprintError::Kernel { reason })?,
        };
        Ok(OsInputs {
            os_release,
            usr_lib_os_release,
            uname_release,
        })
    }
}

fn read_input(path: &Path) -> Result<Option<Vec<u8>>, FingerprintError> {
    crate::fsutil::read_optional(path).map_err(|source| FingerprintError::Input {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs(os: &str, kernel: &str) -> OsInputs {
        OsInputs {
            os_release: os.as_bytes().to_vec(),
            usr_lib_os_release: None,
            uname_release: kernel.into(),
        }
    }

    #[test]
    fn kernel_only_change_changes_hash() {
        let a = inputs("ID=ubuntu\n", "6.8.0-100-generic");
        let b = inputs("ID=ubuntu\n", "6.8.0-101-generic");
        assert_ne!(a.composite_hash(), b.composite_hash());
        let rec = FingerprintRecord::capture(&a, BootEpoch(0), OffsetDateTime::UNIX_EPOCH);
        assert!(matches!(
            decide(Some(&rec), &b),
            Decision::UpdateDetected {
                kernel_changed: true,
                ..
            }
        ));
    }

    #[test]
    fn framing_separates_inputs() {
        let a = inputs("ID=ubuntu\n6", ".8");
        let b = inputs("ID=ubuntu\n", "6.8");
        assert_ne!(a.composite_hash(), b.composite_hash());
        let mut c = a.clone();
        c.usr_lib_os_release = Some(Vec::new());
        assert_ne!(a.composite_hash(), c.composite_hash());
    }

    #[test]
    fn record_round_trips() {
        let now = OffsetDateTime::from_unix_timestamp(1_772_618_400).unwrap();
        let rec = FingerprintRecord::capture(&inputs("ID=x\n", "6.1"), BootEpoch(3), now);
        let back = FingerprintRecord::parse(&rec.to_json()).unwrap();
        assert_eq!(back, rec);
        let text = String::from_utf8(rec.to_json()).unwrap();
        assert!(
            text.contains("\"captured_at\": \"2026-03-04T10:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn truncated_record_is_an_error() {
        let rec = FingerprintRecord::capture(
            &inputs("ID=x\n", "6.1"),
            BootEpoch(3),
            OffsetDateTime::UNIX_EPOCH,
        );
        let json = rec.to_json();
        for cut in 0..json.len() - 2 {
            assert!(FingerprintRecord::parse(&json[..cut]).is_err(), "cut {cut}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = FingerprintRecord::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_jsonish(hash in ".{0,80}", at in ".{0,40}", epoch in any::<u64>()) {
            let v = serde_json::json!({"composite_hash": hash, "os_release": "", "uname_release": "",
                "boot_epoch": epoch, "captured_at": at});
            let _ = FingerprintRecord::parse(&serde_json::to_vec(&v).unwrap());
        }
    }
}
