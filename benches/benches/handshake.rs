//! One complete Noise `IK` handshake for the default suite: `initiate`, `receive_init`,
//! `respond`, `receive_resp` — both sides' work, mac1 checks and key derivation included.
//!
//! `cargo bench -p bauxite-benches --bench handshake -- --noplot`

// Benchmarks are not protocol code: panicking on a broken fixture is the right failure,
// and criterion reads the wall clock on our behalf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;

use bauxite_benches::identity;
use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::session::noise;
use bauxite_conduit::wire::{INIT_LEN, RESP_LEN};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn full_handshake(c: &mut Criterion) {
    let suite = CipherSuite::default();
    let (initiator, responder) = (identity(1), identity(2));
    let responder_static = responder.public().static_public;
    let mut group = c.benchmark_group("noise_ik_handshake");
    group.throughput(Throughput::Elements(1));
    let mut timestamp = 0u64;
    group.bench_function(suite.noise_name(), |b| {
        b.iter(|| {
            timestamp += 1;
            let mut init = [0u8; INIT_LEN];
            let pending = noise::initiate(
                &initiator,
                suite,
                &responder_static,
                [0x31; 32],
                1,
                timestamp,
                &mut init,
            )
            .unwrap();
            let received = noise::receive_init(&responder, suite, &init).unwrap();
            let mut resp = [0u8; RESP_LEN];
            let responder_keys = noise::respond(received, [0x32; 32], 2, &mut resp).unwrap();
            let (initiator_keys, remote_index) = pending.receive_resp(&initiator, &resp).unwrap();
            assert_eq!(initiator_keys.send, responder_keys.recv);
            black_box((initiator_keys, responder_keys, remote_index))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = bauxite_benches::short_runs();
    targets = full_handshake
}
criterion_main!(benches);
