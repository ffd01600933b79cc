//! A minimal HTTP/1.1 endpoint for Prometheus: `GET /metrics`, one response per connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::hub::Hub;
use crate::mesh::MeshHandle;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, mesh: MeshHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hub = hub.clone();
        let mesh = mesh.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(stream, &hub, &mesh).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn respond(mut stream: TcpStream, hub: &Hub, mesh: &MeshHandle) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    let mut len = 0;
    // Read until the end of the request head (or a full buffer: we only need the first line).
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf[len..]))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = buf[..len].split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ") {
        let mut body = hub.metrics().render(hub.robots_active());
        body.push_str(&crate::metrics::render_updates(&hub.update_view()));
        body.push_str(&crate::metrics::render_forge(&mesh.server_counters()));
        // The hub's mesh node: per-lane counters show update chunks leave on Bulk only.
        body.push_str(
            &mesh
                .metrics()
                .render_prometheus(&mesh.record.id.to_string()),
        );
        ("200 OK", body)
    } else {
        ("404 Not Found", "try GET /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
