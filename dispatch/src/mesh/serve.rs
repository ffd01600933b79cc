//! The forge chunk server on the hub's mesh node: requests in on `ServicePort::FORGE`,
//! fragments out on the Bulk lane.
//!
//! Invariant: the `FetchServer` is polled only while the service socket's send queue has
//! room, and at most one datagram it produced waits outside it, so the shell never drops
//! a fragment for lack of room and the server's memory stays at its configured chunk
//! buffers (8 x 64 KiB) whatever the image size: LEDBAT on the Bulk lane is the transfer's
//! pace, and the server only fills what the lane takes.

use std::sync::{Arc, Mutex};

use bauxite_conduit::io::clock;
use bauxite_conduit::io::{IncomingBatch, ServiceSocket};
use bauxite_conduit::{Lane, ServiceError, VirtualIp};
use bauxite_forge::chunk::ChunkNo;
use bauxite_forge::fetch::{FetchServer, ServerConfig, ServerCounters, TransferId};
use bauxite_forge::image::{ChunkSource, FileImage, VirtualImage};
use tokio::sync::mpsc;

/// An image the hub serves: a file package's copy or a virtual image.
#[derive(Debug)]
pub enum PackageSource {
    /// A file in the images directory, read with positioned reads.
    File(FileImage),
    /// Generated chunk by chunk.
    Virtual(VirtualImage),
}

impl ChunkSource for PackageSource {
    fn len(&self) -> u64 {
        match self {
            PackageSource::File(f) => f.len(),
            PackageSource::Virtual(v) => v.len(),
        }
    }

    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> bauxite_forge::Result<usize> {
        match self {
            PackageSource::File(f) => f.read_chunk(no, buf),
            PackageSource::Virtual(v) => v.read_chunk(no, buf),
        }
    }
}

/// A change to the set of images served.
#[derive(Debug)]
pub enum ImageCommand {
    /// Serve this image under this transfer ID.
    Add(TransferId, PackageSource),
    /// Stop serving it.
    Remove(TransferId),
}

type Peer = (VirtualIp, u16);

/// Serves chunk requests arriving on `socket` until the shell stops.
pub(crate) async fn serve(
    mut socket: ServiceSocket,
    mut commands: mpsc::Receiver<ImageCommand>,
    counters: Arc<Mutex<ServerCounters>>,
) {
    let sender = socket.sender();
    let max_datagram = sender.max_payload();
    let mut server: FetchServer<Peer, PackageSource> = FetchServer::new(ServerConfig {
        max_datagram,
        ..ServerConfig::default()
    });
    let mut batch = IncomingBatch::new();
    let mut buf = vec![0u8; max_datagram];
    // A datagram the server produced that the send queue had no room for: buf[..len].
    let mut pending: Option<(Peer, usize)> = None;
    let mut commands_open = true;
    loop {
        // Bounded: each round queues a datagram or stops at a full queue or an idle server.
        loop {
            if let Some(((ip, port), len)) = pending {
                match sender.try_send_to(ip, port, Lane::Bulk, &buf[..len]) {
                    Ok(()) => pending = None,
                    Err(ServiceError::Full { .. }) => break,
                    Err(ServiceError::Closed { .. }) => return,
                    Err(error) => {
                        tracing::warn!(%error, "fragment not sent");
                        pending = None;
                    }
                }
            }
            match server.poll_transmit(clock::now(), &mut buf) {
                Some(t) => pending = Some((t.dst, t.len)),
                None => break,
            }
        }
        *counters.lock().unwrap_or_else(|p| p.into_inner()) = server.counters();
        let waiting = pending;
        let ((ip, port), len) = waiting.unwrap_or(((VirtualIp(0), 0), 0));
        tokio::select! {
            received = socket.recv_batch(&mut batch) => {
                if received.is_err() {
                    return;
                }
                let now = clock::now();
                for d in batch.iter() {
                    server.handle_datagram(now, (d.src_ip, d.src_port), d.payload);
                }
            }
            sent = sender.send_to(ip, port, Lane::Bulk, &buf[..len]), if waiting.is_some() => {
                match sent {
                    Err(ServiceError::Closed { .. }) => return,
                    Err(error) => tracing::warn!(%error, "fragment not sent"),
                    Ok(()) => {}
                }
                pending = None;
            }
            command = commands.recv(), if commands_open => match command {
                Some(ImageCommand::Add(id, source)) => server.add_image(id, source),
                Some(ImageCommand::Remove(id)) => {
                    server.remove_image(&id);
                }
                None => commands_open = false,
            },
        }
    }
}
