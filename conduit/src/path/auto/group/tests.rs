use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const QUIET_FOR: Duration = Duration::from_secs(1);
const NOISY_FOR: Duration = Duration::from_millis(50);

/// Some origin for test time; only differences from it matter.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// The decision as first written: every report looks at every member's last report.
#[derive(Default)]
struct Reference {
    members: BTreeMap<usize, Report>,
    mode: Option<Mode>,
}

impl Reference {
    fn report(&mut self, id: usize, report: Report, now: Instant) -> Mode {
        if let Some(slot) = self.members.get_mut(&id) {
            *slot = report;
        }
        let held = |since: Option<Instant>, hold: Duration| {
            since.is_some_and(|since| now.saturating_duration_since(since) >= hold)
        };
        let mut busy = self
            .members
            .values()
            .filter(|r| {
                r.last_sent
                    .is_some_and(|at| now.saturating_duration_since(at) < QUIET_FOR)
            })
            .peekable();
        let mode = self.mode.unwrap_or(Mode::Adaptive);
        let next = match mode {
            Mode::Adaptive => {
                let any = busy.peek().is_some();
                if any && busy.all(|r| held(r.quiet_since, QUIET_FOR)) {
                    Mode::Rate
                } else {
                    Mode::Adaptive
                }
            }
            Mode::Rate => {
                if busy.any(|r| held(r.noisy_since, NOISY_FOR)) {
                    Mode::Adaptive
                } else {
                    Mode::Rate
                }
            }
        };
        self.mode = Some(next);
        next
    }
}

/// What a member's path shows at one report, as [`AutoBulk`](super::super::AutoBulk)
/// turns its adaptive target into a report.
#[derive(Clone, Copy, Debug)]
enum Path {
    Quiet,
    Between,
    Jittery,
}

/// One step of a script.
#[derive(Clone, Copy, Debug)]
enum Step {
    Join,
    /// The `n`th member (modulo those present) leaves.
    Leave(usize),
    /// Time moves on by this many ms (a negative step: a peer's events stamped a
    /// little earlier than the last, as when peers are driven one after the other).
    Wait(i64),
    /// The `n`th member reports: whether it sent bulk since its last report, and its path.
    Report(usize, bool, Path),
}

/// Runs `script` on a group and on the reference; the modes agree after every report.
fn agree(script: &[Step]) -> Vec<Mode> {
    let t0 = origin() + Duration::from_secs(10);
    let group = AutoGroup::new();
    let mut reference = Reference::default();
    let mut members: Vec<(usize, Report)> = Vec::new();
    let mut now = t0;
    let mut modes = Vec::new();
    for &step in script {
        match step {
            Step::Join => {
                let id = group.join();
                reference.members.insert(id, Report::default());
                members.push((id, Report::default()));
            }
            Step::Leave(n) if !members.is_empty() => {
                let (id, _) = members.remove(n % members.len());
                group.leave(id);
                reference.members.remove(&id);
            }
            Step::Leave(_) => {}
            Step::Wait(ms) => {
                let step = Duration::from_millis(ms.unsigned_abs());
                now = if ms < 0 { now - step } else { now + step };
            }
            Step::Report(n, sent, path) if !members.is_empty() => {
                let i = n % members.len();
                let (id, mut r) = members[i];
                if sent {
                    r.last_sent = Some(now);
                }
                let since = |flag: bool, since: Option<Instant>| flag.then(|| since.unwrap_or(now));
                r.quiet_since = since(matches!(path, Path::Quiet), r.quiet_since);
                r.noisy_since = since(matches!(path, Path::Jittery), r.noisy_since);
                members[i].1 = r;
                let mode = group.report(id, r, now, QUIET_FOR, NOISY_FOR);
                assert_eq!(mode, reference.report(id, r, now), "after {step:?}");
                assert_eq!(group.mode(), mode);
                modes.push(mode);
            }
            Step::Report(..) => {}
        }
    }
    modes
}

/// `n` reports of member `m`, `every` ms apart.
fn reports(m: usize, n: usize, every: i64, sent: bool, path: Path) -> Vec<Step> {
    (0..n)
        .flat_map(|_| [Step::Report(m, sent, path), Step::Wait(every)])
        .collect()
}

#[test]
fn the_aggregates_decide_as_looking_at_every_member_did() {
    use Path::*;
    use Step::*;
    let mut script = vec![Join, Join, Join];
    // a sends on a quiet path: the rate model after a second.
    script.extend(reports(0, 120, 10, true, Quiet));
    // b starts on a path between the thresholds: it does not pull the node back...
    script.extend(reports(1, 20, 10, true, Between));
    // ...and jitters: back to the window 50 ms later.
    script.extend(reports(1, 10, 10, true, Jittery));
    // b stops sending while c reports jitter without sending: a decides again, a
    // second after b's last packet.
    for _ in 0..150 {
        script.extend([Report(0, true, Quiet), Report(1, false, Jittery)]);
        script.extend([Report(2, false, Jittery), Wait(10)]);
    }
    // Peers driven one after the other: stamps go back by a millisecond at times.
    for _ in 0..100 {
        script.extend([
            Report(0, true, Quiet),
            Wait(-1),
            Report(1, true, Quiet),
            Wait(6),
        ]);
    }
    // b leaves while jittery; a newcomer takes its slot and sends on a quiet path.
    script.extend(reports(1, 10, 10, true, Jittery));
    script.extend([Leave(1), Join]);
    for _ in 0..150 {
        script.extend([Report(0, true, Quiet), Report(2, true, Quiet), Wait(10)]);
    }
    let modes = agree(&script);
    let switches = modes.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 4, "the script changes the mode: {switches}");
    assert_eq!(modes.last(), Some(&Mode::Rate));
}

fn step() -> impl Strategy<Value = Step> {
    let path = prop_oneof![Just(Path::Quiet), Just(Path::Between), Just(Path::Jittery)];
    prop_oneof![
        1 => Just(Step::Join),
        1 => (0..8usize).prop_map(Step::Leave),
        6 => (-2i64..400).prop_map(Step::Wait),
        20 => (0..8usize, any::<bool>(), path).prop_map(|(n, s, p)| Step::Report(n, s, p)),
    ]
}

proptest! {
    #[test]
    fn any_script_decides_as_looking_at_every_member_did(
        script in proptest::collection::vec(step(), 1..600)
    ) {
        agree(&script);
    }
}
