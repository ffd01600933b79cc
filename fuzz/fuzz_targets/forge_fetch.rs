//! Fetch datagrams come from any mesh peer: parsing must be total, and neither side may
//! panic, grow without bound, or (the client) yield a chunk that fails verification.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bauxite_forge::chunk::ChunkIndex;
use bauxite_forge::chunkset::ChunkSet;
use bauxite_forge::fetch::{
    ClientConfig, FetchClient, FetchEvent, FetchServer, ServerConfig, TransferId, wire,
};
use bauxite_forge::image::{CHUNK_SIZE, VirtualImage};

fn fixture() -> &'static (VirtualImage, Arc<ChunkIndex>, Instant) {
    static F: OnceLock<(VirtualImage, Arc<ChunkIndex>, Instant)> = OnceLock::new();
    F.get_or_init(|| {
        let img = VirtualImage::new(1, 3 * CHUNK_SIZE as u64 - 5).unwrap();
        let idx = Arc::new(ChunkIndex::build(&img).unwrap());
        #[allow(clippy::disallowed_methods)] // a fixed origin
        let t = Instant::now();
        (img, idx, t)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wire::parse(data);
    let (img, idx, t0) = fixture();
    let mut server = FetchServer::new(ServerConfig {
        chunk_buffers: 2,
        max_jobs: 8,
        max_jobs_per_peer: 4,
        ..ServerConfig::default()
    });
    server.add_image(TransferId::from(idx.digest()), *img);
    let mut client =
        FetchClient::new(idx.clone(), vec![1u8], ChunkSet::new(3), ClientConfig::default())
            .unwrap();
    let mut buf = vec![0u8; 1500];
    // Split the input into datagrams at 0xFF bytes so one input drives a session.
    for (i, d) in data.split(|b| *b == 0xFF).take(64).enumerate() {
        let now = *t0 + Duration::from_millis(i as u64);
        server.handle_datagram(now, 0u8, d);
        client.handle_datagram(now, &1, d);
        client.handle_timeout(now);
        while client.poll_transmit(now, &mut buf).is_some() {}
        for _ in 0..200 {
            if server.poll_transmit(now, &mut buf).is_none() {
                break;
            }
        }
        assert!(server.jobs() <= 8 && server.buffers() <= 2);
        while let Some(ev) = client.poll_event() {
            if let FetchEvent::Chunk(c) = ev {
                assert!(idx.verify(c.no, &c.bytes));
            }
        }
    }
});
