//! The TURN client: one allocation on a TURN server (RFC 8656), owned by its own task
//! beside the shell, carrying the node's [`Via::Turn`](crate::node::Via::Turn) transmits
//! out and what the server relays in.
//!
//! Invariant: this task decides nothing about paths. It allocates, keeps the allocation
//! and its permissions refreshed (the webrtc-rs `turn` client does Allocate, Refresh,
//! CreatePermission and ChannelBind), sends what the node addressed through it, and hands
//! every datagram the server relayed to the shell with the address the server saw it
//! from; the node authenticates it like any other.
//!
//! The allocation uses a UDP socket of its own, not the mesh socket: the mesh socket's
//! batched IO and its STUN demultiplexing stay as they are, and a peer reaches the
//! relayed address from its mesh socket like any UDP address. A TURN server relays only
//! from IP addresses it holds a permission for; permissions are per IP, so
//! [`TurnClient::run`] creates one for each IP in the `permits` list (the peers'
//! candidate addresses: a peer behind a NAT sends from its router's IP, whichever port
//! its NAT picks) by sending one zero byte through the allocation to the first listed
//! address with that IP — the `turn` client has no bare CreatePermission call. That byte
//! goes to the peer's own mesh port (a STUN-tagged byte the peer ignores). The caller
//! lists only addresses the TURN server can route to (the peers' public ones): coturn
//! drops an allocation whose send to an unroutable address fails.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use webrtc_util::Conn;

use crate::Error;

/// Datagrams queued between the shell and the TURN client, each way.
pub const TURN_QUEUE: usize = 1024;

/// A datagram through the TURN allocation: the peer address it goes to (outbound) or
/// the one the server saw it come from (inbound).
pub type TurnDatagram = (SocketAddr, Vec<u8>);

/// The largest datagram the client reads from the server.
const MAX_DATAGRAM: usize = 65_535;

/// How to reach and authenticate to a TURN server.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// Username (for time-limited REST credentials: `<expiry-unix>:<peer-id>`).
    pub username: String,
    /// Password (for REST credentials: base64 of HMAC-SHA1 over the username).
    pub password: String,
    /// The server's realm (the server names it in its challenge; may be empty).
    pub realm: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is a credential: never in logs.
        f.debug_struct("TurnServer")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// The TURN client's ends of the shell's channels ([`Shell::turn_relay`](super::Shell::turn_relay)).
pub type TurnRelayPort = super::shell::RelayPort<SocketAddr>;

/// Why [`TurnClient::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    /// The `shutdown` future completed (new credentials, the daemon stopping).
    Shutdown,
    /// The shell dropped its ends of the port: nothing left to carry.
    ShellGone,
    /// The allocation's connection failed; allocate again.
    AllocationLost,
}

/// A live allocation. Build with [`TurnClient::allocate`], drive with [`TurnClient::run`].
pub struct TurnClient {
    client: turn::client::Client,
    conn: Arc<dyn Conn + Send + Sync>,
    relayed: SocketAddr,
    permitted: BTreeSet<IpAddr>,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("relayed", &self.relayed)
            .field("permitted", &self.permitted)
            .finish_non_exhaustive()
    }
}

fn turn_error(server: SocketAddr, action: &'static str, error: impl std::fmt::Display) -> Error {
    Error::Turn {
        server,
        action,
        problem: error.to_string(),
    }
}

impl TurnClient {
    /// Binds a UDP socket of its own (on `bind`, port 0 for any) and allocates a relayed
    /// address on `server`, giving up after `timeout`.
    pub async fn allocate(
        server: &TurnServer,
        bind: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|source| Error::Socket {
                action: "bind",
                addr: bind,
                source,
            })?;
        let config = turn::client::ClientConfig {
            stun_serv_addr: server.addr.to_string(),
            turn_serv_addr: server.addr.to_string(),
            username: server.username.clone(),
            password: server.password.clone(),
            realm: server.realm.clone(),
            software: "bauxite".to_owned(),
            rto_in_ms: 0,
            conn: Arc::new(socket),
            vnet: None,
        };
        let addr = server.addr;
        let setup = async {
            let client = turn::client::Client::new(config)
                .await
                .map_err(|e| turn_error(addr, "start client for", e))?;
            client
                .listen()
                .await
                .map_err(|e| turn_error(addr, "listen to", e))?;
            let conn = client
                .allocate()
                .await
                .map_err(|e| turn_error(addr, "allocate on", e))?;
            let relayed = conn
                .local_addr()
                .map_err(|e| turn_error(addr, "read the relayed address of", e))?;
            Ok::<_, Error>(Self {
                client,
                conn: Arc::new(conn),
                relayed,
                permitted: BTreeSet::new(),
            })
        };
        tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| turn_error(addr, "allocate on", "no answer in time"))?
    }

    /// The relayed address peers send to (publish it as a `relay` candidate).
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// Carries datagrams between `port` and the allocation, creating a permission for
    /// every IP `permits` lists, until `shutdown` completes, the shell drops its ends or
    /// the allocation fails; then releases the allocation and says which
    /// (`port` stays usable for the next allocation).
    pub async fn run(
        mut self,
        port: &mut TurnRelayPort,
        mut permits: watch::Receiver<Vec<SocketAddr>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> TurnEnd {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let initial = permits.borrow_and_update().clone();
        self.permit(&initial).await;
        let conn = Arc::clone(&self.conn);
        // Without its sender the list cannot change: stop watching it (a closed watch
        // would wake the loop forever).
        let mut permits_open = true;
        let end = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break TurnEnd::Shutdown,
                changed = permits.changed(), if permits_open => {
                    if changed.is_err() {
                        permits_open = false;
                        continue;
                    }
                    let list = permits.borrow_and_update().clone();
                    self.permit(&list).await;
                }
                out = port.outbound.recv() => {
                    let Some((dst, bytes)) = out else { break TurnEnd::ShellGone };
                    if let Err(error) = conn.send_to(&bytes, dst).await {
                        tracing::debug!(%dst, %error, "TURN send failed");
                    }
                }
                got = conn.recv_from(&mut buf) => match got {
                    Ok((len, from)) => {
                        let datagram = buf.get(..len).unwrap_or_default().to_vec();
                        if port.inbound.send((from, datagram)).await.is_err() {
                            break TurnEnd::ShellGone;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TURN allocation closed");
                        break TurnEnd::AllocationLost;
                    }
                },
            }
        };
        if let Err(error) = self.conn.close().await {
            tracing::debug!(%error, "TURN allocation not released");
        }
        if let Err(error) = self.client.close().await {
            tracing::debug!(%error, "TURN client not closed");
        }
        end
    }

    /// Creates a permission for each IP of `addrs` not permitted yet. The client
    /// refreshes permissions it holds by itself.
    async fn permit(&mut self, addrs: &[SocketAddr]) {
        for to in addrs {
            let ip = to.ip();
            if self.permitted.contains(&ip) || ip.is_unspecified() || to.port() == 0 {
                continue;
            }
            match self.conn.send_to(&[0], *to).await {
                Ok(_) => {
                    tracing::debug!(%ip, "TURN permission created");
                    self.permitted.insert(ip);
                }
                Err(error) => tracing::warn!(%ip, %error, "TURN permission refused"),
            }
        }
    }
}
