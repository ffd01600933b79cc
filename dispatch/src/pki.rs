//! The hub's PKI: its CA, plus the certificate bindings and key-file rules it shares with
//! nodes (from [`bauxite_dispatch_api::pki`]).

pub mod ca;

pub use bauxite_dispatch_api::pki::{
    ADMIN_URI, CertRole, LeafFacts, NodeBinding, SERVER_NAME, binding, files, pem_to_der,
};
pub use ca::{HubCa, Issued};
