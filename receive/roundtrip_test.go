package receive_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
)

// These tests sign with the seller's side (the root package) and verify
// with this one, as a real seller and buyer would. Only this external test
// package imports the root; package receive itself never does
// (TestNoSellerDependencies).

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTestSeller makes a fresh Ed25519 seller key "seller-2026", a signer for
// it and a verifier that trusts it.
func newTestSeller(t *testing.T) (*webhook.SigningKey, *webhook.RFC9421Signer, *receive.Verifier) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := webhook.NewSigningKey("seller-2026", priv)
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	ver, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	return key, signer, ver
}

// TestSignVerifyRoundTrip signs with the library's signer and verifies,
// including a body tampered with in transit.
func TestSignVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	key, signer, _ := newTestSeller(t)
	vk, err := receive.NewVerifyingKey("seller-2026", "request-signing", key.Public())
	require.NoError(t, err)
	ver, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{vk}})
	require.NoError(t, err)

	req, err := http.NewRequest(http.MethodPost, "https://Buyer.Example:443/hooks/./adcp?b=2&a=1", nil)
	require.NoError(t, err)
	body := []byte(`{"task_id":"t1"}`)
	require.NoError(t, signer.Sign(req, body))
	got, err := ver.Verify(context.Background(), "POST", "https://buyer.example/hooks/adcp?b=2&a=1", req.Header, body)
	require.NoError(t, err, "the receiver sees the canonical URL")
	require.Equal(t, "seller-2026", got.KeyID)
	require.Equal(t, receive.AlgEd25519, got.Alg)
	_, err = ver.Verify(context.Background(), "post", "https://buyer.example/hooks/adcp?b=2&a=1", req.Header, body)
	require.Error(t, err, "the method is case-sensitive")

	req2, _ := http.NewRequest(http.MethodPost, "https://buyer.example/hooks/adcp", nil)
	require.NoError(t, signer.Sign(req2, body))
	_, err = ver.Verify(context.Background(), "POST", "https://buyer.example/hooks/adcp", req2.Header, []byte(`{"task_id":"t2"}`))
	var ve *receive.VerifyError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, receive.CodeDigestMismatch, ve.Code)

	req3, _ := http.NewRequest(http.MethodPost, "https://buyer.example/hooks/adcp", nil)
	require.NoError(t, signer.Sign(req3, body))
	_, err = ver.Verify(context.Background(), "POST", "https://evil.example/hooks/adcp", req3.Header, body)
	require.ErrorAs(t, err, &ve)
	require.Equal(t, receive.CodeSignatureInvalid, ve.Code, "a signature is bound to its URL")

	// An internationalised host is signed in its A-label form, which is
	// what the buyer's server sees in Host.
	req4, err := http.NewRequest(http.MethodPost, "https://Bücher.example/hooks?x=1", nil)
	require.NoError(t, err)
	require.NoError(t, signer.Sign(req4, body))
	_, err = ver.Verify(context.Background(), "POST", "https://xn--bcher-kva.example/hooks?x=1", req4.Header, body)
	require.NoError(t, err)
}

// TestSigningKeyVerifyingKey checks the public half the seller's key hands
// out: the metadata the checklist inspects, and that it verifies.
func TestSigningKeyVerifyingKey(t *testing.T) {
	t.Parallel()
	key, signer, ver := newTestSeller(t)
	vk := key.VerifyingKey()
	require.Equal(t, "seller-2026", vk.KeyID)
	require.Equal(t, "request-signing", vk.AdcpUse)
	require.Equal(t, []string{"verify"}, vk.KeyOps)
	require.Equal(t, receive.AlgEd25519, vk.Alg)
	req, _ := http.NewRequest(http.MethodPost, "https://buyer.example/wh", nil)
	require.NoError(t, signer.Sign(req, []byte(`{}`)))
	_, err := ver.Verify(context.Background(), "POST", "https://buyer.example/wh", req.Header, []byte(`{}`))
	require.NoError(t, err)

	_, err = receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{(&webhook.SigningKey{}).VerifyingKey()}})
	require.ErrorIs(t, err, receive.ErrInvalidConfig, "an empty SigningKey has no public half")
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
	var ve *receive.VerifyError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, receive.CodeHeaderMalformed, ve.Code)
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
	plain, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	_, err = plain.VerifyRequest(inbound, body)
	require.Error(t, err, "without ExternalURL the rebuilt URL differs from the signed one")
	proxied, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()},
		ExternalURL: func(r *http.Request) string { return "https://buyer.example" + r.RequestURI }})
	require.NoError(t, err)
	_, err = proxied.VerifyRequest(inbound, body)
	require.NoError(t, err)
}
