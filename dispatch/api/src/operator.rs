//! The operator lock: node key records signed by an operator key that never touches the
//! hub, so a hub that substitutes a node's keys in the topology is caught by the nodes.
//!
//! Invariant: a [`SignedKeyRecord`] vouches for exactly one node ID, Ed25519 key, X25519
//! key and virtual IP until `not_after`; [`OperatorLock::check`] accepts a topology entry
//! only when all four equal what the hub sent, the signature verifies strictly under a
//! pinned operator key, and the record has not expired. Parsing never panics and accepts
//! exactly what [`SignedKeyRecord::encode`] writes.
//!
//! Byte layout (all integers little-endian, fixed length, no optional parts):
//!
//! ```text
//! record  = node_id[16] ed25519[32] x25519[32] virtual_ip[4, big-endian octets]
//!           not_after[u64 unix s] serial[u64]                          (100 bytes)
//! signed  = KEY_RECORD_CONTEXT || record                (what the operator signs)
//! encoded = version[1] = 1 || record || operator_key[32] || signature[64] (197 bytes)
//! ```
//!
//! Text forms, for copying between machines: a node's unsigned facts (`bauxite operator
//! request`) are `bxkr1.` + hex of the first 84 record bytes; a signed record (`bauxite
//! operator sign`, `bauxite-dispatch nodes sign`) is `bxop1.` + hex of `encoded`.

mod lock;
#[cfg(test)]
mod tests;

pub use lock::OperatorLock;

use bauxite_conduit::{PeerId, VirtualIp};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::error::KeyRecordRejected;

/// Domain separator at the start of every signed key record.
pub const KEY_RECORD_CONTEXT: &[u8] = b"bauxite operator key record v1\0";
/// The layout version byte of [`SignedKeyRecord::encode`].
pub const RECORD_VERSION: u8 = 1;
/// Length of a node's facts (ID, keys, address).
pub const FACTS_LEN: usize = 16 + 32 + 32 + 4;
/// Length of a record (facts, expiry, serial).
pub const RECORD_LEN: usize = FACTS_LEN + 8 + 8;
/// Length of an encoded signed record.
pub const SIGNED_LEN: usize = 1 + RECORD_LEN + 32 + 64;
/// Text prefix of a node's unsigned facts.
pub const REQUEST_PREFIX: &str = "bxkr1.";
/// Text prefix of a signed record.
pub const SIGNED_PREFIX: &str = "bxop1.";

/// What the hub distributes about a node and the operator vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeKeyFacts {
    /// The node's peer ID (derives from `ed25519`).
    pub node_id: PeerId,
    /// Ed25519 identity key.
    pub ed25519: [u8; 32],
    /// X25519 static key (the data-plane handshake key).
    pub x25519: [u8; 32],
    /// The node's mesh address.
    pub virtual_ip: VirtualIp,
}

/// A node's facts with the operator's validity: the bytes the operator signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The node.
    pub facts: NodeKeyFacts,
    /// The record is refused from this instant on (Unix seconds).
    pub not_after: u64,
    /// The operator's number for this record (shown in status; a re-signed record gets a
    /// higher one).
    pub serial: u64,
}

/// A key record with the operator's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedKeyRecord {
    /// What is vouched for.
    pub record: KeyRecord,
    /// The operator's Ed25519 public key that signed it.
    pub operator: [u8; 32],
    /// Ed25519 signature over [`KeyRecord::signed_bytes`].
    pub signature: [u8; 64],
}

fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> [u8; N] {
    let mut out = [0u8; N];
    // Callers checked the total length first, so the slice is always N bytes.
    if let Some(part) = bytes.get(*at..*at + N) {
        out.copy_from_slice(part);
    }
    *at += N;
    out
}

fn from_text<'a>(text: &'a str, prefix: &'static str) -> Result<Vec<u8>, KeyRecordRejected> {
    let body: &'a str = text
        .trim()
        .strip_prefix(prefix)
        .ok_or(KeyRecordRejected::Prefix { expected: prefix })?;
    if body.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(KeyRecordRejected::Hex);
    }
    hex::decode(body).map_err(|_| KeyRecordRejected::Hex)
}

impl NodeKeyFacts {
    /// The 84-byte layout.
    pub fn to_bytes(&self) -> [u8; FACTS_LEN] {
        let mut out = [0u8; FACTS_LEN];
        out[..16].copy_from_slice(&self.node_id.0);
        out[16..48].copy_from_slice(&self.ed25519);
        out[48..80].copy_from_slice(&self.x25519);
        out[80..].copy_from_slice(&self.virtual_ip.addr().octets());
        out
    }

