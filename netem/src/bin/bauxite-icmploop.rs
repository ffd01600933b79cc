//! `bauxite-icmploop`: a control loop's stand-in for the link benchmarks. ICMP echo
//! requests leave at a fixed rate (1 kHz by default) on an absolute schedule that never
//! waits for replies, and each reply is printed as `ping -D -n` prints it, with the same
//! summary line, so `benches/netns/ping-stats.sh` reads either.
//!
//! Why not `ping -i 0.001`: iputils ping sleeps up to 10 ms whenever a reply is
//! outstanding and its next probe is due within a scheduler tick, so on a 6 ms path it
//! sends about 170 echoes a second, not 1000, and a loop of N echoes lasts six times as
//! long as it says.
//!
//! Invariant: echo `i` leaves at `start + i × interval` (late only by the thread's
//! wake-up, never by a reply); a reply counts once, for the echo whose sequence number and
//! identifier it carries, and only within `--wait-ms` of the last echo.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, ipproto};

/// Most echoes one run sends (about 2.8 h at 1 kHz): one flag per echo is kept.
const MAX_COUNT: u32 = 10_000_000;
/// ICMP echo request and reply types.
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

#[derive(Parser, Debug)]
#[command(about = "ICMP echoes at a fixed rate, printed as `ping -D -n` prints them")]
struct Args {
    /// Destination (IPv4).
    dst: Ipv4Addr,
    /// Echoes to send.
    #[arg(short = 'c', long, default_value_t = 1000)]
    count: u32,
    /// Microseconds between echoes (1000: 1 kHz).
    #[arg(short = 'i', long, default_value_t = 1000)]
    interval_us: u64,
    /// Payload bytes (56: ping's default, an 84-byte IP packet).
    #[arg(short = 's', long, default_value_t = 56)]
    size: usize,
    /// How long replies are awaited after the last echo, in milliseconds.
    #[arg(short = 'W', long, default_value_t = 1000)]
    wait_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.interval_us == 0 || args.size < 8 || args.size > 1400 || args.count > MAX_COUNT {
        bail!(
            "the interval must be positive, the size within 8..=1400 bytes and the count at \
             most {MAX_COUNT}"
        );
    }
    // A raw socket (root): the kernel's ping sockets need `ping_group_range` set.
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP))
        .context("opening a raw ICMP socket (root needed)")?;
    rustix::net::sockopt::set_socket_timeout(
        &sock,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_millis(50)),
    )
    .context("setting the receive timeout")?;
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    let sock = Arc::new(sock);
    let id = (std::process::id() & 0xffff) as u16;
    let interval = Duration::from_micros(args.interval_us);
    let start = now();
    let sender = {
        let sock = Arc::clone(&sock);
        let (count, size, dst) = (args.count, args.size, args.dst);
        std::thread::spawn(move || send_all(&sock, dst, id, count, size, start, interval))
    };
    let last_due = start + interval * args.count;
    let deadline = last_due + Duration::from_millis(args.wait_ms);
    let received = receive(&sock, &args, id, start, interval, deadline)?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let loss = 100.0 * f64::from(sent.saturating_sub(received)) / f64::from(sent.max(1));
    println!();
    println!("--- {} icmploop statistics ---", args.dst);
    println!(
        "{sent} packets transmitted, {received} received, {loss:.2}% packet loss, time {}ms",
        now().saturating_duration_since(start).as_millis()
    );
    Ok(())
}

