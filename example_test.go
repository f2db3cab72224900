package webhook_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
)

// A seller hands a completed task's webhook to an in-memory supervisor and a
// worker delivers it; the receiver fails once, so it takes two attempts with
// the same idempotency key.
func ExampleMemorySupervisor() {
	var calls atomic.Int32
	buyer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer buyer.Close()

	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true}) // the test receiver is on loopback
	if err != nil {
		panic(err)
	}
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
		Retry:             webhook.RetryPolicy{BaseDelay: 10 * time.Millisecond},
		AllowInsecureHTTP: true, // the test receiver speaks plain http
		LogSink: webhook.LogSinkFunc(func(_ context.Context, a webhook.Attempt) error {
			fmt.Printf("attempt %d/%d: %s (HTTP %d), will retry: %v\n", a.AttemptNumber, a.MaxAttempts, a.Outcome, a.HTTPStatus, a.WillRetry)
			return nil
		}),
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	worker := make(chan error)
	go func() { worker <- sup.RunWorker(ctx) }()

	receipt, err := sup.SendMCP(context.Background(), webhook.MCPWebhook{
		URL:         buyer.URL + "/webhooks/adcp",
		OperationID: "op_456",
		TaskID:      "task_456",
		TaskType:    webhook.TaskCreateMediaBuy,
		Status:      webhook.StatusCompleted,
		Result:      map[string]any{"media_buy_id": "mb_12345"},
	})
	if err != nil {
		panic(err)
	}
	d, err := sup.Wait(context.Background(), receipt.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println("final state:", d.State, "after", d.Attempts, "attempts")
	stop()
	<-worker
	// Output:
	// attempt 1/3: failure (HTTP 503), will retry: true
	// attempt 2/3: success (HTTP 200), will retry: false
	// final state: delivered after 2 attempts
}

// BuildMCPBody shows the exact bytes a webhook is sent with.
func ExampleBuildMCPBody() {
	body, _, err := webhook.BuildMCPBody(webhook.MCPWebhook{
		OperationID:    "op_456",
		TaskID:         "task_456",
		TaskType:       webhook.TaskCreateMediaBuy,
		Status:         webhook.StatusCompleted,
		Result:         json.RawMessage(`{"media_buy_id":"mb_12345"}`),
		IdempotencyKey: "whk_4f1c2a9e-6b7d-4c8e-9a0b-1c2d3e4f5a6b",
	}, time.Date(2025, 1, 22, 10, 30, 0, 0, time.UTC))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(body))
	// Output:
	// {"idempotency_key":"whk_4f1c2a9e-6b7d-4c8e-9a0b-1c2d3e4f5a6b","notification_id":"task_456.terminal","operation_id":"op_456","task_id":"task_456","task_type":"create_media_buy","protocol":"media-buy","status":"completed","timestamp":"2025-01-22T10:30:00.000Z","result":{"media_buy_id":"mb_12345"}}
}

// Invalid webhooks are refused before anything is queued, with an error that
// names the field.
func ExampleValidationError() {
	sender, _ := webhook.NewHTTPSender(webhook.HTTPSenderConfig{})
	sup, _ := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{})
	_, err := sup.SendMCP(context.Background(), webhook.MCPWebhook{
		URL:         "http://buyer.example/hook",
		OperationID: "op_1", TaskID: "t1", TaskType: webhook.TaskGetProducts, Status: webhook.StatusCompleted,
	})
	fmt.Println(err)
	// Output:
	// webhook: invalid URL: uses plain http; use https, or for local development set HTTPSenderConfig.Development on the sender (or MemoryConfig.AllowInsecureHTTP)
}

// The delays before each attempt under the default policy, without jitter.
func ExampleRetryPolicy_Delay() {
	var p webhook.RetryPolicy
	for n := 1; n <= 7; n++ {
		fmt.Printf("attempt %d: %v\n", n, p.Delay(n))
	}
	// Output:
	// attempt 1: 0s
	// attempt 2: 1s
	// attempt 3: 2s
	// attempt 4: 4s
	// attempt 5: 8s
	// attempt 6: 16s
	// attempt 7: 30s
}

