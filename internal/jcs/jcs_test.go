package jcs

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gowebpki "github.com/gowebpki/jcs"
	"github.com/stretchr/testify/require"
)

// The RFC's published vectors (testdata/README.md).
func TestRFC8785Vectors(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/input/*.json")
	require.NoError(t, err)
	require.Len(t, files, 10)
	for _, f := range files {
		in, err := os.ReadFile(f)
		require.NoError(t, err)
		want, err := os.ReadFile(filepath.Join("testdata/output", filepath.Base(f)))
		require.NoError(t, err)
		got, err := Append(nil, in)
		require.NoError(t, err, f)
		require.Equal(t, string(want), string(got), f)
		sum, err := Sum256(in)
		require.NoError(t, err)
		require.Equal(t, sha256.Sum256(want), sum, f)
	}
}

// RFC 8785 Appendix B: IEEE 754 doubles and their canonical text.
func TestRFC8785Numbers(t *testing.T) {
	t.Parallel()
	for bits, want := range map[string]string{
		"0000000000000000": "0",
		"8000000000000000": "0",
		"0000000000000001": "5e-324",
		"8000000000000001": "-5e-324",
		"7fefffffffffffff": "1.7976931348623157e+308",
		"ffefffffffffffff": "-1.7976931348623157e+308",
		"4340000000000000": "9007199254740992",
		"c340000000000000": "-9007199254740992",
		"4430000000000000": "295147905179352830000",
		"44b52d02c7e14af5": "9.999999999999997e+22",
		"44b52d02c7e14af6": "1e+23",
		"44b52d02c7e14af7": "1.0000000000000001e+23",
		"444b1ae4d6e2ef4e": "999999999999999700000",
		"444b1ae4d6e2ef4f": "999999999999999900000",
		"444b1ae4d6e2ef50": "1e+21",
		"3eb0c6f7a0b5ed8c": "9.999999999999997e-7",
		"3eb0c6f7a0b5ed8d": "0.000001",
		"41b3de4355555553": "333333333.3333332",
		"41b3de4355555554": "333333333.33333325",
		"41b3de4355555555": "333333333.3333333",
		"41b3de4355555556": "333333333.3333334",
		"41b3de4355555557": "333333333.33333343",
		"becbf647612f3696": "-0.0000033333333333333333",
		"43143ff3c1cb0959": "1424953923781206.2",
	} {
		raw, err := hex.DecodeString(bits)
		require.NoError(t, err)
		f := math.Float64frombits(binary.BigEndian.Uint64(raw))
		require.Equal(t, want, string(AppendNumber(nil, f)), bits)
		// And as parsed from the text the RFC's generator would read.
		got, err := Append(nil, []byte(want))
		require.NoError(t, err)
		require.Equal(t, want, string(got), bits)
	}
}

func TestRefusesWhatHasNoCanonicalForm(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"duplicate":             `{"a":1,"a":2}`,
		"duplicate by escape":   `{"a":1,"\u0061":2}`,
		"nested duplicate":      `[{"x":{"b":1,"b":1}}]`,
		"lone high surrogate":   `"\ud800"`,
		"lone low surrogate":    `"\udc00x"`,
		"reversed pair":         `"\ude00\ud83d"`,
		"invalid UTF-8":         "\"\xff\"",
		"out of range":          `1e400`,
		"negative out of range": `[-1e309]`,
		"trailing data":         `{} {}`,
		"trailing comma":        `[1,]`,
		"leading zero":          `01`,
		"bare fraction":         `1.`,
		"control character":     "\"a\x01\"",
		"unterminated":          `{"a":"b`,
		"too deep":              strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1),
		"empty":                 ``,
		"bad literal":           `nul`,
	} {
		_, err := Append(nil, []byte(in))
		var e *Error
		require.ErrorAs(t, err, &e, name)
		if strings.Contains(name, "duplicate") {
			require.ErrorIs(t, err, ErrDuplicateKey, name)
		} else {
			require.False(t, errors.Is(err, ErrDuplicateKey), name)
		}
	}
}

// Names sort by UTF-16 code units: a character beyond U+FFFF (a surrogate
// pair, D83D...) sorts before U+FB33, though its code point is larger.
func TestSortsByUTF16CodeUnits(t *testing.T) {
	t.Parallel()
	got, err := Append(nil, []byte(`{"\ufb33":1,"\ud83d\ude02":2,"\u00f6":3,"a":4,"ab":5,"":6}`))
	require.NoError(t, err)
	require.Equal(t, "{\"\":6,\"a\":4,\"ab\":5,\"\u00f6\":3,\"\U0001F602\":2,\"\ufb33\":1}", string(got))
}

// The scalars the body builder writes come back unchanged, so an MCP
// body's canonical form differs from it only in member order.
func TestCanonicalScalars(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`"\u20ac\/\u000F"`:          `"€/\u000f"`,
		`"\u007f\u2028"`:            "\"\u007f\u2028\"",
		`-0`:                        `0`,
		`-0.0e5`:                    `0`,
		`1E2`:                       `100`,
		`1e-400`:                    `0`, // underflow is 0, as in ECMAScript
		`123456789012345`:           `123456789012345`,
		`1234567890123456789`:       `1234567890123456800`,
		` [ true , false , null ] `: `[true,false,null]`,
	} {
		got, err := Append(nil, []byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, string(got), in)
	}
}

// FuzzAgainstGowebpki compares with github.com/gowebpki/jcs, the
// maintained Go implementation: the same canonical form, or both refuse.
func FuzzAgainstGowebpki(f *testing.F) {
	files, _ := filepath.Glob("testdata/input/*.json")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	for _, s := range []string{`{"a":1,"a":2}`, `[1e400]`, `"\ud800"`, `{"b":[{"d":1,"c":2}],"a":-0.0}`, `1e-400`, `[0.1,1e21,1e-7,123e-20]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Append(nil, in)
		want, werr := gowebpki.Transform(in)
		if werr != nil {
			if err == nil && !strings.Contains(werr.Error(), "range") {
				t.Fatalf("gowebpki refuses %q (%v); got %q", in, werr, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("refused %q (%v); gowebpki gives %q", in, err, want)
		}
		if string(got) != string(want) {
			t.Fatalf("%q: got %q, gowebpki %q", in, got, want)
		}
	})
}

var mcpBody = []byte(`{"idempotency_key":"whk_b40c3ec9-6fc8-494a-be27-432d27360dfc","notification_id":"t1.terminal","operation_id":"op_1","task_id":"task_1","task_type":"create_media_buy","protocol":"media-buy","status":"completed","timestamp":"2026-04-18T14:00:00.000Z","result":{"media_buy_id":"mb_12345","packages":[{"package_id":"p1","budget":1500.5}]}}`)

// go test -bench . ./internal/jcs: this package against gowebpki on an MCP
// body.
func BenchmarkSum256(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sum256(mcpBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGowebpki(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		out, err := gowebpki.Transform(mcpBody)
		if err != nil {
			b.Fatal(err)
		}
		sha256.Sum256(out)
	}
}
