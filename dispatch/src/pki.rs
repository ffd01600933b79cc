//! The hub's PKI: its CA, the identity bindings in node certificates, and key files.

pub mod binding;
pub mod ca;
pub mod files;

pub use binding::{CertRole, NodeBinding};
pub use ca::{HubCa, Issued, SERVER_NAME};
