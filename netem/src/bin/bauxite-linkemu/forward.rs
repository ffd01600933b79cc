//! The forwarding loop: one thread, both directions. Every packet read goes into a slot of
//! a fixed pool and, if the model delivers it, into a heap ordered by delivery time; the
//! loop sleeps in `ppoll` until the next delivery or the next readable device. Nothing is
//! allocated per packet: the pool, the free list and the heap are sized once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::num::NonZeroU64;
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bauxite_netem::{Drop, Link, Profile, Verdict};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use serde_json::json;
use tun_rs::SyncDevice;

/// Reads per device per wakeup, so one busy side cannot starve the other or the timers.
const READ_BURST: usize = 64;

/// Counters of one direction.
#[derive(Default, Debug)]
struct DirStats {
    received: u64,
    written: u64,
    /// Bytes of the packets written (IP packets: what the rate limit counts).
    written_bytes: u64,
    blackout: u64,
    mtu: u64,
    buffer: u64,
    lost: u64,
    duplicated: u64,
    corrupted: u64,
    pool_full: u64,
    write_errors: u64,
}

/// A distribution of durations: how late packets were written against the model's
/// delivery times, and the two parts of that lateness the kernel decides (see
/// [`Forwarder`]'s `writes` and `wakeups`).
#[derive(Default, Debug)]
struct Lateness {
    count: u64,
    sum_ns: u128,
    max: Duration,
    over_100us: u64,
    over_1ms: u64,
}

impl Lateness {
    fn record(&mut self, late: Duration) {
        self.count += 1;
        self.sum_ns += late.as_nanos();
        self.max = self.max.max(late);
        self.over_100us += u64::from(late > Duration::from_micros(100));
        self.over_1ms += u64::from(late > Duration::from_millis(1));
    }

    fn json(&self) -> serde_json::Value {
        let mean_us = if self.count > 0 {
            (self.sum_ns / u128::from(self.count)) as f64 / 1000.0
        } else {
            0.0
        };
        json!({
            "packets": self.count, "mean_us": mean_us,
            "max_us": self.max.as_secs_f64() * 1e6,
            "over_100us": self.over_100us, "over_1ms": self.over_1ms,
        })
    }
}

/// A packet waiting for its delivery time.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: u64,
    slot: u32,
    /// The device it is written to.
    to: u8,
}

/// Fixed packet buffers and their free list.
struct Pool {
    bytes: Vec<u8>,
    lens: Vec<usize>,
    free: Vec<u32>,
    size: usize,
}

impl Pool {
    fn new(slots: usize, size: usize) -> Self {
        let slots = u32::try_from(slots).unwrap_or(u32::MAX) as usize;
        Self {
            bytes: vec![0; slots * size],
            lens: vec![0; slots],
            free: (0..slots as u32).rev().collect(),
            size,
        }
    }
    fn buf(&mut self, slot: u32) -> &mut [u8] {
        let at = slot as usize * self.size;
        &mut self.bytes[at..at + self.size]
    }
    fn packet(&self, slot: u32) -> &[u8] {
        let at = slot as usize * self.size;
        &self.bytes[at..at + self.lens[slot as usize]]
    }
}

/// The emulator's state: the model per direction, the pool, the schedule.
pub(crate) struct Forwarder {
    profile: Profile,
    links: [Link; 2],
    rngs: [ChaCha20Rng; 2],
    stats: [DirStats; 2],
    late: Lateness,
    /// Time spent inside each TUN write: the kernel runs the receiving stack's softirq
    /// work there, other flows' packets included, so a write can take milliseconds.
    writes: Lateness,
    /// How late the loop woke for a due packet after a poll that timed out (interrupts
    /// and softirqs on its core delay even a real-time thread).
    wakeups: Lateness,
    pool: Pool,
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
    scratch: Vec<u8>,
    start: Instant,
}

