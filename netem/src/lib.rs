//! Link emulation for Bauxite's tests and benchmarks: one sans-IO model of a link's
//! physics (a drop-tail buffer in front of a rate limit that follows a schedule, delay
//! with jitter, Gilbert–Elliott bursty loss, duplication, corruption, blackouts, MTU),
//! driven by two clocks — the simulator's virtual one (`bauxite_conduit::sim`) and the
//! wall clock of the `bauxite-linkemu` emulator, which forwards real packets between two
//! network namespaces (see `docs/link-emulator.md`).
//!
//! [`Link::offer`] is the whole physics: time and randomness are inputs, so a run with a
//! seed replays exactly. A [`Profile`] says what the [`Impairments`] are at each moment
//! ([`Profile::lte`], [`Profile::wifi`], or a [`trace`] file).

mod error;
mod model;
mod profile;
pub mod trace;

pub use error::Error;
pub use model::{BitFlip, Delivery, Drop, GilbertElliott, Impairments, Link, Verdict};
pub use profile::{Profile, Step};
