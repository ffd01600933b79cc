//! `bauxite-dispatch-api`: the contract between Bauxite nodes and their hub.
//!
//! Both sides link this crate; the robot links nothing else of the hub (no database, no
//! TLS server, no gRPC router). It holds:
//!
//! - [`proto`]: the gRPC messages, split by audience into [`proto::node`] (provisioning,
//!   topology, policy, metrics, signaling) and [`proto::admin`] (the operator's
//!   `AdminService`); client stubs with the `client` feature, server stubs with `server`;
//! - [`token`]: the join token's text format; [`proof`]: the proof-of-possession challenge;
//!   [`pki`]: what a hub-issued certificate binds, and the key-file rules both sides keep;
//! - [`operator`]: the operator lock's signed node key records and their check;
//! - [`topology`]: topology deltas (computed by the hub, applied by the node);
//! - [`relay`]: on which replica two relay-only nodes meet (the node's sans-IO choice);
//! - [`refusal`]: why the hub refused a call, as a typed value in the gRPC status details
//!   (the hub builds statuses with [`Refusal::to_status`], clients read them back with
//!   [`Refusal::from_status`]);
//! - `client` (feature `client`): `join`, `HubClient`, the pinned-CA TLS verifier.
//!
//! Everything here except the client is sans-IO (the key-file helpers in [`pki::files`]
//! aside). [`Error`] is the client's error type; the hub has its own.

#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod operator;
pub mod pki;
pub mod proof;
pub mod proto;
pub mod refusal;
pub mod relay;
pub mod replicas;
pub mod token;
pub mod topology;

pub use error::{Error, KeyRecordRejected, LockRefusal, ProofRejected, Result, TokenFormat};
pub use refusal::Refusal;
