//! The crate's one error type. Variants carry the offending value; messages say what to do.

/// Everything that can stop the kernel lane classifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refused the object (no permission, no BPF support, verifier rejection).
    #[error(
        "cannot load the lane classifier into the kernel: {source}; run as root or with \
         CAP_BPF and CAP_NET_ADMIN on a kernel with BPF (the userspace classifier still works)"
    )]
    Load {
        /// aya's error, with the verifier log when there is one.
        #[source]
        source: aya::EbpfError,
    },

    /// The TUN device refused the steering program.
    #[error(
        "cannot attach the TUN steering program to {interface}: {source}; Critical packets \
         share the TUN driver's ring with bulk (needs a multi-queue TUN device and \
         CAP_NET_ADMIN)"
    )]
    Steer {
        /// The TUN interface.
        interface: String,
        /// The ioctl's answer.
        #[source]
        source: std::io::Error,
    },

    /// A program operation failed.
    #[error(
        "lane classifier: cannot {action} on {interface}: {source}; check that the interface \
         exists and that the process has CAP_BPF and CAP_NET_ADMIN"
    )]
    Program {
        /// What was being done ("load", "attach with TCX", ...).
        action: &'static str,
        /// The interface involved.
        interface: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// A map could not be found, opened, read or written.
    #[error("lane classifier map {map}: cannot {action}: {detail}")]
    Map {
        /// The map's name in the object.
        map: &'static str,
        /// What was being done.
        action: &'static str,
        /// What went wrong.
        detail: String,
    },

    /// The object has no program of the expected name (a build mismatch).
    #[error("the embedded BPF object has no classifier program {0:?}; rebuild bauxite-ebpf")]
    MissingProgram(&'static str),

    /// The interface's link type could not be read.
    #[error("cannot read the link type of interface {interface:?}: {source}; does it exist?")]
    Interface {
        /// The interface named.
        interface: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The interface is neither a TUN device (IP first) nor Ethernet.
    #[error(
        "interface {interface:?} has link type {link_type}; the lane classifier supports \
         TUN (65534), Ethernet (1) and loopback (772) only"
    )]
    UnsupportedLink {
        /// The interface named.
        interface: String,
        /// Its `ARPHRD_*` type from `/sys/class/net/<if>/type`.
        link_type: u32,
    },

    /// The queueing discipline that honours the lanes could not be installed.
    #[error(
        "cannot install a prio qdisc on {interface}: {detail}; install iproute2 (`tc`) or run \
         with CAP_NET_ADMIN"
    )]
    Qdisc {
        /// The interface involved.
        interface: String,
        /// What `tc` said, or why it could not run.
        detail: String,
    },

    /// More port rules than the kernel map holds.
    #[error("port rule for {port} is one too many: the kernel map holds {max} rules; merge ranges")]
    TooManyRules {
        /// The port that did not fit.
        port: u16,
        /// The map's capacity.
        max: usize,
    },
}
