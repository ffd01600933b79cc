//! Restoring the runtime after an OS update. Order is fixed and fail-closed:
//! verify key → signature over raw bytes → parse and validate every op → resolve every
//! op against the real filesystem (symlinks, hashes) → only then execute. Nothing is
//! written unless every operation passed every check.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest, Operation, Roots};
use super::state_root::StateRoot;
use crate::error::{OpRejection, ReconstructionError};
use crate::fsutil::write_atomic;

/// An operation whose paths were resolved on disk and whose inputs were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOp {
    /// Index in the manifest.
    pub index: usize,
    /// The op name.
    pub op: &'static str,
    /// Canonical source path.
    pub src: PathBuf,
    /// Destination (its parent resolved inside the root), for copies.
    pub dst: Option<PathBuf>,
    /// BLAKE3 the source must still have when the op runs.
    pub expected: Option<[u8; 32]>,
}

/// Whether the state root holds no runtime manifest at all: none of the verify key,
/// `manifest.json` and its signature exists. Such a node (every node `bauxite join`
/// makes) has nothing to reconstruct after an OS change. Any one of the three present,
/// or a path that cannot be inspected, means a manifest is expected, so the full
/// fail-closed verification runs: deleting only the signature or only the key can never
/// skip it.
pub fn runtime_manifest_absent(root: &StateRoot) -> bool {
    [
        root.verify_key_path(),
        root.manifest_path(),
        root.manifest_sig_path(),
    ]
    .iter()
    .all(|path| fs::symlink_metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound))
}

/// Loads the verify key, checks the signature and parses the manifest.
pub fn load_verified_manifest(root: &StateRoot) -> Result<Manifest, ReconstructionError> {
    let key_path = root.verify_key_path();
    let key_bytes = read_or(&key_path, |path| ReconstructionError::MissingVerifyKey {
        path,
    })?;
    let key = manifest::parse_verify_key(&key_bytes).map_err(|reason| {
        ReconstructionError::BadVerifyKey {
            path: key_path.clone(),
            reason,
        }
    })?;
    let (m_path, s_path) = (root.manifest_path(), root.manifest_sig_path());
    let bytes = read_or(&m_path, |path| ReconstructionError::MissingManifest {
        path,
    })?;
    let sig = read_or(&s_path, |path| ReconstructionError::MissingManifest {
        path,
    })?;
    manifest::verify_signature(&key, &bytes, &sig, &m_path, &s_path)?;
    manifest::parse_manifest(&bytes, &roots(root))
}

/// The roots operations are confined to.
pub fn roots(root: &StateRoot) -> Roots {
    Roots {
        state_root: root.root().to_path_buf(),
        binaries: root.binaries_dir(),
    }
}

