//! Mesh packet parsing and STUN demultiplexing must be total.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bauxite_conduit::wire::demux(data);
    let _ = bauxite_conduit::wire::parse(data);
});
