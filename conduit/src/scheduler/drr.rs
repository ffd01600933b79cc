//! Byte-based deficit round robin between the telemetry and bulk lanes.
//!
//! Invariant: while both lanes stay backlogged, each lane is served within one round, and
//! over time the bytes served approach the ratio of the quanta; a lane that runs empty
//! forfeits its credit, so idle time cannot be saved up into a burst.
//!
//! `next` is a pure function of the state and the two head-of-line sizes, which lets
//! `peek_lane` predict the lane `dequeue` will take from.

use crate::Lane;

const TELEMETRY: usize = 0;
const BULK: usize = 1;

/// Round robin state: whose turn it is, whether that turn's quantum was granted, and the
/// unspent credit of each lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Drr {
    quantum: [usize; 2],
    deficit: [usize; 2],
    turn: usize,
    credited: bool,
}

impl Drr {
    pub(super) fn new(telemetry_quantum: usize, bulk_quantum: usize) -> Self {
        Self {
            quantum: [telemetry_quantum, bulk_quantum],
            deficit: [0, 0],
            turn: TELEMETRY,
            credited: false,
        }
    }

    /// Picks the lane to serve given each lane's head-of-line size (`None`: empty), and
    /// returns the state to keep if that packet is taken.
    pub(super) fn next(
        self,
        telemetry: Option<usize>,
        bulk: Option<usize>,
    ) -> Option<(Lane, Self)> {
        let heads = [telemetry, bulk];
        let mut state = self;
        match heads {
            [None, None] => return None,
            // Only one lane backlogged: nothing to share, serve it and keep no credit, as a
            // lane that empties would lose its credit anyway.
            [Some(_), None] | [None, Some(_)] => {
                let lane = usize::from(heads[TELEMETRY].is_none());
                state.deficit = [0, 0];
                state.turn = lane;
                state.credited = true;
                return Some((lane_of(lane), state));
            }
            [Some(_), Some(_)] => {}
        }
        // Both backlogged: classic DRR. Each turn grants one quantum; the lane sends while its
        // head fits in its credit, then passes the turn. Terminates because every pass adds
        // a positive quantum; it takes about `head / quantum` passes for an oversized head.
        loop {
            let lane = state.turn;
            let head = heads[lane].unwrap_or(0);
            if !state.credited {
                state.deficit[lane] = state.deficit[lane].saturating_add(state.quantum[lane]);
                state.credited = true;
            }
            if head <= state.deficit[lane] {
                state.deficit[lane] -= head;
                return Some((lane_of(lane), state));
            }
            state.turn = 1 - lane;
            state.credited = false;
        }
    }
}

fn lane_of(index: usize) -> Lane {
    if index == BULK {
        Lane::Bulk
    } else {
        Lane::Telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `rounds` packets from two always-backlogged lanes with fixed sizes and
    /// returns the bytes each lane sent.
    fn share(telemetry_len: usize, bulk_len: usize, rounds: usize) -> [usize; 2] {
        let mut drr = Drr::new(4500, 1500);
        let mut sent = [0, 0];
        for _ in 0..rounds {
            let (lane, next) = drr.next(Some(telemetry_len), Some(bulk_len)).unwrap();
            drr = next;
            let len = if lane == Lane::Bulk {
                bulk_len
            } else {
                telemetry_len
            };
            sent[usize::from(lane == Lane::Bulk)] += len;
        }
        sent
    }

    #[test]
    fn shares_bytes_three_to_one() {
        for (t, b) in [(1500, 1500), (200, 1400), (1400, 200), (9000, 64)] {
            let [tel, bulk] = share(t, b, 20_000);
            let ratio = tel as f64 / bulk as f64;
            assert!((2.5..3.5).contains(&ratio), "sizes {t}/{b}: ratio {ratio}");
        }
    }

    #[test]
    fn oversized_heads_still_get_served() {
        let [tel, bulk] = share(65_535, 65_535, 40);
        assert!(tel > 0 && bulk > 0);
    }

    #[test]
    fn single_backlogged_lane_is_served_and_keeps_no_credit() {
        let (lane, drr) = Drr::new(4500, 1500).next(None, Some(60_000)).unwrap();
        assert_eq!(lane, Lane::Bulk);
        assert_eq!(drr.deficit, [0, 0]);
        assert_eq!(Drr::new(1, 1).next(None, None), None);
    }
}
