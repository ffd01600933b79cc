//! OTA throughput on one core: virtual-image chunk generation, chunk verification, the
//! fetch protocol's client and server exchanging a transfer in memory, staging to real
//! files (pwrite + fdatasync + atomic checkpoint), and the final re-verification from disk.
//!
//! `cargo bench -p bauxite-benches --bench forge -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bauxite_forge::checkpoint::UpdateBinding;
use bauxite_forge::chunk::{ChunkIndex, ChunkNo};
use bauxite_forge::chunkset::ChunkSet;
use bauxite_forge::crash::NoCrash;
use bauxite_forge::fetch::{
    ClientConfig, FetchClient, FetchEvent, FetchServer, ServerConfig, TransferId,
};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, VirtualImage};
use bauxite_forge::layout::{Layout, Version};
use bauxite_forge::staging::Staging;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Chunks per timed batch: 16 MiB.
const CHUNKS: u32 = 256;

fn image() -> (VirtualImage, ChunkIndex) {
    let img = VirtualImage::new(7, u64::from(CHUNKS) * CHUNK_SIZE as u64).unwrap();
    let idx = ChunkIndex::build(&img).unwrap();
    (img, idx)
}

fn chunks(c: &mut Criterion) {
    let (img, idx) = image();
    let mut g = c.benchmark_group("forge_chunks");
    g.throughput(Throughput::Bytes(img.len()));
    let mut buf = vec![0u8; CHUNK_SIZE];
    g.bench_function("generate_16MiB", |b| {
        b.iter(|| {
            for i in 0..CHUNKS {
                img.read_chunk(ChunkNo(i), &mut buf).unwrap();
                black_box(&buf);
            }
        });
    });
    let stored: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|i| {
            let n = img.read_chunk(ChunkNo(i), &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    g.bench_function("verify_16MiB", |b| {
        b.iter(|| {
            for (i, c) in stored.iter().enumerate() {
                assert!(idx.verify(ChunkNo(i as u32), black_box(c)));
            }
        });
    });
    g.bench_function("generate_and_verify_16MiB", |b| {
        b.iter(|| {
            for i in 0..CHUNKS {
                let n = img.read_chunk(ChunkNo(i), &mut buf).unwrap();
                assert!(idx.verify(ChunkNo(i), &buf[..n]));
            }
        });
    });
    g.finish();
}

/// One whole transfer through `FetchClient` and `FetchServer`, datagrams handed over in
/// memory: the protocol's own cost per byte (fragmenting, reassembly, verification).
fn fetch(c: &mut Criterion) {
    let (img, idx) = image();
    let idx = Arc::new(idx);
    let transfer = TransferId::from(idx.digest());
    let mut g = c.benchmark_group("forge_fetch");
    g.throughput(Throughput::Bytes(img.len()));
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1500];
    g.bench_function("transfer_16MiB_in_memory", |b| {
        b.iter(|| {
            let mut server = FetchServer::new(ServerConfig::default());
            server.add_image(transfer, img);
            let mut client = FetchClient::new(
                idx.clone(),
                vec![1u8],
                ChunkSet::new(CHUNKS),
                ClientConfig::default(),
            )
            .unwrap();
            let mut got = 0;
            while got < CHUNKS {
                while let Some(t) = client.poll_transmit(t0, &mut buf) {
                    server.handle_datagram(t0, 0u8, &buf[..t.len]);
                }
                while let Some(t) = server.poll_transmit(t0, &mut buf) {
                    client.handle_datagram(t0, &1, &buf[..t.len]);
                }
                while let Some(ev) = client.poll_event() {
                    if let FetchEvent::Chunk(c) = ev {
                        got += 1;
                        client.recycle(c);
                    }
                }
            }
        });
    });
    g.finish();
}

/// Staging to a real file under a temporary state root: each iteration writes 16 MiB of
/// verified chunks and makes them durable (fdatasync + atomic checkpoint), then reads the
/// whole image back and verifies it as activation does.
fn staging(c: &mut Criterion) {
    let (img, idx) = image();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::open(dir.path()).unwrap();
    let binding = UpdateBinding {
        target: "bench.img".into(),
        version: Version::parse("1.0.0").unwrap(),
        image_len: img.len(),
        chunk_count: CHUNKS,
        index_digest: idx.digest(),
    };
    let (mut stage, _) = Staging::open(&layout, binding, Box::new(NoCrash)).unwrap();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let stored: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|i| {
            let n = img.read_chunk(ChunkNo(i), &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    let mut g = c.benchmark_group("forge_staging");
    g.throughput(Throughput::Bytes(img.len()));
    g.bench_function("write_fdatasync_checkpoint_16MiB", |b| {
        b.iter(|| {
            for (i, c) in stored.iter().enumerate() {
                stage.write_chunk(ChunkNo(i as u32), c).unwrap();
            }
            stage.flush().unwrap();
        });
    });
    g.bench_function("reverify_from_disk_16MiB", |b| {
        b.iter(|| {
            assert_eq!(stage.verify_range(&idx, 0, CHUNKS, &mut buf).unwrap(), None);
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs().sample_size(20);
    targets = chunks, fetch, staging
}
criterion_main!(benches);
