//! The ICE harness the simulator tests share (`ice_sim.rs`): a signaling relay that plays
//! the hub (each signal arrives [`SIGNAL_DELAY`] after it was sent) and a model that plays
//! the agents: it trickles one host candidate per agent and, when the test says so,
//! reports what real checks would find — a pair between the peers' addresses when the NAT
//! oracle says a direct path exists, failure otherwise.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bauxite_conduit::Error;
use bauxite_conduit::node::{IceAction, IceKind, IceReport, IceSignal, NodeConfig, SignedSignal};
use bauxite_conduit::sim::{LinkConfig, Mapping, NatBehaviour, NodeSpec, SimNet};

/// One-way delay of a signal through the hub.
pub(crate) const SIGNAL_DELAY: Duration = Duration::from_millis(25);

/// How long the modelled agents' checks take once both run.
pub(crate) const CHECKS: Duration = Duration::from_millis(40);

/// The hub's signaling relay and the agents' model.
#[derive(Default)]
pub(crate) struct Ice {
    /// (due, to, from-index, payload)
    pub(crate) in_flight: VecDeque<(Instant, usize, Vec<u8>)>,
    /// Every signal sent, by sender index, decoded.
    pub(crate) sent: Vec<(usize, IceSignal)>,
    /// Every signal sent: when, by which node, in which session.
    pub(crate) log: Vec<(Instant, usize, u64)>,
    pub(crate) controlling: [Option<bool>; 2],
    pub(crate) started: [Option<Instant>; 2],
    /// Agents created, by node.
    pub(crate) created: [usize; 2],
    pub(crate) remote_candidates: [usize; 2],
    pub(crate) closed: [usize; 2],
    pub(crate) refused: Vec<Error>,
}

impl Ice {
    /// Takes every action of both nodes: signals go on the wire, agents "gather" one
    /// host candidate at once.
    pub(crate) fn pump(&mut self, net: &mut SimNet) {
        // Each round takes every queued action; agent reports add at most one more per
        // agent, so this ends.
        for _ in 0..64 {
            let mut any = false;
            for i in 0..2 {
                while let Some(action) = net.nodes[i].poll_ice() {
                    any = true;
                    let peer = net.nodes[1 - i].peer_id();
                    match action {
                        IceAction::Create { controlling, .. } => {
                            self.controlling[i] = Some(controlling);
                            self.created[i] += 1;
                            let line =
                                format!("candidate:{i} 1 udp 2130706431 10.0.0.{i} 51820 typ host");
                            net.nodes[i].handle_ice(net.now, peer, IceReport::LocalCandidate(line));
                        }
                        IceAction::Signal { kind, payload, .. } => {
                            let signed = SignedSignal::decode(&payload).unwrap();
                            assert_eq!(signed.signal.kind(), kind);
                            self.log.push((net.now, i, signed.session));
                            self.sent.push((i, signed.signal));
                            self.in_flight
                                .push_back((net.now + SIGNAL_DELAY, 1 - i, payload));
                        }
                        IceAction::Start { .. } => self.started[i] = Some(net.now),
                        IceAction::RemoteCandidate { .. } => self.remote_candidates[i] += 1,
                        IceAction::Close { .. } => self.closed[i] += 1,
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("ICE actions never ran out");
    }

    /// Runs the network and the relay until no signal is in flight.
    pub(crate) fn settle(&mut self, net: &mut SimNet) {
        self.pump(net);
        while let Some(&(due, _, _)) = self.in_flight.front() {
            net.run_until(due);
            net.now = net.now.max(due);
            while let Some((_, to, payload)) =
                self.in_flight.pop_front_if(|(d, _, _)| *d <= net.now)
            {
                let from = net.nodes[1 - to].peer_id();
                if let Err(error) = net.nodes[to].handle_ice_signal(net.now, from, &payload) {
                    self.refused.push(error);
                }
            }
            self.pump(net);
        }
    }

    pub(crate) fn count(&self, from: usize, what: fn(&IceSignal) -> bool) -> usize {
        self.sent
            .iter()
            .filter(|(i, s)| *i == from && what(s))
            .count()
    }
}

/// Two nodes that know each other's keys but no address, ICE on, sessions begun.
pub(crate) fn ice_net(
    a: Option<NatBehaviour>,
    b: Option<NatBehaviour>,
    config: NodeConfig,
    turn: bool,
) -> (SimNet, Ice) {
    ice_net_knowing(a, b, config, turn, false)
}

/// Like [`ice_net`]; with `knows_endpoints` each node also has the other's address as the
/// hub lists it (its NAT mapping towards the hub), which may or may not answer.
pub(crate) fn ice_net_knowing(
    a: Option<NatBehaviour>,
    b: Option<NatBehaviour>,
    config: NodeConfig,
    turn: bool,
    knows_endpoints: bool,
) -> (SimNet, Ice) {
    let spec = |nat| NodeSpec {
        knows_endpoints,
        nat,
    };
    let mut net = SimNet::build(
        config,
        LinkConfig::default(),
        7,
        Instant::now(),
        [spec(a), spec(b)],
    );
    if turn {
        net.enable_turn();
    }
    for i in 0..2 {
        net.nodes[i].enable_ice(true);
    }
    let mut ice = Ice::default();
    for i in 0..2 {
        let peer = net.nodes[1 - i].peer_id();
        net.nodes[i].ice_begin(net.now, peer).unwrap();
    }
    ice.settle(&mut net);
    (net, ice)
}

/// The modelled agents' verdict for both sides: a pair to the other's address when a
/// direct path exists, failure otherwise. `nats` are the two nodes' NAT boxes: a peer
/// whose NAT maps per destination shows up at an address no signal named (a
/// peer-reflexive candidate, which the model cannot predict), so that side reports
/// nothing and learns the address from the peer's first authenticated packet instead.
pub(crate) fn report_checks(net: &mut SimNet, direct: bool, nats: [Option<NatBehaviour>; 2]) {
    for i in 0..2 {
        let peer = net.nodes[1 - i].peer_id();
        let per_destination =
            nats[1 - i].is_some_and(|n| n.mapping != Mapping::EndpointIndependent);
        if direct && per_destination {
            continue;
        }
        let report = if direct {
            IceReport::Selected {
                local: net.view_of(i).endpoint.unwrap(),
                remote: net.view_of(1 - i).endpoint.unwrap(),
                remote_kind: IceKind::ServerReflexive,
                rtt: Some(Duration::from_millis(20)),
            }
        } else {
            IceReport::Failed
        };
        net.nodes[i].handle_ice(net.now, peer, report);
    }
}

pub(crate) fn lower(net: &SimNet) -> usize {
    usize::from(net.nodes[1].peer_id() < net.nodes[0].peer_id())
}
