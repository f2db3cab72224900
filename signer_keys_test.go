package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
)

func genKey(t *testing.T, kid string) *webhook.SigningKey {
	t.Helper()
	k, err := webhook.GenerateSigningKey(kid, "")
	require.NoError(t, err)
	return k
}

func TestSigningKeysRules(t *testing.T) {
	t.Parallel()
	keys := webhook.NewSigningKeys()
	a1, a2, b1 := genKey(t, "a-1"), genKey(t, "a-2"), genKey(t, "b-1")
	require.NoError(t, keys.Set("a", a1))
	require.NoError(t, keys.Publish("a", a1), "publishing a key again does nothing")
	require.NoError(t, keys.Set("b", b1))

	// A kid is one tenant's, and names one key.
	err := keys.Publish("b", a1)
	require.ErrorIs(t, err, webhook.ErrInvalidKey)
	require.Contains(t, err.Error(), `tenant "a"'s`)
	require.ErrorIs(t, keys.Publish("a", genKey(t, "a-1")), webhook.ErrInvalidKey)
	require.ErrorIs(t, keys.Publish("a", nil), webhook.ErrInvalidKey)
	require.ErrorIs(t, keys.Publish("bad\x00tenant", a2), webhook.ErrInvalidKey)

	// Sign only with what is published.
	require.ErrorIs(t, keys.Activate("a", "a-2"), webhook.ErrInvalidKey)
	require.NoError(t, keys.Publish("a", a2))
	cur, ok := keys.Current("a")
	require.True(t, ok)
	require.Equal(t, "a-1", cur.KeyID(), "publishing does not sign")
	require.NoError(t, keys.Activate("a", "a-2"))
	cur, _ = keys.Current("a")
	require.Equal(t, "a-2", cur.KeyID())

	jwks, err := keys.JWKS("a")
	require.NoError(t, err)
	parsed, err := receive.ParseJWKS(jwks)
	require.NoError(t, err)
	require.Len(t, parsed, 2)
	require.NotContains(t, string(jwks), `"d"`, "a JWKS holds public keys only")
	require.Equal(t, []string{"a", "b"}, keys.Tenants())

	// Retiring the signing key leaves the tenant without one.
	require.NoError(t, keys.Retire("a", "a-2"))
	require.ErrorIs(t, keys.CheckTenant("a"), webhook.ErrSigningKeyMissing)
	require.Contains(t, keys.CheckTenant("a").Error(), "none is active")
	require.ErrorIs(t, keys.Retire("a", "a-2"), webhook.ErrInvalidKey)
	require.NoError(t, keys.Retire("a", "a-1"))
	require.Contains(t, keys.CheckTenant("a").Error(), "has no key")
	require.Equal(t, []string{"b"}, keys.Tenants())
	// A retired kid is free again.
	require.NoError(t, keys.Publish("b", a1))
	empty, err := keys.JWKS("nobody")
	require.NoError(t, err)
	require.JSONEq(t, `{"keys":[]}`, string(empty))
}

func TestSignerAndSenderTenants(t *testing.T) {
	t.Parallel()
	keys := webhook.NewSigningKeys()
	require.NoError(t, keys.Set("a", genKey(t, "a-1")))
	_, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: genKey(t, "x"), Keys: keys})
	require.ErrorIs(t, err, webhook.ErrInvalidConfig)

	multi, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Keys: keys})
	require.NoError(t, err)
	require.NoError(t, multi.CheckTenant("a"))
	require.ErrorIs(t, multi.CheckTenant(""), webhook.ErrSigningKeyMissing, "the default tenant is one like any other")
	r, _ := http.NewRequest(http.MethodPost, "https://buyer.example/hook", nil)
	require.ErrorIs(t, multi.Sign(r, []byte(`{}`)), webhook.ErrSigningKeyMissing)
	require.NoError(t, multi.SignTenant(r, []byte(`{}`), "a"))
	require.Contains(t, r.Header.Get("Signature-Input"), `keyid="a-1"`)

	single, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: genKey(t, "one")})
	require.NoError(t, err)
	require.NoError(t, single.CheckTenant(""))
	require.ErrorIs(t, single.CheckTenant("a"), webhook.ErrSigningKeyMissing)

	for _, c := range []struct {
		signer  webhook.Signer
		tenant  string
		missing bool
	}{
		{nil, "", false}, {nil, "a", true},
		{single, "", false}, {single, "a", true},
		{webhook.SignerFunc(func(*http.Request, []byte) error { return nil }), "", false},
		{webhook.SignerFunc(func(*http.Request, []byte) error { return nil }), "a", true},
		{multi, "a", false}, {multi, "b", true},
	} {
		s, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: c.signer})
		require.NoError(t, err)
		if err := s.CheckTenant(c.tenant); c.missing {
			require.ErrorIs(t, err, webhook.ErrSigningKeyMissing, "%T %q", c.signer, c.tenant)
		} else {
			require.NoError(t, err, "%T %q", c.signer, c.tenant)
		}
	}
}

