//! The NAT laboratory: a small internet in network namespaces, for tests of how nodes
//! find each other behind NATs.
//!
//! ```text
//!                    public (198.18.0.0/24, bridge br0; the hub runs here, .1)
//!                   /                                      \
//!   router a: wan 198.18.0.2, lan 10.1.0.1    router b: wan 198.18.0.3, lan 10.2.0.1
//!          nftables NAT + stateful filter             nftables NAT + stateful filter
//!                   |                                      |
//!        site a: 10.1.0.2, default via .1        site b: 10.2.0.2, default via .1
//! ```
//!
//! Each router namespace forwards between `lan` and `wan` and masquerades what leaves on
//! `wan` (table `ip natlab`). Its filter does what a home or carrier router does with
//! unsolicited packets: the forward chain's policy is `drop`, and it accepts only what
//! leaves the site and the replies conntrack relates to it (`ct state
//! established,related`); the input chain drops what is addressed to the router itself
//! unless it answers something the router sent; both count what they drop in the named
//! counter `unsolicited` ([`NatLab::unsolicited_dropped`]). So a packet from the internet reaches a
//! site only through a mapping the site opened first — hole punching has to work for real.
//!
//! [`Nat`] picks the mapping behaviour per site:
//!
//! - [`Nat::Cone`]: plain `masquerade`. Linux keeps the source port when it is free and
//!   reuses a source's mapping for every destination: endpoint-independent mapping,
//!   address-and-port-dependent filtering (a "port-restricted cone").
//! - [`Nat::ConePorts`]: `masquerade to :LOW-HIGH`, a range without the node's port. The
//!   first flow of a source gets a port from the range and later flows of that source
//!   reuse it (the kernel looks the source's mapping up first): still endpoint-independent,
//!   but the public port differs from the node's, so only a node that asks (STUN) knows it.
//! - [`Nat::Symmetric`]: `masquerade fully-random`: every flow gets a random port, so the
//!   mapping the hub sees is not the one a peer would have to use.
//!
//! [`NatLab::block_udp`] drops every UDP packet forwarded for a site (both directions)
//! until [`NatLab::unblock_udp`]; [`NatLab::set_nat`] replaces a router's NAT rule and
//! [`NatLab::flush_mappings`] empties its conntrack table (`conntrack -F`), which together
//! make a NAT rebinding. Routers drop, they never reject: a blocked or unsolicited packet
//! gets no answer, as on most real networks.
//!
//! Names carry the process ID and a counter (tests run in parallel; a crashed earlier run
//! cannot collide), and [`Drop`] kills every process left in the namespaces and deletes
//! them (which removes their veths), so a failing assertion cleans up too. Needs root,
//! `ip`, `nft` and `conntrack` (scripts/setup.sh installs them).

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::process::{Pid, Signal, kill_process};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::support::{nft, sh};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How a site's router maps its private addresses to its public one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nat {
    /// `masquerade`: port-preserving, endpoint-independent mapping.
    Cone,
    /// `masquerade to :low-high`: endpoint-independent mapping onto a port of the range.
    ConePorts(u16, u16),
    /// `masquerade fully-random`: a new random port for every flow.
    Symmetric,
}

impl Nat {
    /// The postrouting rules, one per line (a port mapping needs a transport protocol:
    /// TCP and UDP get the range, everything else plain masquerade).
    fn rules(self) -> String {
        match self {
            Nat::Cone => "oifname \"wan\" masquerade\n".into(),
            Nat::ConePorts(low, high) => format!(
                "oifname \"wan\" meta l4proto {{ tcp, udp }} masquerade to :{low}-{high}\n\
                 oifname \"wan\" masquerade\n"
            ),
            Nat::Symmetric => "oifname \"wan\" masquerade fully-random\n".into(),
        }
    }
}

/// Which namespace, for [`NatLab::ns`] and [`NatLab::within`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// The public network, where the hub runs.
    Public,
    /// The router of site 0 or 1.
    Router(usize),
    /// The private network of site 0 or 1 (where a node runs).
    Site(usize),
}

/// The laboratory: one public namespace, two routers, two sites. Deleted on drop.
pub(crate) struct NatLab {
    public: String,
    routers: [String; 2],
    sites: [String; 2],
    /// veth names created in the root namespace, removed on drop if a setup step failed
    /// before they moved into a namespace.
    root_links: Vec<String>,
}

