// Command quickstart delivers signed webhooks through an in-memory
// supervisor to three local buyer endpoints that verify every signature: a
// healthy one, a flaky one that fails twice before answering 200, and a dead
// one whose circuit breaker opens. It prints every attempt and the final
// states, and exits in a few seconds.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	// The seller's signing key. A real seller loads its own and publishes
	// the public half (key.PublicJWK) in its JWKS; the demo makes one.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	key, err := webhook.NewSigningKey("quickstart-2026", priv)
	if err != nil {
		return err
	}

	// The buyer's side: three endpoints on loopback that verify every
	// request against the seller's public key.
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	if err != nil {
		return err
	}
	healthy := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer healthy.Close()
	flaky := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer flaky.Close()
	flaky.Fail(
		webhooktest.Fault{Status: http.StatusServiceUnavailable, Body: "try again"},
		webhooktest.Fault{Status: http.StatusServiceUnavailable, Body: "try again"},
	)
	dead := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer dead.Close()
	for range 10 {
		dead.Fail(webhooktest.Fault{Status: http.StatusBadGateway, Body: "upstream down"})
	}

	// The seller's side: a signing HTTP sender and an in-memory supervisor
	// with short delays so the demo finishes quickly.
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	if err != nil {
		return err
	}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{
		Signer:      signer,
		Timeout:     2 * time.Second,
		Development: true, // local buyers: loopback, plain http (never in production)
	})
	if err != nil {
		return err
	}
	start := time.Now()
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
		Retry:   webhook.RetryPolicy{MaxAttempts: 3, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second},
		Breaker: webhook.BreakerPolicy{FailureThreshold: 3, OpenTimeout: time.Minute},
		LogSink: webhook.LogSinkFunc(func(_ context.Context, a webhook.Attempt) error {
			line := fmt.Sprintf("%6.0fms  %-8s attempt %d/%d  %-7s", float64(time.Since(start).Microseconds())/1000,
				a.TaskID, a.AttemptNumber, a.MaxAttempts, a.Outcome)
			if a.Error != "" {
				line += "  " + a.Error
			}
			if a.WillRetry {
				line += fmt.Sprintf("  (retry in %v)", a.NextRetryAt.Sub(a.OccurredAt).Round(time.Millisecond))
			}
			fmt.Println(line)
			return nil
		}),
	})
	if err != nil {
		return err
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	worker := make(chan error, 1)
	go func() { worker <- sup.RunWorker(ctx) }()

	send := func(url, task string) (webhook.Receipt, error) {
		return sup.SendMCP(context.Background(), webhook.MCPWebhook{
			URL:         url + "/adcp/webhook",
			OperationID: "op_" + task,
			TaskID:      task,
			TaskType:    webhook.TaskCreateMediaBuy,
			Status:      webhook.StatusCompleted,
			Result:      map[string]any{"media_buy_id": "mb_" + task},
			Routing:     webhook.Routing{SequenceKey: "buyer-42"},
		})
	}

	fmt.Println("delivering three signed webhooks: healthy, flaky (fails twice), dead (always 502)")
	var receipts []webhook.Receipt
	for _, t := range []struct{ url, task string }{{healthy.URL, "task_1"}, {flaky.URL, "task_2"}, {dead.URL, "task_3"}} {
		r, err := send(t.url, t.task)
		if err != nil {
			return err
		}
		receipts = append(receipts, r)
	}
	waitCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fmt.Println()
	for _, r := range receipts {
		d, err := sup.Wait(waitCtx, r.ID)
		if err != nil {
			return err
		}
		fmt.Printf("%s #%d  %-9s after %d attempt(s), key %s\n", d.TaskID, d.Sequence, d.State, d.Attempts, d.IdempotencyKey)
	}

	// Three failures opened the dead endpoint's breaker: a new webhook to it
	// is accepted but waits, uncharged, until the breaker lets a probe through.
	deadURL := dead.URL + "/adcp/webhook"
	state, _ := sup.Breaker(ctx, deadURL)
	fmt.Printf("\nbreaker for the dead endpoint: %s\n", state)
	r, err := send(dead.URL, "task_4")
	if err != nil {
		return err
	}
	d, err := sup.Delivery(ctx, r.ID)
	if err != nil {
		return err
	}
	fmt.Printf("%s #%d  %s with %d attempts: it waits for the breaker instead of hammering a dead endpoint\n",
		d.TaskID, d.Sequence, d.State, d.Attempts)

	stop()
	if err := <-worker; err != nil {
		return err
	}

	total, signed, verified := 0, 0, 0
	for _, rcv := range []*webhooktest.Receiver{healthy, flaky, dead} {
		for _, got := range rcv.Deliveries() {
			total++
			if got.Header.Get("Signature") != "" {
				signed++
			}
			if got.Fault == nil && got.VerifyErr == nil {
				verified++
			}
		}
	}
	fmt.Printf("\nthe buyers received %d requests, %d signed with key %s (%s); the %d not failed on purpose passed verification\n",
		total, signed, key.KeyID(), key.Algorithm(), verified)
	fmt.Println("worker stopped; the in-memory queue is not durable, so task_4 ends with this process")
	return nil
}
