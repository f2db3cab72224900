package webhook

import (
	"fmt"
	"io"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// This file is where secrets stop. A buyer's URL may carry a token in its
// query (or, less often, its path or userinfo); legacy credentials, A2A
// header values and MCP tokens are secrets; bodies carry tokens. The
// library logs and records a URL only in its loggable form, and the types
// that carry secrets print themselves through formatRedacted under every
// fmt verb. (fmt bypasses Format for %p on a non-pointer value, which
// go vet reports as a mistake; SigningKey keeps its key one pointer away so
// that even then nothing leaks.)

// LoggableURL is the form in which the library logs and records a URL (and
// a breaker key that is one): without userinfo, query and fragment, as the
// AdCP webhook activity rules require, and with token-shaped path segments
// replaced by "<redacted>". A string that is not an absolute URL is cut at
// its first "?" or "#".
func LoggableURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i]
		}
		return raw
	}
	segs := strings.Split(u.EscapedPath(), "/")
	for i, s := range segs {
		if tokenShaped(s) {
			segs[i] = "<redacted>"
		}
	}
	return u.Scheme + "://" + u.Host + strings.Join(segs, "/")
}

// tokenShaped reports whether a path segment looks like a secret: 24 or
// more characters of the base64url alphabet with both letters and digits
// (a ULID or a UUID without dashes is redacted too; a word is not).
func tokenShaped(s string) bool {
	if len(s) < 24 {
		return false
	}
	letters, digits := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letters = true
		case c >= '0' && c <= '9':
			digits = true
		case c == '-' || c == '_':
		default:
			return false
		}
	}
	return letters && digits
}

// formatRedacted prints the struct v, whatever the verb, as
// Type{Field:value ...} with every secret replaced: URL and BreakerKey in
// their loggable form, Token and Credentials as <redacted>, header values
// as <redacted>, Body as its length, Result as its type. Embedded structs
// are printed inline; other fields as %v prints them (types that carry
// secrets have their own Format).
func formatRedacted(f fmt.State, v any) {
	rv := reflect.ValueOf(v)
	var b strings.Builder
	b.WriteString(rv.Type().String())
	b.WriteByte('{')
	first := true
	var fields func(rv reflect.Value)
	fields = func(rv reflect.Value) {
		for i := range rv.NumField() {
			sf, fv := rv.Type().Field(i), rv.Field(i)
			if !sf.IsExported() {
				continue
			}
			if sf.Anonymous && fv.Kind() == reflect.Struct {
				fields(fv)
				continue
			}
			if !first {
				b.WriteByte(' ')
			}
			first = false
			b.WriteString(sf.Name)
			b.WriteByte(':')
			b.WriteString(redactedField(sf.Name, fv))
		}
	}
	fields(rv)
	b.WriteByte('}')
	_, _ = io.WriteString(f, b.String())
}

func redactedField(name string, v reflect.Value) string {
	switch name {
	case "URL", "BreakerKey":
		return LoggableURL(v.String())
	case "Token", "Credentials":
		if v.String() == "" {
			return ""
		}
		return "<redacted>"
	case "Headers":
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + ":<redacted>"
		}
		return "map[" + strings.Join(keys, " ") + "]"
	case "Body":
		return "<" + strconv.Itoa(v.Len()) + " bytes>"
	case "Result":
		if v.IsNil() {
			return "<nil>"
		}
		return "<" + v.Elem().Type().String() + ">"
	}
	return fmt.Sprint(v.Interface())
}

// Format prints the webhook with its secrets redacted, for every verb.
func (w MCPWebhook) Format(f fmt.State, _ rune) { formatRedacted(f, w) }

// Format prints the webhook with its secrets redacted, for every verb.
func (w PreparedWebhook) Format(f fmt.State, _ rune) { formatRedacted(f, w) }

// Format prints the routing with its secrets redacted, for every verb.
func (r Routing) Format(f fmt.State, _ rune) { formatRedacted(f, r) }

// Format prints the request with its secrets redacted, for every verb.
func (r Request) Format(f fmt.State, _ rune) { formatRedacted(f, r) }

// Format prints the delivery with its URL loggable and its body as a
// length, for every verb.
func (d Delivery) Format(f fmt.State, _ rune) { formatRedacted(f, d) }

// Format hides the credentials, for every verb.
func (a Authentication) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, a.String()) }