// SendPrepared delivers a body the caller built, here an A2A-style task
// update, with the same retries, breaker and audit as MCP webhooks.
func ExampleMemorySupervisor_SendPrepared() {
	buyer := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer buyer.Close()
	sender, _ := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	sup, _ := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{AllowInsecureHTTP: true})
	ctx, stop := context.WithCancel(context.Background())
	worker := make(chan error)
	go func() { worker <- sup.RunWorker(ctx) }()

	r, err := sup.SendPrepared(context.Background(), webhook.PreparedWebhook{
		URL:            buyer.URL,
		Body:           []byte(`{"id":"task-1","status":{"state":"completed"}}`),
		IdempotencyKey: webhook.NewIdempotencyKey(),
		Routing:        webhook.Routing{SequenceKey: "buyer-42"},
	})
	if err != nil {
		panic(err)
	}
	d, _ := sup.Wait(context.Background(), r.ID)
	fmt.Println(d.State, "sequence", d.Sequence)
	stop()
	<-worker
	// Output: delivered sequence 1
}

// A seller commits a media buy's new state and its webhook in one
// transaction: if the transaction rolls back, no webhook is ever sent. (This
// example needs a database, so it is compiled but not run.)
func ExamplePostgresSupervisor_SendMCPTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{})
	if err != nil {
		log.Fatal(err)
	}
	sup, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := sup.CreateSchema(ctx); err != nil {
		log.Fatal(err)
	}
	go sup.RunWorker(ctx) // in every pod

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE media_buys SET status = 'active' WHERE id = $1`, "mb_12345"); err != nil {
		log.Fatal(err)
	}
	r, err := sup.SendMCPTx(ctx, tx, webhook.MCPWebhook{
		URL:         "https://buyer.example/webhooks/adcp",
		OperationID: "op_456",
		TaskID:      "task_456",
		TaskType:    webhook.TaskCreateMediaBuy,
		Status:      webhook.StatusCompleted,
		Result:      map[string]any{"media_buy_id": "mb_12345"},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivery", r.ID, "committed")
}

// A seller builds the webhook_signing block of its get_adcp_capabilities
// response from the sender and supervisor it delivers with, so the
// advertised horizon and algorithms are the ones in use.
func ExampleWebhookSigning() {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	key, err := webhook.NewSigningKey("seller-2026", priv)
	if err != nil {
		panic(err)
	}
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	if err != nil {
		panic(err)
	}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer})
	if err != nil {
		panic(err)
	}
	// In production: a PostgresSupervisor with ProductionRetryPolicy.
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{Retry: webhook.ProductionRetryPolicy()})
	if err != nil {
		panic(err)
	}
	c, err := webhook.WebhookSigning(sup, sender, webhook.CapabilityOptions{AllowNonDurable: true})
	if err != nil {
		panic(err)
	}
	out, _ := json.Marshal(map[string]any{"webhook_signing": c})
	fmt.Println(string(out))
	// Output:
	// {"webhook_signing":{"supported":true,"profile":"adcp/webhook-signing/v1","algorithms":["ed25519"],"legacy_hmac_fallback":false,"delivery_retry_horizon_seconds":86400}}
}

// A seller makes its signing key once: the private JWK goes to its secret
// store, the public JWKS to the jwks_uri of its brand.json agents[] entry.
// At start-up it loads the key back from the secret store.
func ExampleGenerateSigningKey() {
	key, err := webhook.GenerateSigningKey("seller-2026-12", receive.AlgEd25519)
	if err != nil {
		panic(err)
	}
	private, err := key.PrivateJWK() // store as a secret; never log it
	if err != nil {
		panic(err)
	}
	jwks, err := webhook.PublicJWKS(key) // publish
	if err != nil {
		panic(err)
	}

	loaded, err := webhook.ParseJWKSigningKey(private) // at start-up
	if err != nil {
		panic(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		panic(err)
	}
	fmt.Println(loaded.KeyID(), loaded.Algorithm())
	fmt.Println(set.Keys[0]["kid"], set.Keys[0]["adcp_use"], set.Keys[0]["key_ops"], set.Keys[0]["d"] == nil)
	// Output:
	// seller-2026-12 ed25519
	// seller-2026-12 request-signing [verify] true
}
