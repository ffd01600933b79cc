//! coturn (`turnserver`, Debian `coturn`) for the NAT laboratory: started in a namespace
//! on a UDP port chosen at run time, from a config file written to a temp directory
//! (`-c`; no default /etc config, no daemon, no syslog), with coturn's REST credentials
//! (`use-auth-secret`, the hub's secret). Killed on drop.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::natlab::{Host, NatLab};
use crate::support::wait_for;

/// A running `turnserver`.
pub(crate) struct Coturn {
    child: Child,
    /// Where it listens (UDP).
    pub(crate) addr: SocketAddr,
    /// The secret it shares with the hub (`static-auth-secret`).
    pub(crate) secret: String,
    dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts coturn in the laboratory's public namespace on `ip`.
    pub(crate) fn start(lab: &NatLab, ip: Ipv4Addr) -> Self {
        assert!(
            Command::new("turnserver")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "turnserver not found: install coturn (scripts/setup.sh)"
        );
        // A free port in the namespace, found by binding port 0 there.
        let port = lab.within(Host::Public, || {
            UdpSocket::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let dir = tempfile::tempdir().unwrap();
        let secret = format!("lab-secret-{}-{port}", std::process::id());
        let config = format!(
            "listening-ip={ip}\nlistening-port={port}\nrelay-ip={ip}\n\
             min-port=49152\nmax-port=65535\n\
             use-auth-secret\nstatic-auth-secret={secret}\nrealm=bauxite.test\n\
             no-tcp\nno-tls\nno-dtls\nno-tcp-relay\nno-cli\nno-multicast-peers\n\
             userdb={db}\npidfile={pid}\nlog-file={log}\nsimple-log\nno-stdout-log\n\
             verbose\n",
            db = dir.path().join("turndb").display(),
            pid = dir.path().join("turnserver.pid").display(),
            log = dir.path().join("turn.log").display(),
        );
        let conf = dir.path().join("turnserver.conf");
        fs::write(&conf, config).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", lab.ns(Host::Public), "turnserver", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let coturn = Self {
            child,
            addr: SocketAddr::from((ip, port)),
            secret,
            dir,
        };
        // Up when its port is taken in the namespace.
        wait_for(Duration::from_secs(10), "turnserver to listen", || {
            lab.within(Host::Public, || UdpSocket::bind(coturn.addr).is_err())
                .then_some(())
        });
        coturn
    }

    /// The file holding the shared secret, for the hub's `--turn-secret-file`.
    pub(crate) fn secret_file(&self) -> PathBuf {
        let path = self.dir.path().join("turn.secret");
        fs::write(&path, format!("{}\n", self.secret)).unwrap();
        path
    }

    /// The hub's `serve` arguments for this server.
    pub(crate) fn hub_args(&self) -> Vec<String> {
        vec![
            "--turn-url".into(),
            format!("turn:{}", self.addr),
            "--turn-secret-file".into(),
            self.secret_file().display().to_string(),
            "--turn-ttl".into(),
            "1h".into(),
        ]
    }

    /// Its log (files whose name starts with `turn`, coturn adds a date to the name).
    pub(crate) fn log(&self) -> String {
        let mut out = String::new();
        for entry in fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("turn") && name.ends_with(".log") {
                out.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        // Our own child, by its process ID (`ip netns exec` execs turnserver in place).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
