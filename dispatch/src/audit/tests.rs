use super::*;
use proptest::prelude::*;

fn chain(n: usize) -> (Vec<(u64, Vec<u8>)>, AuditHead) {
    let mut head = AuditHead::default();
    let mut stored = Vec::new();
    for i in 0..n {
        let e = AuditEntry::next(
            &head,
            UnixTime(1000 + i as u64),
            "admin",
            "token.create",
            format!("t{i}"),
        );
        head = e.head();
        stored.push((e.body.index, e.encode()));
    }
    (stored, head)
}

fn run(stored: &[(u64, Vec<u8>)], head: &AuditHead) -> Result<AuditHead, AuditProblem> {
    verify(stored.iter().map(|(k, v)| (*k, v.as_slice())), head)
}

fn edit(bytes: &[u8]) -> Vec<u8> {
    let mut e: AuditEntry = postcard::from_bytes(bytes).unwrap();
    e.body.detail.push('!');
    e.encode()
}

#[test]
fn intact_chain_verifies() {
    let (stored, head) = chain(5);
    assert_eq!(run(&stored, &head), Ok(head));
    assert_eq!(run(&[], &AuditHead::default()), Ok(AuditHead::default()));
}

#[test]
fn edit_with_rehash_breaks_the_next_link() {
    let (mut stored, head) = chain(4);
    let mut e: AuditEntry = postcard::from_bytes(&stored[1].1).unwrap();
    e.body.detail = "forged".into();
    e.hash = chain_hash(&e.body);
    stored[1].1 = e.encode();
    assert!(matches!(
        run(&stored, &head),
        Err(AuditProblem::BrokenLink { index: 2, .. })
    ));
}

#[test]
fn appended_without_head_is_caught() {
    let (mut stored, head) = chain(3);
    let extra = AuditEntry::next(&head, UnixTime(9), "x", "y", String::new());
    stored.push((3, extra.encode()));
    assert_eq!(
        run(&stored, &head),
        Err(AuditProblem::HeadMismatch { index: 3 })
    );
}

#[derive(Debug, Clone)]
enum Tamper {
    Edit(usize),
    Delete(usize),
    Swap(usize, usize),
    Garble(usize),
}

fn tamper() -> impl Strategy<Value = (usize, Tamper)> {
    (2usize..20).prop_flat_map(|n| {
        (
            Just(n),
            prop_oneof![
                (0..n).prop_map(Tamper::Edit),
                (0..n).prop_map(Tamper::Delete),
                (0..n, 0..n)
                    .prop_filter("distinct", |(a, b)| a != b)
                    .prop_map(|(a, b)| Tamper::Swap(a.min(b), a.max(b))),
                (0..n).prop_map(Tamper::Garble),
            ],
        )
    })
}

proptest! {
    #[test]
    fn every_tamper_is_detected_and_named((n, t) in tamper()) {
        let (mut stored, head) = chain(n);
        let result = match t {
            Tamper::Edit(i) => {
                stored[i].1 = edit(&stored[i].1);
                run(&stored, &head)
            }
            Tamper::Delete(i) => {
                stored.remove(i);
                run(&stored, &head)
            }
            Tamper::Swap(i, j) => {
                let (a, b) = (stored[i].1.clone(), stored[j].1.clone());
                stored[i].1 = b;
                stored[j].1 = a;
                run(&stored, &head)
            }
            Tamper::Garble(i) => {
                stored[i].1.truncate(3);
                run(&stored, &head)
            }
        };
        let n = n as u64;
        match (t, result) {
            (Tamper::Edit(i), Err(AuditProblem::Edited { index, .. })) => prop_assert_eq!(index, i as u64),
            (Tamper::Delete(i), Err(AuditProblem::Missing { index })) => prop_assert_eq!(index, i as u64),
            (Tamper::Delete(i), Err(AuditProblem::Truncated { found, recorded })) => {
                prop_assert_eq!(i as u64, n - 1);
                prop_assert_eq!((found, recorded), (n - 1, n));
            }
            (Tamper::Swap(i, j), Err(AuditProblem::Reordered { position, claims })) => {
                prop_assert_eq!((position, claims), (i as u64, j as u64));
            }
            (Tamper::Garble(i), Err(AuditProblem::Undecodable { index })) => prop_assert_eq!(index, i as u64),
            (t, r) => prop_assert!(false, "tamper {:?} gave {:?}", t, r),
        }
    }
}
