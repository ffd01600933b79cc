//! Runtime manifests are parsed after their signature verified; still, parsing and
//! operation validation must be total.
#![no_main]
use std::path::PathBuf;

use bauxite::precheck::manifest::{Roots, parse_manifest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let roots = Roots {
        state_root: PathBuf::from("/var/lib/bauxite"),
        binaries: PathBuf::from("/var/lib/bauxite/runtime/binaries"),
    };
    let _ = parse_manifest(data, &roots);
});
