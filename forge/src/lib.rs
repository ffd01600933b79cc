//! `bauxite-forge`: over-the-air updates that cannot brick a robot.
//!
//! Invariant: no byte of an update is trusted before the signed metadata vouches for it,
//! and the active version changes only by one atomic rename, to a version that was
//! verified whole after it was staged.
//!
//! Logic is sans-IO (time, randomness and file effects are inputs or go through small
//! traits); the daemon's update agent and the hub's package server are thin shells.
//!
//! Modules, in the order an update flows through them: [`image`] (chunk sources),
//! [`chunk`] (the chunk index), [`fetch`] (the datagram protocol), [`checkpoint`] and
//! [`staging`] (durable, resumable staging), [`activate`] and [`watchdog`] (the atomic
//! swap and the rollback), [`state`] and [`agent`] (the update agent that ties them
//! together), [`telemetry`] (MCAP recording).

pub mod error;
pub mod tuf;

// Forge core: chunks, fetch, checkpoint, staging, activation, agent, telemetry.
pub mod activate;
pub mod agent;
pub mod checkpoint;
pub mod chunk;
pub mod chunkset;
pub mod crash;
pub mod fetch;
mod fsutil;
pub mod image;
pub mod layout;
pub mod staging;
pub mod state;
pub mod telemetry;
pub mod watchdog;

pub use error::{Error, Result};
