// Package strictjson checks JSON the way AdCP requires before a body is
// trusted or signed: valid UTF-8, exactly one value, and no object with
// two members of the same name (parsers disagree on which one wins, so a
// signature over such a body can mean two things).
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrMalformed is wrapped by every error Check returns.
var ErrMalformed = errors.New("malformed JSON")

// DuplicateKeysError reports object member names that occur twice in one
// object. Names are sanitized for logs (see [Sanitize]); at most
// MaxLoggedNames are kept and More counts the rest.
type DuplicateKeysError struct {
	Names []string
	More  int
}

// MaxLoggedNames is how many duplicate names an error carries.
const MaxLoggedNames = 4

// Error lists the sanitized names.
func (e *DuplicateKeysError) Error() string {
	s := "duplicate object keys " + strings.Join(e.Names, ", ")
	if e.More > 0 {
		s += fmt.Sprintf(", <...%d more>", e.More)
	}
	return s
}

// Unwrap returns [ErrMalformed].
func (e *DuplicateKeysError) Unwrap() error { return ErrMalformed }

// Check returns nil when data is one JSON value, in valid UTF-8, whose
// objects have distinct member names (compared after unescaping, so "a"
// and "\u0061" are the same name). Otherwise it returns an error wrapping
// [ErrMalformed] that holds no byte of data except sanitized duplicate
// names. It is a single pass, linear in len(data), that allocates only for
// objects of many members and for names with escapes; nesting deeper than
// MaxDepth is refused.
func Check(data []byte) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	c := checker{data: data}
	c.space()
	if c.i == len(data) {
		return fmt.Errorf("%w: empty", ErrMalformed)
	}
	if err := c.value(0); err != nil {
		return err
	}
	c.space()
	if c.i != len(data) {
		return fmt.Errorf("%w: more than one value, or text after it, at byte %d", ErrMalformed, c.i)
	}
	if len(c.dups.Names) > 0 {
		dups := c.dups // a copy escapes, not the checker
		return &dups
	}
	return nil
}

// MaxDepth is how deeply Check lets arrays and objects nest, as
// encoding/json does.
const MaxDepth = 10000

type checker struct {
	data []byte
	i    int
	dups DuplicateKeysError
}

func (c *checker) syntax() error {
	if c.i >= len(c.data) {
		return fmt.Errorf("%w: incomplete", ErrMalformed)
	}
	return fmt.Errorf("%w: syntax error at byte %d", ErrMalformed, c.i)
}

func (c *checker) space() {
	for c.i < len(c.data) {
		switch c.data[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

func (c *checker) value(depth int) error {
	if c.i >= len(c.data) {
		return c.syntax()
	}
	switch b := c.data[c.i]; {
	case b == '{':
		return c.object(depth + 1)
	case b == '[':
		return c.array(depth + 1)
	case b == '"':
		_, err := c.str()
		return err
	case b == '-' || b >= '0' && b <= '9':
		return c.number()
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	}
	return c.syntax()
}

func (c *checker) literal(lit string) error {
	if len(c.data)-c.i < len(lit) || string(c.data[c.i:c.i+len(lit)]) != lit {
		return c.syntax()
	}
	c.i += len(lit)
	return nil
}

func (c *checker) digits() int {
	n := 0
	for c.i < len(c.data) && c.data[c.i] >= '0' && c.data[c.i] <= '9' {
		c.i++
		n++
	}
	return n
}

// number is -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (c *checker) number() error {
	if c.data[c.i] == '-' {
		c.i++
	}
	switch {
	case c.i < len(c.data) && c.data[c.i] == '0':
		c.i++
	case c.digits() == 0:
		return c.syntax()
	}
	if c.i < len(c.data) && c.data[c.i] == '.' {
		c.i++
		if c.digits() == 0 {
			return c.syntax()
		}
	}
	if c.i < len(c.data) && (c.data[c.i] == 'e' || c.data[c.i] == 'E') {
		c.i++
		if c.i < len(c.data) && (c.data[c.i] == '+' || c.data[c.i] == '-') {
			c.i++
		}
		if c.digits() == 0 {
			return c.syntax()
		}
	}
	return nil
}

// str scans a string and returns its raw text between the quotes.
func (c *checker) str() ([]byte, error) {
	c.i++ // "
	start := c.i
	for c.i < len(c.data) {
		switch b := c.data[c.i]; {
		case b == '"':
			c.i++
			return c.data[start : c.i-1], nil
		case b == '\\':
			c.i++
			if c.i >= len(c.data) {
				return nil, c.syntax()
			}
			switch c.data[c.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				c.i++
			case 'u':
				if len(c.data)-c.i < 5 {
					c.i = len(c.data)
					return nil, c.syntax()
				}
				for _, h := range c.data[c.i+1 : c.i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return nil, c.syntax()
					}
				}
				c.i += 5
			default:
				return nil, c.syntax()
			}
		case b < 0x20:
			return nil, c.syntax()
		default:
			c.i++
		}
	}
	return nil, c.syntax()
}

func (c *checker) array(depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrMalformed, MaxDepth)
	}
	c.i++ // [
	c.space()
	if c.i < len(c.data) && c.data[c.i] == ']' {
		c.i++
		return nil
	}
	for {
		c.space()
		if err := c.value(depth); err != nil {
			return err
		}
		if more, err := c.separator(']'); !more {
			return err
		}
	}
}

