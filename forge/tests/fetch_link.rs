//! The fetch protocol over a simulated link: loss (independent and in bursts),
//! reordering, duplication and payload corruption, one or several servers, resume.
//! Every run is deterministic (seeded RNG, virtual clock that jumps to the next event).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stage_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bauxite_forge::chunk::{ChunkIndex, ChunkNo};
use bauxite_forge::chunkset::ChunkSet;
use bauxite_forge::fetch::wire::{self, Datagram, RefuseReason};
use bauxite_forge::fetch::{
    ClientConfig, FetchClient, FetchEvent, FetchServer, ServerConfig, TransferId,
};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, VirtualImage};
use stage_common::link::{Link, LinkParams, LinkStats, origin};

const CLIENT: u32 = 0;

struct Sim {
    now: Instant,
    image: VirtualImage,
    client: FetchClient<u32>,
    servers: Vec<FetchServer<u32, VirtualImage>>,
    up: Vec<Link>,
    down: Vec<Link>,
    /// How many times each chunk was yielded.
    yielded: BTreeMap<u32, u32>,
    rejected: Vec<ChunkNo>,
    deprioritised: Vec<u32>,
    refused: Vec<(u32, RefuseReason)>,
    /// Every chunk named in a request that reached the wire.
    requested: Vec<ChunkNo>,
    finished: bool,
}

impl Sim {
    /// `servers[i]` serves `images[i]` (a lying server serves another image under the
    /// same transfer id) over `links[i]` (same impairments both ways, distinct seeds).
    fn new(
        image: VirtualImage,
        serving: &[Option<VirtualImage>],
        links: &[LinkParams],
        done: ChunkSet,
        cfg: ClientConfig,
        seed: u64,
    ) -> Self {
        let index = Arc::new(ChunkIndex::build(&image).unwrap());
        let transfer = TransferId::from(index.digest());
        let addrs: Vec<u32> = (1..=serving.len() as u32).collect();
        let client = FetchClient::new(index, addrs, done, cfg).unwrap();
        let servers = serving
            .iter()
            .map(|img| {
                let mut s = FetchServer::new(ServerConfig {
                    chunk_buffers: 4,
                    ..ServerConfig::default()
                });
                if let Some(img) = img {
                    s.add_image(transfer, *img);
                }
                s
            })
            .collect();
        let up = links
            .iter()
            .enumerate()
            .map(|(i, p)| Link::new(*p, seed * 100 + i as u64))
            .collect();
        let down = links
            .iter()
            .enumerate()
            .map(|(i, p)| Link::new(*p, seed * 100 + 50 + i as u64))
            .collect();
        Self {
            now: origin(),
            image,
            client,
            servers,
            up,
            down,
            yielded: BTreeMap::new(),
            rejected: Vec::new(),
            deprioritised: Vec::new(),
            refused: Vec::new(),
            requested: Vec::new(),
            finished: false,
        }
    }

