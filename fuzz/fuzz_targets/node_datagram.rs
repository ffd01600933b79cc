//! Any datagram at the node's UDP port or through its TURN allocation, before or after a
//! session exists, must be refused or handled without panicking.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::sim::{LinkConfig, SimNet};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)] // the virtual clock's base
    let start = Instant::now();
    let mut net = SimNet::new(NodeConfig::default(), LinkConfig::default(), 1, start);
    let from: SocketAddr = (Ipv4Addr::new(192, 0, 2, 9), 4242).into();
    let mut bytes = data.to_vec();
    let _ = net.nodes[1].handle_datagram(net.now, from, &mut bytes);
    // Also after a session exists, with the fuzz input's header bytes kept.
    let mut ping = Vec::new();
    bauxite_conduit::ip::build::ipv4_icmp_echo(
        net.vips[0].addr(),
        net.vips[1].addr(),
        1,
        1,
        &[0; 8],
        &mut ping,
    );
    net.send_from(0, &ping);
    net.run_for(Duration::from_millis(100));
    let mut bytes = data.to_vec();
    let _ = net.nodes[1].handle_datagram(net.now, from, &mut bytes);
    let mut bytes = data.to_vec();
    let _ = net.nodes[1].handle_turn_datagram(net.now, from, &mut bytes);
});
