//! `Tunnel`: everything one node keeps about its sessions with one peer — the pending
//! handshake, up to three live sessions, packets waiting for keys, and the timers that
//! drive retries, rekeys, keepalives and expiry.
//!
//! Invariants:
//! - We only *send* on a session that is confirmed: as initiator once the response
//!   verified, as responder once the first data packet arrived on it (so a replayed
//!   initiation can never make us send under keys an attacker forced on us, which is what
//!   makes the handshake resistant to key-compromise impersonation end to end).
//! - A rekey never loses packets in flight: the session being replaced stays available
//!   for receiving (`previous`) until it expires, and the responder's new session waits in
//!   `next` until confirmed.
//! - A tunnel whose owner has no endpoint for the peer ([`Tunnel::wait_for_peer`])
//!   starts no handshake and keeps no handshake deadline: it waits for the peer to dial,
//!   holding staged packets, instead of retrying towards nowhere and giving up.
//!
//! Driving: feed [`Tunnel::on_init`], [`Tunnel::on_resp`] and [`Tunnel::open`] with
//! received messages, ask [`Tunnel::seal`] to send, and call
//! [`Tunnel::handle_timeout`] at [`Tunnel::poll_timeout`]; act on the returned
//! [`TimerAction`]. Retired session indices come out of [`Tunnel::drain_retired`].

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::cipher::CipherSuite;
use crate::identity::Identity;
use crate::session::channel::SecureChannel;
use crate::session::noise::{self, Initiation, ReceivedInit};
use crate::wire::{DataHeader, INIT_LEN, RESP_LEN};
use crate::{Lane, PeerId, PeerMisbehaved};

/// Session timing, WireGuard's constants by default; tests shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// The initiator of a session starts a new handshake after this long.
    pub rekey_after_time: Duration,
    /// A session is not used to send after this long.
    pub reject_after_time: Duration,
    /// A new handshake starts after this many packets on one session.
    pub rekey_after_messages: u64,
    /// An unanswered initiation is retried after this long.
    pub rekey_timeout: Duration,
    /// A keepalive is sent when we received data and sent nothing for this long.
    pub keepalive_timeout: Duration,
    /// Handshake retries stop after this long; waiting packets are dropped.
    pub rekey_attempt_time: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            rekey_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
            rekey_attempt_time: Duration::from_secs(90),
        }
    }
}

/// What the owner must do after a timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing.
    None,
    /// Send a (new) handshake initiation.
    Handshake,
    /// Send an empty data packet.
    Keepalive,
    /// Handshake attempts gave up; this many waiting packets were dropped.
    GaveUp(usize),
}

/// A data packet that authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Where the plaintext is in the datagram (empty for a keepalive).
    pub range: Range<usize>,
    /// Whether this packet confirmed the responder's new session.
    pub confirmed: bool,
}

struct Pending {
    init: Initiation,
    /// The initiation as sent, for [`Tunnel::resend_initiation`].
    msg: [u8; INIT_LEN],
    sent_at: Instant,
    first_attempt: Instant,
}

/// Session state with one peer.
pub struct Tunnel {
    /// The peer's mesh ID.
    pub peer: PeerId,
    /// The peer's X25519 static public key.
    pub remote_static: [u8; 32],
    leader: bool,
    pending: Option<Pending>,
    current: Option<SecureChannel>,
    previous: Option<SecureChannel>,
    next: Option<SecureChannel>,
    last_timestamp_in: Option<u64>,
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
    unanswered_since: Option<Instant>,
    keepalive_due: bool,
    /// No endpoint for the peer: no handshake until it dials or one is learned.
    waiting: bool,
    staged: VecDeque<(Lane, Vec<u8>)>,
    retired: Vec<u32>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("peer", &self.peer)
            .field("pending", &self.pending.is_some())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Packets held per peer while a handshake is in progress.
    pub const STAGED_LIMIT: usize = 128;

    /// A tunnel with no session yet. `leader` is whether our peer ID is the lower one:
    /// only the leader rekeys a working session (by time, or by packets counted in
    /// either direction), so rekeys never cross and both ends always converge on one
    /// session; either side still handshakes when it has no usable session at all.
    pub fn new(peer: PeerId, remote_static: [u8; 32], leader: bool) -> Self {
        Self {
            peer,
            remote_static,
            leader,
            pending: None,
            current: None,
            previous: None,
            next: None,
            last_timestamp_in: None,
            last_sent: None,
            last_received: None,
            unanswered_since: None,
            keepalive_due: false,
            waiting: false,
            staged: VecDeque::new(),
            retired: Vec::new(),
        }
    }

