//! Sessions: the Noise `IK` handshake ([`noise`]), the transport state of one session
//! ([`SecureChannel`]) and the per-peer state machine that rekeys and keeps sessions
//! alive ([`Tunnel`]). See `docs/security.md` for the protocol and its reasoning.

pub mod channel;
pub mod noise;
pub mod tunnel;

pub use channel::SecureChannel;
pub use noise::TransportKeys;
pub use tunnel::{Opened, TimerAction, Timers, Tunnel};
