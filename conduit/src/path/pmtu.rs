//! Path MTU discovery for one peer path, in the manner of DPLPMTUD (RFC 8899): the node
//! learns the largest datagram the path carries from its own authenticated probes, never
//! from ICMP (which is spoofable, and filtered on many of the paths that need it).
//!
//! Invariant: [`Pmtu::plpmtu`] only ever holds a size the peer acknowledged a probe of on
//! this path (or the base size, which is assumed and checked first), and the node sends no
//! data datagram larger than it — so a full-size packet is never silently lost on a
//! narrow path. Sizes are whole IP packets (IP + UDP headers + the mesh datagram): what a
//! user means by "path MTU".
//!
//! # The search
//!
//! ```text
//!  start ──► Base ──ack──► Search ──converged──► Complete ──raise timer──► Search
//!             │  (probe base)  (max first,           │  (suspected black hole:
//!             │                 then bisect)         │   confirm plpmtu; lost ⇒ Base)
//!             └─ MAX_PROBES lost ──► Error ──retry timer──► Base
//! ```
//!
//! One probe is in flight at a time. A size counts as failed after [`MAX_PROBES`] probes
//! of it went unacknowledged (a single loss is congestion, not an MTU). The first probe
//! after the base is the largest size the node could use, so on a path that carries
//! everything discovery costs one round trip.
//!
//! # Black holes
//!
//! A path whose MTU shrinks mid-session (a route change, a tunnel added below) drops the
//! large packets while small ones still pass. The node reports every data packet it sends
//! ([`Pmtu::on_sent`]) and every acknowledgement it gets ([`Pmtu::on_acked`]); when a
//! packet larger than the base has waited [`BLACK_HOLE_AFTER`] for an acknowledgement that
//! names a large packet (the newest of a batch, or the batch's largest), while the peer was
//! heard from meanwhile, a probe of the current size confirms it. If that probe is lost
//! [`MAX_PROBES`] times while no data packet of the size sent since got through, the size
//! falls back to the base and the search starts again. A confirmation probe counts as lost
//! only once a data packet sent after it was acknowledged: on a link with a deep queue a
//! timeout alone means "still queued". Congestion is not a black hole either: a
//! full drop-tail buffer drops large packets more often than small ones (a small one fits
//! where a large one does not), and may drop every probe, but some full-size data keeps
//! passing, and its acknowledgement confirms the size (see [`Pmtu::on_acked`]).
//!
//! # Driving it
//!
//! Whenever a method returns `true`, a probe is due: call [`Pmtu::take_probe`] and send a
//! padded, authenticated probe of the size it gives; hand the peer's answer to
//! [`Pmtu::on_probe_ack`]. Call [`Pmtu::handle_timeout`] when [`Pmtu::poll_timeout`] is
//! reached.

use std::time::{Duration, Instant};

/// The IPv4 base: RFC 8899 §5.1.2 recommends 1200 bytes where the IPv6 minimum does not
/// apply. Sized so that LTE and hotel paths with small MTUs are still served.
pub const BASE_PMTU_V4: u16 = 1200;
/// The IPv6 base: the minimum MTU every IPv6 link carries (RFC 8200).
pub const BASE_PMTU_V6: u16 = 1280;
/// IPv4 + UDP header bytes in front of a mesh datagram.
pub const HEADERS_V4: u16 = 28;
/// IPv6 + UDP header bytes in front of a mesh datagram.
pub const HEADERS_V6: u16 = 48;
/// Probes of one size that may go unanswered before the size counts as too large.
pub const MAX_PROBES: u8 = 3;
/// How long a confirmed size stands before the search tries larger ones again (RFC
/// 8899's PMTU_RAISE_TIMER).
pub const RAISE_INTERVAL: Duration = Duration::from_secs(600);
/// How long a large packet may go unacknowledged while the peer is heard from before the
/// current size is confirmed again.
pub const BLACK_HOLE_AFTER: Duration = Duration::from_secs(1);
/// After the base size itself failed, how long until it is tried again.
pub const ERROR_RETRY: Duration = Duration::from_secs(10);
/// Probe timeout when no round trip is known yet.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bounds of the probe timeout (three round trips): short enough that a search over a
/// LAN takes a fraction of a second, long enough to ride out a burst of queueing.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(50);
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the discovery of one path stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PmtuPhase {
    /// No session on the path yet: nothing probed.
    #[default]
    Idle,
    /// Confirming that the base size passes.
    Base,
    /// Looking for the largest size between the confirmed one and the maximum.
    Searching,
    /// The search converged; larger sizes are tried again after [`RAISE_INTERVAL`].
    Complete,
    /// Even the base size went unanswered: the path is down or narrower than the base.
    Error,
}

