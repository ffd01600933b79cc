//! `bauxite-forge`: over-the-air updates that cannot brick a robot.
//!
//! Invariant: no byte of an update is trusted before the signed metadata vouches for it,
//! and the active version changes only by one atomic rename, to a version that was
//! verified whole after it was staged.
//!
//! Logic is sans-IO (time, randomness and file effects are inputs or go through small
//! traits); the daemon's update agent and the hub's package server are thin shells.

pub mod error;
pub mod tuf;

pub use error::{Error, Result};
