package receive_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/receive"
)

// operator is a seller operator's origin on loopback: brand.json, the
// agent's JWKS and its signed revocation list, each changeable and
// counted.
type operator struct {
	srv   *httptest.Server
	agent string

	mu          sync.Mutex
	brand       string
	keys        []*sellerKey
	jwksHeader  http.Header
	etag        string
	revocation  string // the body served, or "" for 404
	hits        map[string]int
	conditional int // JWKS requests answered 304
	// intercept, when set, sees each request first; true means it answered.
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

// sellerKey is a signing key with its raw private half, for JWS.
type sellerKey struct {
	kid  string
	priv ed25519.PrivateKey
	key  *webhook.SigningKey
}

func newSellerKey(t *testing.T, kid string) *sellerKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := webhook.NewSigningKey(kid, priv)
	require.NoError(t, err)
	return &sellerKey{kid: kid, priv: priv, key: key}
}

func (k *sellerKey) signer(t *testing.T) *webhook.RFC9421Signer {
	t.Helper()
	s, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: k.key})
	require.NoError(t, err)
	return s
}

func newOperator(t *testing.T, keys ...*sellerKey) *operator {
	t.Helper()
	op := &operator{keys: keys, hits: map[string]int{}, jwksHeader: http.Header{}}
	op.srv = httptest.NewServer(http.HandlerFunc(op.serve))
	t.Cleanup(op.srv.Close)
	op.agent = op.srv.URL + "/mcp"
	op.brand = `{"agents":[{"type":"sales","url":"` + op.agent + `","jwks_uri":"` + op.srv.URL + `/keys/jwks.json"}]}`
	return op
}

func (op *operator) serve(w http.ResponseWriter, r *http.Request) {
	op.mu.Lock()
	intercept := op.intercept
	op.mu.Unlock()
	if intercept != nil && intercept(w, r) { // outside the lock: it may block
		return
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	op.hits[r.URL.Path]++
	switch r.URL.Path {
	case "/.well-known/brand.json":
		_, _ = w.Write([]byte(op.brand))
	case "/keys/jwks.json":
		for k, v := range op.jwksHeader {
			w.Header()[k] = v
		}
		if op.etag != "" {
			w.Header().Set("ETag", op.etag)
			if r.Header.Get("If-None-Match") == op.etag {
				op.conditional++
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		var jwks []json.RawMessage
		for _, k := range op.keys {
			j, _ := k.key.PublicJWK()
			jwks = append(jwks, j)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": jwks})
	case "/revocations.json":
		if op.revocation == "" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(op.revocation))
	case "/elsewhere":
		http.Redirect(w, r, "/keys/jwks.json", http.StatusFound)
	default:
		http.NotFound(w, r)
	}
}

func (op *operator) set(f func(op *operator)) {
	op.mu.Lock()
	defer op.mu.Unlock()
	f(op)
}

func (op *operator) hitsOf(path string) int {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.hits[path]
}

// revocationList is a flattened JWS of a revocation list, signed by k.
func revocationList(k *sellerKey, issuer string, updated, next time.Time, revoked ...string) string {
	hdr, _ := json.Marshal(map[string]string{"alg": "EdDSA", "kid": k.kid, "typ": "adcp-gov-revocation+jws"})
	payload, _ := json.Marshal(map[string]any{"version": 1, "issuer": issuer, "updated": updated.UTC().Format(time.RFC3339),
		"next_update": next.UTC().Format(time.RFC3339), "revoked_kids": append([]string{}, revoked...), "revoked_jtis": []string{}})
	p, pl := base64.RawURLEncoding.EncodeToString(hdr), base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(k.priv, []byte(p+"."+pl))
	out, _ := json.Marshal(map[string]any{"payload": pl, "signatures": []any{map[string]string{"protected": p, "signature": base64.RawURLEncoding.EncodeToString(sig)}}})
	return string(out)
}

func discoveryVerifier(t *testing.T, op *operator, c *fakeclock.Clock, adjust func(*receive.DiscoveryConfig)) (*receive.Verifier, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	cfg := receive.DiscoveryConfig{Agent: op.agent, BrandJSONURL: op.srv.URL + "/.well-known/brand.json",
		AllowPrivateDestinations: true, AllowInsecureHTTP: true, Now: c.Now,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{w: logs, mu: &op.mu}, nil))}
	if adjust != nil {
		adjust(&cfg)
	}
	d, err := receive.NewKeyDiscovery(cfg)
	require.NoError(t, err)
	v, err := receive.NewVerifier(receive.VerifierConfig{Discovery: d, Now: c.Now})
	require.NoError(t, err)
	return v, logs
}

// verify signs body with k at c's time and verifies it.
func verifyWith(t *testing.T, v *receive.Verifier, k *sellerKey, c *fakeclock.Clock) (receive.VerifiedSignature, error) {
	t.Helper()
	s, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: k.key, Now: c.Now})
	require.NoError(t, err)
	body := []byte(`{"idempotency_key":"whk_0123456789abcdef"}`)
	req, _ := http.NewRequest(http.MethodPost, "https://buyer.example/adcp/webhook", nil)
	require.NoError(t, s.Sign(req, body))
	return v.Verify(context.Background(), http.MethodPost, "https://buyer.example/adcp/webhook", req.Header, body)
}

