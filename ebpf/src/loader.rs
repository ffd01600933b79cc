//! Loading the embedded classifier with aya, attaching it to an interface's egress, and
//! reading its counters. The only IO in the crate: BPF syscalls, netlink, `tc`, sysfs.

use std::io;
use std::process::Command;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError};
use aya::programs::{
    LinkOrder, SchedClassifier, SocketFilter, TcAttachType, TestRun, TestRunOptions,
};
use aya::{Ebpf, include_bytes_aligned};
use bauxite_conduit::Lane;
use bauxite_conduit::offload::LaneCount as Count;

use crate::Error;
use crate::abi::{self, Config, LANE_COUNT, LaneCount, PROGRAM_NAME, STEER_PROGRAM_NAME};
use crate::rules::LaneRules;

/// The object `build.rs` compiled from `bpf/classifier.c`.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classifier.bpf.o"));

/// Ethernet header length: the L2 offset on Ethernet and loopback links.
const ETH_HLEN: u32 = 14;

/// How the program is attached to the egress hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// A TCX link (Linux 6.6+): owned by the process, gone when it exits.
    Tcx,
    /// A direct-action filter on a `clsact` qdisc (older kernels): outlives the process,
    /// so a stale one is removed by name before attaching.
    Clsact,
}

/// What comes before the IP header on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A TUN device: packets start at the IP header.
    Tun,
    /// Ethernet (or loopback): a 14-byte header first.
    Ethernet,
}

impl LinkKind {
    fn l2_len(self) -> u32 {
        match self {
            LinkKind::Tun => 0,
            LinkKind::Ethernet => ETH_HLEN,
        }
    }
}

/// What [`LaneClassifier::attach`] does besides attaching.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Port rules written to the kernel map.
    pub rules: LaneRules,
    /// `None`: TCX when the kernel has it, else clsact.
    pub mode: Option<AttachMode>,
    /// The link header before the IP header; `None`: read the interface's type from sysfs
    /// (which shows the namespace sysfs was mounted in, so name it in other namespaces).
    pub link: Option<LinkKind>,
    /// Replace the root qdisc with `prio` (or `pfifo_fast` where the kernel has no
    /// `sch_prio`), whose default priomap serves the lanes' bands in order, so the kernel
    /// queue honours the lanes.
    pub prio_qdisc: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            rules: LaneRules::default(),
            mode: None,
            link: None,
            prio_qdisc: true,
        }
    }
}

/// The loaded object and its maps, not attached anywhere.
struct Loaded {
    ebpf: Ebpf,
}

impl Loaded {
    fn load(config: Config, rules: &LaneRules, interface: &str) -> Result<Self, Error> {
        let ebpf = Ebpf::load(OBJECT).map_err(|source| Error::Load { source })?;
        let mut loaded = Self { ebpf };
        let mut config_map: Array<_, [u32; 1 + LANE_COUNT]> =
            Array::try_from(loaded.map_mut(abi::CONFIG_MAP)?)
                .map_err(map_err(abi::CONFIG_MAP, "open"))?;
        config_map
            .set(0, config.to_words(), 0)
            .map_err(map_err(abi::CONFIG_MAP, "write"))?;
        loaded.write_rules(rules)?;
        loaded.program()?.load().map_err(|source| Error::Program {
            action: "load the program",
            interface: interface.to_string(),
            source,
        })?;
        Ok(loaded)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        self.ebpf.map_mut(name).ok_or(Error::Map {
            map: name,
            action: "find",
            detail: "not in the embedded object; rebuild bauxite-ebpf".into(),
        })
    }

    /// The TUN steering program, loaded into the kernel on first use.
    fn steering_program(&mut self, interface: &str) -> Result<&mut SocketFilter, Error> {
        let program = self
            .ebpf
            .program_mut(STEER_PROGRAM_NAME)
            .and_then(|p| <&mut SocketFilter>::try_from(p).ok())
            .ok_or(Error::MissingProgram(STEER_PROGRAM_NAME))?;
        if program.fd().is_err() {
            program.load().map_err(|source| Error::Program {
                action: "load the TUN steering program",
                interface: interface.to_string(),
                source,
            })?;
        }
        Ok(program)
    }

