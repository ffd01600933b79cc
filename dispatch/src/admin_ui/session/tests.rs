use super::*;

fn seed(n: u8) -> SessionSeed {
    SessionSeed {
        token: [n; 32],
        csrf: [n.wrapping_add(100); 32],
    }
}

#[test]
fn a_session_lives_while_used_and_ends_when_idle() {
    let mut s = Sessions::default();
    let t0 = UnixTime(1_000_000);
    let new = s.create(t0, seed(1));
    assert_eq!(
        s.check(&new.token, t0.plus(IDLE_SECS - 1)),
        Some(new.csrf.clone())
    );
    // Used at IDLE-1, so it lives until (IDLE-1)+IDLE.
    assert!(s.check(&new.token, t0.plus(2 * IDLE_SECS - 2)).is_some());
    let idle_end = t0.plus(2 * IDLE_SECS - 2 + IDLE_SECS);
    assert_eq!(s.check(&new.token, idle_end), None);
    assert!(s.is_empty(), "an expired session is dropped when seen");
}

#[test]
fn a_busy_session_still_ends_at_the_absolute_limit() {
    let mut s = Sessions::default();
    let t0 = UnixTime(50);
    let new = s.create(t0, seed(2));
    let mut now = t0;
    // A request every 10 minutes keeps it from going idle...
    while now < t0.plus(ABSOLUTE_SECS - 600) {
        now = now.plus(600);
        assert!(s.check(&new.token, now).is_some(), "alive at {now:?}");
    }
    // ...but not past the absolute lifetime.
    assert_eq!(s.check(&new.token, t0.plus(ABSOLUTE_SECS)), None);
}

#[test]
fn unknown_and_ended_tokens_are_refused() {
    let mut s = Sessions::default();
    let t0 = UnixTime(7);
    let new = s.create(t0, seed(3));
    assert_eq!(s.check(&hex::encode([9u8; 32]), t0), None);
    assert_eq!(s.check("", t0), None);
    s.end(&new.token);
    assert_eq!(s.check(&new.token, t0), None);
}

#[test]
fn sessions_are_bounded_and_the_oldest_goes_first() {
    let mut s = Sessions::default();
    let tokens: Vec<NewSession> = (0..=MAX_SESSIONS as u64)
        .map(|i| s.create(UnixTime(100 + i), seed(i as u8)))
        .collect();
    assert_eq!(s.len(), MAX_SESSIONS);
    let now = UnixTime(100 + MAX_SESSIONS as u64);
    assert_eq!(s.check(&tokens[0].token, now), None, "oldest evicted");
    assert!(s.check(&tokens[1].token, now).is_some());
    assert!(s.check(&tokens[MAX_SESSIONS].token, now).is_some());
}

#[test]
fn csrf_tokens_compare_exactly() {
    let mut s = Sessions::default();
    let new = s.create(UnixTime(1), seed(4));
    assert!(csrf_matches(&new.csrf, &new.csrf));
    assert!(!csrf_matches(&new.csrf, ""));
    assert!(!csrf_matches(&new.csrf, &new.csrf[..new.csrf.len() - 1]));
    let mut flipped = new.csrf.clone().into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    assert!(!csrf_matches(
        &new.csrf,
        &String::from_utf8(flipped).unwrap()
    ));
    assert!(
        !csrf_matches("", ""),
        "an empty expected token matches nothing"
    );
}

#[test]
fn the_limiter_refuses_after_repeated_failures_then_recovers() {
    let mut l = LoginLimiter::default();
    let t0 = UnixTime(10_000);
    for i in 0..MAX_LOGIN_FAILURES as u64 {
        assert_eq!(l.allow(t0.plus(i)), Ok(()));
        l.failed(t0.plus(i));
    }
    let blocked = t0.plus(MAX_LOGIN_FAILURES as u64);
    assert_eq!(
        l.allow(blocked),
        Err(LOGIN_WINDOW_SECS - MAX_LOGIN_FAILURES as u64)
    );
    // The first failure leaves the window: one more try is allowed.
    assert_eq!(l.allow(t0.plus(LOGIN_WINDOW_SECS)), Ok(()));
    l.succeeded();
    assert_eq!(l.allow(t0.plus(LOGIN_WINDOW_SECS)), Ok(()));
}
