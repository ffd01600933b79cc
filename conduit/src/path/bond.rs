//! Bonding: a peer reachable at more than one direct address (two uplinks of ours, two of
//! its, two candidate pairs) keeps a second validated path beside the primary one, and
//! the node sends copies of chosen packets over it.
//!
//! Invariants: a path counts as *alive* only while authenticated packets keep arriving
//! from its address (at least one within [`BOND_ALIVE`]); nothing unauthenticated is ever
//! recorded here, so a forger cannot add a path. The set of addresses is bounded
//! ([`MAX_BOND_PATHS`]), so a peer that roams through many addresses costs no memory. The
//! bookkeeping is sans-IO: every call takes `now`.
//!
//! Why copies, not striping: a copy on a second path makes the Critical lane survive the
//! loss of either path with no retransmission and no reordering to undo (the receiver's
//! anti-replay window drops whichever copy comes second). Striping bulk across two paths
//! would add their capacities, but needs a congestion controller per path and reorders
//! packets; that is a different feature.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often a bonding node sends an authenticated keepalive to each of a peer's other
/// direct addresses, so the peer hears it there (and answers there when it bonds too).
pub const BOND_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// A direct address the peer was heard from less than this long ago is a live path.
/// Five probe intervals: one or two lost probes do not drop a path, a cut uplink is given
/// up within a second.
pub const BOND_ALIVE: Duration = Duration::from_secs(1);

/// How many direct addresses per peer the bookkeeping remembers.
pub const MAX_BOND_PATHS: usize = 4;

/// How a node uses a peer's second direct path (`[node] bonding` in the edge config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bonding {
    /// One path per peer (the default): no probes on other addresses, no copies.
    #[default]
    Off,
    /// Keep a second path alive and send a copy of every Critical-lane packet on it.
    Critical,
    /// Keep a second path alive and send a copy of every data packet on it (redundancy,
    /// not aggregation: both paths carry everything).
    All,
}

impl Bonding {
    /// The config word: `off`, `critical` or `all`.
    pub fn name(self) -> &'static str {
        match self {
            Bonding::Off => "off",
            Bonding::Critical => "critical",
            Bonding::All => "all",
        }
    }

    /// Whether a packet of `lane` gets a copy on the second path.
    pub fn copies(self, lane: crate::Lane) -> bool {
        match self {
            Bonding::Off => false,
            Bonding::Critical => lane == crate::Lane::Critical,
            Bonding::All => true,
        }
    }
}

/// The direct addresses one peer was heard from, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BondPaths {
    /// (address, last authenticated packet from it), at most [`MAX_BOND_PATHS`].
    heard: Vec<(SocketAddr, Instant)>,
    /// When to probe the other addresses next (`None`: not armed).
    next_probe: Option<Instant>,
}

