//! When the online roles are signed again: a pure decision from the published expiries and
//! `now`.
//!
//! Invariant: an online role (timestamp, snapshot, targets) is re-signed once less than
//! half of its lifetime is left, so a hub that checks at least every [`CHECK_EVERY`] never
//! lets one expire while it runs (the shortest lifetime, the timestamp's day, is far
//! longer than the check interval). Root is signed offline: the hub only warns when it
//! gets close to its expiry.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// How often the hub looks at the expiries.
pub const CHECK_EVERY: Duration = Duration::from_secs(10 * 60);

/// How long before the root expires the hub starts warning.
pub const ROOT_WARNING: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The expiries of the published metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiries {
    /// `root.json`.
    pub root: Timestamp,
    /// The top-level `targets` role.
    pub targets: Timestamp,
    /// The current snapshot.
    pub snapshot: Timestamp,
    /// `timestamp.json`.
    pub timestamp: Timestamp,
}

/// What a check decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Re-sign targets (a publish then re-signs snapshot and timestamp too).
    pub targets: bool,
    /// Publish: snapshot and timestamp are signed again.
    pub publish: bool,
    /// The root expires within [`ROOT_WARNING`] (or has): sign a new one offline.
    pub root_expiring: bool,
}

fn half_gone(expires: Timestamp, lifetime: SignedDuration, now: Timestamp) -> bool {
    expires.duration_since(now) < lifetime / 2
}

/// Decides what to re-sign at `now`, given the lifetimes the repository signs with.
pub fn plan(
    expiries: &Expiries,
    lifetimes: &bauxite_forge::tuf::repo::Expiry,
    now: Timestamp,
) -> Plan {
    let targets = half_gone(expiries.targets, lifetimes.targets, now);
    let publish = targets
        || half_gone(expiries.snapshot, lifetimes.snapshot, now)
        || half_gone(expiries.timestamp, lifetimes.timestamp, now);
    Plan {
        targets,
        publish,
        root_expiring: expiries.root.duration_since(now) < ROOT_WARNING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_forge::tuf::repo::Expiry;

    #[test]
    fn re_signs_after_half_the_lifetime_and_warns_about_root() {
        let lifetimes = Expiry::default();
        let t0 = Timestamp::from_second(1_780_000_000).unwrap();
        let fresh = Expiries {
            root: t0 + lifetimes.root,
            targets: t0 + lifetimes.targets,
            snapshot: t0 + lifetimes.snapshot,
            timestamp: t0 + lifetimes.timestamp,
        };
        assert_eq!(plan(&fresh, &lifetimes, t0), Plan::default());
        // 11 hours on: the one-day timestamp still has more than half its life.
        let later = t0 + SignedDuration::from_hours(11);
        assert_eq!(plan(&fresh, &lifetimes, later), Plan::default());
        // 13 hours on: less than half left, publish (snapshot and timestamp).
        let due = t0 + SignedDuration::from_hours(13);
        let p = plan(&fresh, &lifetimes, due);
        assert!(p.publish && !p.targets && !p.root_expiring);
        // 46 days on: targets too; 340 days on: the root warning.
        let p = plan(&fresh, &lifetimes, t0 + SignedDuration::from_hours(46 * 24));
        assert!(p.publish && p.targets && !p.root_expiring);
        let p = plan(
            &fresh,
            &lifetimes,
            t0 + SignedDuration::from_hours(340 * 24),
        );
        assert!(p.root_expiring);
        // Already expired: everything is due.
        let p = plan(
            &fresh,
            &lifetimes,
            t0 + SignedDuration::from_hours(400 * 24),
        );
        assert!(p.publish && p.targets && p.root_expiring);
    }
}
