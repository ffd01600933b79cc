//! Seal + open of one 1350-byte packet through `SecureChannel` (header, AEAD, replay
//! window) for both cipher suites, beside the bare AEAD of the same crates on the same
//! bytes: the gap between the two is what Bauxite's framing costs.
//!
//! `cargo bench -p bauxite-benches --bench crypto -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use bauxite_benches::{PACKET_LEN, bulk_udp, channel_pair};
use bauxite_conduit::cipher::{CipherSuite, TAG_LEN, nonce};
use bauxite_conduit::wire::{self, DATA_HEADER_LEN, DATA_OVERHEAD, Message};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SUITES: [(CipherSuite, &str); 2] = [
    (CipherSuite::ChaCha20Poly1305, "chacha20poly1305"),
    (CipherSuite::Aes256Gcm, "aes256gcm"),
];

fn secure_channel(c: &mut Criterion) {
    let mut group = c.benchmark_group("secure_channel_seal_open");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let packet = bulk_udp(PACKET_LEN);
    for (suite, name) in SUITES {
        let (mut tx, mut rx) = channel_pair(suite, Instant::now());
        let mut buf = vec![0u8; PACKET_LEN + DATA_OVERHEAD];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + PACKET_LEN].copy_from_slice(&packet);
        group.bench_function(name, |b| {
            b.iter(|| {
                // Opening decrypts in place, so the plaintext is back for the next turn.
                let len = tx.seal(&mut buf, PACKET_LEN).unwrap();
                let datagram = &mut buf[..len];
                let Ok(Message::Data(header)) = wire::parse(datagram) else {
                    panic!("sealed packet does not parse as data");
                };
                black_box(rx.open(header, datagram).unwrap())
            });
        });
        assert_eq!(
            &buf[DATA_HEADER_LEN..DATA_HEADER_LEN + PACKET_LEN],
            &packet[..]
        );
    }
    group.finish();
}

/// The AEAD alone: encrypt then decrypt `PACKET_LEN` bytes in place, no AAD, no header.
fn raw_aead(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_aead_encrypt_decrypt");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let key = [0x11u8; 32];
    let mut buf = bulk_udp(PACKET_LEN);
    let original = buf.clone();

    let chacha = ChaCha20Poly1305::new(&key.into());
    let mut counter = 0u64;
    group.bench_function("chacha20poly1305", |b| {
        b.iter(|| {
            let n = nonce(CipherSuite::ChaCha20Poly1305, counter);
            counter += 1;
            let tag: [u8; TAG_LEN] = chacha
                .encrypt_inout_detached(&n.into(), &[], buf.as_mut_slice().into())
                .unwrap()
                .into();
            chacha
                .decrypt_inout_detached(&n.into(), &[], buf.as_mut_slice().into(), &tag.into())
                .unwrap();
            black_box(&buf);
        });
    });

    let aes = Aes256Gcm::new(&key.into());
    let mut counter = 0u64;
    group.bench_function("aes256gcm", |b| {
        b.iter(|| {
            let n = nonce(CipherSuite::Aes256Gcm, counter);
            counter += 1;
            let tag: [u8; TAG_LEN] = aes
                .encrypt_inout_detached(&n.into(), &[], buf.as_mut_slice().into())
                .unwrap()
                .into();
            aes.decrypt_inout_detached(&n.into(), &[], buf.as_mut_slice().into(), &tag.into())
                .unwrap();
            black_box(&buf);
        });
    });
    assert_eq!(buf, original);
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the figures in docs/benchmarks.md come from a noisy 2-core machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = secure_channel, raw_aead
}
criterion_main!(benches);
