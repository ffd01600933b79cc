//! Messages, clients and servers generated from `proto/dispatch.proto` (package
//! `bauxite.dispatch.v1`) by tonic-prost-build at build time.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("bauxite.dispatch.v1");
