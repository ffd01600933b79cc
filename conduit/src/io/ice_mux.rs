//! The mesh port as webrtc-ice's UDP mux sees it: the STUN datagrams the shell passes on
//! go in through an [`IceInbox`], the agents' sends leave through a duplicate of the mesh
//! socket's descriptor.
//!
//! Invariant: only what [`is_ice_stun`] accepts reaches the agents; mesh datagrams never
//! leave the shell's batched path.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};
use webrtc_ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc_util::Conn;

/// STUN datagrams queued between the shell and the agents' mux; more are dropped (the
/// agents retransmit).
pub const ICE_QUEUE: usize = 256;

/// The largest STUN datagram passed on (webrtc-ice's receive MTU).
const MAX_STUN: usize = 8192;

/// A STUN datagram for the agents, with where it came from.
type IceDatagram = (SocketAddr, Vec<u8>);

/// Whether a STUN datagram that reached the mesh port is ICE's: a connectivity check
/// (a Binding request naming a ufrag in USERNAME), an answer to one, or an indication
/// (keepalive). A Binding request without USERNAME is a plain STUN query (the hub
/// answers those) and anything unparsable is nobody's.
pub fn is_ice_stun(bytes: &[u8]) -> bool {
    let mut message = stun::message::Message::new();
    if message.unmarshal_binary(bytes).is_err() {
        return false;
    }
    message.typ.class != stun::message::CLASS_REQUEST
        || message.contains(stun::attributes::ATTR_USERNAME)
}

/// The shell's end of the agents' mux: STUN datagrams for ICE go in here.
#[derive(Clone, Debug)]
pub struct IceInbox {
    tx: mpsc::Sender<IceDatagram>,
}

impl IceInbox {
    /// Passes a STUN datagram to the agents; `false` when their queue is full or the mux
    /// is gone (the datagram is dropped: ICE retransmits).
    pub fn offer(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        bytes.len() <= MAX_STUN && self.tx.try_send((from, bytes.to_vec())).is_ok()
    }
}

/// The mesh port as webrtc-ice sees it: reads what the shell passed on, writes through a
/// duplicate of the mesh socket's descriptor.
struct MeshPortConn {
    inbound: Mutex<mpsc::Receiver<IceDatagram>>,
    socket: UdpSocket,
    local: SocketAddr,
}

#[async_trait::async_trait]
impl Conn for MeshPortConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "the mesh port is not connected to one address".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut inbound = self.inbound.lock().await;
        let Some((from, bytes)) = inbound.recv().await else {
            return Err(webrtc_util::Error::ErrUseClosedNetworkConn);
        };
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok((n, from))
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "the mesh port sends only with a destination".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inbound.lock().await.close();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// webrtc-ice's UDP mux over the mesh port; every agent of the node shares it.
#[derive(Clone)]
pub struct IceMux {
    pub(super) mux: Arc<UDPMuxDefault>,
    pub(super) local: SocketAddr,
}

impl std::fmt::Debug for IceMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceMux")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl IceMux {
    /// Builds the mux over `socket` (the mesh socket, which keeps its reader): the
    /// agents send through a duplicate of its descriptor and read what the shell passes
    /// to the returned inbox. Must run inside a tokio runtime.
    pub fn new(socket: &UdpSocket) -> std::io::Result<(Self, IceInbox)> {
        let local = socket.local_addr()?;
        let duplicate = std::net::UdpSocket::from(socket.as_fd().try_clone_to_owned()?);
        duplicate.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel(ICE_QUEUE);
        let conn = MeshPortConn {
            inbound: Mutex::new(rx),
            socket: UdpSocket::from_std(duplicate)?,
            local,
        };
        let mux = UDPMuxDefault::new(UDPMuxParams::new(conn));
        Ok((Self { mux, local }, IceInbox { tx }))
    }

    /// The mesh port's address (the port of every host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
