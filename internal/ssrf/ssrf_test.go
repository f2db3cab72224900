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
