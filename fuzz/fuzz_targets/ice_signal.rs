//! ICE over the hub and the mesh port: a signal payload (untrusted bytes the hub relays)
//! decodes or is refused, never panics, and nothing but a valid signature opens it; the
//! demultiplexing of a STUN datagram to the ICE agents is total.
#![no_main]
use bauxite_conduit::PeerId;
use bauxite_conduit::io::ice::is_ice_stun;
use bauxite_conduit::node::SignedSignal;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = is_ice_stun(data);
    if let Ok(signal) = SignedSignal::decode(data) {
        // The all-zero key is a weak (small-order) key or none at all: refused either
        // way, never a panic, whatever the bytes claim.
        let opened = signal.open(PeerId([1; 16]), &[0; 32], PeerId([2; 16]));
        assert!(opened.is_err());
    }
});
