//! `bauxite join`: provisions this node with a hub. The node identity is generated here and
//! its private keys never leave the machine; the hub signs a certificate for the public
//! keys and assigns the virtual IP.
//!
//! Invariant: nothing is written until the hub has accepted the token and the issued
//! certificate has been checked, so a refused join (reused, expired or forged token, a
//! hub whose CA does not match the token) leaves the state root as it was. And the hub is
//! not contacted before the state root is known to be writable: a file in its place, or a
//! directory this user cannot write, is refused first. Provisioning has two phases: the
//! hub registers the node as pending, `join` writes the credentials, then confirms with
//! the new certificate; a registration never confirmed (the node died, the disk failed)
//! expires at the hub and gives its address and token use back.
//!
//! Layout under the state root:
//!
//! | path | what |
//! |---|---|
//! | `identity/node.identity` (0600) | the node's Ed25519 + X25519 identity |
//! | `certs/ca.crt`, `certs/node.crt`, `certs/node.key` (0600) | mTLS with the hub |
//! | `config.toml` | `[state_root]`, `[transport]`, `[node]`, `[hub]` for `run` and `precheck` |
//! | `forge/tuf/root.json` (dir 0700) | the trusted TUF root for updates (see [`crate::update_agent::trust`]) |
//! | `trust/operator.keys` | with `--operator-key`: the pinned operator keys (the operator lock, [`crate::operator_lock`]) |

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bauxite_conduit::PeerId;
use bauxite_conduit::identity::Identity;
use bauxite_dispatch_api::client::{confirm, join};
use bauxite_dispatch_api::operator::NodeKeyFacts;
use bauxite_dispatch_api::token::JoinToken;

use crate::fsutil;
use crate::operator_cmd::{TRUST_FILE, collect_operator_keys, trust_file_text};
use crate::update_agent::trust::{self, RootOrigin, TrustError};

mod writable;
pub use writable::check_writable;

/// Where a joined node keeps its identity, relative to the state root.
pub const IDENTITY_FILE: &str = "identity/node.identity";
/// Where a joined node keeps its hub certificates, relative to the state root.
pub const CERTS_DIR: &str = "certs";
/// The config file `join` writes, relative to the state root.
pub const CONFIG_FILE: &str = "config.toml";

/// Why a join failed. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The token does not parse.
    #[error("invalid join token: {0}")]
    Token(String),
    /// The state root already holds a joined node.
    #[error(
        "{0} already holds a joined node; pass --force to replace its identity and certificates"
    )]
    AlreadyJoined(PathBuf),
    /// The hub refused, or could not be reached or trusted. The client's error is the
    /// whole message (not a source), so it is printed once.
    #[error("join failed: {0}")]
    Hub(bauxite_dispatch_api::Error),
    /// The hub's answer is unusable.
    #[error("join failed: {0}")]
    Answer(String),
    /// The state root cannot be written; the hub was not contacted.
    #[error(
        "cannot use {path} as the state root: {reason}; the hub was not contacted and the token is unspent"
    )]
    StateRoot {
        /// The offending path.
        path: PathBuf,
        /// What is wrong, with the fix.
        reason: String,
    },
    /// An operator key file is unreadable or holds no valid key.
    #[error("operator key: {0}; the hub was not contacted")]
    OperatorKey(crate::error::ToolError),
    /// The pinned update root is unreadable or not a valid TUF root.
    #[error(transparent)]
    UpdateRoot(#[from] TrustError),
    /// Writing the state root failed.
    #[error("could not write {path}: {reason}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// What `bauxite join` was asked.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The join token (`bx1.…`).
    pub token: String,
    /// The hub URL, `https://host:port`.
    pub hub_url: String,
    /// The state root (created 0700 if missing).
    pub state_root: PathBuf,
    /// This node's name in the mesh; empty lets the hub choose (the token's name).
    pub name: String,
    /// UDP listen address for `run`.
    pub listen: SocketAddr,
    /// The endpoint other nodes should dial, reported to the hub.
    pub advertise: Option<SocketAddr>,
    /// Control socket for `status` (default `/run/bauxite/control.sock`).
    pub control_socket: Option<PathBuf>,
    /// Replace an existing joined state root.
    pub force: bool,
    /// A TUF root for updates pinned out of band (wins over the hub's).
    pub update_root: Option<PathBuf>,
    /// Operator public key files to pin: turns the operator lock on.
    pub operator_keys: Vec<PathBuf>,
}

