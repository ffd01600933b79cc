//! Control frames (acks, path MTU probes, rate-drop reports, loss repair's NACKs and
//! hellos) arrive sealed but are built by the peer: parsing must be total, and a frame
//! that parses re-encodes to the same bytes (a rate-drop report with a non-empty window,
//! a NACK naming at least one packet). A sequenced bulk packet's header parses only with
//! an IP packet behind it.
#![no_main]
use bauxite_conduit::path::frame::ControlFrame;
use bauxite_conduit::path::repair::{BULK_HEADER_LEN, parse_bulk};
use bauxite_conduit::path::{NackFrame, RateDropFrame, RepairHello};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ControlFrame::parse(data);
    if let Ok(frame) = RateDropFrame::parse(data) {
        assert_eq!(frame.encode().as_slice(), data);
        assert!(frame.last > frame.first && frame.span_us > 0);
    }
    if let Ok(nack) = NackFrame::parse(data) {
        assert_eq!(nack.encode().as_slice(), data);
        assert!(nack.count > 0);
    }
    if let Ok(hello) = RepairHello::parse(data) {
        assert_eq!(hello.encode().as_slice(), data);
    }
    if parse_bulk(data).is_ok() {
        assert!(data.len() > BULK_HEADER_LEN);
    }
});
