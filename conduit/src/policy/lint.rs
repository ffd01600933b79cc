//! [`Policy::lint`]: the mistakes a policy can contain that validation cannot refuse,
//! because the document is well-formed — it just does not do what its author meant.
//!
//! Invariant: every warning is sound. A rule reported [`PolicyWarning::Duplicate`] or
//! [`PolicyWarning::Shadowed`] is covered by another rule (every packet it allows, that
//! rule allows too), so deleting it changes no verdict; the property tests check this
//! against the engine on random packets.

use std::fmt;

use super::{Direction, PeerMatch, Policy, Protocol, Redundancy, Rule, Verdict};
use crate::PeerId;
use crate::ip::{PROTO_TCP, PROTO_UDP};

/// The port range [`PolicyWarning::RepliesBlocked`] recommends for replies: it holds every
/// system's ephemeral ports (Linux picks from 32768-60999, others from 1024 or 49152 up).
pub const REPLY_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

/// What a reply rule must cover at least: Linux's default `ip_local_port_range`, where the
/// replies of a robot's flows go. A rule covering it is itself taken for a reply rule.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Something in a policy that is probably not what its author meant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyWarning {
    /// A rule names a peer that is not a known node: it matches nothing.
    UnknownPeer {
        /// The rule's position, from 0.
        index: usize,
        /// The peer it names.
        peer: PeerId,
    },
    /// A rule repeats an earlier one exactly.
    Duplicate {
        /// The repeated rule's position.
        index: usize,
        /// The first occurrence.
        first: usize,
    },
    /// Another rule already allows everything this rule allows, so it decides nothing.
    Shadowed {
        /// The rule that never decides anything.
        index: usize,
        /// The rule that covers it.
        by: usize,
    },
    /// `default` is `allow`, so every packet passes and the rules change nothing.
    RulesIgnored {
        /// How many rules there are.
        rules: usize,
    },
    /// No rules and `default` `deny`: all mesh traffic is blocked.
    DeniesEverything,
    /// A rule lets TCP/UDP through to a port, but no rule lets the replies back (they go
    /// to the other side's ephemeral port, and the engine is stateless).
    RepliesBlocked {
        /// The rule whose flows cannot get answers.
        index: usize,
    },
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPeer { index, peer } => write!(
                f,
                "rule {index} names peer {peer}, which is not a node of this mesh: it matches \
                 nothing (check the ID with `bauxite-dispatch nodes list`)"
            ),
            Self::Duplicate { index, first } => {
                write!(f, "rule {index} repeats rule {first}; delete one of them")
            }
            Self::Shadowed { index, by } => write!(
                f,
                "rule {index} never decides anything: rule {by} already allows every packet it \
                 matches; delete it or narrow rule {by}"
            ),
            Self::RulesIgnored { rules } => write!(
                f,
                "`default` is \"allow\", so every packet passes and the {rules} rule(s) change \
                 nothing; drop `default` to make the rules an allow-list"
            ),
            Self::DeniesEverything => f.write_str(
                "no rules and `default` \"deny\": this blocks all mesh traffic; drop `default` \
                 (or write {}) to allow everything",
            ),
            Self::RepliesBlocked { index } => write!(
                f,
                "rule {index} allows flows to its ports, but no rule lets their replies back \
                 (they go to the other side's ephemeral port, and the firewall is stateless); if \
                 the flows expect answers, add a rule for the same protocol and peer with \
                 \"ports\": \"{}-{}\" (or no ports) in the reply direction",
                REPLY_PORTS.start(),
                REPLY_PORTS.end()
            ),
        }
    }
}

