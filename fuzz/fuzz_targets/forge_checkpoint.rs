//! `checkpoint.bin` is read back from disk after crashes and may be anything: parsing
//! must be total, and whatever parses must re-emit to the same bytes. The input is tried
//! raw (the MAC stops it early) and sealed with a valid MAC behind the magic and format,
//! so the field parsing behind the MAC is explored too.
#![no_main]
use bauxite_forge::checkpoint::{Checkpoint, FORMAT, MAGIC, seal};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Checkpoint::parse(data) {
        assert_eq!(c.emit(), data);
    }
    let mut body = MAGIC.to_vec();
    body.extend_from_slice(&FORMAT.to_le_bytes());
    body.extend_from_slice(data);
    let sealed = seal(&body);
    if let Ok(c) = Checkpoint::parse(&sealed) {
        assert_eq!(c.emit(), sealed);
    }
});
