package receive_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
)

// A buyer's endpoint verifying webhooks a seller signed with the root
// package's RFC9421Signer: the genuine webhook is accepted, a tampered body
// and a replay are refused with their AdCP error codes.
func ExampleVerifier() {
	// The seller's side: a key, its published JWK, and a signer.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := webhook.NewSigningKey("seller-2026", priv)
	jwk, _ := key.PublicJWK()
	signer, _ := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})

	// The buyer's side: the seller's JWKS, a verifier and a handler.
	keys, err := receive.ParseJWKS([]byte(`{"keys":[` + string(jwk) + `]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: keys})
	if err != nil {
		fmt.Println(err)
		return
	}
	buyer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, receive.MaxBodyBytes+1))
		if err != nil || len(body) > receive.MaxBodyBytes {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		sig, err := verifier.VerifyRequest(r, body)
		var ve *receive.VerifyError
		if errors.As(err, &ve) {
			w.Header().Set("WWW-Authenticate", `Signature error="`+ve.Code+`"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError) // the nonce store failed
			return
		}
		fmt.Println("accepted, signed by", sig.KeyID)
	}))
	defer buyer.Close()

	body := []byte(`{"task_id":"task_456","status":"completed"}`)
	signed, _ := http.NewRequest(http.MethodPost, buyer.URL+"/adcp/webhook", nil)
	if err := signer.Sign(signed, body); err != nil {
		fmt.Println(err)
		return
	}
	for _, send := range [][]byte{body, []byte(`{"task_id":"task_456","status":"failed"}`), body} {
		req, _ := http.NewRequest(http.MethodPost, signed.URL.String(), strings.NewReader(string(send)))
		req.Header = signed.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Println(resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// Output:
	// accepted, signed by seller-2026
	// 401 Signature error="webhook_signature_digest_mismatch"
	// 401 Signature error="webhook_signature_replayed"
}

// Checking a webhook registered with legacy HMAC-SHA256 authentication.
func ExampleVerifyLegacyHMAC() {
	secret := "0123456789abcdef0123456789abcdef" // the registration's credentials
	body := []byte(`{"task_id":"task_456","status":"completed"}`)
	now := time.Unix(1776520800, 0)

	// What the seller sends.
	header := http.Header{}
	ts := strconv.FormatInt(now.Unix(), 10)
	header.Set("X-ADCP-Timestamp", ts)
	header.Set("X-ADCP-Signature", "sha256="+receive.LegacyHMAC(secret, ts, body))

	fmt.Println(receive.VerifyLegacyHMAC(header, body, secret, now.Add(10*time.Second)))
	err := receive.VerifyLegacyHMAC(header, body, secret, now.Add(10*time.Minute))
	var ve *receive.VerifyError
	if errors.As(err, &ve) {
		fmt.Println(ve.Code)
	}
	// Output:
	// <nil>
	// webhook_signature_window_invalid
}

// A buyer's receiving endpoint: the Handler verifies each webhook and
// de-duplicates it by idempotency_key before the buyer's own handler runs,
// which it does once per delivery. (In production, share
// receive/pgstore's NonceStore and DedupStore across pods, and find the
// seller's keys with NewKeyDiscovery.)
func ExampleNewHandler() {
	key, _ := webhook.GenerateSigningKey("seller-2026", "")
	signer, _ := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})

	verifier, err := receive.NewVerifier(receive.VerifierConfig{
		Agent: "https://seller.example/mcp", // the sender identity
		Keys:  []receive.VerifyingKey{key.VerifyingKey()},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	handler, err := receive.NewHandler(receive.HandlerConfig{Verifier: verifier, Dedup: &receive.MemoryDedupStore{}},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wh, _ := receive.WebhookFrom(r.Context())
			fmt.Println("processing", wh.IdempotencyKey, "from", wh.Sender)
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	buyer := httptest.NewServer(handler)
	defer buyer.Close()

	send := func(body string) {
		req, _ := http.NewRequest(http.MethodPost, buyer.URL+"/adcp/webhook", strings.NewReader(body))
		_ = signer.Sign(req, []byte(body)) // a fresh signature for every attempt
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	send(`{"idempotency_key":"whk_0123456789abcdef","status":"completed"}`)
	send(`{"status":"completed", "idempotency_key":"whk_0123456789abcdef"}`) // the seller's retry
	send(`{"idempotency_key":"whk_0123456789abcdef","status":"failed"}`)     // another payload, same key
	// Output:
	// processing whk_0123456789abcdef from https://seller.example/mcp
	// 200
	// 200
	// 409
}