impl Policy {
    /// Warnings about this (already valid) policy, in rule order; `known_peers` are the
    /// nodes of the mesh (a rule naming another peer matches nothing).
    pub fn lint(&self, known_peers: &[PeerId]) -> Vec<PolicyWarning> {
        let mut warnings = Vec::new();
        match (self.rules.is_empty(), self.default) {
            (false, Verdict::Allow) => warnings.push(PolicyWarning::RulesIgnored {
                rules: self.rules.len(),
            }),
            (true, Verdict::Deny) => warnings.push(PolicyWarning::DeniesEverything),
            _ => {}
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if let PeerMatch::Peer(peer) = rule.peer
                && !known_peers.contains(&peer)
            {
                warnings.push(PolicyWarning::UnknownPeer { index, peer });
            }
            if let Some(first) = self.rules[..index].iter().position(|r| r == rule) {
                warnings.push(PolicyWarning::Duplicate { index, first });
            } else if let Some(by) = self.covering_rule(index) {
                warnings.push(PolicyWarning::Shadowed { index, by });
            } else if self.default == Verdict::Deny && !self.replies_allowed(rule) {
                warnings.push(PolicyWarning::RepliesBlocked { index });
            }
        }
        warnings
    }

    /// Another rule covering rule `index`: an earlier one first; a later one only if it
    /// is not identical (identical pairs are reported once, as a duplicate).
    fn covering_rule(&self, index: usize) -> Option<usize> {
        let rule = &self.rules[index];
        self.rules
            .iter()
            .enumerate()
            .find(|(j, other)| *j != index && other.covers(rule) && (*j < index || *other != rule))
            .map(|(j, _)| j)
    }

    /// Whether the replies of the flows `rule` allows to specific ports can pass: in each
    /// direction the rule's requests travel, some rule must allow the opposite direction
    /// to the reply ports. Rules without ports, or for other protocols, need nothing.
    fn replies_allowed(&self, rule: &Rule) -> bool {
        let Some(ports) = &rule.ports else {
            return true;
        };
        if ports.start() <= EPHEMERAL_PORTS.start() && EPHEMERAL_PORTS.end() <= ports.end() {
            return true;
        }
        let port_protocols: &[Protocol] = match rule.protocol {
            Protocol::Any => &[Protocol::Tcp, Protocol::Udp],
            Protocol::Tcp => &[Protocol::Tcp],
            Protocol::Udp => &[Protocol::Udp],
            Protocol::Number(n) if n == PROTO_TCP => &[Protocol::Tcp],
            Protocol::Number(n) if n == PROTO_UDP => &[Protocol::Udp],
            Protocol::Icmp | Protocol::Number(_) => return true,
        };
        let reply_directions: &[Direction] = match rule.direction {
            Direction::Both => &[Direction::Inbound, Direction::Outbound],
            Direction::Inbound => &[Direction::Outbound],
            Direction::Outbound => &[Direction::Inbound],
        };
        port_protocols.iter().all(|protocol| {
            reply_directions.iter().all(|direction| {
                let reply = Rule {
                    peer: rule.peer,
                    protocol: *protocol,
                    ports: Some(EPHEMERAL_PORTS),
                    direction: *direction,
                    redundancy: Redundancy::None,
                };
                self.rules.iter().any(|r| r.covers(&reply))
            })
        })
    }
}

impl Rule {
    /// Whether every packet `other` matches, `self` matches too.
    pub fn covers(&self, other: &Rule) -> bool {
        let direction = self.direction == Direction::Both || self.direction == other.direction;
        let peer = self.peer == PeerMatch::Any || self.peer == other.peer;
        let protocol = self.protocol == Protocol::Any
            || self
                .protocol
                .number()
                .is_some_and(|n| other.protocol.number() == Some(n))
            || self.protocol == other.protocol;
        let ports = match (&self.ports, &other.ports) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => {
                theirs.is_empty() || (mine.start() <= theirs.start() && theirs.end() <= mine.end())
            }
        };
        direction && peer && protocol && ports
    }
}

impl Protocol {
    /// The IP protocol number a TCP or UDP rule stands for (`Number(6)` is `Tcp`).
    fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(PROTO_TCP),
            Protocol::Udp => Some(PROTO_UDP),
            Protocol::Number(n) => Some(n),
            Protocol::Any | Protocol::Icmp => None,
        }
    }
}

#[cfg(test)]
mod tests;
