//! Policies arrive from the hub as JSON: parsing, validation and linting must be total,
//! and a parsed policy must read back as itself from the JSON it is written as (the hub
//! stores and ships that form).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = serde_json::from_slice::<bauxite_conduit::policy::Policy>(data) {
        let _ = policy.validate();
        let _ = policy.lint(&[]);
        for rule in &policy.rules {
            let _ = rule.to_string();
        }
        let written = serde_json::to_string(&policy).expect("a policy always serializes");
        let again: bauxite_conduit::policy::Policy =
            serde_json::from_str(&written).expect("written policies read back");
        assert_eq!(again, policy);
    }
});