impl Forwarder {
    /// `slots` packet buffers of `mtu` bytes; direction A→B draws from `seed`, B→A from
    /// `seed + 1`.
    #[allow(clippy::disallowed_methods)] // The IO shell: the wall clock starts here.
    pub(crate) fn new(profile: Profile, seed: u64, slots: usize, mtu: usize) -> Self {
        let start = Instant::now();
        let slots = slots.max(2);
        // Room for a TUN packet of the device's MTU, and a little over (a read never
        // truncates what the kernel hands over).
        let size = mtu + 64;
        Self {
            profile,
            links: [Link::new(start), Link::new(start)],
            rngs: [
                ChaCha20Rng::seed_from_u64(seed),
                ChaCha20Rng::seed_from_u64(seed.wrapping_add(1)),
            ],
            stats: Default::default(),
            late: Lateness::default(),
            writes: Lateness::default(),
            wakeups: Lateness::default(),
            pool: Pool::new(slots, size),
            due: BinaryHeap::with_capacity(slots),
            seq: 0,
            scratch: vec![0; size],
            start,
        }
    }

    /// Forwards until stdin reaches end of file (if `watch_stdin`), calling `ready` once
    /// the clock has started; returns the counters as JSON. Each line read from stdin
    /// before that prints the counters so far as one JSON line with `"snapshot": true`,
    /// so a harness can tell what crossed the link between two moments (a flow's share
    /// of the capacity).
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    pub(crate) fn run(
        &mut self,
        devs: &[SyncDevice; 2],
        watch_stdin: bool,
        ready: impl FnOnce() -> std::io::Result<()>,
    ) -> anyhow::Result<serde_json::Value> {
        // Sleep as precisely as the kernel can: the default 50 µs slack adds to every
        // delivery.
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
        let stdin = std::io::stdin();
        self.start = Instant::now();
        self.links = [Link::new(self.start), Link::new(self.start)];
        ready().context("announcing readiness")?;
        let mut stdin_buf = [0u8; 64];
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if timed_out && let Some(Reverse(d)) = self.due.peek() {
                self.wakeups.record(now.saturating_duration_since(d.at));
            }
            self.deliver_due(devs, now);
            let timeout = self.due.peek().map(|Reverse(d)| {
                let wait = d.at.saturating_duration_since(Instant::now());
                Timespec {
                    tv_sec: wait.as_secs() as _,
                    tv_nsec: wait.subsec_nanos() as _,
                }
            });
            let (ready_dev, stdin_ready) = {
                let stdin_fd = stdin.as_fd();
                let mut fds = [
                    PollFd::new(&devs[0], PollFlags::IN),
                    PollFd::new(&devs[1], PollFlags::IN),
                    PollFd::from_borrowed_fd(stdin_fd, PollFlags::IN),
                ];
                let n = if watch_stdin { 3 } else { 2 };
                match poll(&mut fds[..n], timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e).context("polling the TUN devices"),
                }
                let readable = |f: &PollFd<'_>| !f.revents().is_empty();
                timed_out = !fds[..n].iter().any(readable);
                (
                    [readable(&fds[0]), readable(&fds[1])],
                    watch_stdin && readable(&fds[2]),
                )
            };
            for (side, readable) in ready_dev.into_iter().enumerate() {
                if readable {
                    self.read_side(devs, side)?;
                }
            }
            if stdin_ready {
                match stdin.lock().read(&mut stdin_buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        for _ in stdin_buf[..n].iter().filter(|&&b| b == b'\n') {
                            let mut snapshot = self.report();
                            snapshot["snapshot"] = true.into();
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{snapshot}")
                                .and_then(|()| out.flush())
                                .context("writing a snapshot")?;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("reading stdin"),
                }
            }
        }
        Ok(self.report())
    }

    /// Writes every packet whose time has come.
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn deliver_due(&mut self, devs: &[SyncDevice; 2], now: Instant) {
        while self.due.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.due.pop() else {
                break;
            };
            let dir = usize::from(1 - d.to);
            let packet = self.pool.packet(d.slot);
            let started = Instant::now();
            let sent = devs[usize::from(d.to)].send(packet);
            let done = Instant::now();
            self.writes.record(done - started);
            match sent {
                Ok(_) => {
                    self.stats[dir].written += 1;
                    self.stats[dir].written_bytes += packet.len() as u64;
                }
                Err(_) => self.stats[dir].write_errors += 1,
            }
            self.late.record(done.saturating_duration_since(d.at));
            self.pool.free.push(d.slot);
        }
    }

    /// Reads up to a burst of packets from side `side` and schedules them.
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn read_side(&mut self, devs: &[SyncDevice; 2], side: usize) -> anyhow::Result<()> {
        for _ in 0..READ_BURST {
            let Some(slot) = self.pool.free.pop() else {
                // Every buffer is in flight: drop at the door, still draining the device.
                match devs[side].recv(&mut self.scratch) {
                    Ok(_) => self.stats[side].pool_full += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e).context("reading a TUN device"),
                }
                continue;
            };
            let len = match devs[side].recv(self.pool.buf(slot)) {
                Ok(len) => len,
                Err(e) => {
                    self.pool.free.push(slot);
                    if e.kind() == ErrorKind::WouldBlock {
                        return Ok(());
                    }
                    return Err(e).context("reading a TUN device");
                }
            };
            let now = Instant::now();
            self.schedule(side, slot, len, now);
            // Deliveries that fell due while reading go out before the next read.
            self.deliver_due(devs, now);
        }
        Ok(())
    }

    /// The model's verdict on a packet read from `side` at `now`.
    fn schedule(&mut self, side: usize, slot: u32, len: usize, now: Instant) {
        self.pool.lens[slot as usize] = len;
        let stats = &mut self.stats[side];
        stats.received += 1;
        let imp = self.profile.at(now.saturating_duration_since(self.start));
        let to = 1 - side as u8;
        match self.links[side].offer(now, len, &imp, &mut self.rngs[side]) {
            Verdict::Deliver(d) => {
                if let Some(flip) = d.flip {
                    stats.corrupted += 1;
                    flip.apply(&mut self.pool.buf(slot)[..len]);
                }
                if let Some(at) = d.duplicate_at
                    && let Some(copy) = self.pool.free.pop()
                {
                    self.stats[side].duplicated += 1;
                    let (from, into) = (slot as usize * self.pool.size, copy as usize);
                    self.pool
                        .bytes
                        .copy_within(from..from + len, into * self.pool.size);
                    self.pool.lens[into] = len;
                    self.push(at, copy, to);
                }
                self.push(d.at, slot, to);
            }
            Verdict::Drop(why) => {
                match why {
                    Drop::Blackout => stats.blackout += 1,
                    Drop::Mtu => stats.mtu += 1,
                    Drop::Buffer => stats.buffer += 1,
                    Drop::Loss => stats.lost += 1,
                }
                self.pool.free.push(slot);
            }
        }
    }

    fn push(&mut self, at: Instant, slot: u32, to: u8) {
        self.seq += 1;
        // Never beyond capacity: one heap entry per slot at most.
        self.due.push(Reverse(Due {
            at,
            seq: self.seq,
            slot,
            to,
        }));
    }

    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn report(&self) -> serde_json::Value {
        let dir = |s: &DirStats| {
            json!({
                "received": s.received, "written": s.written,
                "written_bytes": s.written_bytes, "blackout": s.blackout,
                "mtu": s.mtu, "buffer": s.buffer, "lost": s.lost, "duplicated": s.duplicated,
                "corrupted": s.corrupted, "pool_full": s.pool_full,
                "write_errors": s.write_errors,
            })
        };
        let at = Instant::now().saturating_duration_since(self.start);
        json!({
            "at_us": at.as_micros() as u64,
            // What one direction could carry so far (null: an unlimited rate).
            "capacity_bits": self.profile.capacity_bits(Duration::ZERO, at),
            "a_to_b": dir(&self.stats[0]),
            "b_to_a": dir(&self.stats[1]),
            "lateness": self.late.json(),
            "writes": self.writes.json(),
            "wakeups": self.wakeups.json(),
        })
    }
}
