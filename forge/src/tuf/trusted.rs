//! The trusted metadata set: TUF client workflow steps 5.3 to 5.6 as a pure state
//! machine. Bytes go in with the `now` fixed at construction; verdicts come out. No IO.
//!
//! Invariant: metadata enters the set only after its signatures reached the threshold of
//! the keys that delegate it, its version passed the rollback rules against what was
//! trusted before, and (for remote bytes) its length and hashes matched what the parent
//! metadata signed. Order is enforced: root, then timestamp, then snapshot, then targets.
//!
//! Local metadata is loaded through the same calls as remote metadata, so after a root
//! rotation a local timestamp or snapshot signed by keys the new root no longer lists is
//! simply not trusted, and its versions stop pinning the repository: that is the
//! fast-forward attack recovery of section 5.3.11.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::hashes::check_bytes;
use super::metadata::{
    Envelope, Header, RootMeta, SnapshotMeta, TargetsMeta, TimestampMeta, TopRole, parse_envelope,
};
use super::refusal::Refusal;
use super::verify::verify_threshold;

/// Metadata that passed verification, with the exact bytes that were verified.
#[derive(Debug, Clone)]
pub(crate) struct Verified<T> {
    pub(crate) meta: T,
    pub(crate) bytes: Vec<u8>,
}

/// Outcome of offering a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampOutcome {
    /// A newer timestamp is now trusted.
    Updated,
    /// Same version as the trusted one: the offered file is ignored, whatever it says.
    Unchanged,
}

/// Root, timestamp, snapshot and the targets roles loaded so far, all verified.
#[derive(Debug)]
pub(crate) struct TrustedSet {
    now: Timestamp,
    root: Verified<RootMeta>,
    timestamp: Option<Verified<TimestampMeta>>,
    snapshot: Option<Verified<SnapshotMeta>>,
    targets: BTreeMap<String, Verified<TargetsMeta>>,
    // (role, delegator) pairs whose delegation was verified: a role reached through
    // another delegator is verified again against that delegator's keys.
    edges: BTreeSet<(String, String)>,
}

fn expired(role: &str, header: &Header, now: Timestamp) -> Result<(), Refusal> {
    if header.expires <= now {
        return Err(Refusal::Expired {
            role: role.to_owned(),
            expires: header.expires,
            now,
        });
    }
    Ok(())
}

impl TrustedSet {
    /// Trusts `root_bytes` as the anchor: it must be signed by its own root threshold.
    pub(crate) fn new(root_bytes: &[u8], now: Timestamp) -> Result<Self, Refusal> {
        let env = parse_envelope("root", root_bytes)?;
        let root = RootMeta::parse(&env.signed)?;
        verify_top(&root, TopRole::Root, "root", &env)?;
        Ok(Self {
            now,
            root: Verified {
                meta: root,
                bytes: root_bytes.to_vec(),
            },
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            edges: BTreeSet::new(),
        })
    }

    /// The trusted root.
    pub(crate) fn root(&self) -> &Verified<RootMeta> {
        &self.root
    }

    /// The trusted timestamp, if any.
    pub(crate) fn timestamp(&self) -> Option<&Verified<TimestampMeta>> {
        self.timestamp.as_ref()
    }

    /// A loaded targets role by name.
    pub(crate) fn targets(&self, role: &str) -> Option<&Verified<TargetsMeta>> {
        self.targets.get(role)
    }

    /// Whether `role` was verified as delegated by `delegator`.
    pub(crate) fn has_edge(&self, role: &str, delegator: &str) -> bool {
        self.edges
            .contains(&(role.to_owned(), delegator.to_owned()))
    }

    /// Section 5.3.4-5.3.8: root N+1 must be signed by the thresholds of root N and of
    /// itself, and carry version N+1. Expiry is not checked until the last root.
    pub(crate) fn update_root(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        if self.timestamp.is_some() {
            return Err(Refusal::Malformed {
                role: "root".to_owned(),
                reason: "root offered after timestamp".to_owned(),
            });
        }
        let env = parse_envelope("root", bytes)?;
        let new = RootMeta::parse(&env.signed)?;
        verify_top(&self.root.meta, TopRole::Root, "root (trusted keys)", &env)?;
        let expected = self.root.meta.header.version + 1;
        if new.header.version != expected {
            return Err(Refusal::VersionMismatch {
                role: "root".to_owned(),
                expected,
                found: new.header.version,
            });
        }
        verify_top(&new, TopRole::Root, "root (new keys)", &env)?;
        self.root = Verified {
            meta: new,
            bytes: bytes.to_vec(),
        };
        Ok(())
    }

    /// Section 5.3.10: the final root must not be expired (freeze attack).
    pub(crate) fn check_root_fresh(&self) -> Result<(), Refusal> {
        expired("root", &self.root.meta.header, self.now)
    }

    /// Section 5.4: offers a timestamp. A newer one is trusted even if expired (so it
    /// still pins versions against rollback) but then refused as final.
    pub(crate) fn update_timestamp(&mut self, bytes: &[u8]) -> Result<TimestampOutcome, Refusal> {
        self.check_root_fresh()?;
        let env = parse_envelope("timestamp", bytes)?;
        let new = TimestampMeta::parse(&env.signed)?;
        verify_top(&self.root.meta, TopRole::Timestamp, "timestamp", &env)?;
        if let Some(old) = &self.timestamp {
            let (trusted, offered) = (old.meta.header.version, new.header.version);
            if offered < trusted {
                return Err(Refusal::Rollback {
                    role: "timestamp".to_owned(),
                    trusted,
                    offered,
                });
            }
            if offered == trusted {
                return Ok(TimestampOutcome::Unchanged);
            }
            let (trusted, offered) = (old.meta.snapshot.version, new.snapshot.version);
            if offered < trusted {
                return Err(Refusal::Rollback {
                    role: "snapshot (in timestamp)".to_owned(),
                    trusted,
                    offered,
                });
            }
        }
        self.timestamp = Some(Verified {
            meta: new,
            bytes: bytes.to_vec(),
        });
        self.check_timestamp_final()?;
        Ok(TimestampOutcome::Updated)
    }

