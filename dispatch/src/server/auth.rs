//! Who is calling: read from the verified client certificate on every call.

use std::sync::atomic::Ordering;

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::Refusal;
use tonic::{Request, Status};

use super::tls::ConnInfo;
use crate::hub::{Caller, Hub};

/// The authenticated caller, node or admin; refuses missing, unknown and revoked certificates.
pub(crate) fn caller<T>(hub: &Hub, request: &Request<T>) -> Result<Caller, Status> {
    let cert = request
        .extensions()
        .get::<ConnInfo>()
        .and_then(|info| info.client_cert.as_deref());
    hub.authorize(cert.map(Vec::as_slice)).map_err(|e| {
        hub.metrics().calls_refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(error = %e, "call refused");
        Status::from(e)
    })
}

/// The calling node; refuses the admin certificate for node-only calls.
pub(crate) fn node<T>(hub: &Hub, request: &Request<T>) -> Result<PeerId, Status> {
    match caller(hub, request)? {
        Caller::Node(id) => Ok(id),
        Caller::Admin | Caller::AdminUi => {
            Err(Refusal::NodesOnly.to_status("this call is for nodes, not the admin certificate"))
        }
    }
}

/// Requires the admin certificate.
pub(crate) fn admin<T>(hub: &Hub, request: &Request<T>) -> Result<Caller, Status> {
    match caller(hub, request)? {
        caller @ (Caller::Admin | Caller::AdminUi) => Ok(caller),
        Caller::Node(id) => {
            Err(Refusal::AdminOnly
                .to_status(format!("node {id} is not allowed to run admin commands")))
        }
    }
}
