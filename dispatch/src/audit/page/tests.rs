use super::*;
use proptest::prelude::*;

/// Storage keys of a log of `n` entries, or of one with some entries deleted (gaps).
fn keys_with_gaps(n: u64, gaps: &[bool]) -> Vec<u64> {
    (0..n)
        .filter(|k| !gaps.get(*k as usize).copied().unwrap_or(false))
        .collect()
}

/// Pages forward from the start with the given limits (cycled), bounded by the log size.
fn walk_forward(keys: &[u64], limits: &[usize]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = None;
    for step in 0..=keys.len() {
        let page = forward(keys, after, limit(limits[step % limits.len()])).unwrap();
        out.extend_from_slice(&keys[page.range.clone()]);
        match page.next_after {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    keys[page.range].last(),
                    "the cursor is the last key shown"
                );
                after = Some(next);
            }
            None => return out,
        }
    }
    panic!("paging did not end after {} pages", keys.len() + 1)
}

proptest! {
    /// Paging forward with random limits yields exactly the whole log, in order, with
    /// gaps in the keys or without.
    #[test]
    fn forward_pages_yield_the_whole_log_in_order(
        n in 0u64..3000,
        gaps in proptest::collection::vec(any::<bool>(), 0..64),
        limits in proptest::collection::vec(0usize..2500, 1..8),
    ) {
        let keys = keys_with_gaps(n, &gaps);
        prop_assert_eq!(walk_forward(&keys, &limits), keys);
    }

    /// Paging backward from the newest page by the older links yields the whole log newest
    /// first; each page's newer link leads back to the page shown before it.
    #[test]
    fn backward_pages_yield_the_whole_log_newest_first(
        n in 1u64..1500,
        gaps in proptest::collection::vec(any::<bool>(), 0..64),
        size in 1usize..600,
    ) {
        let keys = keys_with_gaps(n, &gaps);
        prop_assume!(!keys.is_empty());
        let mut seen: Vec<u64> = Vec::new();
        let mut before = None;
        let mut previous: Option<Backward> = None;
        for _ in 0..=keys.len() {
            let page = backward(&keys, before, size).unwrap();
            prop_assert!(!page.range.is_empty());
            if let Some(prev) = &previous {
                // The newer link of this page shows the page we came from.
                let back = match page.newer {
                    Some(Newer::Newest) => backward(&keys, None, size).unwrap(),
                    Some(Newer::Before(k)) => backward(&keys, Some(k), size).unwrap(),
                    None => panic!("an older page without a newer link"),
                };
                prop_assert_eq!(&back.range, &prev.range);
            } else {
                prop_assert_eq!(page.newer, None);
            }
            seen.extend(keys[page.range.clone()].iter().rev());
            before = page.older;
            previous = Some(page);
            if before.is_none() {
                break;
            }
        }
        let mut reversed = keys.clone();
        reversed.reverse();
        prop_assert_eq!(seen, reversed);
    }
}

#[test]
fn limits_are_bounded() {
    assert_eq!(limit(0), DEFAULT_LIMIT);
    assert_eq!(limit(7), 7);
    assert_eq!(limit(usize::MAX), MAX_LIMIT);
    let keys: Vec<u64> = (0..5000).collect();
    let page = forward(&keys, None, limit(1_000_000)).unwrap();
    assert_eq!(page.range, 0..MAX_LIMIT);
    assert_eq!(page.next_after, Some(MAX_LIMIT as u64 - 1));
}

#[test]
fn a_cursor_at_the_end_is_an_empty_page_and_past_it_an_error() {
    let keys: Vec<u64> = (0..10).collect();
    let at_end = forward(&keys, Some(9), 5).unwrap();
    assert_eq!(
        at_end,
        Forward {
            range: 10..10,
            next_after: None
        }
    );
    let bad = forward(&keys, Some(10), 5).unwrap_err();
    assert_eq!(
        bad,
        BadCursor {
            cursor: 10,
            entries: 10
        }
    );
    assert!(bad.to_string().contains("without a cursor"), "{bad}");
    // An empty log has no cursor at all.
    assert_eq!(
        forward(&[], Some(0), 5),
        Err(BadCursor {
            cursor: 0,
            entries: 0
        })
    );
    assert_eq!(forward(&[], None, 5).unwrap().range, 0..0);
}

#[test]
fn backward_cursors_must_leave_something_to_show() {
    let keys: Vec<u64> = (0..10).collect();
    // One past the last key is the newest page; further, or at the first key, is not.
    assert_eq!(backward(&keys, Some(10), 4).unwrap().range, 6..10);
    assert_eq!(backward(&keys, Some(11), 4).unwrap_err().cursor, 11);
    assert_eq!(backward(&keys, Some(0), 4).unwrap_err().cursor, 0);
    assert_eq!(backward(&[], Some(1), 4).unwrap_err().entries, 0);
    let empty = backward(&[], None, 4).unwrap();
    assert_eq!(
        empty,
        Backward {
            range: 0..0,
            older: None,
            newer: None
        }
    );
    let oldest = backward(&keys, Some(2), 4).unwrap();
    assert_eq!(
        oldest,
        Backward {
            range: 0..2,
            older: None,
            newer: Some(Newer::Before(6))
        }
    );
}
