//! Signature thresholds, checked by `tough`'s verifier over the canonical JSON of the
//! `signed` object exactly as received (unknown fields included, as TUF section 4 asks).
//!
//! Invariant: a role counts at most one valid signature per distinct key id, only from
//! keys the delegating metadata lists for that role; duplicate signature key ids refuse
//! the file outright.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use serde::{Serialize, Serializer};
use serde_json::Value;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{self, Role, RoleKeys, RoleType, Root, Signature, Signed};

use super::metadata::Envelope;
use super::refusal::Refusal;

/// The public keys a delegating role lists, by key id. Keys of types this client cannot
/// parse are left out: they can never contribute a valid signature.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyRing {
    keys: HashMap<Decoded<Hex>, Key>,
}

impl KeyRing {
    /// Parses a TUF `keys` object; two key ids that decode to the same bytes are refused.
    pub(crate) fn parse(keys: &BTreeMap<String, Value>) -> Result<Self, String> {
        let mut ring = HashMap::new();
        for (keyid, value) in keys {
            let Ok(id) = hex::decode(keyid) else {
                continue;
            };
            let Ok(key) = serde_json::from_value::<Key>(value.clone()) else {
                continue;
            };
            if ring.insert(Decoded::from(id), key).is_some() {
                return Err(format!("key id {keyid} is listed twice"));
            }
        }
        Ok(Self { keys: ring })
    }
}

/// The key ids and threshold of one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleRule {
    keyids: Vec<Decoded<Hex>>,
    threshold: NonZeroU64,
}

impl RoleRule {
    /// Parses a role's key ids and threshold; a zero threshold is refused.
    pub(crate) fn parse(keyids: &[String], threshold: u64) -> Result<Self, String> {
        let threshold = NonZeroU64::new(threshold).ok_or("threshold 0")?;
        let mut ids: Vec<Decoded<Hex>> = Vec::new();
        for keyid in keyids {
            if let Ok(bytes) = hex::decode(keyid) {
                let id = Decoded::from(bytes);
                // A key listed twice is still one key: it must not count twice.
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(Self {
            keyids: ids,
            threshold,
        })
    }
}

/// The `signed` object serialised as canonical JSON (olpc-cjson, inside `tough`).
struct CanonicalSigned<'a>(&'a Value);

impl Serialize for CanonicalSigned<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Role for CanonicalSigned<'_> {
    // The verifier below holds a single role entry; its type is only a lookup key.
    const TYPE: RoleType = RoleType::Targets;

    fn expires(&self) -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH
    }

    fn version(&self) -> NonZeroU64 {
        NonZeroU64::MIN
    }

    fn filename(&self, _consistent_snapshot: bool) -> String {
        String::new()
    }
}

/// Checks that `envelope` carries at least `rule`'s threshold of valid signatures by
/// keys of `ring` listed in `rule`.
pub(crate) fn verify_threshold(
    label: &str,
    ring: &KeyRing,
    rule: &RoleRule,
    envelope: &Envelope,
) -> Result<(), Refusal> {
    let keys = rule
        .keyids
        .iter()
        .filter_map(|id| ring.keys.get(id).map(|k| (id.clone(), k.clone())))
        .collect();
    let verifier = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: false,
        version: NonZeroU64::MIN,
        expires: jiff::Timestamp::UNIX_EPOCH,
        keys,
        roles: HashMap::from([(
            RoleType::Targets,
            RoleKeys {
                keyids: rule.keyids.clone(),
                threshold: rule.threshold,
                _extra: HashMap::new(),
            },
        )]),
        _extra: HashMap::new(),
    };
    // A signature whose key id or value is not hex cannot be valid; it is skipped, not
    // fatal, so one garbled signature does not veto a threshold the others reach.
    let signatures = envelope
        .signatures
        .iter()
        .filter_map(|s| {
            Some(Signature {
                keyid: Decoded::from(hex::decode(&s.keyid).ok()?),
                sig: Decoded::from(hex::decode(&s.sig).ok()?),
            })
        })
        .collect();
    let signed = Signed {
        signed: CanonicalSigned(&envelope.signed),
        signatures,
    };
    verifier.verify_role(&signed).map_err(|e| match e {
        schema::Error::SignatureThreshold {
            threshold, valid, ..
        } => Refusal::Threshold {
            role: label.to_owned(),
            threshold,
            valid,
        },
        schema::Error::DuplicateKeyId { keyid } => Refusal::DuplicateSignature {
            role: label.to_owned(),
            keyid,
        },
        other => Refusal::Malformed {
            role: label.to_owned(),
            reason: other.to_string(),
        },
    })
}
