package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/adcpkit/webhook"
)

// River settings: River's own benchmark's (cmd/river bench), where its
// defaults would measure a setting rather than River, and River's defaults
// otherwise. Measured on this 2-core machine with 16 workers and bulk-loaded
// jobs, River at its defaults leaves workers idle:
//
//   - FetchCooldown 2 ms (default 100 ms). A producer fetches at most once
//     per cooldown, and only as many jobs as it has free slots, so the
//     default caps a queue at MaxWorkers × 10 jobs/s however fast the
//     receiver is: 159/s at 16 workers, against a 0 ms receiver and a 50 ms
//     one alike (4,100/s and 190/s at 2 ms).
//   - FetchPollInterval 20 ms (default 1 s). New jobs wake the producer
//     through LISTEN/NOTIFY, but slots freed while a fetch is running are
//     only refilled at the next job completion or poll, so with a 50 ms
//     receiver and the default poll a third of the workers sit idle: 190/s
//     against 290/s at 20 ms (the 16 × 20/s bound is 320/s). The poll also
//     bounds how late a short retry is picked up: River makes a job whose
//     retry is due within 5 s available at once with a future scheduled_at,
//     and an otherwise idle producer only sees it at the next poll. The
//     price is an idle client querying 50 times a second.
//   - Retries: River's default policy (attempt⁴ seconds ± 10%, 25 attempts);
//     Retry-After is not honoured (a Go team would have to add JobSnooze).
//   - Everything else (completed jobs kept 24 h, leader election and its
//     maintenance services, the batching completer) is River's default.
//
// riverSystem's fields override the two fetch settings, for experiments.
const (
	riverFetchCooldown     = 2 * time.Millisecond
	riverFetchPollInterval = 20 * time.Millisecond
	riverInsertChunk       = 1000
)

// riverArgs is one webhook as a River job. Body is []byte, which
// encoding/json stores as base64 and decodes back byte for byte; a
// json.RawMessage would not survive: River keeps args in a jsonb column,
// which normalises whitespace and key order.
type riverArgs struct {
	Key  string `json:"key"`
	Body []byte `json:"body"`
	URL  string `json:"url,omitempty"` // "": the worker's
}

func (riverArgs) Kind() string { return "webhook" }

// riverWorker POSTs a job's body through the shared Sender: 2xx completes
// the job, anything else is an error and River retries it.
type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	url    string
	sender webhook.Sender
}

func (w *riverWorker) Work(ctx context.Context, job *river.Job[riverArgs]) error {
	resp, err := w.sender.Send(ctx, &webhook.Request{
		URL:            cmp.Or(job.Args.URL, w.url),
		Body:           job.Args.Body,
		IdempotencyKey: job.Args.Key,
		Attempt:        job.Attempt,
	})
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook: HTTP %d", resp.StatusCode)
	}
	return nil
}

// riverSystem is what a Go team would write instead of the library: River
// with one queue of e.Workers workers and a job that POSTs the prepared
// body.
type riverSystem struct {
	// FetchCooldown and FetchPollInterval, when set, override
	// riverFetchCooldown and riverFetchPollInterval.
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration

	client *river.Client[pgx.Tx]
}

func (s *riverSystem) Name() string { return "river" }

func (s *riverSystem) Setup(ctx context.Context, e env) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	driver := riverpgxv5.New(e.Pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: quiet})
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river: migrate: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &riverWorker{url: e.URL, sender: e.Sender})
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown:     cmp.Or(s.FetchCooldown, riverFetchCooldown),
		FetchPollInterval: cmp.Or(s.FetchPollInterval, riverFetchPollInterval),
		Logger:            quiet,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: e.Workers}},
		Workers:           workers,
	})
	if err != nil {
		return err
	}
	s.client = client
	return nil
}

// Enqueue inserts one job per item, each in its own statement, as a request
// handler would.
func (s *riverSystem) Enqueue(ctx context.Context, items []item) error {
	for _, it := range items {
		if _, err := s.client.Insert(ctx, riverArgs{Key: it.Key, Body: it.Body, URL: it.URL}, nil); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueBulk inserts with InsertMany, riverInsertChunk jobs at a time.
func (s *riverSystem) EnqueueBulk(ctx context.Context, items []item) error {
	params := make([]river.InsertManyParams, 0, min(len(items), riverInsertChunk))
	for len(items) > 0 {
		n := min(len(items), riverInsertChunk)
		params = params[:0]
		for _, it := range items[:n] {
			params = append(params, river.InsertManyParams{Args: riverArgs{Key: it.Key, Body: it.Body, URL: it.URL}})
		}
		if _, err := s.client.InsertMany(ctx, params); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// Start starts the client; stop is River's graceful Stop, which waits for
// running jobs to finish (and cancels them if that takes over a minute).
func (s *riverSystem) Start(ctx context.Context) (func(), error) {
	if err := s.client.Start(ctx); err != nil {
		return nil, err
	}
	return func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if s.client.Stop(stopCtx) != nil {
			hardCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = s.client.StopAndCancel(hardCtx)
		}
	}, nil
}
