//! `bauxite-conduit`: the Bauxite data plane.
//!
//! Protocol logic is sans-IO: every state machine takes bytes and the current time and
//! returns what to send; sockets, timers and the TUN device live in the caller's shell.
//! Time (`now: Instant`) and randomness (seeds) are always inputs, so two nodes can be
//! driven deterministically in one process (see [`sim`]).

pub mod cipher;
pub mod error;
pub mod identity;
#[cfg(feature = "io")]
pub mod io;
pub mod ip;
pub mod metrics;
pub mod node;
pub mod offload;
pub mod path;
pub mod peers;
pub mod policy;
pub mod replay;
pub mod scheduler;
pub mod service;
pub mod session;
pub mod sim;
pub mod snapshot;
#[cfg(feature = "stun")]
pub mod stun;
pub mod tun;
pub mod types;
pub mod wire;

pub use error::{Error, KeyFileProblem, MalformedPacket, PeerMisbehaved, ServiceError};
pub use metrics::Metrics;
pub use node::BauxiteNode;
pub use types::{Lane, PeerId, VirtualIp};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