    /// Parses the 84-byte layout; the node ID must derive from the Ed25519 key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyRecordRejected> {
        if bytes.len() != FACTS_LEN {
            return Err(KeyRecordRejected::Length {
                expected: FACTS_LEN,
                found: bytes.len(),
            });
        }
        let mut at = 0;
        let facts = Self {
            node_id: PeerId(take(bytes, &mut at)),
            ed25519: take(bytes, &mut at),
            x25519: take(bytes, &mut at),
            virtual_ip: VirtualIp::from(std::net::Ipv4Addr::from(take::<4>(bytes, &mut at))),
        };
        if PeerId::from_signing_public(&facts.ed25519) != facts.node_id {
            return Err(KeyRecordRejected::NodeIdMismatch(facts.node_id));
        }
        Ok(facts)
    }

    /// `bxkr1.<hex>`: what a node prints for its operator to sign.
    pub fn to_text(&self) -> String {
        format!("{REQUEST_PREFIX}{}", hex::encode(self.to_bytes()))
    }

    /// Parses [`to_text`](Self::to_text)'s output.
    pub fn from_text(text: &str) -> Result<Self, KeyRecordRejected> {
        Self::from_bytes(&from_text(text, REQUEST_PREFIX)?)
    }
}

impl KeyRecord {
    /// The 100-byte layout.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..FACTS_LEN].copy_from_slice(&self.facts.to_bytes());
        out[FACTS_LEN..FACTS_LEN + 8].copy_from_slice(&self.not_after.to_le_bytes());
        out[FACTS_LEN + 8..].copy_from_slice(&self.serial.to_le_bytes());
        out
    }

    /// The bytes the operator signs: the context, then the layout.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_RECORD_CONTEXT.len() + RECORD_LEN);
        out.extend_from_slice(KEY_RECORD_CONTEXT);
        out.extend_from_slice(&self.to_bytes());
        out
    }

    /// Signs the record with the operator's key.
    pub fn sign(self, operator: &SigningKey) -> SignedKeyRecord {
        SignedKeyRecord {
            record: self,
            operator: operator.verifying_key().to_bytes(),
            signature: operator.sign(&self.signed_bytes()).to_bytes(),
        }
    }
}

impl SignedKeyRecord {
    /// The 197-byte encoding (what `Peer.operator_signature` carries).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_LEN);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.record.to_bytes());
        out.extend_from_slice(&self.operator);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses [`encode`](Self::encode)'s output (the signature is not checked here).
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyRecordRejected> {
        if bytes.len() != SIGNED_LEN {
            return Err(KeyRecordRejected::Length {
                expected: SIGNED_LEN,
                found: bytes.len(),
            });
        }
        if bytes[0] != RECORD_VERSION {
            return Err(KeyRecordRejected::Version(bytes[0]));
        }
        let facts = NodeKeyFacts::from_bytes(&bytes[1..1 + FACTS_LEN])?;
        let mut at = 1 + FACTS_LEN;
        let record = KeyRecord {
            facts,
            not_after: u64::from_le_bytes(take(bytes, &mut at)),
            serial: u64::from_le_bytes(take(bytes, &mut at)),
        };
        Ok(Self {
            record,
            operator: take(bytes, &mut at),
            signature: take(bytes, &mut at),
        })
    }

    /// `bxop1.<hex>`.
    pub fn to_text(&self) -> String {
        format!("{SIGNED_PREFIX}{}", hex::encode(self.encode()))
    }

    /// Parses [`to_text`](Self::to_text)'s output.
    pub fn from_text(text: &str) -> Result<Self, KeyRecordRejected> {
        Self::parse(&from_text(text, SIGNED_PREFIX)?)
    }

    /// Checks the signature against the operator key the record names (strict Ed25519:
    /// no malleable signatures, no weak keys). Whether that key is trusted is the
    /// verifier's business ([`OperatorLock`]).
    pub fn verify_signature(&self) -> Result<(), KeyRecordRejected> {
        let key = VerifyingKey::from_bytes(&self.operator)
            .map_err(|_| KeyRecordRejected::BadOperatorKey)?;
        if key.is_weak() {
            return Err(KeyRecordRejected::BadOperatorKey);
        }
        key.verify_strict(
            &self.record.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| KeyRecordRejected::BadSignature)
    }
}

/// Parses an operator public key file: one 64-hex-digit Ed25519 key per line; blank lines
/// and `#` comments are ignored. At least one key; weak keys are refused.
pub fn parse_operator_keys(text: &str) -> Result<Vec<[u8; 32]>, KeyRecordRejected> {
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(line, &mut key).map_err(|_| KeyRecordRejected::Hex)?;
        let valid = VerifyingKey::from_bytes(&key).is_ok_and(|k| !k.is_weak());
        if !valid {
            return Err(KeyRecordRejected::BadOperatorKey);
        }
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(KeyRecordRejected::NoOperatorKey);
    }
    Ok(keys)
}
