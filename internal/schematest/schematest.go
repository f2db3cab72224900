// Package schematest checks JSON documents against the AdCP spec's JSON
// Schemas in tests. It implements the draft-07 keywords those schemas use
// (type, enum, const, properties, required, additionalProperties, items,
// minItems, maxItems, uniqueItems, minimum, maximum, minLength, maxLength,
// pattern, format date-time and uri, allOf, anyOf, oneOf, not, if/then/else,
// and $ref to the
// schemas it was given) and refuses a schema with any other validation
// keyword, so that nothing is skipped silently. A $ref to a schema it was
// not given is reported in Result.Unresolved, for the test to account
// for.
package schematest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Set is a set of schemas, found by the base name of their $id.
type Set struct {
	byName map[string]map[string]any
}

// Load reads schema files into a Set.
func Load(files ...string) (*Set, error) {
	s := &Set{byName: map[string]map[string]any{}}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var schema map[string]any
		if err := json.Unmarshal(raw, &schema); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		name := path.Base(f)
		if id, ok := schema["$id"].(string); ok {
			name = path.Base(id)
		}
		s.byName[name] = schema
	}
	return s, nil
}

// Result is what Validate found.
type Result struct {
	// Errors are the violations, each with its JSON path.
	Errors []string
	// Unresolved are the $refs to schemas the Set does not hold: the
	// values under them were not checked.
	Unresolved []string
}