func verifyCode(err error) string {
	var ve *receive.VerifyError
	if errors.As(err, &ve) {
		return ve.Code
	}
	return ""
}

func TestDiscoveryFromBrandJSON(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, nil)

	sig, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, op.agent, sig.Agent, "the sender identity is the agent whose entry gave the keys")
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, 1, op.hitsOf("/.well-known/brand.json"))
	require.Equal(t, 1, op.hitsOf("/keys/jwks.json"), "cached")

	// Rotation mid-task: a new kid is refetched at once.
	k2 := newSellerKey(t, "k2")
	op.set(func(op *operator) { op.keys = append(op.keys, k2) })
	_, err = verifyWith(t, v, k2, c)
	require.NoError(t, err)
	require.Equal(t, 2, op.hitsOf("/keys/jwks.json"))

	// An unknown kid refetches once per cooldown, however often it comes.
	stranger := newSellerKey(t, "k3")
	for range 5 {
		_, err = verifyWith(t, v, stranger, c)
		require.Equal(t, receive.CodeKeyUnknown, verifyCode(err))
	}
	require.Equal(t, 2, op.hitsOf("/keys/jwks.json"), "within 30 s of the last refetch: none")
	c.Advance(receive.RefetchCooldown)
	_, err = verifyWith(t, v, stranger, c)
	require.Equal(t, receive.CodeKeyUnknown, verifyCode(err))
	require.Equal(t, 3, op.hitsOf("/keys/jwks.json"), "one refetch after the cooldown")

	// Past MaxAge (5 min by default) the keys are fetched again.
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, 4, op.hitsOf("/keys/jwks.json"))
	require.Equal(t, 2, op.hitsOf("/.well-known/brand.json"))
}

func TestDiscoveryHonoursCacheHeaders(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	op.jwksHeader.Set("Cache-Control", "public, max-age=60")
	op.etag = `"v1"`
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) {
		cfg.JWKSURL = op.srv.URL + "/keys/jwks.json"
		cfg.BrandJSONURL = ""
	})
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	c.Advance(59 * time.Second)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, 1, op.hitsOf("/keys/jwks.json"), "max-age=60")
	c.Advance(2 * time.Second)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, 2, op.hitsOf("/keys/jwks.json"))
	require.Equal(t, 1, op.conditional, "revalidated with If-None-Match: 304 keeps the keys")
	require.Zero(t, op.hitsOf("/.well-known/brand.json"), "a pinned jwks_uri needs no brand.json")

	// no-cache cannot make every webhook a fetch: the floor is the cooldown.
	op.set(func(op *operator) { op.jwksHeader.Set("Cache-Control", "no-cache"); op.etag = "" })
	c.Advance(time.Minute)
	for range 3 {
		_, err = verifyWith(t, v, k1, c)
		require.NoError(t, err)
	}
	require.Equal(t, 3, op.hitsOf("/keys/jwks.json"))
}