// A platform signs each publisher's webhooks with that publisher's key and
// serves each publisher's JWKS at the jwks_uri of its brand.json.
func ExampleSigningKeys() {
	keys := webhook.NewSigningKeys()
	for _, tenant := range []string{"acme", "globex"} {
		key, err := webhook.GenerateSigningKey(tenant+"-2026-12", "") // in production: ParseJWKSigningKey from your secret store
		if err != nil {
			panic(err)
		}
		if err := keys.Set(tenant, key); err != nil {
			panic(err)
		}
	}
	signer, _ := webhook.NewRFC9421Signer(webhook.SignerConfig{Keys: keys})
	sender, _ := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer})
	_ = sender // NewPostgresSupervisor(pool, sender, ...); SendMCP(ctx, MCPWebhook{..., Routing: Routing{Tenant: "acme"}})

	// Serve GET /tenants/{tenant}/.well-known/jwks.json from keys.JWKS.
	jwks, _ := keys.JWKS("acme")
	var set struct {
		Keys []struct {
			Kid     string `json:"kid"`
			AdcpUse string `json:"adcp_use"`
		} `json:"keys"`
	}
	_ = json.Unmarshal(jwks, &set)
	fmt.Println(set.Keys[0].Kid, set.Keys[0].AdcpUse)

	// Rotation: publish, serve, then sign.
	next, _ := webhook.GenerateSigningKey("acme-2027-01", "")
	_ = keys.Publish("acme", next)
	// ... once the JWKS with both keys is live:
	_ = keys.Activate("acme", "acme-2027-01")
	// ... and when no buyer needs the old one:
	_ = keys.Retire("acme", "acme-2026-12")
	var kids []string
	for _, k := range keys.Published("acme") {
		kids = append(kids, k.KeyID())
	}
	fmt.Println(strings.Join(kids, ","))
	// Output:
	// acme-2026-12 request-signing
	// acme-2027-01
}

// A signer that checks tenants but cannot sign for them: its tenants are
// refused, never sent unsigned.
type checkingSigner struct{ signed int }

func (c *checkingSigner) Sign(*http.Request, []byte) error { c.signed++; return nil }
func (c *checkingSigner) CheckTenant(string) error         { return nil }

func TestTenantNeedsATenantSigner(t *testing.T) {
	t.Parallel()
	cs := &checkingSigner{}
	s, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: cs, Development: true})
	require.NoError(t, err)
	require.ErrorIs(t, s.CheckTenant("acme"), webhook.ErrSigningKeyMissing)
	require.NoError(t, s.CheckTenant(""))
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, err = s.Send(context.Background(), &webhook.Request{URL: srv.URL, Body: []byte(`{}`), Tenant: "acme"})
	require.ErrorIs(t, err, webhook.ErrSigningKeyMissing)
	require.Zero(t, cs.signed)
}

// DefaultClassifier fails a delivery whose tenant has no key, without
// charging the endpoint; other signing errors are retried.
func TestClassifierSigningKeyMissing(t *testing.T) {
	t.Parallel()
	missing := fmt.Errorf("%w: %w", webhook.ErrSigning, webhook.ErrSigningKeyMissing)
	c := webhook.DefaultClassifier(nil, missing, time.Now())
	require.Equal(t, webhook.Classification{Verdict: webhook.VerdictFail}, c)
	c = webhook.DefaultClassifier(nil, fmt.Errorf("%w: key service down", webhook.ErrSigning), time.Now())
	require.Equal(t, webhook.Classification{Verdict: webhook.VerdictRetry}, c)
}

func TestZeroSigningKeysAndCapability(t *testing.T) {
	t.Parallel()
	var keys webhook.SigningKeys
	require.ErrorIs(t, keys.CheckTenant("a"), webhook.ErrSigningKeyMissing)
	require.NoError(t, keys.Set("a", genKey(t, "a-1")))
	p256, err := webhook.GenerateSigningKey("b-1", receive.AlgECDSAP256)
	require.NoError(t, err)
	require.NoError(t, keys.Publish("b", p256)) // published, not signing: not advertised
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Keys: &keys})
	require.NoError(t, err)
	require.Equal(t, []string{receive.AlgEd25519}, signer.SigningAlgorithms())
	require.NoError(t, keys.Activate("b", "b-1"))
	require.Equal(t, []string{receive.AlgECDSAP256, receive.AlgEd25519}, signer.SigningAlgorithms())
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer})
	require.NoError(t, err)
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{})
	require.NoError(t, err)
	c, err := webhook.WebhookSigning(sup, sender, webhook.CapabilityOptions{AllowNonDurable: true})
	require.NoError(t, err)
	require.Equal(t, []string{receive.AlgECDSAP256, receive.AlgEd25519}, c.Algorithms)
}
