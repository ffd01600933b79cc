//! Control frames (acks, path MTU probes, rate-drop reports) arrive sealed but are built
//! by the peer: parsing must be total, and a rate-drop report that parses re-encodes to
//! the same bytes with a non-empty window.
#![no_main]
use bauxite_conduit::path::RateDropFrame;
use bauxite_conduit::path::frame::ControlFrame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ControlFrame::parse(data);
    if let Ok(frame) = RateDropFrame::parse(data) {
        assert_eq!(frame.encode().as_slice(), data);
        assert!(frame.last > frame.first && frame.span_us > 0);
    }
});
