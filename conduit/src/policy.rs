//! `PolicyEngine`: an allow-list firewall for packets entering and leaving the mesh.
//!
//! Invariant: once a policy is loaded, a packet passes only if some rule allows it or the
//! policy's `default` is `allow`; adding a rule can only let more traffic through. With no
//! policy loaded the engine allows everything, so a node without a hub keeps working.
//!
//! | document | no rule matches |
//! |---|---|
//! | nothing loaded ([`PolicyEngine::new`], [`PolicyEngine::clear`]) | allow |
//! | no rules and `default` omitted: `{}`, `{"rules": []}` | allow (same as no policy) |
//! | rules and `default` omitted | deny: the rules are an allow-list |
//! | `default` given | that verdict |
//!
//! So an empty document never silently blocks a mesh, and a document with rules is
//! default-deny. The omitted `default` is resolved when the document is parsed, and
//! written back explicitly, so every reader (also an older node) sees one meaning.
//!
//! The engine is stateless: rule ports match the packet's *destination* port, so the
//! replies of an allowed flow, which go to the other side's ephemeral port, need a rule of
//! their own ([`Policy::lint`] warns when none exists).
//!
//! Policies are plain serde data, shipped by the hub as JSON, e.g.
//! `{"rules": [{"protocol": "tcp", "ports": "22", "direction": "inbound"}]}`. `ports` is a
//! port or a range written `22`, `"22"`, `"1000-2000"` or `[1000, 2000]` (`ports.rs`). [`PolicyEngine::load`] validates a policy and names the rule index and
//! field of the first problem; [`Policy::lint`] lists what is valid but probably wrong.
//! The schema is documented in `docs/policy.md` and `docs/policy.schema.json`.

mod lint;
mod ports;

pub use lint::{PolicyWarning, REPLY_PORTS};

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::ip::{IpView, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::{Error, Metrics, PeerId};

/// A firewall document: rules plus the verdict when none matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawPolicy")]
pub struct Policy {
    /// Allow rules; a packet passes if any of them matches (their order does not matter).
    pub rules: Vec<Rule>,
    /// Verdict when no rule matches. Omitted in a document, it is `deny` when there are
    /// rules and `allow` when there are none.
    pub default: Verdict,
}

/// A document as written: `default` may be omitted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    default: Option<Verdict>,
}

impl From<RawPolicy> for Policy {
    fn from(raw: RawPolicy) -> Self {
        let default = raw.default.unwrap_or(if raw.rules.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Deny
        });
        Self {
            rules: raw.rules,
            default,
        }
    }
}

/// One allow rule; omitted fields match anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which remote peer: `"any"` or its 32-hex-digit ID.
    #[serde(default)]
    pub peer: PeerMatch,
    /// Which IP protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP only); `None` matches any port and portless packets.
    #[serde(
        default,
        deserialize_with = "ports::deserialize",
        serialize_with = "ports::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub ports: Option<RangeInclusive<u16>>,
    /// Which traffic direction.
    #[serde(default)]
    pub direction: Direction,
    /// Whether the Critical-lane packets this rule lets out are sent redundantly (off
    /// unless asked for: it costs a second datagram per packet).
    #[serde(default, skip_serializing_if = "Redundancy::is_none")]
    pub redundancy: Redundancy,
}

/// How the Critical-lane packets a rule lets out are protected against loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redundancy {
    /// Each packet is sent once.
    #[default]
    None,
    /// Each packet is sent twice: the copy goes over the peer's second direct path when
    /// one is alive, else on the same path a short gap later
    /// ([`REPEAT_GAP`](crate::node::REPEAT_GAP)), so one loss burst rarely takes both.
    /// The receiver's anti-replay window drops the copy that comes second.
    Duplicate,
}

impl Redundancy {
    /// Whether this is [`Redundancy::None`].
    pub fn is_none(&self) -> bool {
        *self == Redundancy::None
    }
}

/// Which remote peer a rule applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PeerMatch {
    /// Every peer.
    #[default]
    Any,
    /// One peer.
    Peer(PeerId),
}

/// Which IP protocol a rule applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every protocol.
    #[default]
    Any,
    /// ICMP over IPv4 (1) and ICMPv6 (58).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// Exactly this IPv4 protocol / IPv6 next-header number.
    Number(u8),
}

/// The traffic directions a rule covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From this node's TUN device to a peer.
    Outbound,
    /// From a peer to this node's TUN device.
    Inbound,
    /// Both.
    #[default]
    Both,
}

/// The direction of one packet being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Leaving this node for a peer.
    Outbound,
    /// Arriving from a peer.
    Inbound,
}

/// The engine's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let the packet through.
    Allow,
    /// Drop the packet.
    Deny,
}

impl TryFrom<String> for PeerMatch {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if text == "any" {
            return Ok(PeerMatch::Any);
        }
        PeerId::from_hex(&text)
            .map(PeerMatch::Peer)
            .ok_or_else(|| format!("peer {text:?} is neither \"any\" nor a 32-hex-digit peer ID"))
    }
}

impl From<PeerMatch> for String {
    fn from(peer: PeerMatch) -> Self {
        match peer {
            PeerMatch::Any => "any".to_owned(),
            PeerMatch::Peer(id) => id.to_string(),
        }
    }
}

