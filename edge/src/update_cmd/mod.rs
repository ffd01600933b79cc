//! `bauxite update ...`: the robot's update commands. [`tuf_client`] is the plain TUF
//! client (the client contract of the public TUF conformance suite).

pub mod tuf_client;
