//! The node's TURN side: the hub's time-limited credentials in, one allocation out
//! ([`TurnClient`]), its relayed address published to the hub as a `relay` candidate.
//!
//! Invariant: at most one allocation lives at a time, made with the newest credentials;
//! new credentials (the hub connector asks again before they expire) replace it, and the
//! relayed address published is always the live allocation's (`None` between two).
//! The password is never logged.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bauxite_conduit::io::turn::{TurnClient, TurnEnd, TurnRelayPort, TurnServer};
use tokio::sync::watch;

/// How long one allocation attempt may take.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait before trying the servers again after every one failed.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The hub connector's handles on the TURN task.
#[derive(Debug)]
pub struct TurnLink {
    /// `[[turn]]` servers from the node's config, tried after the hub's.
    pub configured: Vec<TurnServer>,
    /// The servers to allocate on, with their credentials (empty: none).
    pub servers: watch::Sender<Vec<TurnServer>>,
    /// The live allocation's relayed address.
    pub relayed: watch::Receiver<Option<SocketAddr>>,
    /// The peers' candidate addresses, whose IPs the allocation holds permissions for.
    pub permits: watch::Sender<Vec<SocketAddr>>,
}

/// Starts the TURN task on the shell's TURN port with the `configured` servers; it idles
/// until there are servers (configured ones, or the hub's).
pub fn start(port: TurnRelayPort, configured: Vec<TurnServer>) -> TurnLink {
    let (servers_tx, servers_rx) = watch::channel(configured.clone());
    let (relayed_tx, relayed_rx) = watch::channel(None);
    let (permits_tx, permits_rx) = watch::channel(Vec::new());
    tokio::spawn(run(port, servers_rx, permits_rx, relayed_tx));
    TurnLink {
        configured,
        servers: servers_tx,
        relayed: relayed_rx,
        permits: permits_tx,
    }
}

/// The `[[turn]]` servers of the config, with their passwords read from their files
/// (an unreadable file or an unresolvable name is logged and the entry skipped).
pub async fn configured(entries: &[crate::config::StaticTurn]) -> Vec<TurnServer> {
    let mut out = Vec::new();
    for entry in entries {
        let password = match std::fs::read_to_string(&entry.password_file) {
            Ok(text) => text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_owned(),
            Err(error) => {
                tracing::warn!(file = %entry.password_file.display(), %error, "TURN password file unreadable; server skipped");
                continue;
            }
        };
        out.extend(servers(std::slice::from_ref(&entry.url), &entry.username, &password).await);
    }
    out
}

/// `turn:host:port` URLs with one set of credentials, as [`TurnServer`]s (resolved;
/// unusable URLs are logged and skipped).
pub async fn servers(urls: &[String], username: &str, password: &str) -> Vec<TurnServer> {
    let mut out = Vec::new();
    for url in urls {
        let Some(host) = url
            .strip_prefix("turn:")
            .map(|h| h.strip_suffix("?transport=udp").unwrap_or(h))
        else {
            tracing::warn!(%url, "not a turn: URL; skipped");
            continue;
        };
        match tokio::net::lookup_host(host).await.map(|mut a| a.next()) {
            Ok(Some(addr)) => out.push(TurnServer {
                addr,
                username: username.to_owned(),
                password: password.to_owned(),
                realm: String::new(),
            }),
            Ok(None) | Err(_) => tracing::warn!(%url, "TURN server name does not resolve; skipped"),
        }
    }
    out
}

async fn run(
    mut port: TurnRelayPort,
    mut servers: watch::Receiver<Vec<TurnServer>>,
    permits: watch::Receiver<Vec<SocketAddr>>,
    relayed: watch::Sender<Option<SocketAddr>>,
) {
    loop {
        let list = servers.borrow_and_update().clone();
        let mut client = None;
        for server in &list {
            let bind = SocketAddr::new(
                if server.addr.is_ipv4() {
                    IpAddr::from([0, 0, 0, 0])
                } else {
                    IpAddr::from([0u16; 8])
                },
                0,
            );
            match TurnClient::allocate(server, bind, ALLOCATE_TIMEOUT).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(error) => tracing::warn!(%error, "TURN allocation failed"),
            }
        }
        let Some(client) = client else {
            // No server, or none answered: wait for new credentials, or retry.
            let wait = if list.is_empty() {
                None
            } else {
                Some(RETRY_AFTER)
            };
            let changed = match wait {
                None => servers.changed().await.is_ok(),
                Some(after) => tokio::time::timeout(after, servers.changed())
                    .await
                    .map_or(true, |r| r.is_ok()),
            };
            if !changed {
                return;
            }
            continue;
        };
        let addr = client.relayed_addr();
        tracing::info!(relayed = %addr, "TURN allocation ready");
        relayed.send_replace(Some(addr));
        let mut renewed = servers.clone();
        let end = client
            .run(&mut port, permits.clone(), async move {
                let _ = renewed.changed().await;
            })
            .await;
        relayed.send_replace(None);
        if end == TurnEnd::ShellGone || servers.has_changed().is_err() {
            return;
        }
    }
}
