//! `checkpoint.bin` is read back from disk after crashes and may be anything: parsing
//! must be total, and whatever parses must re-emit to the same bytes.
#![no_main]
use bauxite_forge::checkpoint::Checkpoint;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Checkpoint::parse(data) {
        assert_eq!(c.emit(), data);
    }
});
