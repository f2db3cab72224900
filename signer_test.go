package webhook

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/receive"
)

type signingVector struct {
	Name    string `json:"name"`
	Request struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"request"`
	JWKSRef               []string `json:"jwks_ref"`
	ExpectedSignatureBase string   `json:"expected_signature_base"`
}

// testKeys returns the conformance keys.json entries by kid, with the
// private part under "d" as a JWK has it.
func testKeys(t *testing.T) map[string]json.RawMessage { return testKeysB(t) }

func testKeysB(t testing.TB) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("testdata/webhook-signing/keys.json")
	require.NoError(t, err)
	var doc struct{ Keys []map[string]any }
	require.NoError(t, json.Unmarshal(raw, &doc))
	out := map[string]json.RawMessage{}
	for _, k := range doc.Keys {
		k["d"] = k["_private_d_for_test_only"]
		b, err := json.Marshal(k)
		require.NoError(t, err)
		out[k["kid"].(string)] = b
	}
	return out
}

// label returns one label's member of a Signature-Input or Signature
// header (the vectors' headers hold no commas inside members).
func label(header, name string) string {
	for _, m := range strings.Split(header, ",") {
		if m = strings.TrimSpace(m); strings.HasPrefix(m, name+"=") {
			return m
		}
	}
	return ""
}

var createdRe = regexp.MustCompile(`;created=(\d+)`)
var nonceRe = regexp.MustCompile(`;nonce="([^"]*)"`)

// TestSignerConformance signs every positive AdCP vector with the vector's
// key, clock and nonce and compares the result byte for byte.
func TestSignerConformance(t *testing.T) {
	t.Parallel()
	keys := testKeys(t)
	files, err := filepath.Glob("testdata/webhook-signing/positive/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			require.NoError(t, err)
			var v signingVector
			require.NoError(t, json.Unmarshal(raw, &v))
			key, err := ParseJWKSigningKey(keys[v.JWKSRef[0]])
			require.NoError(t, err)

			input := label(v.Request.Headers["Signature-Input"], receive.SignatureLabel)
			created, err := strconv.ParseInt(createdRe.FindStringSubmatch(input)[1], 10, 64)
			require.NoError(t, err)
			nonce, err := base64.RawURLEncoding.DecodeString(nonceRe.FindStringSubmatch(input)[1])
			require.NoError(t, err)
			s, err := NewRFC9421Signer(SignerConfig{
				Key:  key,
				Now:  func() time.Time { return time.Unix(created, 0) },
				Rand: bytes.NewReader(nonce),
			})
			require.NoError(t, err)

			req, err := http.NewRequest(v.Request.Method, v.Request.URL, nil)
			require.NoError(t, err)
			body := []byte(v.Request.Body)
			require.NoError(t, s.Sign(req, body))
			_, base, err := sign(key, s.now, bytes.NewReader(nonce), v.Request.Method, v.Request.URL, body)
			require.NoError(t, err)

			require.Equal(t, v.ExpectedSignatureBase, base)
			require.Equal(t, input, req.Header.Get("Signature-Input"))
			require.Equal(t, v.Request.Headers["Content-Digest"], req.Header.Get("Content-Digest"))
			require.Equal(t, "application/json", req.Header.Get("Content-Type"))
			want := label(v.Request.Headers["Signature"], receive.SignatureLabel)
			got := req.Header.Get("Signature")
			switch key.Algorithm() {
			case receive.AlgEd25519: // deterministic: byte for byte
				require.Equal(t, want, got)
			case receive.AlgECDSAP256: // randomised: both must verify
				pub := key.Public().(*ecdsa.PublicKey)
				for _, sig := range []string{want, got} {
					raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(sig, receive.SignatureLabel+"=:"), ":"))
					require.NoError(t, err)
					require.Len(t, raw, 64)
					h := sha256.Sum256([]byte(base))
					require.True(t, ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])), sig)
				}
			default:
				t.Fatalf("unexpected algorithm %q", key.Algorithm())
			}
		})
	}
}

