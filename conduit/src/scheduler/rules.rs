//! [`LaneRules`]: lanes chosen by port, configured by the operator — e.g. a ROS 2
//! participant's RTPS data port to [`Lane::Critical`] for `/cmd_vel`, or a whole DDS
//! domain to [`Lane::Telemetry`] — without code changes.
//!
//! Invariant: the rules are consulted only for TCP and UDP packets that the built-in
//! size and ICMP rule did not already put on the critical lane, first match wins, and
//! there are at most [`MAX_LANE_RULES`] of them, so classifying stays a short bounded
//! scan with no allocation.

use std::ops::RangeInclusive;

use crate::Lane;
use crate::ip::{IpView, PROTO_TCP, PROTO_UDP};

/// Most rules a node takes (a config with more is refused).
pub const MAX_LANE_RULES: usize = 64;

/// Which transport a lane rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneProtocol {
    /// TCP and UDP.
    Any,
    /// TCP only.
    Tcp,
    /// UDP only (RTPS).
    Udp,
}

/// One rule: packets whose source *or* destination port is in `ports` go to `lane`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneRule {
    /// Which transport.
    pub protocol: LaneProtocol,
    /// Which ports (either direction, so replies ride the same lane).
    pub ports: RangeInclusive<u16>,
    /// The lane.
    pub lane: Lane,
}

/// An ordered list of [`LaneRule`]s (empty by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneRules {
    rules: Vec<LaneRule>,
}

impl LaneRules {
    /// Checks the count and that no range is inverted; the error names the rule.
    pub fn new(rules: Vec<LaneRule>) -> Result<Self, String> {
        if rules.len() > MAX_LANE_RULES {
            return Err(format!(
                "{} lane rules; at most {MAX_LANE_RULES} are allowed (merge port ranges)",
                rules.len()
            ));
        }
        if let Some((i, r)) = rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.ports.start() > r.ports.end())
        {
            return Err(format!(
                "lane rule {i}: ports {}-{} run backwards; write the lower port first",
                r.ports.start(),
                r.ports.end()
            ));
        }
        Ok(Self { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[LaneRule] {
        &self.rules
    }

    /// The lane of the first rule matching `view`, if any.
    pub(crate) fn lane_for(&self, view: &IpView<'_>) -> Option<Lane> {
        if self.rules.is_empty() {
            return None;
        }
        let protocol = view.protocol();
        let (src, dst) = (view.src_port()?, view.dst_port()?);
        self.rules.iter().find_map(|r| {
            let proto_ok = match r.protocol {
                LaneProtocol::Any => protocol == PROTO_TCP || protocol == PROTO_UDP,
                LaneProtocol::Tcp => protocol == PROTO_TCP,
                LaneProtocol::Udp => protocol == PROTO_UDP,
            };
            (proto_ok && (r.ports.contains(&src) || r.ports.contains(&dst))).then_some(r.lane)
        })
    }
}
