//! The signed runtime manifest. The signature is checked over the raw bytes before a
//! single byte is parsed; parsing then yields only typed operations whose paths are
//! lexically confined to their roots. Everything here is pure.

use std::path::{Component, Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

use crate::error::{OpRejection, ReconstructionError};

/// Length of a raw Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a raw Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// The only manifest version understood.
pub const MANIFEST_VERSION: &str = "1";

/// Characters a shell would interpret; any of them in a path rejects the operation.
const SHELL_METACHARS: &[char] = &[
    ';', '|', '&', '$', '`', '>', '<', '(', ')', '{', '}', '[', ']', '*', '?', '!', '~', '\'', '"',
    '\\', '#', ' ', '\t', '\n', '\r', '\0',
];

/// Top-level paths under the state root that operations may never write.
const RESERVED_DST: &[&str] = &["bootstrap", "identity", "epoch", "runtime/manifest.json"];

/// Parses a raw 32-byte Ed25519 public key.
pub fn parse_verify_key(bytes: &[u8]) -> Result<VerifyingKey, String> {
    let arr: [u8; PUBLIC_KEY_LEN] = bytes
        .try_into()
        .map_err(|_| format!("expected {PUBLIC_KEY_LEN} raw bytes, found {}", bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Verifies `sig` (raw 64 bytes) over `manifest`; `manifest_path`/`sig_path` name errors.
pub fn verify_signature(
    key: &VerifyingKey,
    manifest: &[u8],
    sig: &[u8],
    manifest_path: &Path,
    sig_path: &Path,
) -> Result<(), ReconstructionError> {
    let arr: [u8; SIGNATURE_LEN] =
        sig.try_into()
            .map_err(|_| ReconstructionError::SignatureLength {
                path: sig_path.to_path_buf(),
                len: sig.len(),
            })?;
    key.verify_strict(manifest, &Signature::from_bytes(&arr))
        .map_err(|_| ReconstructionError::BadSignature {
            path: manifest_path.to_path_buf(),
        })
}

/// A typed reconstruction operation; paths are relative to their roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Copy `src` (under `runtime/binaries/`) to `dst` (under the state root).
    CopyBinary {
        /// Source, relative to `runtime/binaries/`.
        src: PathBuf,
        /// Destination, relative to the state root.
        dst: PathBuf,
        /// BLAKE3 the source must have.
        expected_hash: Option<[u8; 32]>,
    },
    /// Check that `src` (under `runtime/binaries/`) is readable (and matches a hash).
    VerifyConfig {
        /// Source, relative to `runtime/binaries/`.
        src: PathBuf,
        /// BLAKE3 the file must have.
        expected_hash: Option<[u8; 32]>,
    },
}

impl Operation {
    /// The op's name in the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CopyBinary { .. } => "copy_binary",
            Self::VerifyConfig { .. } => "verify_config",
        }
    }
}

/// A verified, validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Manifest version (always [`MANIFEST_VERSION`]).
    pub version: String,
    /// The main binary, relative to `runtime/binaries/` (hashed into epoch evidence).
    pub binary_path: Option<PathBuf>,
    /// Operations, in execution order.
    pub operations: Vec<Operation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    version: String,
    #[serde(default)]
    binary_path: Option<String>,
    operations: Vec<RawOp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    op: String,
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    dst: Option<String>,
    #[serde(default)]
    expected_hash: Option<String>,
}

/// The absolute roots operations are confined to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// The state root (destinations).
    pub state_root: PathBuf,
    /// `runtime/binaries/` (sources).
    pub binaries: PathBuf,
}

