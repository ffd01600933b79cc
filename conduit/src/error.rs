//! The crate's one error type. Variants carry the offending value; messages say what to do.

use std::path::PathBuf;

/// Everything that can go wrong in the data plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key file exists but cannot be used.
    #[error("key file {path}: {problem}")]
    KeyFile {
        /// The file that was read.
        path: PathBuf,
        /// What is wrong with it, and the fix.
        problem: KeyFileProblem,
    },

    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// An ICE agent could not be built, given a candidate or started.
    #[error(
        "ICE with peer {peer}: cannot {action}: {problem}; the session stays on the relay paths (TURN, hub) until a new INVITE"
    )]
    Ice {
        /// The peer of the session.
        peer: crate::PeerId,
        /// What was being done ("create the agent", "add a remote candidate", ...).
        action: &'static str,
        /// What went wrong (the agent's error, or the offending candidate text).
        problem: String,
    },

    /// The TURN server refused or did not answer.
    #[error(
        "cannot {action} TURN server {server}: {problem}; check the server address and the credentials (`[turn]` on the hub)"
    )]
    Turn {
        /// The server.
        server: std::net::SocketAddr,
        /// What was being done ("allocate on", ...).
        action: &'static str,
        /// What went wrong.
        problem: String,
    },

    /// A socket could not be opened or configured.
    #[error("cannot {action} UDP socket {addr}: {source}; pick a free address for `listen`")]
    Socket {
        /// What was being done ("bind", ...).
        action: &'static str,
        /// The address involved.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Bytes from the network that are not a well-formed mesh packet.
    #[error("malformed packet: {0}")]
    Malformed(#[from] MalformedPacket),

    /// A packet that parsed but failed authentication or freshness checks.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] PeerMisbehaved),

    /// A snapshot that cannot be decoded.
    #[error("state snapshot is unreadable ({0}); delete it to cold-start")]
    Snapshot(String),

    /// A packet was addressed to a virtual IP no peer owns.
    #[error("no peer owns virtual IP {0}")]
    NoRoute(crate::VirtualIp),

    /// A peer is referred to that the registry does not know.
    #[error("unknown peer {0}")]
    UnknownPeer(crate::PeerId),

    /// A policy document that cannot be used.
    #[error("invalid policy: {0}")]
    Policy(String),

    /// A change to the peer registry that would break its invariants.
    #[error("peer registry: {0}")]
    PeerConflict(#[from] crate::peers::PeerConflict),

    /// A service socket refused a call.
    #[error("service socket: {0}")]
    Service(#[from] ServiceError),

    /// A policy rule with an unusable field.
    #[error("invalid policy: rule {index}, field `{field}`: {problem}")]
    PolicyRule {
        /// Position of the rule in the policy, from 0.
        index: usize,
        /// The offending field.
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileProblem {
    /// The file has the wrong length.
    #[error("expected {expected} bytes, found {found}; regenerate it with `bauxite keygen`")]
    WrongSize {
        /// Required length.
        expected: usize,
        /// Length on disk.
        found: usize,
    },
    /// Group or others can read or write the file.
    #[error(
        "mode is {mode:o}, but private keys must not be readable by others; run `chmod 600` on it"
    )]
    TooOpen {
        /// The permission bits found.
        mode: u32,
    },
    /// The content does not start with the expected header.
    #[error("not a Bauxite identity file (bad header); regenerate it with `bauxite keygen`")]
    BadHeader,
    /// The stored public key does not match the private key.
    #[error("stored public key does not match the private key; the file is corrupt, regenerate it")]
    Mismatch,
}

/// Structural problems in bytes that claim to be a mesh packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum MalformedPacket {
    /// Empty datagram.
    #[error("empty datagram")]
    Empty,
    /// The first byte lacks the mesh tag (`0x80`); it may be STUN.
    #[error("first byte {0:#04x} lacks the mesh tag 0x80")]
    NotMesh(u8),
    /// The type byte names no known message.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// Shorter than the message type requires.
    #[error("{kind} needs {needed} bytes, got {got}")]
    Truncated {
        /// Message kind.
        kind: &'static str,
        /// Minimum length.
        needed: usize,
        /// Actual length.
        got: usize,
    },
    /// Longer than the message type allows.
    #[error("{kind} must be {expected} bytes, got {got}")]
    WrongLength {
        /// Message kind.
        kind: &'static str,
        /// Exact length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Not a valid IPv4/IPv6 packet.
    #[error("not an IP packet: {0}")]
    NotIp(&'static str),
    /// A field holds a value its message cannot carry.
    #[error("{kind} with {field}: a broken or forged frame, dropped")]
    BadField {
        /// Message kind.
        kind: &'static str,
        /// What is wrong.
        field: &'static str,
    },
}

/// A peer (or someone on the path) sent something authentic-looking that must be refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// AEAD tag did not verify: tampered, forged or for another key.
    #[error("authentication tag mismatch")]
    BadTag,
    /// Sequence number already seen or older than the anti-replay window.
    #[error("replayed or stale sequence number {0}")]
    Replay(u64),
    /// Sequence number already received, inside the anti-replay window: a copy over a
    /// second path, a link duplicate, or a recent packet replayed. Dropped, nothing to do.
    #[error("sequence number {0} already received (a redundant copy); dropped")]
    Duplicate(u64),
    /// Data for a session index we do not hold.
    #[error("unknown session index {0:#010x}")]
    UnknownSession(u32),
    /// The handshake MAC (keyed by our static key) did not verify.
    #[error("handshake mac mismatch")]
    BadMac,
    /// A handshake from a static key that is not in the peer list.
    #[error("handshake from a key that is not a known peer")]
    UnknownStaticKey,
    /// A handshake initiation older than or equal to one already accepted.
    #[error("handshake timestamp {0} is not newer than the last accepted one")]
    StaleHandshake(u64),
    /// A handshake response that matches no initiation we sent.
    #[error("handshake response for index {0:#010x} matches no pending initiation")]
    UnexpectedResponse(u32),
    /// A session's counter or age limit is reached; it can no longer send.
    #[error("session exhausted; a rekey is required")]
    SessionExhausted,
}

/// Why a service socket (an in-process user's port on the mesh) refused a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum ServiceError {
    /// The payload does not fit in one datagram.
    #[error("payload of {len} bytes exceeds the {max}-byte limit; split it")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The most one datagram carries.
        max: usize,
    },
    /// The send queue is full (a non-waiting send only); the lanes are still busy with
    /// earlier datagrams.
    #[error("send queue of service port {port} is full; retry once it drains")]
    Full {
        /// The socket's port.
        port: u16,
    },
    /// Another socket has the port.
    #[error("service port {port} is already bound; pick another or drop the other socket")]
    PortInUse {
        /// The port asked for.
        port: u16,
    },
    /// The shell stopped, or the socket was dropped: nothing more is sent or received.
    #[error("service port {port} is closed: the shell stopped; bind again on a running shell")]
    Closed {
        /// The socket's port.
        port: u16,
    },
}
