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

// ParseDictionary parses a dictionary of inner lists and byte sequences.
// Duplicate names keep the last member, as RFC 8941 says.
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
		for i := range out {
			if out[i].Name == name {
				out = append(out[:i], out[i+1:]...)
				break
			}
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
		out = append(out, prm)
	}
	return out, nil
}

func (p *parser) str() (string, error) {
	if !p.eat('"') {
		return "", ErrSyntax
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