func TestSignerFreshNoncePerSignature(t *testing.T) {
	t.Parallel()
	_, s := newTestSeller(t)
	seen := map[string]bool{}
	for range 100 {
		req, err := http.NewRequest(http.MethodPost, "https://buyer.example/hook", nil)
		require.NoError(t, err)
		require.NoError(t, s.Sign(req, []byte(`{}`)))
		n := nonceRe.FindStringSubmatch(req.Header.Get("Signature-Input"))[1]
		raw, err := base64.RawURLEncoding.DecodeString(n)
		require.NoError(t, err)
		require.Len(t, raw, 16)
		require.False(t, seen[n])
		seen[n] = true
	}
}

func TestSigningKeyLoading(t *testing.T) {
	t.Parallel()
	keys := testKeys(t)
	ed, err := ParseJWKSigningKey(keys["test-ed25519-webhook-2026"])
	require.NoError(t, err)
	require.Equal(t, receive.AlgEd25519, ed.Algorithm())
	require.Equal(t, "test-ed25519-webhook-2026", ed.KeyID())
	es, err := ParseJWKSigningKey(keys["test-es256-webhook-2026"])
	require.NoError(t, err)
	require.Equal(t, receive.AlgECDSAP256, es.Algorithm())
	_, err = ParseJWKSigningKey(keys["test-wrong-purpose-2026"])
	require.NoError(t, err, "request-signing keys sign webhooks")
	_, err = ParseJWKSigningKey(keys["test-response-purpose-2026"])
	require.ErrorIs(t, err, ErrInvalidKey)

	mutate := func(kid string, f func(map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(keys[kid], &m))
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for name, data := range map[string][]byte{
		"no adcp_use":     mutate("test-ed25519-webhook-2026", func(m map[string]any) { delete(m, "adcp_use") }),
		"alg mismatch":    mutate("test-ed25519-webhook-2026", func(m map[string]any) { m["alg"] = "ES256" }),
		"public only":     mutate("test-ed25519-webhook-2026", func(m map[string]any) { delete(m, "d") }),
		"x mismatch":      mutate("test-ed25519-webhook-2026", func(m map[string]any) { m["x"] = m["d"] }),
		"EC alg mismatch": mutate("test-es256-webhook-2026", func(m map[string]any) { m["alg"] = "EdDSA" }),
		"EC y mismatch":   mutate("test-es256-webhook-2026", func(m map[string]any) { m["y"] = m["x"] }),
		"unsupported kty": mutate("test-es256-webhook-2026", func(m map[string]any) { m["kty"] = "RSA" }),
		"not json":        []byte("{"),
		"bad kid":         mutate("test-ed25519-webhook-2026", func(m map[string]any) { m["kid"] = `a"b` }),
		"empty kid":       mutate("test-ed25519-webhook-2026", func(m map[string]any) { m["kid"] = "" }),
		"d not base64url": mutate("test-ed25519-webhook-2026", func(m map[string]any) { m["d"] = "***" }),
	} {
		_, err := ParseJWKSigningKey(data)
		require.ErrorIs(t, err, ErrInvalidKey, name)
		require.NotContains(t, err.Error(), "V0Z2ktvVfcWISjh4xmUlt", "%s: errors never carry key material", name)
	}

	// PKCS#8 PEM, both curves, and a refusal of other key types.
	for _, k := range []any{ed.key.Signer, es.key.Signer} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		p, err := ParsePEMSigningKey("pem-kid", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		require.NoError(t, err)
		require.Equal(t, "pem-kid", p.KeyID())
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	_, err = NewSigningKey("k", p384)
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = ParsePEMSigningKey("k", []byte("not pem"))
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = NewRFC9421Signer(SignerConfig{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewRFC9421Signer(SignerConfig{Key: &SigningKey{}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.NotContains(t, ed.String(), "V0Z2")
}

// newTestSeller makes a fresh Ed25519 seller key "seller-2026" and a signer
// for it.
func newTestSeller(t *testing.T) (*SigningKey, *RFC9421Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := NewSigningKey("seller-2026", priv)
	require.NoError(t, err)
	signer, err := NewRFC9421Signer(SignerConfig{Key: key})
	require.NoError(t, err)
	return key, signer
}

// verifyForTest checks an Ed25519 webhook signature the way a receiver
// would, from what arrived on the wire. (The full verifier comes with the
// signing issue's Verifier.)
func verifyForTest(t *testing.T, c captured, host string, pub ed25519.PublicKey) {
	t.Helper()
	input := c.header.Get("Signature-Input")
	require.True(t, strings.HasPrefix(input, receive.SignatureLabel+"="))
	params := strings.TrimPrefix(input, receive.SignatureLabel+"=")
	digest := sha256.Sum256(c.body)
	require.Equal(t, "sha-256=:"+base64.StdEncoding.EncodeToString(digest[:])+":", c.header.Get("Content-Digest"))
	base := signatureBase("POST", "http://"+host+c.uri, host, c.header.Get("Content-Type"), c.header.Get("Content-Digest"), params)
	sig, err := base64.RawURLEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(c.header.Get("Signature"), receive.SignatureLabel+"=:"), ":"))
	require.NoError(t, err)
	require.True(t, ed25519.Verify(pub, []byte(base), sig), "signature over %q", base)
}

func TestHTTPSenderSignsEveryAttempt(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, nil)
	key, signer := newTestSeller(t)
	pub := key.Public().(ed25519.PublicKey)
	s := newTestSender(t, HTTPSenderConfig{Signer: signer})
	body := []byte(`{"task_id":"t1"}`)
	host := strings.TrimPrefix(srv.URL, "http://")

	var nonces []string
	for range 2 { // two attempts of one delivery: same bytes, fresh signature
		_, err := s.Send(t.Context(), &Request{URL: srv.URL + "/hook?b=2&a=1", Body: body})
		require.NoError(t, err)
		c := <-got
		require.Equal(t, body, c.body)
		verifyForTest(t, c, host, pub)
		nonces = append(nonces, nonceRe.FindStringSubmatch(c.header.Get("Signature-Input"))[1])
	}
	require.NotEqual(t, nonces[0], nonces[1])

	// Legacy authentication replaces the signature; never both.
	_, err := s.Send(t.Context(), &Request{URL: srv.URL, Body: body,
		Authentication: &Authentication{Scheme: AuthBearer, Credentials: strings.Repeat("s", 32)}})
	require.NoError(t, err)
	c := <-got
	require.NotEmpty(t, c.header.Get("Authorization"))
	require.Empty(t, c.header.Get("Signature"))
	require.Empty(t, c.header.Get("Signature-Input"))
}

func TestSigningKeyPublicHalves(t *testing.T) {
	t.Parallel()
	keys := testKeys(t)
	for _, kid := range []string{"test-ed25519-webhook-2026", "test-es256-webhook-2026"} {
		k, err := ParseJWKSigningKey(keys[kid])
		require.NoError(t, err)
		pub, err := k.PublicJWK()
		require.NoError(t, err)
		require.NotContains(t, string(pub), `"d"`)
		set, err := receive.ParseJWKS([]byte(`{"keys":[` + string(pub) + `]}`))
		require.NoError(t, err)
		require.Len(t, set, 1)
		require.Equal(t, k.VerifyingKey().KeyID, set[0].KeyID)
		require.Equal(t, k.Algorithm(), set[0].Alg)
		// Both public halves verify what the key signs.
		s, err := NewRFC9421Signer(SignerConfig{Key: k})
		require.NoError(t, err)
		for _, vk := range []receive.VerifyingKey{set[0], k.VerifyingKey()} {
			v, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{vk}})
			require.NoError(t, err)
			req, _ := http.NewRequest(http.MethodPost, "https://buyer.example/hook", nil)
			require.NoError(t, s.Sign(req, []byte(`{}`)))
			got, err := v.Verify(t.Context(), "POST", "https://buyer.example/hook", req.Header, []byte(`{}`))
			require.NoError(t, err)
			require.Equal(t, kid, got.KeyID)
		}
	}
}

func TestSigningKeyNeverPrintsMaterial(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	k, err := NewSigningKey("kid-1", priv)
	require.NoError(t, err)
	secret := fmt.Sprintf("%d %d %d", priv[0], priv[1], priv[2])
	hexed := fmt.Sprintf("%#x", priv[:3])
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
		for _, v := range []any{k, *k} {
			out := fmt.Sprintf(verb, v)
			require.NotContains(t, out, secret, verb)
			require.NotContains(t, out, hexed[2:], verb)
			require.Contains(t, out, "kid-1", verb)
		}
	}
}