impl BondPaths {
    /// Nothing heard yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An authenticated packet of the peer came from the direct address `addr`. When the
    /// table is full the address heard least recently makes room.
    pub fn heard(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(entry) = self.heard.iter_mut().find(|(a, _)| *a == addr) {
            entry.1 = entry.1.max(now);
            return;
        }
        if self.heard.len() >= MAX_BOND_PATHS
            && let Some(oldest) = self
                .heard
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(i, _)| i)
        {
            self.heard.swap_remove(oldest);
        }
        self.heard.push((addr, now));
    }

    /// Whether `addr` is a live path: heard within [`BOND_ALIVE`].
    pub fn alive(&self, addr: SocketAddr, now: Instant) -> bool {
        self.heard
            .iter()
            .any(|(a, at)| *a == addr && now.saturating_duration_since(*at) < BOND_ALIVE)
    }

    /// The second path: the live address other than `primary` heard most recently.
    pub fn secondary(&self, primary: Option<SocketAddr>, now: Instant) -> Option<SocketAddr> {
        self.heard
            .iter()
            .filter(|(a, at)| {
                Some(*a) != primary && now.saturating_duration_since(*at) < BOND_ALIVE
            })
            .max_by_key(|(_, at)| *at)
            .map(|(a, _)| *a)
    }

    /// Where to probe: every configured candidate and every remembered address, the
    /// primary too (so each end hears every path each interval even when no data flows),
    /// without repeats, at most [`MAX_BOND_PATHS`] of them.
    pub fn probe_targets(&self, candidates: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut targets: Vec<SocketAddr> = Vec::with_capacity(MAX_BOND_PATHS);
        let heard = self.heard.iter().map(|(a, _)| a);
        for addr in candidates.iter().chain(heard) {
            if targets.len() == MAX_BOND_PATHS {
                break;
            }
            if !targets.contains(addr) {
                targets.push(*addr);
            }
        }
        targets
    }

    /// When the next probe round is due, if armed.
    pub fn next_probe(&self) -> Option<Instant> {
        self.next_probe
    }

    /// Arms the probe timer (one interval from `now`) if it is not armed.
    pub fn arm(&mut self, now: Instant) {
        self.next_probe.get_or_insert(now + BOND_PROBE_INTERVAL);
    }

    /// A probe round went out at `now` (or was skipped): the next one is an interval
    /// later.
    pub fn probed(&mut self, now: Instant) {
        self.next_probe = Some(now + BOND_PROBE_INTERVAL);
    }

    /// Forgets everything (the session is gone).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test picks its clock's starting instant; everything after is derived from it.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 51820))
    }

    #[test]
    fn a_path_lives_while_heard_and_the_secondary_is_never_the_primary() {
        let t0 = origin();
        let mut bond = BondPaths::new();
        assert_eq!(bond.secondary(Some(addr(1)), t0), None);
        bond.heard(addr(1), t0);
        bond.heard(addr(2), t0 + Duration::from_millis(10));
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(bond.secondary(Some(addr(1)), t1), Some(addr(2)));
        assert_eq!(bond.secondary(Some(addr(2)), t1), Some(addr(1)));
        assert!(bond.alive(addr(1), t1));
        let late = t0 + BOND_ALIVE + Duration::from_millis(5);
        assert!(!bond.alive(addr(1), late), "not heard for BOND_ALIVE: dead");
        assert_eq!(bond.secondary(Some(addr(2)), late), None);
        assert_eq!(bond.secondary(Some(addr(1)), late), Some(addr(2)));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_stalest_address() {
        let t0 = origin();
        let mut bond = BondPaths::new();
        for i in 0..10u8 {
            bond.heard(addr(i), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(bond.heard.len(), MAX_BOND_PATHS);
        let now = t0 + Duration::from_millis(20);
        assert!(bond.alive(addr(9), now));
        assert!(!bond.alive(addr(0), now), "the oldest made room");
    }

    #[test]
    fn probes_go_to_every_address_once() {
        let t0 = origin();
        let mut bond = BondPaths::new();
        bond.heard(addr(3), t0);
        bond.heard(addr(1), t0);
        bond.heard(addr(7), t0);
        let targets = bond.probe_targets(&[addr(1), addr(2), addr(3)]);
        assert_eq!(targets, vec![addr(1), addr(2), addr(3), addr(7)]);
        assert_eq!(
            bond.probe_targets(&[addr(4), addr(5)]).len(),
            MAX_BOND_PATHS
        );
        assert_eq!(bond.next_probe(), None);
        bond.arm(t0);
        bond.arm(t0 + Duration::from_secs(9));
        assert_eq!(
            bond.next_probe(),
            Some(t0 + BOND_PROBE_INTERVAL),
            "arming twice keeps the first"
        );
        bond.probed(t0 + Duration::from_secs(1));
        assert_eq!(
            bond.next_probe(),
            Some(t0 + Duration::from_secs(1) + BOND_PROBE_INTERVAL)
        );
    }

    proptest::proptest! {
        /// Whatever is heard when, the table stays bounded, the second path is never the
        /// primary and is always alive, and probes go to each address once.
        #[test]
        fn the_second_path_is_live_and_never_the_primary(
            steps in proptest::collection::vec((0u8..8, 0u64..400), 1..200),
            primary in 0u8..8,
        ) {
            let t0 = origin();
            let mut now = t0;
            let mut bond = BondPaths::new();
            for (host, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                bond.heard(addr(host), now);
                proptest::prop_assert!(bond.heard.len() <= MAX_BOND_PATHS);
                proptest::prop_assert!(bond.alive(addr(host), now), "just heard: alive");
                let second = bond.secondary(Some(addr(primary)), now);
                if let Some(second) = second {
                    proptest::prop_assert_ne!(second, addr(primary));
                    proptest::prop_assert!(bond.alive(second, now));
                }
                let targets = bond.probe_targets(&[addr(primary), addr(host)]);
                proptest::prop_assert!(targets.len() <= MAX_BOND_PATHS);
                let mut unique = targets.clone();
                unique.sort();
                unique.dedup();
                proptest::prop_assert_eq!(unique.len(), targets.len());
            }
        }
    }

    #[test]
    fn only_the_chosen_lanes_are_copied() {
        use crate::Lane;
        assert!(!Bonding::Off.copies(Lane::Critical));
        assert!(Bonding::Critical.copies(Lane::Critical));
        assert!(!Bonding::Critical.copies(Lane::Bulk));
        assert!(Bonding::All.copies(Lane::Bulk));
        assert_eq!(Bonding::default(), Bonding::Off);
        assert_eq!(Bonding::All.name(), "all");
    }
}
