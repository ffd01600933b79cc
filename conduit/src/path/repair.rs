//! Loss repair on the bulk lane: the radio's residual loss is repaired inside the tunnel,
//! one round trip late and in order, so the TCP above never reads it as congestion.
//!
//! Why: CUBIC (the Linux default) through a link with 0.5–1 % bursty random loss gets
//! 48 % of Wi-Fi and 20 % of LTE even on the bare link; without that loss it gets 80–90 %
//! (docs/congestion.md, sections 14–15). Radios repair below IP (LTE's RLC, Wi-Fi's MAC
//! retries); this is that repair for the hop the tunnel spans. The design is WebRTC's:
//! per-stream sequence numbers, a NACK from the receiver when a gap appears (RFC 4585's
//! generic NACK), a retransmission as a new packet (RFC 4588's RTX: here resealed with a
//! new counter), and a reorder buffer with a deadline at the receiver (a jitter buffer).
//! A gap is named at once until a repair proves needless (its original came late, then
//! the repair: the path reorders); from then on a gap waits that late before its NACK
//! (RACK's reordering window, widened on a D-SACK), halved after five seconds without.
//!
//! Invariants:
//! - Only the bulk lane is sequenced and held. Critical and telemetry packets carry no
//!   sequence number, so the receiver cannot and does not hold them.
//! - One repair per datagram: a repair that is lost too is given up at the receiver's
//!   deadline, so a persistent overflow stays visible to the TCP above.
//! - Bounded memory: [`KEEP_SLOTS`] kept packets per peer at the sender, [`HOLD_SLOTS`]
//!   held ones at the receiver; a packet beyond either bound is given up, never queued.
//! - Each sequence number is delivered at most once (a bitmap of the session's recent
//!   sequence numbers, the replay window's), however often it arrives.
//! - A node frames bulk for a peer only after the peer said, for that very session, that
//!   it reads the frames ([`RepairHello`]); an older node never sees them.
//!
//! Frames (plaintexts of data packets, in the control-frame range; little-endian):
//!
//! ```text
//! BulkData     0x06 | sequence u32 | IP packet                (5 bytes + the packet)
//! Nack         0x07 | session index u32 | first u32 | count u16     (11 bytes)
//! RepairHello  0x08 | session index u32                              (5 bytes)
//! ```
//!
//! Sequence numbers start at 0 with each session the sender sends on and count its bulk
//! packets; a session ends long before 2^32 of them. The session index of `Nack` and
//! `RepairHello` is the one written in the data packets' headers (the receiver's index),
//! so a frame about an old session is told from one about the current one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::MalformedPacket;
use crate::replay::ReplayWindow;

/// Type byte of a sequenced bulk packet.
pub const FRAME_BULK: u8 = 0x06;
/// Bytes a sequenced bulk packet carries before its IP packet.
pub const BULK_HEADER_LEN: usize = 5;
/// Type byte of a negative acknowledgement (bulk packets missing).
pub const FRAME_NACK: u8 = 0x07;
/// Length of a [`NackFrame`].
pub const NACK_FRAME_LEN: usize = 11;
/// Type byte of a [`RepairHello`].
pub const FRAME_REPAIR_HELLO: u8 = 0x08;
/// Length of a [`RepairHello`].
pub const REPAIR_HELLO_LEN: usize = 5;