func TestDiscoveryRefusals(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	for name, tc := range map[string]struct {
		brand  func(op *operator) string
		adjust func(op *operator, cfg *receive.DiscoveryConfig)
		reason string
	}{
		"agent not listed": {brand: func(op *operator) string {
			return `{"agents":[{"url":"` + op.agent + `/","jwks_uri":"` + op.srv.URL + `/keys/jwks.json"}]}`
		}, reason: "no agents[] entry"},
		"ambiguous": {brand: func(op *operator) string {
			e := `{"url":"` + op.agent + `","jwks_uri":"` + op.srv.URL + `/keys/jwks.json"}`
			return `{"agents":[` + e + `,` + e + `]}`
		}, reason: "2 agents[] entries"},
		"duplicate members": {brand: func(op *operator) string {
			return `{"agents":[],"agents":[{"url":"` + op.agent + `"}]}`
		}, reason: "not strict JSON"},
		"redirect not followed": {brand: func(op *operator) string {
			return `{"agents":[{"url":"` + op.agent + `","jwks_uri":"` + op.srv.URL + `/elsewhere"}]}`
		}, reason: "status 302"},
		"private address": {adjust: func(_ *operator, cfg *receive.DiscoveryConfig) { cfg.AllowPrivateDestinations = false },
			reason: "SSRF"},
		"oversized JWKS": {adjust: func(op *operator, _ *receive.DiscoveryConfig) {
			for range 400 {
				op.keys = append(op.keys, op.keys[0])
			}
		}, reason: "larger than"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			op := newOperator(t, k1)
			c := fakeclock.New(time.Now())
			if tc.brand != nil {
				op.brand = tc.brand(op)
			}
			v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) {
				if tc.adjust != nil {
					tc.adjust(op, cfg)
				}
			})
			_, err := verifyWith(t, v, k1, c)
			var de *receive.DiscoveryError
			require.ErrorAs(t, err, &de)
			require.ErrorIs(t, err, receive.ErrKeysUnavailable)
			require.Contains(t, de.Reason, tc.reason)
			// A failure is not retried within the cooldown.
			hits := op.hitsOf("/.well-known/brand.json") + op.hitsOf("/keys/jwks.json")
			_, err = verifyWith(t, v, k1, c)
			require.ErrorIs(t, err, receive.ErrKeysUnavailable)
			require.Equal(t, hits, op.hitsOf("/.well-known/brand.json")+op.hitsOf("/keys/jwks.json"))
		})
	}
}

func TestDiscoveryAuthoritativeLocationAndPin(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	real := op.brand
	hostBrand := `{"authoritative_location":"` + op.srv.URL + `/brand/real.json"}`
	op.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/brand/real.json" {
			op.mu.Lock()
			op.hits[r.URL.Path]++
			op.mu.Unlock()
			_, _ = w.Write([]byte(real))
			return
		}
		op.serve(w, r)
	})
	op.brand = hostBrand
	c := fakeclock.New(time.Now())
	v, logs := discoveryVerifier(t, op, c, nil)
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err, "one authoritative_location is followed")
	require.Equal(t, 1, op.hitsOf("/brand/real.json"))

	// brand.json now names another jwks_uri: an alarm, not an adoption.
	real = `{"agents":[{"url":"` + op.agent + `","jwks_uri":"` + op.srv.URL + `/elsewhere"}]}`
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Contains(t, logs.String(), "ALARM")
	require.Zero(t, op.hitsOf("/elsewhere"))
}

func TestDiscoveryRevocationList(t *testing.T) {
	t.Parallel()
	k1, k2 := newSellerKey(t, "k1"), newSellerKey(t, "k2")
	op := newOperator(t, k1, k2)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	issuer := op.srv.URL
	op.revocation = revocationList(k1, issuer, c.Now(), c.Now().Add(10*time.Minute), "k2")
	v, logs := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })

	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	_, err = verifyWith(t, v, k2, c)
	require.Equal(t, receive.CodeKeyRevoked, verifyCode(err))
	require.Equal(t, 1, op.hitsOf("/revocations.json"), "polled on next_update, not per webhook")

	// Past next_update the list is fetched again; a rollback to an older
	// list is refused, and the one held stays in force until it is stale.
	c.Advance(10 * time.Minute)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, issuer, c.Now().Add(-time.Hour), c.Now().Add(10*time.Minute))
	})
	_, err = verifyWith(t, v, k2, c)
	require.Equal(t, receive.CodeKeyRevoked, verifyCode(err))
	require.Equal(t, 2, op.hitsOf("/revocations.json"))
	require.Contains(t, logs.String(), "rollback")

	// A tampered list does not verify; after next_update + 4 intervals
	// every signature is refused as stale.
	op.set(func(op *operator) {
		op.revocation = strings.Replace(revocationList(k1, issuer, c.Now(), c.Now().Add(10*time.Minute)), `"signature":"`, `"signature":"AA`, 1)
	})
	c.Advance(40*time.Minute + time.Second)
	_, err = verifyWith(t, v, k1, c)
	require.Equal(t, receive.CodeRevocationStale, verifyCode(err))
	require.Contains(t, logs.String(), "does not verify")

	// A list from another issuer is refused too; a good one restores.
	c.Advance(receive.RefetchCooldown)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, "https://other.example", c.Now(), c.Now().Add(10*time.Minute))
	})
	_, err = verifyWith(t, v, k1, c)
	require.Equal(t, receive.CodeRevocationStale, verifyCode(err))
	c.Advance(receive.RefetchCooldown)
	op.set(func(op *operator) { op.revocation = revocationList(k1, issuer, c.Now(), c.Now().Add(10*time.Minute)) })
	_, err = verifyWith(t, v, k2, c)
	require.NoError(t, err, "k2 is no longer revoked")
}

