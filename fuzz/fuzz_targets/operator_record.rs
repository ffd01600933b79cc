//! Operator-signed key records as a hub sends them (`Peer.operator_signature`) and their
//! text forms: parsing never panics, whatever parses re-encodes to the same bytes, and
//! the lock's check runs on it.
#![no_main]

use bauxite_dispatch_api::operator::{NodeKeyFacts, OperatorLock, SignedKeyRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SignedKeyRecord::parse(data) {
        assert_eq!(record.encode(), data);
        let _ = record.verify_signature();
        let lock = OperatorLock::new(vec![record.operator]);
        let _ = lock.check(&record.record.facts, data, record.record.not_after / 2);
    }
    let _ = NodeKeyFacts::from_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SignedKeyRecord::from_text(text);
        let _ = NodeKeyFacts::from_text(text);
    }
});
