//! STUN Binding on the mesh port (RFC 8489): the answer a server gives ([`answer`]) and
//! the client that learns this node's server-reflexive address ([`BindingClient`]).
//!
//! STUN messages share the node's UDP port with mesh packets ([`wire::demux`]): the first
//! two bits of a STUN message are zero, every mesh packet has the high bit set. A Binding
//! request sent from the mesh socket therefore leaves through the same NAT mapping as the
//! node's mesh traffic, and the XOR-MAPPED-ADDRESS in the answer is where a peer's packets
//! reach this node from outside — its *server-reflexive* address, for a NAT whose mapping
//! does not depend on the destination (a cone NAT).
//!
//! Invariant: sans-IO and deterministic. Parsing and encoding are the `stun` crate's
//! (webrtc-rs, the version webrtc-ice uses); time comes in as `now`, transaction IDs from
//! a seeded generator. [`answer`] and [`BindingClient::handle`] accept any bytes and never
//! panic (property-tested below); only a success response to the outstanding transaction,
//! from the server it was sent to, changes what the client believes.
//!
//! Client schedule: a request when a server is set, retransmitted with the same
//! transaction ID after `rto`, doubling each time, `attempts` sends in all (RFC 8489 §6.2.1
//! with a shorter last wait); no answer means the mapping is unknown, and the client
//! tries again after `retry`. After an answer it asks again every `refresh`, so a NAT
//! that rebinds (new public port or address) is noticed within `refresh`, and the change
//! is reported as an [`Observation`].
//!
//! [`wire::demux`]: crate::wire::demux

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::agent::TransactionId;
use stun::attributes::ATTR_FINGERPRINT;
use stun::fingerprint::FINGERPRINT;
use stun::message::{
    BINDING_REQUEST, BINDING_SUCCESS, CLASS_REQUEST, Getter as _, METHOD_BINDING, Message, Setter,
};
use stun::xoraddr::XorMappedAddress;

/// The success response to a Binding request from `from`: the request's transaction ID,
/// `from` as XOR-MAPPED-ADDRESS, a FINGERPRINT. `None` for anything that is not a
/// well-formed Binding request (responses, indications, other methods, garbage).
pub fn answer(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let request = decode(request, false)?;
    if request.typ.method != METHOD_BINDING || request.typ.class != CLASS_REQUEST {
        return None;
    }
    let from = canonical(from);
    let mut response = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(request.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
        Box::new(FINGERPRINT),
    ];
    response.build(&setters).ok()?;
    Some(response.raw)
}

/// Decodes a STUN message; with `fingerprint`, one without a FINGERPRINT is refused.
fn decode(bytes: &[u8], fingerprint: bool) -> Option<Message> {
    if !stun::message::is_message(bytes) {
        return None;
    }
    let mut message = Message::new();
    message.raw = bytes.to_vec();
    message.decode().ok()?;
    // FINGERPRINT is optional in a request (RFC 8489 §14.7), but when present it must
    // match. The client's requests carry one, so answers to them must too (servers echo
    // it), which makes any damaged answer fail the CRC rather than mislead.
    if fingerprint || message.contains(ATTR_FINGERPRINT) {
        FINGERPRINT.check(&message).ok()?;
    }
    Some(message)
}

/// An IPv4 address seen through a dual-stack socket is an IPv4 address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// When the client sends, retransmits and asks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingTimers {
    /// First retransmission timeout; doubles on every retransmission.
    pub rto: Duration,
    /// Requests sent per transaction before it counts as unanswered.
    pub attempts: u32,
    /// Pause after an unanswered transaction before a new one.
    pub retry: Duration,
    /// Pause after an answer before asking again (how soon a rebinding is noticed
    /// when nothing else says so; see [`BindingClient::reprobe`]).
    pub refresh: Duration,
    /// Least time between the starts of two transactions that
    /// [`reprobe`](BindingClient::reprobe) asks for.
    pub reprobe_gap: Duration,
}

impl Default for BindingTimers {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            attempts: 5,
            retry: Duration::from_secs(5),
            refresh: Duration::from_secs(15),
            reprobe_gap: Duration::from_secs(1),
        }
    }
}