/// Bulk packets a sender keeps per peer for repair: about two round trips of the
/// profiles' fastest link (30 Mbit/s, 40 ms: 110 packets in flight) with room for a
/// standing queue; 0.7 MB at most per peer, taken from the node's buffer pool.
pub const KEEP_SLOTS: usize = 512;
/// Bulk packets a receiver holds per peer behind a hole (same bound, same reason).
pub const HOLD_SLOTS: usize = 512;
/// Bulk packets a node keeps for repair across all its peers: the bulk lane's capacity
/// (4096 slots), so the copies loss repair keeps never outgrow the lane they were sent
/// from (5.7 MB at most), however many peers a hub streams to at once. A packet sent
/// while the node keeps this many is not kept: its loss, if it is lost, stays a loss.
pub const NODE_KEEP_MAX: usize = 4096;
/// Bulk packets a node holds behind holes across all its peers (the same bound). A packet
/// that would be held beyond it gives its peer's holes up instead: what waited is
/// delivered in order, and the losses stay losses.
pub const NODE_HOLD_MAX: usize = 4096;
/// How long a sent bulk packet is kept for its repair. The receiver names a hole as soon
/// as a packet after it arrives and gives it up at most [`MAX_HOLD`] later, so a NACK for
/// a packet sent a second ago finds it given up already (unless each one-way trip takes
/// over 400 ms). After this the packet goes back to the node's pool, so a peer that got
/// its bulk and went quiet does not pin [`KEEP_SLOTS`] buffers for the session's life.
pub const KEEP_FOR: Duration = Duration::from_secs(1);
/// How long a hole is waited for when the peer's round trip is not known yet.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(100);
/// Least wait for a hole: a repair needs one round trip plus the sender's turn.
pub const MIN_HOLD: Duration = Duration::from_millis(10);
/// Most wait for a hole. What waits behind it is acknowledged that much later, and a
/// Linux TCP above retransmits by timeout 200 ms beyond its round trip at the earliest
/// (its RTO is the smoothed round trip plus at least `TCP_RTO_MIN`): past this, a later
/// repair costs the TCP a timeout, worse than the loss it repairs.
pub const MAX_HOLD: Duration = Duration::from_millis(200);

/// NACKs a receiver remembers the sending time of, to time the repairs they bring.
const NACKS_TIMED: usize = 16;
/// What the wait for a hole adds to the repairs' measured delay and its variation.
const HOLD_MARGIN: Duration = Duration::from_millis(5);
/// Gaps whose NACK waits out the reordering window at once (more are named at once).
const GAPS_WAITING: usize = 16;
/// How long the reordering window lasts without a repair that proved needless before it
/// is halved (RACK keeps its widened window for 16 recoveries; these come by the second).
const REORDER_DECAY: Duration = Duration::from_secs(5);

/// How long the receiver waits for a hole to be repaired before it has timed a repair,
/// from the peer's smoothed round trip: the NACK's way there, the repair's way back, and
/// half a round trip more for the sender's queue and the path's jitter.
pub fn hold_time(rtt: Option<Duration>) -> Duration {
    rtt.map_or(DEFAULT_HOLD, |rtt| {
        rtt.saturating_mul(3) / 2 + Duration::from_millis(5)
    })
    .clamp(MIN_HOLD, MAX_HOLD)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

/// Writes the header of a sequenced bulk packet.
pub fn bulk_header(seq: u32) -> [u8; BULK_HEADER_LEN] {
    let mut out = [FRAME_BULK, 0, 0, 0, 0];
    out[1..].copy_from_slice(&seq.to_le_bytes());
    out
}

/// The sequence number of a sequenced bulk packet (whose first byte is [`FRAME_BULK`]);
/// its IP packet follows at [`BULK_HEADER_LEN`].
pub fn parse_bulk(plaintext: &[u8]) -> Result<u32, MalformedPacket> {
    match plaintext.first() {
        Some(&FRAME_BULK) if plaintext.len() > BULK_HEADER_LEN => Ok(le_u32(plaintext, 1)),
        Some(&FRAME_BULK) => Err(MalformedPacket::Truncated {
            kind: "bulk frame",
            needed: BULK_HEADER_LEN + 1,
            got: plaintext.len(),
        }),
        Some(&other) => Err(MalformedPacket::UnknownType(other)),
        None => Err(MalformedPacket::Empty),
    }
}

/// "Bulk packets `first` to `first + count - 1` of session `index` are missing."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackFrame {
    /// The session index the missing packets were sent to (the receiver's).
    pub index: u32,
    /// The first missing sequence number.
    pub first: u32,
    /// How many follow it, itself included (at least 1).
    pub count: u16,
}

