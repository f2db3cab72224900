// Package showbody renders a stored webhook body for an operator: indented
// JSON, in its own member order, with the values of secret-bearing members
// replaced. The CLI and the dashboard show bodies only through it.
package showbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// Redacted replaces a secret's value.
const Redacted = "<redacted>"

// secretNames are the member names (compared case-insensitively, with
// "-" read as "_") whose values are secrets: the MCP envelope's echoed
// push_notification_config token, and what other bodies may carry.
var secretNames = map[string]bool{
	"token": true, "credentials": true, "authorization": true, "secret": true,
	"password": true, "api_key": true, "access_token": true, "refresh_token": true,
	"client_secret": true, "private_key": true,
}

// IsSecret reports whether a member named name holds a secret.
func IsSecret(name string) bool {
	return secretNames[strings.ReplaceAll(strings.ToLower(name), "-", "_")]
}

// Pretty returns body indented by two spaces with every secret member's
// value (a string, a number or a whole object or array) replaced by
// [Redacted]. A body that is not JSON is described, not shown: it could
// be anything.
func Pretty(body []byte) string {
	var out bytes.Buffer
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := value(d, &out, 0); err != nil {
		return "(not JSON: " + itoa(len(body)) + " bytes, not shown)"
	}
	if _, err := d.Token(); err != io.EOF {
		return "(not JSON: " + itoa(len(body)) + " bytes, not shown)"
	}
	return out.String()
}

// value copies the next JSON value from d to out at depth.
func value(d *json.Decoder, out *bytes.Buffer, depth int) error {
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
			newline(out, depth+1)
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
				out.WriteString(": ")
				if IsSecret(name) {
					if err := skip(d); err != nil {
						return err
					}
					writeString(out, Redacted)
					continue
				}
			}
			if err := value(d, out, depth+1); err != nil {
				return err
			}
		}
		if end, err := d.Token(); err != nil || end != closing {
			return errors.New("showbody: unbalanced")
		}
		if n > 0 {
			newline(out, depth)
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

func newline(out *bytes.Buffer, depth int) {
	out.WriteByte('\n')
	for range depth {
		out.WriteString("  ")
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

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
