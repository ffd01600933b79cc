//! The event loop: socket, device and timers into the node, the node's transmits out.
//!
//! Invariant: at most one sealed batch waits outside the node — the complete [`GsoBatch`]
//! (plus the one datagram that closed it) the socket had no room for — and while it
//! waits the node is not polled for more, so the socket never holds the node's queue.
//!
//! # One turn of the loop
//!
//! 1. Due timers run (`handle_timeout`).
//! 2. Service sockets' queued datagrams move into their lanes while the lanes have room
//!    (at most 256 bulk or telemetry datagrams per turn; critical ones are not counted).
//! 3. `flush`: the parked batch goes first; then `poll_transmit` fills the batch until
//!    it is complete (another destination or length, 64 segments, or 32 KiB) and the
//!    batch leaves in one GSO send — until the node has nothing more or the socket is
//!    full. Only one batch is ever gathered before it is sent, so a critical packet
//!    sealed after a bulk batch waits for one send, not for a queue in the shell.
//!    Path MTU probes leave on their own, outside the batch. Then the packets the node
//!    addresses to the local host (ICMP too-big answers) go to the device.
//! 4. Wait for the first of: shutdown, room in the socket (only while a batch is
//!    parked), a query, input on the socket or the device, a service socket's new
//!    datagrams, the node's next deadline — or do not wait, when service datagrams
//!    could still move (the per-turn budget ran out, or the flush made room in a lane
//!    they were waiting for).
//! 5. Input on either side serves both: up to [`BATCH`] datagrams (a few `recvmmsg`
//!    calls, GRO buffers split at their stride) decrypted and handed to a service
//!    socket or queued for one coalescing device write per receive call, then up to
//!    [`BATCH`] packets from the device (a TSO read splits into dozens) into the
//!    node's lanes. Checking readiness costs no syscall, and serving both keeps a
//!    saturated direction from starving the other — a biased `select!` alone would
//!    always pick the socket.
//!    Critical first on both sides: the mesh port's Critical socket before the main
//!    one (`critical_rx`), the TUN device's Critical queue before the other
//!    ([`crate::tun::queues`]); and while the bulk lane is full with one peer's packets
//!    the other TUN queue is neither read nor waited on, so a flood stays in the
//!    kernel's ring instead of keeping the loop busy reading packets it would drop
//!    ([`DataPlaneScheduler::takes_bulk_reads`](crate::scheduler::DataPlaneScheduler::takes_bulk_reads)).
//!
//! [`GsoBatch`]: super::gso::GsoBatch

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "tun")]
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, watch};

use super::arrival::ArrivalClock;
use super::device::Device;
use super::ice::{IceInbox, is_ice_stun};
use super::ice_driver::{IceConfig, IceIo, IceSignalPort};
use super::service::{ServiceSocket, Services};
use super::turn::{TURN_QUEUE, TurnDatagram, TurnRelayPort};
use super::udp::UdpIo;
use super::{BATCH, Query, ShellConfig, ShellCounters, ShellStatus, clock};
use crate::node::{Event, HUB_ENDPOINT, Received, Via};
use crate::service::ServicePort;
use crate::stun::{self, BindingClient, BindingTimers};
use crate::tun::TunKind;
use crate::{BauxiteNode, Error, Metrics, ServiceError, VirtualIp};

/// Datagrams queued between the shell and the hub connector, each way.
pub const HUB_RELAY_QUEUE: usize = 1024;

/// A mesh datagram on the hub relay, with the peer it goes to (outbound) or the peer the
/// hub says it came from (inbound: not trusted; the session authenticates the bytes).
pub type RelayDatagram = (crate::PeerId, Vec<u8>);

/// A relay's ends of the shell's channels (the hub connector's, [`Shell::hub_relay`];
/// the TURN client's, [`Shell::turn_relay`]); `A` says where a datagram goes or came from.
#[derive(Debug)]
pub struct RelayPort<A> {
    /// Datagrams the node sends through the relay.
    pub outbound: mpsc::Receiver<(A, Vec<u8>)>,
    /// Datagrams the relay forwarded to this node.
    pub inbound: mpsc::Sender<(A, Vec<u8>)>,
}