impl NackFrame {
    /// The frame's bytes.
    pub fn encode(&self) -> [u8; NACK_FRAME_LEN] {
        let mut out = [0u8; NACK_FRAME_LEN];
        out[0] = FRAME_NACK;
        out[1..5].copy_from_slice(&self.index.to_le_bytes());
        out[5..9].copy_from_slice(&self.first.to_le_bytes());
        out[9..11].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Parses a NACK frame; total over all inputs.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedPacket> {
        if bytes.first() != Some(&FRAME_NACK) {
            return Err(bytes
                .first()
                .map_or(MalformedPacket::Empty, |&b| MalformedPacket::UnknownType(b)));
        }
        if bytes.len() != NACK_FRAME_LEN {
            return Err(MalformedPacket::WrongLength {
                kind: "nack frame",
                expected: NACK_FRAME_LEN,
                got: bytes.len(),
            });
        }
        let count = u16::from_le_bytes([bytes[9], bytes[10]]);
        if count == 0 {
            return Err(MalformedPacket::WrongLength {
                kind: "nack frame's count",
                expected: 1,
                got: 0,
            });
        }
        Ok(Self {
            index: le_u32(bytes, 1),
            first: le_u32(bytes, 5),
            count,
        })
    }
}

/// "I read sequenced bulk packets on session `index`": sent by a receiver that repairs,
/// so the sender frames bulk for it (and only on that session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairHello {
    /// The session index (the receiver's, as in the data packets' headers).
    pub index: u32,
}

impl RepairHello {
    /// The frame's bytes.
    pub fn encode(&self) -> [u8; REPAIR_HELLO_LEN] {
        let mut out = [0u8; REPAIR_HELLO_LEN];
        out[0] = FRAME_REPAIR_HELLO;
        out[1..5].copy_from_slice(&self.index.to_le_bytes());
        out
    }

    /// Parses a hello frame; total over all inputs.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedPacket> {
        match bytes.first() {
            Some(&FRAME_REPAIR_HELLO) if bytes.len() == REPAIR_HELLO_LEN => Ok(Self {
                index: le_u32(bytes, 1),
            }),
            Some(&FRAME_REPAIR_HELLO) => Err(MalformedPacket::WrongLength {
                kind: "repair hello frame",
                expected: REPAIR_HELLO_LEN,
                got: bytes.len(),
            }),
            Some(&other) => Err(MalformedPacket::UnknownType(other)),
            None => Err(MalformedPacket::Empty),
        }
    }
}

/// A bulk packet kept for repair.
#[derive(Debug)]
struct Kept {
    seq: u32,
    /// The IP packet; taken when its one repair goes out or it expires.
    packet: Option<Vec<u8>>,
    /// When it was sent.
    sent: Instant,
}

/// The sender's side, per peer: numbers bulk packets, keeps the last [`KEEP_SLOTS`] of
/// them for [`KEEP_FOR`] at most, and queues the ones a NACK names for their one repair.
#[derive(Debug)]
pub struct RepairSender {
    /// The session (the peer's index) the numbers belong to.
    index: Option<u32>,
    next: u32,
    /// The oldest kept packet's sequence number (`next` when none is kept): packets are
    /// kept in the order they were sent, so they expire from here.
    first: u32,
    kept: Box<[Option<Kept>]>,
    /// Packets kept now (slots whose packet is still there).
    kept_count: usize,
    /// Sequence numbers to repair, oldest first (each at most once).
    queue: VecDeque<u32>,
}

impl Default for RepairSender {
    fn default() -> Self {
        Self::new()
    }
}

impl RepairSender {
    /// An empty sender (allocates its slots once).
    pub fn new() -> Self {
        Self {
            index: None,
            next: 0,
            first: 0,
            kept: std::iter::repeat_with(|| None).take(KEEP_SLOTS).collect(),
            kept_count: 0,
            queue: VecDeque::with_capacity(KEEP_SLOTS),
        }
    }

    /// The sequence number for the next bulk packet on session `index`, or `None` when
    /// the session has used them all (the packet goes unsequenced). A new session starts
    /// again from 0; the old one's kept packets go to `recycle`.
    pub fn next_seq(&mut self, index: u32, mut recycle: impl FnMut(Vec<u8>)) -> Option<u32> {
        if self.index != Some(index) {
            self.clear(&mut recycle);
            self.index = Some(index);
            self.next = 0;
            self.first = 0;
        }
        let seq = self.next;
        self.next = self.next.checked_add(1)?;
        Some(seq)
    }

    /// Gives back `seq`, the last number drawn, whose packet was not sent after all.
    pub fn unnumber(&mut self, seq: u32) {
        if seq.checked_add(1) == Some(self.next) {
            self.next = seq;
            self.first = self.first.min(seq);
        }
    }

