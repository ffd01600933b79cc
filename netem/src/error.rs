//! The crate's error type.

/// What went wrong reading a profile or a trace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A trace line is not `time_ms rate_kbit delay_ms` (or `period period_ms`).
    #[error(
        "trace line {line}: {reason}: {text:?}; write `time_ms rate_kbit delay_ms` (rate 0 for an outage) or `period period_ms`"
    )]
    TraceLine {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A trace without any step.
    #[error("the trace has no step; add at least one `time_ms rate_kbit delay_ms` line")]
    EmptyTrace,
    /// A profile name that is not known.
    #[error("unknown link profile {0:?}; use `lte`, `wifi` or `fixed`")]
    UnknownProfile(String),
}