func TestDiscoveryRefreshThenRunStops(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	d, err := receive.NewKeyDiscovery(receive.DiscoveryConfig{Agent: op.agent, JWKSURL: op.srv.URL + "/keys/jwks.json",
		AllowPrivateDestinations: true, AllowInsecureHTTP: true, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, d.Refresh(context.Background()))
	require.Equal(t, 1, op.hitsOf("/keys/jwks.json"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	cancel()
	require.NoError(t, <-done, "Run ends with its context")
}

func TestDiscoveryConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   receive.DiscoveryConfig
		field string
	}{
		{receive.DiscoveryConfig{BrandJSONURL: "https://x.example/brand.json"}, "DiscoveryConfig.Agent"},
		{receive.DiscoveryConfig{Agent: "https://x.example/mcp"}, "DiscoveryConfig.BrandJSONURL"},
		{receive.DiscoveryConfig{Agent: "https://x.example/mcp", JWKSURL: "http://x.example/jwks.json"}, "DiscoveryConfig.JWKSURL"},
		{receive.DiscoveryConfig{Agent: "https://x.example/mcp", JWKSURL: "https://x.example/j", RevocationURL: "ftp://x"}, "DiscoveryConfig.RevocationURL"},
		{receive.DiscoveryConfig{Agent: "https://x.example/mcp", JWKSURL: "https://x.example/j", MaxAge: time.Hour}, "DiscoveryConfig.MaxAge"},
	} {
		_, err := receive.NewKeyDiscovery(tc.cfg)
		var ce *receive.ConfigError
		require.ErrorAs(t, err, &ce, tc.field)
		require.Equal(t, tc.field, ce.Field)
	}
	d, err := receive.NewKeyDiscovery(receive.DiscoveryConfig{Agent: "https://x.example/mcp", JWKSURL: "https://x.example/j"})
	require.NoError(t, err)
	k := newSellerKey(t, "k")
	_, err = receive.NewVerifier(receive.VerifierConfig{Discovery: d, Keys: []receive.VerifyingKey{k.key.VerifyingKey()}})
	require.ErrorContains(t, err, "VerifierConfig.Keys")
	_, err = receive.NewVerifier(receive.VerifierConfig{Discovery: d, Agent: "https://y.example/mcp"})
	require.ErrorContains(t, err, "VerifierConfig.Agent")
}

// TestHandlerAnswers503WithoutKeys: keys that cannot be fetched are the
// buyer's outage, not the seller's fault: 503, so the seller retries.
func TestHandlerAnswers503WithoutKeys(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	op.brand = `{"agents":[]}`
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, nil)
	h, err := receive.NewHandler(receive.HandlerConfig{Verifier: v, Dedup: &receive.MemoryDedupStore{}, Logger: slog.New(slog.DiscardHandler)}, http.NotFoundHandler())
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := `{"idempotency_key":"whk_0123456789abcdef"}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	require.NoError(t, k1.signer(t).Sign(req, []byte(body)))
	st, _, _ := do(t, req)
	require.Equal(t, http.StatusServiceUnavailable, st)
}

// Found by review: an old list (from before a key was revoked), replayed
// by whoever controls the list's URL, is refused: its own next_update
// decides its staleness, not when it was fetched.
func TestDiscoveryRefusesAStaleRevocationList(t *testing.T) {
	t.Parallel()
	k1, k2 := newSellerKey(t, "k1"), newSellerKey(t, "k2")
	op := newOperator(t, k1, k2)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	op.revocation = revocationList(k1, op.srv.URL, c.Now().Add(-7*24*time.Hour), c.Now().Add(-7*24*time.Hour+10*time.Minute))
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k2, c)
	require.ErrorIs(t, err, receive.ErrKeysUnavailable, "a week-old list is not adopted: no list held, 503")

	// A list the operator stopped updating goes stale at next_update + 4
	// intervals, however often it is fetched again.
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(5*time.Minute))
	})
	c.Advance(receive.RefetchCooldown)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	for range 24 {
		c.Advance(time.Minute)
		_, err = verifyWith(t, v, k1, c)
		require.NoError(t, err)
	}
	c.Advance(2 * time.Minute) // 25.5 min past a 5-min next_update
	_, err = verifyWith(t, v, k1, c)
	require.Equal(t, receive.CodeRevocationStale, verifyCode(err))
}

// Found by review: a revoked key (still in the JWKS after rotation)
// cannot sign a list that pardons it; a list dated in the future is
// refused.
func TestDiscoveryRevokedKeyCannotPardonItself(t *testing.T) {
	t.Parallel()
	k1, k2 := newSellerKey(t, "k1"), newSellerKey(t, "k2")
	op := newOperator(t, k1, k2)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute), "k2")
	v, logs := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k2, c)
	require.Equal(t, receive.CodeKeyRevoked, verifyCode(err))
	c.Advance(10 * time.Minute)
	op.set(func(op *operator) {
		op.revocation = revocationList(k2, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
	})
	_, err = verifyWith(t, v, k2, c)
	require.Equal(t, receive.CodeKeyRevoked, verifyCode(err))
	require.Contains(t, logs.String(), "which the list held revokes")

	c.Advance(receive.RefetchCooldown)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now().Add(24*time.Hour), c.Now().Add(24*time.Hour+10*time.Minute), "k2")
	})
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Contains(t, logs.String(), "is in the future")
	c.Advance(receive.RefetchCooldown)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
	})
	_, err = verifyWith(t, v, k2, c)
	require.NoError(t, err, "a genuine later list is still adopted")
}

// Found by review: keys of an agent its operator no longer lists, or whose
// JWKS is gone, stop verifying at the next fetch; an outage (5xx) keeps the
// last good keys for one more MaxAge only.
func TestDiscoveryDropsKeysOfADelistedAgent(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, nil)
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	op.set(func(op *operator) { op.brand = `{"agents":[]}` })
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, err = verifyWith(t, v, k1, c)
	require.ErrorIs(t, err, receive.ErrKeysUnavailable)
	c.Advance(time.Hour)
	_, err = verifyWith(t, v, k1, c)
	require.ErrorIs(t, err, receive.ErrKeysUnavailable, "still refused after the cooldown")

	outage := newOperator(t, k1)
	v2, _ := discoveryVerifier(t, outage, c, func(cfg *receive.DiscoveryConfig) {
		cfg.JWKSURL = outage.srv.URL + "/keys/jwks.json"
		cfg.BrandJSONURL = ""
	})
	_, err = verifyWith(t, v2, k1, c)
	require.NoError(t, err)
	outage.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, err = verifyWith(t, v2, k1, c)
	require.NoError(t, err, "through an outage the last good keys serve")
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, err = verifyWith(t, v2, k1, c)
	require.ErrorIs(t, err, receive.ErrKeysUnavailable, "for one more MaxAge")
}

// Found by review: a caller that hangs up while the keys are fetched (any
// unauthenticated sender can: keys are fetched before cryptography) does
// not fail the fetch for everyone.
func TestDiscoveryFetchOutlivesItsCaller(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	arrived, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	op.set(func(op *operator) {
		op.intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/keys/jwks.json" {
				once.Do(func() { close(arrived); <-proceed })
			}
			return false
		}
	})
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, nil)
	ctx, cancel := context.WithCancel(context.Background())
	body := []byte(`{"idempotency_key":"whk_0123456789abcdef"}`)
	req, _ := http.NewRequest(http.MethodPost, "https://buyer.example/adcp/webhook", nil)
	require.NoError(t, newSellerKey(t, "k1").signer(t).Sign(req, body)) // a forgery under the seller's kid
	done := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, http.MethodPost, "https://buyer.example/adcp/webhook", req.Header, body)
		done <- err
	}()
	<-arrived
	cancel()
	close(proceed)
	require.Equal(t, receive.CodeSignatureInvalid, verifyCode(<-done))
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err, "the honest webhook right after")
	require.Equal(t, 1, op.hitsOf("/keys/jwks.json"))

	// Nor does a pre-cancelled caller keep the revocation list from
	// refreshing.
	op.set(func(op *operator) { op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(time.Minute)) })
	v2, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err = verifyWith(t, v2, k1, c)
	require.NoError(t, err)
	aborted, stop := context.WithCancel(context.Background())
	stop()
	for range 12 {
		c.Advance(30 * time.Second)
		op.set(func(op *operator) { op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(time.Minute)) })
		_, _ = v2.Verify(aborted, http.MethodPost, "https://buyer.example/adcp/webhook", req.Header, body)
	}
	_, err = verifyWith(t, v2, k1, c)
	require.NoError(t, err)
}

// Found by review: webhooks arriving together when the list is due make
// one fetch, not one each.
func TestDiscoveryOneRevocationFetchForConcurrentWebhooks(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	c.Advance(10 * time.Minute)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
	})
	before := op.hitsOf("/revocations.json")
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = verifyWith(t, v, k1, c)
		}()
	}
	wg.Wait()
	require.Equal(t, 1, op.hitsOf("/revocations.json")-before)
}

// Found by review: until a first list is held, webhooks are answered 503
// (retryable), not the terminal webhook_signature_revocation_stale; keys
// are cached no longer than the list's polling interval.
func TestDiscoveryColdRevocationListAndKeyLifetime(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k1, c)
	var de *receive.DiscoveryError
	require.ErrorAs(t, err, &de, "no list yet: %v", err)

	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(2*time.Minute))
	})
	c.Advance(receive.RefetchCooldown)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	jwks := op.hitsOf("/keys/jwks.json")
	c.Advance(2*time.Minute + time.Second) // under MaxAge (5 min), past the 2-min polling interval
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(2*time.Minute))
	})
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, jwks+1, op.hitsOf("/keys/jwks.json"), "the keys' cache is bounded by the polling interval")
}

func TestDiscoveryRedactsURLs(t *testing.T) {
	t.Parallel()
	d, err := receive.NewKeyDiscovery(receive.DiscoveryConfig{Agent: "https://seller.example/mcp",
		JWKSURL: "https://user:hunter2@127.0.0.1:1/jwks.json?token=s3cret#frag", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	err = d.Refresh(context.Background())
	require.ErrorIs(t, err, receive.ErrKeysUnavailable)
	require.NotContains(t, err.Error(), "hunter2")
	require.NotContains(t, err.Error(), "s3cret")
	require.Contains(t, err.Error(), "https://127.0.0.1:1/jwks.json")
}

func TestDiscoveryKeyRefetchBoundedByPollingInterval(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(2*time.Minute))
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k1, c) // t=0: keys, then the list (polled again at t=2m)
	require.NoError(t, err)
	c.Advance(time.Minute)
	_, err = verifyWith(t, v, newSellerKey(t, "k9"), c) // t=1m: an unknown kid refetches the keys
	require.Equal(t, receive.CodeKeyUnknown, verifyCode(err))
	jwks := op.hitsOf("/keys/jwks.json")
	c.Advance(2*time.Minute + time.Second) // t=3m1s: past the refetch's 2-min lifetime (MaxAge is 5)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(2*time.Minute))
	})
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err)
	require.Equal(t, jwks+1, op.hitsOf("/keys/jwks.json"))

	// A list signed by a kid it revokes is not adopted either.
	k2 := newSellerKey(t, "k2")
	op.set(func(op *operator) {
		op.keys = append(op.keys, k2)
		op.revocation = revocationList(k2, op.srv.URL, c.Now(), c.Now().Add(2*time.Minute), "k2")
	})
	c.Advance(2 * time.Minute)
	_, err = verifyWith(t, v, k2, c)
	require.NoError(t, err, "a list signed by a key it declares compromised is not trusted: the held one stays in force")
}

// Gaps found by review: a second authoritative_location hop, a failure
// retried once the cooldown passes, a 304 to an unconditional request, a
// list whose alg contradicts its key, and Run refreshing on its own.
func TestDiscoveryEdges(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")

	t.Run("TwoRedirectHops", func(t *testing.T) {
		t.Parallel()
		op := newOperator(t, k1)
		op.brand = `{"authoritative_location":"` + op.srv.URL + `/.well-known/brand.json"}` // points at itself
		c := fakeclock.New(time.Now())
		v, _ := discoveryVerifier(t, op, c, nil)
		_, err := verifyWith(t, v, k1, c)
		var de *receive.DiscoveryError
		require.ErrorAs(t, err, &de)
		require.Contains(t, de.Reason, "redirects twice")
		require.Equal(t, 2, op.hitsOf("/.well-known/brand.json"))
	})

	t.Run("FailureRetriedAfterTheCooldown", func(t *testing.T) {
		t.Parallel()
		op := newOperator(t, k1)
		real := op.brand
		op.brand = `{"agents":[`
		c := fakeclock.New(time.Now())
		v, _ := discoveryVerifier(t, op, c, nil)
		_, err := verifyWith(t, v, k1, c)
		require.ErrorIs(t, err, receive.ErrKeysUnavailable)
		op.set(func(op *operator) { op.brand = real })
		c.Advance(receive.RefetchCooldown - time.Second)
		_, err = verifyWith(t, v, k1, c)
		require.ErrorIs(t, err, receive.ErrKeysUnavailable)
		c.Advance(time.Second)
		_, err = verifyWith(t, v, k1, c)
		require.NoError(t, err, "retried once the cooldown passed")
	})

	t.Run("NotModifiedWithoutValidators", func(t *testing.T) {
		t.Parallel()
		op := newOperator(t, k1)
		op.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotModified) })
		c := fakeclock.New(time.Now())
		v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) {
			cfg.JWKSURL = op.srv.URL + "/keys/jwks.json"
			cfg.BrandJSONURL = ""
		})
		_, err := verifyWith(t, v, k1, c)
		require.ErrorIs(t, err, receive.ErrKeysUnavailable)
	})

	t.Run("ListAlgMustMatchItsKey", func(t *testing.T) {
		t.Parallel()
		op := newOperator(t, k1)
		c := fakeclock.New(time.Now().Truncate(time.Second))
		list := revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
		var jws struct {
			Payload    string `json:"payload"`
			Signatures []struct {
				Protected string `json:"protected"`
				Signature string `json:"signature"`
			} `json:"signatures"`
		}
		require.NoError(t, json.Unmarshal([]byte(list), &jws))
		hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"k1","typ":"adcp-gov-revocation+jws"}`))
		sig := ed25519.Sign(k1.priv, []byte(hdr+"."+jws.Payload)) // a genuine Ed25519 signature, labelled ES256
		op.revocation = `{"payload":"` + jws.Payload + `","signatures":[{"protected":"` + hdr + `","signature":"` + base64.RawURLEncoding.EncodeToString(sig) + `"}]}`
		v, logs := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
		_, err := verifyWith(t, v, k1, c)
		require.ErrorIs(t, err, receive.ErrKeysUnavailable)
		require.Contains(t, logs.String(), "does not verify")
	})

	t.Run("RunRefreshesOnItsOwn", func(t *testing.T) {
		t.Parallel()
		op := newOperator(t, k1)
		c := fakeclock.New(time.Now().Truncate(time.Second))
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
		d, err := receive.NewKeyDiscovery(receive.DiscoveryConfig{Agent: op.agent, BrandJSONURL: op.srv.URL + "/.well-known/brand.json",
			RevocationURL: op.srv.URL + "/revocations.json", AllowPrivateDestinations: true, AllowInsecureHTTP: true,
			Now: c.Now, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		require.NoError(t, d.Refresh(context.Background()))
		c.Advance(10 * time.Minute) // keys and list both due
		op.set(func(op *operator) {
			op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(10*time.Minute))
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for (op.hitsOf("/keys/jwks.json") < 2 || op.hitsOf("/revocations.json") < 2) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		require.NoError(t, <-done)
		require.Equal(t, 2, op.hitsOf("/keys/jwks.json"), "Run fetched the keys when due")
		require.Equal(t, 2, op.hitsOf("/revocations.json"), "and the list")
	})
}

// Found by the second review: brand.json down (5xx) while the pinned JWKS
// is fine: verification goes on.
func TestDiscoveryBrandOutageKeepsThePinnedJWKS(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, nil)
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	op.set(func(op *operator) {
		op.intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/.well-known/brand.json" {
				w.WriteHeader(http.StatusBadGateway) // the marketing site's CDN is down
				return true
			}
			return false
		}
	})
	for i := range 12 {
		c.Advance(time.Minute)
		_, err = verifyWith(t, v, k1, c)
		require.NoError(t, err, "minute %d of a brand.json outage; JWKS fetched %d times", i+1, op.hitsOf("/keys/jwks.json"))
	}
}