/// The hub connector's ends of the relay channels ([`Shell::hub_relay`]).
pub type HubRelayPort = RelayPort<crate::PeerId>;

/// The shell's ends of a relay's channels; both `None` until a relay is connected.
#[derive(Debug)]
struct RelayLink<A> {
    out: Option<mpsc::Sender<(A, Vec<u8>)>>,
    inbound: Option<mpsc::Receiver<(A, Vec<u8>)>>,
}

impl<A> RelayLink<A> {
    fn none() -> Self {
        Self {
            out: None,
            inbound: None,
        }
    }

    /// New channels of `queue` datagrams each way; returns the relay's ends.
    fn connect(&mut self, queue: usize) -> RelayPort<A> {
        let (out_tx, out_rx) = mpsc::channel(queue);
        let (in_tx, in_rx) = mpsc::channel(queue);
        self.out = Some(out_tx);
        self.inbound = Some(in_rx);
        RelayPort {
            outbound: out_rx,
            inbound: in_tx,
        }
    }

    /// Hands a datagram to the relay; `false` without one, or while its queue is full.
    fn try_send(&self, to: A, datagram: Vec<u8>) -> bool {
        self.out
            .as_ref()
            .is_some_and(|tx| tx.try_send((to, datagram)).is_ok())
    }
}

/// What woke the loop.
enum Wake {
    IceReport(Option<(crate::PeerId, crate::node::IceReport)>),
    IceSignal(Option<(crate::PeerId, Vec<u8>)>),
    Relayed(Option<RelayDatagram>),
    Turned(Option<TurnDatagram>),
    Shutdown,
    Writable(io::Result<()>),
    Input(io::Result<()>),
    Timer,
    Service,
    Query(Option<Query>),
}

/// The shell's STUN parts, borrowed beside the socket's receive buffers.
struct StunSide<'a> {
    client: &'a mut BindingClient,
    reflexive: &'a watch::Sender<Option<SocketAddr>>,
    serve: bool,
    /// The ICE agents' inbox, when ICE is on.
    ice: Option<&'a IceInbox>,
    counters: &'a mut ShellCounters,
}

impl StunSide<'_> {
    /// A STUN datagram: an answer for the binding client, or a request to answer (when
    /// serving); returns the answer to send. Anything else is counted and ignored.
    fn on_datagram(self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        if let Some(seen) = self.client.handle(now, from, bytes) {
            tracing::info!(reflexive = %seen.reflexive, previous = ?seen.previous, server = %from, "server-reflexive address learned over STUN");
            self.reflexive.send_replace(Some(seen.reflexive));
            return None;
        }
        if let Some(inbox) = self.ice.filter(|_| is_ice_stun(bytes)) {
            if inbox.offer(from, bytes) {
                self.counters.ice_stun_received += 1;
            } else {
                self.counters.ice_stun_dropped += 1;
            }
            return None;
        }
        let reply = self.serve.then(|| stun::answer(bytes, from)).flatten();
        if reply.is_none() {
            self.counters.stun_ignored += 1;
        }
        reply
    }
}

/// The parts one received datagram reaches, borrowed beside the socket's buffers.
struct Inbound<'a> {
    node: &'a mut BauxiteNode,
    services: &'a mut Services,
    device: &'a mut Device,
    stun: StunSide<'a>,
}

impl Inbound<'_> {
    /// One datagram into the node: its packet to a service socket or queued for the
    /// device, a STUN message to the binding client. Returns a STUN answer to send.
    async fn on_datagram(
        self,
        now: Instant,
        arrived: Instant,
        from: SocketAddr,
        bytes: &mut [u8],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let len = bytes.len();
        match self.node.handle_stamped_datagram(now, arrived, from, bytes) {
            Received::Deliver(range) => {
                let packet = bytes.get(range).unwrap_or_default();
                if self.services.is_empty() || !self.services.deliver(packet) {
                    self.device.deliver(packet, self.stun.counters).await;
                }
                None
            }
            Received::Stun => self
                .stun
                .on_datagram(now, from, bytes)
                .map(|reply| (from, reply)),
            Received::Consumed => None,
            Received::Dropped(reason) => {
                tracing::trace!(%from, ?reason, len, "datagram dropped");
                None
            }
        }
    }
}