    /// Runs until the client finishes; panics after `max_steps` event steps.
    fn run(&mut self, max_steps: usize) {
        let mut buf = vec![0u8; 1500];
        let mut src = vec![0u8; CHUNK_SIZE];
        for _ in 0..max_steps {
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                if let Ok(Datagram::Request(r)) = wire::parse(&buf[..t.len]) {
                    self.requested.extend(r.entries().map(|e| e.chunk));
                }
                self.up[(t.dst - 1) as usize].send(self.now, &buf[..t.len]);
            }
            for (i, s) in self.servers.iter_mut().enumerate() {
                while self.down[i].has_room(self.now) {
                    let Some(t) = s.poll_transmit(self.now, &mut buf) else {
                        break;
                    };
                    assert_eq!(t.dst, CLIENT);
                    self.down[i].send(self.now, &buf[..t.len]);
                }
                assert!(s.buffers() <= 4, "server buffers stay bounded");
            }
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    FetchEvent::Chunk(c) => {
                        let n = self.image.read_chunk(c.no, &mut src).unwrap();
                        assert_eq!(c.bytes, src[..n], "chunk {} differs from the image", c.no);
                        *self.yielded.entry(c.no.0).or_default() += 1;
                        self.client.recycle(c);
                    }
                    FetchEvent::ChunkRejected { chunk, .. } => self.rejected.push(chunk),
                    FetchEvent::ServerDeprioritised { server } => self.deprioritised.push(server),
                    FetchEvent::ServerRefused { server, reason } => {
                        self.refused.push((server, reason));
                    }
                    FetchEvent::Finished => {
                        self.finished = true;
                        return;
                    }
                }
            }
            let mut next: Vec<Instant> = self.client.poll_timeout().into_iter().collect();
            for (i, s) in self.servers.iter().enumerate() {
                next.extend(self.up[i].next_delivery());
                next.extend(self.down[i].next_delivery());
                if s.jobs() > 0 {
                    next.extend(self.down[i].room_at());
                }
            }
            let Some(t) = next.into_iter().min() else {
                panic!("deadlock: nothing in flight and no timer");
            };
            self.now = self.now.max(t);
            for i in 0..self.servers.len() {
                while let Some(d) = self.up[i].pop_due(self.now) {
                    self.servers[i].handle_datagram(self.now, CLIENT, &d);
                }
                while let Some(d) = self.down[i].pop_due(self.now) {
                    self.client.handle_datagram(self.now, &(i as u32 + 1), &d);
                }
            }
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
        }
        panic!(
            "not finished after {max_steps} steps: {:?} in flight, {:?}",
            self.client.in_flight(),
            self.client.stats()
        );
    }

    fn down_stats(&self) -> LinkStats {
        self.down
            .iter()
            .fold(LinkStats::default(), |a, l| LinkStats {
                data_payload_delivered: a.data_payload_delivered + l.stats.data_payload_delivered,
                data_payload_duplicated: a.data_payload_duplicated
                    + l.stats.data_payload_duplicated,
                lost: a.lost + l.stats.lost,
                duplicated: a.duplicated + l.stats.duplicated,
                corrupted: a.corrupted + l.stats.corrupted,
                ..a
            })
    }

    /// Every chunk yielded exactly once (content was checked as it came), and the
    /// client's byte accounting matches what the link delivered, to the byte.
    fn assert_complete_and_exact(&self) {
        assert!(self.finished);
        let count = self.image.chunk_count();
        assert_eq!(self.yielded.len() as u32 + self.skipped(), count);
        assert!(self.yielded.values().all(|n| *n == 1), "each chunk once");
        let st = self.client.stats();
        let link = self.down_stats();
        assert_eq!(
            st.bytes_received, link.data_payload_delivered,
            "{st:?} {link:?}"
        );
        assert_eq!(st.bytes_partial, 0);
        assert_eq!(
            st.bytes_received,
            st.bytes_verified + st.bytes_duplicate + st.bytes_rejected
        );
        assert_eq!(
            st.bytes_retransferred(),
            st.bytes_received - st.bytes_verified
        );
        let rejected_bytes: u64 = self
            .rejected
            .iter()
            .map(|c| self.image.chunk_len(*c).unwrap() as u64)
            .sum();
        assert_eq!(st.bytes_rejected, rejected_bytes);
        assert_eq!(st.chunks_rejected, self.rejected.len() as u64);
    }

    fn skipped(&self) -> u32 {
        self.image.chunk_count() - self.client.stats().chunks_verified as u32
    }
}

fn image(chunks: u64) -> VirtualImage {
    // A short last chunk exercises the odd fragment.
    VirtualImage::new(42, chunks * CHUNK_SIZE as u64 - 777).unwrap()
}

