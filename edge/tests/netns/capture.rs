//! An on-path observer: `tcpdump` writes the datagrams arriving at a node to a pcap
//! file, and [`Capture::data_packet`] takes a Bauxite data packet out of it — what an
//! attacker on the wire would record to replay or tamper with.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running `tcpdump`; stopped on drop.
pub(crate) struct Capture {
    file: PathBuf,
    child: Child,
}

impl Capture {
    /// Captures UDP to `port` on `iface` inside namespace `ns`.
    pub(crate) fn start(ns: &str, iface: &str, port: u16, file: PathBuf) -> Self {
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "tcpdump", "-i", iface, "-U", "-n", "-Z", "root",
            ])
            .arg("-w")
            .arg(&file)
            .args(["udp", "dst", "port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (install it with scripts/setup.sh)");
        Self { file, child }
    }

    /// The UDP payload of the first captured data packet (type 0x83) that carries more
    /// than a keepalive, if one has been written yet.
    pub(crate) fn data_packet(&self) -> Option<Vec<u8>> {
        let bytes = fs::read(&self.file).ok()?;
        udp_payloads(&bytes)
            .into_iter()
            .find(|p| p.first() == Some(&0x83) && p.len() > 29 + 20)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// UDP payloads of the complete Ethernet/IPv4 records in a pcap file (microsecond,
/// little-endian, as tcpdump writes on x86).
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    let u32_at = |i: usize| -> Option<usize> {
        let b = pcap.get(i..i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if pcap.get(..4) != Some(&[0xd4, 0xc3, 0xb2, 0xa1]) {
        return out;
    }
    while let Some(len) = u32_at(at + 8) {
        let Some(frame) = pcap.get(at + 16..at + 16 + len) else {
            break;
        };
        at += 16 + len;
        // Ethernet (14) + IPv4 (IHL * 4) + UDP (8).
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if let Some(payload) = frame.get(14 + ihl + 8..) {
            out.push(payload.to_vec());
        }
    }
    out
}
