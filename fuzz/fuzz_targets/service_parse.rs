//! A delivered packet comes from a peer that may be hostile: finding a service datagram
//! in it must be total, and what it finds must lie inside the packet.
#![no_main]
use bauxite_conduit::VirtualIp;
use bauxite_conduit::service::{HEADER_LEN, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let local = VirtualIp(0x6440_0001);
    if let Some(d) = parse(data, local, |_| true) {
        assert!(d.payload.len() + HEADER_LEN <= data.len());
        assert_eq!(d.src_ip.0 >> 24, data[12] as u32);
    }
});
