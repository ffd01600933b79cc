// SPDX-License-Identifier: Apache-2.0
//
// Bauxite's kernel lane classifier: a TC program for the egress of `bauxite0` (a TUN
// device: packets start at the IP header) or of an Ethernet interface (the loader writes
// the L2 header length into `BAUXITE_CONFIG`).
//
// It mirrors conduit's userspace classifier (conduit/src/scheduler/classify.rs and the
// IP view of conduit/src/ip.rs) rule for rule, first match wins:
//   1. IP length < 100 bytes, or ICMP (IPv4 protocol 1) / ICMPv6 (IPv6 next header 58):
//      Critical;
//   2. TCP/UDP whose destination, then source, port is in `BAUXITE_PORTS` (userspace
//      writes 5006 -> Telemetry plus the configured rules): that lane;
//   3. everything else, malformed packets included: Bulk.
// It writes the lane's priority into skb->priority (so a prio qdisc serves Critical first),
// counts packets and IP bytes per lane, and always returns TC_ACT_OK: it never drops.
//
// The same `classify` also runs as `bauxite_steer`, the TUN device's steering program
// (TUNSETSTEERINGEBPF, a socket filter whose return value is the queue index): Critical
// packets go to queue 0, everything else to queue 1, so a bulk flood that fills its own
// ring in the TUN driver cannot drop a Critical packet (docs/ebpf.md).
//
// The layouts of the map values are mirrored by ebpf/src/abi.rs (repr(C)); keep them equal.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define LANE_CRITICAL 0
#define LANE_TELEMETRY 1
#define LANE_BULK 2
#define LANE_COUNT 3

#define SMALL_PACKET_BYTES 100
#define IPV4_MIN_HEADER 20
#define IPV6_HEADER 40
#define TCP_MIN_HEADER 20
#define UDP_HEADER 8
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58

// abi.rs `Config`.
struct config {
	__u32 l2_len;
	__u32 priority[LANE_COUNT];
};

// abi.rs `LaneCount`.
struct lane_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} BAUXITE_CONFIG SEC(".maps");

// Port (host byte order) -> lane; looked up for the destination port, then the source.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u32);
} BAUXITE_PORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LANE_COUNT);
	__type(key, __u32);
	__type(value, struct lane_count);
} BAUXITE_STATS SEC(".maps");

static __always_inline __u32 port_lane(__u16 port, __u32 *lane)
{
	__u32 *found = bpf_map_lookup_elem(&BAUXITE_PORTS, &port);
	if (!found || *found >= LANE_COUNT)
		return 0;
	*lane = *found;
	return 1;
}

// The lane of the `len` bytes of IP packet starting at offset `l3` of the skb.
static __always_inline __u32 classify(struct __sk_buff *skb, __u32 l3, __u32 len)
{
	if (len < SMALL_PACKET_BYTES)
		return LANE_CRITICAL;

	__u8 first;
	if (bpf_skb_load_bytes(skb, l3, &first, 1) < 0)
		return LANE_BULK;

	__u32 header_len;
	__u32 packet_len; // the declared length; link padding after it is not the packet
	__u8 protocol;
	int ports_possible;
	__u8 version = first >> 4;

	if (version == 4) {
		__u8 h[IPV4_MIN_HEADER];
		if (len < IPV4_MIN_HEADER || bpf_skb_load_bytes(skb, l3, h, sizeof(h)) < 0)
			return LANE_BULK;
		header_len = (__u32)(h[0] & 0x0f) * 4;
		if (header_len < IPV4_MIN_HEADER)
			return LANE_BULK;
		packet_len = ((__u32)h[2] << 8) | h[3];
		if (packet_len < header_len || packet_len > len)
			return LANE_BULK;
		protocol = h[9];
		if (protocol == PROTO_ICMP)
			return LANE_CRITICAL;
		// Later fragments start mid-segment: their first bytes are payload, not ports.
		ports_possible = ((((__u32)h[6] << 8) | h[7]) & 0x1fff) == 0;
	} else if (version == 6) {
		__u8 h[8];
		if (len < IPV6_HEADER || bpf_skb_load_bytes(skb, l3, h, sizeof(h)) < 0)
			return LANE_BULK;
		header_len = IPV6_HEADER;
		packet_len = IPV6_HEADER + (((__u32)h[4] << 8) | h[5]);
		if (packet_len > len)
			return LANE_BULK;
		protocol = h[6];
		if (protocol == PROTO_ICMPV6)
			return LANE_CRITICAL;
		ports_possible = 1;
	} else {
		return LANE_BULK;
	}

	__u32 needed;
	if (protocol == PROTO_TCP)
		needed = TCP_MIN_HEADER;
	else if (protocol == PROTO_UDP)
		needed = UDP_HEADER;
	else
		return LANE_BULK;
	// Ports count only when the whole minimal L4 header lies inside the declared length.
	if (!ports_possible || packet_len - header_len < needed)
		return LANE_BULK;

	__u8 p[4];
	// header_len <= 60 (IHL is 4 bits), so the offset stays bounded for the verifier.
	if (bpf_skb_load_bytes(skb, l3 + (header_len & 0x7f), p, sizeof(p)) < 0)
		return LANE_BULK;
	__u16 src = ((__u16)p[0] << 8) | p[1];
	__u16 dst = ((__u16)p[2] << 8) | p[3];
	__u32 lane;
	if (port_lane(dst, &lane) || port_lane(src, &lane))
		return lane;
	return LANE_BULK;
}

SEC("classifier")
int bauxite_lanes(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&BAUXITE_CONFIG, &zero);
	if (!cfg)
		return TC_ACT_OK;

	__u32 l2 = cfg->l2_len;
	__u32 len = skb->len > l2 ? skb->len - l2 : 0;
	__u32 lane = classify(skb, l2, len);
	if (lane >= LANE_COUNT)
		lane = LANE_BULK;

	skb->priority = cfg->priority[lane];

	struct lane_count *count = bpf_map_lookup_elem(&BAUXITE_STATS, &lane);
	if (count) {
		// Per-CPU slot: no other CPU writes it, so plain increments are exact.
		count->packets += 1;
		count->bytes += len;
	}
	return TC_ACT_OK;
}

// Queue indexes of a two-queue bauxite0 (abi.rs `STEER_QUEUE_*`): the daemon opens the
// Critical queue first (index 0) and reads it before the other.
#define STEER_QUEUE_CRITICAL 0
#define STEER_QUEUE_OTHER 1

// The TUN driver runs this in tun_select_queue for every packet bauxite0 transmits (the
// skb starts at the IP header: a TUN device has no link header) and takes the result
// modulo its number of queues. It neither counts nor writes the skb: the TC program on
// the same egress does both.
SEC("socket")
int bauxite_steer(struct __sk_buff *skb)
{
	return classify(skb, 0, skb->len) == LANE_CRITICAL ? STEER_QUEUE_CRITICAL : STEER_QUEUE_OTHER;
}

char LICENSE[] SEC("license") = "Apache-2.0";
