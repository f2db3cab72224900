package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/adcpkit/webhook"
)

// postgresSystem is the library's PostgresSupervisor, one RunWorker with
// Workers attempts in flight.
type postgresSystem struct {
	e   env
	sup *webhook.PostgresSupervisor
}

func (s *postgresSystem) Name() string { return "PostgresSupervisor" }

func (s *postgresSystem) Setup(ctx context.Context, e env) error {
	cfg := libPostgresConfig(e.Workers, e.EndpointLimit)
	cfg.Breaker = e.Breaker
	sup, err := webhook.NewPostgresSupervisor(e.Pool, e.Sender, cfg)
	if err != nil {
		return err
	}
	s.e, s.sup = e, sup
	return sup.CreateSchema(ctx)
}

// libPostgresConfig is the supervisor's configuration in every scenario:
// the defaults, with plain http to the loopback receiver, and an
// EndpointConcurrency of endpointLimit (0: the default).
func libPostgresConfig(workers, endpointLimit int) webhook.PostgresConfig {
	return webhook.PostgresConfig{
		AllowInsecureHTTP:   true,
		Concurrency:         workers,
		EndpointConcurrency: endpointLimit,
		Logger:              benchLogger(),
	}
}

// benchLogger discards the library's log, unless BENCH_LOG is set.
func benchLogger() *slog.Logger {
	if os.Getenv("BENCH_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (s *postgresSystem) Enqueue(ctx context.Context, items []item) error {
	return sendPrepared(ctx, s.sup, s.e.URL, items)
}

// sendPrepared accepts items through one of the library's supervisors.
func sendPrepared(ctx context.Context, sup webhook.Supervisor, url string, items []item) error {
	for _, it := range items {
		if _, err := sup.SendPrepared(ctx, webhook.PreparedWebhook{URL: it.to(url), Body: it.Body, IdempotencyKey: it.Key}); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueBulk accepts items with SendPreparedBatch, BatchMax at a time, as
// River's inserts InsertMany chunks.
func (s *postgresSystem) EnqueueBulk(ctx context.Context, items []item) error {
	return sendBatches(ctx, s.sup, s.e.URL, items)
}

func (s *postgresSystem) Start(ctx context.Context) (func(), error) {
	return runWorkers(ctx, s.sup.RunWorker), nil
}

// memorySystem is the library's MemorySupervisor: the same work without
// the database.
type memorySystem struct {
	e   env
	sup *webhook.MemorySupervisor
}

func (s *memorySystem) Name() string { return "MemorySupervisor" }

func (s *memorySystem) Setup(_ context.Context, e env) error {
	sup, err := webhook.NewMemorySupervisor(e.Sender, webhook.MemoryConfig{
		AllowInsecureHTTP:   true,
		Concurrency:         e.Workers,
		EndpointConcurrency: e.EndpointLimit,
		MaxQueued:           1 << 22,
		Breaker:             e.Breaker,
		Logger:              benchLogger(),
	})
	s.e, s.sup = e, sup
	return err
}

func (s *memorySystem) Enqueue(ctx context.Context, items []item) error {
	return sendPrepared(ctx, s.sup, s.e.URL, items)
}

func (s *memorySystem) EnqueueBulk(ctx context.Context, items []item) error {
	return sendBatches(ctx, s.sup, s.e.URL, items)
}

// sendBatches accepts items through a supervisor's SendPreparedBatch.
func sendBatches(ctx context.Context, sup webhook.Supervisor, url string, items []item) error {
	for len(items) > 0 {
		n := min(len(items), webhook.BatchMax)
		ws := make([]webhook.PreparedWebhook, n)
		for i, it := range items[:n] {
			ws[i] = webhook.PreparedWebhook{URL: it.to(url), Body: it.Body, IdempotencyKey: it.Key}
		}
		if _, err := sup.SendPreparedBatch(ctx, ws); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

func (s *memorySystem) Start(ctx context.Context) (func(), error) {
	return runWorkers(ctx, s.sup.RunWorker), nil
}

// rawHTTPSystem is the ceiling without a database: Workers goroutines
// POSTing through the same Sender, retrying at once on failure.
type rawHTTPSystem struct {
	e     env
	queue chan item
}

func (s *rawHTTPSystem) Name() string { return "raw HTTP (ceiling)" }

func (s *rawHTTPSystem) Setup(_ context.Context, e env) error {
	s.e, s.queue = e, make(chan item, 1<<16)
	return nil
}

func (s *rawHTTPSystem) Enqueue(_ context.Context, items []item) error {
	for _, it := range items {
		s.queue <- it
	}
	return nil
}

func (s *rawHTTPSystem) EnqueueBulk(ctx context.Context, items []item) error {
	return s.Enqueue(ctx, items)
}

func (s *rawHTTPSystem) Start(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range s.e.Workers {
		wg.Go(func() {
			req := new(webhook.Request)
			for {
				var it item
				select {
				case <-ctx.Done():
					return
				case it = <-s.queue:
				}
				for n := 1; ctx.Err() == nil; n++ {
					*req = webhook.Request{URL: it.to(s.e.URL), Body: it.Body, IdempotencyKey: it.Key, Attempt: n}
					if resp, err := s.e.Sender.Send(ctx, req); err == nil && resp.StatusCode/100 == 2 {
						break
					}
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }, nil
}

// minimalSQLSystem is the ceiling without HTTP: the statements a durable
// delivery needs at the least — insert, claim one row with SKIP LOCKED,
// mark it done — and nothing else.
type minimalSQLSystem struct{ e env }

func (s *minimalSQLSystem) Name() string { return "minimal SQL (ceiling)" }

func (s *minimalSQLSystem) Setup(ctx context.Context, e env) error {
	s.e = e
	_, err := e.Pool.Exec(ctx, `CREATE TABLE minimal_queue (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		idempotency_key text NOT NULL, body bytea NOT NULL, done boolean NOT NULL DEFAULT false)`)
	if err == nil {
		_, err = e.Pool.Exec(ctx, `CREATE INDEX minimal_queue_todo ON minimal_queue (id) WHERE NOT done`)
	}
	return err
}

func (s *minimalSQLSystem) Enqueue(ctx context.Context, items []item) error {
	for _, it := range items {
		if _, err := s.e.Pool.Exec(ctx, `INSERT INTO minimal_queue (idempotency_key, body) VALUES ($1, $2)`, it.Key, it.Body); err != nil {
			return err
		}
	}
	return nil
}

func (s *minimalSQLSystem) EnqueueBulk(ctx context.Context, items []item) error {
	return enqueueConcurrently(ctx, items, 16, s.Enqueue)
}

func (s *minimalSQLSystem) Start(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range min(s.e.Workers, workers) { // no HTTP to wait for: more would only contend
		wg.Go(func() {
			for ctx.Err() == nil {
				var id int64
				var key string
				err := s.e.Pool.QueryRow(ctx, `UPDATE minimal_queue SET done = true WHERE id = (
					SELECT id FROM minimal_queue WHERE NOT done ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
					RETURNING id, idempotency_key`).Scan(&id, &key)
				if err != nil {
					sleepCtx(ctx, pollIdle)
					continue
				}
				// The "completion": one more statement, as a delivery
				// records its result after the attempt.
				if _, err := s.e.Pool.Exec(ctx, `UPDATE minimal_queue SET body = body WHERE id = $1`, id); err == nil {
					s.e.Ack(key)
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }, nil
}

// minimalBatchSQLSystem is the batched ceiling without HTTP: the same
// table, filled by one array insert per thousand rows, claimed a hundred
// rows per statement and completed a claim per statement, so that the
// table shows what this Postgres can do when nothing is done one row at a
// time.
type minimalBatchSQLSystem struct{ minimalSQLSystem }

// minimalBatch is how many rows a claim of the batched ceiling takes.
const minimalBatch = 100

func (s *minimalBatchSQLSystem) Name() string { return "minimal SQL batched (ceiling)" }

func (s *minimalBatchSQLSystem) EnqueueBulk(ctx context.Context, items []item) error {
	for len(items) > 0 {
		n := min(len(items), 1000)
		keys, bodies := make([]string, n), make([][]byte, n)
		for i, it := range items[:n] {
			keys[i], bodies[i] = it.Key, it.Body
		}
		if _, err := s.e.Pool.Exec(ctx, `INSERT INTO minimal_queue (idempotency_key, body) SELECT * FROM unnest($1::text[], $2::bytea[])`,
			keys, bodies); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

func (s *minimalBatchSQLSystem) Start(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range min(s.e.Workers, 4) { // a few claimers keep the connections busy
		wg.Go(func() {
			ids, keys := make([]int64, 0, minimalBatch), make([]string, 0, minimalBatch)
			for ctx.Err() == nil {
				ids, keys = ids[:0], keys[:0]
				rows, err := s.e.Pool.Query(ctx, `UPDATE minimal_queue SET done = true WHERE id IN (
					SELECT id FROM minimal_queue WHERE NOT done ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
					RETURNING id, idempotency_key`, minimalBatch)
				if err == nil {
					for rows.Next() {
						var id int64
						var key string
						if rows.Scan(&id, &key) == nil {
							ids, keys = append(ids, id), append(keys, key)
						}
					}
					rows.Close()
					err = rows.Err()
				}
				if err != nil || len(ids) == 0 {
					sleepCtx(ctx, pollIdle)
					continue
				}
				// The completions of the whole claim, in one statement.
				if _, err := s.e.Pool.Exec(ctx, `UPDATE minimal_queue SET body = body WHERE id = ANY($1)`, ids); err == nil {
					for _, k := range keys {
						s.e.Ack(k)
					}
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }, nil
}

// runWorkers runs one RunWorker until stop.
func runWorkers(ctx context.Context, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return func() { cancel(); <-done }
}

// enqueueConcurrently calls enqueue from n goroutines over items.
func enqueueConcurrently(ctx context.Context, items []item, n int, enqueue func(context.Context, []item) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for g := range n {
		wg.Go(func() {
			for i := g; i < len(items); i += n {
				if err := enqueue(ctx, items[i:i+1]); err != nil {
					errs[g] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
