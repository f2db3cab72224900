package webhook

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type verifyVector struct {
	signingVector
	ReferenceNow    int64 `json:"reference_now"`
	ExpectedOutcome struct {
		Success   bool   `json:"success"`
		ErrorCode string `json:"error_code"`
	} `json:"expected_outcome"`
	HarnessState struct {
		ReplayCacheEntries []struct{ Keyid, Nonce string } `json:"replay_cache_entries"`
		RevokedKids        []string                        `json:"revoked_kids"`
		CapFilledFor       string                          `json:"per_keyid_cap_filled_for"`
		StaleSeconds       int64                           `json:"revocation_list_stale_seconds"`
	} `json:"test_harness_state"`
	JWKSOverride map[string]json.RawMessage `json:"jwks_override"`
}

// vectorVerifier builds the verifier a vector describes: its JWKS subset,
// its clock and the harness state it asks for.
func vectorVerifier(t *testing.T, v verifyVector) *Verifier {
	t.Helper()
	all := testKeys(t)
	var jwks []json.RawMessage
	for _, kid := range v.JWKSRef {
		k := all[kid]
		if o, ok := v.JWKSOverride[kid]; ok {
			k = o
		}
		require.NotNil(t, k, kid)
		jwks = append(jwks, k)
	}
	set, err := json.Marshal(map[string]any{"keys": jwks})
	require.NoError(t, err)
	keys, err := ParseJWKS(set)
	require.NoError(t, err)
	now := time.Unix(v.ReferenceNow, 0)
	nonces := &MemoryNonceStore{}
	ctx := context.Background()
	for _, e := range v.HarnessState.ReplayCacheEntries {
		_, err := nonces.Use(ctx, e.Keyid, e.Nonce, now.Add(time.Hour), now)
		require.NoError(t, err)
	}
	if kid := v.HarnessState.CapFilledFor; kid != "" {
		nonces.PerKeyCap = 3
		for _, n := range []string{"filler-nonce-0001", "filler-nonce-0002", "filler-nonce-0003"} {
			_, err := nonces.Use(ctx, kid, n, now.Add(time.Hour), now)
			require.NoError(t, err)
		}
	}
	var revocations KeyRevocations
	if v.HarnessState.RevokedKids != nil || v.HarnessState.StaleSeconds > 0 {
		l := &RevocationList{MaxAge: time.Hour}
		l.Update(v.HarnessState.RevokedKids, now.Add(-time.Duration(v.HarnessState.StaleSeconds)*time.Second))
		revocations = l
	}
	ver, err := NewVerifier(VerifierConfig{Keys: keys, Nonces: nonces, Revocations: revocations, Now: func() time.Time { return now }})
	require.NoError(t, err)
	return ver
}

func loadVerifyVectors(t *testing.T, dir string) map[string]verifyVector {
	t.Helper()
	files, err := filepath.Glob("testdata/webhook-signing/" + dir + "/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string]verifyVector{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var v verifyVector
		require.NoError(t, json.Unmarshal(raw, &v))
		out[filepath.Base(f)] = v
	}
	return out
}

func vectorHeader(v verifyVector) http.Header {
	h := http.Header{}
	for k, val := range v.Request.Headers {
		h.Set(k, val)
	}
	return h
}