    fn program(&mut self) -> Result<&mut SchedClassifier, Error> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
            .ok_or(Error::MissingProgram(PROGRAM_NAME))
    }

    /// Makes the kernel map equal `rules`: new rules first, then stale ones removed, so a
    /// policy change never leaves a moment with no rule for a port both versions have.
    fn write_rules(&mut self, rules: &LaneRules) -> Result<(), Error> {
        let mut ports: HashMap<&mut MapData, u16, u32> =
            HashMap::try_from(self.map_mut(abi::PORTS_MAP)?)
                .map_err(map_err(abi::PORTS_MAP, "open"))?;
        for (port, lane) in rules.ports() {
            let lane = u32::try_from(lane.index()).unwrap_or(u32::MAX);
            ports
                .insert(port, lane, 0)
                .map_err(map_err(abi::PORTS_MAP, "write"))?;
        }
        let wanted: std::collections::BTreeSet<u16> = rules.ports().map(|(port, _)| port).collect();
        let stale: Vec<u16> = ports
            .keys()
            .filter_map(Result::ok)
            .filter(|port| !wanted.contains(port))
            .collect();
        for port in stale {
            ports
                .remove(&port)
                .map_err(map_err(abi::PORTS_MAP, "remove a rule"))?;
        }
        Ok(())
    }

    fn counts(&self) -> Result<[Count; LANE_COUNT], Error> {
        let map = self.ebpf.map(abi::STATS_MAP).ok_or(Error::Map {
            map: abi::STATS_MAP,
            action: "find",
            detail: "not in the embedded object; rebuild bauxite-ebpf".into(),
        })?;
        let stats: PerCpuArray<&MapData, [u64; 2]> =
            PerCpuArray::try_from(map).map_err(map_err(abi::STATS_MAP, "open"))?;
        let mut out = [Count::default(); LANE_COUNT];
        for (index, slot) in (0u32..).zip(out.iter_mut()) {
            let per_cpu = stats
                .get(&index, 0)
                .map_err(map_err(abi::STATS_MAP, "read"))?;
            for words in per_cpu.iter() {
                let cpu = LaneCount::from_words(*words);
                slot.packets = slot.packets.wrapping_add(cpu.packets);
                slot.bytes = slot.bytes.wrapping_add(cpu.bytes);
            }
        }
        Ok(out)
    }
}

fn map_err<E: std::fmt::Display>(map: &'static str, action: &'static str) -> impl Fn(E) -> Error {
    move |error| Error::Map {
        map,
        action,
        detail: error.to_string(),
    }
}

/// The classifier attached to one interface's egress; detached (and its qdisc removed)
/// when dropped.
pub struct LaneClassifier {
    loaded: Loaded,
    interface: String,
    mode: AttachMode,
    link: Option<SchedClassifierLinkId>,
    qdisc: Option<&'static str>,
    stale_removed: bool,
}

impl std::fmt::Debug for LaneClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneClassifier")
            .field("interface", &self.interface)
            .field("mode", &self.mode)
            .field("qdisc", &self.qdisc)
            .finish_non_exhaustive()
    }
}

impl LaneClassifier {
    /// Loads the program, writes the rules, removes a stale attachment of ours left on
    /// `interface`, and attaches to its egress.
    pub fn attach(interface: &str, options: &AttachOptions) -> Result<Self, Error> {
        let l2_len = match options.link {
            Some(kind) => kind.l2_len(),
            None => link_kind(interface)?.l2_len(),
        };
        let mut loaded = Loaded::load(Config::new(l2_len), &options.rules, interface)?;
        // A TCX link dies with its process; a clsact filter does not, and a second one would
        // classify every packet twice. Ours is the filter carrying our program's name.
        let stale_removed = remove_stale_filter(interface);
        let program = loaded.program()?;
        let (mode, link) = match options.mode {
            Some(mode) => (mode, attach_as(program, interface, mode)?),
            // TCX where the kernel has it (6.6+); the error says nothing more useful than
            // "not supported", so any failure falls back to clsact.
            None => match attach_as(program, interface, AttachMode::Tcx) {
                Ok(link) => (AttachMode::Tcx, link),
                Err(error) => {
                    tracing::debug!(%interface, %error, "TCX attach failed; trying clsact");
                    (
                        AttachMode::Clsact,
                        attach_as(program, interface, AttachMode::Clsact)?,
                    )
                }
            },
        };
        let mut classifier = Self {
            loaded,
            interface: interface.to_string(),
            mode,
            link: Some(link),
            qdisc: None,
            stale_removed,
        };
        if options.prio_qdisc {
            // Classification and counters still hold without it (and a TUN driver that
            // drops in its own ring never lets the qdisc queue anyway: docs/ebpf.md).
            match install_prio_qdisc(interface) {
                Ok(kind) => classifier.qdisc = Some(kind),
                Err(error) => tracing::warn!(%error, "lanes not honoured by the kernel queue"),
            }
        }
        Ok(classifier)
    }

