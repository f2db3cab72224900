package showbody

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPrettyKeepsOrderAndRedactsSecrets(t *testing.T) {
	body := `{"idempotency_key":"whk_1","token":"sekrit-token-value-123","result":{"z":1,"a":[true,null,1.50e3],"Credentials":{"x":"y"},"api-key":7},"empty":{},"list":[]}`
	got := Pretty([]byte(body))
	want := `{
  "idempotency_key": "whk_1",
  "token": "<redacted>",
  "result": {
    "z": 1,
    "a": [
      true,
      null,
      1.50e3
    ],
    "Credentials": "<redacted>",
    "api-key": "<redacted>"
  },
  "empty": {},
  "list": []
}`
	require.Equal(t, want, got)
	require.NotContains(t, got, "sekrit")
}

func TestPrettyRefusesWhatIsNotJSON(t *testing.T) {
	for _, b := range []string{``, `{"a":`, `{"a":1} trailing`, `not json`, `{"token":"x"`} {
		got := Pretty([]byte(b))
		require.True(t, strings.HasPrefix(got, "(not JSON: "), "%q -> %q", b, got)
		if b != "" {
			require.NotContains(t, got, b)
		}
	}
}

func FuzzPretty(f *testing.F) {
	f.Add([]byte(`{"token":"abc","a":[1,{"secret":"s"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Pretty(b)
		if strings.HasPrefix(got, "(not JSON") {
			return
		}
		require.True(t, json.Valid([]byte(got)), "%q", got)
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, m := range v {
					if IsSecret(k) {
						require.Equal(t, Redacted, m, "member %q", k)
						continue
					}
					walk(m)
				}
			case []any:
				for _, m := range v {
					walk(m)
				}
			}
		}
		var v any
		d := json.NewDecoder(strings.NewReader(got))
		d.UseNumber() // numbers beyond float64 are valid JSON
		require.NoError(t, d.Decode(&v))
		walk(v)
	})
}

// Output is a small multiple of the input, however deep or long the body
// (bodies may nest 10,000 levels and weigh 10 MiB).
func TestPrettyCostIsBoundedByTheBody(t *testing.T) {
	for name, body := range map[string]string{
		"deep arrays":  strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		"deep objects": strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000),
		"deep wide":    `{"result":` + strings.Repeat("[", 2000) + strings.TrimSuffix(strings.Repeat("1,", 20000), ",") + strings.Repeat("]", 2000) + `}`,
		"long":         "[" + strings.TrimSuffix(strings.Repeat("[1],", 100000), ",") + "]",
	} {
		got := Pretty([]byte(body))
		require.False(t, strings.HasPrefix(got, "(not JSON"), name)
		require.True(t, json.Valid([]byte(got)), name)
		require.LessOrEqual(t, len(got), 20*len(body), "%s: %d bytes shown for %d", name, len(got), len(body))
	}
	long := Pretty([]byte(`{"token":"x","a":[` + strings.Repeat(`"y",`, 70000) + `"z"]}`))
	require.NotContains(t, long, "\n", "a long body is shown on one line")
	require.Contains(t, long, `"token":"<redacted>"`)
}

func TestCamelCaseSecretsAreRedacted(t *testing.T) {
	for _, name := range []string{"accessToken", "apiKey", "clientSecret", "refreshToken", "privateKey", "API-KEY", "Access_Token"} {
		got := Pretty([]byte(`{"` + name + `":"SEKRIT-VALUE"}`))
		require.NotContains(t, got, "SEKRIT-VALUE", name)
	}
	require.NotContains(t, Pretty([]byte(`{"tokens":"shown"}`)), Redacted, "only the listed names")
}