    /// The session we would send on now, if it is still usable.
    fn usable(&self, now: Instant, timers: &Timers) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| now.saturating_duration_since(c.created) < timers.reject_after_time)
    }

    /// Whether packets can be sealed right now.
    pub fn is_established(&self, now: Instant, timers: &Timers) -> bool {
        self.usable(now, timers)
    }

    /// Whether a handshake initiation is outstanding.
    pub fn handshake_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The confirmed session's creation time, for status output.
    pub fn established_at(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.created)
    }

    /// The outstanding initiation's send time and its handshake's first attempt (retries
    /// keep it), for timing the handshake when the response comes.
    pub fn pending_times(&self) -> Option<(Instant, Instant)> {
        self.pending.as_ref().map(|p| (p.sent_at, p.first_attempt))
    }

    /// When the last authenticated packet arrived.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    /// Whether a new handshake should start before sending (none usable, or rekey due).
    pub fn wants_handshake(&self, now: Instant, timers: &Timers) -> bool {
        // A session the peer just initiated is about to be confirmed by its first
        // packet: starting our own handshake now would only race it.
        let fresh_next = self
            .next
            .as_ref()
            .is_some_and(|n| now < n.created + timers.rekey_timeout);
        if self.pending.is_some() || fresh_next || self.waiting {
            return false;
        }
        match &self.current {
            None => true,
            Some(c) => {
                !self.usable(now, timers)
                    || (self.leader
                        && (c.sent().max(c.received()) >= timers.rekey_after_messages
                            || now.saturating_duration_since(c.created) >= timers.rekey_after_time))
            }
        }
    }

    /// Writes a new initiation into `out` and remembers it.
    #[allow(clippy::too_many_arguments)] // the handshake's inputs, each injected
    pub fn start_handshake(
        &mut self,
        identity: &Identity,
        suite: CipherSuite,
        ephemeral: [u8; 32],
        local_index: u32,
        timestamp: u64,
        now: Instant,
        out: &mut [u8; INIT_LEN],
    ) -> Result<(), PeerMisbehaved> {
        let init = noise::initiate(
            identity,
            suite,
            &self.remote_static,
            ephemeral,
            local_index,
            timestamp,
            out,
        )?;
        let first_attempt = self.pending.as_ref().map_or(now, |p| p.first_attempt);
        if let Some(old) = self.pending.replace(Pending {
            init,
            msg: *out,
            sent_at: now,
            first_attempt,
        }) {
            self.retired.push(old.init.local_index);
        }
        Ok(())
    }

    /// The outstanding initiation, byte for byte, to send once more; its retry deadline
    /// restarts from `now`. Not a new handshake: a peer that already answered it refuses
    /// the copy as stale, exactly like a duplicate from the network. `None` without one.
    pub fn resend_initiation(&mut self, now: Instant) -> Option<[u8; INIT_LEN]> {
        let pending = self.pending.as_mut()?;
        pending.sent_at = now;
        Some(pending.msg)
    }

    /// There is nowhere to send an initiation: forget the outstanding one (its index is
    /// retired) and start none until [`endpoint_known`](Self::endpoint_known). Staged
    /// packets stay for when the peer dials.
    pub fn wait_for_peer(&mut self) {
        if let Some(p) = self.pending.take() {
            self.retired.push(p.init.local_index);
        }
        self.waiting = true;
    }

    /// An endpoint for the peer is known again: handshakes may start.
    pub fn endpoint_known(&mut self) {
        self.waiting = false;
    }

    /// Whether the tunnel waits for the peer to dial (see [`wait_for_peer`](Self::wait_for_peer)).
    pub fn is_waiting_for_peer(&self) -> bool {
        self.waiting
    }

    /// Checks an authenticated initiation's timestamp against the last one accepted and
    /// records it: an initiation is acted on (answered, or its source address learned)
    /// at most once, so a replay is refused however much later it comes.
    pub fn accept_timestamp(&mut self, timestamp: u64) -> Result<(), PeerMisbehaved> {
        if self.last_timestamp_in.is_some_and(|last| timestamp <= last) {
            return Err(PeerMisbehaved::StaleHandshake(timestamp));
        }
        self.last_timestamp_in = Some(timestamp);
        Ok(())
    }

    /// The local index of the outstanding initiation, if any.
    pub fn pending_index(&self) -> Option<u32> {
        self.pending.as_ref().map(|p| p.init.local_index)
    }

    /// Answers a verified initiation from this peer whose timestamp
    /// [`accept_timestamp`](Self::accept_timestamp) accepted; the new session waits in
    /// `next`.
    pub fn on_init(
        &mut self,
        suite: CipherSuite,
        received: ReceivedInit,
        ephemeral: [u8; 32],
        local_index: u32,
        now: Instant,
        out: &mut [u8; RESP_LEN],
    ) -> Result<(), PeerMisbehaved> {
        let remote_index = received.sender_index;
        let keys = noise::respond(received, ephemeral, local_index, out)?;
        self.waiting = false;
        // The owner only lets a simultaneous initiation reach us when the peer wins the
        // tie-break: drop ours, so both ends converge on the peer's session.
        if let Some(ours) = self.pending.take() {
            self.retired.push(ours.init.local_index);
        }
        let channel = SecureChannel::new(suite, keys, local_index, remote_index, false, now);
        // The session being replaced may already carry data: the initiator sends on it
        // as soon as our response arrives, and its next initiation can overtake that
        // data. Keep it receivable in `previous`; the older session there has had at
        // least a round trip and a rekey to drain.
        if let Some(replaced) = self.next.replace(channel)
            && let Some(older) = self.previous.replace(replaced)
        {
            self.retired.push(older.local_index);
        }
        Ok(())
    }

    /// Completes our initiation with its response; the new session becomes current.
    pub fn on_resp(
        &mut self,
        identity: &Identity,
        suite: CipherSuite,
        msg: &[u8; RESP_LEN],
        now: Instant,
    ) -> Result<(), PeerMisbehaved> {
        let pending = self
            .pending
            .as_ref()
            .ok_or(PeerMisbehaved::UnexpectedResponse(0))?;
        let (keys, remote_index) = pending.init.receive_resp(identity, msg)?;
        let local_index = pending.init.local_index;
        self.pending = None;
        let channel = SecureChannel::new(suite, keys, local_index, remote_index, true, now);
        self.promote(channel);
        self.keepalive_due = true;
        self.last_received = Some(now);
        self.unanswered_since = None;
        Ok(())
    }

    fn promote(&mut self, channel: SecureChannel) {
        let old_previous = self.previous.take();
        self.previous = self.current.replace(channel);
        if let Some(old) = old_previous {
            self.retired.push(old.local_index);
        }
    }

    /// Authenticates and decrypts a data packet for session `header.receiver_index`.
    pub fn open(
        &mut self,
        header: DataHeader,
        datagram: &mut [u8],
        now: Instant,
        timers: &Timers,
    ) -> Result<Opened, PeerMisbehaved> {
        let mut confirmed = false;
        let index = header.receiver_index;
        let expired = |c: &SecureChannel| {
            now.saturating_duration_since(c.created) >= timers.reject_after_time * 3
        };
        let range = if let Some(c) = self.current.as_mut().filter(|c| c.local_index == index) {
            if expired(c) {
                return Err(PeerMisbehaved::UnknownSession(index));
            }
            c.open(header, datagram)?
        } else if let Some(c) = self.next.as_mut().filter(|c| c.local_index == index) {
            let range = c.open(header, datagram)?;
            // First authenticated packet on the responder's new session confirms it.
            if let Some(next) = self.next.take() {
                self.promote(next);
                confirmed = true;
            }
            range
        } else if let Some(c) = self.previous.as_mut().filter(|c| c.local_index == index) {
            if expired(c) {
                return Err(PeerMisbehaved::UnknownSession(index));
            }
            c.open(header, datagram)?
        } else {
            return Err(PeerMisbehaved::UnknownSession(index));
        };
        self.last_received = Some(now);
        self.unanswered_since = None;
        Ok(Opened { range, confirmed })
    }

    /// Seals the payload at `buf[DATA_HEADER_LEN..][..payload_len]` on the current session.
    /// Returns `None` when no session can send (the caller stages and handshakes).
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        payload_len: usize,
        now: Instant,
        timers: &Timers,
    ) -> Option<Result<usize, PeerMisbehaved>> {
        if !self.usable(now, timers) {
            return None;
        }
        let channel = self.current.as_mut()?;
        let result = channel.seal(buf, payload_len);
        if result.is_ok() {
            self.last_sent = Some(now);
            self.keepalive_due = false;
            if payload_len > 0 && self.unanswered_since.is_none() {
                self.unanswered_since = Some(now);
            }
        }
        Some(result)
    }

    /// The peer's index of the session packets are sealed on now (what their headers
    /// carry), if there is one.
    pub fn sending_index(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.remote_index)
    }

    /// Holds a packet of `lane` until the session is ready; returns a buffer that was
    /// pushed out (the oldest) when the stage is full, for the caller to recycle and count.
    pub fn stage(&mut self, lane: Lane, packet: Vec<u8>) -> Option<Vec<u8>> {
        let evicted = if self.staged.len() >= Self::STAGED_LIMIT {
            self.staged.pop_front().map(|(_, old)| old)
        } else {
            None
        };
        self.staged.push_back((lane, packet));
        evicted
    }

    /// Takes the oldest staged packet, with the lane it was queued in.
    pub fn take_staged(&mut self) -> Option<(Lane, Vec<u8>)> {
        self.staged.pop_front()
    }

    /// Returns a staged packet to the front (it could not be sent after all).
    pub fn unstage_front(&mut self, lane: Lane, packet: Vec<u8>) {
        self.staged.push_front((lane, packet));
    }

    /// Whether packets wait for the session.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Whether a keepalive should go out now (initiator just completed, nothing else sent).
    pub fn keepalive_due(&self) -> bool {
        self.keepalive_due
    }

    /// Session indices that are no longer valid; the owner forgets them.
    pub fn drain_retired(&mut self) -> std::vec::Drain<'_, u32> {
        self.retired.drain(..)
    }

    /// All indices this tunnel currently answers to.
    pub fn live_indices(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|c| c.local_index)
            .chain(self.pending_index())
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self, timers: &Timers) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Instant| earliest = Some(earliest.map_or(t, |e| e.min(t)));
        if let Some(p) = &self.pending {
            consider(p.sent_at + timers.rekey_timeout);
        }
        // While a fresh `next` waits for confirmation, `wants_handshake` is false: no
        // handshake deadline may fall inside that window, or the driver would spin.
        let quiet = self.next.as_ref().map(|n| n.created + timers.rekey_timeout);
        let after_quiet = |t: Instant| quiet.map_or(t, |q| q.max(t));
        if let Some(c) = &self.current {
            if self.leader && self.pending.is_none() && !self.waiting {
                consider(after_quiet(c.created + timers.rekey_after_time));
            }
            consider(c.created + timers.reject_after_time * 3);
        }
        if let Some(quiet) = quiet
            && self.pending.is_none()
            && self.has_staged()
            && !self.waiting
        {
            // Packets wait for `next` to be confirmed; if it is not (and no usable
            // session remains), handshake ourselves.
            let unusable = self
                .current
                .as_ref()
                .map(|c| c.created + timers.reject_after_time);
            consider(unusable.map_or(quiet, |u| u.max(quiet)));
        }
        for c in [&self.previous, &self.next].into_iter().flatten() {
            consider(c.created + timers.reject_after_time * 3);
        }
        if let (Some(received), sent) = (self.last_received, self.last_sent)
            && sent.is_none_or(|s| s < received)
            && self.current.is_some()
        {
            consider(received + timers.keepalive_timeout);
        }
        if let Some(since) = self.unanswered_since {
            consider(since + timers.keepalive_timeout + timers.rekey_timeout);
        }
        earliest
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, timers: &Timers) -> TimerAction {
        self.expire(now, timers);
        if let Some(p) = &self.pending
            && now >= p.sent_at + timers.rekey_timeout
        {
            if now >= p.first_attempt + timers.rekey_attempt_time {
                if let Some(p) = self.pending.take() {
                    self.retired.push(p.init.local_index);
                }
                let dropped = self.staged.len();
                self.staged.clear();
                return TimerAction::GaveUp(dropped);
            }
            return TimerAction::Handshake;
        }
        if let Some(since) = self.unanswered_since
            && now >= since + timers.keepalive_timeout + timers.rekey_timeout
        {
            // We kept sending and heard nothing: the peer may have lost our session.
            self.unanswered_since = None;
            if self.pending.is_none() {
                return TimerAction::Handshake;
            }
        }
        if self.wants_handshake(now, timers) && (self.current.is_some() || self.has_staged()) {
            return TimerAction::Handshake;
        }
        if let Some(received) = self.last_received
            && self.current.is_some()
            && self.last_sent.is_none_or(|s| s < received)
            && now >= received + timers.keepalive_timeout
        {
            // Counted as sent even if the owner cannot send it, so the timer cannot spin.
            self.last_sent = Some(now);
            return TimerAction::Keepalive;
        }
        TimerAction::None
    }

    fn expire(&mut self, now: Instant, timers: &Timers) {
        let limit = timers.reject_after_time * 3;
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot
                .as_ref()
                .is_some_and(|c| now.saturating_duration_since(c.created) >= limit)
                && let Some(old) = slot.take()
            {
                self.retired.push(old.local_index);
            }
        }
    }
}
