//! Which file names a node may ask the update service for.
//!
//! Invariant: a name accepted here joins its directory to a path inside it: metadata names
//! are one segment, target names are `/`-separated segments; no segment is empty, `.`,
//! `..`, hidden (the repository's temp files start with `.`), or holds anything but
//! ASCII letters, digits and `._%+~-` (role and target names reach the repository
//! percent-encoded, so nothing else is ever published). The caller still resolves the
//! path and checks it stays inside the directory, against symlinks.

/// Longest metadata file name accepted.
pub const MAX_METADATA_NAME: usize = 255;
/// Longest target path accepted.
pub const MAX_TARGET_NAME: usize = 1024;

fn segment_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_METADATA_NAME
        && !segment.starts_with('.')
        && segment.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'~' | b'-')
        })
}

/// Whether `name` may name a published metadata file (`timestamp.json`, `3.snapshot.json`).
pub fn metadata_name_ok(name: &str) -> bool {
    segment_ok(name) && name.ends_with(".json")
}

/// Whether `name` may name a published target file (`robot-fw/<sha256>.2.0.0.img.chunks`).
pub fn target_name_ok(name: &str) -> bool {
    name.len() <= MAX_TARGET_NAME && name.split('/').all(segment_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn published_names_pass_and_escapes_do_not() {
        for ok in [
            "root.json",
            "2.root.json",
            "timestamp.json",
            "7.targets.json",
            "3.a%2Fb.json",
        ] {
            assert!(metadata_name_ok(ok), "{ok}");
        }
        for bad in [
            "",
            ".json",
            "..",
            "../root.json",
            "a/b.json",
            "root",
            ".timestamp.json.part",
            "root.json\0",
            "r oot.json",
            "root.json/",
        ] {
            assert!(!metadata_name_ok(bad), "{bad:?}");
        }
        assert!(target_name_ok("firmware/ab12.2.0.0.img.chunks"));
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/../../b",
            "./a",
            "a/.hidden.part",
            "a\\b",
            "a/b/",
        ] {
            assert!(!target_name_ok(bad), "{bad:?}");
        }
    }

    proptest! {
        /// Whatever is accepted stays one directory level (metadata) or inside the
        /// directory (targets): joining it never climbs out.
        #[test]
        fn accepted_names_never_climb_out(name in "[a-z./%_-]{0,24}") {
            if target_name_ok(&name) {
                let path = std::path::Path::new("/base").join(&name);
                prop_assert!(path.starts_with("/base"));
                prop_assert!(path.components().all(|c| matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )));
            }
            if metadata_name_ok(&name) {
                prop_assert!(!name.contains('/'));
            }
        }
    }
}
