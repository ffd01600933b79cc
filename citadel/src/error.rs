//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong in citadel; every message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program could not be started.
    #[error(
        "cannot start {program}: {source}; install it (`apt-get install {package}`) or set its path in the config"
    )]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The Debian package that ships it.
        package: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or signalling a child failed.
    #[error("process {pid} ({action}): {source}")]
    Process {
        /// The child's process ID.
        pid: u32,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Two discovery servers claim the same position in `ROS_DISCOVERY_SERVER`.
    #[error(
        "discovery server ID {id} is given twice ({first} and {second}); give each server its own ID (its position in ROS_DISCOVERY_SERVER)"
    )]
    DuplicateServerId {
        /// The ID.
        id: u8,
        /// The first server's address.
        first: String,
        /// The second server's address.
        second: String,
    },
    /// A ROS domain ID outside what DDS can map to UDP ports.
    #[error("ROS domain ID {domain} is out of range; use 0 to 232 (0-101 avoids ephemeral ports)")]
    DomainId {
        /// The domain ID given.
        domain: u32,
    },
    /// No discovery server is known, so ROS nodes would find nobody.
    #[error(
        "no ROS discovery server is configured; add `[ros.server]` on the node that runs it or `[[ros.servers]]` entries naming it"
    )]
    NoServers,
    /// An optional bridge program is not on the PATH.
    #[error(
        "none of {tried:?} is on the PATH; install the zenoh ROS 2 bridge (https://github.com/eclipse-zenoh/zenoh-plugin-ros2dds) or build without the `zenoh` feature"
    )]
    NotOnPath {
        /// The program names looked for.
        tried: Vec<&'static str>,
    },
}
