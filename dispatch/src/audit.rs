//! The tamper-evident audit log: a hash chain of entries, built and verified without IO.
//!
//! Invariant: entry `i` is stored under key `i`, carries `prev` = hash of entry `i - 1`
//! (all zeros for entry 0), and its `hash` is BLAKE3 (derive-key mode, context
//! [`CHAIN_CONTEXT`]) over `prev || postcard(body)`. The store also keeps the head (length
//! and last hash), so deleting the newest entries is detected too. [`verify`] names the
//! first entry that breaks any of this.
//!
//! What this does not stop: someone who can rewrite the database *and* recompute every
//! later hash and the head. Record the head printed by `audit verify` somewhere else (a
//! ticket, a log shipper) to detect that.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

pub mod page;

/// BLAKE3 derive-key context of the chain hash.
pub const CHAIN_CONTEXT: &str = "bauxite-dispatch 2026 audit chain";

/// The hashed content of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBody {
    /// Position in the log, from 0.
    pub index: u64,
    /// When it happened.
    pub at: UnixTime,
    /// Who did it: `admin`, `node:<id>`, or `hub`.
    pub actor: String,
    /// What kind of action (e.g. `token.create`, `node.provision`).
    pub action: String,
    /// Human-readable details.
    pub detail: String,
    /// Hash of the previous entry.
    pub prev: [u8; 32],
}

/// One stored entry: the body and its chain hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The hashed content.
    pub body: AuditBody,
    /// `chain_hash(body.prev, body)`.
    pub hash: [u8; 32],
}

/// The end of the chain: how many entries and the last hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Number of entries.
    pub len: u64,
    /// Hash of the last entry (zeros when empty).
    pub hash: [u8; 32],
}

/// The first problem [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditProblem {
    /// The stored bytes at this position do not decode.
    #[error("entry {index} is unreadable (bytes edited)")]
    Undecodable {
        /// Storage key.
        index: u64,
    },
    /// An index is missing from the sequence.
    #[error("entry {index} is missing (deleted)")]
    Missing {
        /// The missing index.
        index: u64,
    },
    /// The entry stored at a position claims another index.
    #[error("entry at position {position} is entry {claims} (entries reordered)")]
    Reordered {
        /// Storage key.
        position: u64,
        /// The index inside the entry.
        claims: u64,
    },
    /// The entry's hash does not match its content.
    #[error("entry {index} (id {id}) was edited: its content no longer matches its hash")]
    Edited {
        /// The entry.
        index: u64,
        /// Its recorded hash, shortened.
        id: EntryId,
    },
    /// The entry does not link to the one before it.
    #[error("entry {index} (id {id}) does not link to entry {}: an entry before it was replaced", index.saturating_sub(1))]
    BrokenLink {
        /// The entry.
        index: u64,
        /// Its recorded hash, shortened.
        id: EntryId,
    },
    /// The log is shorter than the recorded head.
    #[error("entries {found}..{recorded} are missing (the log was truncated)")]
    Truncated {
        /// Entries found.
        found: u64,
        /// Entries the head records.
        recorded: u64,
    },
    /// The last entry is not the one the head records.
    #[error("the last entry {index} is not the one the head records (replaced)")]
    HeadMismatch {
        /// The last entry.
        index: u64,
    },
}

/// The first 8 bytes of an entry hash, as printed by `audit show`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EntryId(pub [u8; 8]);

impl EntryId {
    /// The ID of a full hash.
    pub fn of(hash: &[u8; 32]) -> Self {
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        Self(id)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({self})")
    }
}

/// The chain hash of a body (which includes its `prev`).
pub fn chain_hash(body: &AuditBody) -> [u8; 32] {
    // postcard of a struct of integers, strings and arrays is deterministic: the canonical form.
    let bytes = postcard::to_allocvec(body).unwrap_or_default();
    let mut hasher = blake3::Hasher::new_derive_key(CHAIN_CONTEXT);
    hasher.update(&body.prev);
    hasher.update(&bytes);
    *hasher.finalize().as_bytes()
}

impl AuditEntry {
    /// The entry that follows `head`.
    pub fn next(head: &AuditHead, at: UnixTime, actor: &str, action: &str, detail: String) -> Self {
        let body = AuditBody {
            index: head.len,
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail,
            prev: head.hash,
        };
        let hash = chain_hash(&body);
        Self { body, hash }
    }

    /// The head after appending this entry.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            len: self.body.index + 1,
            hash: self.hash,
        }
    }

    /// Short ID for display.
    pub fn id(&self) -> EntryId {
        EntryId::of(&self.hash)
    }

    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Verifies a log given as `(storage key, stored bytes)` in key order, against the recorded
/// head. Returns the head it recomputed.
pub fn verify<'a>(
    stored: impl IntoIterator<Item = (u64, &'a [u8])>,
    recorded: &AuditHead,
) -> Result<AuditHead, AuditProblem> {
    let mut head = AuditHead::default();
    for (position, bytes) in stored {
        if position != head.len {
            return Err(AuditProblem::Missing { index: head.len });
        }
        let entry: AuditEntry = postcard::from_bytes(bytes)
            .map_err(|_| AuditProblem::Undecodable { index: position })?;
        if entry.body.index != position {
            return Err(AuditProblem::Reordered {
                position,
                claims: entry.body.index,
            });
        }
        if chain_hash(&entry.body) != entry.hash {
            return Err(AuditProblem::Edited {
                index: position,
                id: entry.id(),
            });
        }
        if entry.body.prev != head.hash {
            return Err(AuditProblem::BrokenLink {
                index: position,
                id: entry.id(),
            });
        }
        head = entry.head();
    }
    if head.len < recorded.len {
        return Err(AuditProblem::Truncated {
            found: head.len,
            recorded: recorded.len,
        });
    }
    if head != *recorded {
        return Err(AuditProblem::HeadMismatch {
            index: head.len.saturating_sub(1),
        });
    }
    Ok(head)
}

#[cfg(test)]
mod tests;
