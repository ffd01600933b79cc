//! A real hub process on 127.0.0.1 with a port picked at run time, and helpers around it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bauxite_conduit::identity::Identity;
use bauxite_dispatch_api::client::{HubClient, JoinResult, confirm, join};
use bauxite_dispatch_api::token::JoinToken;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_bauxite-dispatch");
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) struct HubProc {
    child: Child,
    pub(crate) dir: PathBuf,
    pub(crate) addr: String,
    pub(crate) metrics: String,
    /// The hub's mesh node: virtual IP and UDP address.
    pub(crate) mesh: (String, String),
    /// The admin web UI's base URL, when started with `--admin-ui-listen`.
    pub(crate) admin_ui: Option<String>,
}

impl HubProc {
    /// Starts `bauxite-dispatch serve` on `dir` and waits until it printed its addresses.
    pub(crate) fn start(dir: &Path) -> HubProc {
        Self::start_with(dir, &[])
    }

    /// [`start`](Self::start) with more `serve` options.
    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> HubProc {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .unwrap();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut metrics, mut mesh, mut admin_ui) = (None, None, None, None);
        while addr.is_none() || metrics.is_none() || mesh.is_none() {
            let line = match rx.recv_timeout(DEADLINE) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let log =
                        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                    panic!("hub did not start; log:\n{log}");
                }
            };
            if let Some(a) = line.strip_prefix("bauxite-dispatch listening on ") {
                addr = Some(a.to_owned());
            }
            // "mesh node 100.64.0.1 (<id>) on udp 127.0.0.1:PORT"
            if let Some(m) = line.strip_prefix("mesh node ") {
                let vip = m.split(' ').next().unwrap().to_owned();
                let udp = m.rsplit(' ').next().unwrap().to_owned();
                mesh = Some((vip, udp));
            }
            if let Some(ui) = line.strip_prefix("admin UI on ") {
                admin_ui = Some(ui.trim_end_matches('/').to_owned());
            }
            if let Some(m) = line.strip_prefix("metrics on ") {
                metrics = Some(
                    m.trim_start_matches("http://")
                        .trim_end_matches("/metrics")
                        .to_owned(),
                );
            }
        }
        HubProc {
            child,
            dir: dir.to_path_buf(),
            addr: format!("https://{}", addr.unwrap()),
            metrics: metrics.unwrap(),
            mesh: mesh.unwrap(),
            admin_ui,
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub(crate) fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "hub exited with {status}");
                return;
            }
            assert!(start.elapsed() < DEADLINE, "hub did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM without waiting.
    pub(crate) fn signal_term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded by `limit`) for the hub to exit; returns its status.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "hub did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The hub's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Runs an admin command against this hub.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// `token create` with extra args; returns the token and its expiry (unix seconds),
    /// read from the RFC 3339 date on stderr.
    pub(crate) fn token(&self, extra: &[&str]) -> (JoinToken, u64) {
        let mut args = vec!["token", "create"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let date = stderr.rsplit("expires ").next().unwrap().trim();
        let expires =
            time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("expiry {date:?} is not RFC 3339: {e}"))
                .unix_timestamp()
                .try_into()
                .unwrap();
        (JoinToken::parse(text.trim()).unwrap(), expires)
    }

    pub(crate) fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Both phases of provisioning, as `bauxite join` does them: register, then confirm.
    pub(crate) async fn join(
        &self,
        token: &JoinToken,
        seed: u8,
    ) -> bauxite_dispatch_api::Result<JoinResult> {
        let joined = self.register(token, seed).await?;
        confirm(&self.addr, &joined.credentials).await?;
        Ok(joined)
    }

    /// Only the first phase: the node is pending until it confirms.
    pub(crate) async fn register(
        &self,
        token: &JoinToken,
        seed: u8,
    ) -> bauxite_dispatch_api::Result<JoinResult> {
        join(token, &self.addr, &identity(seed), &format!("robot-{seed}")).await
    }

    pub(crate) async fn node(&self, seed: u8) -> (JoinResult, HubClient) {
        let (token, _) = self.token(&[]);
        let joined = self.join(&token, seed).await.unwrap();
        let client = HubClient::connect_mtls(&self.addr, &joined.credentials)
            .await
            .unwrap();
        (joined, client)
    }

    /// GET /metrics over plain TCP.
    pub(crate) fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the hub saw (its log is a file in a temp dir that
        // is deleted with the test).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- hub log, last {} lines ---", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A deterministic identity per seed.
pub(crate) fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed.wrapping_add(128); 32])
}

/// Awaits `f` with the test deadline.
pub(crate) async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("deadline passed")
}

/// A topology stream without a held version: the full snapshot first, as a fresh
/// subscriber gets it.
pub(crate) async fn full_feed(
    client: &HubClient,
) -> tonic::Streaming<bauxite_dispatch_api::proto::node::TopologySnapshot> {
    client
        .topology()
        .stream_topology(bauxite_dispatch_api::proto::node::TopologyRequest::default())
        .await
        .unwrap()
        .into_inner()
}
