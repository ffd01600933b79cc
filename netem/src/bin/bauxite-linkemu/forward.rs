//! The forwarding loops: one thread per direction, each reading one device and writing
//! the other. A TUN write runs the receiving side's network stack (softirq) in the
//! writer's thread and can take milliseconds on a busy machine; with one thread per
//! direction a stall writing one way no longer holds back the packets due the other way,
//! and on two cores both directions write at once. Every packet read goes into a slot of
//! a fixed pool and, if the model delivers it, into a heap ordered by delivery time; each
//! loop sleeps in `ppoll` until its next delivery or its device is readable. Nothing is
//! allocated per packet: the pools, free lists and heaps are sized once. The counters are
//! relaxed atomics, so the main thread can print a snapshot while the loops run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::num::NonZeroU64;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bauxite_netem::{Drop, Link, Profile, Verdict};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use serde_json::json;
use tun_rs::SyncDevice;

/// Reads per wakeup, so a busy device cannot starve the timers.
const READ_BURST: usize = 64;

/// The longest a loop sleeps, so it sees the stop flag and the main thread sees stdin.
const MAX_SLEEP: Duration = Duration::from_millis(50);

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// A distribution of durations: how late packets were written against the model's
/// delivery times, and the two parts of that lateness the kernel decides (`writes`, the
/// time inside each TUN write, and `wakeups`, how late a loop woke for a due packet).
#[derive(Default, Debug)]
struct Lateness {
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    over_100us: AtomicU64,
    over_1ms: AtomicU64,
}

impl Lateness {
    fn record(&self, late: Duration) {
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        bump(&self.count);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
        if late > Duration::from_micros(100) {
            bump(&self.over_100us);
        }
        if late > Duration::from_millis(1) {
            bump(&self.over_1ms);
        }
    }

    /// One distribution over `parts` (both directions, or one).
    fn json(parts: &[&Lateness]) -> serde_json::Value {
        let sum = |f: fn(&Lateness) -> &AtomicU64| -> u64 {
            parts.iter().map(|p| f(p).load(Relaxed)).sum()
        };
        let count = sum(|l| &l.count);
        let mean_us = if count > 0 {
            sum(|l| &l.sum_ns) as f64 / count as f64 / 1000.0
        } else {
            0.0
        };
        let max_ns = parts
            .iter()
            .map(|p| p.max_ns.load(Relaxed))
            .max()
            .unwrap_or(0);
        json!({
            "packets": count, "mean_us": mean_us, "max_us": max_ns as f64 / 1000.0,
            "over_100us": sum(|l| &l.over_100us), "over_1ms": sum(|l| &l.over_1ms),
        })
    }
}

/// Counters of one direction.
#[derive(Default, Debug)]
pub(crate) struct DirStats {
    received: AtomicU64,
    written: AtomicU64,
    /// Bytes of the packets written (IP packets: what the rate limit counts).
    written_bytes: AtomicU64,
    blackout: AtomicU64,
    mtu: AtomicU64,
    buffer: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    corrupted: AtomicU64,
    pool_full: AtomicU64,
    write_errors: AtomicU64,
    late: Lateness,
    writes: Lateness,
    wakeups: Lateness,
}

impl DirStats {
    fn json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Relaxed);
        json!({
            "received": n(&self.received), "written": n(&self.written),
            "written_bytes": n(&self.written_bytes), "blackout": n(&self.blackout),
            "mtu": n(&self.mtu), "buffer": n(&self.buffer), "lost": n(&self.lost),
            "duplicated": n(&self.duplicated), "corrupted": n(&self.corrupted),
            "pool_full": n(&self.pool_full), "write_errors": n(&self.write_errors),
            "lateness": Lateness::json(&[&self.late]),
            "writes": Lateness::json(&[&self.writes]),
            "wakeups": Lateness::json(&[&self.wakeups]),
        })
    }
}

/// A packet waiting for its delivery time.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: u64,
    slot: u32,
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

/// One direction: its model, its pool and its schedule, owned by its thread.
struct Direction<'a> {
    profile: &'a Profile,
    link: Link,
    rng: ChaCha20Rng,
    stats: &'a DirStats,
    pool: Pool,
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
    scratch: Vec<u8>,
    start: Instant,
}

