//! Where other nodes can dial this node: the addresses it reports to the hub
//! (`SetEndpoint`), chosen from its interfaces and its UDP listen address.
//!
//! Invariant: a reported address is one this node's UDP socket receives on and another
//! node could send to — never loopback (unless the hub itself is on loopback, i.e. a
//! single-machine mesh), link-local, unspecified, or an address of the mesh itself (the
//! TUN device, anything inside the mesh prefix), so a tunnel is never carried inside
//! itself. The choice ([`local_candidates`]) is pure; [`interfaces`] reads the system.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// One address of one network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// The address.
    pub ip: IpAddr,
    /// Whether the interface is up.
    pub up: bool,
}

/// What to leave out: the mesh's own addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshExclusion {
    /// The TUN device's name (`bauxite0`).
    pub tun_name: String,
    /// The node's virtual IP.
    pub virtual_ip: Ipv4Addr,
    /// The mesh prefix length.
    pub prefix: u8,
}

impl MeshExclusion {
    fn covers(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(v4) = ip else {
            return false;
        };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(v4) & mask == u32::from(self.virtual_ip) & mask
    }
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// The addresses to report, in interface order, for a socket bound to `listen`.
///
/// A socket bound to one address is reachable there only; one bound to `0.0.0.0` on
/// every IPv4 address; one bound to `[::]` on every address (dual stack).
pub fn local_candidates(
    interfaces: &[InterfaceAddr],
    listen: SocketAddr,
    hub_on_loopback: bool,
    exclude: &MeshExclusion,
) -> Vec<SocketAddr> {
    let usable = |ip: IpAddr| {
        !ip.is_unspecified()
            && !ip.is_multicast()
            && !link_local(ip)
            && (hub_on_loopback || !ip.is_loopback())
            && !exclude.covers(ip)
    };
    if !listen.ip().is_unspecified() {
        return usable(listen.ip()).then_some(listen).into_iter().collect();
    }
    let mut out = Vec::new();
    for iface in interfaces {
        let family_ok = match (listen.ip(), iface.ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), _) => true,
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        };
        let addr = SocketAddr::new(iface.ip, listen.port());
        if iface.up
            && iface.name != exclude.tun_name
            && family_ok
            && usable(iface.ip)
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

/// The listen port the hub may pair with the address it sees this node's calls come
/// from: 0 when the socket listens on loopback only and the hub is elsewhere (the hub
/// would see another address, which the socket does not receive on).
pub fn reportable_port(listen: SocketAddr, hub_on_loopback: bool) -> u32 {
    if listen.ip().is_loopback() && !hub_on_loopback {
        0
    } else {
        u32::from(listen.port())
    }
}

/// Whether the hub URL names a loopback host (`https://127.0.0.1:7443`, `localhost`).
pub fn hub_on_loopback(url: &str) -> bool {
    let Ok(addr) = bauxite_dispatch_api::client::hub_addr(url) else {
        return false;
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// This machine's interface addresses (IO; an unreadable list counts as empty).
pub fn interfaces() -> Vec<InterfaceAddr> {
    let Ok(list) = getifaddrs::getifaddrs() else {
        return Vec::new();
    };
    list.filter_map(|iface| {
        let ip = iface.address.ip_addr()?;
        Some(InterfaceAddr {
            name: iface.name,
            ip,
            up: iface.flags.contains(getifaddrs::InterfaceFlags::UP),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ip: &str) -> InterfaceAddr {
        InterfaceAddr {
            name: name.into(),
            ip: ip.parse().unwrap(),
            up: true,
        }
    }

    fn mesh() -> MeshExclusion {
        MeshExclusion {
            tun_name: "bauxite0".into(),
            virtual_ip: Ipv4Addr::new(100, 64, 0, 7),
            prefix: 10,
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn reports_reachable_interface_addresses_with_the_listen_port() {
        let mut down = iface("wlan0", "192.168.9.9");
        down.up = false;
        let all = [
            iface("lo", "127.0.0.1"),
            iface("eth0", "10.0.0.7"),
            iface("eth0", "fe80::1"),
            iface("eth1", "2001:db8::7"),
            iface("bauxite0", "100.64.0.7"),
            iface("other", "100.70.0.1"),
            iface("eth2", "169.254.3.4"),
            down,
            iface("eth3", "192.168.1.7"),
        ];
        let v4 = "0.0.0.0:51820".parse().unwrap();
        assert_eq!(
            local_candidates(&all, v4, false, &mesh()),
            addrs(&["10.0.0.7:51820", "192.168.1.7:51820"])
        );
        assert_eq!(
            local_candidates(&all, v4, true, &mesh()),
            addrs(&["127.0.0.1:51820", "10.0.0.7:51820", "192.168.1.7:51820"]),
            "loopback when the hub is on loopback (one machine)"
        );
        let dual = "[::]:51820".parse().unwrap();
        assert_eq!(
            local_candidates(&all, dual, false, &mesh()),
            addrs(&["10.0.0.7:51820", "[2001:db8::7]:51820", "192.168.1.7:51820"])
        );
        // A socket bound to one address is reachable there only.
        let one = "10.0.0.7:4000".parse().unwrap();
        assert_eq!(local_candidates(&all, one, false, &mesh()), vec![one]);
        let lo = "127.0.0.1:4000".parse().unwrap();
        assert!(local_candidates(&all, lo, false, &mesh()).is_empty());
        assert_eq!(local_candidates(&all, lo, true, &mesh()), vec![lo]);
    }

    #[test]
    fn the_observed_address_is_paired_only_when_the_socket_receives_there() {
        assert_eq!(
            reportable_port("0.0.0.0:51820".parse().unwrap(), false),
            51820
        );
        assert_eq!(
            reportable_port("127.0.0.1:51820".parse().unwrap(), false),
            0
        );
        assert_eq!(
            reportable_port("127.0.0.1:51820".parse().unwrap(), true),
            51820
        );
        assert!(hub_on_loopback("https://127.0.0.1:7443"));
        assert!(hub_on_loopback("https://localhost:7443/"));
        assert!(hub_on_loopback("https://[::1]:7443"));
        assert!(!hub_on_loopback("https://10.0.0.1:7443"));
        assert!(!hub_on_loopback("https://hub.example:7443"));
    }

    #[test]
    fn interfaces_are_read_with_their_addresses() {
        let list = interfaces();
        assert!(list.iter().all(|i| !i.name.is_empty()));
        // `lo`, once up (it is in every namespace but a fresh one), carries 127.0.0.1.
        if list.iter().any(|i| i.name == "lo" && i.up) {
            assert!(
                list.iter().any(|i| i.ip == IpAddr::from([127, 0, 0, 1])),
                "{list:?}"
            );
        }
    }
}
