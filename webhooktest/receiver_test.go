package webhooktest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seller is a signing key and the buyer-side verifier that trusts it.
func seller(t *testing.T, kid string) (*webhook.RFC9421Signer, *receive.Verifier) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := webhook.NewSigningKey(kid, priv)
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	jwks, err := json.Marshal(map[string]any{"keys": []any{map[string]any{
		"kid": kid, "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "adcp_use": "request-signing",
		"key_ops": []string{"verify"}, "x": base64.RawURLEncoding.EncodeToString(pub),
	}}})
	require.NoError(t, err)
	keys, err := receive.ParseJWKS(jwks)
	require.NoError(t, err)
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: keys})
	require.NoError(t, err)
	return signer, verifier
}

// run starts a memory supervisor delivering with signer until the test ends.
func run(t *testing.T, signer webhook.Signer) *webhook.MemorySupervisor {
	t.Helper()
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, AllowPrivateDestinations: true, Timeout: 2 * time.Second})
	require.NoError(t, err)
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
		AllowInsecureHTTP: true,
		Retry:             webhook.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.RunWorker(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return sup
}

func webhookTo(url, task string) webhook.MCPWebhook {
	return webhook.MCPWebhook{URL: url + "/adcp/webhook", OperationID: "op_" + task, TaskID: task,
		TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Result: map[string]any{"media_buy_id": "mb_1"}}
}

func TestSignedDeliveryThroughFaults(t *testing.T) {
	t.Parallel()
	signer, verifier := seller(t, "seller-2026")
	rcv := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer rcv.Close()
	rcv.Fail(
		webhooktest.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "0"},
		webhooktest.Fault{Drop: true},
		webhooktest.Fault{Status: http.StatusBadGateway, Body: "upstream", SlowBody: time.Millisecond},
	)
	sup := run(t, signer)
	r, err := sup.SendMCP(context.Background(), webhookTo(rcv.URL, "t1"))
	require.NoError(t, err)
	d, err := sup.Wait(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	require.Equal(t, 4, d.Attempts)

	got := rcv.Deliveries()
	require.Len(t, got, 4)
	for i, g := range got {
		require.Equal(t, r.IdempotencyKey, g.IdempotencyKey, "attempt %d", i+1)
		require.Equal(t, got[0].Body, g.Body, "identical bytes on every attempt")
		require.NotEmpty(t, g.Header.Get("Signature"))
	}
	require.Equal(t, []int{503, 0, 502, 200}, []int{got[0].Status, got[1].Status, got[2].Status, got[3].Status})
	require.NoError(t, got[3].VerifyErr, "the signature verifies")
	require.False(t, got[3].Duplicate)
}