impl<'a> Direction<'a> {
    fn new(
        profile: &'a Profile,
        stats: &'a DirStats,
        seed: u64,
        slots: usize,
        size: usize,
        start: Instant,
    ) -> Self {
        Self {
            profile,
            link: Link::new(start),
            rng: ChaCha20Rng::seed_from_u64(seed),
            stats,
            pool: Pool::new(slots, size),
            due: BinaryHeap::with_capacity(slots),
            seq: 0,
            scratch: vec![0; size],
            start,
        }
    }

    /// Forwards from `from` to `to` until `stop` is set.
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn run(&mut self, from: &SyncDevice, to: &SyncDevice, stop: &AtomicBool) -> anyhow::Result<()> {
        // Sleep as precisely as the kernel can: the default 50 µs slack adds to every
        // delivery (the slack is per thread).
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
        // The delivery time a timed-out poll slept until, to measure the wake-up.
        let mut slept_until = None;
        while !stop.load(Relaxed) {
            let now = Instant::now();
            if let Some(at) = slept_until.take() {
                self.stats.wakeups.record(now.saturating_duration_since(at));
            }
            self.deliver_due(to, now);
            let next = self.due.peek().map(|Reverse(d)| d.at);
            let until_next = next.map(|at| at.saturating_duration_since(Instant::now()));
            let wait = until_next.map_or(MAX_SLEEP, |w| w.min(MAX_SLEEP));
            let timeout = Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(from, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).context("polling a TUN device"),
            }
            if fds[0].revents().is_empty() {
                // Timed out: for the due packet if it was nearer than the cap.
                slept_until = next.filter(|_| until_next.is_some_and(|w| w <= MAX_SLEEP));
            } else {
                self.read(from, to)?;
            }
        }
        Ok(())
    }

    /// Writes every packet whose time has come.
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn deliver_due(&mut self, to: &SyncDevice, now: Instant) {
        while self.due.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.due.pop() else {
                break;
            };
            let packet = self.pool.packet(d.slot);
            let started = Instant::now();
            let sent = to.send(packet);
            let done = Instant::now();
            self.stats.writes.record(done - started);
            match sent {
                Ok(_) => {
                    bump(&self.stats.written);
                    self.stats
                        .written_bytes
                        .fetch_add(packet.len() as u64, Relaxed);
                }
                Err(_) => bump(&self.stats.write_errors),
            }
            self.stats.late.record(done.saturating_duration_since(d.at));
            self.pool.free.push(d.slot);
        }
    }

    /// Reads up to a burst of packets from `from` and schedules them.
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn read(&mut self, from: &SyncDevice, to: &SyncDevice) -> anyhow::Result<()> {
        for _ in 0..READ_BURST {
            let Some(slot) = self.pool.free.pop() else {
                // Every buffer is in flight: drop at the door, still draining the device.
                match from.recv(&mut self.scratch) {
                    Ok(_) => bump(&self.stats.pool_full),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e).context("reading a TUN device"),
                }
                continue;
            };
            let len = match from.recv(self.pool.buf(slot)) {
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
            self.schedule(slot, len, now);
            // Deliveries that fell due while reading go out before the next read.
            self.deliver_due(to, now);
        }
        Ok(())
    }

    /// The model's verdict on a packet read at `now`.
    fn schedule(&mut self, slot: u32, len: usize, now: Instant) {
        self.pool.lens[slot as usize] = len;
        let stats = self.stats;
        bump(&stats.received);
        let imp = self.profile.at(now.saturating_duration_since(self.start));
        match self.link.offer(now, len, &imp, &mut self.rng) {
            Verdict::Deliver(d) => {
                if let Some(flip) = d.flip {
                    bump(&stats.corrupted);
                    flip.apply(&mut self.pool.buf(slot)[..len]);
                }
                if let Some(at) = d.duplicate_at
                    && let Some(copy) = self.pool.free.pop()
                {
                    bump(&stats.duplicated);
                    let (from, into) = (slot as usize * self.pool.size, copy as usize);
                    self.pool
                        .bytes
                        .copy_within(from..from + len, into * self.pool.size);
                    self.pool.lens[into] = len;
                    self.push(at, copy);
                }
                self.push(d.at, slot);
            }
            Verdict::Drop(why) => {
                bump(match why {
                    Drop::Blackout => &stats.blackout,
                    Drop::Mtu => &stats.mtu,
                    Drop::Buffer => &stats.buffer,
                    Drop::Loss => &stats.lost,
                });
                self.pool.free.push(slot);
            }
        }
    }

    fn push(&mut self, at: Instant, slot: u32) {
        self.seq += 1;
        // Never beyond capacity: one heap entry per slot at most.
        self.due.push(Reverse(Due {
            at,
            seq: self.seq,
            slot,
        }));
    }
}