    /// Replaces the port rules in the kernel map; the program keeps running (no reload).
    pub fn set_rules(&mut self, rules: &LaneRules) -> Result<(), Error> {
        self.loaded.write_rules(rules)
    }

    /// Packets and bytes per lane since the program was loaded, by [`Lane::index`].
    pub fn counts(&self) -> Result<[Count; LANE_COUNT], Error> {
        self.loaded.counts()
    }

    /// Makes `bauxite_steer` the steering program of the multi-queue TUN device `queue`
    /// is a queue of (`TUNSETSTEERINGEBPF`): Critical packets to queue 0, the rest to
    /// queue 1 (conduit's `tun::queues`). The device keeps its own reference to the
    /// program, until it is destroyed or another program replaces it.
    pub fn steer_tun(&mut self, queue: std::os::fd::BorrowedFd<'_>) -> Result<(), Error> {
        let interface = self.interface.clone();
        let program = self.loaded.steering_program(&interface)?;
        let fd = program.fd().map_err(|source| Error::Program {
            action: "get the TUN steering program's descriptor",
            interface: interface.clone(),
            source,
        })?;
        crate::steer::set_tun_steering(queue, std::os::fd::AsFd::as_fd(fd))
            .map_err(|source| Error::Steer { interface, source })
    }

    /// How the program is attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The interface it is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The root qdisc installed so the kernel queue honours the lanes (`prio` or
    /// `pfifo_fast`), if one was asked for and `tc` could install it.
    pub fn qdisc(&self) -> Option<&'static str> {
        self.qdisc
    }

    /// Whether a stale clsact filter of ours was found and removed before attaching.
    pub fn stale_removed(&self) -> bool {
        self.stale_removed
    }
}

impl Drop for LaneClassifier {
    fn drop(&mut self) {
        if let Some(link) = self.link.take()
            && let Ok(program) = self.loaded.program()
            && let Err(error) = program.detach(link)
        {
            tracing::warn!(interface = %self.interface, %error, "lane classifier detach failed");
        }
        if self.qdisc.is_some() {
            // Back to the kernel's default root qdisc; the interface may be gone already.
            let _ = run_tc(&["qdisc", "del", "dev", &self.interface, "root"]);
        }
    }
}

fn attach_as(
    program: &mut SchedClassifier,
    interface: &str,
    mode: AttachMode,
) -> Result<SchedClassifierLinkId, Error> {
    let result = match mode {
        AttachMode::Tcx => program.attach_with_options(
            interface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ),
        AttachMode::Clsact => {
            // Already present is fine: other tools share the clsact qdisc.
            match tc::qdisc_add_clsact(interface) {
                Ok(()) | Err(TcError::AlreadyAttached) => {}
                Err(error) => tracing::debug!(%interface, %error, "clsact qdisc not added"),
            }
            program.attach_with_options(
                interface,
                TcAttachType::Egress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
        }
    };
    result.map_err(|source| Error::Program {
        action: match mode {
            AttachMode::Tcx => "attach to egress with TCX",
            AttachMode::Clsact => "attach to egress with clsact",
        },
        interface: interface.to_string(),
        source,
    })
}

/// Removes clsact egress filters named like our program; true when there was one.
fn remove_stale_filter(interface: &str) -> bool {
    match tc::qdisc_detach_program(interface, TcAttachType::Egress, PROGRAM_NAME) {
        Ok(()) => {
            tracing::info!(%interface, "replaced a stale lane classifier left by an earlier daemon");
            true
        }
        // NotFound: nothing of ours; other errors mostly mean no clsact qdisc at all.
        Err(error) => {
            tracing::debug!(%interface, %error, "no stale lane classifier");
            false
        }
    }
}

/// What comes before the IP header on `interface`, from its ARPHRD type.
fn link_kind(interface: &str) -> Result<LinkKind, Error> {
    let path = format!("/sys/class/net/{interface}/type");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Interface {
        interface: interface.to_string(),
        source,
    })?;
    let link_type: u32 = text.trim().parse().map_err(|_| Error::Interface {
        interface: interface.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {text:?}")),
    })?;
    match link_type {
        // ARPHRD_NONE: TUN, packets start at the IP header.
        65534 => Ok(LinkKind::Tun),
        // ARPHRD_ETHER, ARPHRD_LOOPBACK.
        1 | 772 => Ok(LinkKind::Ethernet),
        _ => Err(Error::UnsupportedLink {
            interface: interface.to_string(),
            link_type,
        }),
    }
}

