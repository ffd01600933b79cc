//! Seal + open of one 1350-byte packet through `SecureChannel` (header, AEAD, replay
//! window; default ring backend) for both cipher suites, beside the bare AEAD of both
//! backends (ring, RustCrypto) on the same bytes: the gap between framed and raw ring is
//! what Bauxite's framing costs, the gap between the backends is what ring buys.
//!
//! `cargo bench -p bauxite-benches --bench crypto -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use bauxite_benches::{PACKET_LEN, bulk_udp, channel_pair};
use bauxite_conduit::cipher::{AeadBackend, CipherSuite, PacketCipher};
use bauxite_conduit::wire::{self, DATA_HEADER_LEN, DATA_OVERHEAD, Message};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SUITES: [(CipherSuite, &str); 2] = [
    (CipherSuite::ChaCha20Poly1305, "chacha20poly1305"),
    (CipherSuite::Aes256Gcm, "aes256gcm"),
];

const BACKENDS: [(AeadBackend, &str); 2] = [
    (AeadBackend::Ring, "ring"),
    (AeadBackend::RustCrypto, "rustcrypto"),
];

fn secure_channel(c: &mut Criterion) {
    let mut group = c.benchmark_group("secure_channel_seal_open");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let packet = bulk_udp(PACKET_LEN);
    for (suite, name) in SUITES {
        let (mut tx, mut rx) = channel_pair(suite, Instant::now());
        let mut buf = vec![0u8; PACKET_LEN + DATA_OVERHEAD];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + PACKET_LEN].copy_from_slice(&packet);
        // `SecureChannel` always uses the default backend.
        group.bench_function(format!("ring/{name}"), |b| {
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

/// The AEAD alone: `PacketCipher::seal_in_place` then `open_in_place` of `PACKET_LEN`
/// bytes in one buffer, no AAD, no header, for every backend and suite.
fn raw_aead(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_aead_encrypt_decrypt");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let original = bulk_udp(PACKET_LEN);
    let mut buf = original.clone();
    for (backend, backend_name) in BACKENDS {
        for (suite, suite_name) in SUITES {
            let cipher = PacketCipher::with_backend(suite, backend, [0x11u8; 32]);
            assert_eq!(cipher.backend(), backend);
            let mut counter = 0u64;
            group.bench_function(format!("{backend_name}/{suite_name}"), |b| {
                b.iter(|| {
                    let tag = cipher.seal_in_place(counter, &[], &mut buf);
                    cipher.open_in_place(counter, &[], &mut buf, &tag).unwrap();
                    counter += 1;
                    black_box(&buf);
                });
            });
            assert_eq!(buf, original);
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = secure_channel, raw_aead
}
criterion_main!(benches);