impl PmtuPhase {
    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            PmtuPhase::Idle => "idle",
            PmtuPhase::Base => "base",
            PmtuPhase::Searching => "searching",
            PmtuPhase::Complete => "complete",
            PmtuPhase::Error => "error",
        }
    }
}

/// A probe to send now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Echoed by the peer's acknowledgement.
    pub id: u32,
    /// The size being tested, as an IP packet.
    pub size: u16,
    /// The UDP payload (the sealed mesh datagram) length that makes an IP packet of
    /// `size`.
    pub datagram_len: usize,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: u32,
    size: u16,
    sent_at: Instant,
    deadline: Instant,
    timeout: Duration,
    /// Whether a data packet sent after this probe was acknowledged: only then can the
    /// probe be lost rather than still queued (a later packet overtook it).
    overtaken: bool,
}

/// Discovery state of one peer path. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Pmtu {
    phase: PmtuPhase,
    base: u16,
    max: u16,
    headers: u16,
    plpmtu: u16,
    /// Largest size known to fail in this search (`max + 1` while none has).
    too_big: u16,
    /// The size the next (or current) probe tests, and how often it was sent.
    target: u16,
    attempts: u8,
    /// Whether the probe of `target` is due now.
    due: bool,
    in_flight: Option<InFlight>,
    /// When the phase's next step is due without a probe (raise, error retry).
    wake_at: Option<Instant>,
    /// A confirmation of `plpmtu` is what the probe in flight tests.
    confirming: bool,
    /// When the confirmation began: data of `plpmtu` sent since and acknowledged confirms
    /// it as a probe would.
    confirm_since: Option<Instant>,
    next_id: u32,
    /// Since when large data packets wait for an acknowledgement naming one of them.
    large_since: Option<Instant>,
    /// Whether the peer was heard from since `large_since`.
    heard_since_large: bool,
}

impl Pmtu {
    /// Starts (or restarts) discovery on a path: IPv6 or IPv4 underlay, and the largest
    /// mesh datagram the node would ever send (its device MTU plus the data overhead).
    /// Returns true: a probe of the base is due.
    pub fn start(&mut self, v6: bool, max_datagram: usize) -> bool {
        let (base, headers) = if v6 {
            (BASE_PMTU_V6, HEADERS_V6)
        } else {
            (BASE_PMTU_V4, HEADERS_V4)
        };
        let max = u16::try_from(max_datagram)
            .unwrap_or(u16::MAX)
            .saturating_add(headers);
        *self = Self {
            phase: PmtuPhase::Base,
            base: base.min(max),
            max,
            headers,
            plpmtu: base.min(max),
            too_big: max.saturating_add(1),
            next_id: self.next_id,
            ..Self::default()
        };
        self.aim(self.base);
        true
    }

    /// The phase of the search.
    pub fn phase(&self) -> PmtuPhase {
        self.phase
    }

    /// The confirmed path MTU (whole IP packets); `None` before discovery started.
    pub fn plpmtu(&self) -> Option<u16> {
        (self.phase != PmtuPhase::Idle).then_some(self.plpmtu)
    }

    /// The largest mesh datagram (UDP payload) that may be sent on the path now; `None`
    /// before discovery started.
    pub fn max_datagram(&self) -> Option<usize> {
        self.plpmtu()
            .map(|p| usize::from(p.saturating_sub(self.headers)))
    }

    /// Whether some size below the node's maximum is known to fail on this path (so
    /// senders should be told to use less than the device MTU from the start).
    pub fn narrower_than_max(&self) -> bool {
        match self.phase {
            PmtuPhase::Idle => false,
            PmtuPhase::Error => true,
            _ => self.too_big <= self.max,
        }
    }

