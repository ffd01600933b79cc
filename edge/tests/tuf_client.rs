//! `bauxite update tuf-client` as a real process against a real repository (signed by
//! `bauxite-forge`'s repository API) served over HTTP on loopback: the conformance-suite
//! contract (init, refresh, download; exit 0 / 1), stored metadata bytes, and refusal of
//! a tampered target with nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use bauxite_forge::tuf::TopRole;
use bauxite_forge::tuf::repo::{RepoOptions, Repository, RoleKey, RoleSpec, Signers};

const BIN: &str = env!("CARGO_BIN_EXE_bauxite");

/// A minimal HTTP/1.0 file server for one directory; stops when dropped.
struct FileServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(&root, stream);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, sub: &str) -> String {
        format!("http://{}/{sub}", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(root: &Path, mut stream: TcpStream) {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain the headers.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let decoded = path.replace("%2F", "/");
    let file = root.join(path);
    let body = if path.split('/').any(|s| s == "..") || decoded.contains("..") {
        None
    } else {
        std::fs::read(file).ok()
    };
    let _ = match body {
        Some(b) => stream
            .write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes())
            .and_then(|_| stream.write_all(&b)),
        None => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    };
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("update")
        .arg("tuf-client")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn init_refresh_download_and_refuse_a_tampered_target() {
    let repo_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let keys: Vec<RoleKey> = (1..=4u8).map(|n| RoleKey::from_seed([n; 32])).collect();
    let specs: BTreeMap<TopRole, RoleSpec> = TopRole::ALL
        .iter()
        .zip(&keys)
        .map(|(r, k)| {
            (
                *r,
                RoleSpec {
                    keys: vec![k.public()],
                    threshold: 1,
                },
            )
        })
        .collect();
    // Metadata expires relative to the real clock: the binary reads it.
    #[allow(clippy::disallowed_methods)]
    let now = jiff::Timestamp::try_from(std::time::SystemTime::now()).unwrap();
    let mut repo =
        Repository::create(repo_dir.path(), RepoOptions::default(), &specs, now).unwrap();
    repo.add_target("targets", "fw/robot/image.bin", b"signed firmware", None)
        .unwrap();
    let mut signers = Signers::new();
    for (r, k) in TopRole::ALL.iter().zip(&keys) {
        signers.add(r.name(), k);
    }
    repo.publish(&signers, now).unwrap();
    let server = FileServer::start(repo_dir.path().to_path_buf());

    let meta = client_dir.path().join("metadata");
    let targets = client_dir.path().join("targets");
    let (meta_s, targets_s) = (meta.to_str().unwrap(), targets.to_str().unwrap());
    let root = repo_dir.path().join("metadata/1.root.json");
    let init = run(&["--metadata-dir", meta_s, "init", root.to_str().unwrap()]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let refresh = run(&[
        "--metadata-url",
        &server.url("metadata/"),
        "--metadata-dir",
        meta_s,
        "refresh",
    ]);
    assert!(
        refresh.status.success(),
        "{}",
        String::from_utf8_lossy(&refresh.stderr)
    );
    for role in ["root", "timestamp", "snapshot", "targets"] {
        assert!(meta.join(format!("{role}.json")).exists(), "{role}");
    }
    assert_eq!(
        std::fs::read(meta.join("timestamp.json")).unwrap(),
        std::fs::read(repo_dir.path().join("metadata/timestamp.json")).unwrap()
    );

    let download = |name: &str| {
        run(&[
            "--metadata-url",
            &server.url("metadata/"),
            "--metadata-dir",
            meta_s,
            "--target-name",
            name,
            "--target-base-url",
            &server.url("targets/"),
            "--target-dir",
            targets_s,
            "download",
        ])
    };
    let ok = download("fw/robot/image.bin");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stored = targets.join("fw%2Frobot%2Fimage.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), b"signed firmware");

    // Tamper with the served content of a second target: refused, exit 1, nothing written.
    repo.add_target("targets", "other.bin", b"genuine other", None)
        .unwrap();
    repo.publish(&signers, now).unwrap();
    let served = std::fs::read_dir(repo_dir.path().join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".other.bin"))
        .unwrap();
    std::fs::write(&served, b"evil!!! other").unwrap();
    let bad = download("other.bin");
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("hash does not match"));
    let mut files: Vec<_> = std::fs::read_dir(&targets)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert_eq!(files, ["fw%2Frobot%2Fimage.bin"]);

    let missing = download("not/listed");
    assert_eq!(missing.status.code(), Some(1));
}
