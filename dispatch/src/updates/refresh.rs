//! Re-signing the online roles before they expire (the timer's work).

use jiff::Timestamp;
use serde_json::Value;

use super::resign::{self, Expiries, Plan};
use super::{TARGETS, UpdateRepo, lock, tuf_time};
use crate::clock::UnixTime;
use crate::pki::files;
use crate::{Error, Result};

/// Largest metadata file read to learn its expiry.
const MAX_METADATA: u64 = 16 << 20;

fn bad(what: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidArgument {
        field: "published metadata",
        problem: format!("{what}: {problem}"),
    }
}

/// The `signed` object of a published metadata file.
fn signed(path: &std::path::Path, what: &str) -> Result<Value> {
    let bytes = files::read_capped(path, MAX_METADATA)?;
    let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| bad(what, e))?;
    Ok(doc
        .get_mut("signed")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

fn expires(signed: &Value, what: &str) -> Result<Timestamp> {
    signed
        .get("expires")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(what, "no expires"))?
        .parse()
        .map_err(|e| bad(what, e))
}

impl UpdateRepo {
    /// The expiries of the metadata as published.
    pub fn expiries(&self) -> Result<Expiries> {
        let meta = self.dir.join("repo").join("metadata");
        let timestamp = signed(&meta.join("timestamp.json"), "timestamp.json")?;
        let snapshot_version = timestamp
            .pointer("/meta/snapshot.json/version")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("timestamp.json", "no snapshot version"))?;
        let name = format!("{snapshot_version}.snapshot.json");
        let snapshot = signed(&meta.join(&name), &name)?;
        let root = signed(&meta.join("root.json"), "root.json")?;
        let targets = lock(&self.repo)
            .targets(TARGETS)
            .map(|t| t.expires)
            .ok_or_else(|| bad("targets", "not published"))?;
        Ok(Expiries {
            root: expires(&root, "root.json")?,
            targets,
            snapshot: expires(&snapshot, &name)?,
            timestamp: expires(&timestamp, "timestamp.json")?,
        })
    }

    /// Re-signs what [`resign::plan`] says is due at `now`; returns the plan.
    pub fn refresh(&self, now: UnixTime) -> Result<Plan> {
        let plan = resign::plan(&self.expiries()?, &self.options.expiry, tuf_time(now));
        if plan.publish {
            let mut repo = lock(&self.repo);
            if plan.targets {
                repo.touch(TARGETS)?;
            }
            repo.publish(&self.keys.signers(), tuf_time(now))?;
        }
        Ok(plan)
    }
}
