//! IPv4/IPv6 header views and lane classification must be total.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(view) = bauxite_conduit::ip::IpView::parse(data) {
        let _ = (view.src_port(), view.dst_port(), view.payload(), view.dst_v4());
    }
    let _ = bauxite_conduit::scheduler::classify(data);
});
