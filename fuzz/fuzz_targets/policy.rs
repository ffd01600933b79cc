//! Policies arrive from the hub as JSON: parsing and validation must be total.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = serde_json::from_slice::<bauxite_conduit::policy::Policy>(data) {
        let _ = policy.validate();
    }
});
