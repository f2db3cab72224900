package webhook_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/schematest"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

// signingSeller is an RFC 9421-signing sender (allowed to dial loopback
// when private) and a buyer's verifier of its key.
func signingSeller(t *testing.T, private bool) (*webhook.HTTPSender, *receive.Verifier) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := webhook.NewSigningKey("seller-2026", priv)
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, AllowPrivateDestinations: private})
	require.NoError(t, err)
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	return sender, verifier
}

// The seller proves control of a subscriber's endpoint with a signed
// challenge, which a conformant buyer checks and echoes.
func TestActivationChallenge(t *testing.T) {
	t.Parallel()
	sender, verifier := signingSeller(t, true)
	schemas, err := schematest.Load("testdata/schemas/webhook-challenge.json", "testdata/schemas/agent-webhook-challenge.json",
		"testdata/schemas/notification-type.json")
	require.NoError(t, err)
	ctx := context.Background()

	for name, tc := range map[string]struct {
		c      webhook.ActivationChallenge
		reg    receive.Registration
		schema string
	}{
		"account-level, legacy HMAC deliveries": {
			webhook.ActivationChallenge{AccountID: "acct_1", SubscriberID: "sub_42", SellerAgentURL: "https://seller.example/mcp",
				DeliveryAuth: &webhook.Authentication{Scheme: webhook.AuthHMACSHA256, Credentials: goodCredentials},
				EventTypes:   []string{"creative.status_changed", "account.status_changed"}},
			receive.Registration{AccountID: "acct_1", SubscriberID: "sub_42", SellerAgentURL: "https://seller.example/mcp",
				Scheme: "HMAC-SHA256", Credentials: goodCredentials, EventTypes: []string{"account.status_changed", "creative.status_changed"}},
			"webhook-challenge.json",
		},
		"agent-level, signed deliveries": {
			webhook.ActivationChallenge{SubscriberID: "caps", SellerAgentURL: "https://seller.example/mcp", EventTypes: []string{"capabilities.changed"}},
			receive.Registration{SubscriberID: "caps", SellerAgentURL: "https://seller.example/mcp", EventTypes: []string{"capabilities.changed"}},
			"agent-webhook-challenge.json",
		},
	} {
		rcv := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier, Registration: &tc.reg})
		tc.c.URL, tc.c.AllowInsecureHTTP = rcv.URL+"/adcp/notifications", true
		require.NoError(t, sender.Challenge(ctx, tc.c), name)
		got := rcv.Deliveries()
		require.Len(t, got, 1)
		require.True(t, got[0].Challenge)
		require.NoError(t, got[0].VerifyErr, "%s: signed with the RFC 9421 key, whatever the delivery auth", name)
		require.Empty(t, got[0].Header.Get("X-ADCP-Signature"), "never HMAC-signed")
		r, err := schemas.Validate(tc.schema, got[0].Body)
		require.NoError(t, err)
		require.Empty(t, r.Errors, "%s: %s", name, got[0].Body)
		require.Empty(t, r.Unresolved)

		// The buyer registered something else: it refuses to echo.
		other := tc.reg
		other.SubscriberID = "sub_other"
		rcv2 := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier, Registration: &other})
		tc.c.URL = rcv2.URL
		require.ErrorIs(t, sender.Challenge(ctx, tc.c), webhook.ErrChallengeFailed, name)
		require.Equal(t, http.StatusForbidden, rcv2.Deliveries()[0].Status)
		rcv.Close()
		rcv2.Close()
	}
}

func TestActivationChallengeChecksTheAnswer(t *testing.T) {
	t.Parallel()
	sender, _ := signingSeller(t, true)
	ctx := context.Background()
	// An endpoint that reflects whatever is posted to it proves nothing.
	reflector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) }))
	defer reflector.Close()
	require.ErrorIs(t, sender.Challenge(ctx, webhook.ActivationChallenge{URL: reflector.URL, SubscriberID: "caps",
		SellerAgentURL: "https://seller.example/mcp", EventTypes: []string{"capabilities.changed"}, AllowInsecureHTTP: true}),
		webhook.ErrChallengeFailed)
	answer := func(f func(challenge string) (int, string)) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var c struct {
				Challenge string `json:"challenge"`
			}
			body, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(body, &c)
			status, out := f(c.Challenge)
			w.WriteHeader(status)
			_, _ = io.WriteString(w, out)
		}))
	}
	c := webhook.ActivationChallenge{SubscriberID: "caps", SellerAgentURL: "https://seller.example/mcp",
		EventTypes: []string{"capabilities.changed"}, AllowInsecureHTTP: true}
	for name, tc := range map[string]struct {
		f  func(string) (int, string)
		ok bool
	}{
		"echo":             {func(ch string) (int, string) { return 200, `{"challenge":"` + ch + `"}` }, true},
		"token alias":      {func(ch string) (int, string) { return 200, `{"token":"` + ch + `"}` }, true},
		"both":             {func(ch string) (int, string) { return 200, `{"challenge":"` + ch + `","token":"` + ch + `"}` }, false},
		"another case":     {func(ch string) (int, string) { return 200, `{"CHALLENGE":"` + ch + `"}` }, false},
		"extra members":    {func(ch string) (int, string) { return 200, `{"challenge":"` + ch + `","type":"webhook.challenge"}` }, false},
		"duplicate names":  {func(ch string) (int, string) { return 200, `{"challenge":"x","challenge":"` + ch + `"}` }, false},
		"another value":    {func(string) (int, string) { return 200, `{"challenge":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}` }, false},
		"not JSON":         {func(ch string) (int, string) { return 200, ch }, false},
		"refused":          {func(ch string) (int, string) { return 401, `{"challenge":"` + ch + `"}` }, false},
		"an empty success": {func(string) (int, string) { return 204, `` }, false},
	} {
		srv := answer(tc.f)
		c.URL = srv.URL
		err := sender.Challenge(ctx, c)
		if tc.ok {
			require.NoError(t, err, name)
		} else {
			require.ErrorIs(t, err, webhook.ErrChallengeFailed, name)
		}
		srv.Close()
	}

	// Bad input, an unsigned sender and a guarded destination.
	bad := c
	bad.SubscriberID = "has spaces"
	var ve *webhook.ValidationError
	require.ErrorAs(t, sender.Challenge(ctx, bad), &ve)
	require.Equal(t, "SubscriberID", ve.Field)
	bad = c
	bad.URL = "http://buyer.example/hook"
	bad.AllowInsecureHTTP = false
	require.ErrorAs(t, sender.Challenge(ctx, bad), &ve)
	require.Equal(t, "URL", ve.Field)
	unsigned, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	require.NoError(t, err)
	c.URL = "http://127.0.0.1:1/hook"
	require.ErrorIs(t, unsigned.Challenge(ctx, c), webhook.ErrInvalidConfig)
	guarded, _ := signingSeller(t, false)
	require.ErrorIs(t, guarded.Challenge(ctx, c), webhook.ErrBlockedDestination, "the same SSRF guard as deliveries")
}