    fn check_timestamp_final(&self) -> Result<&TimestampMeta, Refusal> {
        let ts = self.timestamp.as_ref().ok_or_else(|| Refusal::Malformed {
            role: "timestamp".to_owned(),
            reason: "no trusted timestamp".to_owned(),
        })?;
        expired("timestamp", &ts.meta.header, self.now)?;
        Ok(&ts.meta)
    }

    /// Section 5.5: offers a snapshot. `local` bytes come from the trusted directory and
    /// skip the timestamp's hashes (they may be an older snapshot kept for rollback checks).
    pub(crate) fn update_snapshot(&mut self, bytes: &[u8], local: bool) -> Result<(), Refusal> {
        if !self.targets.is_empty() {
            return Err(Refusal::Malformed {
                role: "snapshot".to_owned(),
                reason: "snapshot offered after targets".to_owned(),
            });
        }
        let listed = self.check_timestamp_final()?.snapshot.clone();
        if !local {
            check_length_limit("snapshot", bytes, listed.length)?;
            check_bytes("snapshot", bytes, listed.length, listed.hashes.as_ref())?;
        }
        let env = parse_envelope("snapshot", bytes)?;
        let new = SnapshotMeta::parse(&env.signed)?;
        verify_top(&self.root.meta, TopRole::Snapshot, "snapshot", &env)?;
        if let Some(old) = &self.snapshot {
            for (file, info) in &old.meta.meta {
                let Some(offered) = new.meta.get(file) else {
                    return Err(Refusal::RemovedFromSnapshot { file: file.clone() });
                };
                if offered.version < info.version {
                    return Err(Refusal::Rollback {
                        role: file.clone(),
                        trusted: info.version,
                        offered: offered.version,
                    });
                }
            }
        }
        self.snapshot = Some(Verified {
            meta: new,
            bytes: bytes.to_vec(),
        });
        self.check_snapshot_final().map(|_| ())
    }

    fn check_snapshot_final(&self) -> Result<&SnapshotMeta, Refusal> {
        let listed = self.check_timestamp_final()?.snapshot.version;
        let snap = self.snapshot.as_ref().ok_or_else(|| Refusal::Malformed {
            role: "snapshot".to_owned(),
            reason: "no trusted snapshot".to_owned(),
        })?;
        expired("snapshot", &snap.meta.header, self.now)?;
        if snap.meta.header.version != listed {
            return Err(Refusal::VersionMismatch {
                role: "snapshot".to_owned(),
                expected: listed,
                found: snap.meta.header.version,
            });
        }
        Ok(&snap.meta)
    }

    /// The snapshot entry for a targets role, after checking the snapshot is final.
    pub(crate) fn snapshot_entry(&self, role: &str) -> Result<super::metadata::MetaFile, Refusal> {
        let file = format!("{role}.json");
        self.check_snapshot_final()?
            .meta
            .get(&file)
            .cloned()
            .ok_or(Refusal::MissingFromSnapshot { file })
    }

    /// Section 5.6 / 5.7.3: offers targets metadata for `role`, delegated by `delegator`
    /// ("root" for the top-level targets role).
    pub(crate) fn update_targets(
        &mut self,
        bytes: &[u8],
        role: &str,
        delegator: &str,
    ) -> Result<(), Refusal> {
        let listed = self.snapshot_entry(role)?;
        check_bytes(role, bytes, listed.length, listed.hashes.as_ref())?;
        let env = parse_envelope(role, bytes)?;
        let new = TargetsMeta::parse(role, &env.signed)?;
        if delegator == "root" && role == "targets" {
            verify_top(&self.root.meta, TopRole::Targets, "targets", &env)?;
        } else {
            let parent = self
                .targets
                .get(delegator)
                .ok_or_else(|| Refusal::NotDelegated {
                    role: role.to_owned(),
                    delegator: delegator.to_owned(),
                })?;
            let delegations = parent.meta.delegations.as_ref();
            let rule = delegations.and_then(|d| d.rule_for(role));
            let (Some(d), Some(rule)) = (delegations, rule) else {
                return Err(Refusal::NotDelegated {
                    role: role.to_owned(),
                    delegator: delegator.to_owned(),
                });
            };
            verify_threshold(role, &d.keys, rule, &env)?;
        }
        if new.header.version != listed.version {
            return Err(Refusal::VersionMismatch {
                role: role.to_owned(),
                expected: listed.version,
                found: new.header.version,
            });
        }
        expired(role, &new.header, self.now)?;
        self.targets.insert(
            role.to_owned(),
            Verified {
                meta: new,
                bytes: bytes.to_vec(),
            },
        );
        self.edges.insert((role.to_owned(), delegator.to_owned()));
        Ok(())
    }
}

fn check_length_limit(role: &str, bytes: &[u8], length: Option<u64>) -> Result<(), Refusal> {
    match length {
        Some(limit) if bytes.len() as u64 > limit => Err(Refusal::TooLarge {
            what: role.to_owned(),
            limit,
        }),
        _ => Ok(()),
    }
}

fn verify_top(root: &RootMeta, role: TopRole, label: &str, env: &Envelope) -> Result<(), Refusal> {
    let rule = root.rule(role).ok_or_else(|| Refusal::Malformed {
        role: "root".to_owned(),
        reason: format!("no `{}` role", role.name()),
    })?;
    verify_threshold(label, &root.keys, rule, env)
}