    /// Whether the first answer about sizes above the base is still out: the first probe
    /// of the base, or (nothing having failed in this search) the first probe of the
    /// maximum, is due or in flight. A packet larger than [`plpmtu`](Self::plpmtu) may
    /// wait for it rather than have its sender told a size that is about to grow.
    pub fn undecided(&self) -> bool {
        let first_try =
            (self.in_flight.is_some() && self.attempts == 1) || (self.due && self.attempts == 0);
        let fresh = self.too_big > self.max;
        match self.phase {
            PmtuPhase::Base => fresh && first_try,
            PmtuPhase::Searching => fresh && self.target == self.max && first_try,
            _ => false,
        }
    }

    /// The probe to send now, if one is due; counts it as sent. `rtt` sets its timeout.
    pub fn take_probe(&mut self, now: Instant, rtt: Option<Duration>) -> Option<ProbeSpec> {
        if !self.due {
            return None;
        }
        self.due = false;
        self.attempts = self.attempts.saturating_add(1);
        self.next_id = self.next_id.wrapping_add(1);
        let timeout = rtt.map_or(DEFAULT_PROBE_TIMEOUT, |r| {
            (r * 3).clamp(MIN_PROBE_TIMEOUT, MAX_PROBE_TIMEOUT)
        });
        self.in_flight = Some(InFlight {
            id: self.next_id,
            size: self.target,
            sent_at: now,
            deadline: now + timeout,
            timeout,
            overtaken: false,
        });
        Some(ProbeSpec {
            id: self.next_id,
            size: self.target,
            datagram_len: usize::from(self.target.saturating_sub(self.headers)),
        })
    }

    /// The peer acknowledged probe `id`. True when another probe is due now. An
    /// acknowledgement of an older probe still proves its size, so it counts.
    pub fn on_probe_ack(&mut self, now: Instant, id: u32) -> bool {
        let Some(probe) = self.in_flight.filter(|p| p.id == id) else {
            return false;
        };
        self.in_flight = None;
        self.passed(now, probe.size)
    }

