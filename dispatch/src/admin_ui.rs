//! The admin web UI: an HTTP shell (axum, server-side minijinja templates, no JavaScript)
//! over the [`Hub`]'s own methods, served on its own loopback listener
//! (`serve --admin-ui-listen`).
//!
//! It decides nothing the gRPC admin API does not: tokens, policy and the audit log go
//! through the same [`Hub`] calls, audited with the actor `admin:web-ui`. Plain HTTP on
//! loopback only: the hub's certificate chains to its private CA, which browsers do not
//! trust, so remote operators reach the UI through an SSH tunnel rather than a TLS
//! exception. Security model: docs/hub.md, "Admin web UI".
//!
//! Logic with time and randomness injected: [`session`] (sessions, CSRF, login limit),
//! [`password`] (argon2) and [`views`] (what each page shows); [`pages`] is the shell.

pub mod pages;
pub mod password;
pub mod rollouts;
pub mod session;
pub mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use minijinja::Environment;
use tokio::net::TcpListener;

use crate::hub::Hub;
use crate::{Error, Result};

/// The UI's shared state: the hub, the password hash, sessions and templates.
pub struct AdminUi {
    hub: Arc<Hub>,
    phc: Arc<str>,
    sessions: Mutex<session::Sessions>,
    limiter: Mutex<session::LoginLimiter>,
    templates: Environment<'static>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn templates() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    // `.html` names turn on HTML auto-escaping: node labels and policy text are untrusted.
    for (name, text) in [
        ("base.html", include_str!("admin_ui/templates/base.html")),
        ("login.html", include_str!("admin_ui/templates/login.html")),
        ("nodes.html", include_str!("admin_ui/templates/nodes.html")),
        (
            "topology.html",
            include_str!("admin_ui/templates/topology.html"),
        ),
        (
            "tokens.html",
            include_str!("admin_ui/templates/tokens.html"),
        ),
        (
            "policy.html",
            include_str!("admin_ui/templates/policy.html"),
        ),
        ("audit.html", include_str!("admin_ui/templates/audit.html")),
        (
            "rollouts.html",
            include_str!("admin_ui/templates/rollouts.html"),
        ),
        (
            "message.html",
            include_str!("admin_ui/templates/message.html"),
        ),
    ] {
        env.add_template(name, text)
            .map_err(|e| Error::InvalidArgument {
                field: "admin UI template",
                problem: format!("{name}: {e}"),
            })?;
    }
    Ok(env)
}

impl AdminUi {
    /// The UI for `hub`, accepting the password whose argon2 PHC hash is `phc`
    /// ([`password::load`]).
    pub fn new(hub: Arc<Hub>, phc: &str) -> Result<Self> {
        Ok(Self {
            hub,
            phc: phc.into(),
            sessions: Mutex::default(),
            limiter: Mutex::default(),
            templates: templates()?,
        })
    }
}

/// Binds the UI's listener; refuses addresses that are not loopback (the UI speaks plain
/// HTTP).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(Error::InvalidArgument {
            field: "--admin-ui-listen",
            problem: format!(
                "{addr} is not a loopback address; the admin UI speaks plain HTTP, so it only listens on 127.0.0.1 or [::1] (reach it remotely with `ssh -L`)"
            ),
        });
    }
    TcpListener::bind(addr)
        .await
        .map_err(Error::io("listen on", addr.to_string()))
}

/// Serves the UI on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ui: Arc<AdminUi>) {
    if let Err(error) = axum::serve(listener, pages::router(ui)).await {
        tracing::error!(%error, "admin UI stopped");
    }
}
