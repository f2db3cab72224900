package webhook

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPrepareValidation(t *testing.T) {
	t.Parallel()
	ok := PreparedWebhook{URL: "https://buyer.example/hook", Body: []byte(`{"a":1}`), IdempotencyKey: NewIdempotencyKey()}
	for name, tc := range map[string]struct {
		field  string
		mutate func(*PreparedWebhook)
		also   error
	}{
		"not json":      {"Body", func(w *PreparedWebhook) { w.Body = []byte(`{"a":`) }, nil},
		"too large":     {"Body", func(w *PreparedWebhook) { w.Body = make([]byte, MaxBodyBytes+1) }, ErrBodyTooLarge},
		"no key":        {"IdempotencyKey", func(w *PreparedWebhook) { w.IdempotencyKey = "" }, nil},
		"bad task type": {"TaskType", func(w *PreparedWebhook) { w.TaskType = "Nope" }, nil},
		"seq key ctrl":  {"SequenceKey", func(w *PreparedWebhook) { w.SequenceKey = "a\x00b" }, nil},
		"no host":       {"URL", func(w *PreparedWebhook) { w.URL = "https:///hook" }, nil},
	} {
		w := ok
		tc.mutate(&w)
		_, err := urlPolicy{}.prepare(w)
		var ve *ValidationError
		require.True(t, errors.As(err, &ve), name)
		require.Equal(t, tc.field, ve.Field, name)
		require.ErrorIs(t, err, ErrInvalidWebhook, name)
		if tc.also != nil {
			require.ErrorIs(t, err, tc.also, name)
		}
	}
	d, err := urlPolicy{}.prepare(ok)
	require.NoError(t, err)
	require.Equal(t, ok.URL, d.breakerKey)

	_, err = urlPolicy{}.prepare(PreparedWebhook{URL: "https://bücher.example/hook", Body: []byte(`{}`), IdempotencyKey: NewIdempotencyKey()})
	require.NoError(t, err, "an internationalised host is signed as its A-label")
	_, err = urlPolicy{}.prepare(PreparedWebhook{URL: "https://buyer.example/bücher", Body: []byte(`{}`), IdempotencyKey: NewIdempotencyKey()})
	require.ErrorContains(t, err, "percent-encode", "non-ASCII outside the host must be percent-encoded")
	_, err = urlPolicy{allowHTTP: true}.prepare(PreparedWebhook{URL: "http://127.0.0.1:8080/hook", Body: []byte(`{}`), IdempotencyKey: NewIdempotencyKey()})
	require.NoError(t, err, "AllowInsecureHTTP accepts plain http")
}

func TestValidationErrorsNeverCarrySecrets(t *testing.T) {
	t.Parallel()
	secret := "short-secret-value"
	_, err := urlPolicy{}.prepare(PreparedWebhook{URL: "https://buyer.example/", Body: []byte(`{}`), IdempotencyKey: NewIdempotencyKey(),
		Routing: Routing{Authentication: &Authentication{Scheme: AuthBearer, Credentials: secret}}})
	require.Error(t, err)
	require.NotContains(t, err.Error(), secret)
	_, _, err = BuildMCPBody(MCPWebhook{OperationID: "op", TaskID: "t", TaskType: TaskLogEvent, Status: StatusWorking, Token: "tok-short"}, at)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "tok-short")
}