/// The emulator: the profile both directions follow, and their counters.
pub(crate) struct Forwarder {
    profile: Profile,
    seed: u64,
    slots: usize,
    size: usize,
    stats: [DirStats; 2],
    start: Instant,
}

impl Forwarder {
    /// `slots` packet buffers of `mtu` bytes per direction; direction A→B draws from
    /// `seed`, B→A from `seed + 1`.
    #[allow(clippy::disallowed_methods)] // The IO shell: the wall clock starts here.
    pub(crate) fn new(profile: Profile, seed: u64, slots: usize, mtu: usize) -> Self {
        Self {
            profile,
            seed,
            slots: slots.max(2),
            // Room for a TUN packet of the device's MTU, and a little over (a read never
            // truncates what the kernel hands over).
            size: mtu + 64,
            stats: Default::default(),
            start: Instant::now(),
        }
    }

    /// Forwards until stdin reaches end of file (if `watch_stdin`; otherwise until killed
    /// or a device fails), calling `ready` once the clock has started; returns the
    /// counters as JSON. Each line read from stdin before that prints the counters so far
    /// as one JSON line with `"snapshot": true`, so a harness can tell what crossed the
    /// link between two moments (a flow's share of the capacity).
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    pub(crate) fn run(
        &mut self,
        devs: &[SyncDevice; 2],
        watch_stdin: bool,
        ready: impl FnOnce() -> std::io::Result<()>,
    ) -> anyhow::Result<serde_json::Value> {
        self.start = Instant::now();
        let stop = AtomicBool::new(false);
        let this = &*self;
        std::thread::scope(|s| {
            let loops = [0, 1].map(|side| {
                let stop = &stop;
                std::thread::Builder::new()
                    .name(if side == 0 { "a-to-b" } else { "b-to-a" }.into())
                    .spawn_scoped(s, move || {
                        let seed = this.seed.wrapping_add(side as u64);
                        let stats = &this.stats[side];
                        let mut dir = Direction::new(
                            &this.profile,
                            stats,
                            seed,
                            this.slots,
                            this.size,
                            this.start,
                        );
                        let result = dir.run(&devs[side], &devs[1 - side], stop);
                        // A failed direction stops the other, and the main thread with it.
                        stop.store(true, Relaxed);
                        result
                    })
            });
            let mut watched = ready().context("announcing readiness");
            if watched.is_ok() && watch_stdin {
                watched = this.watch_stdin(&stop);
            }
            stop.store(true, Relaxed);
            let mut result = watched;
            for handle in loops {
                let joined = handle
                    .context("starting a forwarding thread")?
                    .join()
                    .map_err(|_| anyhow::anyhow!("a forwarding thread panicked"))?;
                result = result.and(joined);
            }
            result
        })?;
        Ok(self.report())
    }

    /// Prints a snapshot per line read from stdin until its end of file, or until `stop`
    /// (a direction failed).
    fn watch_stdin(&self, stop: &AtomicBool) -> anyhow::Result<()> {
        let stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: MAX_SLEEP.as_nanos() as _,
        };
        while !stop.load(Relaxed) {
            let mut fds = [PollFd::from_borrowed_fd(stdin.as_fd(), PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e).context("polling stdin"),
            }
            match stdin.lock().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    for _ in buf[..n].iter().filter(|&&b| b == b'\n') {
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
        Ok(())
    }

    /// The counters so far: per direction, and the three timing distributions over both.
    #[allow(clippy::disallowed_methods)] // The IO shell reads the wall clock.
    fn report(&self) -> serde_json::Value {
        let at = Instant::now().saturating_duration_since(self.start);
        let [a, b] = &self.stats;
        json!({
            "at_us": at.as_micros() as u64,
            // What one direction could carry so far (null: an unlimited rate).
            "capacity_bits": self.profile.capacity_bits(Duration::ZERO, at),
            "a_to_b": a.json(),
            "b_to_a": b.json(),
            "lateness": Lateness::json(&[&a.late, &b.late]),
            "writes": Lateness::json(&[&a.writes, &b.writes]),
            "wakeups": Lateness::json(&[&a.wakeups, &b.wakeups]),
        })
    }
}
