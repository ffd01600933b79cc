//! STUN on the mesh port: the hub's answer to any datagram and the binding client's
//! handling of it must be total, and the client must never take arbitrary bytes for the
//! answer to its outstanding request.
#![no_main]
use std::net::SocketAddr;
use std::time::Instant;

use bauxite_conduit::stun::{BindingClient, BindingTimers, answer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let server: SocketAddr = ([198, 18, 0, 1], 7443).into();
    let _ = answer(data, server);
    #[allow(clippy::disallowed_methods)] // any base instant will do
    let now = Instant::now();
    let mut client = BindingClient::new(BindingTimers::default(), 1);
    client.probe(now, Some(server));
    let _ = client.poll_transmit(now);
    assert!(client.handle(now, server, data).is_none());
});