/// A node with its socket and device. Build with [`Shell::bind`], drive with
/// [`Shell::run`].
pub struct Shell {
    node: BauxiteNode,
    udp: UdpIo,
    device: Device,
    tun_kind: TunKind,
    virtual_ip: VirtualIp,
    #[cfg(feature = "tun")]
    app: Option<UnixDatagram>,
    services: Services,
    counters: ShellCounters,
    /// Whether STUN Binding requests on the mesh port are answered (the hub).
    stun_server: bool,
    /// Learns this node's server-reflexive address from the server [`Query::Stun`] names.
    stun: BindingClient,
    reflexive: watch::Sender<Option<SocketAddr>>,
    /// Where the node's packets for the local host are copied on their way to the device.
    local_buf: Vec<u8>,
    /// Datagrams to and from the hub connector (the hub relay).
    relay: RelayLink<crate::PeerId>,
    /// Datagrams to and from the TURN client (this node's allocation).
    turn: RelayLink<SocketAddr>,
    /// The ICE agents, when ICE is on ([`Shell::enable_ice`]).
    ice: Option<IceIo>,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("node", &self.node)
            .field("tun", &self.tun_kind)
            .finish_non_exhaustive()
    }
}

impl Shell {
    /// Binds the UDP socket (with GSO/GRO where the kernel has them) and opens the
    /// device `config` asks for (a TUN device with offload where the kernel allows it).
    /// Allocates every buffer the loop will use. Must run inside a tokio runtime.
    pub async fn bind(node: BauxiteNode, config: &ShellConfig) -> Result<Self, Error> {
        // SO_REUSEPORT, so the Critical socket can join the port (critical_rx).
        let socket =
            super::critical_rx::bind_main(config.listen).map_err(|source| Error::Socket {
                action: "bind",
                addr: config.listen,
                source,
            })?;
        let capacity = node.config().datagram_capacity();
        let mut udp = UdpIo::new(socket, capacity).map_err(|source| Error::Socket {
            action: "configure",
            addr: config.listen,
            source,
        })?;
        udp.open_critical();
        let opened = Device::open(&config.device, node.config().mtu)?;
        tracing::info!(
            tun_offload = opened.device.offload(),
            udp_gso_segments = udp.max_gso_segments(),
            critical_socket = udp.has_critical(),
            "batched IO"
        );
        let node_mtu = node.config().mtu;
        let services = Services::new(
            config.device.virtual_ip(),
            node.config().mtu,
            Arc::clone(node.metrics()),
        );
        Ok(Self {
            node,
            udp,
            services,
            device: opened.device,
            tun_kind: opened.kind,
            virtual_ip: config.device.virtual_ip(),
            #[cfg(feature = "tun")]
            app: opened.app,
            counters: ShellCounters::default(),
            stun_server: false,
            // Unpredictable transaction IDs: an off-path sender cannot forge an answer.
            stun: BindingClient::new(
                BindingTimers::default(),
                clock::os_seed().map_or(0, |s| {
                    u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
                }),
            ),
            reflexive: watch::Sender::new(None),
            local_buf: vec![0; node_mtu],
            relay: RelayLink::none(),
            turn: RelayLink::none(),
            ice: None,
        })
    }

    /// Connects the hub relay: the node's hub transmits go to the returned port's
    /// `outbound`, and datagrams sent to its `inbound` enter the node as relayed. The
    /// node relays only with [`NodeConfig::hub_relay_after`](crate::node::NodeConfig)
    /// set. Without a connector (or while its queue is full) hub transmits are dropped
    /// and counted.
    pub fn hub_relay(&mut self) -> HubRelayPort {
        self.relay.connect(HUB_RELAY_QUEUE)
    }

