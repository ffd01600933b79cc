//! A second mesh socket for Critical datagrams, so a flood cannot fill their buffer.
//!
//! Under an unresponsive flood the receiving node decrypts slower than datagrams arrive,
//! its socket buffer fills, and the kernel drops whatever comes next (`UdpRcvbufErrors`)
//! — pings as readily as flood datagrams, before the daemon can put anything first. So
//! the mesh port is an `SO_REUSEPORT` group of two sockets: the main one (index 0, bound
//! first) and this one (index 1), and a classic BPF selector (`SO_ATTACH_REUSEPORT_CBPF`,
//! no privilege needed) sends every datagram shorter than [`CRITICAL_DATAGRAM_BELOW`]
//! bytes here. The shell reads this socket before the main one.
//!
//! Why the length: a data packet is its plaintext plus [`DATA_OVERHEAD`] bytes and is not
//! padded, so "IP packet under 100 bytes", the classifier's first Critical rule, is
//! exactly "datagram under 129 bytes" — cleartext the kernel can read without a key and
//! without a wire change. Handshakes (73 and 125 bytes), keepalives and the acks that pace
//! the bulk lane fall under it too. What it misses: Critical packets of 100 bytes or more
//! (a large ICMP echo, a port rule naming Critical); those share the main socket as before.
//! A forger gains nothing: everything read here is authenticated like any datagram, and
//! flooding this socket with small junk costs the sender as much as flooding the other.
//!
//! Invariant: this socket never coalesces (no UDP GRO on it), so each read is one whole
//! datagram, and its buffer holds the largest UDP datagram.
//!
//! `SO_REUSEPORT` lets another process of the same user join the group and take a share
//! of the port's datagrams; the daemon's run lock and its TUN device already keep a
//! second daemon of the same configuration from starting.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use tokio::net::UdpSocket;

use crate::wire::DATA_OVERHEAD;

/// Datagrams shorter than this go to the Critical socket: an IP packet under 100 bytes
/// (the lane classifier's small-packet rule) plus a data packet's overhead.
pub(crate) const CRITICAL_DATAGRAM_BELOW: u32 = 100 + DATA_OVERHEAD as u32;

/// The largest UDP payload: the buffer a read needs for any datagram.
const MAX_DATAGRAM: usize = 65_536;

/// Receive buffer asked of the kernel: Critical traffic is a trickle, 256 KiB holds
/// about a thousand small datagrams (each is charged its `truesize`, ~1 KiB).
const RECV_BUFFER: usize = 256 << 10;

/// Binds a non-blocking UDP socket on `addr` with `SO_REUSEPORT`, so the Critical socket
/// can join it later. Must run inside a tokio runtime.
pub(super) fn bind_main(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(bind_reuseport(addr)?)
}

/// The Critical socket with its read buffer.
pub(super) struct CriticalRx {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl CriticalRx {
    /// Joins `main`'s reuseport group on its address and installs the selector. Fails
    /// when `main` was not bound with [`bind_main`] or the kernel refuses the selector;
    /// the group then is `main` alone, as before.
    pub(super) fn join(main: &UdpSocket) -> io::Result<Self> {
        let socket = bind_reuseport(main.local_addr()?)?;
        let _ = sockopt::set_socket_recv_buffer_size(&socket, RECV_BUFFER);
        attach_selector(&socket)?;
        Ok(Self {
            socket: UdpSocket::from_std(socket)?,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    /// Waits until a datagram may be read (cancel safe; may wake spuriously).
    pub(super) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// One datagram without waiting (`WouldBlock` when none is queued).
    pub(super) fn recv(&mut self) -> io::Result<(SocketAddr, &mut [u8])> {
        let (len, from) = self.socket.try_recv_from(&mut self.buf)?;
        Ok((from, self.buf.get_mut(..len).unwrap_or_default()))
    }

    /// The socket's bound address.
    #[cfg(test)]
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd: OwnedFd = rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    Ok(std::net::UdpSocket::from(fd))
}

/// The selector, in classic BPF: `A = len` (the UDP payload's length: the kernel runs it
/// with the UDP header pulled); below [`CRITICAL_DATAGRAM_BELOW`] return 1 (this
/// socket), else 0 (the main socket). An index the group does not have (this socket
/// closed) makes the kernel pick by hash, i.e. the main socket.
fn selector() -> [libc::sock_filter; 4] {
    const LD_W_LEN: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_LEN) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        insn(LD_W_LEN, 0, 0, 0),
        insn(JGE_K, 1, 0, CRITICAL_DATAGRAM_BELOW),
        insn(RET_K, 0, 0, 1),
        insn(RET_K, 0, 0, 0),
    ]
}

/// `SO_ATTACH_REUSEPORT_CBPF` with [`selector`]: the one socket option rustix does not
/// wrap. The kernel copies the program during the call.
#[allow(unsafe_code)]
fn attach_selector(socket: &impl AsFd) -> io::Result<()> {
    let mut filter = selector();
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `program` points at `filter`, four valid instructions that outlive the call;
    // the length passed is the size of `sock_fprog`, which is what the option expects;
    // the descriptor is borrowed from a live socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const program).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real sockets on loopback: small datagrams reach the Critical socket, large ones the
    /// main socket, whatever their order.
    #[tokio::test(flavor = "current_thread")]
    async fn small_datagrams_reach_the_critical_socket() {
        let main = bind_main(([127, 0, 0, 1], 0).into()).unwrap();
        let mut critical = CriticalRx::join(&main).unwrap();
        assert_eq!(critical.local_addr().unwrap(), main.local_addr().unwrap());
        let to = main.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let small = CRITICAL_DATAGRAM_BELOW as usize - 1;
        let large = CRITICAL_DATAGRAM_BELOW as usize;
        for round in 0..20u8 {
            tx.send_to(&vec![round; large], to).unwrap();
            tx.send_to(&vec![round; small], to).unwrap();
        }
        let mut buf = vec![0u8; 2048];
        for round in 0..20u8 {
            let deadline = std::time::Duration::from_secs(5);
            let (len, _) = tokio::time::timeout(deadline, main.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((len, buf[0]), (large, round));
            tokio::time::timeout(deadline, critical.readable())
                .await
                .unwrap()
                .unwrap();
            // Readiness may wake spuriously; a few tries, each waiting with a deadline.
            let mut got = None;
            for _ in 0..100 {
                match critical.recv() {
                    Ok((from, bytes)) => {
                        got = Some((from, bytes.to_vec()));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tokio::time::timeout(deadline, critical.readable())
                            .await
                            .unwrap()
                            .unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let (from, bytes) = got.expect("a datagram on the Critical socket");
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!((bytes.len(), bytes[0]), (small, round));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_without_reuseport_cannot_be_joined() {
        let plain = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(CriticalRx::join(&plain).is_err());
    }
}
