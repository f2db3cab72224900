package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/adcpkit/webhook/internal/canon"
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
// AdCP webhook activity rules require, its host in A-label form (the host
// that is dialled, however it was written), its path's ";" parameters cut
// and its token-shaped segments replaced by "<redacted>". A string that is
// not an absolute URL is cut at its first "?" or "#".
func LoggableURL(raw string) string {
	if alreadyLoggable(raw) {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i]
		}
		return raw
	}
	host, err := canon.ASCIIHost(u.Host)
	if err != nil {
		host = "<invalid host>"
	}
	segs := strings.Split(u.EscapedPath(), "/")
	for i, s := range segs {
		if s, _, params := strings.Cut(s, ";"); params || tokenShaped(s) {
			if tokenShaped(s) {
				s = "<redacted>"
			}
			segs[i] = s
		}
	}
	return u.Scheme + "://" + host + strings.Join(segs, "/")
}

// alreadyLoggable reports, without allocating, that raw is its own
// loggable form: an http(s) URL of plain characters (no userinfo, query,
// fragment, parameters, escapes or non-ASCII) with no token-shaped path
// segment. Most webhook URLs are.
func alreadyLoggable(raw string) bool {
	rest, ok := strings.CutPrefix(raw, "https://")
	if !ok {
		if rest, ok = strings.CutPrefix(raw, "http://"); !ok {
			return false
		}
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~/:", c) >= 0) {
			return false
		}
	}
	for seg := range strings.SplitSeq(rest, "/") {
		if tokenShaped(seg) {
			return false
		}
	}
	return true
}

// tokenShaped reports whether a path segment looks like a secret: 20 or
// more characters of the base64, base64url, JWT or percent-encoding
// alphabets (letters, digits and -_+/=.~%) with both letters and digits. A
// ULID, a UUID without dashes or a JWT is redacted; a word, a date or a
// short ID is not.
func tokenShaped(s string) bool {
	if len(s) < 20 {
		return false
	}
	letters, digits := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letters = true
		case c >= '0' && c <= '9':
			digits = true
		case strings.IndexByte("-_+/=.~%", c) >= 0:
		default:
			return false
		}
	}
	return letters && digits
}

// errorString is err.Error(), or a description of err when its Error
// method panics (a typed nil, say): a caller's error must not crash a
// worker.
func errorString(err error) (s string) {
	defer func() {
		if recover() != nil {
			s = fmt.Sprintf("an error of type %T whose Error method panicked", err)
		}
	}()
	return err.Error()
}

// minScrubbed is the shortest secret scrub replaces: shorter values (a
// query's "1" or "true") would redact ordinary words.
const minScrubbed = 6

// secretForms lists every form in which d's secrets could appear in text a
// Sender returns, longest first: its URL's query, each of its pieces and
// values, its fragment, its token-shaped path segments, its credentials,
// its header values and its MCP body's push-notification token; each as
// is, JSON-escaped (with and without HTML escaping), Go-quoted, and
// percent-encoded as a query or a path would be (in either case of hex).
func (d *prepared) secretForms() []string {
	var raw []string
	if u, err := url.Parse(d.url); err == nil {
		raw = append(raw, u.RawQuery, u.Fragment, u.EscapedFragment())
		for _, piece := range strings.Split(u.RawQuery, "&") {
			raw = append(raw, piece)
			if _, v, ok := strings.Cut(piece, "="); ok {
				raw = append(raw, v)
			}
		}
		for _, vs := range u.Query() {
			raw = append(raw, vs...)
		}
		for _, seg := range strings.Split(u.EscapedPath(), "/") {
			seg, params, _ := strings.Cut(seg, ";")
			raw = append(raw, params)
			if tokenShaped(seg) {
				raw = append(raw, seg)
				if un, err := url.PathUnescape(seg); err == nil {
					raw = append(raw, un)
				}
			}
		}
	}
	if a := d.routing.Authentication; a != nil {
		raw = append(raw, a.Credentials)
	}
	for _, v := range d.routing.Headers {
		raw = append(raw, v)
	}
	raw = append(raw, bodyToken(d.body))
	var forms []string
	for _, s := range raw {
		if len(s) < minScrubbed {
			continue
		}
		html, _ := json.Marshal(s)
		q, p := url.QueryEscape(s), url.PathEscape(s)
		forms = append(forms, s, string(appendJSONString(nil, s)), string(html), strconv.Quote(s),
			q, hexCase(q, false), hexCase(q, true), p, hexCase(p, false), hexCase(p, true))
	}
	for i, f := range forms {
		forms[i] = strings.TrimSuffix(strings.TrimPrefix(f, `"`), `"`) // the quotes are not the secret
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) }) // a value inside the query after it
	return slices.Compact(forms)
}

// hexCase rewrites the hex digits of s's percent-encodings in lower or
// upper case.
func hexCase(s string, upper bool) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if upper {
					b[j] = byte(unicode.ToUpper(rune(b[j])))
				} else {
					b[j] = byte(unicode.ToLower(rune(b[j])))
				}
			}
		}
	}
	return string(b)
}

// bodyToken is the value of the first "token" member of an MCP body: the
// push-notification token BuildMCPBody writes (as `,"token":"`, a sequence
// no escaped string can hold). It scans, rather than decoding the body, so
// that a failed attempt of a large body costs little.
func bodyToken(body []byte) string {
	i := bytes.Index(body, []byte(`,"token":"`))
	if i < 0 {
		return ""
	}
	rest := body[i+len(`,"token":`):]
	for j := 1; j < len(rest); j++ {
		switch rest[j] {
		case '\\':
			j++
		case '"':
			var s string
			if json.Unmarshal(rest[:j+1], &s) != nil {
				return ""
			}
			return s
		}
	}
	return ""
}

// scrub replaces every form of every secret d carries in text.
func (d *prepared) scrub(text string, forms []string) string {
	for _, f := range forms {
		text = strings.ReplaceAll(text, f, "<redacted>")
	}
	return text
}

// errorText is a Sender's error as an attempt records it: scrubbed of the
// delivery's secrets (before it is cut, so that no secret is cut in half
// and kept), printable, at most maxErrorText bytes. A huge error costs no
// more than one of maxErrorText plus the longest secret.
func (d *prepared) errorText(err error) string {
	text := errorString(err)
	forms := d.secretForms()
	limit := maxErrorText
	if len(forms) > 0 {
		limit += len(forms[0])
	}
	if len(text) > limit {
		text = text[:limit]
	}
	return printable([]byte(d.scrub(text, forms)), maxErrorText)
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

// LogValue logs the webhook redacted, as Format prints it (slog's JSON
// handler would otherwise print its fields as they are).
func (w MCPWebhook) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(w)) }

// LogValue logs the webhook redacted, as Format prints it.
func (w PreparedWebhook) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(w)) }

// LogValue logs the routing redacted, as Format prints it.
func (r Routing) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(r)) }

// LogValue logs the request redacted, as Format prints it.
func (r Request) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(r)) }

// LogValue logs the delivery redacted, as Format prints it.
func (d Delivery) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(d)) }

// LogValue logs the scheme without the credentials.
func (a Authentication) LogValue() slog.Value { return slog.StringValue(a.String()) }
