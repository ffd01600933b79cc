//! Whether `join` can keep what the hub gives it: checked before the hub is contacted.

use std::path::Path;

use super::{CERTS_DIR, IDENTITY_FILE, JoinError};

/// Refuses a state root this process cannot write — a file in its place or on its path,
/// a read-only or foreign directory — by creating and removing a probe file in the
/// deepest directory that exists, so the hub is never asked to register a node whose
/// credentials cannot be kept. Creates nothing that stays.
pub fn check_writable(root: &Path) -> Result<(), JoinError> {
    let refuse = |path: &Path, reason: String| JoinError::StateRoot {
        path: path.to_path_buf(),
        reason,
    };
    let mut dir = root;
    loop {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(refuse(
                    dir,
                    format!(
                        "{} is a file, not a directory; move it away or pass another --state-root",
                        dir.display()
                    ),
                ));
            }
            // A missing directory, or a file on the way to it: look further up.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match dir.parent() {
                    Some(parent) => dir = parent,
                    None => return Err(refuse(root, e.to_string())),
                }
            }
            Err(e) => return Err(refuse(dir, e.to_string())),
        }
    }
    for sub in [IDENTITY_FILE, CERTS_DIR] {
        let path = root.join(sub);
        let parent = if sub == CERTS_DIR {
            Some(path.as_path())
        } else {
            path.parent()
        };
        if let Some(p) = parent
            && p.exists()
            && !p.is_dir()
        {
            return Err(refuse(
                p,
                format!("{} is a file, not a directory", p.display()),
            ));
        }
    }
    let probe = dir.join(format!(".bauxite-join-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(refuse(
            dir,
            format!(
                "{} is not writable by this user ({e}); run as root or pass a --state-root it can write",
                dir.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_root_that_cannot_be_written_is_refused_and_nothing_stays() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("new/deeper/root");
        check_writable(&fresh).unwrap();
        assert!(
            !dir.path().join("new").exists(),
            "the check created nothing"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        for root in [file.clone(), file.join("root")] {
            let e = check_writable(&root).unwrap_err().to_string();
            assert!(e.contains("is a file, not a directory"), "{e}");
            assert!(e.contains("not contacted"), "{e}");
        }
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(CERTS_DIR), "x").unwrap();
        let e = check_writable(&root).unwrap_err().to_string();
        assert!(e.contains("certs is a file"), "{e}");

        // Permission bits bind only a non-root user (root writes anyway).
        if !rustix::process::geteuid().is_root() {
            use std::os::unix::fs::PermissionsExt as _;
            let locked = dir.path().join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
            let e = check_writable(&locked.join("root"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not writable"), "{e}");
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
}
