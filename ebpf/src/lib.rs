//! Bauxite's kernel lane classifier: a TC program (C, `bpf/classifier.c`, compiled by
//! `build.rs` with clang) on the egress of the TUN device, loaded with aya 0.14.
//!
//! It gives each outbound packet the lane conduit's userspace classifier would give it,
//! writes the lane's priority into `skb->priority` so a `prio` qdisc serves Critical first,
//! and counts packets and bytes per lane. [`offload`] wraps it as conduit's
//! [`DataPlaneOffload`](bauxite_conduit::offload::DataPlaneOffload), falling back to
//! userspace-only classification when the kernel refuses.

pub mod abi;
mod error;
mod loader;
pub mod offload;
mod rules;
mod steer;

pub use error::Error;
pub use loader::{AttachMode, AttachOptions, LaneClassifier, LinkKind, ProgramTester};
pub use rules::LaneRules;