    /// Keeps bulk packet `seq` (just sent at `now`) for repair; returns the buffer it
    /// pushed out.
    pub fn keep(&mut self, seq: u32, packet: Vec<u8>, now: Instant) -> Option<Vec<u8>> {
        let slot = &mut self.kept[seq as usize % KEEP_SLOTS];
        let old = slot.replace(Kept {
            seq,
            packet: Some(packet),
            sent: now,
        });
        self.first = self.first.min(seq);
        self.skip_gone();
        let pushed_out = old.and_then(|k| k.packet);
        if pushed_out.is_none() {
            self.kept_count += 1;
        }
        pushed_out
    }

    /// Bulk packet `seq` went out but is not kept (the node keeps all it may): the older
    /// packet its slot still holds is given back (`keep` would have pushed it out), so no
    /// packet stays kept where expiry, which walks the numbers in order, cannot reach it.
    pub fn forgo(&mut self, seq: u32) -> Option<Vec<u8>> {
        let old = self.kept[seq as usize % KEEP_SLOTS]
            .take()
            .and_then(|k| k.packet);
        if old.is_some() {
            self.kept_count -= 1;
        }
        self.skip_gone();
        old
    }

    /// Packets kept now.
    pub fn kept(&self) -> usize {
        self.kept_count
    }

    /// When the oldest kept packet expires, if one is kept.
    pub fn expires_at(&self) -> Option<Instant> {
        self.kept_at(self.first).map(|k| k.sent + KEEP_FOR)
    }

    /// Gives the packets kept since [`KEEP_FOR`] or longer to `recycle`; returns how many.
    pub fn expire(&mut self, now: Instant, mut recycle: impl FnMut(Vec<u8>)) -> usize {
        let mut expired = 0;
        while let Some(slot) = self
            .kept_at(self.first)
            .filter(|k| k.sent + KEEP_FOR <= now)
            .map(|k| k.seq as usize % KEEP_SLOTS)
        {
            if let Some(packet) = self.kept[slot].as_mut().and_then(|k| k.packet.take()) {
                recycle(packet);
                expired += 1;
            }
            self.skip_gone();
        }
        self.kept_count -= expired;
        expired
    }

    /// The kept packet `seq`, if it is still kept (not pushed out, repaired or expired).
    fn kept_at(&self, seq: u32) -> Option<&Kept> {
        self.kept[seq as usize % KEEP_SLOTS]
            .as_ref()
            .filter(|k| k.seq == seq && k.packet.is_some())
    }

    /// Moves `first` past the packets no longer kept. Each number is passed once, so this
    /// costs O(1) per packet sent.
    fn skip_gone(&mut self) {
        self.first = self.first.max(self.next.saturating_sub(KEEP_SLOTS as u32));
        while self.first < self.next && self.kept_at(self.first).is_none() {
            self.first += 1;
        }
    }

    /// Queues the packets a NACK names that are still kept and not yet repaired; returns
    /// how many it queued. A NACK for another session is ignored.
    pub fn on_nack(&mut self, nack: NackFrame) -> usize {
        if self.index != Some(nack.index) {
            return 0;
        }
        let mut queued = 0;
        for seq in (0..u32::from(nack.count)).filter_map(|i| nack.first.checked_add(i)) {
            if seq >= self.next || self.queue.len() >= KEEP_SLOTS {
                break;
            }
            if self.kept_at(seq).is_some() && !self.queue.contains(&seq) {
                self.queue.push_back(seq);
                queued += 1;
            }
        }
        queued
    }

    /// The next repair's sequence number and packet length, dropping queued numbers whose
    /// packets are no longer kept.
    pub fn peek_repair(&mut self) -> Option<(u32, usize)> {
        while let Some(&seq) = self.queue.front() {
            if let Some(packet) = self.kept_at(seq).and_then(|k| k.packet.as_ref()) {
                return Some((seq, packet.len()));
            }
            self.queue.pop_front();
        }
        None
    }

    /// Takes the next repair: its sequence number and packet (for the caller to seal and
    /// recycle; it is not repaired again).
    pub fn take_repair(&mut self) -> Option<(u32, Vec<u8>)> {
        self.peek_repair()?;
        let seq = self.queue.pop_front()?;
        let packet = self.kept[seq as usize % KEEP_SLOTS]
            .as_mut()
            .and_then(|k| k.packet.take())?;
        self.kept_count -= 1;
        self.skip_gone();
        Some((seq, packet))
    }

