//! MSS clamping, ICMP too-big replies and fragmentation run on packets from the local
//! host and, for clamping, on decrypted packets from peers: all must be total.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use bauxite_conduit::ip::mtu::{Fragments, clamp_mss, too_big_reply};
    let Some((&mtu, packet)) = data.split_first() else {
        return;
    };
    let mtu = 20 + usize::from(mtu) * 8;
    let mut packet = packet.to_vec();
    let _ = clamp_mss(&mut packet, mtu);
    let mut out = Vec::new();
    let _ = too_big_reply(&packet, mtu as u16, &mut out);
    if let Some(mut fragments) = Fragments::new(&packet, mtu) {
        while fragments.next_into(&mut out) {}
    }
});
