//! Which stored entries one page of the audit log holds, without IO: forward from a cursor
//! (the admin RPC and `audit show`) or backward from one (the admin UI, newest first).
//!
//! Cursors are entry indices (storage keys), so a page stays where it was while the log
//! grows. The functions work on the key-ordered storage keys of one snapshot and answer
//! with positions into it; on a tampered log with gaps in its keys they still page
//! through every stored entry exactly once (the verification reports the gaps).

use std::ops::Range;

use super::{AuditEntry, AuditHead, AuditProblem};

/// Entries a page holds when the caller asks for no particular number.
pub const DEFAULT_LIMIT: usize = 500;
/// The most entries one page holds (a few hundred KB even with long details): a larger
/// request gets this many.
pub const MAX_LIMIT: usize = 2000;

/// The page size a request gets: [`DEFAULT_LIMIT`] for 0, at most [`MAX_LIMIT`].
pub fn limit(requested: usize) -> usize {
    if requested == 0 {
        DEFAULT_LIMIT
    } else {
        requested.min(MAX_LIMIT)
    }
}

/// A cursor that names no place in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "audit cursor {cursor} is outside the log ({entries} entries); page again from the start, without a cursor"
)]
pub struct BadCursor {
    /// The cursor as given.
    pub cursor: u64,
    /// Entries stored.
    pub entries: u64,
}

/// One page of the log with the verification of the whole chain, read from one snapshot
/// (`Hub::audit_page`).
#[derive(Clone, Debug)]
pub struct AuditPage<P> {
    /// Entries stored (all pages).
    pub total: u64,
    /// Which entries this page holds and where its neighbours start.
    pub page: P,
    /// The page's entries, oldest first. An undecodable entry is left out; `verified`
    /// then names it.
    pub entries: Vec<AuditEntry>,
    /// The whole chain checked against the recorded head, in the same snapshot: a page is
    /// only ever called verified when every entry of the log is.
    pub verified: Result<AuditHead, AuditProblem>,
}

/// A page's positions in the snapshot it was cut from.
pub trait Positions {
    /// Positions in the key-ordered snapshot.
    fn positions(&self) -> Range<usize>;
}

impl Positions for Forward {
    fn positions(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl Positions for Backward {
    fn positions(&self) -> Range<usize> {
        self.range.clone()
    }
}

/// A page read forward: positions `range` of the snapshot, and the cursor of the page
/// after it when more entries follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Positions in the snapshot.
    pub range: Range<usize>,
    /// `after` for the next page: the key of this page's last entry.
    pub next_after: Option<u64>,
}

/// The entries after `after` (all when `None`), at most `limit` (already bounded by
/// [`limit`]). `after` may be the last key (an empty page: nothing new yet) but not
/// beyond it.
pub fn forward(keys: &[u64], after: Option<u64>, limit: usize) -> Result<Forward, BadCursor> {
    let start = match after {
        None => 0,
        Some(cursor) => {
            if keys.last().is_none_or(|last| cursor > *last) {
                return Err(BadCursor {
                    cursor,
                    entries: keys.len() as u64,
                });
            }
            keys.partition_point(|k| *k <= cursor)
        }
    };
    // At least one entry, or a caller following `next_after` would stand still.
    let end = start.saturating_add(limit.max(1)).min(keys.len());
    let next_after = if end < keys.len() {
        end.checked_sub(1).and_then(|last| keys.get(last).copied())
    } else {
        None
    };
    Ok(Forward {
        range: start..end,
        next_after,
    })
}

/// Where a link to a newer page goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Newer {
    /// The newest page (no cursor: it follows the log as it grows).
    Newest,
    /// The page of the entries before this key.
    Before(u64),
}

/// A page read backward: positions `range` of the snapshot (shown newest first), and
/// the cursors of its neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backward {
    /// Positions in the snapshot.
    pub range: Range<usize>,
    /// `before` for the page of older entries, when there are any.
    pub older: Option<u64>,
    /// The page of newer entries, when there are any.
    pub newer: Option<Newer>,
}

/// The last `limit` entries before `before` (the newest when `None`). `before` may be one
/// past the last key but not further, and must leave something to show.
pub fn backward(keys: &[u64], before: Option<u64>, limit: usize) -> Result<Backward, BadCursor> {
    let end = match before {
        None => keys.len(),
        Some(cursor) => {
            let bad = BadCursor {
                cursor,
                entries: keys.len() as u64,
            };
            let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
                return Err(bad);
            };
            if cursor <= *first || cursor > last.saturating_add(1) {
                return Err(bad);
            }
            keys.partition_point(|k| *k < cursor)
        }
    };
    let limit = limit.max(1);
    let start = end.saturating_sub(limit);
    let older = if start > 0 {
        keys.get(start).copied()
    } else {
        None
    };
    let newer = (end < keys.len()).then(|| {
        let newer_end = end.saturating_add(limit);
        match keys.get(newer_end) {
            Some(key) => Newer::Before(*key),
            None => Newer::Newest,
        }
    });
    Ok(Backward {
        range: start..end,
        older,
        newer,
    })
}

#[cfg(test)]
mod tests;
