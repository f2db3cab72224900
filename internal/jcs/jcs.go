// Package jcs canonicalises JSON by RFC 8785 (the JSON Canonicalization
// Scheme): no insignificant whitespace, object members sorted by the UTF-16
// code units of their names, strings with the minimal escapes, numbers as
// ECMAScript's Number.prototype.toString writes IEEE 754 doubles.
//
// AdCP 3.2 binds an idempotency key to the canonical form of its payload,
// so the publisher computes one per accepted webhook; this implementation
// exists because that has to cost about what scanning the body costs. It
// parses once into a flat list of nodes, sorts each object's members by
// index and writes every output byte once, so its work is O(n log n) in
// the input's size whatever the nesting. The package's tests check it
// against the RFC's published examples and, by fuzzing, against
// github.com/gowebpki/jcs.
package jcs

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is how deeply arrays and objects may nest.
const MaxDepth = 10000

// Error is what Append refuses: input that is not I-JSON, so has no
// canonical form.
type Error struct {
	// Offset is the byte offset in the input where the problem was found.
	Offset int
	// Reason says what is wrong.
	Reason string

	sentinel error
}

func (e *Error) Error() string { return fmt.Sprintf("jcs: %s at offset %d", e.Reason, e.Offset) }

// Unwrap returns ErrDuplicateKey for a duplicate member name.
func (e *Error) Unwrap() error { return e.sentinel }

// ErrDuplicateKey is wrapped by the Error for an object with two members
// of the same name (after unescaping): RFC 8785 requires I-JSON, which
// has none (AdCP calls this duplicate_key_input).
var ErrDuplicateKey = errors.New("duplicate object key")

// Append appends the canonical form of the JSON text src to dst. It
// refuses (with an *Error) invalid JSON, invalid UTF-8, lone surrogates,
// duplicate member names, numbers beyond the double range, and nesting
// deeper than MaxDepth.
func Append(dst, src []byte) ([]byte, error) {
	p := pool.Get().(*parser)
	defer p.release()
	if err := p.parse(src); err != nil {
		return dst, err
	}
	return p.emit(dst, p.nodes[p.root]), nil
}

// Sum256 returns the SHA-256 of src's canonical form, with Append's
// errors.
func Sum256(src []byte) ([sha256.Size]byte, error) {
	p := pool.Get().(*parser)
	defer p.release()
	if err := p.parse(src); err != nil {
		return [sha256.Size]byte{}, err
	}
	p.out = p.emit(p.out[:0], p.nodes[p.root])
	return sha256.Sum256(p.out), nil
}

var pool = sync.Pool{New: func() any { return new(parser) }}

// Node kinds.
const (
	scalar = iota // text[a:b] is its canonical text
	array         // kids[a:b] are its elements' nodes
	object        // kids[a:b] are name, value, name, value... sorted
)

type node struct {
	kind uint8
	a, b int32
}

// member is an object member while its object is parsed.
type member struct {
	name, end  int32 // its decoded name is names[name:end], for sorting
	key, value int32 // nodes
}

type parser struct {
	src   []byte
	i     int
	text  []byte // canonical scalars, back to back
	nodes []node
	kids  []int32 // children of containers, contiguous per container
	stack []int32 // children of open containers
	mems  []member
	names []byte // decoded names of open objects' members
	root  int32
	out   []byte // Sum256's output
}

func (p *parser) release() {
	if cap(p.text) > 1<<20 || cap(p.out) > 1<<20 || cap(p.nodes) > 1<<16 {
		return // let a large one go rather than pin it
	}
	p.src = nil
	p.text, p.nodes, p.kids, p.stack, p.mems, p.names = p.text[:0], p.nodes[:0], p.kids[:0], p.stack[:0], p.mems[:0], p.names[:0]
	pool.Put(p)
}

func (p *parser) fail(reason string) error { return &Error{Offset: p.i, Reason: reason} }

func (p *parser) parse(src []byte) error {
	p.src, p.i = src, 0
	p.skipSpace()
	root, err := p.value(0)
	if err != nil {
		return err
	}
	p.root = root
	p.skipSpace()
	if p.i != len(src) {
		return p.fail("data after the top-level value")
	}
	return nil
}

