//! Wall-clock time as a value. Logic takes a [`UnixTime`]; only the IO shell reads the clock.

use std::fmt;

/// Seconds since the Unix epoch.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// Reads the system clock (IO shell only).
    #[allow(clippy::disallowed_methods)] // The one place the hub reads the wall clock.
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self(secs)
    }

    /// This time plus `secs`, saturating.
    pub fn plus(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = i64::try_from(self.0)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        match when {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}", self.0),
        }
    }
}

/// Fills `buf` from the operating system's RNG (IO shell only).
#[allow(clippy::disallowed_methods)] // The one place the hub reads OS randomness.
pub fn os_random(buf: &mut [u8]) -> crate::Result<()> {
    getrandom::fill(buf).map_err(|e| crate::Error::Io {
        action: "read OS randomness for",
        path: "token".into(),
        source: std::io::Error::other(e.to_string()),
    })
}