// A brand.json 404 (not "agent delisted") drops the keys at once,
// although the jwks_uri was pinned in config and serves the keys.
func TestDiscoveryBrand404KeepsThePinnedJWKS(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.JWKSURL = op.srv.URL + "/keys/jwks.json" })
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	op.set(func(op *operator) {
		op.intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/.well-known/brand.json" {
				http.NotFound(w, r)
				return true
			}
			return false
		}
	})
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err, "brand.json 404 once; the pinned JWKS is up")
}

// Found by the second review: while a good list is held, webhooks do not
// wait behind the fetch of the next one.
func TestDiscoveryWebhooksDoNotWaitBehindAListFetch(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(time.Minute))
	var hold atomic.Bool
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	op.set(func(op *operator) {
		op.intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/revocations.json" && hold.Load() {
				arrived <- struct{}{}
				<-release
			}
			return false
		}
	})
	defer close(release)
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	c.Advance(time.Minute)
	hold.Store(true)
	go func() { _, _ = verifyWith(t, v, k1, c) }() // takes the fetch, which hangs
	<-arrived
	done := make(chan error, 1)
	go func() { _, err := verifyWith(t, v, k1, c); done <- err }()
	select {
	case err := <-done:
		require.NoError(t, err, "decided by the list held")
	case <-time.After(10 * time.Second): // a hang guard, not a speed limit
		t.Fatal("a webhook waited behind the list's fetch")
	}
}