/// What an answer taught the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The server-reflexive address now.
    pub reflexive: SocketAddr,
    /// What it was before (`None` on the first answer).
    pub previous: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No server.
    Off,
    /// Next transaction starts at `due`.
    Idle { due: Instant },
    /// Transaction `id` is out; send #`sent + 1` (or give up) at `due`.
    Waiting {
        id: [u8; 12],
        sent: u32,
        due: Instant,
    },
}

/// Learns this node's server-reflexive address from one STUN server, sans IO: the shell
/// sends what [`poll_transmit`](Self::poll_transmit) returns from the mesh socket, hands
/// STUN datagrams to [`handle`](Self::handle) and wakes at
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub struct BindingClient {
    timers: BindingTimers,
    server: Option<SocketAddr>,
    state: State,
    reflexive: Option<SocketAddr>,
    /// When the last transaction started.
    started: Option<Instant>,
    rng: u64,
}

impl BindingClient {
    /// A client with no server yet; transaction IDs come from `seed`.
    pub fn new(timers: BindingTimers, seed: u64) -> Self {
        Self {
            timers,
            server: None,
            state: State::Off,
            reflexive: None,
            started: None,
            rng: seed,
        }
    }

    /// Asks `server` (none: stop asking) from now on, with a new transaction at once —
    /// also when the server is the same (after a reconnection, the mapping may be new).
    pub fn probe(&mut self, now: Instant, server: Option<SocketAddr>) {
        if server != self.server {
            self.reflexive = None;
        }
        self.server = server;
        self.state = match server {
            Some(_) => State::Idle { due: now },
            None => State::Off,
        };
    }

    /// The mapping may have changed (a session went quiet): asks again now instead of at
    /// the next refresh — or, if a transaction started less than `reprobe_gap` ago, at
    /// the end of that gap. Nothing changes while a transaction is out (its answer is as
    /// fresh) or without a server.
    pub fn reprobe(&mut self, now: Instant) {
        if let State::Idle { due } = self.state {
            let earliest = self
                .started
                .map_or(now, |s| now.max(s + self.timers.reprobe_gap));
            self.state = State::Idle {
                due: due.min(earliest),
            };
        }
    }

    /// The server-reflexive address from the last answer, if any.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.reflexive
    }

    /// When [`poll_transmit`](Self::poll_transmit) has something to send next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Off => None,
            State::Idle { due } | State::Waiting { due, .. } => Some(due),
        }
    }

    /// A request to send now (to the server), if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let server = self.server?;
        let (id, sent) = match self.state {
            State::Off => return None,
            State::Idle { due } if now >= due => {
                self.started = Some(now);
                (self.next_id(), 0)
            }
            State::Waiting { id, sent, due } if now >= due => {
                if sent >= self.timers.attempts {
                    // Unanswered: the mapping is unknown until a later answer.
                    self.state = State::Idle {
                        due: now + self.timers.retry,
                    };
                    return None;
                }
                (id, sent)
            }
            State::Idle { .. } | State::Waiting { .. } => return None,
        };
        let backoff = self.timers.rto.saturating_mul(1 << sent.min(16));
        self.state = State::Waiting {
            id,
            sent: sent + 1,
            due: now + backoff,
        };
        Some((server, request(id)?))
    }

    /// A STUN datagram from `from`: an answer to the outstanding transaction from the
    /// server records the mapping (and says so when it changed); anything else is ignored.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Option<Observation> {
        let State::Waiting { id, .. } = self.state else {
            return None;
        };
        if self.server.map(canonical) != Some(canonical(from)) {
            return None;
        }
        let message = decode(bytes, true)?;
        if message.typ != BINDING_SUCCESS || message.transaction_id.0 != id {
            return None;
        }
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&message).ok()?;
        let reflexive = canonical(SocketAddr::new(mapped.ip, mapped.port));
        self.state = State::Idle {
            due: now + self.timers.refresh,
        };
        let previous = self.reflexive.replace(reflexive);
        (previous != Some(reflexive)).then_some(Observation {
            reflexive,
            previous,
        })
    }

    /// splitmix64, twelve bytes of it.
    fn next_id(&mut self) -> [u8; 12] {
        let mut id = [0u8; 12];
        for chunk in id.chunks_mut(8) {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        id
    }
}

