package ssrf

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]Verdict{
		"93.184.216.34": Public, "2606:2800:220:1:248:1893:25c8:1946": Public, "8.8.8.8": Public,
		"127.0.0.1": Private, "127.255.0.9": Private, "::1": Private,
		"10.1.2.3": Private, "172.16.0.1": Private, "172.31.255.255": Private, "192.168.1.1": Private,
		"100.64.0.1": Private, "100.127.255.254": Private,
		"169.254.1.1": Private, "fe80::1": Private, "fd12:3456::1": Private,
		"::ffff:10.0.0.1": Private, "::ffff:127.0.0.1": Private, "64:ff9b::a00:1": Private,
		"169.254.169.254": Forbidden, "fd00:ec2::254": Forbidden, "100.100.100.200": Forbidden, "192.0.0.192": Forbidden,
		"::ffff:169.254.169.254": Forbidden, "64:ff9b::a9fe:a9fe": Forbidden,
		"0.0.0.0": Forbidden, "::": Forbidden, "0.1.2.3": Forbidden,
		"224.0.0.1": Forbidden, "239.255.255.250": Forbidden, "ff02::1": Forbidden,
		"255.255.255.255": Forbidden, "240.0.0.1": Forbidden,
		"192.0.2.1": Forbidden, "198.51.100.1": Forbidden, "203.0.113.1": Forbidden, "198.18.0.1": Forbidden,
		"2001:db8::1": Forbidden, "2002:a00:1::": Forbidden, "2001:0:4136:e378::1": Forbidden,
		"168.63.129.16": Forbidden, "169.254.170.2": Forbidden, "169.254.170.23": Forbidden, "fd00:ec2::23": Forbidden,
		"::7f00:1": Forbidden, "::ffff:0:7f00:1": Forbidden, "64:ff9b:1::a00:1": Forbidden, "fec0::1": Private,
		"172.15.255.255": Public, "172.32.0.0": Public, "100.63.255.255": Public, "100.128.0.0": Public,
	} {
		require.Equal(t, want, Classify(netip.MustParseAddr(addr)), addr)
	}
}

// TestClassifyRegistries takes one address (two for blocks whose edges
// matter) from every entry of the IANA special-purpose registries, and
// from the globally reachable entries carved out of them.
func TestClassifyRegistries(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		addr  string
		want  Verdict
		entry string
	}{
		// IPv4
		{"0.0.0.0", Forbidden, "this host on this network"},
		{"0.255.255.255", Forbidden, "this network"},
		{"10.255.255.255", Private, "private-use"},
		{"100.64.0.0", Private, "shared address space"},
		{"127.0.0.1", Private, "loopback"},
		{"169.254.0.1", Private, "link local"},
		{"172.16.0.0", Private, "private-use"},
		{"192.0.0.1", Forbidden, "IPv4 service continuity prefix"},
		{"192.0.0.8", Forbidden, "IPv4 dummy address"},
		{"192.0.0.9", Public, "PCP anycast (globally reachable)"},
		{"192.0.0.10", Public, "TURN anycast (globally reachable)"},
		{"192.0.0.170", Forbidden, "NAT64/DNS64 discovery"},
		{"192.0.0.171", Forbidden, "NAT64/DNS64 discovery"},
		{"192.0.0.255", Forbidden, "IETF protocol assignments"},
		{"192.0.2.255", Forbidden, "documentation (TEST-NET-1)"},
		{"192.31.196.1", Public, "AS112-v4 (globally reachable)"},
		{"192.52.193.1", Public, "AMT (globally reachable)"},
		{"192.88.99.1", Forbidden, "deprecated 6to4 relay anycast"},
		{"192.168.255.255", Private, "private-use"},
		{"192.175.48.1", Public, "direct delegation AS112 (globally reachable)"},
		{"198.19.255.255", Forbidden, "benchmarking"},
		{"198.51.100.0", Forbidden, "documentation (TEST-NET-2)"},
		{"203.0.113.255", Forbidden, "documentation (TEST-NET-3)"},
		{"240.0.0.0", Forbidden, "reserved"},
		{"255.255.255.254", Forbidden, "reserved"},
		{"255.255.255.255", Forbidden, "limited broadcast"},
		// IPv6
		{"::1", Private, "loopback"},
		{"::", Forbidden, "unspecified"},
		{"::ffff:192.0.2.1", Forbidden, "IPv4-mapped: judged by the IPv4 address"},
		{"::ffff:8.8.8.8", Public, "IPv4-mapped: judged by the IPv4 address"},
		{"64:ff9b::808:808", Public, "IPv4-IPv6 translation: judged by the IPv4 address"},
		{"64:ff9b::7f00:1", Private, "IPv4-IPv6 translation: judged by the IPv4 address"},
		{"64:ff9b:1::1", Forbidden, "local-use IPv4-IPv6 translation"},
		{"100::1", Forbidden, "discard-only"},
		{"100:0:0:1::1", Forbidden, "dummy IPv6 prefix"},
		{"2001::1", Forbidden, "TEREDO"},
		{"2001:1::1", Public, "PCP anycast (globally reachable)"},
		{"2001:1::2", Public, "TURN anycast (globally reachable)"},
		{"2001:1::3", Public, "DNS-SD SRP anycast (globally reachable)"},
		{"2001:1::4", Forbidden, "IETF protocol assignments"},
		{"2001:2::1", Forbidden, "benchmarking"},
		{"2001:2:0:ffff::1", Forbidden, "benchmarking"},
		{"2001:3::1", Public, "AMT (globally reachable)"},
		{"2001:4:112::1", Public, "AS112-v6 (globally reachable)"},
		{"2001:10::1", Forbidden, "deprecated ORCHID"},
		{"2001:20::1", Public, "ORCHIDv2 (globally reachable)"},
		{"2001:30::1", Public, "drone remote ID entity tags (globally reachable)"},
		{"2001:1ff:ffff::1", Forbidden, "IETF protocol assignments, end of 2001::/23"},
		{"2001:200::1", Public, "just past 2001::/23"},
		{"2001:db8:ffff::1", Forbidden, "documentation"},
		{"2002:c000:201::1", Forbidden, "6to4"},
		{"2620:4f:8000::1", Public, "direct delegation AS112 (globally reachable)"},
		{"3fff::1", Forbidden, "documentation"},
		{"3fff:fff:ffff::1", Forbidden, "documentation, end of 3fff::/20"},
		{"3fff:1000::1", Public, "just past 3fff::/20"},
		{"5f00::1", Forbidden, "segment routing SIDs"},
		{"fc00::1", Private, "unique-local"},
		{"fdff:ffff::1", Private, "unique-local"},
		{"fe80::1", Private, "link-local"},
		{"febf::1", Private, "link-local"},
		{"ff05::2", Forbidden, "multicast"},
	} {
		require.Equal(t, c.want, Classify(netip.MustParseAddr(c.addr)), "%s (%s)", c.addr, c.entry)
	}
	require.Equal(t, Forbidden, Classify(netip.Addr{}), "the zero Addr")
}