/// Parses already-verified manifest bytes and validates every operation; the first
/// rejection aborts, so nothing runs unless everything is acceptable.
pub fn parse_manifest(bytes: &[u8], roots: &Roots) -> Result<Manifest, ReconstructionError> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ReconstructionError::ManifestMalformed {
            reason: e.to_string(),
        })?;
    if raw.version != MANIFEST_VERSION {
        return Err(ReconstructionError::ManifestMalformed {
            reason: format!("version {:?} is not {MANIFEST_VERSION:?}", raw.version),
        });
    }
    let binary_path = match raw.binary_path.as_deref() {
        None | Some("") => None,
        Some(b) => Some(
            confine("binary_path", b, &roots.binaries).map_err(|rejection| {
                ReconstructionError::ManifestMalformed {
                    reason: rejection.to_string(),
                }
            })?,
        ),
    };
    let operations = raw
        .operations
        .into_iter()
        .enumerate()
        .map(|(index, op)| {
            validate_op(op, roots)
                .map_err(|rejection| ReconstructionError::Rejected { index, rejection })
        })
        .collect::<Result<_, _>>()?;
    Ok(Manifest {
        version: raw.version,
        binary_path,
        operations,
    })
}

fn validate_op(op: RawOp, roots: &Roots) -> Result<Operation, OpRejection> {
    let expected_hash = op.expected_hash.as_deref().map(parse_hash).transpose()?;
    match op.op.as_str() {
        "copy_binary" => {
            let src = op.src.ok_or(OpRejection::MissingField("src"))?;
            let dst = op.dst.ok_or(OpRejection::MissingField("dst"))?;
            let src = confine("src", &src, &roots.binaries)?;
            let dst = confine("dst", &dst, &roots.state_root)?;
            if RESERVED_DST.iter().any(|r| dst.starts_with(r))
                || dst.starts_with("runtime/manifest.json.sig")
            {
                return Err(OpRejection::Reserved {
                    value: dst.display().to_string(),
                });
            }
            Ok(Operation::CopyBinary {
                src,
                dst,
                expected_hash,
            })
        }
        "verify_config" => {
            if op.dst.is_some() {
                return Err(OpRejection::UnexpectedField("dst"));
            }
            let src = op.src.ok_or(OpRejection::MissingField("src"))?;
            Ok(Operation::VerifyConfig {
                src: confine("src", &src, &roots.binaries)?,
                expected_hash,
            })
        }
        other => Err(OpRejection::UnsupportedOp(other.to_owned())),
    }
}

fn parse_hash(s: &str) -> Result<[u8; 32], OpRejection> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| OpRejection::BadHash(s.to_owned()))?;
    Ok(out)
}