impl Policy {
    /// Checks every rule; the error names the first bad rule's index and field.
    pub fn validate(&self) -> Result<(), Error> {
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(ports) = &rule.ports else { continue };
            let bad = |problem: String| Error::PolicyRule {
                index,
                field: "ports",
                problem,
            };
            if ports.start() > ports.end() {
                return Err(bad(format!(
                    "range {}..={} is empty; put the lower port first",
                    ports.start(),
                    ports.end()
                )));
            }
            let has_ports = match rule.protocol {
                Protocol::Any | Protocol::Tcp | Protocol::Udp => true,
                Protocol::Number(n) => n == PROTO_TCP || n == PROTO_UDP,
                Protocol::Icmp => false,
            };
            if !has_ports {
                return Err(bad(format!(
                    "protocol {:?} has no ports; use tcp, udp or any, or drop `ports`",
                    rule.protocol
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    /// The rule as compact JSON with only the fields that narrow it, ports as text:
    /// `{"protocol":"tcp","ports":"22","direction":"inbound"}`; `{}` allows everything.
    /// (Every value is a fixed word, a number or hex, so nothing needs escaping.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = Vec::new();
        if let PeerMatch::Peer(id) = self.peer {
            fields.push(format!("\"peer\":\"{id}\""));
        }
        match self.protocol {
            Protocol::Any => {}
            Protocol::Icmp => fields.push("\"protocol\":\"icmp\"".into()),
            Protocol::Tcp => fields.push("\"protocol\":\"tcp\"".into()),
            Protocol::Udp => fields.push("\"protocol\":\"udp\"".into()),
            Protocol::Number(n) => fields.push(format!("\"protocol\":{{\"number\":{n}}}")),
        }
        if let Some(range) = &self.ports {
            fields.push(format!("\"ports\":\"{}\"", ports::to_text(range)));
        }
        match self.direction {
            Direction::Both => {}
            Direction::Inbound => fields.push("\"direction\":\"inbound\"".into()),
            Direction::Outbound => fields.push("\"direction\":\"outbound\"".into()),
        }
        if self.redundancy == Redundancy::Duplicate {
            fields.push("\"redundancy\":\"duplicate\"".into());
        }
        write!(f, "{{{}}}", fields.join(","))
    }
}

impl Rule {
    /// Whether this rule allows the packet.
    pub fn matches(&self, flow: Flow, peer: PeerId, packet: &IpView<'_>) -> bool {
        let direction = matches!(
            (self.direction, flow),
            (Direction::Both, _)
                | (Direction::Outbound, Flow::Outbound)
                | (Direction::Inbound, Flow::Inbound)
        );
        let peer = match self.peer {
            PeerMatch::Any => true,
            PeerMatch::Peer(id) => id == peer,
        };
        let protocol = match self.protocol {
            Protocol::Any => true,
            Protocol::Icmp => matches!(
                (packet.version(), packet.protocol()),
                (4, PROTO_ICMP) | (6, PROTO_ICMPV6)
            ),
            Protocol::Tcp => packet.protocol() == PROTO_TCP,
            Protocol::Udp => packet.protocol() == PROTO_UDP,
            Protocol::Number(n) => packet.protocol() == n,
        };
        let ports = match &self.ports {
            None => true,
            Some(range) => packet.dst_port().is_some_and(|port| range.contains(&port)),
        };
        direction && peer && protocol && ports
    }
}

/// The firewall: holds at most one validated policy.
#[derive(Clone, Debug, Default)]
pub struct PolicyEngine {
    policy: Option<Policy>,
    /// Whether a rule of `policy` asks for redundancy (the per-packet check is skipped
    /// otherwise).
    any_redundancy: bool,
}

impl PolicyEngine {
    /// An engine with no policy loaded: allows everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates and installs `policy`, replacing any previous one; on error keeps the old.
    pub fn load(&mut self, policy: Policy) -> Result<(), Error> {
        policy.validate()?;
        self.any_redundancy = policy.rules.iter().any(|r| !r.redundancy.is_none());
        self.policy = Some(policy);
        Ok(())
    }

    /// Unloads the policy: back to allow-all.
    pub fn clear(&mut self) {
        self.policy = None;
        self.any_redundancy = false;
    }

    /// The installed policy, if any.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Decides one packet exchanged with `peer`.
    pub fn check(&self, flow: Flow, peer: PeerId, packet: &IpView<'_>) -> Verdict {
        let Some(policy) = &self.policy else {
            return Verdict::Allow;
        };
        if policy
            .rules
            .iter()
            .any(|rule| rule.matches(flow, peer, packet))
        {
            Verdict::Allow
        } else {
            policy.default
        }
    }

    /// How an outbound packet to `peer` is protected: [`Redundancy::Duplicate`] when a
    /// rule that lets it out asks for it. Costs one pass over the rules, only when the
    /// policy has such a rule.
    pub fn redundancy(&self, peer: PeerId, packet: &IpView<'_>) -> Redundancy {
        let Some(policy) = self.policy.as_ref().filter(|_| self.any_redundancy) else {
            return Redundancy::None;
        };
        let asked = policy
            .rules
            .iter()
            .filter(|rule| rule.redundancy == Redundancy::Duplicate)
            .any(|rule| rule.matches(Flow::Outbound, peer, packet));
        if asked {
            Redundancy::Duplicate
        } else {
            Redundancy::None
        }
    }

    /// Whether any rule of the installed policy asks for redundancy.
    pub fn has_redundancy(&self) -> bool {
        self.any_redundancy
    }

    /// Like [`check`](Self::check), and counts a denial in `metrics.policy_denied`.
    pub fn check_counted(
        &self,
        flow: Flow,
        peer: PeerId,
        packet: &IpView<'_>,
        metrics: &Metrics,
    ) -> Verdict {
        let verdict = self.check(flow, peer, packet);
        if verdict == Verdict::Deny {
            Metrics::inc(&metrics.policy_denied);
        }
        verdict
    }
}

#[cfg(test)]
mod tests;