func TestReceiverRejectsBadSignatures(t *testing.T) {
	t.Parallel()
	_, verifier := seller(t, "seller-2026")
	impostor, _ := seller(t, "seller-2026") // same kid, other key
	rcv := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer rcv.Close()
	sup := run(t, impostor)
	r, err := sup.SendMCP(context.Background(), webhookTo(rcv.URL, "t1"))
	require.NoError(t, err)
	d, err := sup.Wait(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
	require.Equal(t, 1, d.Attempts, "a signature failure is not retried")
	got := rcv.Deliveries()
	require.Len(t, got, 1)
	require.Equal(t, http.StatusUnauthorized, got[0].Status)
	var ve *receive.VerifyError
	require.ErrorAs(t, got[0].VerifyErr, &ve)
	require.Equal(t, receive.CodeSignatureInvalid, ve.Code)
}

func TestReceiverAcknowledgesDuplicates(t *testing.T) {
	t.Parallel()
	signer, verifier := seller(t, "seller-2026")
	rcv := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer rcv.Close()
	body, key, err := webhook.BuildMCPBody(webhookTo(rcv.URL, "t1"), time.Now())
	require.NoError(t, err)
	// A seller sending the same delivery from two processes (one supervisor
	// returns the first receipt for a repeated key, sending nothing).
	for range 2 {
		sup := run(t, signer)
		r, err := sup.SendPrepared(context.Background(), webhook.PreparedWebhook{URL: rcv.URL + "/adcp/webhook", Body: body, IdempotencyKey: key})
		require.NoError(t, err)
		d, err := sup.Wait(context.Background(), r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State, "a duplicate is acknowledged with 2xx")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := rcv.WaitFor(ctx, 2)
	require.NoError(t, err)
	require.False(t, got[0].Duplicate)
	require.True(t, got[1].Duplicate)
}

// TestReceiverFollowsTheAdCP32Contract: per key, a canonical-payload
// binding: 200 for a completed duplicate (however it is serialised), 409
// for a changed payload, 503 while an identical delivery is still being
// handled, 401 (webhook_body_malformed) for a body that is not strict
// JSON, 400 without an idempotency_key.
func TestReceiverFollowsTheAdCP32Contract(t *testing.T) {
	t.Parallel()
	rcv := webhooktest.NewReceiver(webhooktest.Config{})
	defer rcv.Close()
	post := func(body string) int {
		resp, err := http.Post(rcv.URL+"/hook", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	const a = `{"idempotency_key":"whk_aaaaaaaaaaaaaaaa","status":"completed","result":{"x":1,"y":[1.0,2]}}`
	require.Equal(t, http.StatusOK, post(a))
	require.Equal(t, http.StatusOK, post(`{ "result":{"y":[1,2e0],"x":1}, "status":"completed", "idempotency_key":"whk_aaaaaaaaaaaaaaaa" }`),
		"the same canonical payload, serialised otherwise: a duplicate")
	require.Equal(t, http.StatusConflict, post(`{"idempotency_key":"whk_aaaaaaaaaaaaaaaa","status":"failed"}`))
	require.Equal(t, http.StatusOK, post(a), "the first binding is kept")

	hold := rcv.HoldNext()
	const b = `{"idempotency_key":"whk_bbbbbbbbbbbbbbbb","status":"completed"}`
	held := make(chan int, 1)
	go func() { held <- post(b) }()
	<-hold.Held()
	require.Equal(t, http.StatusServiceUnavailable, post(b), "the owner is still processing")
	hold.Release()
	require.Equal(t, http.StatusOK, <-held)
	require.Equal(t, http.StatusOK, post(b), "acknowledged: a duplicate")

	require.Equal(t, http.StatusUnauthorized, post(`{"idempotency_key":"whk_cccccccccccccccc","a":1,"a":2}`), "duplicate member names: webhook_body_malformed")
	require.Equal(t, http.StatusBadRequest, post(`{"status":"completed"}`), "no idempotency_key")
	got := rcv.Deliveries()
	var ve *receive.VerifyError
	require.ErrorAs(t, got[len(got)-2].VerifyErr, &ve)
	require.Equal(t, receive.CodeBodyMalformed, ve.Code)

	var dup, inProgress, conflict int
	for _, d := range rcv.Deliveries() {
		dup += btoi(d.Duplicate)
		inProgress += btoi(d.InProgress)
		conflict += btoi(d.Conflict)
	}
	require.Equal(t, 1, conflict)
	require.Equal(t, 1, inProgress)
	require.Equal(t, 3, dup)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Found by review: without a Verifier, a challenge matching the
// Registration is answered, as Config documents.
func TestReceiverAnswersChallengesWithoutAVerifier(t *testing.T) {
	t.Parallel()
	reg := &receive.Registration{SubscriberID: "caps", SellerAgentURL: "https://seller.example/mcp", EventTypes: []string{"capabilities.changed"}}
	rcv := webhooktest.NewReceiver(webhooktest.Config{Registration: reg})
	defer rcv.Close()
	body := `{"type":"webhook.challenge","scope":"agent","challenge":"` + strings.Repeat("c", 43) +
		`","subscriber_id":"caps","seller_agent_url":"https://seller.example/mcp","event_types":["capabilities.changed"],"delivery_auth":{"mode":"rfc9421"}}`
	resp, err := http.Post(rcv.URL, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, rcv.Deliveries()[0].Challenge)
}

// A legacy-route test receiver with a Registration and no Verifier: a
// seller's test of "challenge, then HMAC deliveries".
func TestReceiverLegacyWithRegistration(t *testing.T) {
	t.Parallel()
	creds := strings.Repeat("s", 32)
	reg := &receive.Registration{AccountID: "acct_1", SubscriberID: "sub_42", SellerAgentURL: "https://seller.example/mcp",
		Scheme: "HMAC-SHA256", Credentials: creds, EventTypes: []string{"account.status_changed"}}
	var rcv *webhooktest.Receiver
	require.NotPanics(t, func() {
		rcv = webhooktest.NewReceiver(webhooktest.Config{Legacy: &receive.LegacyAuth{Scheme: receive.SchemeHMAC, Credentials: creds,
			Agent: "https://seller.example/mcp"}, Registration: reg})
	})
	defer rcv.Close()
	body := `{"type":"webhook.challenge","scope":"","account_id":"acct_1","challenge":"` + strings.Repeat("c", 43) +
		`","subscriber_id":"sub_42","seller_agent_url":"https://seller.example/mcp","event_types":["account.status_changed"],` +
		`"delivery_auth":{"mode":"HMAC-SHA256","credential_fingerprint":"` + fingerprint(creds) + `"}}`
	resp, err := http.Post(rcv.URL, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func fingerprint(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
