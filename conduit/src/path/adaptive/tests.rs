use std::time::{Duration, Instant};

use super::*;

const MSS: usize = 1350;

/// Some origin for test time; only differences from it matter.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
