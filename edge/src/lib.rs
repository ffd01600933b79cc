//! The `bauxite` edge binary as a library: every subcommand's logic lives here so it
//! can be tested in-process; `main.rs` only parses arguments and maps results to exit
//! codes.
//!
//! - [`precheck`]: the OS-replacement survival check (fingerprint, boot epoch, signed
//!   runtime manifest, typed reconstruction, epoch evidence, exit codes 0/1/2/3/5).
//! - [`demo`]: the in-process two-node demonstration.
//! - [`run_cmd`]: the `run` daemon (static peers over UDP and TUN), with its
//!   [`control`] socket for [`status`], the optional [`metrics_http`] listener and the
//!   [`run_lock`] that keeps a second daemon off the same node.
//! - [`join_cmd`]: `bauxite join`, provisioning with a hub; [`hub`]: the daemon's
//!   `HubConnector` (topology, policy, metrics, reconnect with backoff), reporting the
//!   addresses [`candidates`] chooses.
//! - [`operator_cmd`] and [`operator_lock`]: the operator lock's tools (`bauxite
//!   operator keygen|request|sign`) and the daemon's check of the hub's topology.
//! - [`keygen`], [`manifest_cmd`], [`cert_cmd`], [`fingerprint_cmd`]: the tools that
//!   make the OS-replacement tutorial runnable with nothing but `bauxite`.
//! - [`update_cmd`]: `bauxite update ...`; `tuf-client` is the plain TUF client.
//! - [`update_agent`]: the daemon's update agent (TUF over gRPC, transfer on the mesh's
//!   Bulk lane, staging, activation, watchdog, MCAP, warm start); [`hub_peer`]: where the
//!   hub's own mesh node is dialled.
//! - [`ping`] and [`probe`]: `bauxite ping` and the control-loop probe (echo on the
//!   Critical lane); [`mesh_service`]: service sockets on the running shell.
//! - [`ros_cmd`]: `bauxite ros env` / `bauxite ros exec` and the daemon's supervised
//!   ROS 2 discovery server (`bauxite-citadel`).

pub mod candidates;
pub mod cert_cmd;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod fingerprint_cmd;
pub mod fsutil;
pub mod hub;
pub mod hub_peer;
pub mod hub_relay;
pub mod hub_signal;
pub mod hub_state;
pub mod join_cmd;
pub mod keygen;
pub mod manifest_cmd;
pub mod mesh_service;
pub mod metrics_http;
pub mod offload;
pub mod operator_cmd;
pub mod operator_lock;
pub mod path_metrics;
pub mod ping;
pub mod precheck;
pub mod probe;
pub mod realtime;
pub mod renewal;
pub mod ros_cmd;
pub mod run_cmd;
pub mod run_lock;
pub mod status;
pub mod sys;
pub mod turn;
pub mod update_agent;
pub mod update_cmd;

pub use error::Error;
