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
	"io"
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
// names. Its cost is linear in len(data).
func Check(data []byte) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		keys    map[string]struct{} // nil for an array
		wantKey bool
	}
	var stack []frame
	var dups DuplicateKeysError
	values := 0
	ended := func() { // a value ended: an enclosing object wants a key next
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return fmt.Errorf("%w: syntax error at byte %d", ErrMalformed, se.Offset)
			}
			return fmt.Errorf("%w: incomplete", ErrMalformed)
		}
		if len(stack) == 0 {
			if values++; values > 1 {
				return fmt.Errorf("%w: more than one value", ErrMalformed)
			}
		}
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if name, ok := tok.(string); ok {
				if _, dup := stack[n-1].keys[name]; dup {
					if len(dups.Names) < MaxLoggedNames {
						dups.Names = append(dups.Names, Sanitize(name))
					} else {
						dups.More++
					}
				}
				stack[n-1].keys[name] = struct{}{}
				stack[n-1].wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]struct{}{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			ended()
		default:
			ended()
		}
	}
	switch {
	case values == 0:
		return fmt.Errorf("%w: empty", ErrMalformed)
	case len(stack) > 0:
		return fmt.Errorf("%w: incomplete", ErrMalformed)
	}
	if len(dups.Names) > 0 {
		return &dups
	}
	return nil
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
