//! A throwaway PostgreSQL cluster for tests: Debian's `postgresql` binaries, a data dir and
//! a unix-socket dir inside one temp dir, no TCP listener at all, stopped and deleted on
//! drop (also when the test fails).
//!
//! `initdb` and `postgres` refuse to run as root, so as root the cluster belongs to
//! `nobody` (the temp dir is handed to it, and every PostgreSQL binary runs through
//! `setpriv`, which execs, so the process we hold *is* the postmaster). Without root they
//! run as the current user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// The database role every test connects as.
const USER: &str = "bauxite";

/// A running cluster.
pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    postmaster: Option<Child>,
    as_nobody: bool,
}

/// Debian's PostgreSQL binaries (the newest major installed), if any.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl PgCluster {
    /// Starts a new cluster, or prints `SKIPPED` and returns `None` when PostgreSQL is not
    /// installed (`scripts/setup.sh` installs it).
    pub(crate) fn start() -> Option<PgCluster> {
        let Some(bin) = bin_dir() else {
            eprintln!("SKIPPED: PostgreSQL is not installed (run scripts/setup.sh)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("bauxite-pg-")
            .tempdir()
            .unwrap();
        let as_nobody = is_root();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        if as_nobody {
            let ok = Command::new("chown")
                .args(["-R", "nobody:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster dir to nobody");
        }
        // The port only names the socket file (no TCP): still picked at run time.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = PgCluster {
            dir,
            bin,
            port,
            postmaster: None,
            as_nobody,
        };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(cluster.dir.path().join("postgres.log")).unwrap();
        let child = cluster
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(cluster.sock())
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        cluster.postmaster = Some(child);
        cluster.wait_ready();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// A PostgreSQL binary, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--reset-env",
            ])
            .arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let ready = self
                .command("pg_isready")
                .arg("-h")
                .arg(self.sock())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", USER, "-q"])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            if let Some(status) = self.postmaster.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < READY_WITHIN,
                "postgres not ready within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    #[allow(dead_code)] // not every test binary prints it
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A connection string for database `db` (see [`create_db`](Self::create_db)).
    pub(crate) fn url(&self, db: &str) -> String {
        format!(
            "host={} port={} user={USER} dbname={db}",
            self.sock().display(),
            self.port
        )
    }

    /// Creates an empty database; each test takes its own.
    pub(crate) fn create_db(&self, db: &str) -> String {
        let out = self
            .command("createdb")
            .arg("-h")
            .arg(self.sock())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", USER, db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(db)
    }

    /// The temp dir holding the cluster.
    #[allow(dead_code)] // not every test binary needs it
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        // Fast shutdown: clients are disconnected, the postmaster exits; then the temp dir goes.
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > READY_WITHIN {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
