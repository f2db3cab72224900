package schematest

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateFindsViolations(t *testing.T) {
	t.Parallel()
	set, err := Load("../../testdata/schemas/webhook-activity-record.json", "../../testdata/schemas/notification-type.json")
	require.NoError(t, err)
	valid := `{"idempotency_key":"whk_1","fired_at":"2026-04-18T14:00:00Z","completed_at":null,"notification_type":"scheduled",
		"attempt":1,"status":"pending","url":"https://buyer.example/hook","http_status_code":null,"response_time_ms":null,
		"error_message":null,"payload_size_bytes":10}`
	r, err := set.Validate("webhook-activity-record.json", []byte(valid))
	require.NoError(t, err)
	require.Empty(t, r.Errors)
	require.Equal(t, []string{}, append([]string{}, r.Unresolved...))

	for name, doc := range map[string]string{
		"missing required": `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1,"status":"pending"}`,
		"bad enum":         `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1,"status":"lost","url":"https://b.example/"}`,
		"bad ref enum":     `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"weekly","attempt":1,"status":"pending","url":"https://b.example/"}`,
		"below minimum":    `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":0,"status":"pending","url":"https://b.example/"}`,
		"not an integer":   `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1.5,"status":"pending","url":"https://b.example/"}`,
		"extra member":     `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1,"status":"pending","url":"https://b.example/","extra":1}`,
		"bad date-time":    `{"idempotency_key":"k","fired_at":"yesterday","notification_type":"scheduled","attempt":1,"status":"pending","url":"https://b.example/"}`,
		"bad pattern":      `{"idempotency_key":"k","notification_id":"a b","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1,"status":"pending","url":"https://b.example/"}`,
		"wrong type":       `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1,"status":"pending","url":"https://b.example/","http_status_code":"200"}`,
		"too long":         `{"idempotency_key":"k","fired_at":"2026-04-18T14:00:00Z","notification_type":"scheduled","attempt":1,"status":"failed","url":"https://b.example/","error_message":"` + string(make([]byte, 0)) + long + `"}`,
	} {
		r, err := set.Validate("webhook-activity-record.json", []byte(doc))
		require.NoError(t, err, name)
		require.Len(t, r.Errors, 1, "%s: %v", name, r.Errors)
	}
}

var long = func() string {
	b := make([]byte, 501)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}()

func TestEqualComparesNumbersByValueAtAnyDepth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/s.json", []byte(`{"$id":"/s.json","const":{"a":[1,{"b":2}]}}`), 0o600))
	set, err := Load(dir + "/s.json")
	require.NoError(t, err)
	r, err := set.Validate("s.json", []byte(`{"a":[1.0,{"b":2e0}]}`))
	require.NoError(t, err)
	require.Empty(t, r.Errors)
	r, err = set.Validate("s.json", []byte(`{"a":[1,{"b":3}]}`))
	require.NoError(t, err)
	require.Len(t, r.Errors, 1)
}
