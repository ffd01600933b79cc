//! The stored OS fingerprint survives OS replacements on disk: parsing must be total.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bauxite::precheck::fingerprint::FingerprintRecord::parse(data);
});