    /// When the probe in flight with `id` left (its acknowledgement is a round-trip
    /// sample).
    pub fn probe_sent_at(&self, id: u32) -> Option<Instant> {
        self.in_flight.filter(|p| p.id == id).map(|p| p.sent_at)
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let black_hole = self
            .large_since
            .filter(|_| self.heard_since_large && self.watching())
            .map(|since| since + BLACK_HOLE_AFTER);
        [self.in_flight.map(|p| p.deadline), self.wake_at, black_hole]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due at `now`. True when a probe is due.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let mut probe = false;
        if let Some(p) = self.in_flight.as_mut().filter(|p| p.deadline <= now) {
            if self.confirming && !p.overtaken {
                // Nothing sent after the confirmation probe came back yet: it may be
                // queued behind a buffer full of bulk (hundreds of milliseconds on a
                // bloated link), and a size that carried data is not given up on a
                // timeout alone. Wait for the packets behind it.
                p.deadline = now + p.timeout;
            } else {
                let size = p.size;
                self.in_flight = None;
                probe |= self.lost(now, size);
            }
        }
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
            probe |= match self.phase {
                PmtuPhase::Complete if self.plpmtu < self.max => {
                    self.phase = PmtuPhase::Searching;
                    self.too_big = self.max.saturating_add(1);
                    self.aim(self.max);
                    true
                }
                PmtuPhase::Error => {
                    self.phase = PmtuPhase::Base;
                    self.aim(self.base);
                    true
                }
                _ => false,
            };
        }
        let suspect = self.watching()
            && self.heard_since_large
            && self
                .large_since
                .is_some_and(|since| since + BLACK_HOLE_AFTER <= now);
        if suspect {
            self.large_since = None;
            self.heard_since_large = false;
            self.confirming = true;
            self.confirm_since = Some(now);
            self.aim(self.plpmtu);
            probe = true;
        }
        probe
    }

    /// A data datagram of `datagram_len` bytes left for the peer at `now`.
    pub fn on_sent(&mut self, now: Instant, datagram_len: usize) {
        if self.is_large(datagram_len) && self.large_since.is_none() {
            self.large_since = Some(now);
            self.heard_since_large = false;
        }
    }

    /// The peer acknowledged, at `now`, a data datagram of `datagram_len` bytes that left
    /// at `sent_at`. True when a probe is due now.
    ///
    /// While the current size is being confirmed, a data datagram of that size sent since
    /// the confirmation began and acknowledged confirms it as a probe would (RFC 8899 lets
    /// data packets confirm a size): a drop-tail buffer that overflows under bulk may lose
    /// a probe [`MAX_PROBES`] times in a row while data of the same size keeps passing, and
    /// that is congestion, not a black hole.
    pub fn on_acked(&mut self, now: Instant, sent_at: Instant, datagram_len: usize) -> bool {
        if self.is_large(datagram_len) {
            self.large_since = None;
        }
        if let Some(p) = self.in_flight.as_mut().filter(|p| sent_at > p.sent_at) {
            p.overtaken = true;
        }
        let size = datagram_len.saturating_add(usize::from(self.headers));
        let proves = self.confirming
            && size >= usize::from(self.plpmtu)
            && self.confirm_since.is_some_and(|since| sent_at >= since);
        if !proves {
            return false;
        }
        self.in_flight = None;
        self.due = false;
        self.passed(now, self.plpmtu)
    }

    /// An authenticated packet came from the peer: smaller packets pass.
    pub fn on_heard(&mut self) {
        if self.large_since.is_some() {
            self.heard_since_large = true;
        }
    }

    fn is_large(&self, datagram_len: usize) -> bool {
        self.phase != PmtuPhase::Idle
            && datagram_len + usize::from(self.headers) > usize::from(self.base)
    }

    /// Whether black-hole detection runs: a size above the base is in use and no probe
    /// is already testing the path.
    fn watching(&self) -> bool {
        matches!(self.phase, PmtuPhase::Searching | PmtuPhase::Complete)
            && self.plpmtu > self.base
            && self.in_flight.is_none()
            && !self.due
    }

    fn aim(&mut self, size: u16) {
        self.target = size;
        self.attempts = 0;
        self.due = true;
    }

    fn passed(&mut self, now: Instant, size: u16) -> bool {
        self.confirming = false;
        self.confirm_since = None;
        self.attempts = 0;
        self.plpmtu = self.plpmtu.max(size);
        match self.phase {
            PmtuPhase::Base | PmtuPhase::Error => {
                self.phase = PmtuPhase::Searching;
                self.next_step(now)
            }
            PmtuPhase::Searching => self.next_step(now),
            PmtuPhase::Complete | PmtuPhase::Idle => false,
        }
    }

    fn lost(&mut self, now: Instant, size: u16) -> bool {
        if self.attempts < MAX_PROBES {
            self.due = true;
            return true;
        }
        self.attempts = 0;
        if self.confirming {
            // The size that worked no longer does: a black hole. Start over from the base.
            self.confirming = false;
            self.confirm_since = None;
            self.too_big = size;
            self.plpmtu = self.base;
            self.phase = PmtuPhase::Base;
            self.aim(self.base);
            return true;
        }
        match self.phase {
            PmtuPhase::Base => {
                self.phase = PmtuPhase::Error;
                self.wake_at = Some(now + ERROR_RETRY);
                false
            }
            PmtuPhase::Searching => {
                self.too_big = self.too_big.min(size);
                self.next_step(now)
            }
            _ => false,
        }
    }

    /// The next size to probe in the search, or the end of it.
    fn next_step(&mut self, now: Instant) -> bool {
        let (lo, hi) = (self.plpmtu, self.too_big);
        if lo >= self.max || hi <= lo.saturating_add(1) {
            self.phase = PmtuPhase::Complete;
            self.wake_at = (self.plpmtu < self.max).then_some(now + RAISE_INTERVAL);
            return false;
        }
        let next = if hi > self.max {
            self.max
        } else {
            lo + (hi - lo) / 2
        };
        self.aim(next);
        true
    }
}

#[cfg(test)]
mod tests;