#[test]
fn clean_link_moves_every_byte_once() {
    let img = image(64);
    let mut sim = Sim::new(
        img,
        &[Some(img)],
        &[LinkParams::clean()],
        ChunkSet::new(64),
        ClientConfig::default(),
        1,
    );
    sim.run(200_000);
    sim.assert_complete_and_exact();
    let st = sim.client.stats();
    assert_eq!(st.bytes_retransferred(), 0);
    assert_eq!(st.timeouts, 0);
    assert_eq!(st.bytes_verified, img.len());
    assert_eq!(sim.servers[0].counters().payload_bytes_sent, img.len());
    // The window pipelines: 4 MiB at 12.5 MB/s is 0.34 s of serialisation.
    let elapsed = sim.now - origin();
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[test]
fn lossy_bursty_reordering_duplicating_corrupting_link_delivers_a_correct_image() {
    for seed in 1..=6 {
        let img = image(48);
        let bad = LinkParams {
            jitter: Duration::from_millis(3),
            loss: 0.05,
            burst_enter: 0.01,
            burst_exit: 0.2,
            duplicate: 0.03,
            corrupt: 0.01,
            ..LinkParams::clean()
        };
        let mut sim = Sim::new(
            img,
            &[Some(img)],
            &[bad],
            ChunkSet::new(48),
            ClientConfig::default(),
            seed,
        );
        sim.run(2_000_000);
        sim.assert_complete_and_exact();
        let (st, link) = (sim.client.stats(), sim.down_stats());
        assert!(
            link.lost > 0 && link.duplicated > 0 && link.corrupted > 0,
            "{link:?}"
        );
        assert!(st.timeouts > 0 && st.bytes_rerequested > 0);
        assert!(st.bytes_duplicate > 0);
        assert!(st.chunks_rejected > 0, "seed {seed}: {st:?}");
        // Everything the server sent either arrived or was lost, plus the copies.
        let sent = sim.servers[0].counters().payload_bytes_sent;
        assert!(st.bytes_received <= sent + link.data_payload_duplicated);
    }
}

#[test]
fn duplicated_bytes_are_counted_exactly() {
    let img = image(32);
    let dup = LinkParams {
        duplicate: 0.2,
        ..LinkParams::clean()
    };
    let mut sim = Sim::new(
        img,
        &[Some(img)],
        &[dup],
        ChunkSet::new(32),
        ClientConfig::default(),
        7,
    );
    sim.run(500_000);
    sim.assert_complete_and_exact();
    let st = sim.client.stats();
    assert_eq!(st.timeouts, 0);
    assert!(sim.down_stats().data_payload_duplicated > 0);
    assert_eq!(st.bytes_duplicate, sim.down_stats().data_payload_duplicated);
    assert_eq!(st.bytes_retransferred(), st.bytes_duplicate);
    assert_eq!(sim.servers[0].counters().payload_bytes_sent, img.len());
}

#[test]
fn corrupted_chunks_are_refetched_whole_and_never_yielded() {
    let img = image(32);
    let corrupt = LinkParams {
        corrupt: 0.02,
        ..LinkParams::clean()
    };
    let mut sim = Sim::new(
        img,
        &[Some(img)],
        &[corrupt],
        ChunkSet::new(32),
        ClientConfig::default(),
        3,
    );
    sim.run(500_000);
    sim.assert_complete_and_exact();
    let st = sim.client.stats();
    assert!(st.chunks_rejected > 0);
    // No loss and no duplication: the only extra bytes are the rejected copies, and the
    // server sent exactly one more copy of each rejected chunk.
    assert_eq!(st.bytes_duplicate, 0);
    assert_eq!(st.bytes_retransferred(), st.bytes_rejected);
    assert_eq!(
        sim.servers[0].counters().payload_bytes_sent,
        img.len() + st.bytes_rejected
    );
}

#[test]
fn resume_never_requests_a_done_chunk() {
    let img = image(40);
    let mut done = ChunkSet::new(40);
    for i in (0..40).filter(|i| i % 3 != 0) {
        done.insert(ChunkNo(i));
    }
    let mut sim = Sim::new(
        img,
        &[Some(img)],
        &[LinkParams {
            loss: 0.05,
            ..LinkParams::clean()
        }],
        done.clone(),
        ClientConfig::default(),
        5,
    );
    sim.run(500_000);
    sim.assert_complete_and_exact();
    assert!(!sim.requested.is_empty());
    assert!(sim.requested.iter().all(|c| !done.contains(*c)));
    assert_eq!(sim.yielded.len(), 14);
    assert!(sim.client.done().is_full());
}

#[test]
fn a_dead_server_is_deprioritised_and_the_live_one_finishes() {
    let img = image(32);
    let mut sim = Sim::new(
        img,
        &[Some(img), Some(img)],
        &[LinkParams::dead(), LinkParams::clean()],
        ChunkSet::new(32),
        ClientConfig::default(),
        9,
    );
    sim.run(500_000);
    sim.assert_complete_and_exact();
    assert_eq!(sim.deprioritised, [1]);
    let s: Vec<_> = sim.client.servers().cloned().collect();
    assert_eq!(s[0].chunks_verified, 0);
    assert_eq!(s[1].chunks_verified, 32);
    assert!(s[0].timeouts >= 3);
}

#[test]
fn a_lying_server_is_caught_by_verification_and_deprioritised() {
    let img = image(32);
    let liar = VirtualImage::new(999, img.len()).unwrap();
    let mut sim = Sim::new(
        img,
        &[Some(liar), Some(img)],
        &[LinkParams::clean(), LinkParams::clean()],
        ChunkSet::new(32),
        ClientConfig::default(),
        11,
    );
    sim.run(500_000);
    sim.assert_complete_and_exact();
    assert!(sim.deprioritised.contains(&1));
    let s: Vec<_> = sim.client.servers().cloned().collect();
    assert_eq!(s[0].chunks_verified, 0, "nothing from the liar is accepted");
    assert!(s[0].chunks_rejected >= 3);
    assert_eq!(s[0].chunks_rejected, sim.rejected.len() as u64);
}

#[test]
fn a_server_without_the_image_refuses_and_another_serves() {
    let img = image(16);
    let mut sim = Sim::new(
        img,
        &[None, Some(img)],
        &[LinkParams::clean(), LinkParams::clean()],
        ChunkSet::new(16),
        ClientConfig::default(),
        13,
    );
    sim.run(500_000);
    sim.assert_complete_and_exact();
    assert_eq!(sim.refused, [(1, RefuseReason::UnknownTransfer)]);
    assert_eq!(sim.client.servers().nth(1).unwrap().chunks_verified, 16);
}

#[test]
fn an_already_complete_resume_finishes_without_a_request() {
    let img = image(4);
    let mut sim = Sim::new(
        img,
        &[Some(img)],
        &[LinkParams::clean()],
        ChunkSet::full(4),
        ClientConfig::default(),
        1,
    );
    sim.run(10);
    assert!(sim.requested.is_empty());
    assert!(sim.yielded.is_empty());
}
