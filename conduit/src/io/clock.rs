//! The shell's window on the outside world's time and randomness.
//!
//! Invariant: these are the only functions of the data plane that read the clock or the
//! OS RNG; everything they return is passed into the sans-IO node as an input.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock the node is driven with.
#[allow(clippy::disallowed_methods)] // IO shell: the one place the data plane reads the clock.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock nanoseconds since the Unix epoch (handshake timestamps).
#[allow(clippy::disallowed_methods)] // IO shell: the one place the data plane reads the clock.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A fresh 32-byte seed from the OS RNG for [`BauxiteNode::new`](crate::BauxiteNode::new).
#[allow(clippy::disallowed_methods)] // IO shell: the one place the data plane reads OS randomness.
pub fn os_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(seed)
}