// Validate checks the JSON document doc against the schema named name
// (the base name of its $id, "webhook-activity-record.json").
func (s *Set) Validate(name string, doc []byte) (Result, error) {
	schema, ok := s.byName[name]
	if !ok {
		return Result{}, fmt.Errorf("schematest: no schema %q", name)
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(string(doc)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return Result{}, err
	}
	var r Result
	if err := s.check(&r, schema, v, "$"); err != nil {
		return Result{}, err
	}
	slices.Sort(r.Unresolved)
	r.Unresolved = slices.Compact(r.Unresolved)
	return r, nil
}

// Keywords that do not constrain a value.
var annotations = map[string]bool{
	"$schema": true, "$id": true, "title": true, "description": true, "default": true,
	"deprecated": true, "examples": true, "enumDescriptions": true, "$comment": true,
	"readOnly": true, "writeOnly": true, "notes": true,
}

func (s *Set) check(r *Result, schema map[string]any, v any, at string) error {
	fail := func(format string, args ...any) { r.Errors = append(r.Errors, at+": "+fmt.Sprintf(format, args...)) }
	for k, kw := range schema {
		if annotations[k] || strings.HasPrefix(k, "x-") {
			continue
		}
		switch k {
		case "$ref":
			ref, _ := kw.(string)
			target, ok := s.byName[path.Base(ref)]
			if !ok {
				r.Unresolved = append(r.Unresolved, ref)
				continue
			}
			if err := s.check(r, target, v, at); err != nil {
				return err
			}
		case "type":
			var types []string
			switch t := kw.(type) {
			case string:
				types = []string{t}
			case []any:
				for _, x := range t {
					types = append(types, x.(string))
				}
			}
			if !slices.ContainsFunc(types, func(t string) bool { return isType(v, t) }) {
				fail("is %s, want %v", typeOf(v), types)
			}
		case "enum":
			if !slices.ContainsFunc(kw.([]any), func(e any) bool { return equal(e, v) }) {
				fail("%v is not one of %v", v, kw)
			}
		case "const":
			if !equal(kw, v) {
				fail("%v is not %v", v, kw)
			}
		case "properties":
			if obj, ok := v.(map[string]any); ok {
				for name, sub := range kw.(map[string]any) {
					if mv, ok := obj[name]; ok {
						if err := s.check(r, sub.(map[string]any), mv, at+"."+name); err != nil {
							return err
						}
					}
				}
			}
		case "required":
			if obj, ok := v.(map[string]any); ok {
				for _, name := range kw.([]any) {
					if _, ok := obj[name.(string)]; !ok {
						fail("lacks required member %q", name)
					}
				}
			}
		case "additionalProperties":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			props, _ := schema["properties"].(map[string]any)
			for name, mv := range obj {
				if _, known := props[name]; known {
					continue
				}
				switch ap := kw.(type) {
				case bool:
					if !ap {
						fail("has member %q, which the schema does not allow", name)
					}
				case map[string]any:
					if err := s.check(r, ap, mv, at+"."+name); err != nil {
						return err
					}
				}
			}
		case "items":
			if arr, ok := v.([]any); ok {
				for i, e := range arr {
					if err := s.check(r, kw.(map[string]any), e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
						return err
					}
				}
			}
		case "minItems", "maxItems":
			if arr, ok := v.([]any); ok {
				n := num(kw)
				if k == "minItems" && float64(len(arr)) < n || k == "maxItems" && float64(len(arr)) > n {
					fail("has %d items, %s is %v", len(arr), k, n)
				}
			}
		case "uniqueItems":
			if arr, ok := v.([]any); ok && kw == true {
				for i := range arr {
					for j := range i {
						if equal(arr[i], arr[j]) {
							fail("items %d and %d are equal", j, i)
						}
					}
				}
			}
		case "minimum", "maximum":
			if n, ok := v.(json.Number); ok {
				f, _ := n.Float64()
				if k == "minimum" && f < num(kw) || k == "maximum" && f > num(kw) {
					fail("%v is outside %s %v", n, k, kw)
				}
			}
		case "minLength", "maxLength":
			if str, ok := v.(string); ok {
				n := float64(utf8.RuneCountInString(str))
				if k == "minLength" && n < num(kw) || k == "maxLength" && n > num(kw) {
					fail("has %v characters, %s is %v", n, k, kw)
				}
			}
		case "pattern":
			if str, ok := v.(string); ok {
				re, err := regexp.Compile(kw.(string))
				if err != nil {
					return fmt.Errorf("schematest: pattern at %s: %w", at, err)
				}
				if !re.MatchString(str) {
					fail("%q does not match %s", str, kw)
				}
			}
		case "format":
			str, ok := v.(string)
			if !ok {
				continue
			}
			switch kw {
			case "date-time":
				if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
					fail("%q is not an RFC 3339 date-time", str)
				}
			case "uri":
				if u, err := url.Parse(str); err != nil || u.Scheme == "" {
					fail("%q is not an absolute URI", str)
				}
			default:
				return fmt.Errorf("schematest: format %v at %s is not supported", kw, at)
			}
		case "if":
			var ir Result
			if err := s.check(&ir, kw.(map[string]any), v, at); err != nil {
				return err
			}
			r.Unresolved = append(r.Unresolved, ir.Unresolved...)
			branch := "else"
			if len(ir.Errors) == 0 {
				branch = "then"
			}
			if sub, ok := schema[branch].(map[string]any); ok {
				if err := s.check(r, sub, v, at); err != nil {
					return err
				}
			}
		case "then", "else": // with their if
		case "not":
			var nr Result
			if err := s.check(&nr, kw.(map[string]any), v, at); err != nil {
				return err
			}
			r.Unresolved = append(r.Unresolved, nr.Unresolved...)
			if len(nr.Errors) == 0 {
				fail("matches the schema it must not match")
			}
		case "allOf", "anyOf", "oneOf":
			matched := 0
			for _, sub := range kw.([]any) {
				var sr Result
				if err := s.check(&sr, sub.(map[string]any), v, at); err != nil {
					return err
				}
				r.Unresolved = append(r.Unresolved, sr.Unresolved...)
				if len(sr.Errors) == 0 {
					matched++
				} else if k == "allOf" {
					r.Errors = append(r.Errors, sr.Errors...)
				}
			}
			if k == "anyOf" && matched == 0 || k == "oneOf" && matched != 1 {
				fail("matches %d of the %s schemas", matched, k)
			}
		default:
			return fmt.Errorf("schematest: keyword %q at %s is not supported", k, at)
		}
	}
	return nil
}

func num(kw any) float64 {
	switch n := kw.(type) {
	case float64:
		return n
	case json.Number:
		f, _ := n.Float64()
		return f
	}
	return math.NaN()
}

func isType(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		f, err := n.Float64()
		return err == nil && f == math.Trunc(f)
	}
	return false
}

func typeOf(v any) string {
	for _, t := range []string{"null", "boolean", "string", "object", "array", "integer", "number"} {
		if isType(v, t) {
			return t
		}
	}
	return fmt.Sprintf("%T", v)
}

// equal compares two JSON values, numbers by value at any depth: a
// schema's are float64, a document's json.Number.
func equal(a, b any) bool {
	switch x := a.(type) {
	case float64, json.Number:
		return num(x) == num(b)
	case []any:
		y, ok := b.([]any)
		return ok && len(x) == len(y) && arraysEqual(x, y)
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func arraysEqual(x, y []any) bool {
	for i := range x {
		if !equal(x[i], y[i]) {
			return false
		}
	}
	return true
}
