//! Two nodes joined by two independent paths — two uplinks on each side, each pair on
//! its own network — for bonding: either path can be cut, and each direction of each
//! path has its own [`Link`] (the `bauxite_netem` model, Gilbert–Elliott loss included).
//!
//! Node `i` is at [`TwoPathNet::addr`]`(i, k)` on path `k`; a datagram to the other
//! node's address on path `k` leaves from the sender's own address on path `k` (as
//! policy routing by destination does on a host with two uplinks), so the receiver sees
//! which path it came over. Each node lists the other at its path-0 address
//! (`endpoint`) and, when the net is built with `second_known`, its path-1 address as a
//! further candidate.
//!
//! Invariant: like [`SimNet`](super::SimNet), a run is a pure function of its inputs and
//! seed: a virtual clock that jumps to the next event, no threads, no sleeps. Links have
//! no rate limit here, so every datagram a node offers is sent at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bauxite_netem::{Impairments, Link, Verdict};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::Delivered;
use super::clock::{self, Clock};
use crate::VirtualIp;
use crate::identity::Identity;
use crate::node::{BauxiteNode, NodeConfig, Received, Via};
use crate::peers::{PeerInfo, PeerRegistry};

/// What happened to datagrams on one path (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Datagrams offered to the path.
    pub sent: u64,
    /// Lost: cut, or the link's loss process.
    pub lost: u64,
}

/// A datagram on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// Two nodes, two paths, one clock.
pub struct TwoPathNet {
    /// Virtual time.
    pub now: Instant,
    /// The nodes.
    pub nodes: [BauxiteNode; 2],
    /// Virtual IP of each node.
    pub vips: [VirtualIp; 2],
    /// Packets delivered to each node's TUN.
    pub delivered: [Vec<Delivered>; 2],
    /// Impairments of each path (both directions alike).
    pub impairments: [Impairments; 2],
    /// Whether a path is cut (everything on it is lost, both ways).
    pub cut: [bool; 2],
    /// Ground truth per path.
    pub counts: [PathCounts; 2],
    /// Datagrams sent to an address that is on neither path (lost).
    pub misaddressed: u64,
    /// `links[path][sender]`: one direction of one path.
    links: [[Link; 2]; 2],
    flight: BinaryHeap<Reverse<Flight>>,
    rng: ChaCha20Rng,
    seq: u64,
    buf: Vec<u8>,
    clock: Clock,
}

impl TwoPathNet {
    /// Node `node`'s address on path `path`: 192.0.2.x on path 0, 198.51.100.x on path 1.
    pub fn addr(node: usize, path: usize) -> SocketAddr {
        let host = if node == 0 { 1 } else { 2 };
        let ip = if path == 0 {
            Ipv4Addr::new(192, 0, 2, host)
        } else {
            Ipv4Addr::new(198, 51, 100, host)
        };
        SocketAddr::from((ip, 51820))
    }

    /// Two nodes with `config`, each knowing the other's path-0 address and, if
    /// `second_known`, its path-1 address too; both paths have `impairments`.
    pub fn new(
        config: NodeConfig,
        impairments: Impairments,
        second_known: bool,
        seed: u64,
        start: Instant,
    ) -> Self {
        const UNIX_AT_START: u64 = 1_800_000_000_000_000_000;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut secret = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            b
        };
        let secrets: [([u8; 32], [u8; 32]); 2] = std::array::from_fn(|_| (secret(), secret()));
        let identity = |i: usize| Identity::from_secrets(secrets[i].0, secrets[i].1);
        let seeds: [[u8; 32]; 2] = std::array::from_fn(|_| secret());
        let vips: [VirtualIp; 2] =
            std::array::from_fn(|i| VirtualIp::from(Ipv4Addr::new(100, 64, 0, i as u8 + 1)));
        let nodes = std::array::from_fn(|i| {
            let j = 1 - i;
            let public = identity(j).public();
            let mut info = PeerInfo::new(
                format!("node-{j}"),
                vips[j],
                public.static_public,
                public.signing_public,
                Some(Self::addr(j, 0)),
            );
            if second_known {
                info.candidates.push(Self::addr(j, 1));
            }
            let mut registry = PeerRegistry::new();
            // One peer in an empty registry: no conflict.
            let _ = registry.insert(info);
            BauxiteNode::new(
                identity(i),
                registry,
                config.clone(),
                seeds[i],
                start,
                UNIX_AT_START + i as u64,
            )
        });
        Self {
            now: start,
            nodes,
            vips,
            delivered: [Vec::new(), Vec::new()],
            impairments: [impairments; 2],
            cut: [false; 2],
            counts: [PathCounts::default(); 2],
            misaddressed: 0,
            links: std::array::from_fn(|_| std::array::from_fn(|_| Link::new(start))),
            flight: BinaryHeap::new(),
            rng,
            seq: 0,
            buf: vec![0u8; config.datagram_capacity()],
            clock: Clock::default(),
        }
    }

    /// Runs until `deadline` (or until nothing is in flight and no timer is due before it).
    pub fn run_until(&mut self, deadline: Instant) {
        while self.step(deadline) {}
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// One step: send what the nodes offer, then jump to the next event before
    /// `deadline` and process it. False when there is none.
    fn step(&mut self, deadline: Instant) -> bool {
        for i in 0..2 {
            self.transmit(i);
        }
        let next_flight = self.flight.peek().map(|Reverse(f)| f.at);
        let events = [next_flight, clock::next_timer(&self.nodes)];
        if !self.clock.advance(&mut self.now, events, deadline) {
            return false;
        }
        while self
            .flight
            .peek()
            .is_some_and(|Reverse(f)| f.at <= self.now)
        {
            if let Some(Reverse(f)) = self.flight.pop() {
                self.deliver(f);
            }
        }
        clock::fire_timers(&mut self.nodes, self.now);
        true
    }

    fn transmit(&mut self, i: usize) {
        let j = 1 - i;
        while let Some(t) = self.nodes[i].poll_transmit(self.now, &mut self.buf) {
            let path = (0..2).find(|&k| Self::addr(j, k) == t.dst);
            let (Some(path), Via::Udp) = (path, t.via) else {
                self.misaddressed += 1;
                continue;
            };
            self.counts[path].sent += 1;
            if self.cut[path] {
                self.counts[path].lost += 1;
                continue;
            }
            let imp = self.impairments[path];
            match self.links[path][i].offer(self.now, t.len, &imp, &mut self.rng) {
                Verdict::Deliver(d) => {
                    self.seq += 1;
                    self.flight.push(Reverse(Flight {
                        at: d.at,
                        seq: self.seq,
                        to: j,
                        from: Self::addr(i, path),
                        bytes: self.buf[..t.len].to_vec(),
                    }));
                }
                Verdict::Drop(_) => self.counts[path].lost += 1,
            }
        }
    }

    fn deliver(&mut self, mut f: Flight) {
        match self.nodes[f.to].handle_datagram(self.now, f.from, &mut f.bytes) {
            Received::Deliver(range) => self.delivered[f.to].push(Delivered {
                at: self.now,
                packet: f.bytes[range].to_vec(),
            }),
            Received::Stun | Received::Consumed | Received::Dropped(_) => {}
        }
        let mut buf = [0u8; 2048];
        while let Some(len) = self.nodes[f.to].poll_released(&mut buf) {
            self.delivered[f.to].push(Delivered {
                at: self.now,
                packet: buf[..len].to_vec(),
            });
        }
    }
}
