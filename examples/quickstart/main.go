// Command quickstart delivers webhooks through an in-memory supervisor to a
// local receiver with three endpoints: a healthy one, a flaky one that fails
// twice before answering 200, and a dead one whose circuit breaker opens.
// It prints every attempt and the final states, and exits in a few seconds.
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
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/adcpkit/webhook"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	// The buyer's side: three endpoints on loopback.
	var flakyCalls atomic.Int32
	mux := http.NewServeMux()
	var signed atomic.Int32
	mux.HandleFunc("/healthy", func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Signature-Input"), `keyid="quickstart-2026"`) {
			signed.Add(1)
		}
	})
	mux.HandleFunc("/flaky", func(w http.ResponseWriter, r *http.Request) {
		if flakyCalls.Add(1) <= 2 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/dead", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	})
	buyer := httptest.NewServer(mux)
	defer buyer.Close()

	// The seller's side: an HTTP sender and an in-memory supervisor with
	// short delays so the demo finishes quickly.
	// Every attempt is signed per the AdCP RFC 9421 webhook profile. A real
	// seller loads its published key; the demo makes one.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	key, err := webhook.NewSigningKey("quickstart-2026", priv)
	if err != nil {
		return err
	}
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	if err != nil {
		return err
	}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{
		Signer:                   signer,
		Timeout:                  2 * time.Second,
		AllowPrivateDestinations: true, // the receiver is on loopback
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
		AllowInsecureHTTP: true, // the local receiver speaks plain http
	})
	if err != nil {
		return err
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	worker := make(chan error, 1)
	go func() { worker <- sup.RunWorker(ctx) }()

	send := func(path, task string) (webhook.Receipt, error) {
		return sup.SendMCP(context.Background(), webhook.MCPWebhook{
			URL:         buyer.URL + path,
			OperationID: "op_" + task,
			TaskID:      task,
			TaskType:    webhook.TaskCreateMediaBuy,
			Status:      webhook.StatusCompleted,
			Result:      map[string]any{"media_buy_id": "mb_" + task},
			Routing:     webhook.Routing{SequenceKey: "buyer-42"},
		})
	}

	fmt.Println("delivering three webhooks: healthy, flaky (fails twice), dead (always 502)")
	var receipts []webhook.Receipt
	for _, t := range []struct{ path, task string }{{"/healthy", "task_1"}, {"/flaky", "task_2"}, {"/dead", "task_3"}} {
		r, err := send(t.path, t.task)
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
	dead := buyer.URL + "/dead"
	fmt.Printf("\nbreaker for /dead: %s\n", sup.Breaker(dead))
	r, err := send("/dead", "task_4")
	if err != nil {
		return err
	}
	d, err := sup.Delivery(r.ID)
	if err != nil {
		return err
	}
	fmt.Printf("%s #%d  %s with %d attempts: it waits for the breaker instead of hammering a dead endpoint\n",
		d.TaskID, d.Sequence, d.State, d.Attempts)

	stop()
	if err := <-worker; err != nil {
		return err
	}
	fmt.Printf("\nthe healthy endpoint received %d request(s) signed with key %s (RFC 9421, %s)\n", signed.Load(), key.KeyID(), key.Algorithm())
	fmt.Println("worker stopped; the in-memory queue is not durable, so task_4 ends with this process")
	return nil
}
