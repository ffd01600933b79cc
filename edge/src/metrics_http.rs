//! The optional Prometheus endpoint: `GET /metrics` on `node.metrics_listen` returns the
//! node's counters and which controller paces bulk (`bauxite_bulk_pacing*`) as text, and
//! the update agent's state, progress and probe round trips (`bauxite_update_*`) when it
//! runs, and the ROS 2 discovery server's gauges
//! (`ros_discovery_port`, `ros_discovery_status`) when `[ros.server]` runs one, the lane
//! classifier's state, and the operator lock's refusals (`bauxite_operator_*`) when the lock
//! is on; anything else gets 404.
//!
//! Invariant: a scrape reads atomic counters and a copy of the update status only — it
//! never waits for the data-plane loop, so a slow or hostile client cannot delay packets. Requests are bounded (8 KiB
//! head, 5 s) so a client that never finishes cannot pin memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::Metrics;
use bauxite_conduit::offload::DataPlaneOffload;

use crate::operator_lock::LockReport;
use crate::ros_cmd::RosGauges;
use crate::update_agent::SharedStatus;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MAX_HEAD: usize = 8192;

/// Binds the metrics listener; the error names the address and the config key.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on node.metrics_listen {addr}: {e}; pick a free local port"),
        )
    })
}

/// What a scrape reports besides the data plane's counters; each part is optional because
/// each runs only when configured.
#[derive(Clone, Default)]
pub struct Sources {
    /// The update agent's status.
    pub updates: Option<Arc<SharedStatus>>,
    /// The ROS 2 discovery server's gauges.
    pub ros: Option<RosGauges>,
    /// The lane classifier.
    pub offload: Option<Arc<dyn DataPlaneOffload>>,
    /// The operator lock's report (`None` inside while the lock is off).
    pub operator_lock: Option<watch::Receiver<Option<LockReport>>>,
}

/// Serves scrapes forever; `node` labels every series.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, node: String, sources: Sources) {
    let node: Arc<str> = node.into();
    let sources = Arc::new(sources);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, node, sources) = (
            Arc::clone(&metrics),
            Arc::clone(&node),
            Arc::clone(&sources),
        );
        tokio::spawn(async move {
            let served = tokio::time::timeout(
                Duration::from_secs(5),
                scrape(stream, &metrics, &node, &sources),
            )
            .await;
            if let Ok(Err(error)) = served {
                tracing::debug!(%error, "metrics request failed");
            }
        });
    }
}

async fn scrape(
    mut stream: TcpStream,
    metrics: &Metrics,
    node: &str,
    sources: &Sources,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") {
        let mut body = metrics.render_prometheus(node);
        if let Some(u) = &sources.updates {
            body.push_str(&u.get().render_prometheus(node));
        }
        if let Some(ros) = &sources.ros {
            body.push_str(&ros.render_prometheus(node));
        }
        if let Some(offload) = &sources.offload {
            body.push_str(&crate::offload::render_prometheus(offload.as_ref(), node));
        }
        if let Some(lock) = sources
            .operator_lock
            .as_ref()
            .and_then(|l| l.borrow().clone())
        {
            body.push_str(&lock.render_prometheus(node));
        }
        ("200 OK", body)
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update_agent::{Phase, UpdateStatus};

    #[tokio::test]
    async fn a_scrape_has_the_node_counters_and_the_update_gauges() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut status = UpdateStatus::disabled("");
        status.phase = Phase::Transferring;
        status.state = Some("PENDING_VALIDATION".into());
        status.target_version = Some("2.0.0".into());
        let shared = Arc::new(SharedStatus::new(status));
        let (_ros_tx, ros) = tokio::sync::watch::channel(bauxite_citadel::SupervisorStatus {
            phase: bauxite_citadel::Phase::Failed,
            restarts: 5,
            last_exit: Some("exit code 1".into()),
            failure: Some("5 crashes".into()),
        });
        let lock = bauxite_dispatch_api::operator::OperatorLock::new(vec![[7u8; 32]]);
        let mut report = LockReport::new(&lock);
        report.refusals_total = 3;
        report.refused.push(crate::operator_lock::RefusedPeer {
            id: "ab".into(),
            name: "rogue".into(),
            virtual_ip: "100.64.0.9".into(),
            code: "unsigned".into(),
            reason: "no operator signature".into(),
        });
        let (_lock_tx, operator_lock) = watch::channel(Some(report));
        let task = tokio::spawn(serve(
            listener,
            Arc::new(Metrics::default()),
            "n1".into(),
            Sources {
                updates: Some(Arc::clone(&shared)),
                ros: Some(RosGauges {
                    port: 11811,
                    server_id: 0,
                    status: ros,
                }),
                offload: Some(Arc::new(bauxite_conduit::offload::UserspaceOnly::new(
                    "test",
                ))),
                operator_lock: Some(operator_lock),
            },
        ));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            body
        };
        let body = get("/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("bauxite_tx_packets_total{node=\"n1\"} 0"),
            "{body}"
        );
        assert!(
            body.contains(
                "bauxite_update_info{node=\"n1\",phase=\"transferring\",state=\"PENDING_VALIDATION\",active=\"\",target=\"2.0.0\"} 1"
            ),
            "{body}"
        );
        assert!(
            body.contains("bauxite_update_state_code{node=\"n1\"} 0"),
            "{body}"
        );
        assert!(
            body.contains("ros_discovery_port{node=\"n1\"} 11811\n"),
            "{body}"
        );
        assert!(
            body.contains("ros_discovery_status{node=\"n1\",phase=\"failed\"} 3\n"),
            "{body}"
        );
        assert!(
            body.contains("bauxite_lane_classifier{node=\"n1\",classifier=\"userspace\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("bauxite_operator_refused_peers{node=\"n1\"} 1\n"),
            "{body}"
        );
        assert!(
            body.contains("bauxite_operator_refusals_total{node=\"n1\"} 3\n"),
            "{body}"
        );
        shared.update(|s| s.state = Some("COMMITTED".into()));
        assert!(get("/metrics").await.contains("state=\"COMMITTED\""));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
