package strictjson

import (
	"encoding/json"
	"errors"
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

// FuzzCheck: Check accepts only what encoding/json calls valid, and
// refuses valid JSON only for a duplicate name or invalid UTF-8.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[1,2,{"c":null}]}`, `{"a":1,"a":2}`, `[1,"x",true]`, `{"\u0061":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Check(data)
		valid := json.Valid(data)
		if err == nil && !valid {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var de *DuplicateKeysError
		if err != nil && valid && utf8.Valid(data) && !errors.As(err, &de) {
			t.Fatalf("refused valid JSON %q: %v", data, err)
		}
	})
}