func (p *parser) skipSpace() {
	for p.i < len(p.src) {
		switch p.src[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value parses one value and returns its node.
func (p *parser) value(depth int) (int32, error) {
	if p.i >= len(p.src) {
		return 0, p.fail("unexpected end of input")
	}
	switch c := p.src[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		start := len(p.text)
		if err := p.str(false); err != nil {
			return 0, err
		}
		return p.scalar(start), nil
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return 0, p.fail("invalid character")
}

func (p *parser) scalar(start int) int32 {
	p.nodes = append(p.nodes, node{kind: scalar, a: int32(start), b: int32(len(p.text))})
	return int32(len(p.nodes) - 1)
}

func (p *parser) literal(lit string) (int32, error) {
	if len(p.src)-p.i < len(lit) || string(p.src[p.i:p.i+len(lit)]) != lit {
		return 0, p.fail("invalid literal")
	}
	p.i += len(lit)
	start := len(p.text)
	p.text = append(p.text, lit...)
	return p.scalar(start), nil
}

func (p *parser) array(depth int) (int32, error) {
	if depth > MaxDepth {
		return 0, p.fail("nested too deeply")
	}
	p.i++ // [
	base := len(p.stack)
	p.skipSpace()
	if p.i < len(p.src) && p.src[p.i] == ']' {
		p.i++
	} else {
		for {
			p.skipSpace()
			n, err := p.value(depth)
			if err != nil {
				return 0, err
			}
			p.stack = append(p.stack, n)
			p.skipSpace()
			if p.i >= len(p.src) {
				return 0, p.fail("unexpected end of input in an array")
			}
			if c := p.src[p.i]; c == ']' {
				p.i++
				break
			} else if c != ',' {
				return 0, p.fail("expected , or ] in an array")
			}
			p.i++
		}
	}
	a := len(p.kids)
	p.kids = append(p.kids, p.stack[base:]...)
	p.stack = p.stack[:base]
	p.nodes = append(p.nodes, node{kind: array, a: int32(a), b: int32(len(p.kids))})
	return int32(len(p.nodes) - 1), nil
}

func (p *parser) object(depth int) (int32, error) {
	if depth > MaxDepth {
		return 0, p.fail("nested too deeply")
	}
	p.i++ // {
	base, namesBase := len(p.mems), len(p.names)
	p.skipSpace()
	if p.i < len(p.src) && p.src[p.i] == '}' {
		p.i++
	} else {
		for {
			p.skipSpace()
			if p.i >= len(p.src) || p.src[p.i] != '"' {
				return 0, p.fail("expected a member name")
			}
			start, name := len(p.text), len(p.names)
			if err := p.str(true); err != nil {
				return 0, err
			}
			end := len(p.names)
			key := p.scalar(start)
			p.skipSpace()
			if p.i >= len(p.src) || p.src[p.i] != ':' {
				return 0, p.fail("expected : after a member name")
			}
			p.i++
			p.skipSpace()
			v, err := p.value(depth)
			if err != nil {
				return 0, err
			}
			p.mems = append(p.mems, member{name: int32(name), end: int32(end), key: key, value: v})
			p.skipSpace()
			if p.i >= len(p.src) {
				return 0, p.fail("unexpected end of input in an object")
			}
			if c := p.src[p.i]; c == '}' {
				p.i++
				break
			} else if c != ',' {
				return 0, p.fail("expected , or } in an object")
			}
			p.i++
		}
	}
	ms := p.mems[base:]
	if !slices.IsSortedFunc(ms, p.byName) {
		slices.SortFunc(ms, p.byName)
	}
	a := len(p.kids)
	for k, m := range ms {
		if k > 0 && p.byName(ms[k-1], m) == 0 {
			name := p.names[m.name:m.end]
			if len(name) > 64 {
				name = name[:64] // an error quotes at most this much of the input
			}
			return 0, &Error{Offset: p.i, Reason: "duplicate object key " + strconv.Quote(string(name)), sentinel: ErrDuplicateKey}
		}
		p.kids = append(p.kids, m.key, m.value)
	}
	p.mems = p.mems[:base]
	p.names = p.names[:namesBase]
	p.nodes = append(p.nodes, node{kind: object, a: int32(a), b: int32(len(p.kids))})
	return int32(len(p.nodes) - 1), nil
}

// byName orders members by the UTF-16 code units of their names, as RFC
// 8785 §3.2.3 sorts them.
func (p *parser) byName(x, y member) int {
	return compareUTF16(p.names[x.name:x.end], p.names[y.name:y.end])
}

// compareUTF16 compares two valid UTF-8 strings by their UTF-16 code
// units. UTF-8 byte order is code point order, which differs only where
// a character beyond U+FFFF (a surrogate pair in UTF-16, D800-DBFF first)
// meets one in U+E000-U+FFFF.
func compareUTF16(x, y []byte) int {
	i := 0
	for i < len(x) && i < len(y) && x[i] == y[i] {
		i++
	}
	if i == len(x) || i == len(y) {
		return len(x) - len(y)
	}
	for i > 0 && !utf8.RuneStart(x[i]) { // both strings agree up to here
		i--
	}
	rx, _ := utf8.DecodeRune(x[i:])
	ry, _ := utf8.DecodeRune(y[i:])
	ux, uy := firstUnit(rx), firstUnit(ry)
	if ux != uy {
		return int(ux) - int(uy)
	}
	return int(rx) - int(ry) // both beyond U+FFFF with one high surrogate: code point order is unit order
}

func firstUnit(r rune) rune {
	if r < 0x10000 {
		return r
	}
	hi, _ := utf16.EncodeRune(r)
	return hi
}

// str parses a string at p.i and appends its canonical text to p.text
// and, for a member name, its decoded text to p.names.
func (p *parser) str(name bool) error {
	p.i++ // "
	p.text = append(p.text, '"')
	for {
		// The run of bytes that need no attention.
		start := p.i
		for p.i < len(p.src) {
			c := p.src[p.i]
			if c == '"' || c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
				break
			}
			p.i++
		}
		p.text = append(p.text, p.src[start:p.i]...)
		if name {
			p.names = append(p.names, p.src[start:p.i]...)
		}
		if p.i >= len(p.src) {
			return p.fail("unterminated string")
		}
		c := p.src[p.i]
		var r rune
		switch {
		case c == '"':
			p.i++
			p.text = append(p.text, '"')
			return nil
		case c < 0x20:
			return p.fail("control character in a string")
		case c >= utf8.RuneSelf:
			var size int
			r, size = utf8.DecodeRune(p.src[p.i:])
			if r == utf8.RuneError && size <= 1 {
				return p.fail("invalid UTF-8")
			}
			p.i += size
		default: // a backslash
			var err error
			if r, err = p.escape(); err != nil {
				return err
			}
		}
		p.text = appendChar(p.text, r)
		if name {
			p.names = utf8.AppendRune(p.names, r)
		}
	}
}

// escape decodes the escape sequence at p.i.
func (p *parser) escape() (rune, error) {
	if p.i+1 >= len(p.src) {
		return 0, p.fail("unterminated escape")
	}
	c := p.src[p.i+1]
	p.i += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := p.hex4()
		if !ok {
			return 0, p.fail(`invalid \u escape`)
		}
		if utf16.IsSurrogate(r) {
			if r >= 0xDC00 || p.i+1 >= len(p.src) || p.src[p.i] != '\\' || p.src[p.i+1] != 'u' {
				return 0, p.fail("lone surrogate")
			}
			p.i += 2
			lo, ok := p.hex4()
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return 0, p.fail("lone surrogate")
			}
			r = utf16.DecodeRune(r, lo)
		}
		return r, nil
	}
	return 0, p.fail("invalid escape")
}

func (p *parser) hex4() (rune, bool) {
	if len(p.src)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.src[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// appendChar appends r as RFC 8785 §3.2.2.2 writes it inside a string.
func appendChar(b []byte, r rune) []byte {
	switch r {
	case '"':
		return append(b, '\\', '"')
	case '\\':
		return append(b, '\\', '\\')
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	if r < 0x20 {
		const hex = "0123456789abcdef"
		return append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xF])
	}
	return utf8.AppendRune(b, r)
}

// number parses a number at p.i and appends its canonical text.
func (p *parser) number() (int32, error) {
	start := p.i
	if p.src[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.src) && p.src[p.i] == '0':
		p.i++
	case p.i < len(p.src) && p.src[p.i] >= '1' && p.src[p.i] <= '9':
		p.digits()
	default:
		return 0, p.fail("invalid number")
	}
	if p.i < len(p.src) && p.src[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return 0, p.fail("invalid number")
		}
	}
	if p.i < len(p.src) && (p.src[p.i] == 'e' || p.src[p.i] == 'E') {
		p.i++
		if p.i < len(p.src) && (p.src[p.i] == '+' || p.src[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return 0, p.fail("invalid number")
		}
	}
	lit := p.src[start:p.i]
	at := len(p.text)
	if n, ok := smallInt(lit); ok { // the common case, exactly
		p.text = strconv.AppendInt(p.text, n, 10)
		return p.scalar(at), nil
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil && (math.IsInf(f, 0) || f != 0) {
		return 0, &Error{Offset: start, Reason: "number out of the IEEE 754 double range"}
	}
	p.text = AppendNumber(p.text, f)
	return p.scalar(at), nil
}

func (p *parser) digits() int {
	start := p.i
	for p.i < len(p.src) && p.src[p.i] >= '0' && p.src[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

// smallInt reads an integer literal of at most 15 digits, which a double
// holds exactly and ECMAScript writes as is ("-0" is 0).
func smallInt(lit []byte) (int64, bool) {
	neg := len(lit) > 0 && lit[0] == '-'
	d := lit
	if neg {
		d = lit[1:]
	}
	if len(d) == 0 || len(d) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// AppendNumber appends f as ECMAScript's Number.prototype.toString writes
// it (ECMA-262 Number::toString, which RFC 8785 §3.2.2.3 adopts): the
// shortest digits that round-trip, in plain notation for exponents from
// -7 to 20 and in exponent notation otherwise; -0 is 0. f must be finite.
func AppendNumber(b []byte, f float64) []byte {
	if f == 0 {
		return append(b, '0')
	}
	if f < 0 {
		b = append(b, '-')
		f = -f
	}
	// Shortest digits d1.d2d3...e±x: k digits, value = digits × 10^(n−k).
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	mant, exp, _ := cutByte(e, 'e')
	x, _ := strconv.Atoi(string(exp))
	digits := make([]byte, 0, 17)
	digits = append(digits, mant[0])
	if len(mant) > 2 {
		digits = append(digits, mant[2:]...)
	}
	k, n := len(digits), x+1
	switch {
	case k <= n && n <= 21:
		b = append(b, digits...)
		for range n - k {
			b = append(b, '0')
		}
	case 0 < n && n <= 21:
		b = append(b, digits[:n]...)
		b = append(b, '.')
		b = append(b, digits[n:]...)
	case -6 < n && n <= 0:
		b = append(b, '0', '.')
		for range -n {
			b = append(b, '0')
		}
		b = append(b, digits...)
	default:
		b = append(b, digits[0])
		if k > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'e')
		if n-1 >= 0 {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, int64(n-1), 10)
	}
	return b
}

func cutByte(s []byte, c byte) (before, after []byte, found bool) {
	for i, x := range s {
		if x == c {
			return s[:i], s[i+1:], true
		}
	}
	return s, nil, false
}

// emit appends node nd's canonical text to b.
func (p *parser) emit(b []byte, nd node) []byte {
	switch nd.kind {
	case scalar:
		return append(b, p.text[nd.a:nd.b]...)
	case array:
		b = append(b, '[')
		for i, k := range p.kids[nd.a:nd.b] {
			if i > 0 {
				b = append(b, ',')
			}
			b = p.emit(b, p.nodes[k])
		}
		return append(b, ']')
	}
	b = append(b, '{')
	kids := p.kids[nd.a:nd.b]
	for i := 0; i < len(kids); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = p.emit(b, p.nodes[kids[i]])
		b = append(b, ':')
		b = p.emit(b, p.nodes[kids[i+1]])
	}
	return append(b, '}')
}