/// Lexically confines `value` to `root`: no shell metacharacters, no `..`, and an
/// absolute path must lie under `root`. Returns the path relative to `root`.
pub fn confine(field: &'static str, value: &str, root: &Path) -> Result<PathBuf, OpRejection> {
    if let Some(ch) = value
        .chars()
        .find(|c| SHELL_METACHARS.contains(c) || c.is_control())
    {
        return Err(OpRejection::ShellMetachar {
            field,
            value: value.to_owned(),
            ch,
        });
    }
    let path = Path::new(value);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(OpRejection::ParentDir {
            field,
            value: value.to_owned(),
        });
    }
    let rel = if path.is_absolute() {
        path.strip_prefix(root)
            .map_err(|_| OpRejection::OutsideRoot {
                field,
                value: value.to_owned(),
                root: root.to_path_buf(),
            })?
            .to_path_buf()
    } else {
        path.to_path_buf()
    };
    let rel: PathBuf = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        return Err(OpRejection::Empty { field });
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    fn roots() -> Roots {
        Roots {
            state_root: PathBuf::from("/state"),
            binaries: PathBuf::from("/state/runtime/binaries"),
        }
    }

    fn reject(json: &str) -> OpRejection {
        match parse_manifest(json.as_bytes(), &roots()).unwrap_err() {
            ReconstructionError::Rejected { rejection, .. } => rejection,
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn seed_manifest_parses() {
        let m = parse_manifest(
            br#"{"version":"1","binary_path":"edged","operations":[]}"#,
            &roots(),
        )
        .unwrap();
        assert_eq!(m.binary_path, Some(PathBuf::from("edged")));
        assert!(m.operations.is_empty());
    }

    #[test]
    fn unsupported_op_is_rejected() {
        let r = reject(
            r#"{"version":"1","operations":[{"op":"exec_shell","src":"/bin/sh","dst":"/tmp/x"}]}"#,
        );
        assert_eq!(r, OpRejection::UnsupportedOp("exec_shell".into()));
    }

    #[test]
    fn src_outside_binaries_is_rejected() {
        let r = reject(
            r#"{"version":"1","operations":[{"op":"copy_binary","src":"/usr/bin/ls","dst":"bin/ls"}]}"#,
        );
        assert!(
            matches!(r, OpRejection::OutsideRoot { field: "src", .. }),
            "{r}"
        );
    }

    #[test]
    fn dst_outside_state_root_is_rejected() {
        let r = reject(
            r#"{"version":"1","operations":[{"op":"copy_binary","src":"edged","dst":"/usr/bin/edged"}]}"#,
        );
        assert!(
            matches!(r, OpRejection::OutsideRoot { field: "dst", .. }),
            "{r}"
        );
    }

    #[test]
    fn dot_dot_and_metachars_are_rejected() {
        let r = reject(
            r#"{"version":"1","operations":[{"op":"copy_binary","src":"../../etc/passwd","dst":"x"}]}"#,
        );
        assert!(matches!(r, OpRejection::ParentDir { .. }));
        for bad in ["a;b", "a|b", "$(x)", "a`b`", "a&b", "a>b", "a<b"] {
            let json = format!(
                r#"{{"version":"1","operations":[{{"op":"copy_binary","src":"edged","dst":"{bad}"}}]}}"#
            );
            assert!(
                matches!(reject(&json), OpRejection::ShellMetachar { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn reserved_destinations_are_rejected() {
        let r = reject(
            r#"{"version":"1","operations":[{"op":"copy_binary","src":"k","dst":"identity/manifest-verify.pub"}]}"#,
        );
        assert!(matches!(r, OpRejection::Reserved { .. }));
    }

    #[test]
    fn absolute_paths_inside_roots_are_relativised() {
        let m = parse_manifest(
            br#"{"version":"1","operations":[{"op":"copy_binary","src":"/state/runtime/binaries/edged","dst":"/state/runtime/active/edged"}]}"#,
            &roots(),
        )
        .unwrap();
        assert_eq!(
            m.operations[0],
            Operation::CopyBinary {
                src: "edged".into(),
                dst: "runtime/active/edged".into(),
                expected_hash: None
            }
        );
    }

    #[test]
    fn signature_checks() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let vk = sk.verifying_key();
        let msg = b"{}";
        let sig = sk.sign(msg).to_bytes();
        let p = Path::new("m");
        assert!(verify_signature(&vk, msg, &sig, p, p).is_ok());
        assert!(matches!(
            verify_signature(&vk, b"{ }", &sig, p, p),
            Err(ReconstructionError::BadSignature { .. })
        ));
        assert!(matches!(
            verify_signature(&vk, msg, &sig[..63], p, p),
            Err(ReconstructionError::SignatureLength { len: 63, .. })
        ));
        assert!(parse_verify_key(&[1; 31]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_manifest(&bytes, &roots());
        }

        #[test]
        fn validate_never_panics(op in ".{0,16}", src in ".{0,40}", dst in ".{0,40}", h in ".{0,70}") {
            let v = serde_json::json!({"version":"1","binary_path": src.clone(),
                "operations":[{"op": op, "src": src, "dst": dst, "expected_hash": h}]});
            let _ = parse_manifest(&serde_json::to_vec(&v).unwrap(), &roots());
        }

        #[test]
        fn confined_paths_stay_inside(value in "[a-z/.]{0,30}") {
            if let Ok(rel) = confine("dst", &value, Path::new("/state")) {
                prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(Path::new("/state").join(&rel).starts_with("/state"));
            }
        }
    }
}