// TestVerifierConformance runs every AdCP webhook-signing vector: positive
// ones must verify (and a second delivery is a replay), negative ones must
// fail with their error code.
func TestVerifierConformance(t *testing.T) {
	t.Parallel()
	for name, v := range loadVerifyVectors(t, "positive") {
		t.Run("positive/"+name, func(t *testing.T) {
			require.True(t, v.ExpectedOutcome.Success)
			ver := vectorVerifier(t, v)
			body := []byte(v.Request.Body)
			got, err := ver.Verify(context.Background(), v.Request.Method, v.Request.URL, vectorHeader(v), body)
			require.NoError(t, err)
			require.Equal(t, v.JWKSRef[0], got.KeyID)
			_, err = ver.Verify(context.Background(), v.Request.Method, v.Request.URL, vectorHeader(v), body)
			var ve *VerifyError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, CodeReplayed, ve.Code, "delivered twice")
		})
	}
	for name, v := range loadVerifyVectors(t, "negative") {
		t.Run("negative/"+name, func(t *testing.T) {
			require.False(t, v.ExpectedOutcome.Success)
			_, err := vectorVerifier(t, v).Verify(context.Background(), v.Request.Method, v.Request.URL, vectorHeader(v), []byte(v.Request.Body))
			var ve *VerifyError
			require.ErrorAs(t, err, &ve, "must be rejected")
			require.Equal(t, v.ExpectedOutcome.ErrorCode, ve.Code, ve.Reason)
			require.ErrorIs(t, err, ErrSignatureRejected)
		})
	}
}

// TestSignVerifyRoundTrip signs with the library's signer and verifies over
// real HTTP, including a body tampered with in transit.
func TestSignVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	key, signer, _ := newTestSeller(t)
	vk, err := NewVerifyingKey("seller-2026", "request-signing", key.Public())
	require.NoError(t, err)
	ver, err := NewVerifier(VerifierConfig{Keys: []VerifyingKey{vk}})
	require.NoError(t, err)

	req, err := http.NewRequest(http.MethodPost, "https://Buyer.Example:443/hooks/./adcp?b=2&a=1", nil)
	require.NoError(t, err)
	body := []byte(`{"task_id":"t1"}`)
	require.NoError(t, signer.Sign(req, body))
	got, err := ver.Verify(context.Background(), "POST", "https://buyer.example/hooks/adcp?b=2&a=1", req.Header, body)
	require.NoError(t, err, "the receiver sees the canonical URL")
	require.Equal(t, "seller-2026", got.KeyID)
	_, err = ver.Verify(context.Background(), "post", "https://buyer.example/hooks/adcp?b=2&a=1", req.Header, body)
	require.Error(t, err, "the method is case-sensitive")

	req2, _ := http.NewRequest(http.MethodPost, "https://buyer.example/hooks/adcp", nil)
	require.NoError(t, signer.Sign(req2, body))
	_, err = ver.Verify(context.Background(), "POST", "https://buyer.example/hooks/adcp", req2.Header, []byte(`{"task_id":"t2"}`))
	var ve *VerifyError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, CodeDigestMismatch, ve.Code)

	req3, _ := http.NewRequest(http.MethodPost, "https://buyer.example/hooks/adcp", nil)
	require.NoError(t, signer.Sign(req3, body))
	_, err = ver.Verify(context.Background(), "POST", "https://evil.example/hooks/adcp", req3.Header, body)
	require.ErrorAs(t, err, &ve)
	require.Equal(t, CodeSignatureInvalid, ve.Code, "a signature is bound to its URL")
}

func TestVerifyContentDigestEitherAlphabet(t *testing.T) {
	t.Parallel()
	body := []byte("\xfb\xff\xfe any body whose digest has + or / in base64 ?")
	for i := 0; ; i++ {
		body = append(body, byte(i))
		std := strings.Contains(digestOf(body, false), "+") || strings.Contains(digestOf(body, false), "/")
		if std {
			break
		}
	}
	require.NoError(t, checkContentDigest("sha-256=:"+digestOf(body, false)+":", body))
	require.NoError(t, checkContentDigest("sha-256=:"+digestOf(body, true)+":", body))
	require.Error(t, checkContentDigest("sha-256=:"+digestOf([]byte("other"), false)+":", body))
}

