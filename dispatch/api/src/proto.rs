//! Messages, clients and servers generated at build time by tonic-prost-build, one module
//! per audience: [`node`] (`proto/node.proto`, package `bauxite.dispatch.node.v1`) and
//! [`admin`] (`proto/admin.proto`, package `bauxite.dispatch.admin.v1`). Client stubs
//! (`*_service_client`) exist with the `client` feature, server stubs (`*_service_server`)
//! with the `server` feature.

/// What nodes call: provisioning, topology, policy, metrics, signaling, and the [`node::Refusal`]
/// carried in refused calls' status details.
pub mod node {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("bauxite.dispatch.node.v1");
}

/// What the operator calls: tokens, nodes, policy, audit (the admin certificate only).
pub mod admin {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("bauxite.dispatch.admin.v1");

    // The node messages the admin API also uses, so the operator's vocabulary is one module.
    pub use super::node::{PolicyDocument, PolicyRequest};
}
