// Package sfv parses the parts of RFC 8941 structured field values that the
// RFC 9421 Signature-Input and Signature headers use: a dictionary whose
// members are inner lists of strings with parameters, or byte sequences.
package sfv

import (
	"errors"
	"strconv"
	"strings"
)

// ErrSyntax reports a header that is not a valid structured field.
var ErrSyntax = errors.New("structured field syntax error")

// ErrTooLarge reports a dictionary with more members, inner-list items or
// parameters than the parser accepts.
var ErrTooLarge = errors.New("structured field too large")

// Limits on what ParseDictionary accepts: far above what a signature
// header carries (one or two members of six parameters and five
// components), low enough that what a caller does per member, item or
// parameter stays cheap whatever the input.
const (
	MaxMembers = 8
	MaxItems   = 16
	MaxParams  = 8
)

// Param is one parameter: an integer, a string or a token.
type Param struct {
	Name string
	// Int is set when IsInt; Str holds strings and tokens (IsToken).
	Int     int64
	IsInt   bool
	IsToken bool
	Str     string
}

// Member is one dictionary member: an inner list of strings with
// parameters, or a byte sequence (its text between the colons, undecoded).
type Member struct {
	Name   string
	Items  []string
	Params []Param
	Bytes  string
	IsList bool
	// ItemParams reports that some item of the inner list had parameters
	// (which Items does not keep).
	ItemParams bool
}

// ParseDictionary parses a dictionary of inner lists and byte sequences, in
// time linear in len(s). Every member is returned, in order, duplicates
// included: RFC 8941 keeps the last of a name, but a verifier must refuse
// an ambiguous header rather than pick one (see [Find]).
func ParseDictionary(s string) ([]Member, error) {
	p := &parser{s: s}
	var out []Member
	p.ows()
	for {
		name, err := p.key()
		if err != nil {
			return nil, err
		}
		if !p.eat('=') {
			return nil, ErrSyntax // bare true booleans are not used here
		}
		m := Member{Name: name}
		switch {
		case p.peek() == '(':
			m.IsList = true
			if m.Items, m.ItemParams, err = p.innerList(); err != nil {
				return nil, err
			}
			if m.Params, err = p.params(); err != nil {
				return nil, err
			}
		case p.peek() == ':':
			p.i++
			end := strings.IndexByte(p.s[p.i:], ':')
			if end < 0 {
				return nil, ErrSyntax
			}
			m.Bytes = p.s[p.i : p.i+end]
			p.i += end + 1
			if _, err = p.params(); err != nil {
				return nil, err
			}
		default:
			return nil, ErrSyntax
		}
		if len(out) == MaxMembers {
			return nil, ErrTooLarge
		}
		out = append(out, m)
		p.ows()
		if p.i == len(p.s) {
			return out, nil
		}
		if !p.eat(',') {
			return nil, ErrSyntax
		}
		p.ows()
		if p.i == len(p.s) {
			return nil, ErrSyntax // trailing comma
		}
	}
}

type parser struct {
	s string
	i int
}

func (p *parser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) eat(c byte) bool {
	if p.peek() == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) ows() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *parser) sp() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

// key is lcalpha / "*" followed by lcalpha, digits, "_", "-", ".", "*".
func (p *parser) key() (string, error) {
	start := p.i
	if c := p.peek(); !(c >= 'a' && c <= 'z' || c == '*') {
		return "", ErrSyntax
	}
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *parser) innerList() (items []string, itemParams bool, err error) {
	p.i++ // (
	for {
		p.sp()
		if p.eat(')') {
			return items, itemParams, nil
		}
		if len(items) > 0 && p.s[p.i-1] != ' ' {
			return nil, false, ErrSyntax // items must be separated by a space
		}
		s, err := p.str()
		if err != nil {
			return nil, false, err
		}
		ps, err := p.params()
		if err != nil {
			return nil, false, err
		}
		itemParams = itemParams || len(ps) > 0
		if len(items) == MaxItems {
			return nil, false, ErrTooLarge
		}
		items = append(items, s)
		if c := p.peek(); c != ' ' && c != ')' {
			return nil, false, ErrSyntax
		}
	}
}

func (p *parser) params() ([]Param, error) {
	var out []Param
	for p.eat(';') {
		p.sp()
		name, err := p.key()
		if err != nil {
			return nil, err
		}
		prm := Param{Name: name}
		if !p.eat('=') {
			return nil, ErrSyntax // bare boolean parameters are not used here
		}
		switch c := p.peek(); {
		case c == '"':
			if prm.Str, err = p.str(); err != nil {
				return nil, err
			}
		case c == '-' || c >= '0' && c <= '9':
			start := p.i
			p.i++
			for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
				p.i++
			}
			if p.i-start > 16 {
				return nil, ErrSyntax
			}
			n, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
			if err != nil {
				return nil, ErrSyntax
			}
			prm.Int, prm.IsInt = n, true
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*':
			start := p.i
			for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
				p.i++
			}
			prm.Str, prm.IsToken = p.s[start:p.i], true
		default:
			return nil, ErrSyntax
		}
		if len(out) == MaxParams {
			return nil, ErrTooLarge
		}
		out = append(out, prm)
	}
	return out, nil
}

// Find returns the first member named name and how many members have that
// name.
func Find(ms []Member, name string) (m Member, n int) {
	for _, x := range ms {
		if x.Name == name {
			if n == 0 {
				m = x
			}
			n++
		}
	}
	return m, n
}

func (p *parser) str() (string, error) {
	if !p.eat('"') {
		return "", ErrSyntax
	}
	// Most strings have no escapes: their value is a slice of the input.
	for i := p.i; i < len(p.s); i++ {
		c := p.s[i]
		if c == '"' {
			v := p.s[p.i:i]
			p.i = i + 1
			return v, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 || c > 0x7e {
			return "", ErrSyntax
		}
	}
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.i >= len(p.s) || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return "", ErrSyntax
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c == '"':
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", ErrSyntax
		default:
			b.WriteByte(c)
		}
	}
	return "", ErrSyntax
}

func isTokenChar(c byte) bool {
	return c > 0x20 && c < 0x7f && !strings.ContainsRune(`"(),;<=>?@[\]{}`, rune(c))
}

// Serialize writes an inner list with parameters back in canonical form,
// as RFC 9421 signs it in "@signature-params".
func Serialize(items []string, params []Param) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		writeString(&b, it)
	}
	b.WriteByte(')')
	for _, prm := range params {
		b.WriteByte(';')
		b.WriteString(prm.Name)
		b.WriteByte('=')
		switch {
		case prm.IsInt:
			b.WriteString(strconv.FormatInt(prm.Int, 10))
		case prm.IsToken:
			b.WriteString(prm.Str)
		default:
			writeString(&b, prm.Str)
		}
	}
	return b.String()
}

func writeString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}