// Refresh is documented to fetch "whatever their age"; it no longer
// refetches a held revocation list before its next_update.
func TestDiscoveryRefreshRefetchesAHeldList(t *testing.T) {
	t.Parallel()
	k1, k2 := newSellerKey(t, "k1"), newSellerKey(t, "k2")
	op := newOperator(t, k1, k2)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(30*time.Minute))
	d, err := receive.NewKeyDiscovery(receive.DiscoveryConfig{Agent: op.agent, BrandJSONURL: op.srv.URL + "/.well-known/brand.json",
		RevocationURL: op.srv.URL + "/revocations.json", AllowPrivateDestinations: true, AllowInsecureHTTP: true,
		Now: c.Now, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, d.Refresh(context.Background()))
	c.Advance(time.Minute)
	op.set(func(op *operator) {
		op.revocation = revocationList(k1, op.srv.URL, c.Now(), c.Now().Add(30*time.Minute), "k2")
	})
	require.NoError(t, d.Refresh(context.Background())) // operator: "k2 is compromised, refresh now"
	require.Equal(t, 2, op.hitsOf("/revocations.json"), "Refresh fetched the list again")
	require.Equal(t, receive.CodeKeyRevoked, verifyCode(d.CheckKey(context.Background(), "k2", c.Now())))
}