// separator reads what follows an element or member: a comma (more
// follow) or the closing bracket.
func (c *checker) separator(closing byte) (more bool, err error) {
	c.space()
	if c.i < len(c.data) {
		switch c.data[c.i] {
		case ',':
			c.i++
			return true, nil
		case closing:
			c.i++
			return false, nil
		}
	}
	return false, c.syntax()
}

// smallObject is how many names an object may have before its names go
// into a map rather than a slice searched from the start.
const smallObject = 16

func (c *checker) object(depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrMalformed, MaxDepth)
	}
	c.i++ // {
	c.space()
	if c.i < len(c.data) && c.data[c.i] == '}' {
		c.i++
		return nil
	}
	var few [smallObject][]byte
	names := few[:0]
	var many map[string]struct{}
	for {
		c.space()
		if c.i >= len(c.data) || c.data[c.i] != '"' {
			return c.syntax()
		}
		raw, err := c.str()
		if err != nil {
			return err
		}
		name := unescape(raw)
		dup := false
		if many != nil {
			if _, dup = many[string(name)]; !dup {
				many[string(name)] = struct{}{}
			}
		} else {
			for _, n := range names {
				if bytes.Equal(n, name) {
					dup = true
					break
				}
			}
			if names = append(names, name); len(names) > smallObject {
				many = make(map[string]struct{}, 2*len(names))
				for _, n := range names {
					many[string(n)] = struct{}{}
				}
			}
		}
		if dup {
			if len(c.dups.Names) < MaxLoggedNames {
				c.dups.Names = append(c.dups.Names, Sanitize(string(name)))
			} else {
				c.dups.More++
			}
		}
		c.space()
		if c.i >= len(c.data) || c.data[c.i] != ':' {
			return c.syntax()
		}
		c.i++
		c.space()
		if err := c.value(depth); err != nil {
			return err
		}
		if more, err := c.separator('}'); !more {
			return err
		}
	}
}

// unescape is a scanned string's value: raw itself when it has no escape
// (nearly every name), else its decoding.
func unescape(raw []byte) []byte {
	if !slices.Contains(raw, '\\') {
		return raw
	}
	var s string
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	if json.Unmarshal(quoted, &s) != nil {
		return raw // cannot happen: str checked the escapes
	}
	return []byte(s)
}

// MaxNameBytes is the most bytes of a name Sanitize keeps.
const MaxNameBytes = 32

// Sanitize makes an attacker's object member name safe to log, as the
// AdCP verifier checklist (step 14b) requires: a name with a
// non-printable character (controls, bidi and zero-width characters, line
// separators, the byte-order mark: anything unicode.IsPrint refuses)
// becomes "<sanitized:N>", N being the bytes before that character;
// otherwise it is cut to at most MaxNameBytes bytes at a character
// boundary. Names are quoted so that commas and spaces in them stay
// unambiguous.
func Sanitize(name string) string {
	for i, r := range name {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return fmt.Sprintf("<sanitized:%d>", i)
		}
	}
	if len(name) > MaxNameBytes {
		cut := MaxNameBytes
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut]
	}
	return strconv.Quote(name)
}
