//! The map layouts shared with `bpf/classifier.c`, `repr(C)` and free of `std` so the same
//! definitions would serve a Rust kernel program. Keep them equal to the C structs.
//!
//! aya reads and writes map values as plain-old-data; its `Pod` covers integers and arrays
//! of them, so the loader converts these structs to word arrays rather than implementing
//! `Pod` with `unsafe`.

/// Lanes the program distinguishes (Critical, Telemetry, Bulk: `Lane::index` order).
pub const LANE_COUNT: usize = 3;

/// Name of the program (its `SEC("classifier")` function), also how a stale attachment
/// left by a killed daemon is found.
pub const PROGRAM_NAME: &str = "bauxite_lanes";

/// Name of the TUN steering program (its `SEC("socket")` function): returns
/// [`STEER_QUEUE_CRITICAL`] for a Critical packet, [`STEER_QUEUE_OTHER`] for any other.
pub const STEER_PROGRAM_NAME: &str = "bauxite_steer";
/// The queue the steering program gives Critical packets (conduit's `CRITICAL_QUEUE`).
pub const STEER_QUEUE_CRITICAL: u32 = 0;
/// The queue the steering program gives every other packet (conduit's `OTHER_QUEUE`).
pub const STEER_QUEUE_OTHER: u32 = 1;

/// Array map (one entry) holding [`Config`].
pub const CONFIG_MAP: &str = "BAUXITE_CONFIG";
/// Hash map: port (host order, `u16`) -> lane index (`u32`).
pub const PORTS_MAP: &str = "BAUXITE_PORTS";
/// Per-CPU array: lane index -> [`LaneCount`].
pub const STATS_MAP: &str = "BAUXITE_STATS";
/// Capacity of [`PORTS_MAP`] (its `max_entries`).
pub const MAX_PORT_RULES: usize = 1024;

/// `skb->priority` for Critical: `TC_PRIO_INTERACTIVE`, band 0 of a default `prio` qdisc.
pub const PRIORITY_CRITICAL: u32 = 6;
/// `skb->priority` for Telemetry: `TC_PRIO_INTERACTIVE_BULK`, band 1.
pub const PRIORITY_TELEMETRY: u32 = 4;
/// `skb->priority` for Bulk: `TC_PRIO_BULK`, band 2.
pub const PRIORITY_BULK: u32 = 2;

/// `struct config`: how to find the IP header, and the priority each lane gets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes before the IP header: 0 on a TUN device, 14 on Ethernet.
    pub l2_len: u32,
    /// `skb->priority` written for each lane, by lane index.
    pub priority: [u32; LANE_COUNT],
}

impl Config {
    /// The default priorities for a link with `l2_len` bytes of link header.
    pub const fn new(l2_len: u32) -> Self {
        Self {
            l2_len,
            priority: [PRIORITY_CRITICAL, PRIORITY_TELEMETRY, PRIORITY_BULK],
        }
    }

    /// The struct as the words the map stores, in field order.
    pub const fn to_words(self) -> [u32; 1 + LANE_COUNT] {
        [
            self.l2_len,
            self.priority[0],
            self.priority[1],
            self.priority[2],
        ]
    }
}

/// `struct lane_count`: what one CPU counted for one lane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneCount {
    /// Packets.
    pub packets: u64,
    /// IP bytes (link header excluded).
    pub bytes: u64,
}

impl LaneCount {
    /// The struct from the words the map stores.
    pub const fn from_words(words: [u64; 2]) -> Self {
        Self {
            packets: words[0],
            bytes: words[1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_forms_match_the_struct_layouts() {
        assert_eq!(size_of::<Config>(), size_of::<[u32; 4]>());
        assert_eq!(size_of::<LaneCount>(), size_of::<[u64; 2]>());
        assert_eq!(Config::new(14).to_words(), [14, 6, 4, 2]);
        assert_eq!(
            LaneCount::from_words([3, 300]),
            LaneCount {
                packets: 3,
                bytes: 300
            }
        );
    }
}
