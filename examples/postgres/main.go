// Command postgres delivers a batch of signed webhooks through the durable
// PostgresSupervisor, with three workers ("pods") sharing one queue in
// Postgres, to three local buyer endpoints: a healthy one, a flaky one whose
// first answer to each webhook is 503, and one that rejects its webhooks
// with 400. It then prints the attempt log straight from the
// adcp_webhook_attempts table, lists the failed deliveries, and redelivers
// one once that buyer has fixed its endpoint. It exits in a few seconds.
//
//	go run ./examples/postgres
//	DATABASE_URL=postgres://user:pass@host/db go run ./examples/postgres
//
// Without DATABASE_URL it starts a throwaway PostgreSQL from the initdb and
// postgres binaries on PATH or under /usr/lib/postgresql/*/bin (Debian:
// apt-get install postgresql), on a free loopback port, and removes it at
// exit. With DATABASE_URL it creates the adcp_webhook_* tables there if they
// are missing, and leaves this run's rows behind.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

const (
	pods         = 3 // RunWorker calls sharing the queue, as pods of one service would
	perBuyer     = 4 // webhooks to each of the three buyers
	pollEvery    = 100 * time.Millisecond
	finishWithin = 15 * time.Second // for every delivery to be delivered or failed
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	start := time.Now()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt) // Ctrl-C still cleans up
	defer cancel()

	// The database: DATABASE_URL, or (in this example only: see
	// database.go) a throwaway cluster of its own.
	dbURL, stopDB, err := databaseURL()
	if err != nil {
		return err
	}
	defer stopDB()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}

	// The seller's signing key; the buyers verify every request against its
	// public half.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	key, err := webhook.NewSigningKey("postgres-example-2026", priv)
	if err != nil {
		return err
	}
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	if err != nil {
		return err
	}

	// Three buyers on loopback. A fault is used up by one request, in order:
	// the flaky buyer answers 503 to its first four requests (the first
	// attempt of each of its webhooks, so each is retried and delivered),
	// the rejecting buyer 400 to its first four (permanent: those webhooks
	// fail at once). After that both answer 200, as a buyer that fixed its
	// endpoint would.
	buyers := []struct {
		name string
		rcv  *webhooktest.Receiver
	}{
		{"healthy", webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})},
		{"flaky", webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})},
		{"rejecting", webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})},
	}
	buyerOf := map[string]string{} // webhook URL -> buyer name
	for _, b := range buyers {
		defer b.rcv.Close()
		buyerOf[b.rcv.URL+"/adcp/webhook"] = b.name
	}
	for range perBuyer {
		buyers[1].rcv.Fail(webhooktest.Fault{Status: http.StatusServiceUnavailable, Body: "warming up"})
		buyers[2].rcv.Fail(webhooktest.Fault{Status: http.StatusBadRequest, Body: "unknown operation_id"})
	}

	// The seller: a signing sender and the Postgres supervisor, with short
	// retry delays so the demo finishes quickly.
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
	sup, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{
		// A schedule short enough for a demo; in production use
		// webhook.ProductionRetryPolicy(), which retries until the horizon.
		Retry: webhook.RetryPolicy{MaxAttempts: 3, BaseDelay: 200 * time.Millisecond, MaxDelay: time.Second},
	})
	if err != nil {
		return err
	}
	if err := sup.CreateSchema(ctx); err != nil {
		return err
	}

	stopPods := startPods(ctx, sup, pods)
	defer stopPods() //nolint:errcheck // on error paths only; checked below

	// Enqueue the batch in one transaction: the deliveries become visible to
	// the workers (woken by NOTIFY) when it commits. A real seller would
	// update its task rows in the same transaction, so a task's state change
	// and its webhook commit together or not at all.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	var ids []int64
	for i := range perBuyer * len(buyers) {
		b := buyers[i%len(buyers)]
		task := fmt.Sprintf("task_%02d", i+1)
		r, err := sup.SendMCPTx(ctx, tx, webhook.MCPWebhook{
			URL:         b.rcv.URL + "/adcp/webhook",
			OperationID: "op_" + task,
			TaskID:      task,
			TaskType:    webhook.TaskCreateMediaBuy,
			Status:      webhook.StatusCompleted,
			Result:      map[string]any{"media_buy_id": "mb_" + task},
			Routing:     webhook.Routing{SequenceKey: "buyer-" + b.name},
		})
		if err != nil {
			return err
		}
		id, _ := strconv.ParseInt(r.ID, 10, 64) // PostgresSupervisor IDs are the row IDs
		ids = append(ids, id)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	committed := time.Now()
	fmt.Printf("committed %d webhooks (deliveries %d-%d) in one transaction for %d pods to deliver\n", len(ids), ids[0], ids[len(ids)-1], pods)

	if err := waitFinished(ctx, pool, ids); err != nil {
		return err
	}
	if err := stopPods(); err != nil {
		return err
	}
	fmt.Printf("all delivered or failed %v after the commit; pods stopped\n\n", time.Since(committed).Round(time.Millisecond))

	// The audit log is a table: one row per attempt, committed by the worker
	// that made it.
	rows, err := pool.Query(ctx, `
		SELECT delivery_id, task_id, url, attempt_number, max_attempts, outcome,
		       http_status, error_message, will_retry, occurred_at
		FROM adcp_webhook_attempts WHERE delivery_id = ANY($1) ORDER BY id`, ids)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DELIVERY\tTASK\tBUYER\tATTEMPT\tOUTCOME\tSTATUS\tRETRY\tAT\tERROR")
	attemptRows := 0
	for rows.Next() {
		var (
			id, attempt, maxAttempts int
			task, url, outcome       string
			status                   *int
			errText                  *string
			willRetry                bool
			at                       time.Time
		)
		if err := rows.Scan(&id, &task, &url, &attempt, &maxAttempts, &outcome, &status, &errText, &willRetry, &at); err != nil {
			rows.Close()
			return err
		}
		attemptRows++
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%v\t+%dms\t%s\n", id, task, buyerOf[url], attempt, maxAttempts,
			outcome, orDash(status), willRetry, at.Sub(committed).Milliseconds(), orDash(errText))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	var delivered, failed int
	err = pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'failed')
		FROM adcp_webhook_deliveries WHERE id = ANY($1)`, ids).Scan(&delivered, &failed)
	if err != nil {
		return err
	}
	fmt.Printf("\n%d attempts for %d webhooks: delivered %d, failed %d\n", attemptRows, len(ids), delivered, failed)

	// The failed ones, as an operator would list them. (The table may hold
	// earlier runs' too when DATABASE_URL is shared; show only this run's.)
	list, err := sup.Deliveries(ctx, webhook.DeliveryFilter{State: webhook.StateFailed}, webhook.Page{Limit: 100})
	if err != nil {
		return err
	}
	var failedHere []webhook.Delivery
	for _, d := range list.Deliveries {
		if id, _ := strconv.ParseInt(d.ID, 10, 64); slices.Contains(ids, id) {
			failedHere = append(failedHere, d)
		}
	}
	fmt.Println("\nfailed deliveries (Deliveries, newest first):")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, d := range failedHere {
		fmt.Fprintf(tw, "  %s\t%s\t%d attempt(s)\tlast status %d\t%s\n", d.ID, d.TaskID, d.Attempts, d.LastStatus, d.LastError)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(failedHere) == 0 {
		return errors.New("expected the rejecting buyer's webhooks to fail, but none did")
	}

	// The rejecting buyer has fixed its endpoint (its faults are used up).
	// Redeliver puts one failed delivery back in the queue with the same
	// body and idempotency key (it is within its retry horizon; past it,
	// Redeliver would re-emit it under a fresh key). No pod is running: it
	// waits in Postgres until one starts.
	d := failedHere[0]
	if _, err := sup.Redeliver(ctx, d.ID); err != nil {
		return err
	}
	fmt.Printf("\nredelivering %s (%s) with no pod running, then starting one pod\n", d.ID, d.TaskID)
	id, _ := strconv.ParseInt(d.ID, 10, 64)
	stopPod := startPods(ctx, sup, 1)
	if err := waitFinished(ctx, pool, []int64{id}); err != nil {
		_ = stopPod()
		return err
	}
	if err := stopPod(); err != nil {
		return err
	}
	attempts, err := sup.Attempts(ctx, d.ID)
	if err != nil {
		return err
	}
	for _, a := range attempts {
		fmt.Printf("  attempt %d/%d  %-7s  status %d  key %s\n", a.AttemptNumber, a.MaxAttempts, a.Outcome, a.HTTPStatus, a.IdempotencyKey)
	}
	if d, err = sup.Delivery(ctx, d.ID); err != nil {
		return err
	}
	fmt.Printf("  %s is now %s; its earlier attempt rows are kept\n", d.ID, d.State)

	// Cross-check: every attempt in the table reached a buyer, signed.
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_attempts WHERE delivery_id = ANY($1)`, ids).Scan(&attemptRows); err != nil {
		return err
	}
	received, verified := 0, 0
	for _, b := range buyers {
		for _, got := range b.rcv.Deliveries() {
			received++
			if got.VerifyErr == nil {
				verified++
			}
		}
	}
	fmt.Printf("\nthe attempt table holds %d rows for this run; the buyers received %d requests, %d signed with key %s (%s) and verified\n",
		attemptRows, received, verified, key.KeyID(), key.Algorithm())
	fmt.Printf("done in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// startPods runs n RunWorker calls on sup, as n pods of one service would,
// and returns a function that stops them and waits until they have returned.
func startPods(ctx context.Context, sup *webhook.PostgresSupervisor, n int) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, n)
	for range n {
		go func() { errs <- sup.RunWorker(ctx) }()
	}
	return sync.OnceValue(func() error {
		cancel()
		var err error
		for range n {
			err = errors.Join(err, <-errs)
		}
		return err
	})
}

// waitFinished polls the delivery table until none of ids is pending or
// running, for at most finishWithin.
func waitFinished(ctx context.Context, pool *pgxpool.Pool, ids []int64) error {
	ctx, cancel := context.WithTimeoutCause(ctx, finishWithin, fmt.Errorf("not finished within %v", finishWithin))
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	open := len(ids)
	for {
		err := pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries
			WHERE id = ANY($1) AND state IN ('pending', 'running')`, ids).Scan(&open)
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("waiting for deliveries, %d of %d unfinished: %w", open, len(ids), context.Cause(ctx))
		case err != nil:
			return fmt.Errorf("waiting for deliveries: %w", err)
		case open == 0:
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

// orDash formats a nullable column, NULL as "-".
func orDash[T any](p *T) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}
