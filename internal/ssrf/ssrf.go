// Package ssrf decides which IP addresses a webhook may be delivered to.
//
// The table follows the IANA IPv4 and IPv6 Special-Purpose Address
// Registries (as of 2026): every entry that is not globally reachable is
// Private (loopback, private-use, shared, link-local, unique-local: what a
// developer's receiver may use) or Forbidden; the registries' globally
// reachable entries inside a larger reserved block (anycast services,
// AS112, AMT, ORCHIDv2) stay Public. Multicast, the IPv4-compatible and
// IPv4-translated forms, 6to4 and Teredo (which can carry any IPv4
// address), and known cloud metadata endpoints are Forbidden as well.
// IPv4-mapped addresses and the NAT64 well-known prefix are judged by the
// IPv4 address they carry.
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

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

// entry is one row of the table: a prefix and its verdict. The most
// specific prefix containing an address decides.
type entry struct {
	prefix  netip.Prefix
	verdict Verdict
}

func e(prefix string, v Verdict) entry { return entry{netip.MustParsePrefix(prefix), v} }

var table = func() []entry {
	t := []entry{
		// IPv4 Special-Purpose Address Registry.
		e("0.0.0.0/8", Forbidden),          // "this network" (0.0.0.0/32: this host)
		e("10.0.0.0/8", Private),           // private-use
		e("100.64.0.0/10", Private),        // shared address space (CGNAT)
		e("127.0.0.0/8", Private),          // loopback
		e("169.254.0.0/16", Private),       // link-local
		e("172.16.0.0/12", Private),        // private-use
		e("192.0.0.0/24", Forbidden),       // IETF protocol assignments (incl. /29 service continuity, .8 dummy, .170-.171 NAT64 discovery)
		e("192.0.0.9/32", Public),          // PCP anycast: globally reachable
		e("192.0.0.10/32", Public),         // TURN anycast: globally reachable
		e("192.0.2.0/24", Forbidden),       // documentation (TEST-NET-1)
		e("192.88.99.0/24", Forbidden),     // deprecated 6to4 relay anycast
		e("192.168.0.0/16", Private),       // private-use
		e("198.18.0.0/15", Forbidden),      // benchmarking
		e("198.51.100.0/24", Forbidden),    // documentation (TEST-NET-2)
		e("203.0.113.0/24", Forbidden),     // documentation (TEST-NET-3)
		e("240.0.0.0/4", Forbidden),        // reserved
		e("255.255.255.255/32", Forbidden), // limited broadcast
		e("224.0.0.0/4", Forbidden),        // multicast (its own registry)

		// IPv6 Special-Purpose Address Registry.
		e("::/128", Forbidden),          // unspecified
		e("::1/128", Private),           // loopback
		e("::/96", Forbidden),           // IPv4-compatible (deprecated)
		e("::ffff:0:0:0/96", Forbidden), // IPv4-translated (SIIT)
		e("64:ff9b:1::/48", Forbidden),  // local-use IPv4/IPv6 translation
		e("100::/64", Forbidden),        // discard-only
		e("100:0:0:1::/64", Forbidden),  // dummy prefix
		e("2001::/23", Forbidden),       // IETF protocol assignments
		e("2001::/32", Forbidden),       // Teredo: may carry any IPv4 address
		e("2001:1::1/128", Public),      // PCP anycast
		e("2001:1::2/128", Public),      // TURN anycast
		e("2001:1::3/128", Public),      // DNS-SD SRP anycast
		e("2001:2::/48", Forbidden),     // benchmarking
		e("2001:3::/32", Public),        // AMT
		e("2001:4:112::/48", Public),    // AS112-v6
		e("2001:10::/28", Forbidden),    // ORCHID (deprecated)
		e("2001:20::/28", Public),       // ORCHIDv2
		e("2001:30::/28", Public),       // drone remote ID entity tags
		e("2001:db8::/32", Forbidden),   // documentation
		e("2002::/16", Forbidden),       // 6to4: may carry any IPv4 address
		e("3fff::/20", Forbidden),       // documentation
		e("5f00::/16", Forbidden),       // segment routing SIDs
		e("fc00::/7", Private),          // unique-local
		e("fe80::/10", Private),         // link-local
		e("fec0::/10", Private),         // site-local (deprecated)
		e("ff00::/8", Forbidden),        // multicast
	}
	// Most specific first: the first match decides.
	slices.SortStableFunc(t, func(a, b entry) int { return b.prefix.Bits() - a.prefix.Bits() })
	return t
}()

// Cloud metadata and credential endpoints: never dialled, even when
// private destinations are allowed.
var metadata = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, ...
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud
	netip.MustParseAddr("168.63.129.16"),   // Azure WireServer
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task credentials
	netip.MustParseAddr("169.254.170.23"),  // AWS EKS Pod Identity
	netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity over IPv6
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Classify says how addr may be used.
func Classify(addr netip.Addr) Verdict {
	if !addr.IsValid() {
		return Forbidden
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() && nat64.Contains(addr) {
		b := addr.As16()
		addr = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	if slices.Contains(metadata, addr) {
		return Forbidden
	}
	for _, en := range table {
		if en.prefix.Contains(addr) {
			return en.verdict
		}
	}
	return Public
}

// Resolver resolves host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dialer connects only to addresses the table allows: every address a host
// resolves to must be Public (or Private, when AllowPrivate), and the
// connection goes to one of those very addresses, so there is no second
// lookup for a rebinding DNS server to answer differently.
type Dialer struct {
	// Dialer makes the connections.
	Dialer *net.Dialer
	// Resolver resolves names. Defaults to net.DefaultResolver.
	Resolver Resolver
	// AllowPrivate allows Private addresses (local development).
	AllowPrivate bool
	// Blocked is the error a refusal wraps; PrivateHint ends the message
	// of a refused Private address (how to allow it).
	Blocked     error
	PrivateHint string
}

// DialContext is a net/http Transport's DialContext.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		r := d.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		addrs, err = lookup(ctx, r, host)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolving %s: no addresses", host)
		}
	}
	for _, a := range addrs {
		switch Classify(a) {
		case Forbidden:
			return nil, fmt.Errorf("%w: %s resolves to %s, which is never dialled", d.Blocked, host, a)
		case Private:
			if !d.AllowPrivate {
				return nil, fmt.Errorf("%w: %s resolves to private address %s (%s)", d.Blocked, host, a, d.PrivateHint)
			}
		}
	}
	var firstErr error
	for _, a := range addrs {
		conn, err := d.Dialer.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// lookup resolves host, containing a panic of the Resolver: it runs on
// net/http's dialling goroutine, where nothing else would.
func lookup(ctx context.Context, r Resolver, host string) (addrs []netip.Addr, err error) {
	defer func() {
		if recover() != nil {
			addrs, err = nil, errors.New("the Resolver panicked")
		}
	}()
	return r.LookupNetIP(ctx, "ip", host)
}