func TestVerifyLegacyHMAC(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("k", 32)
	body := []byte(`{"a":1}`)
	now := time.Unix(1776520800, 0)
	h := http.Header{}
	h.Set("X-ADCP-Timestamp", "1776520800")
	h.Set("X-ADCP-Signature", "sha256="+LegacyHMAC(secret, "1776520800", body))
	require.NoError(t, VerifyLegacyHMAC(h, body, secret, now))
	require.NoError(t, VerifyLegacyHMAC(h, body, secret, now.Add(299*time.Second)))
	for name, c := range map[string]struct {
		now  time.Time
		body []byte
		key  string
		code string
	}{
		"too late":   {now.Add(301 * time.Second), body, secret, CodeWindowInvalid},
		"too early":  {now.Add(-301 * time.Second), body, secret, CodeWindowInvalid},
		"other body": {now, []byte(`{"a":2}`), secret, CodeSignatureInvalid},
		"other key":  {now, body, strings.Repeat("x", 32), CodeSignatureInvalid},
	} {
		err := VerifyLegacyHMAC(h, c.body, c.key, c.now)
		var ve *VerifyError
		require.True(t, errors.As(err, &ve), name)
		require.Equal(t, c.code, ve.Code, name)
	}
}

func digestOf(body []byte, url bool) string {
	sum := sha256.Sum256(body)
	if url {
		return base64.URLEncoding.EncodeToString(sum[:])
	}
	return base64.StdEncoding.EncodeToString(sum[:])
}

// rawPost sends a request whose request target is written verbatim.
func rawPost(t *testing.T, addr, target string, h http.Header, body []byte) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n", target, addr, len(body))
	for k, vs := range h {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	_, err = io.WriteString(c, b.String())
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestVerifyRequestRejectsUnsignedRequestTargets(t *testing.T) {
	t.Parallel()
	_, signer, ver := newTestSeller(t)
	results := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, err := ver.VerifyRequest(r, body)
		results <- err
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	body := []byte(`{"status":"completed"}`)
	for signed, sent := range map[string]string{
		"/wh/op_abc?x=1": "/wh/op_abc?x=1#&tenant=evil", // net/http would hand "#&tenant=evil" to the handler
		"/wh/op_abc":     "/wh/op_abc#.evil",
	} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+signed, nil)
		require.NoError(t, err)
		require.NoError(t, signer.Sign(req, body))
		rawPost(t, addr, sent, req.Header, body)
		require.Error(t, <-results, "signed %s, sent %s", signed, sent)
		rawPost(t, addr, signed, req.Header, body)
		require.NoError(t, <-results, "the signed target itself verifies")
	}
}

func TestVerifyRejectsComponentParameters(t *testing.T) {
	t.Parallel()
	_, signer, ver := newTestSeller(t)
	req, _ := http.NewRequest(http.MethodPost, "https://buyer.example/wh", nil)
	require.NoError(t, signer.Sign(req, []byte(`{}`)))
	req.Header.Set("Signature-Input", strings.Replace(req.Header.Get("Signature-Input"), `"content-digest"`, `"content-digest";key="sha-512"`, 1))
	_, err := ver.Verify(context.Background(), "POST", "https://buyer.example/wh", req.Header, []byte(`{}`))
	var ve *VerifyError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, CodeHeaderMalformed, ve.Code)
}

func TestVerifyLegacyHMACRefusesWeakSecrets(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	h.Set("X-ADCP-Timestamp", "1776520800")
	h.Set("X-ADCP-Signature", "sha256="+LegacyHMAC("", "1776520800", nil))
	require.ErrorIs(t, VerifyLegacyHMAC(h, nil, "", time.Unix(1776520800, 0)), ErrInvalidConfig)
}