#[allow(clippy::disallowed_methods)] // The tool measures real time.
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)] // `ping -D` prints wall-clock arrival times.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sends echo `i` at `start + i × interval`; returns how many left.
fn send_all(
    sock: &OwnedFd,
    dst: Ipv4Addr,
    id: u16,
    count: u32,
    size: usize,
    start: Instant,
    interval: Duration,
) -> anyhow::Result<u32> {
    let to = SocketAddrV4::new(dst, 0);
    let mut sent = 0;
    for i in 0..count {
        let due = start + interval * i;
        let wait = due.saturating_duration_since(now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let packet = echo_request(id, i as u16, size);
        match rustix::net::sendto(sock, &packet, SendFlags::empty(), &to) {
            Ok(_) => sent += 1,
            // A full socket buffer or an unreachable route loses this echo, as ping would.
            Err(rustix::io::Errno::NOBUFS | rustix::io::Errno::AGAIN) => sent += 1,
            Err(e) => return Err(e).context("sending an echo"),
        }
    }
    Ok(sent)
}

/// Prints each reply until `deadline`; returns how many distinct echoes were answered.
fn receive(
    sock: &OwnedFd,
    args: &Args,
    id: u16,
    start: Instant,
    interval: Duration,
    deadline: Instant,
) -> anyhow::Result<u32> {
    let mut answered = vec![false; args.count as usize];
    let mut received = 0;
    let mut buf = [0u8; 2048];
    while now() < deadline {
        let n = match rustix::net::recv(sock, &mut buf, RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("receiving replies"),
        };
        let arrived = now();
        let Some((seq, ttl)) = echo_reply(&buf[..n], id) else {
            continue;
        };
        // The echo this reply answers: the latest sent with that 16-bit sequence number.
        let elapsed = arrived.saturating_duration_since(start);
        let sent_before = (elapsed.as_nanos() / interval.as_nanos().max(1)) as u64;
        let Some(index) = index_for(seq, sent_before, args.count) else {
            continue;
        };
        if std::mem::replace(&mut answered[index as usize], true) {
            continue; // a duplicate
        }
        received += 1;
        let rtt = arrived.saturating_duration_since(start + interval * index);
        println!(
            "[{:.6}] {} bytes from {}: icmp_seq={} ttl={ttl} time={:.3} ms",
            unix_now(),
            args.size + 8,
            args.dst,
            index + 1,
            rtt.as_secs_f64() * 1e3
        );
    }
    Ok(received)
}

/// An echo request with identifier `id`, sequence `seq` and `size` payload bytes.
fn echo_request(id: u16, seq: u16, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; 8 + size];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The sequence number and TTL of an echo reply with identifier `id` in an IPv4 packet
/// as a raw socket returns it; `None` for anything else or anything malformed.
fn echo_reply(ip: &[u8], id: u16) -> Option<(u16, u8)> {
    let header = usize::from(*ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || header < 20 {
        return None;
    }
    let ttl = *ip.get(8)?;
    let icmp = ip.get(header..)?;
    if icmp.len() < 8 || icmp[0] != ECHO_REPLY || checksum(icmp) != 0 {
        return None;
    }
    (u16::from_be_bytes([icmp[4], icmp[5]]) == id)
        .then(|| (u16::from_be_bytes([icmp[6], icmp[7]]), ttl))
}

/// The index of the echo with sequence number `seq`, the latest of those sent up to
/// index `sent_before` (inclusive), among `count`.
fn index_for(seq: u16, sent_before: u64, count: u32) -> Option<u32> {
    let last = sent_before.min(u64::from(count.checked_sub(1)?));
    let back = (last as u16).wrapping_sub(seq);
    let index = last.checked_sub(u64::from(back))?;
    u32::try_from(index).ok()
}

/// The Internet checksum (RFC 1071): zero over a packet whose checksum field is right.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum::<u32>();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's own checksum verifies, and a reply built from it (type 0, behind an
    /// IP header) is read back with its sequence number and TTL.
    #[test]
    fn a_reply_to_our_request_is_read_back() {
        let request = echo_request(0x1234, 7, 56);
        assert_eq!(checksum(&request), 0);
        let mut reply = request.clone();
        reply[0] = ECHO_REPLY;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 61, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        ip.extend_from_slice(&reply);
        assert_eq!(echo_reply(&ip, 0x1234), Some((7, 61)));
        assert_eq!(echo_reply(&ip, 0x4321), None, "another process's echo");
        let mut corrupt = ip.clone();
        corrupt[30] ^= 1;
        assert_eq!(echo_reply(&corrupt, 0x1234), None, "a bad checksum");
        assert_eq!(echo_reply(&ip[..24], 0x1234), None, "truncated");
        assert_eq!(echo_reply(&request, 0x1234), None, "not an IP packet");
    }

    /// Sequence numbers wrap at 65 536: a reply maps to the latest echo sent with it.
    #[test]
    fn sequence_numbers_map_to_the_latest_echo_that_carried_them() {
        assert_eq!(index_for(5, 9, 100), Some(5));
        assert_eq!(index_for(5, 70_000, 100_000), Some(65_541));
        assert_eq!(index_for(9, 5, 100), None, "not sent yet");
        assert_eq!(index_for(3, 500, 10), Some(3), "all sent");
        assert_eq!(index_for(0, 0, 0), None, "nothing to send");
    }
}
