//! The daemon's standing with its hub, as `bauxite status` shows it: connecting,
//! connected (since when, and where other nodes are told to dial this node),
//! reconnecting (since when, and the last error) or revoked.
//!
//! Invariant: transitions are pure functions of the previous state, the event and the
//! wall-clock time passed in ([`HubState::lost`] keeps the time of the *first* failure, so
//! `since` says how long the node has been cut off, not when the last retry failed).

use serde::{Deserialize, Serialize};

/// The hub connection's state. The JSON form (`status --json`, key `hub`) is tagged by
/// `state`: `connecting`, `connected`, `reconnecting`, `revoked`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HubState {
    /// Dialling the hub for the first time since start.
    Connecting {
        /// The hub URL.
        url: String,
        /// When the daemon started dialling (RFC 3339 UTC).
        since: String,
    },
    /// Connected: topology and policy streams are open.
    Connected {
        /// The hub URL.
        url: String,
        /// When this connection came up (RFC 3339 UTC).
        since: String,
        /// Where the hub tells other nodes to dial this node, in order (empty: nowhere).
        candidates: Vec<String>,
    },
    /// The connection failed or ended; attempts continue with backoff.
    Reconnecting {
        /// The hub URL.
        url: String,
        /// When the node lost the hub (the first failure of this run of failures).
        since: String,
        /// The most recent failure.
        last_error: String,
    },
    /// The hub revoked this node: it no longer reconnects and the daemon stops.
    Revoked {
        /// The hub URL.
        url: String,
        /// When the refusal arrived (RFC 3339 UTC).
        since: String,
        /// The hub's message.
        reason: String,
    },
}

impl HubState {
    /// The state after a failure at `now`: reconnecting, since the first failure in a row.
    pub fn lost(previous: Option<&HubState>, url: &str, now: &str, error: String) -> HubState {
        let since = match previous {
            Some(HubState::Reconnecting { since, .. }) => since.clone(),
            _ => now.to_owned(),
        };
        HubState::Reconnecting {
            url: url.to_owned(),
            since,
            last_error: error,
        }
    }

    /// Whether the hub revoked the node.
    pub fn is_revoked(&self) -> bool {
        matches!(self, HubState::Revoked { .. })
    }

    /// One line for `status`.
    pub fn render(&self) -> String {
        match self {
            HubState::Connecting { url, since } => format!("connecting to {url} since {since}"),
            HubState::Connected {
                url,
                since,
                candidates,
            } => {
                let reach = if candidates.is_empty() {
                    "no address other nodes can dial (set hub.advertise)".to_owned()
                } else {
                    format!("dialled at {}", candidates.join(", "))
                };
                format!("connected to {url} since {since}; {reach}")
            }
            HubState::Reconnecting {
                url,
                since,
                last_error,
            } => format!("reconnecting to {url} since {since}; last error: {last_error}"),
            HubState::Revoked { url, since, reason } => {
                format!("REVOKED by {url} at {since}: {reason}")
            }
        }
    }
}

/// The node's hub certificate as `bauxite status` shows it (JSON key `certificate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertState {
    /// The certificate's notAfter (RFC 3339 UTC).
    pub expires: String,
    /// When the daemon renews it (RFC 3339 UTC): a third of its validity before expiry,
    /// or 7 days, whichever comes first (or the next retry after a failure).
    pub renews_from: String,
    /// The last renewal that failed, if the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl CertState {
    /// One line for `status`.
    pub fn render(&self) -> String {
        let mut line = format!(
            "valid until {}; renews from {}",
            self.expires, self.renews_from
        );
        if let Some(error) = &self.last_error {
            line.push_str(&format!("; last renewal failed: {error}"));
        }
        line
    }
}

/// `unix_nanos` as RFC 3339 UTC with whole seconds.
pub fn stamp(unix_nanos: u64) -> String {
    let secs = i64::try_from(unix_nanos / 1_000_000_000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnecting_keeps_the_time_of_the_first_failure() {
        let url = "https://hub:7443";
        let connected = HubState::Connected {
            url: url.into(),
            since: stamp(0),
            candidates: vec!["10.0.0.1:51820".into()],
        };
        let first = HubState::lost(Some(&connected), url, &stamp(10_000_000_000), "down".into());
        let again = HubState::lost(
            Some(&first),
            url,
            &stamp(20_000_000_000),
            "still down".into(),
        );
        assert_eq!(
            again,
            HubState::Reconnecting {
                url: url.into(),
                since: "1970-01-01T00:00:10Z".into(),
                last_error: "still down".into()
            }
        );
        assert!(
            again
                .render()
                .contains("since 1970-01-01T00:00:10Z; last error: still down")
        );
        assert!(connected.render().contains("dialled at 10.0.0.1:51820"));
    }

    #[test]
    fn json_is_tagged_by_state() {
        let revoked = HubState::Revoked {
            url: "https://hub:7443".into(),
            since: stamp(5_000_000_000),
            reason: "node x was revoked".into(),
        };
        let json = serde_json::to_value(&revoked).unwrap();
        assert_eq!(json["state"], "revoked");
        assert_eq!(json["since"], "1970-01-01T00:00:05Z");
        assert!(revoked.is_revoked());
        assert_eq!(serde_json::from_value::<HubState>(json).unwrap(), revoked);
    }
}