    /// Whether a repair waits.
    pub fn has_repair(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The session the numbers belong to.
    pub fn session(&self) -> Option<u32> {
        self.index
    }

    /// Gives every kept packet to `recycle` and forgets the session.
    pub fn clear(&mut self, recycle: &mut impl FnMut(Vec<u8>)) {
        for slot in self.kept.iter_mut() {
            if let Some(packet) = slot.take().and_then(|k| k.packet) {
                recycle(packet);
            }
        }
        self.kept_count = 0;
        self.queue.clear();
        self.index = None;
        self.first = self.next;
    }
}

/// What the receiver does with a sequenced bulk packet that just authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Deliver it now: it is the next in order (the packets it unblocked were released
    /// after it), or a late one whose hole was given up, or an old session's.
    Deliver,
    /// Hold it behind a hole: hand it to [`BulkReorder::hold`]. `nack` names the packets
    /// missing in front of it that no earlier NACK named, unless the path reorders: then
    /// the gap waits out the reordering window and [`BulkReorder::poll_nack`] names what
    /// is still missing.
    Hold {
        /// The NACK to send now, if this arrival opened a new gap.
        nack: Option<NackFrame>,
    },
    /// Already delivered or held: drop it (a repair whose original came late, a link
    /// duplicate).
    Duplicate,
}

#[derive(Debug)]
struct Held {
    seq: u32,
    packet: Vec<u8>,
    arrived: Instant,
}

/// A NACK sent: the packets it named, when, and when their gap opened.
#[derive(Clone, Copy, Debug)]
struct NackSent {
    first: u32,
    count: u16,
    at: Instant,
    opened: Instant,
}

/// A gap whose NACK waits out the reordering window: named at `due` if still open.
#[derive(Clone, Copy, Debug)]
struct GapWaiting {
    first: u32,
    count: u16,
    opened: Instant,
    due: Instant,
}

/// A named packet's first copy: how long after its gap opened it came. A second copy
/// of it (the repair) then proves the NACK needless: the first was the original, late.
#[derive(Clone, Copy, Debug)]
struct Filled {
    seq: u32,
    late: Duration,
}

/// How long a hole takes to be filled after its NACK, smoothed as TCP smooths its round
/// trip (RFC 6298's gains), and the wait for a hole it implies.
///
/// Why measured here and not taken from the round trip: the receiver of bulk sends little
/// the peer acknowledges, so its own round-trip estimate can be the handshake's, taken on
/// an idle path; a repair crosses the loaded one (and waits for the sender's turn). A
/// jitter buffer sizes its wait from the delays it sees, and so does this.
#[derive(Clone, Copy, Debug, Default)]
struct RepairDelay {
    smoothed: Option<Duration>,
    variation: Duration,
}

impl RepairDelay {
    fn sample(&mut self, delay: Duration) {
        match self.smoothed {
            None => {
                self.smoothed = Some(delay);
                self.variation = delay / 2;
            }
            Some(smoothed) => {
                self.variation = (self.variation * 3 + smoothed.abs_diff(delay)) / 4;
                self.smoothed = Some((smoothed * 7 + delay) / 8);
            }
        }
    }

    /// The wait for a hole: the repairs' smoothed delay, four variations and a margin,
    /// within [`MIN_HOLD`] and [`MAX_HOLD`]; `fallback` before any repair was timed.
    fn hold(&self, fallback: Duration) -> Duration {
        self.smoothed.map_or(fallback, |smoothed| {
            (smoothed + self.variation * 4 + HOLD_MARGIN).clamp(MIN_HOLD, MAX_HOLD)
        })
    }
}

/// The receiver's side, per peer: delivers the sender's bulk packets in order, holding
/// those behind a hole until the hole is repaired or its wait runs out.
#[derive(Debug)]
pub struct BulkReorder {
    /// The session whose numbers are being ordered.
    index: Option<u32>,
    /// The session before it: its stragglers are delivered as they come, once each.
    previous: Option<u32>,
    /// Sequence numbers of the previous session delivered or held: a repair of one of
    /// its packets that arrives after the switch is not delivered a second time.
    previous_seen: ReplayWindow,
    /// The lowest sequence number not yet delivered or given up.
    next: u32,
    /// The highest sequence number seen (NACKs name only gaps above it).
    highest: Option<u32>,
    held: Box<[Option<Held>]>,
    held_count: usize,
    /// Sequence numbers delivered or held.
    seen: ReplayWindow,
    /// The wait for a hole, as of the last hold.
    hold: Duration,
    /// When the hole at `next` is given up.
    deadline: Option<Instant>,
    /// The last NACKs sent (a ring), to time the packets that fill their holes.
    nacks: [Option<NackSent>; NACKS_TIMED],
    /// Where the next NACK goes in `nacks`.
    nack_cursor: usize,
    repair_delay: RepairDelay,
    /// How long a new gap waits for its packets before they are named: zero until a
    /// repair proved needless (the path reorders), then as late as the original came.
    reorder_wait: Duration,
    /// When a repair last proved needless (the window decays from there).
    widened_at: Option<Instant>,
    /// Gaps waiting out `reorder_wait`, oldest first.
    waiting: [Option<GapWaiting>; GAPS_WAITING],
    /// The first copies of named packets, newest last (a ring of `NACKS_TIMED`).
    filled: [Option<Filled>; NACKS_TIMED],
    filled_cursor: usize,
}

