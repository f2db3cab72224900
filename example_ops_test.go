package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

// An operator finds what failed at one endpoint during an outage, resets
// its breaker once the buyer is back, counts what a bulk redelivery would
// do, then redelivers every failed delivery of that endpoint. The same
// calls work on a PostgresSupervisor (made with a nil Sender in a process
// that only inspects).
func ExampleInspector() {
	ctx := context.Background()
	buyer := webhooktest.NewReceiver(webhooktest.Config{})
	defer buyer.Close()
	for range 3 {
		buyer.Fail(webhooktest.Fault{Status: http.StatusServiceUnavailable}) // the outage
	}
	key, _ := webhook.GenerateSigningKey("ops-example", receive.AlgEd25519)
	signer, _ := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	sender, _ := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true})
	sup, _ := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
		Retry:   webhook.RetryPolicy{MaxAttempts: 1},
		Breaker: webhook.BreakerPolicy{FailureThreshold: 3},
		Logger:  slog.New(slog.DiscardHandler), // the breaker's log lines are not the example's output
	})
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go sup.RunWorker(wctx)
	for i := range 3 {
		r, _ := sup.SendMCP(ctx, webhook.MCPWebhook{URL: buyer.URL, OperationID: "op_1", TaskID: fmt.Sprint("task_", i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
		sup.Wait(ctx, r.ID)
	}

	var in webhook.Inspector = sup
	st, _ := in.Stats(ctx)
	fmt.Printf("failed %d, open breakers %d\n", st.Failed, st.OpenBreakers)
	f := webhook.DeliveryFilter{BreakerKey: buyer.URL, State: webhook.StateFailed}
	list, _ := in.Deliveries(ctx, f, webhook.Page{Limit: 2})
	for _, d := range list.Deliveries {
		fmt.Println(d.TaskID, d.LastError)
	}
	fmt.Println("more:", list.Next != "")

	in.ResetBreaker(ctx, buyer.URL) // the buyer is back
	res, _ := in.RedeliverMatching(ctx, f, webhook.BulkOptions{DryRun: true})
	fmt.Printf("dry run: %d matched, %d to redeliver, %d to re-emit\n", res.Matched, res.Redelivered, res.Reemitted)
	res, _ = in.RedeliverMatching(ctx, f, webhook.BulkOptions{})
	for _, r := range res.Receipts {
		sup.Wait(ctx, r.ID)
	}
	st, _ = in.Stats(ctx)
	fmt.Printf("delivered %d, failed %d\n", st.Delivered, st.Failed)
	// Output:
	// failed 3, open breakers 1
	// task_2 HTTP 503 Service Unavailable
	// task_1 HTTP 503 Service Unavailable
	// more: true
	// dry run: 3 matched, 3 to redeliver, 0 to re-emit
	// delivered 3, failed 0
}

// The signer adds the AdCP RFC 9421 webhook signature to a request. Now
// and Rand are fixed here so that the output is stable; leave them nil.
func ExampleRFC9421Signer() {
	key, _ := webhook.GenerateSigningKey("seller-2026-12", receive.AlgEd25519)
	signer, _ := webhook.NewRFC9421Signer(webhook.SignerConfig{
		Key:  key,
		Now:  func() time.Time { return time.Unix(1_780_000_000, 0) },
		Rand: bytes.NewReader(make([]byte, 64)),
	})
	body := []byte(`{"idempotency_key":"whk_0123456789abcdef","status":"completed"}`)
	req, _ := http.NewRequest(http.MethodPost, "https://buyer.example/adcp/webhooks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if err := signer.Sign(req, body); err != nil {
		panic(err)
	}
	fmt.Println("Content-Digest:", req.Header.Get("Content-Digest"))
	fmt.Println("Signature-Input:", req.Header.Get("Signature-Input"))
	fmt.Println("Signature present:", len(req.Header.Get("Signature")) > 0)
	// Output:
	// Content-Digest: sha-256=:4WctUp6GJqTo+kfzdr9FbrBmLH9lFuXk7s4/KIlu0bo=:
	// Signature-Input: sig1=("@method" "@target-uri" "@authority" "content-type" "content-digest");created=1780000000;expires=1780000300;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="seller-2026-12";alg="ed25519";tag="adcp/webhook-signing/v1"
	// Signature present: true
}

// Endpoint-health events, handed off the worker's path to a goroutine
// that would page someone or post to an ops channel (here, it prints). A
// buyer's endpoint fails three deliveries, then recovers.
func ExampleObserver_health() {
	ctx := context.Background()
	buyer := webhooktest.NewReceiver(webhooktest.Config{})
	defer buyer.Close()
	for range 3 {
		buyer.Fail(webhooktest.Fault{Status: http.StatusServiceUnavailable})
	}
	events := make(chan webhook.HealthEvent, 64)
	obs := &webhook.Observer{Health: func(_ context.Context, e webhook.HealthEvent) {
		select {
		case events <- e:
		default: // never block a worker; the log line is written anyway
		}
	}}
	sender, _ := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Development: true})
	sup, _ := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
		Observer: obs,
		Retry:    webhook.RetryPolicy{MaxAttempts: 1},
		Breaker:  webhook.BreakerPolicy{FailingDeliveries: 2},
		Logger:   slog.New(slog.DiscardHandler),
	})
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go sup.RunWorker(wctx)
	for i := range 4 {
		r, _ := sup.SendMCP(ctx, webhook.MCPWebhook{URL: buyer.URL, OperationID: "op_1", TaskID: fmt.Sprint("task_", i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
		sup.Wait(ctx, r.ID)
	}
	for len(events) > 0 { // a server's alerting goroutine ranges over the channel
		e := <-events
		switch e.Kind {
		case webhook.HealthDeliveryExhausted:
			fmt.Println(e.Kind, e.Delivery.Reason, "after", e.Delivery.Attempts, "attempt")
		case webhook.HealthEndpointFailing, webhook.HealthEndpointRecovered:
			fmt.Println(e.Kind, e.FailedDeliveries, "deliveries failed")
		}
	}
	// Output:
	// delivery_exhausted exhausted after 1 attempt
	// endpoint_failing 2 deliveries failed
	// delivery_exhausted exhausted after 1 attempt
	// delivery_exhausted exhausted after 1 attempt
	// endpoint_recovered 3 deliveries failed
}
