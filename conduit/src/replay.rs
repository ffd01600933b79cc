//! Sliding anti-replay window (RFC 6479, as WireGuard uses it).
//!
//! Invariant: a counter is accepted at most once, and only if it is newer than the
//! highest accepted counter or at most [`WINDOW`] behind it. Reordering inside the window
//! is tolerated, which is also what de-duplicates one packet arriving over two bonded
//! paths. The window is only advanced *after* a packet authenticated
//! ([`ReplayWindow::check`] then [`ReplayWindow::commit`]), so forged counters cannot
//! push genuine packets out of it.

const WORD_BITS: u64 = 64;
const RING_WORDS: usize = 128;

/// How far behind the newest accepted counter a packet may arrive (8128 packets).
pub const WINDOW: u64 = (RING_WORDS as u64 - 1) * WORD_BITS;

/// Replay state of one receiving session: 1 KiB, no allocation after construction.
#[derive(Clone)]
pub struct ReplayWindow {
    bitmap: [u64; RING_WORDS],
    /// Highest accepted counter; meaningful once `any` is set.
    last: u64,
    any: bool,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            bitmap: [0; RING_WORDS],
            last: 0,
            any: false,
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("last", &self.last)
            .field("any", &self.any)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted. Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if !self.any || counter > self.last {
            return true;
        }
        if self.last - counter > WINDOW {
            return false;
        }
        let (word, bit) = position(counter);
        self.bitmap[word] & bit == 0
    }

    /// Whether `counter` was already accepted and is still inside the window (a
    /// duplicate), as opposed to older than the window (stale).
    pub fn seen(&self, counter: u64) -> bool {
        if !self.any || counter > self.last || self.last - counter > WINDOW {
            return false;
        }
        let (word, bit) = position(counter);
        self.bitmap[word] & bit != 0
    }

    /// Records `counter` as received. Call only after [`check`](Self::check) passed and the
    /// packet authenticated; returns false (and changes nothing) if it is a replay.
    pub fn commit(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.any || counter > self.last {
            let current = if self.any { self.last / WORD_BITS } else { 0 };
            let target = counter / WORD_BITS;
            let to_clear = (target - current).min(RING_WORDS as u64);
            for step in 1..=to_clear {
                self.bitmap[((current + step) % RING_WORDS as u64) as usize] = 0;
            }
            if !self.any {
                self.bitmap[(target % RING_WORDS as u64) as usize] = 0;
            }
            self.last = counter;
            self.any = true;
        }
        let (word, bit) = position(counter);
        self.bitmap[word] |= bit;
        true
    }

    /// Highest accepted counter, if any packet was accepted.
    pub fn highest(&self) -> Option<u64> {
        self.any.then_some(self.last)
    }
}

fn position(counter: u64) -> (usize, u64) {
    let word = ((counter / WORD_BITS) % RING_WORDS as u64) as usize;
    (word, 1u64 << (counter % WORD_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_then_duplicate() {
        let mut w = ReplayWindow::default();
        for c in 0..5000 {
            assert!(w.commit(c));
        }
        assert!(!w.commit(4999));
        assert!(!w.commit(4000));
        assert_eq!(w.highest(), Some(4999));
    }

    #[test]
    fn reordered_inside_window_accepted_once() {
        let mut w = ReplayWindow::default();
        assert!(w.commit(10_000));
        assert!(w.commit(10_000 - WINDOW));
        assert!(!w.commit(10_000 - WINDOW));
        assert!(
            !w.check(10_000 - WINDOW - 1),
            "one past the window is stale"
        );
        assert!(w.commit(9_999));
    }

    #[test]
    fn window_is_at_least_2048() {
        let mut w = ReplayWindow::default();
        assert!(w.commit(5000));
        for c in (5000 - 2048)..5000 {
            assert!(w.commit(c), "counter {c} inside 2048 must be accepted");
        }
    }

    #[test]
    fn big_jump_clears_old_bits() {
        let mut w = ReplayWindow::default();
        assert!(w.commit(1));
        assert!(w.commit(1 + 64 * RING_WORDS as u64));
        // The word that held counter 1 was reused; counter 1 is now too old anyway.
        assert!(!w.check(1));
        assert!(w.commit(64 * RING_WORDS as u64 + 2));
    }

    #[test]
    fn check_does_not_mutate() {
        let mut w = ReplayWindow::default();
        assert!(w.check(5));
        assert!(w.check(5));
        assert!(w.commit(5));
        assert!(!w.check(5));
    }

    proptest! {
        /// The window agrees with a reference model on every step of any sequence.
        #[test]
        fn matches_reference_model(
            ops in proptest::collection::vec(
                prop_oneof![
                    (0u64..20_000).prop_map(|c| c),
                    (0u64..300).prop_map(|c| c + 1_000_000),
                    Just(u64::MAX),
                ],
                1..400,
            )
        ) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut last: Option<u64> = None;
            for c in ops {
                let expect = !seen.contains(&c)
                    && match last { None => true, Some(l) => c > l || l - c <= WINDOW };
                prop_assert_eq!(w.check(c), expect);
                let in_window = last.is_some_and(|l| c <= l && l - c <= WINDOW);
                prop_assert_eq!(w.seen(c), seen.contains(&c) && in_window);
                prop_assert_eq!(w.commit(c), expect);
                if expect {
                    seen.insert(c);
                    last = Some(last.map_or(c, |l| l.max(c)));
                }
                prop_assert_eq!(w.highest(), last);
            }
        }
    }
}
