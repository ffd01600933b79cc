//! The store contract, one test body run against every backend (memory, redb, a real
//! PostgreSQL), and what only a shared PostgreSQL store must add: writers on several
//! replicas never fork the audit chain.
// Test harness: panicking on a broken fixture is the point, and the process shell reads the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod contract;
#[path = "../support/pg_cluster.rs"]
mod pg_cluster;
mod postgres;
