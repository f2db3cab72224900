package canon

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTarget(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		"https://buyer.example.com/adcp/webhook/op_abc":  {"https://buyer.example.com/adcp/webhook/op_abc", "buyer.example.com"},
		"HTTPS://Buyer.Example.COM/Path":                 {"https://buyer.example.com/Path", "buyer.example.com"},
		"https://buyer.example.com:443/a":                {"https://buyer.example.com/a", "buyer.example.com"},
		"http://buyer.example.com:80/a":                  {"http://buyer.example.com/a", "buyer.example.com"},
		"https://buyer.example.com:8443/a":               {"https://buyer.example.com:8443/a", "buyer.example.com:8443"},
		"http://buyer.example.com:443/a":                 {"http://buyer.example.com:443/a", "buyer.example.com:443"},
		"https://user:pw@buyer.example.com/a":            {"https://buyer.example.com/a", "buyer.example.com"},
		"https://buyer.example.com./a":                   {"https://buyer.example.com/a", "buyer.example.com"},
		"https://buyer.example.com":                      {"https://buyer.example.com/", "buyer.example.com"},
		"https://buyer.example.com?x=1":                  {"https://buyer.example.com/?x=1", "buyer.example.com"},
		"https://buyer.example.com/a#frag":               {"https://buyer.example.com/a", "buyer.example.com"},
		"https://buyer.example.com/adcp/webhook?b=2&a=1": {"https://buyer.example.com/adcp/webhook?b=2&a=1", "buyer.example.com"},
		"https://b.example/q?x=%2f&y=a+b":                {"https://b.example/q?x=%2f&y=a+b", "b.example"},
		"https://b.example/a/%7euser/%2f/%2F/%41%3a":     {"https://b.example/a/~user/%2F/%2F/A%3A", "b.example"},
		"https://b.example/a/./b/../c":                   {"https://b.example/a/c", "b.example"},
		"https://b.example/a//b///c":                     {"https://b.example/a//b///c", "b.example"},
		"https://b.example/a/%2E%2E/b":                   {"https://b.example/b", "b.example"},
		"https://b.example/../../a":                      {"https://b.example/a", "b.example"},
		"https://b.example/a/..":                         {"https://b.example/", "b.example"},
		"https://[2001:DB8::1]:443/a":                    {"https://[2001:db8::1]/a", "[2001:db8::1]"},
		"https://[2001:db8::1]:8443/a":                   {"https://[2001:db8::1]:8443/a", "[2001:db8::1]:8443"},
		"https://b.example:0443/a":                       {"https://b.example/a", "b.example"},
		// UTS #46 nontransitional: U-labels become A-labels, mapped first
		// (case folded, full-width dot), deviation characters kept (ß).
		"https://bücher.example/a":       {"https://xn--bcher-kva.example/a", "xn--bcher-kva.example"},
		"https://BÜCHER.example:8443/a":  {"https://xn--bcher-kva.example:8443/a", "xn--bcher-kva.example:8443"},
		"https://straße.example/":        {"https://xn--strae-oqa.example/", "xn--strae-oqa.example"},
		"https://例え.テスト。/p?q=1":          {"https://xn--r8jz45g.xn--zckzah/p?q=1", "xn--r8jz45g.xn--zckzah"},
		"https://xn--bcher-kva.example/": {"https://xn--bcher-kva.example/", "xn--bcher-kva.example"},
	} {
		got, auth, err := Target(in)
		require.NoError(t, err, in)
		require.Equal(t, want[0], got, in)
		require.Equal(t, want[1], auth, in)
	}
}

func TestTargetMalformed(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"buyer.example.com/a",
		"ftp://buyer.example.com/a",
		"https:///a",
		"https://user@/a",
		"https://[fe80::1%25eth0]/a",
		"https://[fe80::1/a",
		"https://[1.2.3.4]/a",
		"https://b.example:8x/a",
		"https://b.example:99999/a",
		"https://b.example/a b",
		"https://b.example/ü",         // non-ASCII outside the host: percent-encode it
		"https://b.example/a?q=ü",     // the query too
		"https://bü\xffcher.example/", // invalid UTF-8
		"https://a\u202eb.example/",   // a bidi control is not a domain name character
		"https://-bücher.example/",    // a leading hyphen
		"https://bücher..example/",    // an empty label
		"https://b.example/%zz",
		"https://b.example/%4",
	} {
		_, _, err := Target(in)
		require.True(t, errors.Is(err, ErrMalformed), "%q: %v", in, err)
	}
}

func FuzzTarget(f *testing.F) {
	for _, seed := range []string{
		"https://buyer.example.com/adcp/webhook/create_media_buy/agent_123/op_abc",
		"https://buyer.example.com/adcp/webhook?b=2&a=1&c=3",
		"https://buyer.example.com:443/a/%7e/./../b",
		"https://[2001:DB8::1]:8443/a//b",
		"HTTP://u:p@B.EXAMPLE.:80?x#y",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		target, auth, err := Target(in)
		if err != nil {
			return
		}
		// Canonical forms are fixed points, and the authority is part of
		// the target.
		again, auth2, err := Target(target)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", target, in, err)
		}
		if again != target || auth2 != auth {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, target, again)
		}
		if !strings.Contains(target, "://"+auth) {
			t.Fatalf("authority %q not in %q", auth, target)
		}
	})
}
