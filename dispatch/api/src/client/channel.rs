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

/// `host:port` from `https://host:port` (a trailing `/` is allowed).
///
/// The hub speaks only TLS, so `http://` and a URL without a scheme are refused with the
/// fix rather than quietly dialled with TLS anyway: what the operator wrote and what the
/// node does must agree.
pub fn hub_addr(hub: &str) -> Result<String> {
    let bad = |problem: String| Error::InvalidArgument {
        field: "hub URL",
        problem,
    };
    let hub = hub.trim();
    let Some(rest) = hub.strip_prefix("https://") else {
        let rest = hub.strip_prefix("http://").unwrap_or(hub);
        return Err(bad(format!(
            "{hub:?} is not an https:// URL; the hub speaks only TLS: use https://{}",
            rest.trim_end_matches('/')
        )));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok || rest.contains('/') {
        return Err(bad(format!(
            "{hub:?} is not of the form https://host:port, e.g. https://hub.example:7443"
        )));
    }
    Ok(rest.to_owned())
}

/// The innermost message of an error's source chain: the one cause worth showing
/// (tonic's "transport error" wrappers add words, not facts).
pub(crate) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
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
            reason: root_cause(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_port_are_accepted() {
        assert_eq!(
            hub_addr("https://hub.example:7443").unwrap(),
            "hub.example:7443"
        );
        assert_eq!(hub_addr("https://10.0.0.1:7443/").unwrap(), "10.0.0.1:7443");
        assert_eq!(hub_addr(" https://[::1]:7443 ").unwrap(), "[::1]:7443");
        for (bad, fix) in [
            ("http://hub.example:7443", "use https://hub.example:7443"),
            ("hub.example:7443", "use https://hub.example:7443"),
            ("https://hub.example", "https://host:port"),
            ("https://hub.example:7443/x", "https://host:port"),
            ("https://:7443", "https://host:port"),
            ("https://hub.example:99999", "https://host:port"),
        ] {
            let e = hub_addr(bad).unwrap_err().to_string();
            assert!(e.contains(fix), "{bad}: {e}");
        }
    }

    #[test]
    fn root_cause_is_the_innermost_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("Connection refused (os error 111)"));
        assert_eq!(root_cause(&e), "Connection refused (os error 111)");
    }
}
