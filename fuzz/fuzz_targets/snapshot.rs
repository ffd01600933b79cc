//! Warm-start snapshots are read from disk after an update: decoding must be total.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bauxite_conduit::snapshot::StateSnapshot::from_bytes(data);
});
