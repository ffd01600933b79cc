//! TURN credentials the hub hands its nodes: coturn's REST scheme (`use-auth-secret`
//! with `static-auth-secret`), so a TURN server shares one secret with the hub and never
//! learns about nodes.
//!
//! Invariant: the secret never leaves this module — not in logs (`Debug` hides it), not
//! in an answer; a node gets a username `<expiry-unix>:<node-id>` and the password
//! base64(HMAC-SHA1(secret, username)), valid until the expiry written in the username
//! (the TURN server checks it), and asks again before then.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bauxite_conduit::PeerId;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The environment variable that may hold the shared secret instead of a file.
pub const SECRET_ENV: &str = "BAUXITE_TURN_SECRET";

/// Default lifetime of handed-out credentials.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// The hub's TURN settings (`serve --turn-url … --turn-secret-file … --turn-ttl …`).
#[derive(Clone)]
pub struct TurnConfig {
    /// "turn:host:port" URLs, in the order nodes try them.
    pub urls: Vec<String>,
    /// The secret shared with the TURN servers (`static-auth-secret`).
    pub secret: Zeroizing<Vec<u8>>,
    /// Lifetime of handed-out credentials, in seconds.
    pub ttl_secs: u64,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// Time-limited credentials for one node.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `<expires_unix>:<node-id>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// When the TURN server stops accepting them (Unix seconds).
    pub expires_unix: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

/// The password coturn expects for `username` under `secret`: base64(HMAC-SHA1).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

impl TurnConfig {
    /// Reads the secret from `secret_file` (trailing whitespace trimmed) or, without one,
    /// from [`SECRET_ENV`]; refuses an empty secret or a URL that is not `turn:host:port`.
    pub fn load(urls: Vec<String>, secret_file: Option<&Path>, ttl_secs: u64) -> Result<Self> {
        for url in &urls {
            turn_host(url)?;
        }
        let secret = match secret_file {
            Some(path) => Zeroizing::new(
                std::fs::read(path).map_err(Error::io("read", path.display().to_string()))?,
            ),
            None => Zeroizing::new(std::env::var(SECRET_ENV).unwrap_or_default().into_bytes()),
        };
        let trimmed = secret.trim_ascii_end().to_vec();
        if trimmed.is_empty() {
            return Err(Error::InvalidArgument {
                field: "turn-secret-file",
                problem: format!(
                    "the TURN secret is empty; put coturn's static-auth-secret in {} or in ${SECRET_ENV}",
                    secret_file
                        .map_or_else(|| PathBuf::from("a file"), Path::to_path_buf)
                        .display()
                ),
            });
        }
        Ok(Self {
            urls,
            secret: Zeroizing::new(trimmed),
            ttl_secs: ttl_secs.max(60),
        })
    }

    /// Credentials for `node`, valid for the configured lifetime from `now_unix`.
    pub fn credentials(&self, node: PeerId, now_unix: u64) -> Credentials {
        let expires_unix = now_unix.saturating_add(self.ttl_secs);
        let username = format!("{expires_unix}:{node}");
        let password = rest_password(&self.secret, &username);
        Credentials {
            username,
            password,
            expires_unix,
        }
    }
}

/// The `host:port` of a `turn:host:port` URL (UDP only: `?transport=udp` is accepted).
pub fn turn_host(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("turn:")
        .ok_or_else(|| Error::InvalidArgument {
            field: "turn-url",
            problem: format!(
                "{url:?} is not a turn:host:port URL (turns: and TCP are not supported)"
            ),
        })?;
    let host = rest.strip_suffix("?transport=udp").unwrap_or(rest);
    if host.is_empty() || host.contains('?') || !host.contains(':') {
        return Err(Error::InvalidArgument {
            field: "turn-url",
            problem: format!("{url:?} must name a host and a port: turn:203.0.113.5:3478"),
        });
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same HMAC-SHA1 computed by another implementation (OpenSSL, as an operator
    /// would check a coturn password by hand), when the machine has it.
    fn openssl_password(secret: &str, username: &str) -> Option<String> {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(["dgst", "-sha1", "-hmac", secret, "-binary"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(username.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        out.status
            .success()
            .then(|| base64::engine::general_purpose::STANDARD.encode(out.stdout))
    }

    #[test]
    fn credentials_are_coturn_rest_credentials() {
        let config = TurnConfig {
            urls: vec!["turn:203.0.113.5:3478".into()],
            secret: Zeroizing::new(b"north-wind-secret".to_vec()),
            ttl_secs: 3600,
        };
        let node = PeerId::from_signing_public(&[7; 32]);
        let c = config.credentials(node, 1_800_000_000);
        assert_eq!(c.expires_unix, 1_800_003_600);
        assert_eq!(c.username, format!("1800003600:{node}"));
        // RFC 2202 test case 2's key and data, through the same function.
        assert_eq!(
            rest_password(b"Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD
                .encode(hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap()),
        );
        if let Some(expected) = openssl_password("north-wind-secret", &c.username) {
            assert_eq!(c.password, expected, "OpenSSL agrees");
        }
        assert!(
            !format!("{config:?}").contains("north-wind"),
            "Debug hides the secret"
        );
        assert!(
            !format!("{c:?}").contains(&c.password),
            "Debug hides the password"
        );
    }

    #[test]
    fn urls_and_secrets_are_checked() {
        assert_eq!(
            turn_host("turn:198.51.100.1:3478").unwrap(),
            "198.51.100.1:3478"
        );
        assert_eq!(
            turn_host("turn:relay.example:3478?transport=udp").unwrap(),
            "relay.example:3478"
        );
        assert!(turn_host("turns:relay.example:5349").is_err());
        assert!(turn_host("turn:relay.example").is_err());
        assert!(turn_host("turn:relay.example:3478?transport=tcp").is_err());
        let dir = std::env::temp_dir().join(format!("bauxite-turn-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let config = TurnConfig::load(vec!["turn:192.0.2.1:3478".into()], Some(&dir), 10).unwrap();
        assert_eq!(config.secret.as_slice(), b"s3cret");
        assert_eq!(config.ttl_secs, 60, "at least a minute");
        std::fs::write(&dir, "\n").unwrap();
        assert!(TurnConfig::load(Vec::new(), Some(&dir), 3600).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