/// What a successful join produced.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The node's mesh ID.
    pub node_id: PeerId,
    /// Its name in the mesh, when the hub confirmed the registration.
    pub name: Option<String>,
    /// Why the confirmation did not reach the hub, if it did not: `run` confirms on its
    /// first connection, before [`confirm_by_unix`](Self::confirm_by_unix).
    pub unconfirmed: Option<String>,
    /// The hub's deadline for the confirmation (Unix seconds).
    pub confirm_by_unix: u64,
    /// Its address with the mesh prefix, e.g. `100.64.0.2/10`.
    pub virtual_ip: String,
    /// The config file written.
    pub config: PathBuf,
    /// The update root installed, and where it came from.
    pub update_root: Option<(PathBuf, RootOrigin)>,
    /// Why no update root was installed, when none was.
    pub update_root_warning: Option<String>,
    /// The pinned operator keys' file and how many keys it holds (the lock is on).
    pub operator_keys: Option<(PathBuf, usize)>,
    /// This node's key request (`bxkr1.…`) for the operator to sign.
    pub key_request: String,
}

impl From<bauxite_dispatch_api::Error> for JoinError {
    fn from(e: bauxite_dispatch_api::Error) -> Self {
        JoinError::Hub(e)
    }
}

fn write_error(path: &Path, reason: impl std::fmt::Display) -> JoinError {
    JoinError::Write {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The state root as an absolute path (relative paths are taken from the working
/// directory), without `.` components, since it is written into `config.toml`.
fn absolute_root(root: &Path) -> Result<PathBuf, JoinError> {
    let full = if root.is_absolute() {
        root.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(root))
            .map_err(|e| write_error(root, e))?
    };
    Ok(full
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect())
}

/// The prefix length of a CIDR such as `100.64.0.0/10`.
fn prefix_of(mesh_cidr: &str) -> Result<u8, JoinError> {
    mesh_cidr
        .split_once('/')
        .and_then(|(_, p)| p.parse::<u8>().ok())
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| JoinError::Answer(format!("hub sent an unusable mesh CIDR {mesh_cidr:?}")))
}

fn toml_string(value: &str) -> String {
    // serde_json's string escaping is valid TOML basic-string escaping.
    serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
}

/// The `config.toml` of a joined node.
pub fn render_config(
    root: &Path,
    options: &JoinOptions,
    node_id: PeerId,
    virtual_ip: &str,
) -> String {
    let path = |rel: &str| toml_string(&root.join(rel).display().to_string());
    let mut text = String::new();
    let name = if options.name.is_empty() {
        "named by the hub"
    } else {
        options.name.as_str()
    };
    let _ = writeln!(
        text,
        "# Written by `bauxite join` for node {node_id} ({name}).\n"
    );
    let _ = writeln!(
        text,
        "[state_root]\nroot = {}\n",
        toml_string(&root.display().to_string())
    );
    let _ = writeln!(
        text,
        "[transport]\ncert_file = {}\nkey_file = {}\nca_file = {}\n",
        path("certs/node.crt"),
        path("certs/node.key"),
        path("certs/ca.crt")
    );
    let _ = writeln!(
        text,
        "[node]\nidentity = {}\nlisten = {}\nvirtual_ip = {}",
        path(IDENTITY_FILE),
        toml_string(&options.listen.to_string()),
        toml_string(virtual_ip)
    );
    if let Some(socket) = &options.control_socket {
        let _ = writeln!(
            text,
            "control_socket = {}",
            toml_string(&socket.display().to_string())
        );
    }
    let _ = writeln!(
        text,
        "\n[hub]\nurl = {}\ncerts_dir = {}",
        toml_string(&options.hub_url),
        path(CERTS_DIR)
    );
    if let Some(advertise) = options.advertise {
        let _ = writeln!(text, "advertise = {}", toml_string(&advertise.to_string()));
    }
    if !options.operator_keys.is_empty() {
        let _ = writeln!(
            text,
            "# The operator lock: peers are accepted only with a key record signed by one of these keys.\noperator_keys = {}",
            path(TRUST_FILE)
        );
    }
    text
}

/// Joins the hub and writes the state root. See the module documentation.
pub async fn run(options: &JoinOptions) -> Result<Joined, JoinError> {
    let token =
        JoinToken::parse(options.token.trim()).map_err(|e| JoinError::Token(e.to_string()))?;
    let root = absolute_root(&options.state_root)?;
    let config_path = root.join(CONFIG_FILE);
    let identity_path = root.join(IDENTITY_FILE);
    let certs = root.join(CERTS_DIR);
    bauxite_dispatch_api::client::hub_addr(&options.hub_url)?;
    check_writable(&root)?;
    let joined_before =
        config_path.exists() || identity_path.exists() || certs.join("node.crt").exists();
    if joined_before && !options.force {
        return Err(JoinError::AlreadyJoined(root));
    }
    // A pinned root is checked before the hub is contacted, so a wrong file costs nothing.
    let pinned = match &options.update_root {
        Some(path) => {
            let bytes = trust::read_pinned(path)?;
            trust::check(&bytes, RootOrigin::Pinned)?;
            Some(bytes)
        }
        None => None,
    };
    let operator_keys = if options.operator_keys.is_empty() {
        Vec::new()
    } else {
        collect_operator_keys(&options.operator_keys).map_err(JoinError::OperatorKey)?
    };
    let identity = Identity::generate_os()
        .map_err(|e| JoinError::Answer(format!("cannot generate the node identity: {e}")))?;
    let result = join(&token, &options.hub_url, &identity, &options.name).await?;
    let virtual_ip = format!("{}/{}", result.virtual_ip, prefix_of(&result.mesh_cidr)?);
    // The pinned root wins; the hub's is used only if it verifies as a root.
    let (update_root, update_root_warning) = match (pinned, result.update_root.is_empty()) {
        (Some(bytes), _) => (Some((bytes, RootOrigin::Pinned)), None),
        (None, true) => (
            None,
            Some("the hub serves no update repository; this node accepts no update until a root is installed (`bauxite join --force --update-root FILE`)".to_owned()),
        ),
        (None, false) => match trust::check(&result.update_root, RootOrigin::Hub) {
            Ok(()) => (Some((result.update_root.clone(), RootOrigin::Hub)), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };

    // The hub accepted us: now, and only now, write the state root.
    create_private_dir(&root)?;
    identity
        .save(&identity_path)
        .map_err(|e| write_error(&identity_path, e))?;
    result
        .credentials
        .save(&certs)
        .map_err(|e| write_error(&certs, e))?;
    let text = render_config(&root, options, result.node_id, &virtual_ip);
    fsutil::write_atomic(&config_path, text.as_bytes(), 0o644)
        .map_err(|e| write_error(&config_path, e))?;
    let update_root = match update_root {
        Some((bytes, origin)) => Some((trust::install(&root, &bytes, origin)?, origin)),
        None => None,
    };
    let operator_keys = if operator_keys.is_empty() {
        None
    } else {
        let path = root.join(TRUST_FILE);
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        fsutil::write_atomic(&path, trust_file_text(&operator_keys).as_bytes(), 0o644)
            .map_err(|e| write_error(&path, e))?;
        Some((path, operator_keys.len()))
    };
    // Everything is durable (each file was fsynced): the second phase.
    let (name, unconfirmed) = match confirm(&options.hub_url, &result.credentials).await {
        Ok(name) => (Some(name), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Joined {
        node_id: result.node_id,
        name,
        unconfirmed,
        confirm_by_unix: result.confirm_by_unix,
        virtual_ip,
        config: config_path,
        update_root,
        update_root_warning,
        operator_keys,
        key_request: NodeKeyFacts {
            node_id: result.node_id,
            ed25519: identity.public().signing_public,
            x25519: identity.public().static_public,
            virtual_ip: result.virtual_ip,
        }
        .to_text(),
    })
}

fn create_private_dir(dir: &Path) -> Result<(), JoinError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| write_error(dir, e))
}

/// Runs [`run`] on a fresh current-thread runtime (the binary's entry point).
pub fn run_blocking(options: &JoinOptions) -> Result<Joined, JoinError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| write_error(Path::new("<tokio runtime>"), e))?;
    runtime.block_on(run(options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RunConfig};

    fn options(root: &Path) -> JoinOptions {
        JoinOptions {
            token: String::new(),
            hub_url: "https://10.0.0.1:7443".into(),
            state_root: root.to_path_buf(),
            name: "robot-7".into(),
            listen: "0.0.0.0:51820".parse().unwrap(),
            advertise: Some("10.0.0.2:51820".parse().unwrap()),
            control_socket: Some(root.join("control.sock")),
            force: false,
            update_root: None,
            operator_keys: Vec::new(),
        }
    }

    #[test]
    fn written_config_serves_run_and_precheck() {
        let root = Path::new("/var/lib/bauxite test \"quoted\"");
        let id = Identity::from_secrets([1; 32], [2; 32]).peer_id();
        let text = render_config(root, &options(root), id, "100.64.0.2/10");
        let path = Path::new("config.toml");
        let config = Config::parse(&text, path).unwrap();
        assert_eq!(config.state_root, root);
        assert_eq!(config.transport.ca_file, root.join("certs/ca.crt"));
        let run = RunConfig::parse(&text, path).unwrap();
        assert_eq!(run.identity, root.join(IDENTITY_FILE));
        assert_eq!(run.prefix, 10);
        assert!(run.peers.is_empty());
        let hub = run.hub.unwrap();
        assert_eq!(hub.url, "https://10.0.0.1:7443");
        assert_eq!(hub.certs_dir, root.join("certs"));
        assert_eq!(hub.advertise, Some("10.0.0.2:51820".parse().unwrap()));
        assert_eq!(hub.operator_keys, None);

        // With --operator-key, the lock's file is inside the state root.
        let mut locked = options(root);
        locked.operator_keys = vec![PathBuf::from("/tmp/operator.pub")];
        let text = render_config(root, &locked, id, "100.64.0.2/10");
        let hub = RunConfig::parse(&text, path).unwrap().hub.unwrap();
        assert_eq!(hub.operator_keys, Some(root.join(TRUST_FILE)));
        // A lock file outside the state root, or with `..`, is refused by name.
        for outside in [
            "/etc/operator.keys",
            "/var/lib/bauxite test \"quoted\"/../x",
        ] {
            let bad = text.replace(
                &toml_string(&root.join(TRUST_FILE).display().to_string()),
                &toml_string(outside),
            );
            let e = RunConfig::parse(&bad, path).unwrap_err();
            assert!(e.to_string().contains("hub.operator_keys"), "{e}");
        }
    }

    #[test]
    fn mesh_prefix_is_checked() {
        assert_eq!(prefix_of("100.64.0.0/10").unwrap(), 10);
        assert!(prefix_of("100.64.0.0").is_err());
        assert!(prefix_of("100.64.0.0/31").is_err());
    }

    #[test]
    fn bad_token_and_existing_state_root_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut o = options(&root);
        o.token = "bx1.nope".into();
        assert!(matches!(rt.block_on(run(&o)), Err(JoinError::Token(_))));
        assert!(!root.exists());

        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(CONFIG_FILE), "x").unwrap();
        let token = format!(
            "bx1.{}.{}.{}",
            "a".repeat(16),
            "b".repeat(64),
            "c".repeat(64)
        );
        o.token = token;
        let e = rt.block_on(run(&o)).unwrap_err();
        assert!(matches!(e, JoinError::AlreadyJoined(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(root.join(CONFIG_FILE)).unwrap(),
            "x"
        );
    }
}