/// A Binding request with transaction `id` and a FINGERPRINT.
fn request(id: [u8; 12]) -> Option<Vec<u8>> {
    let mut message = Message::new();
    let setters: [Box<dyn Setter>; 3] = [
        Box::new(TransactionId(id)),
        Box::new(BINDING_REQUEST),
        Box::new(FINGERPRINT),
    ];
    message.build(&setters).ok()?;
    Some(message.raw)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{Demux, demux};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[allow(clippy::disallowed_methods)] // any base instant will do
    fn base() -> Instant {
        Instant::now()
    }

    fn timers() -> BindingTimers {
        BindingTimers {
            rto: Duration::from_millis(100),
            attempts: 3,
            retry: Duration::from_secs(1),
            refresh: Duration::from_secs(10),
            reprobe_gap: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_reprobe_asks_at_once_but_not_more_often_than_the_gap_nor_over_a_transaction() {
        let t0 = base();
        let server = addr("198.18.0.1:7443");
        let mut client = BindingClient::new(timers(), 3);
        client.reprobe(t0);
        assert_eq!(client.poll_timeout(), None, "no server: nothing to ask");
        client.probe(t0, Some(server));
        let (_, first) = client.poll_transmit(t0).unwrap();
        // A transaction is out: its answer is as fresh as a new one would be.
        client.reprobe(t0);
        assert_eq!(client.poll_timeout(), Some(t0 + timers().rto));
        let at = t0 + Duration::from_millis(10);
        client.handle(
            at,
            server,
            &answer(&first, addr("198.18.0.2:30001")).unwrap(),
        );
        assert_eq!(client.poll_timeout(), Some(at + timers().refresh));
        // Quiet right after the answer: asked again once the gap since the last start
        // has passed, not at the refresh.
        client.reprobe(at);
        assert_eq!(client.poll_timeout(), Some(t0 + timers().reprobe_gap));
        assert_eq!(client.poll_transmit(at), None, "not before the gap");
        let later = t0 + timers().reprobe_gap;
        let (_, second) = client.poll_transmit(later).unwrap();
        let two = addr("198.18.0.2:30002");
        let seen = client.handle(later, server, &answer(&second, two).unwrap());
        assert_eq!(
            seen.map(|o| o.reflexive),
            Some(two),
            "the rebinding, noticed"
        );
        // Long after the last start: at once.
        let much_later = later + Duration::from_secs(5);
        client.reprobe(much_later);
        assert_eq!(client.poll_timeout(), Some(much_later));
        assert!(client.poll_transmit(much_later).is_some());
    }

    #[test]
    fn a_request_is_answered_with_the_senders_address_and_the_client_learns_it() {
        let t0 = base();
        let server = addr("198.18.0.1:7443");
        let mapped = addr("198.18.0.2:30007");
        let mut client = BindingClient::new(timers(), 1);
        assert_eq!(client.poll_transmit(t0), None, "no server, nothing to send");
        client.probe(t0, Some(server));
        let (to, request) = client.poll_transmit(t0).unwrap();
        assert_eq!(to, server);
        assert_eq!(demux(&request), Demux::Stun, "shares the mesh port");
        // The server sees the NAT's mapping as the source and answers with it.
        let response = answer(&request, mapped).unwrap();
        assert_eq!(demux(&response), Demux::Stun);
        assert_eq!(
            answer(&response, mapped),
            None,
            "a response is not answered"
        );
        // From anyone but the server, the answer is ignored.
        assert_eq!(client.handle(t0, addr("198.18.0.9:7443"), &response), None);
        let seen = client.handle(t0, server, &response).unwrap();
        assert_eq!(
            seen,
            Observation {
                reflexive: mapped,
                previous: None
            }
        );
        assert_eq!(client.reflexive(), Some(mapped));
        // A duplicate changes nothing.
        assert_eq!(client.handle(t0, server, &response), None);
        assert_eq!(client.poll_timeout(), Some(t0 + timers().refresh));
    }

    #[test]
    fn retransmits_with_backoff_gives_up_retries_and_notices_a_rebinding() {
        let t0 = base();
        let server = addr("[::ffff:198.18.0.1]:7443");
        let mut client = BindingClient::new(timers(), 7);
        client.probe(t0, Some(server));
        let (_, first) = client.poll_transmit(t0).unwrap();
        assert_eq!(client.poll_transmit(t0), None, "not due yet");
        // Same transaction, 100 ms then 200 ms later; after the third send, 400 ms of
        // silence and the transaction is given up.
        let mut at = t0;
        for wait in [100, 200] {
            at += Duration::from_millis(wait);
            assert_eq!(client.poll_timeout(), Some(at));
            assert_eq!(client.poll_transmit(at).unwrap().1, first);
        }
        at += Duration::from_millis(400);
        assert_eq!(client.poll_transmit(at), None);
        assert_eq!(client.poll_timeout(), Some(at + timers().retry));
        at += timers().retry;
        let (_, second) = client.poll_transmit(at).unwrap();
        assert_ne!(second[8..20], first[8..20], "a new transaction ID");
        // A late answer to the old transaction is ignored, the current one counts (the
        // server's IPv4 address, seen through a dual-stack socket, is the same server).
        let v4 = addr("198.18.0.1:7443");
        let stale = answer(&first, addr("198.18.0.2:1")).unwrap();
        assert_eq!(client.handle(at, v4, &stale), None);
        let one = addr("198.18.0.2:30001");
        let seen = client.handle(at, v4, &answer(&second, one).unwrap());
        assert_eq!(seen.map(|o| o.reflexive), Some(one));
        // The refresh finds the mapping changed (the NAT rebound).
        at += timers().refresh;
        let (_, third) = client.poll_transmit(at).unwrap();
        let two = addr("198.18.0.2:30002");
        let seen = client.handle(at, v4, &answer(&third, two).unwrap());
        assert_eq!(
            seen,
            Some(Observation {
                reflexive: two,
                previous: Some(one)
            })
        );
        // A new server forgets the old mapping; no server, nothing more to send.
        client.probe(at, Some(addr("198.18.0.5:1")));
        assert_eq!(client.reflexive(), None);
        client.probe(at, None);
        assert_eq!(client.poll_timeout(), None);
        assert_eq!(client.poll_transmit(at + timers().refresh), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_are_never_taken_for_an_answer(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let t0 = base();
            let server = addr("198.18.0.1:7443");
            let _ = answer(&bytes, server);
            let mut client = BindingClient::new(timers(), 3);
            client.probe(t0, Some(server));
            client.poll_transmit(t0).unwrap();
            prop_assert_eq!(client.handle(t0, server, &bytes), None);
        }

        #[test]
        fn every_mapped_address_round_trips(
            ip in any::<[u8; 16]>(),
            v4 in any::<bool>(),
            port in any::<u16>(),
            seed in any::<u64>(),
            flip in 0usize..1024,
        ) {
            let ip: std::net::IpAddr = if v4 {
                std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).into()
            } else {
                std::net::Ipv6Addr::from(ip).into()
            };
            let mapped = canonical(SocketAddr::new(ip, port));
            let t0 = base();
            let server = addr("198.18.0.1:7443");
            let mut client = BindingClient::new(timers(), seed);
            client.probe(t0, Some(server));
            let (_, request) = client.poll_transmit(t0).unwrap();
            let response = answer(&request, mapped).unwrap();
            // One flipped bit anywhere (header, attribute, FINGERPRINT) is refused.
            let mut bad = response.clone();
            let at = flip % bad.len();
            bad[at] ^= 1 << (flip / 128);
            prop_assert_eq!(client.clone().handle(t0, server, &bad), None);
            let seen = client.handle(t0, server, &response).map(|o| o.reflexive);
            prop_assert_eq!(seen, Some(mapped));
        }
    }
}
