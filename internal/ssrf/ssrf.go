// Package ssrf decides which IP addresses a webhook may be delivered to.
package ssrf

import "net/netip"

// Verdict says whether an address may be dialled.
type Verdict int

const (
	// Public addresses may always be dialled.
	Public Verdict = iota
	// Private addresses (loopback, private, link-local, CGNAT, unique
	// local) may be dialled only when private destinations are allowed.
	Private
	// Forbidden addresses are never dialled: cloud metadata endpoints,
	// multicast, unspecified, broadcast, documentation and other
	// reserved ranges.
	Forbidden
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

var (
	// Cloud metadata and credential endpoints: never dialled, even when
	// private destinations are allowed.
	metadata = []netip.Addr{
		netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, ...
		netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
		netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud
		netip.MustParseAddr("168.63.129.16"),   // Azure WireServer
		netip.MustParseAddr("169.254.170.2"),   // AWS ECS task credentials
		netip.MustParseAddr("169.254.170.23"),  // AWS EKS Pod Identity
		netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity over IPv6
	}
	private = prefixes(
		"127.0.0.0/8", "::1/128", // loopback
		"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", // RFC 1918
		"100.64.0.0/10",               // CGNAT, RFC 6598
		"169.254.0.0/16", "fe80::/10", // link-local
		"fc00::/7",  // unique local
		"fec0::/10", // site-local (deprecated)
	)
	forbidden = prefixes(
		"0.0.0.0/8", "::/128", // this network, unspecified
		"192.0.0.0/24",                                      // IETF protocol assignments
		"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", // documentation
		"198.18.0.0/15",           // benchmarking
		"240.0.0.0/4",             // reserved, and broadcast
		"224.0.0.0/4", "ff00::/8", // multicast
		"2001:db8::/32", "100::/64", // documentation, discard
		"2002::/16",       // 6to4: may embed any IPv4 address
		"2001::/32",       // Teredo: may embed any IPv4 address
		"::/96",           // IPv4-compatible (deprecated)
		"::ffff:0:0:0/96", // IPv4-translated (SIIT)
		"64:ff9b:1::/48",  // local-use NAT64: may embed private IPv4
	)
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
)

// Classify says how addr may be used. IPv4-mapped IPv6 addresses and
// addresses in the NAT64 well-known prefix are judged by the IPv4 address
// they carry.
func Classify(addr netip.Addr) Verdict {
	addr = addr.Unmap().WithZone("")
	if addr.Is6() && nat64.Contains(addr) {
		b := addr.As16()
		addr = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	for _, m := range metadata {
		if addr == m {
			return Forbidden
		}
	}
	for _, p := range private { // before forbidden: ::1 is inside ::/96
		if p.Contains(addr) {
			return Private
		}
	}
	for _, p := range forbidden {
		if p.Contains(addr) {
			return Forbidden
		}
	}
	return Public
}
