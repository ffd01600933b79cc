//! Integration tests with real hub processes over real TLS on 127.0.0.1 (issue 4).
// Test harness: panicking on a broken fixture is the point, and the process shell reads the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod admin_ui;
mod audit_pages;
mod common;
mod deploy;
mod fleet;
#[path = "../support/fleet.rs"]
mod fleet_support;
mod join;
mod malformed;
mod mesh;
mod mtls;
mod offline_root;
mod operator;
mod packages;
#[path = "../support/pg_cluster.rs"]
mod pg_cluster;
mod policy;
mod relay;
mod relay_replicas;
mod renew;
mod replicas;
mod restart;
mod resume;
mod shutdown;
mod tamper;
mod tuf_grpc;
