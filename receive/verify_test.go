package receive

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// verifyVector is one AdCP webhook-signing conformance vector.
type verifyVector struct {
	Request struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"request"`
	JWKSRef         []string `json:"jwks_ref"`
	ReferenceNow    int64    `json:"reference_now"`
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

// vectorDir holds the AdCP webhook-signing conformance vectors, shared
// with the root package's signer tests.
const vectorDir = "../testdata/webhook-signing/"

// vectorKeys returns the public JWKs of the conformance keys.json by kid.
// (ParseJWKS ignores their test-only private parts.)
func vectorKeys(t testing.TB) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile(vectorDir + "keys.json")
	require.NoError(t, err)
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	out := map[string]json.RawMessage{}
	for _, k := range doc.Keys {
		var id struct {
			Kid string `json:"kid"`
		}
		require.NoError(t, json.Unmarshal(k, &id))
		out[id.Kid] = k
	}
	require.NotEmpty(t, out)
	return out
}

// vectorVerifier builds the verifier a vector describes: its JWKS subset,
// its clock and the harness state it asks for.
func vectorVerifier(t *testing.T, v verifyVector) *Verifier {
	t.Helper()
	all := vectorKeys(t)
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
	files, err := filepath.Glob(vectorDir + dir + "/*.json")
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
	require.NoError(t, checkContentDigest([]string{"sha-256=:" + digestOf(body, false) + ":"}, body))
	require.NoError(t, checkContentDigest([]string{"sha-256=:" + digestOf(body, true) + ":"}, body))
	require.Error(t, checkContentDigest([]string{"sha-256=:" + digestOf([]byte("other"), false) + ":"}, body))
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

	// Signed, but two readers would see two bodies: refused, naming the key.
	dup := []byte(`{"a":1,"a":2}`)
	hd := h.Clone()
	hd.Set("X-ADCP-Signature", "sha256="+LegacyHMAC(secret, "1776520800", dup))
	err := VerifyLegacyHMAC(hd, dup, secret, now)
	var ve *VerifyError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, CodeBodyMalformed, ve.Code)
	require.Contains(t, ve.Reason, `duplicate object keys "a"`)

	// An RFC 9421 signature where the registration says HMAC: never a
	// fallback, a mismatch.
	hm := h.Clone()
	hm.Set("Signature-Input", `sig1=("@method")`)
	hm.Set("Signature", "sig1=:AAAA:")
	require.ErrorAs(t, VerifyLegacyHMAC(hm, body, secret, now), &ve)
	require.Equal(t, CodeModeMismatch, ve.Code)
}

func digestOf(body []byte, url bool) string {
	sum := sha256.Sum256(body)
	if url {
		return base64.URLEncoding.EncodeToString(sum[:])
	}
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestLegacyHMAC pins the legacy signature to a value computed
// independently (with Python's hmac module), the same one the root
// package's HTTPSender test expects on the wire.
func TestLegacyHMAC(t *testing.T) {
	t.Parallel()
	require.Equal(t, "915163e392f17f0a48a3cd09250cb641c9318ca13f612de9871e108d5afc9522",
		LegacyHMAC("0123456789abcdef0123456789abcdef", "1776520800", []byte(`{"task_id":"t1"}`)))
	// Hex digits in either case verify, as before the scheme moved here.
	secret := "0123456789abcdef0123456789abcdef"
	h := http.Header{}
	h.Set("X-ADCP-Timestamp", "1776520800")
	h.Set("X-ADCP-Signature", "sha256="+strings.ToUpper(LegacyHMAC(secret, "1776520800", []byte("{}"))))
	require.NoError(t, VerifyLegacyHMAC(h, []byte("{}"), secret, time.Unix(1776520800, 0)))
}

func TestVerifyLegacyHMACRefusesWeakSecrets(t *testing.T) {
	t.Parallel()
	now := time.Unix(1776520800, 0)
	signed := func(secret string) http.Header {
		h := http.Header{}
		h.Set("X-ADCP-Timestamp", "1776520800")
		h.Set("X-ADCP-Signature", "sha256="+LegacyHMAC(secret, "1776520800", []byte("{}")))
		return h
	}
	for name, secret := range map[string]string{
		"empty":              "",
		"one short":          strings.Repeat("s", MinCredentialsLength-1),
		"long in bytes only": strings.Repeat("é", MinCredentialsLength-1), // 62 bytes, 31 characters
	} {
		err := VerifyLegacyHMAC(signed(secret), []byte("{}"), secret, now)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
		var ce *ConfigError
		require.ErrorAs(t, err, &ce, name)
		require.Equal(t, "VerifyLegacyHMAC credentials", ce.Field, name)
		require.Contains(t, ce.Reason, "at least 32", name)
		require.NotErrorIs(t, err, ErrSignatureRejected, name)
		if secret != "" {
			require.NotContains(t, err.Error(), secret, "the secret stays out of the error")
		}
	}
	long := strings.Repeat("s", MinCredentialsLength)
	require.NoError(t, VerifyLegacyHMAC(signed(long), []byte("{}"), long, now))
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
	for _, skew := range []time.Duration{-time.Second, MaxSkew + time.Second, 24 * time.Hour} {
		_, err = NewVerifier(VerifierConfig{Keys: []VerifyingKey{vk}, Skew: skew})
		var ce *ConfigError
		require.ErrorAs(t, err, &ce, "skew %v", skew)
		require.Equal(t, "VerifierConfig.Skew", ce.Field)
	}
	_, err = NewVerifier(VerifierConfig{Keys: []VerifyingKey{vk}, Skew: MaxSkew})
	require.NoError(t, err)
	_, err = NewVerifyingKey("k", "request-signing", "not a key")
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = ParseJWKS([]byte(`{"keys":[]}`))
	require.Error(t, err)
	one := base64.RawURLEncoding.EncodeToString(append(make([]byte, 31), 1))
	_, err = ParseJWKS([]byte(`{"keys":[{"kid":"k","kty":"EC","crv":"P-256","x":"` + one + `","y":"` + one + `"}]}`))
	require.ErrorContains(t, err, "not on P-256")
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
