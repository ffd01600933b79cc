//! Join tokens: the text format both sides read (the hub's stored record and redemption
//! check live in the hub).
//!
//! Invariant: [`JoinToken::parse`] accepts exactly the text [`JoinToken`]'s `Display`
//! writes (lower-case hex only, four parts), never panics, and the secret is never shown
//! by `Debug`.
//!
//! Text format (150 characters, all hex lower-case):
//!
//! ```text
//! bx1.<token id: 16 hex>.<secret: 64 hex>.<hub CA fingerprint: SHA-256 of ca.crt DER, 64 hex>
//! ```
//!
//! The ID names the record, the secret authorises one redemption, and the fingerprint lets
//! the node authenticate the hub on first contact (as kubeadm's `--discovery-token-ca-cert-hash`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::TokenFormat;

/// The version prefix of the token text.
pub const TOKEN_PREFIX: &str = "bx1";

/// A token's public identifier (8 random bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenId(pub [u8; 8]);

/// SHA-256 of the hub CA certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CaFingerprint(pub [u8; 32]);

/// A parsed join token. The secret is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Which token record this is.
    pub id: TokenId,
    /// The secret that authorises redemption.
    pub secret: Zeroizing<[u8; 32]>,
    /// The hub CA the node must see on first contact.
    pub ca: CaFingerprint,
}

fn parse_hex<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], TokenFormat> {
    let bad = TokenFormat::BadField { field, len: N * 2 };
    let lower = text
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if text.len() != N * 2 || !lower {
        return Err(bad);
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| bad)?;
    Ok(out)
}

impl JoinToken {
    /// Parses the token text (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, TokenFormat> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.first() != Some(&TOKEN_PREFIX) {
            return Err(TokenFormat::WrongPrefix {
                found: parts
                    .first()
                    .map(|p| p.chars().take(8).collect())
                    .unwrap_or_default(),
            });
        }
        let [_, id, secret, ca] = parts[..] else {
            return Err(TokenFormat::WrongPartCount { found: parts.len() });
        };
        Ok(Self {
            id: TokenId(parse_hex(id, "token id")?),
            secret: Zeroizing::new(parse_hex(secret, "secret")?),
            ca: CaFingerprint(parse_hex(ca, "CA fingerprint")?),
        })
    }
}

impl FromStr for JoinToken {
    type Err = TokenFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The full token text. It contains the secret: print it only to the operator.
impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.id,
            hex::encode(*self.secret),
            self.ca
        )
    }
}

/// Redacts the secret.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken({TOKEN_PREFIX}.{}.<secret>.{})",
            self.id, self.ca
        )
    }
}

impl TokenId {
    /// Parses the 16-hex-digit form.
    pub fn from_hex(text: &str) -> Result<Self, TokenFormat> {
        parse_hex(text, "token id").map(TokenId)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

impl CaFingerprint {
    /// Fingerprints a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(der).into())
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &CaFingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFingerprint({self})")
    }
}

#[cfg(test)]
mod tests;
