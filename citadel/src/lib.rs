//! `bauxite-citadel`: ROS 2 discovery across a Bauxite mesh.
//!
//! ROS 2 on Fast DDS finds its peers by multicast, which no mesh carries. Citadel runs a
//! Fast DDS discovery server on a node's virtual IP, keeps it alive, and gives every ROS
//! process on the fleet the environment that points it at the server:
//!
//! - [`spawn`]: the [`ProcessSpawner`] trait (spawn with an explicit environment, wait,
//!   signal, kill), the real [`TokioSpawner`] (each child in its own process group, killed
//!   with the node) and [`MockSpawner`] for tests;
//! - [`supervisor`]: the sans-IO [`Supervisor`] (restart with capped, jittered backoff,
//!   give up after N crashes in a window, clean stop) and [`supervise`], its async driver;
//! - [`server`]: [`DiscoveryServer`], the managed `fast-discovery-server`;
//! - [`env`](mod@env): [`RosEnv`], `ROS_DISCOVERY_SERVER` and `ROS_DOMAIN_ID` for ROS processes;
//! - [`rtps`]: the UDP ports RTPS uses in a domain (for lane rules and firewalls);
//! - `zenoh` (feature): the supervised `zenoh-bridge-ros2dds`.
//!
//! Invariant: every decision (when to restart, when to give up, what the environment says)
//! is a pure function of its inputs; only [`TokioSpawner`] and [`supervise`] touch
//! processes and the clock.

mod error;

pub mod env;
pub mod rtps;
pub mod server;
pub mod spawn;
pub mod supervisor;
#[cfg(feature = "zenoh")]
pub mod zenoh;

pub use env::{DEFAULT_DOMAIN_ID, RosEnv, ServerAddr};
pub use error::Error;
pub use server::{
    DEFAULT_PORT, DEFAULT_PROGRAM, DiscoveryServer, DiscoveryServerConfig, ServerHandle,
    render_prometheus,
};
pub use spawn::{
    ChildProcess, Exit, MockChild, MockSpawner, ProcessSpawner, Signal, SpawnSpec, TokioChild,
    TokioSpawner,
};
pub use supervisor::{Phase, Supervisor, SupervisorConfig, SupervisorStatus, supervise};
