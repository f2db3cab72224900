package webhooktest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

// A receiver answers as a conformant AdCP 3.2 buyer: 503 for an identical
// delivery while the first is being handled, 200 once it was, 409 for a
// changed payload under the same idempotency key.
func ExampleReceiver_HoldNext() {
	rcv := webhooktest.NewReceiver(webhooktest.Config{})
	defer rcv.Close()
	post := func(body string) int {
		resp, err := http.Post(rcv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const body = `{"idempotency_key":"whk_0123456789abcdef","status":"completed"}`

	hold := rcv.HoldNext()
	first := make(chan int)
	go func() { first <- post(body) }()
	<-hold.Held()
	fmt.Println("while held:", post(body))
	hold.Release()
	fmt.Println("first:", <-first)
	fmt.Println("again:", post(body))
	fmt.Println("changed:", post(`{"idempotency_key":"whk_0123456789abcdef","status":"failed"}`))
	// Output:
	// while held: 503
	// first: 200
	// again: 200
	// changed: 409
}

// A seller's test: deliver through a supervisor to a receiver that
// verifies every signature against the seller's public key, failing the
// first request, and check what the buyer saw.
func ExampleNewReceiver() {
	ctx := context.Background()
	key, _ := webhook.GenerateSigningKey("seller-test", receive.AlgEd25519)
	verifier, _ := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	buyer := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer buyer.Close()
	buyer.Fail(webhooktest.Fault{Status: http.StatusServiceUnavailable})

	signer, _ := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	sender, _ := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true}) // loopback, http
	sup, _ := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
		Retry:  webhook.RetryPolicy{BaseDelay: 10 * time.Millisecond},
		Logger: slog.New(slog.DiscardHandler),
	})
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go sup.RunWorker(wctx)

	r, _ := sup.SendMCP(ctx, webhook.MCPWebhook{URL: buyer.URL, OperationID: "op_1", TaskID: "mb_1",
		TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
	d, _ := sup.Wait(ctx, r.ID)
	fmt.Println(d.State, "after", d.Attempts, "attempts")
	for _, got := range buyer.Deliveries() {
		fmt.Println(got.IdempotencyKey == r.IdempotencyKey, got.VerifyErr == nil, got.Fault != nil)
	}
	// Output:
	// delivered after 2 attempts
	// true true true
	// true true false
}