/// Installs `prio`, or `pfifo_fast` where the kernel lacks `sch_prio`: both map
/// `skb->priority` to three bands with the default priomap (6 -> 0, 4 -> 1, 2 -> 2) and
/// always serve the lowest non-empty band first. Returns the kind installed.
fn install_prio_qdisc(interface: &str) -> Result<&'static str, Error> {
    let mut failures = Vec::new();
    for kind in ["prio", "pfifo_fast"] {
        match run_tc(&["qdisc", "replace", "dev", interface, "root", kind]) {
            Ok(()) => return Ok(kind),
            Err(detail) => failures.push(format!("{kind}: {detail}")),
        }
    }
    Err(Error::Qdisc {
        interface: interface.to_string(),
        detail: failures.join("; "),
    })
}

fn run_tc(args: &[&str]) -> Result<(), String> {
    let output = Command::new("tc")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run tc: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// The program loaded but not attached, run on single packets with `BPF_PROG_TEST_RUN`:
/// the kernel's verdict on bytes a test chooses (used by the agreement property test).
pub struct ProgramTester {
    loaded: Loaded,
}

impl std::fmt::Debug for ProgramTester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgramTester").finish_non_exhaustive()
    }
}

/// `sizeof(struct __sk_buff)` in the UAPI headers; the kernel refuses (ENOSPC) a context
/// buffer shorter than the struct it writes back.
const SKB_CTX_LEN: usize = 192;
/// Offset of `__sk_buff.priority`: eight `__u32` fields precede it.
const SKB_PRIORITY_OFFSET: usize = 32;

impl ProgramTester {
    /// Loads the program with `rules`. Test runs see an Ethernet frame, so the program is
    /// configured with a 14-byte L2 header, which [`ProgramTester::lane_of`] prepends.
    pub fn load(rules: &LaneRules) -> Result<Self, Error> {
        Ok(Self {
            loaded: Loaded::load(Config::new(ETH_HLEN), rules, "BPF_PROG_TEST_RUN")?,
        })
    }

    /// Replaces the rules, as [`LaneClassifier::set_rules`] does.
    pub fn set_rules(&mut self, rules: &LaneRules) -> Result<(), Error> {
        self.loaded.write_rules(rules)
    }

    /// Runs the program once on `ip_packet` and returns the lane whose priority it wrote.
    pub fn lane_of(&mut self, ip_packet: &[u8]) -> Result<Lane, Error> {
        let mut frame = vec![0u8; ETH_HLEN as usize];
        // The local experimental EtherType: the kernel's test harness checks IP headers it
        // recognises (and refuses short ones), but the program must see any bytes at all.
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        frame.extend_from_slice(ip_packet);
        let ctx_in = [0u8; SKB_CTX_LEN];
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let program = self.loaded.program()?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .map_err(|source| Error::Program {
                action: "run BPF_PROG_TEST_RUN",
                interface: "none".into(),
                source,
            })?;
        debug_assert_eq!(result.return_value, 0, "TC_ACT_OK");
        let mut word = [0u8; 4];
        word.copy_from_slice(&ctx_out[SKB_PRIORITY_OFFSET..SKB_PRIORITY_OFFSET + 4]);
        let priority = u32::from_ne_bytes(word);
        Config::new(ETH_HLEN)
            .priority
            .iter()
            .position(|p| *p == priority)
            .map(|index| Lane::ALL[index])
            .ok_or(Error::Map {
                map: abi::CONFIG_MAP,
                action: "map the written priority back to a lane",
                detail: format!(
                    "priority {priority} is no lane's (return value {})",
                    result.return_value
                ),
            })
    }

    /// The per-lane counters (test runs count too).
    pub fn counts(&self) -> Result<[Count; LANE_COUNT], Error> {
        self.loaded.counts()
    }

    /// Runs the TUN steering program once on `ip_packet`; returns the queue it picks.
    pub fn steer_queue_of(&mut self, ip_packet: &[u8]) -> Result<u32, Error> {
        let mut frame = vec![0u8; ETH_HLEN as usize];
        // As in `lane_of`; a socket filter's test run starts the skb after this header.
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        frame.extend_from_slice(ip_packet);
        let program = self.loaded.steering_program("BPF_PROG_TEST_RUN")?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::default()
            })
            .map_err(|source| Error::Program {
                action: "run BPF_PROG_TEST_RUN on the steering program",
                interface: "none".into(),
                source,
            })?;
        Ok(result.return_value)
    }
}