fn read_or(
    path: &Path,
    missing: impl FnOnce(PathBuf) -> ReconstructionError,
) -> Result<Vec<u8>, ReconstructionError> {
    match crate::fsutil::read_capped(path, crate::fsutil::MAX_SMALL_FILE) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing(path.to_path_buf())),
        Err(source) => Err(ReconstructionError::OpFailed {
            index: 0,
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Resolves every operation on disk; the first rejection aborts before anything runs.
pub fn preflight(
    manifest: &Manifest,
    root: &StateRoot,
) -> Result<Vec<ResolvedOp>, ReconstructionError> {
    let binaries = canonical(&root.binaries_dir(), 0)?;
    manifest
        .operations
        .iter()
        .enumerate()
        .map(|(index, op)| {
            resolve(index, op, &binaries, root.root())
                .map_err(|rejection| ReconstructionError::Rejected { index, rejection })
        })
        .collect()
}

fn canonical(p: &Path, index: usize) -> Result<PathBuf, ReconstructionError> {
    fs::canonicalize(p).map_err(|source| ReconstructionError::OpFailed {
        index,
        op: "resolve",
        path: p.to_path_buf(),
        source,
    })
}

fn resolve(
    index: usize,
    op: &Operation,
    binaries: &Path,
    state_root: &Path,
) -> Result<ResolvedOp, OpRejection> {
    let (src_rel, dst_rel, expected) = match op {
        Operation::CopyBinary {
            src,
            dst,
            expected_hash,
        } => (src, Some(dst), *expected_hash),
        Operation::VerifyConfig { src, expected_hash } => (src, None, *expected_hash),
    };
    let src = binaries.join(src_rel);
    let real =
        fs::canonicalize(&src).map_err(|_| OpRejection::SourceMissing { path: src.clone() })?;
    if !real.starts_with(binaries) {
        return Err(OpRejection::SymlinkEscape {
            field: "src",
            target: real,
            root: binaries.to_path_buf(),
        });
    }
    if !real.is_file() {
        return Err(OpRejection::SourceMissing { path: src });
    }
    if let Some(want) = expected {
        check_hash(&real, &want, &fs::read(&real).unwrap_or_default())?;
    }
    let dst = dst_rel
        .map(|rel| resolve_dst(state_root, rel))
        .transpose()?;
    Ok(ResolvedOp {
        index,
        op: op.name(),
        src: real,
        dst,
        expected,
    })
}

/// The destination's nearest existing ancestor must resolve inside the root, and the
/// destination itself must not be a directory or a symlink (rename would replace the
/// link, but refusing is clearer than surprising).
fn resolve_dst(state_root: &Path, rel: &Path) -> Result<PathBuf, OpRejection> {
    let dst = state_root.join(rel);
    let mut ancestor = dst.parent();
    while let Some(a) = ancestor {
        if fs::symlink_metadata(a).is_ok() {
            let real = fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf());
            if !real.starts_with(state_root) {
                return Err(OpRejection::SymlinkEscape {
                    field: "dst",
                    target: real,
                    root: state_root.to_path_buf(),
                });
            }
            break;
        }
        ancestor = a.parent();
    }
    if let Ok(m) = fs::symlink_metadata(&dst)
        && (m.file_type().is_symlink() || m.is_dir())
    {
        let target = fs::canonicalize(&dst).unwrap_or_else(|_| dst.clone());
        return Err(OpRejection::SymlinkEscape {
            field: "dst",
            target,
            root: state_root.to_path_buf(),
        });
    }
    Ok(dst)
}

fn check_hash(path: &Path, want: &[u8; 32], bytes: &[u8]) -> Result<(), OpRejection> {
    let got = blake3::hash(bytes);
    if got.as_bytes() != want {
        return Err(OpRejection::HashMismatch {
            path: path.to_path_buf(),
            expected: hex::encode(want),
            actual: got.to_hex().to_string(),
        });
    }
    Ok(())
}

/// Runs resolved operations in order. The bytes copied are the bytes hashed, so a
/// source swapped after preflight is still caught.
pub fn execute(ops: &[ResolvedOp]) -> Result<(), ReconstructionError> {
    for op in ops {
        let fail = |path: &Path| {
            let (index, name, path) = (op.index, op.op, path.to_path_buf());
            move |source| ReconstructionError::OpFailed {
                index,
                op: name,
                path,
                source,
            }
        };
        let bytes = fs::read(&op.src).map_err(fail(&op.src))?;
        if let Some(want) = &op.expected {
            check_hash(&op.src, want, &bytes).map_err(|rejection| {
                ReconstructionError::Rejected {
                    index: op.index,
                    rejection,
                }
            })?;
        }
        if let Some(dst) = &op.dst {
            let mode = fs::metadata(&op.src)
                .map_err(fail(&op.src))?
                .permissions()
                .mode()
                & 0o7777;
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(fail(parent))?;
            }
            write_atomic(dst, &bytes, mode).map_err(fail(dst))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(fail(dst))?;
        }
    }
    Ok(())
}

/// BLAKE3 hex of a file, empty when it does not exist or cannot be read. Streamed, so
/// a large runtime binary is never held in memory whole.
pub fn hash_file_or_empty(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    fs::File::open(path)
        .and_then(|file| hasher.update_reader(file).map(|_| ()))
        .map(|()| hasher.finalize().to_hex().to_string())
        .unwrap_or_default()
}
