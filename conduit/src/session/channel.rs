//! `SecureChannel`: the transport state of one established session.
//!
//! Invariant: the send counter only grows and is never used twice, so no nonce repeats
//! under a key; a received packet is accepted only if its tag verifies *and* its counter
//! passes the anti-replay window, and the window advances only after both. Sealing and
//! opening work in place in the caller's buffer; nothing on this path allocates.

use std::ops::Range;
use std::time::Instant;

use crate::PeerMisbehaved;
use crate::cipher::{CipherSuite, PacketCipher};
use crate::replay::ReplayWindow;
use crate::session::noise::TransportKeys;
use crate::wire::{DATA_HEADER_LEN, DATA_OVERHEAD, DataHeader};

/// After this many packets a key may not be used again (WireGuard's limit).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// One direction pair of keys with its counters.
pub struct SecureChannel {
    /// Our index: peers address data for this session to it.
    pub local_index: u32,
    /// The peer's index, written into every packet we send.
    pub remote_index: u32,
    /// Whether we sent the initiation that created this session.
    pub initiator: bool,
    /// When the handshake completed.
    pub created: Instant,
    send: PacketCipher,
    recv: PacketCipher,
    send_counter: u64,
    replay: ReplayWindow,
}

impl std::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

impl SecureChannel {
    /// Wraps the output of a completed handshake.
    pub fn new(
        suite: CipherSuite,
        keys: TransportKeys,
        local_index: u32,
        remote_index: u32,
        initiator: bool,
        now: Instant,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            initiator,
            created: now,
            send: PacketCipher::new(suite, keys.send),
            recv: PacketCipher::new(suite, keys.recv),
            send_counter: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Packets sent so far (the next counter).
    pub fn sent(&self) -> u64 {
        self.send_counter
    }

    /// One past the highest counter received (0 before the first packet).
    pub fn received(&self) -> u64 {
        self.replay.highest().map_or(0, |h| h.saturating_add(1))
    }

    /// Encrypts the `payload_len` bytes at `buf[DATA_HEADER_LEN..]` and writes the header
    /// and tag around them; returns the datagram length.
    ///
    /// `buf` must hold `payload_len + DATA_OVERHEAD` bytes.
    pub fn seal(&mut self, buf: &mut [u8], payload_len: usize) -> Result<usize, PeerMisbehaved> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(PeerMisbehaved::SessionExhausted);
        }
        let total = payload_len + DATA_OVERHEAD;
        if buf.len() < total {
            // A caller bug (buffer sizing), reported as a refusal rather than a panic.
            return Err(PeerMisbehaved::SessionExhausted);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        let mut header = [0u8; DATA_HEADER_LEN];
        DataHeader {
            receiver_index: self.remote_index,
            counter,
        }
        .emit(&mut header);
        buf[..DATA_HEADER_LEN].copy_from_slice(&header);
        let body = &mut buf[DATA_HEADER_LEN..total];
        let _ = self.send.seal_append(counter, &header, body, payload_len);
        Ok(total)
    }

    /// Authenticates and decrypts a data packet in place; returns where the plaintext is.
    pub fn open(
        &mut self,
        header: DataHeader,
        datagram: &mut [u8],
    ) -> Result<Range<usize>, PeerMisbehaved> {
        if header.counter >= REJECT_AFTER_MESSAGES {
            return Err(PeerMisbehaved::Replay(header.counter));
        }
        if !self.replay.check(header.counter) {
            // A counter still in the window was received: a bonded or repeated copy.
            return Err(if self.replay.seen(header.counter) {
                PeerMisbehaved::Duplicate(header.counter)
            } else {
                PeerMisbehaved::Replay(header.counter)
            });
        }
        let (head, body) = datagram.split_at_mut(DATA_HEADER_LEN);
        let len = self.recv.open_split(header.counter, head, body)?;
        if !self.replay.commit(header.counter) {
            return Err(PeerMisbehaved::Replay(header.counter));
        }
        Ok(DATA_HEADER_LEN..DATA_HEADER_LEN + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, parse};

    #[allow(clippy::disallowed_methods)] // any base instant will do
    fn start() -> Instant {
        Instant::now()
    }

    fn pair(now: Instant) -> (SecureChannel, SecureChannel) {
        let suite = CipherSuite::ChaCha20Poly1305;
        let a = SecureChannel::new(
            suite,
            TransportKeys {
                send: [1; 32],
                recv: [2; 32],
            },
            10,
            20,
            true,
            now,
        );
        let b = SecureChannel::new(
            suite,
            TransportKeys {
                send: [2; 32],
                recv: [1; 32],
            },
            20,
            10,
            false,
            now,
        );
        (a, b)
    }

    fn send(a: &mut SecureChannel, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; payload.len() + DATA_OVERHEAD];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let n = a.seal(&mut buf, payload.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn recv(b: &mut SecureChannel, mut pkt: Vec<u8>) -> Result<Vec<u8>, PeerMisbehaved> {
        let Ok(Message::Data(h)) = parse(&pkt) else {
            panic!("not data")
        };
        assert_eq!(h.receiver_index, b.local_index);
        let r = b.open(h, &mut pkt)?;
        Ok(pkt[r].to_vec())
    }

    #[test]
    fn counters_grow_and_replays_fail() {
        let now = start();
        let (mut a, mut b) = pair(now);
        let p1 = send(&mut a, b"one");
        let p2 = send(&mut a, b"two");
        assert_eq!(a.sent(), 2);
        assert_eq!(recv(&mut b, p2.clone()).unwrap(), b"two");
        assert_eq!(
            recv(&mut b, p1.clone()).unwrap(),
            b"one",
            "reordered is fine"
        );
        assert_eq!(recv(&mut b, p1), Err(PeerMisbehaved::Duplicate(0)));
        assert_eq!(recv(&mut b, p2), Err(PeerMisbehaved::Duplicate(1)));
    }

    #[test]
    fn tampered_header_or_body_fails_without_burning_the_counter() {
        let now = start();
        let (mut a, mut b) = pair(now);
        let p = send(&mut a, b"payload!");
        for i in 5..p.len() {
            let mut t = p.clone();
            t[i] ^= 0x80;
            assert!(recv(&mut b, t).is_err(), "byte {i}");
        }
        assert_eq!(recv(&mut b, p).unwrap(), b"payload!");
    }

    #[test]
    fn empty_payload_is_a_keepalive() {
        let now = start();
        let (mut a, mut b) = pair(now);
        let p = send(&mut a, b"");
        assert_eq!(p.len(), DATA_OVERHEAD);
        assert_eq!(recv(&mut b, p).unwrap(), b"");
    }
}