impl Default for BulkReorder {
    fn default() -> Self {
        Self::new()
    }
}

impl BulkReorder {
    /// An empty reorder buffer (allocates its slots once).
    pub fn new() -> Self {
        Self {
            index: None,
            previous: None,
            previous_seen: ReplayWindow::default(),
            next: 0,
            highest: None,
            held: std::iter::repeat_with(|| None).take(HOLD_SLOTS).collect(),
            held_count: 0,
            seen: ReplayWindow::default(),
            hold: DEFAULT_HOLD,
            deadline: None,
            nacks: [None; NACKS_TIMED],
            nack_cursor: 0,
            repair_delay: RepairDelay::default(),
            reorder_wait: Duration::ZERO,
            widened_at: None,
            waiting: [None; GAPS_WAITING],
            filled: [None; NACKS_TIMED],
            filled_cursor: 0,
        }
    }

    /// How long to wait for a hole: from the repairs timed on this path, or from the
    /// peer's round trip (`rtt`, see [`hold_time`]) until one was.
    pub fn hold_time(&self, rtt: Option<Duration>) -> Duration {
        (self.repair_delay.hold(hold_time(rtt)) + self.reorder_wait).min(MAX_HOLD)
    }

    /// How long a new gap waits before its NACK (the path's measured reordering).
    pub fn reorder_wait(&self) -> Duration {
        self.reorder_wait
    }

    /// Sequenced bulk packet `seq` of session `index` authenticated at `now`. Packets it
    /// releases (the run it completes, or all of an old session's) are pushed to
    /// `released`, in order, to be delivered after it.
    pub fn arrive(
        &mut self,
        now: Instant,
        index: u32,
        seq: u32,
        released: &mut VecDeque<Vec<u8>>,
    ) -> Arrival {
        if self.index != Some(index) {
            if self.previous == Some(index) {
                if !self.previous_seen.check(u64::from(seq)) {
                    return Arrival::Duplicate;
                }
                self.previous_seen.commit(u64::from(seq));
                return Arrival::Deliver;
            }
            // A new session: what the old one still holds goes out, holes given up.
            self.release_all(released);
            self.previous = self.index;
            self.index = Some(index);
            self.next = 0;
            self.highest = None;
            self.previous_seen = std::mem::take(&mut self.seen);
            self.nacks = [None; NACKS_TIMED];
            self.waiting = [None; GAPS_WAITING];
            self.filled = [None; NACKS_TIMED];
        }
        if !self.seen.check(u64::from(seq)) {
            self.needless_repair(now, seq);
            return Arrival::Duplicate;
        }
        if self.highest.is_some_and(|highest| seq < highest) {
            self.time_repair(now, seq);
        }
        if seq < self.next {
            // Its hole was given up: late, but TCP takes a late segment over a lost one.
            self.seen.commit(u64::from(seq));
            return Arrival::Deliver;
        }
        self.decay_wait(now);
        let nack = self
            .gap_before(index, seq)
            .and_then(|gap| self.name_or_wait(now, gap));
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        if seq == self.next {
            self.seen.commit(u64::from(seq));
            self.next = seq.saturating_add(1);
            self.release_run(released);
            return Arrival::Deliver;
        }
        // Ahead of a hole. Keep the window inside the slots: give up the oldest holes.
        let span = u64::from(seq - self.next);
        if span >= HOLD_SLOTS as u64 {
            let keep_from = seq - (HOLD_SLOTS as u32 - 1);
            self.give_up_until(keep_from, released);
        }
        Arrival::Hold { nack }
    }

