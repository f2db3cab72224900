// Package canon computes the AdCP canonical forms of a request URL that the
// RFC 9421 webhook profile signs as "@target-uri" and "@authority".
//
// The rules, from the AdCP security profile: lowercase scheme and host;
// strip userinfo, the fragment, one trailing root dot and the scheme's
// default port; keep IPv6 brackets, with lowercase hex; uppercase the hex of
// percent-encodings and decode percent-encoded unreserved characters (an
// encoded "/" stays encoded); remove dot segments but keep repeated slashes;
// an empty path becomes "/"; keep the query byte for byte. A host with
// non-ASCII characters (U-labels) becomes its A-label form by UTS #46
// nontransitional processing, as the AdCP URL canonicalization requires.
// Zone identifiers, empty authorities, non-digit ports, hosts that are not
// valid internationalised domain names, and non-ASCII bytes anywhere but
// the host are malformed.
package canon

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrMalformed reports a URL the profile cannot canonicalise.
var ErrMalformed = errors.New("malformed URL")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Target returns the canonical "@target-uri" and "@authority" of raw, an
// absolute http or https URL.
func Target(raw string) (targetURI, authority string, err error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", "", malformed("no scheme")
	}
	// Printable ASCII everywhere but the authority, which may hold a
	// U-label host (checked, and converted, by Authority).
	authEnd := len(scheme) + 3 + strings.IndexAny(rest+"/", "/?#")
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= 0x20 || c == 0x7f || c > 0x7f && (i < len(scheme)+3 || i >= authEnd) {
			return "", "", malformed("byte 0x%02x at %d: only printable ASCII is allowed (percent-encode the rest)", c, i)
		}
	}
	scheme = strings.ToLower(scheme)
	var defaultPort string
	switch scheme {
	case "https":
		defaultPort = "443"
	case "http":
		defaultPort = "80"
	default:
		return "", "", malformed("scheme %q is not http or https", scheme)
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	query := ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query = rest[:i], rest[i:]
	}
	auth, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		auth, path = rest[:i], rest[i:]
	}
	authority, err = Authority(auth, defaultPort)
	if err != nil {
		return "", "", err
	}
	path, err = normalizePath(path)
	if err != nil {
		return "", "", err
	}
	return scheme + "://" + authority + path + query, authority, nil
}

// ASCIIHost returns hostport with a non-ASCII host in its lowercase
// A-label form (the port, if any, kept as it is), as Authority would
// canonicalise it; an ASCII hostport is returned unchanged.
func ASCIIHost(hostport string) (string, error) {
	if isASCII(hostport) {
		return hostport, nil
	}
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host, port = hostport[:i], hostport[i:]
	}
	a, err := toASCII(host)
	if err != nil || !isASCII(port) {
		return "", malformed("host is not a valid internationalised domain name")
	}
	return strings.ToLower(a) + port, nil
}

// DNS limits: a label of at most 63 bytes, a name of at most 253. Punycode
// grows no label by more than maxULabelBytes/63, so longer input is refused
// before conversion, whose cost is quadratic in a label's length.
const (
	maxLabel       = 63
	maxName        = 253
	maxULabelBytes = 4 * maxLabel
	maxUNameBytes  = 4 * maxName
)

// toASCII converts a host with U-labels to A-labels (UTS #46
// nontransitional), refusing, before the conversion, input longer than
// any valid name could be written in, and after it, names over the DNS
// limits.
func toASCII(host string) (string, error) {
	if !utf8.ValidString(host) || len(host) > maxUNameBytes {
		return "", malformed("host is not a valid internationalised domain name")
	}
	// Labels end at any of the dots UTS #46 maps to ".".
	for _, label := range strings.FieldsFunc(host, func(r rune) bool { return r == '.' || r == '。' || r == '．' || r == '｡' }) {
		if len(label) > maxULabelBytes {
			return "", malformed("host has a label longer than a domain name allows")
		}
	}
	a, err := idna.Lookup.ToASCII(host)
	if err != nil {
		return "", malformed("host is not a valid internationalised domain name")
	}
	if len(strings.TrimSuffix(a, ".")) > maxName {
		return "", malformed("host is longer than %d bytes as A-labels", maxName)
	}
	for _, label := range strings.Split(a, ".") {
		if len(label) > maxLabel {
			return "", malformed("host has a label longer than %d bytes as an A-label", maxLabel)
		}
	}
	return a, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Authority canonicalises an authority (userinfo@host:port) for a scheme
// whose default port is defaultPort.
func Authority(auth, defaultPort string) (string, error) {
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		auth = auth[i+1:]
	}
	if auth == "" {
		return "", malformed("empty authority")
	}
	var host, port string
	if strings.HasPrefix(auth, "[") {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return "", malformed("unclosed IPv6 literal")
		}
		literal := auth[1:end]
		if strings.Contains(literal, "%") {
			return "", malformed("IPv6 zone identifiers are not allowed")
		}
		addr, err := netip.ParseAddr(literal)
		if err != nil || !addr.Is6() {
			return "", malformed("invalid IPv6 literal %q", literal)
		}
		host = "[" + strings.ToLower(literal) + "]"
		rest := auth[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", malformed("unexpected %q after IPv6 literal", rest)
			}
			port = rest[1:]
		}
	} else {
		host = auth
		if i := strings.LastIndexByte(auth, ':'); i >= 0 {
			host, port = auth[:i], auth[i+1:]
		}
		if !isASCII(host) {
			a, err := toASCII(host)
			if err != nil {
				return "", err
			}
			host = a
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if host == "" {
			return "", malformed("empty host")
		}
		if host[0] == '.' || strings.Contains(host, "..") || strings.HasSuffix(host, ".") {
			return "", malformed("host %q has an empty label", host)
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
				return "", malformed("host has %q; only letters, digits, '-', '_' and '.' are allowed", c)
			}
		}
	}
	if port != "" {
		if strings.TrimLeft(port, "0123456789") != "" {
			return "", malformed("port %q is not a number", port)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n > 65535 {
			return "", malformed("port %q is out of range", port)
		}
		port = strconv.Itoa(n)
		if port == defaultPort {
			port = ""
		}
	}
	if port == "" {
		return host, nil
	}
	return host + ":" + port, nil
}

// normalizePath normalises percent-encodings, then removes dot segments
// (RFC 3986 §5.2.4), keeping empty segments.
func normalizePath(p string) (string, error) {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", malformed("bad percent-encoding in path")
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			b.WriteByte('%')
			b.WriteByte(upper(p[i+1]))
			b.WriteByte(upper(p[i+2]))
		}
		i += 2
	}
	out := removeDotSegments(b.String())
	if out == "" {
		out = "/"
	}
	return out, nil
}

// removeDotSegments is RFC 3986 §5.2.4 on an absolute path.
func removeDotSegments(in string) string {
	var out []string // output segments, each starting with "/"
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "/..":
			in = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "." || in == "..":
			in = ""
		default:
			start := 0
			if in[0] == '/' {
				start = 1
			}
			end := strings.IndexByte(in[start:], '/')
			if end < 0 {
				end = len(in)
			} else {
				end += start
			}
			out = append(out, in[:end])
			in = in[end:]
		}
	}
	return strings.Join(out, "")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
