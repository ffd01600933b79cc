//! `bauxite-dispatch`: the Bauxite hub, and the client library nodes use to talk to it.
//!
//! The hub provisions nodes with single-use, expiring join tokens (stored hashed), signs a
//! client certificate for a key each node generated itself, and from then on talks to nodes
//! only over mutual TLS: topology and policy feeds, signaling relay, metrics ingest. Every
//! change is recorded in a hash-chained audit log.
//!
//! Sans-IO logic: [`token`], [`ipam`], [`audit`], [`proof`], [`hub`] (state and rules,
//! with time and randomness as arguments), [`policy_review`] (what `policy set` shows). IO shell: [`server`] (TLS listener, gRPC
//! services, metrics endpoint), [`store`] (redb), [`client`].

pub mod audit;
pub mod client;
pub mod clock;
pub mod error;
pub mod hub;
pub mod ipam;
pub mod metrics;
pub mod pki;
pub mod policy_review;
pub mod proof;
pub mod proto;
pub mod server;
pub mod store;
pub mod token;

pub use error::{Error, ProvisionRejected, Result, TokenFormat, TokenRejected};
