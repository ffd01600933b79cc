//! The echo responder bound to [`ServicePort::ECHO`](crate::service::ServicePort::ECHO) on every node (robots and the hub).
//!
//! Invariant: a reply carries exactly the request's bytes, goes back to the port it came
//! from, and always travels on the Critical lane — a probe measures the path a control
//! loop's packets take, never the bulk queue. Replies that find the send queue full are
//! dropped (a late echo is a lost probe, not something to queue behind).

use crate::Lane;
use crate::error::ServiceError;
use crate::io::service::{IncomingBatch, ServiceSocket};

/// Answers every datagram received on `socket` until the shell stops; returns the
/// number of replies sent. Bind `socket` on [`ServicePort::ECHO`](crate::service::ServicePort::ECHO).
pub async fn serve(mut socket: ServiceSocket) -> u64 {
    let sender = socket.sender();
    let mut batch = IncomingBatch::new();
    let mut replied = 0u64;
    while socket.recv_batch(&mut batch).await.is_ok() {
        for datagram in batch.iter() {
            match sender.try_send_to(
                datagram.src_ip,
                datagram.src_port,
                Lane::Critical,
                datagram.payload,
            ) {
                Ok(()) => replied += 1,
                Err(ServiceError::Closed { .. }) => return replied,
                Err(_) => {}
            }
        }
    }
    replied
}
