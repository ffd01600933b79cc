//! `bauxite update ...`: the robot's update commands. [`tuf_client`] is the plain TUF
//! client (the client contract of the public TUF conformance suite); [`agent`] talks to
//! the daemon's update agent (`status`, `check`, `apply`, `rollback`, `heartbeat`).

pub mod agent;
pub mod tuf_client;
