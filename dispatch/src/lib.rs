//! `bauxite-dispatch`: the Bauxite hub.
//!
//! The hub provisions nodes with single-use, expiring join tokens (stored hashed), signs a
//! client certificate for a key each node generated itself, and from then on talks to nodes
//! only over mutual TLS: topology and policy feeds, signaling relay, metrics ingest. Every
//! change is recorded in a hash-chained audit log.
//!
//! The contract with nodes (protos, token format, proof of possession, typed refusals and
//! the client) is the separate crate [`bauxite_dispatch_api`], which robots link instead of
//! this one.
//!
//! Sans-IO logic: [`token`], [`ipam`], [`audit`], [`hub`] (state and rules, with time and
//! randomness as arguments), [`policy_review`] (what `policy set` shows),
//! [`updates::resign`] and [`updates::names`], [`admin_ui::session`]. IO shell: [`server`] (TLS listener, gRPC
//! services, metrics endpoint), [`store`] (redb), [`updates`] (the TUF repository and
//! package images on disk), [`mesh`] (the hub's own mesh node serving images),
//! [`admin_ui`] (the admin web UI on its own loopback listener).

pub mod admin_ui;
pub mod audit;
pub mod clock;
pub mod error;
pub mod hub;
pub mod ipam;
pub mod mesh;
pub mod metrics;
pub mod pki;
pub mod policy_review;
pub mod server;
pub mod store;
pub mod token;
pub mod turn;
pub mod updates;

pub(crate) use bauxite_dispatch_api::{proof, proto};

pub use error::{CallRefused, Error, ProvisionRejected, Result, TokenFormat, TokenRejected};