func TestVerifierRejectsBadKeysAndConfig(t *testing.T) {
	t.Parallel()
	_, err := NewVerifier(VerifierConfig{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewVerifier(VerifierConfig{Keys: []VerifyingKey{{KeyID: "k"}}})
	require.ErrorIs(t, err, ErrInvalidConfig, "no key material")
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	vk, err := NewVerifyingKey("k", "request-signing", pub)
	require.NoError(t, err)
	_, err = NewVerifier(VerifierConfig{Keys: []VerifyingKey{vk, vk}})
	require.ErrorIs(t, err, ErrInvalidConfig, "duplicate kid")
	_, err = NewVerifyingKey("k", "request-signing", "not a key")
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = ParseJWKS([]byte(`{"keys":[]}`))
	require.Error(t, err)
	one := base64.RawURLEncoding.EncodeToString(append(make([]byte, 31), 1))
	_, err = ParseJWKS([]byte(`{"keys":[{"kid":"k","kty":"EC","crv":"P-256","x":"` + one + `","y":"` + one + `"}]}`))
	require.ErrorContains(t, err, "not on P-256")
	_, err = NewRFC9421Signer(SignerConfig{Key: &SigningKey{}})
	require.ErrorIs(t, err, ErrInvalidConfig)
}

func TestVerifyRequestExternalURL(t *testing.T) {
	t.Parallel()
	key, signer, _ := newTestSeller(t)
	body := []byte(`{}`)
	signed, _ := http.NewRequest(http.MethodPost, "https://buyer.example/wh?x=1", nil)
	require.NoError(t, signer.Sign(signed, body))
	// What a handler behind a TLS-terminating proxy sees: plain http, an
	// internal host.
	inbound := httptest.NewRequest(http.MethodPost, "/wh?x=1", nil)
	inbound.Host = "10.0.0.7:8080"
	inbound.Header = signed.Header.Clone()
	plain, err := NewVerifier(VerifierConfig{Keys: []VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	_, err = plain.VerifyRequest(inbound, body)
	require.Error(t, err, "without ExternalURL the rebuilt URL differs from the signed one")
	proxied, err := NewVerifier(VerifierConfig{Keys: []VerifyingKey{key.VerifyingKey()},
		ExternalURL: func(r *http.Request) string { return "https://buyer.example" + r.RequestURI }})
	require.NoError(t, err)
	_, err = proxied.VerifyRequest(inbound, body)
	require.NoError(t, err)
}

// newTestSeller makes a fresh Ed25519 seller key "seller-2026", a signer for
// it and a verifier that trusts it.
func newTestSeller(t *testing.T) (*SigningKey, *RFC9421Signer, *Verifier) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := NewSigningKey("seller-2026", priv)
	require.NoError(t, err)
	signer, err := NewRFC9421Signer(SignerConfig{Key: key})
	require.NoError(t, err)
	ver, err := NewVerifier(VerifierConfig{Keys: []VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	return key, signer, ver
}

func TestMemoryNonceStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &MemoryNonceStore{PerKeyCap: 2}
	t0 := time.Unix(1776520800, 0)
	use := func(key, nonce string, expires, now time.Time) NonceVerdict {
		v, err := s.Use(ctx, key, nonce, expires, now)
		require.NoError(t, err)
		return v
	}
	require.Equal(t, NonceFresh, use("k", "n1", t0.Add(300*time.Second), t0))
	require.Equal(t, NonceReplayed, use("k", "n1", t0.Add(300*time.Second), t0))
	require.Equal(t, NonceFresh, use("k", "n2", t0.Add(310*time.Second), t0))
	require.Equal(t, NonceOverCap, use("k", "n3", t0.Add(310*time.Second), t0))
	require.Equal(t, NonceFresh, use("other", "n3", t0.Add(300*time.Second), t0), "caps are per key")
	// Once n1 expires there is room again, and n1 may be reused (its
	// signature could no longer verify anyway).
	later := t0.Add(300 * time.Second)
	require.Equal(t, NonceFresh, use("k", "n3", later.Add(300*time.Second), later))
	require.Equal(t, NonceOverCap, use("k", "n4", later.Add(300*time.Second), later))
	require.Equal(t, NonceReplayed, use("k", "n2", later.Add(300*time.Second), later), "n2 is still live")
}
