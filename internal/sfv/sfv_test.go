package sfv

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const vectorInput = `sig1=("@method" "@target-uri" "@authority" "content-type" "content-digest");created=1776520800;expires=1776521100;nonce="KXYnfEfJ0PBRZXQyVXfVQA";keyid="test-ed25519-webhook-2026";alg="ed25519";tag="adcp/webhook-signing/v1"`

func TestParseSignatureInput(t *testing.T) {
	t.Parallel()
	ms, err := ParseDictionary(vectorInput + `, relay=("@method");created=1;keyid="r";alg=ed25519`)
	require.NoError(t, err)
	require.Len(t, ms, 2)
	m := ms[0]
	require.Equal(t, "sig1", m.Name)
	require.True(t, m.IsList)
	require.Equal(t, []string{"@method", "@target-uri", "@authority", "content-type", "content-digest"}, m.Items)
	require.Equal(t, Param{Name: "created", Int: 1776520800, IsInt: true}, m.Params[0])
	require.Equal(t, Param{Name: "nonce", Str: "KXYnfEfJ0PBRZXQyVXfVQA"}, m.Params[2])
	require.Equal(t, vectorInput[len("sig1="):], Serialize(m.Items, m.Params), "canonical input re-serialises byte for byte")
	require.Equal(t, Param{Name: "alg", Str: "ed25519", IsToken: true}, ms[1].Params[2])
	require.Equal(t, `("@method");created=1;keyid="r";alg=ed25519`, Serialize(ms[1].Items, ms[1].Params))

	sig, err := ParseDictionary(`sig1=:nqTK-_x:`)
	require.NoError(t, err)
	require.Equal(t, "nqTK-_x", sig[0].Bytes)
	require.False(t, sig[0].IsList)

	esc, err := ParseDictionary(`a=("x\"y" "b\\c")`)
	require.NoError(t, err)
	require.Equal(t, []string{`x"y`, `b\c`}, esc[0].Items)
	require.Equal(t, `("x\"y" "b\\c")`, Serialize(esc[0].Items, esc[0].Params))
}

func TestParseDictionaryRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"", "sig1", "sig1=this-is-not-valid-structured-fields", "Sig1=()", "sig1=(", `sig1=("a"`,
		`sig1=("a""b")`, `sig1=("a" "b");created`, `sig1=();x=`, "sig1=:abc", "sig1=(),", `sig1=("\q")`,
		`sig1=();n=12345678901234567`, "sig1=() x=()",
	} {
		_, err := ParseDictionary(in)
		require.True(t, errors.Is(err, ErrSyntax), "%q", in)
	}
}

func FuzzParseDictionary(f *testing.F) {
	f.Add(vectorInput)
	f.Add(`sig1=:nqTKCpjlqf1OqZPuJyPeiF7HJ01G8KmPNSzzmad0PAJv7OUVKthI7ks_j4G-6x1H4mBpXDIISgX_iZQiYvG7Dg:`)
	f.Add(`sig1=("@method");created=-5;alg=tok, relay=("a" "b");x="y"`)
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := ParseDictionary(in)
		if err != nil {
			return
		}
		for _, m := range ms {
			if !m.IsList {
				continue
			}
			// Re-serialised members parse back to themselves.
			out := Serialize(m.Items, m.Params)
			again, err := ParseDictionary(m.Name + "=" + out)
			if err != nil {
				t.Fatalf("%q re-serialised as %q does not parse: %v", in, out, err)
			}
			if Serialize(again[0].Items, again[0].Params) != out {
				t.Fatalf("not stable: %q", out)
			}
		}
	})
}

func TestParseDictionaryKeepsDuplicatesAndBoundsSizes(t *testing.T) {
	t.Parallel()
	ms, err := ParseDictionary(`a=(), b=:x:, a=("y")`)
	require.NoError(t, err)
	require.Len(t, ms, 3)
	m, n := Find(ms, "a")
	require.Equal(t, 2, n)
	require.Empty(t, m.Items, "Find returns the first")
	_, n = Find(ms, "c")
	require.Zero(t, n)

	many := func(n int, one string, sep string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(one, i)
		}
		return strings.Join(parts, sep)
	}
	for name, c := range map[string]struct {
		limit int
		build func(n int) string
	}{
		"members": {MaxMembers, func(n int) string { return many(n, "m%d=()", ", ") }},
		"items":   {MaxItems, func(n int) string { return "a=(" + many(n, `"i%d"`, " ") + ")" }},
		"params":  {MaxParams, func(n int) string { return "a=()" + many(n, ";p%d=1", "") }},
	} {
		_, err := ParseDictionary(c.build(c.limit))
		require.NoError(t, err, name)
		_, err = ParseDictionary(c.build(c.limit + 1))
		require.ErrorIs(t, err, ErrTooLarge, name)
	}
}