impl NatLab {
    /// The hub's (and the public network's first) address.
    pub(crate) const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    /// Builds the laboratory with the NAT behaviour of each site.
    pub(crate) fn new(nat: [Nat; 2]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}n{n}", std::process::id() % 1_000_000);
        let mut lab = Self {
            public: format!("bxl{tag}p"),
            routers: [format!("bxl{tag}r0"), format!("bxl{tag}r1")],
            sites: [format!("bxl{tag}s0"), format!("bxl{tag}s1")],
            root_links: Vec::new(),
        };
        for ns in lab.all() {
            sh("ip", &["netns", "add", &ns]);
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        let public = lab.public.clone();
        sh(
            "ip",
            &["-n", &public, "link", "add", "br0", "type", "bridge"],
        );
        let cidr = format!("{}/24", Self::PUBLIC_IP);
        sh("ip", &["-n", &public, "addr", "add", &cidr, "dev", "br0"]);
        sh("ip", &["-n", &public, "link", "set", "br0", "up"]);
        for (i, nat) in nat.into_iter().enumerate() {
            let (router, site) = (lab.routers[i].clone(), lab.sites[i].clone());
            // wan: router <-> the public bridge.
            let (wan, port) = (format!("bxl{tag}w{i}"), format!("bxl{tag}b{i}"));
            lab.veth(&wan, &router, "wan", &port, &public, &format!("port{i}"));
            sh(
                "ip",
                &[
                    "-n",
                    &public,
                    "link",
                    "set",
                    &format!("port{i}"),
                    "master",
                    "br0",
                ],
            );
            // lan: router <-> the site.
            let (lan, host) = (format!("bxl{tag}l{i}"), format!("bxl{tag}h{i}"));
            lab.veth(&lan, &router, "lan", &host, &site, "eth0");
            let wan_ip = format!("{}/24", lab.router_ip(i));
            sh("ip", &["-n", &router, "addr", "add", &wan_ip, "dev", "wan"]);
            let gw = Self::gateway(i);
            sh(
                "ip",
                &[
                    "-n",
                    &router,
                    "addr",
                    "add",
                    &format!("{gw}/24"),
                    "dev",
                    "lan",
                ],
            );
            let site_ip = format!("{}/24", lab.site_ip(i));
            sh("ip", &["-n", &site, "addr", "add", &site_ip, "dev", "eth0"]);
            sh(
                "ip",
                &[
                    "-n",
                    &site,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ],
            );
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &router,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            );
            lab.nft(i, &Self::ruleset(nat));
        }
        lab
    }

    /// A veth pair `a`/`b` created in the root namespace, moved into `ns_a`/`ns_b` and
    /// renamed there, and brought up.
    fn veth(&mut self, a: &str, ns_a: &str, name_a: &str, b: &str, ns_b: &str, name_b: &str) {
        self.root_links.push(a.to_string());
        sh("ip", &["link", "add", a, "type", "veth", "peer", "name", b]);
        for (link, ns, name) in [(a, ns_a, name_a), (b, ns_b, name_b)] {
            sh("ip", &["link", "set", link, "netns", ns]);
            sh("ip", &["-n", ns, "link", "set", link, "name", name]);
            sh("ip", &["-n", ns, "link", "set", name, "up"]);
        }
        self.root_links.pop();
    }

    fn all(&self) -> Vec<String> {
        let mut all = vec![self.public.clone()];
        all.extend(self.routers.iter().cloned());
        all.extend(self.sites.iter().cloned());
        all
    }

    /// The router's address on `lan` (the site's gateway).
    fn gateway(site: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 1 + site as u8, 0, 1)
    }

    /// The public address of site `i`'s router (what its NAT maps to).
    pub(crate) fn router_ip(&self, site: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 2 + site as u8)
    }

    /// The private address of the host in site `i`.
    pub(crate) fn site_ip(&self, site: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 1 + site as u8, 0, 2)
    }

    /// A namespace's name (for `ip netns exec`).
    pub(crate) fn ns(&self, host: Host) -> &str {
        match host {
            Host::Public => &self.public,
            Host::Router(i) => &self.routers[i],
            Host::Site(i) => &self.sites[i],
        }
    }

    /// The whole ruleset of a router: NAT, the stateful filter, an empty `block` chain.
    fn ruleset(nat: Nat) -> String {
        format!(
            "table ip natlab {{
  counter unsolicited {{
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
{nat}  }}
  chain block {{
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    jump block
    ct state established,related accept
    iifname \"lan\" oifname \"wan\" accept
    counter name unsolicited drop
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iifname \"lo\" accept
    ct state established,related accept
    iifname \"lan\" accept
    counter name unsolicited drop
  }}
}}
",
            nat = nat.rules()
        )
    }

    /// Loads an nftables script into site `i`'s router.
    fn nft(&self, site: usize, script: &str) {
        nft(self.ns(Host::Router(site)), script);
    }

    /// Replaces site `i`'s NAT rule (existing mappings stay until they expire or
    /// [`flush_mappings`](Self::flush_mappings)).
    pub(crate) fn set_nat(&self, site: usize, nat: Nat) {
        let mut script = String::from("flush chain ip natlab postrouting\n");
        for rule in nat.rules().lines() {
            script.push_str(&format!("add rule ip natlab postrouting {rule}\n"));
        }
        self.nft(site, &script);
    }

    /// Forgets every mapping of site `i`'s router (`conntrack -F`): the next packet of
    /// each flow gets a new one, from the current NAT rule.
    pub(crate) fn flush_mappings(&self, site: usize) {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                self.ns(Host::Router(site)),
                "conntrack",
                "-F",
            ],
        );
    }

    /// Narrows the link between site `i`'s router and the public network to `mtu` bytes
    /// (both ends of the veth; the public bridge follows its narrowest port). The router
    /// refuses to forward larger packets with DF set (ICMP "fragmentation needed", which
    /// the mesh ignores); larger frames bridged toward it are dropped without a word.
    pub(crate) fn set_wan_mtu(&self, site: usize, mtu: u16) {
        let mtu = mtu.to_string();
        let port = format!("port{site}");
        sh(
            "ip",
            &["-n", &self.routers[site], "link", "set", "wan", "mtu", &mtu],
        );
        sh(
            "ip",
            &["-n", &self.public, "link", "set", &port, "mtu", &mtu],
        );
    }

    /// A counter of `host`'s IP or TCP statistics (`/proc/net/snmp`, e.g. `Ip`
    /// `FragFails`: packets dropped because they needed fragmenting and had DF set).
    pub(crate) fn snmp(&self, host: Host, group: &str, name: &str) -> u64 {
        // /proc/thread-self, not /proc/self: the thread moved into the namespace.
        let text = self.within(host, || {
            fs::read_to_string("/proc/thread-self/net/snmp").unwrap()
        });
        let prefix = format!("{group}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (
            lines.next().unwrap_or_default(),
            lines.next().unwrap_or_default(),
        );
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {group} {name} in\n{text}"))
    }

    /// Drops every UDP packet the router of site `i` forwards, in and out.
    pub(crate) fn block_udp(&self, site: usize) {
        self.nft(site, "add rule ip natlab block meta l4proto udp drop\n");
    }

    /// Site `i`'s router drops UDP to and from `peer` (another site's router): the direct
    /// path between the sites is cut, the hub and TURN still work.
    pub(crate) fn block_udp_with(&self, site: usize, peer: Ipv4Addr) {
        self.nft(
            site,
            &format!(
                "add rule ip natlab block ip daddr {peer} meta l4proto udp drop\n\
                 add rule ip natlab block ip saddr {peer} meta l4proto udp drop\n"
            ),
        );
    }

    /// Lifts [`block_udp`](Self::block_udp).
    pub(crate) fn unblock_udp(&self, site: usize) {
        self.nft(site, "flush chain ip natlab block\n");
    }

    /// Packets site `i`'s router dropped because nothing inside had opened a mapping for
    /// them (a packet to an unmapped port of the router is its own, so counted on input).
    pub(crate) fn unsolicited_dropped(&self, site: usize) -> u64 {
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.routers[site],
                "nft",
                "list",
                "counter",
                "ip",
                "natlab",
                "unsolicited",
            ],
        );
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {out}"))
    }

    /// Runs `f` on a thread inside `host`'s namespace (sockets it opens stay in it).
    pub(crate) fn within<T: Send>(&self, host: Host, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns(host));
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = fs::File::open(&path).unwrap();
                move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// A quiet `ping` stream from `host` to `dst` running beside the test: `count` pings,
    /// `interval` apart, each waited for `wait` (ping's own units, seconds); its summary
    /// comes on stdout.
    pub(crate) fn ping_stream(
        &self,
        host: Host,
        dst: &str,
        count: u32,
        interval: &str,
        wait: &str,
    ) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", self.ns(host), "ping", "-n", "-q"])
            .args(["-c", &count.to_string(), "-i", interval, "-W", wait, dst])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `ping` from `host` to `dst`: true if `count` replies came back.
    pub(crate) fn ping(&self, host: Host, dst: &str, count: u32) -> bool {
        Command::new("ip")
            .args(["netns", "exec", self.ns(host), "ping", "-n", "-q"])
            .args(["-c", &count.to_string(), "-i", "0.2", "-W", "2", dst])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.all() {
            // Anything still running inside (a daemon a panicking test left) goes first.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Some(pid) = pid.parse().ok().and_then(Pid::from_raw) {
                        let _ = kill_process(pid, Signal::KILL);
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        for link in &self.root_links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use super::*;
    use crate::support::{can_run, wait_for};

    /// The public source address a site's datagram arrives from at two public sockets.
    fn mappings(lab: &NatLab, site: usize) -> [SocketAddr; 2] {
        let public = [0, 1].map(|_| {
            lab.within(Host::Public, || {
                UdpSocket::bind((NatLab::PUBLIC_IP, 0)).unwrap()
            })
        });
        let sender = lab.within(Host::Site(site), || {
            UdpSocket::bind("0.0.0.0:40404").unwrap()
        });
        public.map(|socket| {
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            sender
                .send_to(b"out", socket.local_addr().unwrap())
                .unwrap();
            let mut buf = [0u8; 8];
            socket.recv_from(&mut buf).unwrap().1
        })
    }

    #[test]
    fn routers_map_outbound_flows_and_drop_unsolicited_packets() {
        let Some(_machine) = can_run() else {
            return;
        };
        let lab = NatLab::new([Nat::Cone, Nat::Symmetric]);
        // Cone: the port survives and both destinations see one mapping.
        let cone = mappings(&lab, 0);
        let router0: SocketAddr = (lab.router_ip(0), 40404).into();
        assert_eq!(cone, [router0, router0]);
        // Symmetric: one mapping per destination, on the router's address.
        let symmetric = mappings(&lab, 1);
        assert!(symmetric.iter().all(|m| m.ip() == lab.router_ip(1)));
        assert_ne!(symmetric[0].port(), symmetric[1].port(), "{symmetric:?}");
        // A port-range cone: a port from the range, the same for every destination.
        lab.set_nat(0, Nat::ConePorts(30000, 30099));
        lab.flush_mappings(0);
        let ranged = mappings(&lab, 0);
        assert_eq!(ranged[0], ranged[1]);
        assert!((30000..=30099).contains(&ranged[0].port()), "{ranged:?}");

        // A stranger's datagram to the mapped address is dropped (and counted) by the router,
        // a reply to what the site sent passes.
        let site = lab.within(Host::Site(0), || UdpSocket::bind("0.0.0.0:40405").unwrap());
        site.set_nonblocking(true).unwrap();
        let friend = lab.within(Host::Public, || {
            UdpSocket::bind((NatLab::PUBLIC_IP, 0)).unwrap()
        });
        site.send_to(b"hi", friend.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let (_, mapped) = friend.recv_from(&mut buf).unwrap();
        let stranger = lab.within(Host::Public, || {
            UdpSocket::bind((NatLab::PUBLIC_IP, 0)).unwrap()
        });
        let dropped = lab.unsolicited_dropped(0);
        stranger.send_to(b"unsolicited", mapped).unwrap();
        wait_for(Duration::from_secs(5), "the router to drop it", || {
            (lab.unsolicited_dropped(0) > dropped).then_some(())
        });
        friend.send_to(b"reply", mapped).unwrap();
        let (len, from) = wait_for(Duration::from_secs(5), "the reply", || {
            site.recv_from(&mut buf).ok()
        });
        assert_eq!(&buf[..len], b"reply", "only the reply arrived");
        assert_eq!(from, friend.local_addr().unwrap());

        // UDP blocked at the site: nothing leaves; lifted: it does again.
        lab.block_udp(0);
        site.send_to(b"blocked", friend.local_addr().unwrap())
            .unwrap();
        friend.set_nonblocking(true).unwrap();
        lab.unblock_udp(0);
        site.send_to(b"open", friend.local_addr().unwrap()).unwrap();
        let len = wait_for(
            Duration::from_secs(5),
            "the datagram after the block",
            || friend.recv_from(&mut buf).ok().map(|(len, _)| len),
        );
        assert_eq!(&buf[..len], b"open", "the blocked datagram got through");
    }
}