    /// Connects a TURN client ([`TurnClient::run`](super::turn::TurnClient::run)): the
    /// node's [`Via::Turn`] transmits go to the returned port's `outbound`, and datagrams
    /// sent to its `inbound` enter the node as arrived through the allocation. Without a
    /// client (or while its queue is full) TURN transmits are dropped and counted.
    pub fn turn_relay(&mut self) -> TurnRelayPort {
        self.turn.connect(TURN_QUEUE)
    }

    /// Turns ICE on: one webrtc-ice agent per peer session on the mesh port (STUN
    /// datagrams that are ICE's go to the agents, see [`super::ice`]), roles and path
    /// decisions in the node ([`BauxiteNode::enable_ice`]). The returned port carries
    /// the signals to and from the hub connector's `ExchangeCandidates` stream. Must run
    /// inside a tokio runtime.
    pub fn enable_ice(&mut self, config: IceConfig) -> Result<IceSignalPort, Error> {
        let addr = self.local_addr().unwrap_or(([0, 0, 0, 0], 0).into());
        let (ice, port) = IceIo::new(&self.udp.socket, config).map_err(|source| Error::Socket {
            action: "share with the ICE agents",
            addr,
            source,
        })?;
        self.ice = Some(ice);
        self.node.enable_ice(true);
        Ok(port)
    }

    /// Answers STUN Binding requests on the mesh port with the sender's address (what
    /// the hub does, so nodes learn their server-reflexive address from it).
    pub fn serve_stun(&mut self) {
        self.stun_server = true;
    }

    /// This node's server-reflexive address as the STUN server of [`Query::Stun`] last
    /// answered it (`None` until an answer, or with no server).
    pub fn reflexive(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.reflexive.subscribe()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.socket.local_addr()
    }

    /// Which device carries IP packets.
    pub fn tun_kind(&self) -> &TunKind {
        &self.tun_kind
    }

    /// Gives the kernel TUN device its second queue ([`crate::tun::queues`]): from now
    /// on the shell reads queue 0 first and, while the bulk lane is full, leaves queue 1
    /// to the kernel. Only useful with a steering program that sends Critical packets to
    /// queue 0 ([`Shell::tun_steering_fd`]); without one, undo it with
    /// [`Shell::close_critical_tun_queue`], or the kernel's flow hash may put a ping in
    /// the queue a flood holds. Returns whether the device has two queues (false, with a
    /// log line, on the in-memory pipe or a kernel that refuses).
    pub fn open_critical_tun_queue(&mut self) -> bool {
        self.device.open_other_queue()
    }

    /// Back to one TUN queue, read as one.
    pub fn close_critical_tun_queue(&mut self) {
        self.device.close_other_queue();
    }

