//! Join tokens on the hub: the stored record and the sans-IO redemption check. The text
//! format and the types both sides share are in [`bauxite_dispatch_api::token`].
//!
//! Invariant: the hub never stores a token secret, only its keyed BLAKE3 hash, and compares
//! hashes in constant time; a token is redeemable only while `now < expires_at` and
//! `uses_left > 0`, and a failed check leaves the record untouched.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

pub use bauxite_dispatch_api::token::{CaFingerprint, JoinToken, TOKEN_PREFIX, TokenId};

use crate::clock::UnixTime;
use crate::error::TokenRejected;

/// What the hub stores about a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's ID.
    pub id: TokenId,
    /// Operator-chosen label (e.g. the robot it is for).
    pub name: String,
    /// Keyed BLAKE3 of the secret ([`hash_secret`]).
    pub secret_hash: [u8; 32],
    /// When it was created.
    pub created_at: UnixTime,
    /// First instant at which it is no longer valid.
    pub expires_at: UnixTime,
    /// Redemptions left.
    pub uses_left: u32,
    /// Redemptions allowed in total.
    pub uses_total: u32,
}

/// Hashes a token secret for storage (BLAKE3 in derive-key mode, domain-separated).
pub fn hash_secret(secret: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("bauxite-dispatch 2026 join token secret", secret)
}

impl TokenRecord {
    /// Checks a presented secret at time `now`. Order: secret, then expiry, then uses, so a
    /// caller without the secret learns nothing about the token's state.
    pub fn check(&self, secret: &[u8; 32], now: UnixTime) -> Result<(), TokenRejected> {
        let presented = hash_secret(secret);
        if !bool::from(presented.ct_eq(&self.secret_hash)) {
            return Err(TokenRejected::WrongSecret(self.id));
        }
        if now >= self.expires_at {
            return Err(TokenRejected::Expired {
                id: self.id,
                expired_at: self.expires_at,
            });
        }
        if self.uses_left == 0 {
            return Err(TokenRejected::UsedUp {
                id: self.id,
                uses: self.uses_total,
            });
        }
        Ok(())
    }

    /// The record after one successful redemption.
    pub fn redeemed(&self) -> TokenRecord {
        TokenRecord {
            uses_left: self.uses_left.saturating_sub(1),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests;