// TestHTTPSenderInternationalisedHost: a U-label host is dialled, sent and
// signed in its A-label form, and the buyer's verifier, which sees that
// form in Host, accepts the signature.
func TestHTTPSenderInternationalisedHost(t *testing.T) {
	t.Parallel()
	type seen struct {
		host, uri string
		header    http.Header
		body      []byte
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.Host, r.RequestURI, r.Header.Clone(), body}
	}))
	t.Cleanup(srv.Close)
	port := strings.TrimPrefix(srv.URL, "http://127.0.0.1:")
	key, signer := newTestSeller(t)
	s := newTestSender(t, HTTPSenderConfig{Signer: signer, Resolver: fakeResolver{addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}})
	body := []byte(`{"task_id":"t1"}`)
	_, err := s.Send(t.Context(), &Request{URL: "http://Bücher.example:" + port + "/hook?x=1", Body: body})
	require.NoError(t, err)
	c := <-got
	require.Equal(t, "xn--bcher-kva.example:"+port, c.host)
	ver, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	_, err = ver.Verify(t.Context(), http.MethodPost, "http://"+c.host+c.uri, c.header, c.body)
	require.NoError(t, err)
}

// A seller makes a key, keeps its private JWK, publishes the JWKS, and a
// buyer verifies with what was published.
func TestGenerateAndExportKeys(t *testing.T) {
	t.Parallel()
	var keys []*SigningKey
	for _, alg := range []string{"", receive.AlgEd25519, receive.AlgECDSAP256} {
		k, err := GenerateSigningKey("seller-"+alg, alg)
		require.NoError(t, err, alg)
		private, err := k.PrivateJWK()
		require.NoError(t, err)
		back, err := ParseJWKSigningKey(private)
		require.NoError(t, err, "the private JWK reads back")
		require.Equal(t, k.KeyID(), back.KeyID())
		require.Equal(t, k.Algorithm(), back.Algorithm())
		require.True(t, k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(back.Public()))
		keys = append(keys, back)
	}
	jwks, err := PublicJWKS(keys...)
	require.NoError(t, err)
	require.NotContains(t, string(jwks), `"d"`, "no private part is published")
	published, err := receive.ParseJWKS(jwks)
	require.NoError(t, err)
	require.Len(t, published, 3)
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: published})
	require.NoError(t, err)
	for _, k := range keys {
		signer, err := NewRFC9421Signer(SignerConfig{Key: k})
		require.NoError(t, err)
		body := []byte(`{"idempotency_key":"whk_0123456789abcdef"}`)
		req := httptest.NewRequest(http.MethodPost, "https://buyer.example/hook", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		require.NoError(t, signer.Sign(req, body))
		req.RequestURI = "/hook" // as a server receives it
		_, err = verifier.VerifyRequest(req, body)
		require.NoError(t, err, k.KeyID())
	}

	_, err = ParseJWKSigningKey(jwks)
	require.ErrorIs(t, err, ErrInvalidKey)
	require.ErrorContains(t, err, "JWKS", "a key set where one key belongs says so")
	_, err = GenerateSigningKey("k", "rsa-pss-sha512")
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = PublicJWKS(nil)
	require.ErrorIs(t, err, ErrInvalidKey)
	empty, err := PublicJWKS()
	require.NoError(t, err)
	require.JSONEq(t, `{"keys":[]}`, string(empty))
}
