//! Signaling between replicas: a message for a node that has no signaling stream on this
//! replica goes through the shared store to whichever replica the node is connected to.
//!
//! Invariant: a checked message ends in exactly one place: the destination's stream here,
//! this replica's queue (a store of one process, or a destination connected here whose
//! buffer is full), or the store's shared queue, announced to every replica; the replica
//! with the destination's stream takes it (once: the store hands each message out once).
//! A destination that attaches takes what waits for it in the store, so messages sent while
//! it was offline, or while a replica restarted, still arrive.

use bauxite_conduit::PeerId;
use prost::Message;
use tokio::sync::mpsc;

use super::Hub;
use super::signal::{Delivery, SignalRouter};
use crate::Result;
use crate::proto::node::Signal;

impl Hub {
    /// Routes a signaling message from the authenticated `from` to the active node `to`,
    /// on whichever replica `to` is connected to.
    pub fn route_signal(&self, from: PeerId, to: PeerId, message: Signal) -> Result<Delivery> {
        let message = SignalRouter::check(from, to, message)?;
        let message = {
            let mut signals = self.signals();
            match signals.try_deliver(to, message) {
                None => return Ok(Delivery::Delivered),
                Some(message) if signals.is_online(to) => {
                    signals.queue(to, message);
                    return Ok(Delivery::Queued);
                }
                Some(message) => message,
            }
        };
        // Not connected here: the store (without this hub's lock held, it may block).
        if self.store.forward_signal(to, message.encode_to_vec())? {
            return Ok(Delivery::Forwarded);
        }
        self.signals().queue(to, message);
        Ok(Delivery::Queued)
    }

    /// Opens `node`'s signaling stream here: what waits for it on this replica and in the
    /// store comes first. Returns the stream's number, for [`SignalRouter::detach`].
    pub fn attach_signals(&self, node: PeerId) -> Result<(u64, mpsc::Receiver<Signal>)> {
        let attached = self.signals().attach(node);
        self.take_forwarded(Some(node))?;
        Ok(attached)
    }

    /// Takes the messages other replicas forwarded to `node` if it is connected here
    /// (`None`: to any node connected here), and hands them to its stream. The replica
    /// listener calls it for every announced message.
    pub fn take_forwarded(&self, node: Option<PeerId>) -> Result<()> {
        let nodes = match node {
            Some(node) => vec![node],
            None => self.signals().online(),
        };
        for node in nodes {
            if !self.signals().is_online(node) {
                continue;
            }
            for bytes in self.store.take_signals(node)? {
                let Ok(message) = Signal::decode(bytes.as_slice()) else {
                    tracing::warn!(%node, "undecodable forwarded signal dropped");
                    continue;
                };
                let left = {
                    let mut signals = self.signals();
                    match signals.try_deliver(node, message) {
                        None => None,
                        // Its buffer is full: it waits here, as a local message would.
                        Some(message) if signals.is_online(node) => {
                            signals.queue(node, message);
                            None
                        }
                        Some(message) => Some(message),
                    }
                };
                if let Some(message) = left {
                    // Gone meanwhile: back to the shared queue, for the replica it moved to.
                    self.store.forward_signal(node, message.encode_to_vec())?;
                }
            }
        }
        Ok(())
    }
}
