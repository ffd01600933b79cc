//! A gRPC channel over our own TLS configuration (tonic's TLS cannot pin a CA hash).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::tls::server_name;
use crate::{Error, Result};

/// Connection establishment limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `host:port` from `https://host:port`, `http://host:port/` or `host:port`.
pub fn hub_addr(hub: &str) -> Result<String> {
    let rest = hub
        .strip_prefix("https://")
        .or_else(|| hub.strip_prefix("http://"))
        .unwrap_or(hub)
        .trim_end_matches('/');
    if rest.is_empty() || !rest.contains(':') || rest.contains('/') {
        return Err(Error::InvalidArgument {
            field: "hub URL",
            problem: format!("{hub:?} is not of the form https://host:port"),
        });
    }
    Ok(rest.to_owned())
}

/// Every message in an error's source chain, joined.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Connects to the hub with `tls`, eagerly (errors surface here, not on the first call).
pub async fn connect(hub: &str, tls: Arc<ClientConfig>) -> Result<Channel> {
    let addr = hub_addr(hub)?;
    let name = server_name()?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::InvalidArgument {
            field: "hub URL",
            problem: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    let dial = addr.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let (tls, dial, name) = (tls.clone(), dial.clone(), name.clone());
        async move {
            let tcp = TcpStream::connect(&dial).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| Error::Connect {
            addr,
            reason: chain(&e),
        })
}
