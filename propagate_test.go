package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/stretchr/testify/require"
)

// Propagate adds headers to each attempt from its context, never ones the
// sender sets itself, and the signature still verifies.
func TestHTTPSenderPropagate(t *testing.T) {
	t.Parallel()
	type key struct{}
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	sk, err := webhook.GenerateSigningKey("prop", receive.AlgEd25519)
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: sk})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true,
		Propagate: func(ctx context.Context, set func(name, value string)) {
			set("traceparent", ctx.Value(key{}).(string))
			set("Signature", "sig1=:forged:")
			set("bad name", "x")
			set("X-Ctl", "a\nb")
			set("X-Registration", "from the hook")
		}})
	require.NoError(t, err)
	ctx := context.WithValue(context.Background(), key{}, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := sender.Send(ctx, &webhook.Request{URL: srv.URL + "/hook", Body: []byte(`{"a":1}`), IdempotencyKey: "whk_0123456789abcdef",
		Headers: map[string]string{"X-Registration": "from the registration"}})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", got.Get("Traceparent"))
	require.NotContains(t, got.Get("Signature"), "forged")
	require.Empty(t, got.Get("X-Ctl"))
	require.Equal(t, "from the registration", got.Get("X-Registration"), "the registration's headers win")
}