// An operator polled at the 1-minute floor whose list's "updated" is
// when its content last changed (days ago). The endpoint then goes down
// (the DoS the grace bounds): at the floor the spec expects ~5 min of
// tolerance; the interval taken from next_update − updated is the 30-min
// ceiling, so revoked-key fraud keeps verifying for 2 h.
func TestDiscoveryGraceFromAnOldUpdated(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now().Truncate(time.Second))
	changed := c.Now().Add(-72 * time.Hour)
	op.revocation = revocationList(k1, op.srv.URL, changed, c.Now().Add(time.Minute))
	v, _ := discoveryVerifier(t, op, c, func(cfg *receive.DiscoveryConfig) { cfg.RevocationURL = op.srv.URL + "/revocations.json" })
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	op.set(func(op *operator) { op.revocation = "" }) // endpoint down (404 here; 5xx alike)
	c.Advance(time.Hour)
	_, err = verifyWith(t, v, k1, c)
	require.Equal(t, receive.CodeRevocationStale, verifyCode(err), "an hour into the outage of a 1-minute list; err=%v", err)
}

// One transient 404 of the JWKS (a CDN mid-deploy) drops the keys:
// must not refuse every webhook for the whole cooldown: keys are dropped
// on a second 404 in a row.
func TestDiscoveryTransientJWKS404(t *testing.T) {
	t.Parallel()
	k1 := newSellerKey(t, "k1")
	op := newOperator(t, k1)
	c := fakeclock.New(time.Now())
	v, _ := discoveryVerifier(t, op, c, nil)
	_, err := verifyWith(t, v, k1, c)
	require.NoError(t, err)
	var once atomic.Bool
	op.set(func(op *operator) {
		op.intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/keys/jwks.json" && once.CompareAndSwap(false, true) {
				http.NotFound(w, r)
				return true
			}
			return false
		}
	})
	c.Advance(receive.DiscoveryMaxAgeDefault)
	_, _ = verifyWith(t, v, k1, c) // hits the 404
	c.Advance(time.Second)
	_, err = verifyWith(t, v, k1, c)
	require.NoError(t, err, "a second after one 404, the JWKS is back")
}