    /// Holds `packet` (the IP packet of `seq`, which [`arrive`](Self::arrive) said to
    /// hold) until the packets before it arrive or the hole's wait (`hold`) runs out.
    pub fn hold(&mut self, seq: u32, packet: Vec<u8>, now: Instant, hold: Duration) {
        self.seen.commit(u64::from(seq));
        self.hold = hold;
        let slot = &mut self.held[seq as usize % HOLD_SLOTS];
        debug_assert!(slot.is_none(), "arrive keeps held packets inside the slots");
        if slot.is_none() {
            self.held_count += 1;
        }
        *slot = Some(Held {
            seq,
            packet,
            arrived: now,
        });
        self.deadline = self.deadline.or(Some(now + hold));
    }

    /// When the hole at the front is given up, if packets are held, or a waiting gap's
    /// NACK is due, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.waiting.iter().flatten().map(|g| g.due).min();
        [self.deadline, due].into_iter().flatten().min()
    }

    /// The NACK for a gap that waited out the reordering window and still misses
    /// packets (trimmed to them), once its time came; `None` when none is due. Gaps the
    /// late packets closed are dropped unnamed: that is the window's point.
    pub fn poll_nack(&mut self, now: Instant) -> Option<NackFrame> {
        let index = self.index?;
        for slot in 0..GAPS_WAITING {
            let Some(gap) = self.waiting[slot].filter(|g| g.due <= now) else {
                continue;
            };
            self.waiting[slot] = None;
            let missing = |seq: &u32| *seq >= self.next && self.seen.check(u64::from(*seq));
            let end = gap.first.saturating_add(u32::from(gap.count));
            let Some(first) = (gap.first..end).find(missing) else {
                continue;
            };
            let last = (first..end).rev().find(missing).unwrap_or(first);
            let nack = NackFrame {
                index,
                first,
                count: (last - first + 1) as u16,
            };
            self.sent(now, nack, gap.opened);
            return Some(nack);
        }
        None
    }

    /// Gives up the holes whose wait ran out by `now`, releasing what waited behind them;
    /// returns how many sequence numbers were given up.
    pub fn handle_timeout(&mut self, now: Instant, released: &mut VecDeque<Vec<u8>>) -> u32 {
        let mut given_up = 0;
        while self.deadline.is_some_and(|d| d <= now) {
            let Some(first) = self.lowest_held() else {
                self.deadline = None;
                break;
            };
            given_up += first - self.next;
            self.next = first;
            self.release_run(released);
        }
        given_up
    }

    /// The session whose packets are put in order.
    pub fn session(&self) -> Option<u32> {
        self.index
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// Releases everything held, in order, giving up every hole (the peer went away or
    /// its session changed).
    pub fn release_all(&mut self, released: &mut VecDeque<Vec<u8>>) {
        if let Some(last) = self.highest {
            self.give_up_until(last.saturating_add(1), released);
        }
        self.deadline = None;
    }

    /// A first copy of `seq` arrived at `now`: if a remembered NACK named it, its delay
    /// since that NACK is a sample of how long a hole takes to fill (a repair's, or a
    /// late original's: the wait has to cover both). A copy that came after its hole was
    /// given up is sampled too, so a wait that is too short grows.
    fn time_repair(&mut self, now: Instant, seq: u32) {
        let nacked = self.nacks.iter().flatten().find(|n| {
            seq.checked_sub(n.first)
                .is_some_and(|offset| offset < u32::from(n.count))
        });
        if let Some(nack) = nacked {
            let delay = now.saturating_duration_since(nack.at);
            let late = now.saturating_duration_since(nack.opened);
            self.repair_delay.sample(delay);
            self.filled[self.filled_cursor] = Some(Filled { seq, late });
            self.filled_cursor = (self.filled_cursor + 1) % NACKS_TIMED;
        }
    }

    /// A second copy of `seq` came: if `seq` was named and its first copy filled the
    /// hole, that first copy was the original, late (a repair comes a round trip after
    /// its NACK), and the NACK cost a needless repair. New gaps wait that long, a
    /// quarter more, before they are named (RACK widens its reordering window on a
    /// D-SACK the same way), within a quarter of the wait for a hole. (A link's copy of
    /// a repair reads the same; rare, bounded by that quarter, and decayed.)
    fn needless_repair(&mut self, now: Instant, seq: u32) {
        let Some(filled) = self
            .filled
            .iter_mut()
            .find(|f| f.is_some_and(|f| f.seq == seq))
            .and_then(Option::take)
        else {
            return;
        };
        let wait = (filled.late + filled.late / 4).min(self.hold / 4);
        self.reorder_wait = self.reorder_wait.max(wait);
        self.widened_at = Some(now);
    }

    /// Halves the reordering window once it has gone [`REORDER_DECAY`] without a
    /// needless repair: a path that stopped reordering gets its prompt NACKs back.
    fn decay_wait(&mut self, now: Instant) {
        if let Some(at) = self.widened_at
            && now.saturating_duration_since(at) >= REORDER_DECAY
        {
            self.reorder_wait /= 2;
            self.widened_at = Some(now);
            if self.reorder_wait < Duration::from_micros(100) {
                self.reorder_wait = Duration::ZERO;
                self.widened_at = None;
            }
        }
    }

    /// A gap just opened at `now`: named at once while the path has not reordered, else
    /// left to wait out the window (named at once too when every waiting place is taken).
    fn name_or_wait(&mut self, now: Instant, gap: NackFrame) -> Option<NackFrame> {
        if !self.reorder_wait.is_zero()
            && let Some(slot) = self.waiting.iter_mut().find(|g| g.is_none())
        {
            *slot = Some(GapWaiting {
                first: gap.first,
                count: gap.count,
                opened: now,
                due: now + self.reorder_wait,
            });
            return None;
        }
        self.sent(now, gap, now);
        Some(gap)
    }

    /// Remembers a NACK sent at `now` for a gap opened at `opened`, to time what fills it.
    fn sent(&mut self, now: Instant, nack: NackFrame, opened: Instant) {
        self.nacks[self.nack_cursor] = Some(NackSent {
            first: nack.first,
            count: nack.count,
            at: now,
            opened,
        });
        self.nack_cursor = (self.nack_cursor + 1) % NACKS_TIMED;
    }

    /// A NACK for the packets missing in front of `seq`, if `seq` opens a gap above the
    /// highest seen (gaps below it were named when they opened).
    fn gap_before(&self, index: u32, seq: u32) -> Option<NackFrame> {
        let first = self.highest.map_or(self.next, |h| h.saturating_add(1));
        let missing = seq.checked_sub(first).filter(|&n| n > 0)?;
        let count = missing.min(HOLD_SLOTS as u32) as u16;
        Some(NackFrame {
            index,
            first: seq - u32::from(count),
            count,
        })
    }

    /// Delivers the held packets from `next` on that follow without a hole, then sets the
    /// deadline for the next hole, if packets still wait.
    fn release_run(&mut self, released: &mut VecDeque<Vec<u8>>) {
        while let Some(held) = self.take_held(self.next) {
            released.push_back(held.packet);
            self.next = self.next.saturating_add(1);
        }
        self.deadline = self.lowest_held().and_then(|seq| {
            let held = self.held[seq as usize % HOLD_SLOTS].as_ref()?;
            Some(held.arrived + self.hold)
        });
    }

    /// Gives up every hole below `until`, releasing the packets held below it in order.
    fn give_up_until(&mut self, until: u32, released: &mut VecDeque<Vec<u8>>) {
        while self.next < until {
            if let Some(held) = self.take_held(self.next) {
                released.push_back(held.packet);
            }
            self.next += 1;
            if self.held_count == 0 {
                self.next = self.next.max(until);
            }
        }
        self.release_run(released);
    }

    fn take_held(&mut self, seq: u32) -> Option<Held> {
        let slot = &mut self.held[seq as usize % HOLD_SLOTS];
        if slot.as_ref().is_some_and(|h| h.seq == seq) {
            self.held_count -= 1;
            return slot.take();
        }
        None
    }

    /// The lowest sequence number held (all held ones are within the slots above `next`).
    fn lowest_held(&self) -> Option<u32> {
        if self.held_count == 0 {
            return None;
        }
        (0..HOLD_SLOTS as u32)
            .filter_map(|i| self.next.checked_add(i))
            .find(|&seq| {
                self.held[seq as usize % HOLD_SLOTS]
                    .as_ref()
                    .is_some_and(|h| h.seq == seq)
            })
    }
}

#[cfg(test)]
mod tests;
