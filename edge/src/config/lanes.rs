//! `[[lanes]]`: the operator's port-to-lane rules, e.g. a ROS 2 topic's RTPS port to the
//! critical lane (docs/ros2.md lists the ports of a domain).
//!
//! ```toml
//! [[lanes]]
//! protocol = "udp"      # "udp", "tcp" or "any" (default)
//! ports = "17911"       # a port or "low-high"; a TOML integer works too
//! lane = "critical"     # "critical", "telemetry" or "bulk"
//! ```
//!
//! Invariant: a parsed list is a valid [`LaneRules`] (bounded, no inverted range), and
//! every mistake names the entry and key.

use std::ops::RangeInclusive;

use bauxite_conduit::Lane;
use bauxite_conduit::scheduler::{LaneProtocol, LaneRule, LaneRules};
use serde::Deserialize;

use crate::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLane {
    #[serde(default)]
    protocol: Option<String>,
    ports: RawPorts,
    lane: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPorts {
    One(i64),
    Text(String),
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

fn port(text: &str, index: usize) -> Result<u16, ConfigError> {
    text.trim().parse().map_err(|_| {
        invalid(
            "lanes.ports",
            format!(
                "entry {index}: {text:?} is not a port (0-65535); write 17911 or \"17900-18149\""
            ),
        )
    })
}

fn ports(raw: &RawPorts, index: usize) -> Result<RangeInclusive<u16>, ConfigError> {
    match raw {
        RawPorts::One(p) => {
            let p = port(&p.to_string(), index)?;
            Ok(p..=p)
        }
        RawPorts::Text(text) => match text.split_once('-') {
            Some((lo, hi)) => Ok(port(lo, index)?..=port(hi, index)?),
            None => {
                let p = port(text, index)?;
                Ok(p..=p)
            }
        },
    }
}

pub(super) fn parse_lanes(raw: &[RawLane]) -> Result<LaneRules, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (index, r) in raw.iter().enumerate() {
        let protocol = match r.protocol.as_deref() {
            None | Some("any") => LaneProtocol::Any,
            Some("udp") => LaneProtocol::Udp,
            Some("tcp") => LaneProtocol::Tcp,
            Some(other) => {
                return Err(invalid(
                    "lanes.protocol",
                    format!(
                        "entry {index}: {other:?} is not a protocol; use \"udp\", \"tcp\" or \"any\""
                    ),
                ));
            }
        };
        let lane = match r.lane.as_str() {
            "critical" => Lane::Critical,
            "telemetry" => Lane::Telemetry,
            "bulk" => Lane::Bulk,
            other => {
                return Err(invalid(
                    "lanes.lane",
                    format!(
                        "entry {index}: {other:?} is not a lane; use \"critical\", \"telemetry\" or \"bulk\""
                    ),
                ));
            }
        };
        rules.push(LaneRule {
            protocol,
            ports: ports(&r.ports, index)?,
            lane,
        });
    }
    LaneRules::new(rules).map_err(|reason| invalid("lanes", reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LaneRules, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            lanes: Vec<RawLane>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| invalid("lanes", e.to_string()))?;
        parse_lanes(&doc.lanes)
    }

    #[test]
    fn rtps_rules_for_domain_42() {
        let rules = parse(
            "[[lanes]]\nprotocol = \"udp\"\nports = 17911\nlane = \"critical\"\n[[lanes]]\nports = \"17900 - 18149\"\nlane = \"telemetry\"\n",
        )
        .unwrap();
        assert_eq!(
            rules.rules(),
            [
                LaneRule {
                    protocol: LaneProtocol::Udp,
                    ports: 17911..=17911,
                    lane: Lane::Critical
                },
                LaneRule {
                    protocol: LaneProtocol::Any,
                    ports: 17900..=18149,
                    lane: Lane::Telemetry
                },
            ]
        );
        assert!(parse("").unwrap().rules().is_empty());
    }

    #[test]
    fn mistakes_name_entry_and_key() {
        for (text, key, needle) in [
            (
                "[[lanes]]\nports = 70000\nlane = \"bulk\"\n",
                "lanes.ports",
                "entry 0",
            ),
            (
                "[[lanes]]\nports = \"x\"\nlane = \"bulk\"\n",
                "lanes.ports",
                "not a port",
            ),
            (
                "[[lanes]]\nports = 1\nlane = \"fast\"\n",
                "lanes.lane",
                "not a lane",
            ),
            (
                "[[lanes]]\nports = 1\nlane = \"bulk\"\nprotocol = \"sctp\"\n",
                "lanes.protocol",
                "not a protocol",
            ),
            (
                "[[lanes]]\nports = \"9-3\"\nlane = \"bulk\"\n",
                "lanes",
                "backwards",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, reason }) => {
                    assert_eq!(k, key, "{text}");
                    assert!(reason.contains(needle), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