    /// The TUN device's Critical queue (queue 0 of [`crate::tun::queues`]), to attach a
    /// steering program to (`TUNSETSTEERINGEBPF`); `None` unless the kernel device has
    /// its two queues. Attach before [`Shell::run`] (which takes the shell).
    #[cfg(feature = "tun")]
    pub fn tun_steering_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.device.steering_fd()
    }

    /// Closes the mesh port's Critical socket (see `critical_rx`, opened by
    /// [`Shell::bind`]): every datagram waits in the main socket's buffer again.
    pub fn single_socket(&mut self) {
        self.udp.close_critical();
    }

    /// The node's virtual IP.
    pub fn virtual_ip(&self) -> VirtualIp {
        self.virtual_ip
    }

    /// The application end of the in-memory device (only with the in-memory pipe; once).
    #[cfg(feature = "tun")]
    pub fn take_app_end(&mut self) -> Option<UnixDatagram> {
        self.app.take()
    }

    /// Binds a service port for an in-process user, with a receive queue of
    /// `recv_queue` datagrams ([`DEFAULT_RECV_QUEUE`](super::service::DEFAULT_RECV_QUEUE)
    /// unless there is a reason): datagrams delivered to this node's virtual IP on `port`
    /// go to the socket instead of the device. While the shell runs, bind with
    /// [`Query::BindService`].
    pub fn bind_service(
        &mut self,
        port: ServicePort,
        recv_queue: usize,
    ) -> Result<ServiceSocket, ServiceError> {
        self.services.bind(port, recv_queue)
    }

    /// The node's counters, shared with exporters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(self.node.metrics())
    }

    /// Runs until `shutdown` completes; returns the node. Handshakes with every peer
    /// that has a known endpoint start at once, so a restarted node re-joins by itself.
    pub async fn run(
        mut self,
        mut queries: mpsc::Receiver<Query>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<BauxiteNode, Error> {
        let mut shutdown = std::pin::pin!(shutdown);
        self.dial(clock::now());
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(clock::now()));
        let mut sleep = std::pin::pin!(sleep);
        let mut queries_open = true;
        let service_wake = self.services.wake();
        loop {
            let now = clock::now();
            if self.node.poll_timeout().is_some_and(|at| at <= now) {
                self.node.handle_timeout(now);
            }
            let pumped = self.services.pump(&mut self.node, now);
            if let Some(ice) = self.ice.as_mut() {
                ice.reflexive_changed(&mut self.node, now, *self.reflexive.borrow());
                ice.perform(&mut self.node, now).await;
                self.counters.ice_signals_dropped = ice.signals_dropped;
            }
            self.flush(now);
            self.answer_local().await;
            self.log_events(now);
            // Service datagrams that could move now (budget spent, or their lane drained
            // by the flush): go again rather than sleep.
            self.send_stun(now);
            let deadline = if pumped.again(&self.node) {
                Some(now)
            } else {
                [self.node.poll_timeout(), self.stun.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
            };
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline.unwrap_or(now)));
            let bulk_room = self.node.scheduler().takes_bulk_reads();
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                r = self.udp.socket.writable(), if self.udp.is_blocked() => Wake::Writable(r),
                q = queries.recv(), if queries_open => Wake::Query(q),
                w = recv_ice(&mut self.ice), if self.ice.is_some() => w,
                r = recv_relayed(&mut self.relay.inbound), if self.relay.inbound.is_some() => Wake::Relayed(r),
                r = recv_relayed(&mut self.turn.inbound), if self.turn.inbound.is_some() => Wake::Turned(r),
                r = self.udp.readable() => Wake::Input(r),
                r = self.device.readable(bulk_room) => Wake::Input(r),
                () = service_wake.notified() => Wake::Service,
                () = &mut sleep, if deadline.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Shutdown => {
                    tracing::info!("shutting down");
                    if let Some(ice) = self.ice.as_mut() {
                        ice.close_all().await;
                    }
                    return Ok(self.node);
                }
                Wake::IceReport(Some((peer, report))) => {
                    self.node.handle_ice(clock::now(), peer, report);
                }
                Wake::IceReport(None) => {}
                Wake::IceSignal(Some((peer, payload))) => {
                    if let Err(error) = self.node.handle_ice_signal(clock::now(), peer, &payload) {
                        self.counters.ice_signals_refused += 1;
                        tracing::warn!(%peer, %error, "ICE signal refused");
                    }
                }
                Wake::IceSignal(None) => {
                    if let Some(ice) = self.ice.as_mut() {
                        ice.signals_in = None;
                    }
                }
                Wake::Writable(r) | Wake::Input(r) if r.is_err() => {
                    if let Err(error) = r {
                        tracing::warn!(%error, "socket or device failed; stopping");
                        return Err(Error::Io {
                            action: "poll",
                            path: "udp socket / tun device".into(),
                            source: error,
                        });
                    }
                }
                Wake::Writable(_) | Wake::Timer | Wake::Service => {}
                Wake::Input(_) => {
                    self.on_datagrams(clock::now()).await;
                    self.on_packets(clock::now());
                }
                Wake::Relayed(Some((_, mut datagram))) => {
                    self.on_relayed(clock::now(), &mut datagram).await;
                }
                Wake::Relayed(None) => self.relay.inbound = None,
                Wake::Turned(Some((from, mut datagram))) => {
                    self.on_turned(clock::now(), from, &mut datagram).await;
                }
                Wake::Turned(None) => self.turn.inbound = None,
                Wake::Query(Some(query)) => self.answer(query, clock::now()),
                Wake::Query(None) => queries_open = false,
            }
        }
    }

    fn dial(&mut self, now: Instant) {
        let peers: Vec<_> = self
            .node
            .registry()
            .iter()
            .filter(|p| p.endpoint.is_some())
            .map(|p| p.id)
            .collect();
        for peer in peers {
            if let Err(error) = self.node.connect(now, peer) {
                tracing::warn!(%peer, %error, "cannot start handshake");
            }
        }
    }

    /// Datagrams from the socket into the node, until [`BATCH`] are handled or none is
    /// left; decrypted packets go to the device in one batched write per receive call
    /// (or sooner when the batch fills). The Critical socket is drained first (it only
    /// holds small datagrams, a trickle next to a flood; bounded by [`BATCH`] too).
    async fn on_datagrams(&mut self, now: Instant) {
        let mut handled = 0;
        let mut stun_replies = Vec::new();
        let mut critical: u64 = 0;
        for _ in 0..BATCH {
            let (from, bytes) = match self.udp.recv_critical() {
                Ok(datagram) => datagram,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    self.counters.udp_recv_errors += 1;
                    tracing::debug!(%error, "udp receive failed (critical socket)");
                    continue;
                }
            };
            let sink = Inbound {
                node: &mut self.node,
                services: &mut self.services,
                device: &mut self.device,
                stun: StunSide {
                    client: &mut self.stun,
                    reflexive: &self.reflexive,
                    serve: self.stun_server,
                    ice: self.ice.as_ref().map(|i| &i.inbox),
                    counters: &mut self.counters,
                },
            };
            critical += 1;
            if let Some(reply) = sink.on_datagram(now, now, from, bytes).await {
                stun_replies.push(reply);
            }
        }
        self.counters.udp_critical_datagrams += critical;
        if critical > 0 {
            // Out to the device now, not behind the bulk datagrams read next.
            self.device.flush(&mut self.counters).await;
        }
        // Every call handles a datagram or counts an error, so this ends.
        for _ in 0..BATCH {
            if handled >= BATCH {
                break;
            }
            let datagrams = match self.udp.recv() {
                Ok(datagrams) => datagrams,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    self.counters.udp_recv_errors += 1;
                    tracing::debug!(%error, "udp receive failed");
                    continue;
                }
            };
            let clock = ArrivalClock::new(clock::now(), clock::unix_nanos());
            for datagram in datagrams {
                handled += 1;
                if datagram.coalesced {
                    self.counters.udp_gro_datagrams += 1;
                }
                let sink = Inbound {
                    node: &mut self.node,
                    services: &mut self.services,
                    device: &mut self.device,
                    stun: StunSide {
                        client: &mut self.stun,
                        reflexive: &self.reflexive,
                        serve: self.stun_server,
                        ice: self.ice.as_ref().map(|i| &i.inbox),
                        counters: &mut self.counters,
                    },
                };
                let arrived = clock.arrived(datagram.stamp);
                if let Some(reply) = sink
                    .on_datagram(clock.now(), arrived, datagram.from, datagram.bytes)
                    .await
                {
                    stun_replies.push(reply);
                }
            }
            self.device.flush(&mut self.counters).await;
        }
        self.services.notify_receivers();
        for (to, reply) in stun_replies {
            self.send_datagram(to, &reply);
        }
    }

    /// A datagram the hub relayed: into the node as from [`HUB_ENDPOINT`].
    async fn on_relayed(&mut self, now: Instant, datagram: &mut [u8]) {
        self.counters.hub_relay_received += 1;
        let received = self.node.handle_datagram(now, HUB_ENDPOINT, datagram);
        self.take_forwarded(received, datagram, "hub relay").await;
    }

    /// A datagram the TURN server relayed from `from`: into the node as such.
    async fn on_turned(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        self.counters.turn_received += 1;
        let received = self.node.handle_turn_datagram(now, from, datagram);
        self.take_forwarded(received, datagram, "TURN").await;
    }

    /// What the node made of a datagram a relay (the hub, TURN) forwarded: a packet is
    /// delivered at once (relayed datagrams come one at a time, not in batches).
    async fn take_forwarded(&mut self, received: Received, datagram: &[u8], via: &'static str) {
        match received {
            Received::Deliver(range) => {
                let packet = datagram.get(range).unwrap_or_default();
                if self.services.is_empty() || !self.services.deliver(packet) {
                    self.device.deliver(packet, &mut self.counters).await;
                }
                self.device.flush(&mut self.counters).await;
                self.services.notify_receivers();
            }
            Received::Stun | Received::Consumed => {}
            Received::Dropped(reason) => {
                tracing::trace!(via, ?reason, "forwarded datagram dropped");
            }
        }
    }

    /// A TURN transmit to the TURN client.
    fn send_turned(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        if self.turn.try_send(to, datagram) {
            self.counters.turn_sent += 1;
        } else {
            self.counters.turn_dropped += 1;
            Metrics::inc(&self.node.metrics().tx_dropped);
        }
    }

    /// A hub transmit to the hub connector.
    fn send_relayed(&mut self, peer: crate::PeerId, datagram: Vec<u8>) {
        if self.relay.try_send(peer, datagram) {
            self.counters.hub_relay_sent += 1;
        } else {
            // The node decided on the hub; with no connector, or one that is behind,
            // the datagram is lost like one a full socket refuses.
            self.counters.hub_relay_dropped += 1;
            Metrics::inc(&self.node.metrics().tx_dropped);
        }
    }

    /// Sends the binding client's due request, if any.
    fn send_stun(&mut self, now: Instant) {
        if let Some((to, request)) = self.stun.poll_transmit(now) {
            self.send_datagram(to, &request);
        }
    }

    /// One datagram straight to the socket, outside the GSO batches (STUN: rare, tiny).
    /// A full socket drops it: STUN retransmits.
    fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8]) {
        if let Err(error) = self.udp.socket.try_send_to(bytes, to) {
            self.counters.udp_send_errors += 1;
            tracing::debug!(%to, %error, "STUN datagram not sent");
        }
    }

    /// Packets from the device into the node's lanes, until [`BATCH`] are handled or
    /// none is left (one offloaded read may bring dozens).
    fn on_packets(&mut self, now: Instant) {
        self.device
            .read_into(&mut self.node, now, BATCH, &mut self.counters);
    }

    /// Sends the parked batch, then gathers and sends batches of what the node has,
    /// until it has nothing or the socket is full (see [`GsoBatch`](super::gso::GsoBatch)
    /// for the driving rules).
    fn flush(&mut self, now: Instant) {
        loop {
            if !self.udp.send_complete(&mut self.counters) {
                return;
            }
            let max_segments = self.udp.max_gso_segments();
            let Some(tail) = self.udp.batch.tail(max_segments) else {
                continue;
            };
            match self.node.poll_transmit(now, tail) {
                Some(t) if t.via != Via::Udp => {
                    let datagram = tail.get(..t.len).unwrap_or_default().to_vec();
                    match t.via {
                        Via::Hub(peer) => self.send_relayed(peer, datagram),
                        Via::Turn => self.send_turned(t.dst, datagram),
                        Via::Udp => {}
                    }
                }
                Some(t) if t.probe => {
                    // On its own: a probe the local interface refuses must not take the
                    // batch's data with it. A full socket loses it, which the prober
                    // counts like any lost probe (it retries).
                    let probe = tail.get(..t.len).unwrap_or_default();
                    if let Err(error) = self.udp.socket.try_send_to(probe, t.dst) {
                        self.counters.udp_send_errors += 1;
                        tracing::debug!(dst = %t.dst, %error, len = t.len, "path MTU probe not sent");
                    }
                }
                Some(t) => self.udp.batch.push(t.dst, t.len),
                None if self.udp.batch.is_empty() => return,
                None => self.udp.batch.finish(),
            }
        }
    }

    /// Writes what the node addresses to the local host (ICMP too-big answers to packets
    /// the peer's path cannot carry, bulk released in order after a hole) to the device.
    async fn answer_local(&mut self) {
        let mut wrote = false;
        while let Some(len) = self.node.poll_local_packet(&mut self.local_buf) {
            let packet = self.local_buf.get(..len).unwrap_or_default();
            self.device.deliver(packet, &mut self.counters).await;
            wrote = true;
        }
        let mut to_services = false;
        while let Some(len) = self.node.poll_released(&mut self.local_buf) {
            // Like a delivered packet: a bound service socket's, else the device's.
            let packet = self.local_buf.get(..len).unwrap_or_default();
            if !self.services.is_empty() && self.services.deliver(packet) {
                to_services = true;
                continue;
            }
            self.device.deliver(packet, &mut self.counters).await;
            wrote = true;
        }
        if to_services {
            self.services.notify_receivers();
        }
        if wrote {
            self.device.flush(&mut self.counters).await;
        }
    }

    fn log_events(&mut self, now: Instant) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::HandshakeCompleted { peer, initiator } => {
                    tracing::info!(%peer, initiator, "handshake completed");
                }
                Event::HandshakeGaveUp { peer, dropped } => {
                    tracing::warn!(%peer, dropped, "handshake gave up");
                }
                Event::PeerAdded { peer, name } => tracing::info!(%peer, %name, "peer added"),
                Event::PeerRemoved { peer, name } => {
                    tracing::info!(%peer, %name, "peer removed");
                }
                Event::PeerKeyChanged { peer } => {
                    tracing::info!(%peer, "peer key changed; old session dropped");
                }
                Event::PeerRefused { peer, reason } => {
                    tracing::warn!(%peer, %reason, "peer refused");
                }
                Event::HubRelay { peer, active } => {
                    tracing::info!(%peer, active, "hub relay");
                }
                Event::TurnRelay { peer, active } => {
                    tracing::info!(%peer, active, "TURN relay");
                }
                Event::PathQuiet { peer } => {
                    // Our NAT may have rebound: learn the mapping now, not at the next
                    // refresh, so the hub can tell the peer where we are.
                    tracing::info!(%peer, "path quiet; asking STUN again");
                    self.stun.reprobe(now);
                }
            }
        }
    }

    fn answer(&mut self, query: Query, now: Instant) {
        match query {
            Query::Status(reply) => {
                let status = ShellStatus {
                    peer_id: self.node.peer_id(),
                    listen: self
                        .udp
                        .socket
                        .local_addr()
                        .unwrap_or(([0, 0, 0, 0], 0).into()),
                    tun: self.tun_kind.clone(),
                    peers: self.node.peer_status(now),
                    counters: self.counters,
                };
                // The asker may have given up; nothing to do then.
                let _ = reply.send(status);
            }
            Query::ReplacePeers(peers) => self.node.replace_peers(now, peers),
            Query::Stun(server) => {
                if server.is_none() {
                    self.reflexive.send_replace(None);
                }
                self.stun.probe(now, server);
            }
            Query::SetPolicy(Some(policy)) => match self.node.policy_mut().load(policy) {
                Ok(()) => tracing::info!("policy loaded"),
                Err(error) => tracing::warn!(%error, "policy refused; keeping the previous one"),
            },
            Query::SetPolicy(None) => {
                self.node.policy_mut().clear();
                tracing::info!("policy cleared (allow all)");
            }
            Query::Snapshot {
                unix_seconds,
                reply,
            } => {
                // The asker may have given up; nothing to do then.
                let _ = reply.send(self.node.snapshot(unix_seconds));
            }
            Query::BindService {
                port,
                recv_queue,
                reply,
            } => {
                // The asker may have given up; the socket then unbinds as it drops.
                let _ = reply.send(self.services.bind(port, recv_queue));
            }
        }
    }
}

/// The next agent report or signal from the hub connector; pending forever without ICE.
async fn recv_ice(ice: &mut Option<IceIo>) -> Wake {
    let Some(ice) = ice else {
        return std::future::pending().await;
    };
    let signals = async {
        match ice.signals_in.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = ice.reports.recv() => Wake::IceReport(r),
        s = signals => Wake::IceSignal(s),
    }
}

/// The next relayed datagram; pending forever without a connector (the caller guards).
async fn recv_relayed<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
