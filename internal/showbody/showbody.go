// Package showbody renders a stored webhook body for an operator: indented
// JSON, in its own member order, with the values of secret-bearing members
// replaced. The CLI and the dashboard show bodies only through it.
package showbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
)

// Redacted replaces a secret's value.
const Redacted = "<redacted>"

// secretNames are the member names whose values are secrets: the MCP
// envelope's echoed push_notification_config token, and what other bodies
// may carry. They are compared case-insensitively, without "_" and "-", so
// that access_token, access-token and accessToken are one name.
var secretNames = map[string]bool{
	"token": true, "credentials": true, "authorization": true, "secret": true,
	"password": true, "apikey": true, "accesstoken": true, "refreshtoken": true,
	"clientsecret": true, "privatekey": true,
}

// IsSecret reports whether a member named name holds a secret.
func IsSecret(name string) bool {
	return secretNames[strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(name))]
}

// Limits that keep a hostile body from costing more to show than to store:
// indentation stops deepening at maxIndent levels, and a body longer than
// maxPretty is shown compact (one line), so that the output is at most a
// small multiple of the body's size.
const (
	maxIndent = 8
	maxPretty = 256 << 10
)

// Pretty returns body indented by two spaces (up to eight levels; one line
// for a body over 256 KiB) with every secret member's value (a string, a
// number or a whole object or array) replaced by [Redacted]. A body that
// is not JSON is described, not shown: it could be anything.
func Pretty(body []byte) string {
	out := bytes.NewBuffer(make([]byte, 0, len(body)+len(body)/4))
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	p := printer{d: d, out: out, compact: len(body) > maxPretty}
	if err := p.value(0); err != nil {
		return "(not JSON: " + strconv.Itoa(len(body)) + " bytes, not shown)"
	}
	if _, err := d.Token(); err != io.EOF {
		return "(not JSON: " + strconv.Itoa(len(body)) + " bytes, not shown)"
	}
	return out.String()
}

// printer copies JSON from d to out.
type printer struct {
	d       *json.Decoder
	out     *bytes.Buffer
	compact bool
}

// value copies the next JSON value at depth.
func (p *printer) value(depth int) error {
	d, out := p.d, p.out
	t, err := d.Token()
	if err != nil {
		return err
	}
	switch t := t.(type) {
	case json.Delim:
		closing := json.Delim('}')
		if t == '[' {
			closing = ']'
		}
		out.WriteByte(byte(t))
		n := 0
		for d.More() {
			if n > 0 {
				out.WriteByte(',')
			}
			n++
			p.newline(depth + 1)
			if t == '{' {
				k, err := d.Token()
				if err != nil {
					return err
				}
				name, ok := k.(string)
				if !ok {
					return errors.New("showbody: member name is not a string")
				}
				writeString(out, name)
				out.WriteByte(':')
				if !p.compact {
					out.WriteByte(' ')
				}
				if IsSecret(name) {
					if err := skip(d); err != nil {
						return err
					}
					writeString(out, Redacted)
					continue
				}
			}
			if err := p.value(depth + 1); err != nil {
				return err
			}
		}
		if end, err := d.Token(); err != nil || end != closing {
			return errors.New("showbody: unbalanced")
		}
		if n > 0 {
			p.newline(depth)
		}
		out.WriteByte(byte(closing))
	case string:
		writeString(out, t)
	case json.Number:
		out.WriteString(t.String())
	case bool:
		if t {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case nil:
		out.WriteString("null")
	}
	return nil
}

// skip discards the next JSON value.
func skip(d *json.Decoder) error {
	var raw json.RawMessage
	return d.Decode(&raw)
}

// newline starts a line at depth (no deeper than maxIndent), unless
// compact.
func (p *printer) newline(depth int) {
	if p.compact {
		return
	}
	p.out.WriteByte('\n')
	for range min(depth, maxIndent) {
		p.out.WriteString("  ")
	}
}

// writeString writes s as a JSON string, without HTML escaping (a
// template escapes it for its page).
func writeString(out *bytes.Buffer, s string) {
	e := json.NewEncoder(out)
	e.SetEscapeHTML(false)
	_ = e.Encode(s)             // a string always encodes
	out.Truncate(out.Len() - 1) // Encode's newline
}
