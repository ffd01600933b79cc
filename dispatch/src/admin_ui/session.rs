//! Admin UI sessions, CSRF tokens and the login rate limit: plain state machines that take
//! the time and the randomness as arguments (the HTTP shell reads the clock and the OS RNG).
//!
//! Sessions are kept by the BLAKE3 hash of their cookie token, so a lookup's timing says
//! nothing about stored tokens, and a memory dump holds no usable cookie.

use std::collections::{BTreeMap, VecDeque};

use subtle::ConstantTimeEq;

use crate::clock::UnixTime;

/// A session ends after this long without a request.
pub const IDLE_SECS: u64 = 30 * 60;
/// A session ends this long after login, however busy.
pub const ABSOLUTE_SECS: u64 = 12 * 3600;
/// Most sessions kept at once; a new login evicts the oldest beyond it.
pub const MAX_SESSIONS: usize = 32;
/// Failed logins allowed within [`LOGIN_WINDOW_SECS`] before logins are refused.
pub const MAX_LOGIN_FAILURES: usize = 5;
/// The window failed logins are counted in.
pub const LOGIN_WINDOW_SECS: u64 = 60;

/// The randomness one new session needs (from the OS RNG in the shell).
pub struct SessionSeed {
    /// The cookie token.
    pub token: [u8; 32],
    /// The CSRF token forms carry.
    pub csrf: [u8; 32],
}

struct Entry {
    csrf: String,
    created: UnixTime,
    last_used: UnixTime,
}

/// A new session: the cookie value and its CSRF token.
#[derive(Debug)]
pub struct NewSession {
    /// The cookie value (hex).
    pub token: String,
    /// The CSRF token (hex).
    pub csrf: String,
}

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    by_hash: BTreeMap<[u8; 32], Entry>,
}

fn key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn live(entry: &Entry, now: UnixTime) -> bool {
    now < entry.last_used.plus(IDLE_SECS) && now < entry.created.plus(ABSOLUTE_SECS)
}

impl Sessions {
    /// Starts a session at `now` (after a successful login).
    pub fn create(&mut self, now: UnixTime, seed: SessionSeed) -> NewSession {
        self.by_hash.retain(|_, e| live(e, now));
        while self.by_hash.len() >= MAX_SESSIONS {
            let oldest = self
                .by_hash
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.by_hash.remove(&k),
                None => break,
            };
        }
        let token = hex::encode(seed.token);
        let csrf = hex::encode(seed.csrf);
        self.by_hash.insert(
            key(&token),
            Entry {
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        NewSession { token, csrf }
    }

    /// The CSRF token of the live session `token`, marking it used at `now`; an expired
    /// session is dropped and `None` returned.
    pub fn check(&mut self, token: &str, now: UnixTime) -> Option<String> {
        let k = key(token);
        let entry = self.by_hash.get_mut(&k)?;
        if !live(entry, now) {
            self.by_hash.remove(&k);
            return None;
        }
        entry.last_used = now;
        Some(entry.csrf.clone())
    }

    /// Ends the session `token` (logout).
    pub fn end(&mut self, token: &str) {
        self.by_hash.remove(&key(token));
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Whether the CSRF token a form carried equals the session's, in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Refuses logins after [`MAX_LOGIN_FAILURES`] failures within [`LOGIN_WINDOW_SECS`].
///
/// One limiter for the whole listener, not per client address: the UI listens on loopback,
/// where every client has the same address.
#[derive(Default)]
pub struct LoginLimiter {
    failures: VecDeque<UnixTime>,
}

impl LoginLimiter {
    /// `Ok` if a login may be tried at `now`, or the seconds to wait.
    pub fn allow(&mut self, now: UnixTime) -> Result<(), u64> {
        while self
            .failures
            .front()
            .is_some_and(|t| now >= t.plus(LOGIN_WINDOW_SECS))
        {
            self.failures.pop_front();
        }
        match self.failures.front() {
            Some(first) if self.failures.len() >= MAX_LOGIN_FAILURES => {
                Err(first.plus(LOGIN_WINDOW_SECS).0.saturating_sub(now.0).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login at `now`.
    pub fn failed(&mut self, now: UnixTime) {
        self.failures.push_back(now);
        while self.failures.len() > MAX_LOGIN_FAILURES {
            self.failures.pop_front();
        }
    }

    /// Forgets past failures (a successful login).
    pub fn succeeded(&mut self) {
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests;
