//! Starting and stopping external programs behind [`ProcessSpawner`].
//!
//! Invariant: a child started by [`TokioSpawner`] never outlives the node that started it.
//! It runs in its own process group (so a signal reaches everything it forks, and a
//! Ctrl-C at the node's terminal does not reach it behind the supervisor's back), it gets
//! `SIGKILL` from the kernel when the spawning thread dies (`PR_SET_PDEATHSIG`, which also
//! covers a node killed with `kill -9`), and dropping its handle kills the group.
//! Its environment is exactly [`SpawnSpec::env`]: nothing leaks in from the node's.
//!
//! The parent-death signal fires when the *thread* that spawned the child ends, not the
//! process: spawn from a thread that lives as long as the node (`bauxite run` runs one
//! current-thread runtime on its main thread; a multi-thread runtime's workers also live
//! as long as the runtime).

mod mock;

pub use mock::{MockChild, MockSpawner};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;

use rustix::process::Pid;

use crate::Error;

/// What to start: program, arguments and the complete environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnSpec {
    /// The program (an absolute path, or a name looked up on `PATH` in `env`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its whole environment (the node's own is not inherited).
    pub env: BTreeMap<OsString, OsString>,
    /// Its working directory (`None`: the node's).
    pub cwd: Option<PathBuf>,
    /// The Debian package that provides `program`, named when it cannot be started.
    pub package: &'static str,
}

/// Signals a supervisor sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `SIGTERM`: stop cleanly.
    Terminate,
    /// `SIGINT`: what the Fast DDS tools wait for at a terminal.
    Interrupt,
    /// `SIGKILL`: stop now.
    Kill,
}

impl Signal {
    fn to_rustix(self) -> rustix::process::Signal {
        match self {
            Signal::Terminate => rustix::process::Signal::TERM,
            Signal::Interrupt => rustix::process::Signal::INT,
            Signal::Kill => rustix::process::Signal::KILL,
        }
    }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

impl Exit {
    /// An exit with `code`.
    pub fn code(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
        }
    }

    /// Death by signal number `signal`.
    pub fn signal(signal: i32) -> Self {
        Self {
            code: None,
            signal: Some(signal),
        }
    }
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(9)) => f.write_str("killed by SIGKILL"),
            (None, Some(15)) => f.write_str("killed by SIGTERM"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// A running child.
pub trait ChildProcess: Send + 'static {
    /// Its process ID.
    fn pid(&self) -> u32;
    /// Resolves when it ends. Cancel-safe: dropping the future and calling again is fine.
    fn wait(&mut self) -> impl Future<Output = Result<Exit, Error>> + Send;
    /// Sends `signal` to its process group.
    fn signal(&mut self, signal: Signal) -> Result<(), Error>;
    /// Kills its process group with `SIGKILL`.
    fn kill(&mut self) -> Result<(), Error> {
        self.signal(Signal::Kill)
    }
}

/// Starts children.
pub trait ProcessSpawner: Send + Sync + 'static {
    /// The handle of a started child.
    type Child: ChildProcess;
    /// Starts `spec`.
    fn spawn(&self, spec: &SpawnSpec) -> Result<Self::Child, Error>;
}

/// The real spawner: tokio processes, see the module docs for the guarantees.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSpawner;

/// A child started by [`TokioSpawner`]; dropping it kills its process group.
#[derive(Debug)]
pub struct TokioChild {
    child: tokio::process::Child,
    pid: u32,
    reaped: bool,
}

impl ProcessSpawner for TokioSpawner {
    type Child = TokioChild;

    fn spawn(&self, spec: &SpawnSpec) -> Result<TokioChild, Error> {
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        set_death_signal(&mut command);
        let child = command.spawn().map_err(|source| Error::Spawn {
            program: spec.program.clone(),
            package: spec.package,
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        Ok(TokioChild {
            child,
            pid,
            reaped: false,
        })
    }
}

/// Asks the kernel to `SIGKILL` the child when the thread that spawned it dies.
#[allow(unsafe_code)]
fn set_death_signal(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs between fork and exec; prctl(PR_SET_PDEATHSIG) is a single
    // async-signal-safe system call that neither allocates nor touches the parent's locks.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

impl ChildProcess for TokioChild {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait(&mut self) -> Result<Exit, Error> {
        let status = self.child.wait().await.map_err(|source| Error::Process {
            pid: self.pid,
            action: "wait",
            source,
        })?;
        self.reaped = true;
        Ok(status.into())
    }

    fn signal(&mut self, signal: Signal) -> Result<(), Error> {
        if self.reaped {
            return Ok(());
        }
        let group = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| Error::Process {
                pid: self.pid,
                action: "signal",
                source: std::io::ErrorKind::InvalidInput.into(),
            })?;
        match rustix::process::kill_process_group(group, signal.to_rustix()) {
            // Already gone (and not yet reaped): nothing left to signal.
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::Process {
                pid: self.pid,
                action: "signal",
                source: e.into(),
            }),
        }
    }
}

impl Drop for TokioChild {
    fn drop(&mut self) {
        // kill_on_drop reaches the leader only; the group may hold what it forked.
        let _ = self.signal(Signal::Kill);
    }
}
