//! What a hub-issued certificate says about its holder, encoded as subjectAltName URIs.
//!
//! Invariant: a node certificate carries exactly one of each of `bauxite:node:<peer id>`,
//! `bauxite:ed25519:<hex>`, `bauxite:x25519:<hex>` and one IP SAN (the virtual IP), and the
//! peer ID is the one derived from the Ed25519 key; [`CertRole::from_der`] refuses anything
//! else. The admin certificate carries `bauxite:admin` and nothing of a node. Plain SANs keep
//! the binding readable with `openssl x509 -text`.

use std::net::IpAddr;

use bauxite_conduit::{PeerId, VirtualIp};
use rcgen::SanType;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{Error, Result};

const NODE: &str = "bauxite:node:";
const ED25519: &str = "bauxite:ed25519:";
const X25519: &str = "bauxite:x25519:";
/// The SAN URI that marks the operator's certificate.
pub const ADMIN_URI: &str = "bauxite:admin";

/// The identity a node certificate binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeBinding {
    /// Peer ID (derived from `ed25519`).
    pub node_id: PeerId,
    /// Ed25519 identity public key.
    pub ed25519: [u8; 32],
    /// X25519 static public key.
    pub x25519: [u8; 32],
    /// Address inside the mesh.
    pub virtual_ip: VirtualIp,
}

/// Who a hub-issued client certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    /// A mesh node.
    Node(NodeBinding),
    /// The operator (admin commands).
    Admin,
}

fn uri(text: String) -> Result<SanType> {
    let value = text
        .try_into()
        .map_err(|e| Error::Certificate(format!("bad SAN URI: {e}")))?;
    Ok(SanType::URI(value))
}

impl NodeBinding {
    /// Builds the binding for keys and an address; the ID is derived from the Ed25519 key.
    pub fn new(ed25519: [u8; 32], x25519: [u8; 32], virtual_ip: VirtualIp) -> Self {
        Self {
            node_id: PeerId::from_signing_public(&ed25519),
            ed25519,
            x25519,
            virtual_ip,
        }
    }

    /// The subjectAltName entries that encode this binding.
    pub fn sans(&self) -> Result<Vec<SanType>> {
        Ok(vec![
            uri(format!("{NODE}{}", self.node_id))?,
            uri(format!("{ED25519}{}", hex::encode(self.ed25519)))?,
            uri(format!("{X25519}{}", hex::encode(self.x25519)))?,
            SanType::IpAddress(IpAddr::V4(self.virtual_ip.addr())),
        ])
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(Error::Certificate(format!(
            "certificate has two {what} entries"
        )));
    }
    Ok(())
}

fn key(text: &str, what: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| Error::Certificate(format!("{what} SAN is not 64 hex digits")))?;
    Ok(out)
}

impl CertRole {
    /// Reads the role from a DER certificate (signature and validity are checked by TLS).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::Certificate(format!("unparsable certificate: {e}")))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| Error::Certificate(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| Error::Certificate("certificate has no subjectAltName".into()))?;
        let (mut id, mut ed, mut x, mut ip, mut admin) = (None, None, None, None, false);
        for name in &sans.value.general_names {
            match name {
                GeneralName::URI(u) if *u == ADMIN_URI => admin = true,
                GeneralName::URI(u) => {
                    if let Some(rest) = u.strip_prefix(NODE) {
                        let parsed = PeerId::from_hex(rest).ok_or_else(|| {
                            Error::Certificate("node SAN is not a peer ID".into())
                        })?;
                        set_once(&mut id, parsed, "node ID")?;
                    } else if let Some(rest) = u.strip_prefix(ED25519) {
                        set_once(&mut ed, key(rest, "ed25519")?, "ed25519")?;
                    } else if let Some(rest) = u.strip_prefix(X25519) {
                        set_once(&mut x, key(rest, "x25519")?, "x25519")?;
                    }
                }
                GeneralName::IPAddress(bytes) => {
                    let octets: [u8; 4] = (*bytes)
                        .try_into()
                        .map_err(|_| Error::Certificate("virtual IP SAN is not IPv4".into()))?;
                    set_once(&mut ip, VirtualIp(u32::from_be_bytes(octets)), "IP")?;
                }
                _ => {}
            }
        }
        match (admin, id, ed, x, ip) {
            (true, None, None, None, None) => Ok(CertRole::Admin),
            (false, Some(node_id), Some(ed25519), Some(x25519), Some(virtual_ip)) => {
                let binding = NodeBinding::new(ed25519, x25519, virtual_ip);
                if binding.node_id != node_id {
                    return Err(Error::Certificate(format!(
                        "node ID {node_id} does not derive from the certificate's ed25519 key"
                    )));
                }
                Ok(CertRole::Node(binding))
            }
            _ => Err(Error::Certificate(
                "certificate is neither a Bauxite node nor the admin certificate".into(),
            )),
        }
    }
}
