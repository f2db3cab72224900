package webhook_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/schematest"
)

// The capability block says what the sender and supervisor do, and is
// valid by the spec's schema excerpt.
func TestWebhookSigningCapability(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/schemas/get-adcp-capabilities-webhook_signing.json")
	require.NoError(t, err)
	// The excerpt is the member and the start of the next one: read the
	// member's value.
	dec := json.NewDecoder(bytes.NewReader(append([]byte("{"), raw...)))
	for _, want := range []json.Token{json.Delim('{'), "webhook_signing"} {
		tok, err := dec.Token()
		require.NoError(t, err)
		require.Equal(t, want, tok)
	}
	var member json.RawMessage
	require.NoError(t, dec.Decode(&member))
	file := t.TempDir() + "/webhook_signing.json"
	require.NoError(t, os.WriteFile(file, member, 0o600))
	set, err := schematest.Load(file)
	require.NoError(t, err)
	valid := func(c webhook.WebhookSigningCapability) {
		t.Helper()
		doc, err := json.Marshal(c)
		require.NoError(t, err)
		r, err := set.Validate("webhook_signing.json", doc)
		require.NoError(t, err)
		require.Empty(t, r.Errors, string(doc))
	}

	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	sup := newPostgres(t, suiteConfig{Sender: newScriptedSender(), Retry: webhook.RetryPolicy{Horizon: 72 * time.Hour}})
	for alg, priv := range map[string]crypto.Signer{"ed25519": edPriv, "ecdsa-p256-sha256": ecPriv} {
		key, err := webhook.NewSigningKey("k1", priv)
		require.NoError(t, err)
		signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
		require.NoError(t, err)
		sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer})
		require.NoError(t, err)
		c, err := webhook.WebhookSigning(sup, sender, webhook.CapabilityOptions{LegacyHMACFallback: true})
		require.NoError(t, err)
		require.Equal(t, webhook.WebhookSigningCapability{Supported: true, Profile: "adcp/webhook-signing/v1", Algorithms: []string{alg},
			LegacyHMACFallback: true, DeliveryRetryHorizonSeconds: 72 * 3600}, c)
		valid(c)
	}

	unsigned, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{})
	require.NoError(t, err)
	c, err := webhook.WebhookSigning(sup, unsigned, webhook.CapabilityOptions{})
	require.NoError(t, err)
	require.False(t, c.Supported)
	require.Equal(t, int64(86400*3), c.DeliveryRetryHorizonSeconds)
	valid(c)

	mem := newMemory(t, suiteConfig{Sender: newScriptedSender()})
	_, err = webhook.WebhookSigning(mem, unsigned, webhook.CapabilityOptions{})
	var ce *webhook.ConfigError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "CapabilityOptions.AllowNonDurable", ce.Field, "a memory supervisor cannot keep a binding for a day")
	c, err = webhook.WebhookSigning(mem, unsigned, webhook.CapabilityOptions{AllowNonDurable: true})
	require.NoError(t, err)
	require.Equal(t, int64(86400), c.DeliveryRetryHorizonSeconds, "the default horizon")

	off := newMemory(t, suiteConfig{Sender: newScriptedSender(), Retry: webhook.RetryPolicy{Horizon: webhook.NoHorizon}})
	_, err = webhook.WebhookSigning(off, unsigned, webhook.CapabilityOptions{AllowNonDurable: true})
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "Retry.Horizon", ce.Field)

	custom, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: webhook.SignerFunc(func(*http.Request, []byte) error { return nil })})
	require.NoError(t, err)
	_, err = webhook.WebhookSigning(sup, custom, webhook.CapabilityOptions{})
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "HTTPSenderConfig.Signer", ce.Field)
	require.ErrorContains(t, err, "AlgorithmReporter")
}
