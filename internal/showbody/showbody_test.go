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
		require.NoError(t, json.Unmarshal([]byte(got), &v))
		walk(v)
	})
}
