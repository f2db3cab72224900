package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		`{}`, `[]`, `1`, `"s"`, `null`, ` {"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]} `,
		`{"a":{"b":1},"b":{"a":1}}`, `[{"k":1},{"k":1}]`, `{"é":1,"e":2}`,
	} {
		require.NoError(t, Check([]byte(ok)), ok)
	}
	for in, want := range map[string]string{
		`{"a":1,"a":2}`:               `duplicate object keys "a"`,
		`{"a":1,"\u0061":2}`:          `duplicate object keys "a"`,
		`{"x":{"a":[],"b":1,"a":{}}}`: `duplicate object keys "a"`,
		`{"a":1,"a":1,"a":1}`:         `duplicate object keys "a", "a"`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"a":1,"b":2,"c":3,"d":4,"e":5,"e":6}`: `duplicate object keys "a", "b", "c", "d", <...2 more>`,
		"{\"a\\u202eb\":1,\"a\\u202eb\":2}":                                   `duplicate object keys <sanitized:1>`,
		"\xff":                                                                "not valid UTF-8",
		"{\"a\":\"\xfe\"}":                                                    "not valid UTF-8",
		`{"a":1} {"a":1}`:                                                     "more than one value",
		`{"a":1,}`:                                                            "syntax error at byte",
		`{"a":1`:                                                              "incomplete",
		``:                                                                    "empty",
		`   `:                                                                 "empty",
	} {
		err := Check([]byte(in))
		require.ErrorIs(t, err, ErrMalformed, in)
		require.Contains(t, err.Error(), want, in)
	}
	var de *DuplicateKeysError
	require.True(t, errors.As(Check([]byte(`{"k":1,"k":2}`)), &de))
	require.Equal(t, []string{`"k"`}, de.Names)
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"media_buy_id":                      `"media_buy_id"`,
		"a\x00b":                            "<sanitized:1>",
		"\x1b[31m":                          "<sanitized:0>",
		"ab\x7f":                            "<sanitized:2>",
		"x\u0085":                           "<sanitized:1>", // C1 (NEL)
		"abc\u200e":                         "<sanitized:3>", // LRM
		"\u202eevil":                        "<sanitized:0>", // RLO
		"a\u2066":                           "<sanitized:1>", // LRI
		"line\u2028two":                     "<sanitized:4>",
		"zero\u200dwidth":                   "<sanitized:4>",
		"\ufeffbom":                         "<sanitized:0>",
		"é":                                 `"é"`,
		strings.Repeat("a", 40):             `"` + strings.Repeat("a", 32) + `"`,
		strings.Repeat("a", 31) + "éé":      `"` + strings.Repeat("a", 31) + `"`, // é would split at byte 32
		strings.Repeat("a", 30) + "é" + "z": `"` + strings.Repeat("a", 30) + `é"`,
		`quote"d`:                           `"quote\"d"`,
	} {
		require.Equal(t, want, Sanitize(in), "%q", in)
	}
}

// FuzzCheck: Check agrees with a reference built on encoding/json's
// tokenizer: the same inputs pass, and the same duplicate names are found.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[1,2,{"c":null}]}`, `{"a":1,"a":2}`, `[1,"x",true]`, `{"\u0061":1,"a":2}`,
		`{"a":-0.5e+3,"b":"\n\u00e9"}`, `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12,"kd":13,"ke":14,"kf":15,"kg":16,"k0":17}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, want := Check(data), checkByTokens(data)
		if (got == nil) != (want == nil) {
			t.Fatalf("%q: Check says %v, the reference %v", data, got, want)
		}
		if got != nil && !errors.Is(got, ErrMalformed) {
			t.Fatalf("%q: %v does not wrap ErrMalformed", data, got)
		}
		var g, w *DuplicateKeysError
		if errors.As(want, &w) {
			if !errors.As(got, &g) || !slices.Equal(g.Names, w.Names) || g.More != w.More {
				t.Fatalf("%q: Check says %v, the reference %v", data, got, want)
			}
		}
		if got == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
	})
}

// checkByTokens is Check written on json.Decoder.Token: slower, and the
// oracle FuzzCheck holds Check to.
func checkByTokens(data []byte) error {
	if !utf8.Valid(data) {
		return ErrMalformed
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
	ended := func() {
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
			return ErrMalformed
		}
		if len(stack) == 0 {
			if values++; values > 1 {
				return ErrMalformed
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
	if values == 0 || len(stack) > 0 {
		return ErrMalformed
	}
	if len(dups.Names) > 0 {
		return &dups
	}
	return nil
}

// BenchmarkCheck: a typical webhook body.
func BenchmarkCheck(b *testing.B) {
	body := []byte(`{"idempotency_key":"whk_6afb04af-fcf9-4881-a0db-42e8500bfb81","task_id":"task_456","operation_id":"op_abc","status":"completed","timestamp":"2026-12-03T01:50:00Z","result":{"media_buy_id":"mb_001","packages":[{"package_id":"pkg_1","budget":1500.5},{"package_id":"pkg_2","budget":2e3}]}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(body); err != nil {
			b.Fatal(err)
		}
	}
}
