package webhook_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/webhooktest"
)

// newPostgresOn builds a PostgresSupervisor on pool with the suite's config
// and creates its schema.
func newPostgresOn(t *testing.T, pool *pgxpool.Pool, cfg suiteConfig, pc webhook.PostgresConfig) *webhook.PostgresSupervisor {
	t.Helper()
	pc.Retry, pc.Breaker, pc.LogSink, pc.Clock, pc.Logger, pc.Observer = cfg.Retry, cfg.Breaker, cfg.Sink, cfg.Clock, cfg.Logger, cfg.Observer
	pc.Concurrency = cmp.Or(cfg.Concurrency, pc.Concurrency)
	pc.EndpointConcurrency = cmp.Or(cfg.EndpointConcurrency, pc.EndpointConcurrency)
	s, err := webhook.NewPostgresSupervisor(pool, cfg.Sender, pc)
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(context.Background()))
	return s
}

func newPostgres(t *testing.T, cfg suiteConfig) webhook.Supervisor {
	t.Helper()
	return newPostgresOn(t, pgtest.New(t), cfg, webhook.PostgresConfig{})
}

func TestPostgresSupervisor(t *testing.T) {
	t.Parallel()
	runSupervisorSuite(t, newPostgres)
}

// pgEnv is one Postgres test's world: a fresh database, the suite's
// scripted sender, recording sink and fake clock, and a supervisor
// factory, so that several "processes" can share the tables.
type pgEnv struct {
	*env
	pool *pgxpool.Pool
	pg   *webhook.PostgresSupervisor
	cfg  suiteConfig
	pc   webhook.PostgresConfig
}

func newPgEnv(t *testing.T, pc webhook.PostgresConfig, opts ...envOption) *pgEnv {
	t.Helper()
	pe := &pgEnv{pool: pgtest.New(t), pc: pc}
	pe.env = newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		pe.cfg = cfg
		pe.pg = newPostgresOn(t, pe.pool, cfg, pc)
		return pe.pg
	}, opts...)
	return pe
}

// another returns a second supervisor on the same tables, as another
// process would have.
func (pe *pgEnv) another() *webhook.PostgresSupervisor {
	return newPostgresOn(pe.t, pe.pool, pe.cfg, pe.pc)
}

// runWorker runs s's RunWorker until stop is called or the test ends.
func runWorker(t *testing.T, s webhook.Supervisor) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(guard):
				t.Error("RunWorker did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (pe *pgEnv) count(sql string, args ...any) int {
	pe.t.Helper()
	var n int
	require.NoError(pe.t, pe.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func TestPostgresManyWorkersDeliverEachOnce(t *testing.T) {
	t.Parallel()
	recv := webhooktest.NewReceiver(webhooktest.Config{})
	t.Cleanup(recv.Close)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	require.NoError(t, err)
	pool := pgtest.New(t)
	cfg := suiteConfig{Sender: sender, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	pc := webhook.PostgresConfig{AllowInsecureHTTP: true, Concurrency: 4, ClaimBatch: 3}
	// Three "processes", each with two RunWorker calls.
	var sups []*webhook.PostgresSupervisor
	for range 3 {
		s := newPostgresOn(t, pool, cfg, pc)
		sups = append(sups, s)
		runWorker(t, s)
		runWorker(t, s)
	}
	const m = 300
	keys := make(chan string, m)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := range m / 6 {
				r, err := sups[(g+i)%3].SendMCP(context.Background(), mcp(recv.URL, fmt.Sprintf("t%d_%d", g, i)))
				require.NoError(t, err)
				keys <- r.IdempotencyKey
			}
		})
	}
	wg.Wait()
	close(keys)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	got, err := recv.WaitFor(ctx, m)
	require.NoError(t, err)
	seen := map[string]int{}
	for _, d := range got {
		seen[d.IdempotencyKey]++
	}
	for k := range keys {
		require.Equal(t, 1, seen[k], "key %s", k)
	}
	require.Len(t, recv.Deliveries(), m, "no duplicate attempts")
	var delivered int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries WHERE state = 'delivered'`).Scan(&delivered))
	for delivered < m { // the last completions may still be committing
		require.NoError(t, ctx.Err())
		time.Sleep(10 * time.Millisecond)
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries WHERE state = 'delivered'`).Scan(&delivered))
	}
}

func TestPostgresAbandonedLeaseIsRedeliveredAndFenced(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{LeaseDuration: time.Minute})
	gate := make(chan struct{})
	url := "https://buyer.example/hook"
	pe.sender.on(url, step{status: 200, gate: gate}) // worker A's attempt hangs
	stopA := runWorker(t, pe.sup)
	r := pe.sendMCP(mcp(url, "t1"))
	pe.waitSent(1)

	// Worker A is presumed dead once its lease expires; B claims the
	// delivery again and delivers the same bytes under the same key.
	pe.clock.Advance(time.Minute)
	b := pe.another()
	runWorker(t, b)
	reqs := pe.waitSent(2)
	require.Equal(t, r.IdempotencyKey, reqs[1].Key)
	require.Equal(t, reqs[0].Body, reqs[1].Body)
	a := pe.attempts(1)[0]
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome)

	// A finally returns; its late result is fenced off.
	close(gate)
	stopA()
	require.Contains(t, pe.logs.String(), "lease lost")
	as, err := pe.pg.Attempts(context.Background(), r.ID)
	require.NoError(t, err)
	require.Len(t, as, 1, "the stale worker wrote no attempt row")
	d, err := pe.pg.Delivery(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	require.Equal(t, 1, d.Attempts)
}

func TestPostgresHalfOpenClosesOnce(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 1, HalfOpenProbes: 2, OpenTimeout: time.Minute}
	})
	url := "https://buyer.example/recovering"
	gate := make(chan struct{})
	pe.sender.on(url, step{status: 503}, step{status: 200, gate: gate}, step{status: 200, gate: gate})
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "t0"))
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome)
	for i := range 4 {
		pe.sendMCP(mcp(url, fmt.Sprint("t", i+1)))
	}
	// Half-open: exactly two probes in flight, both succeed at once.
	pe.clock.Advance(time.Minute)
	reqs := pe.waitSent(3)
	require.Equal(t, 2, reqs[2].InFlightURL)
	close(gate)
	as := pe.attempts(4)
	for _, a := range as {
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
	}
	for _, r := range pe.sender.sent()[1:3] {
		require.LessOrEqual(t, r.InFlightURL, 2, "half-open admits at most HalfOpenProbes")
	}
	require.Equal(t, 1, strings.Count(pe.logs.String(), "circuit breaker closed"), pe.logs.String())
	st, err := pe.pg.Breaker(context.Background(), url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, st)
}

func TestPostgresSendMCPTx(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	runWorker(t, pe.sup)

	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = pe.pg.SendMCPTx(ctx, tx, mcp("https://buyer.example/hook", "rolled_back"))
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))

	tx, err = pe.pool.Begin(ctx)
	require.NoError(t, err)
	w := mcp("https://buyer.example/hook", "committed")
	w.SequenceKey = "buyer-1"
	r, err := pe.pg.SendMCPTx(ctx, tx, w)
	require.NoError(t, err)
	require.Equal(t, int64(1), r.Sequence)
	require.Zero(t, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`), "invisible until commit")
	require.NoError(t, tx.Commit(ctx))

	a := pe.attempts(1)[0]
	require.Equal(t, r.ID, a.DeliveryID)
	require.Equal(t, "committed", a.TaskID)
	require.Len(t, pe.sender.sent(), 1)
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`))
}

func TestPostgresFinalFailureIsKeptAndRedelivered(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	url := "https://buyer.example/down"
	pe.sender.on(url, step{status: 500, body: "boom"}, step{status: 500}, step{status: 500, body: "still down"})
	runWorker(t, pe.sup)
	r := pe.sendMCP(mcp(url, "t1"))
	pe.deliverAll(1)

	d, err := pe.pg.Delivery(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State, "a final failure is kept, not deleted")
	require.Equal(t, 3, d.Attempts)
	require.Equal(t, "HTTP 500 Internal Server Error", d.LastError)
	require.Equal(t, 500, d.LastStatus)
	require.False(t, d.FinishedAt.IsZero())
	failed, err := pe.pg.Deliveries(ctx, webhook.DeliveryFilter{State: webhook.StateFailed}, webhook.Page{})
	require.NoError(t, err)
	require.Len(t, failed.Deliveries, 1)
	require.Equal(t, r.ID, failed.Deliveries[0].ID)
	as, err := pe.pg.Attempts(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, []webhook.Outcome{webhook.OutcomeFailure, webhook.OutcomeFailure, webhook.OutcomeFailure}, outcomes(as))
	require.Equal(t, "HTTP 500 Internal Server Error", as[0].Error)
	require.Equal(t, []bool{true, true, false}, willRetry(as))

	_, err = pe.pg.Redeliver(ctx, "999999")
	require.ErrorIs(t, err, webhook.ErrNotFound)
	_, err = pe.pg.Redeliver(ctx, r.ID)
	require.NoError(t, err)
	a := pe.attempts(1)[0]
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
	require.Equal(t, 1, a.AttemptNumber, "a redelivery starts a fresh allowance of attempts")
	reqs := pe.sender.sent()
	require.Len(t, reqs, 4)
	require.Equal(t, reqs[0].Body, reqs[3].Body)
	require.Equal(t, r.IdempotencyKey, reqs[3].Key)
	d, err = pe.pg.Delivery(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	_, err = pe.pg.Redeliver(ctx, r.ID)
	require.ErrorIs(t, err, webhook.ErrNotFailed)
	as, err = pe.pg.Attempts(ctx, r.ID)
	require.NoError(t, err)
	require.Len(t, as, 4, "earlier attempts are kept")
}

func TestPostgresRetention(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Retention: 48 * time.Hour}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenAction: webhook.OpenDrop}
	})
	ctx := context.Background()
	url := "https://buyer.example/hook"
	pe.sender.on(url, step{status: 400})
	stop := runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "failed"))
	pe.sendMCP(mcp(url, "delivered"))
	pe.attempts(2)
	stop()
	pending := pe.sendMCP(mcp(url, "pending")) // no worker runs
	require.Equal(t, 3, pe.count(`SELECT count(*) FROM adcp_webhook_attempts`)+1)

	n, err := pe.pg.Purge(ctx, pe.clock.Now().Add(-48*time.Hour))
	require.NoError(t, err)
	require.Zero(t, n, "nothing is older than two days yet")

	// 49 hours on, a worker starting up purges the finished rows and
	// their attempt rows; the pending delivery stays and is delivered.
	pe.clock.Advance(49 * time.Hour)
	runWorker(t, pe.another())
	require.Equal(t, pending.ID, pe.attempts(1)[0].DeliveryID)
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE task_id <> 'pending'`) == 0
	}, guard, 10*time.Millisecond)
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`))
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*) FROM adcp_webhook_attempts`) == 1
	}, guard, 10*time.Millisecond)
}

func TestPostgresSequencesContiguousUnderConcurrency(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	const goroutines, each = 8, 40
	got := make(chan int64, goroutines*each)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				w := mcp("https://buyer.example/hook", fmt.Sprintf("t%d_%d", g, i))
				w.SequenceKey = "buyer-1"
				r, err := pe.sup.SendMCP(context.Background(), w)
				require.NoError(t, err)
				got <- r.Sequence
			}
		})
	}
	wg.Wait()
	close(got)
	var seqs []int64
	for n := range got {
		seqs = append(seqs, n)
	}
	slices.Sort(seqs)
	for i, n := range seqs {
		require.Equal(t, int64(i+1), n)
	}
	n, err := pe.pg.NextSequence(context.Background(), "buyer-1")
	require.NoError(t, err)
	require.Equal(t, int64(goroutines*each+1), n)
}

func TestPostgresCreateSchemaIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- s.CreateSchema(context.Background()) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, s.CreateSchema(context.Background()))
	var tables int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'adcp_webhook_%'`).Scan(&tables))
	require.Equal(t, 5, tables, "four and the schema version table")
	v, err := s.SchemaVersion(context.Background())
	require.NoError(t, err)
	require.Equal(t, webhook.SchemaVersion, v)
}

func TestPostgresTableNameOverrides(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 63)
	tables := webhook.PostgresTables{Deliveries: long, Attempts: "seller_attempt_log", Breakers: "seller_breakers", Sequences: "seller_seqs"}
	pe := newPgEnv(t, webhook.PostgresConfig{Tables: tables}, func(c *suiteConfig) {
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1}
	})
	url := "https://buyer.example/hook"
	pe.sender.on(url, step{status: 503})
	runWorker(t, pe.sup)
	w := mcp(url, "t1")
	w.SequenceKey = "k"
	r := pe.sendMCP(w)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(pe.logs.String())
		}
	})
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome)
	pe.clock.Advance(webhook.OpenTimeoutDefault) // the breaker opened
	require.Equal(t, webhook.OutcomeSuccess, pe.attempts(1)[0].Outcome)
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM `+long+` WHERE id = $1 AND state = 'delivered'`, r.ID))
	require.Equal(t, 2, pe.count(`SELECT count(*) FROM seller_attempt_log`))
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM seller_breakers`))
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM seller_seqs`))
	require.Zero(t, pe.count(`SELECT count(*) FROM pg_tables WHERE tablename LIKE 'adcp_webhook_%'`))
	// Every index was created under its own name, none truncated away.
	require.Equal(t, 10, pe.count(`SELECT count(*) FROM pg_indexes WHERE tablename = $1`, long), "the primary key and nine indexes")
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM pg_tables WHERE tablename LIKE 'xxx%schema_version'`), "the version table, named after the deliveries table")
}

func TestNewPostgresSupervisorRejectsBadInput(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://localhost:1/none") // never connects
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = webhook.NewPostgresSupervisor(nil, newScriptedSender(), webhook.PostgresConfig{})
	require.ErrorIs(t, err, webhook.ErrInvalidConfig)
	var nilPool *pgxpool.Pool
	_, err = webhook.NewPostgresSupervisor(nilPool, newScriptedSender(), webhook.PostgresConfig{})
	require.ErrorIs(t, err, webhook.ErrInvalidConfig)
	_, err = webhook.NewPostgresSupervisor(pool, (*webhook.HTTPSender)(nil), webhook.PostgresConfig{})
	require.ErrorIs(t, err, webhook.ErrNilSender)
	for name, tc := range map[string]struct {
		cfg   webhook.PostgresConfig
		field string
	}{
		"non-ASCII":   {webhook.PostgresConfig{Tables: webhook.PostgresTables{Deliveries: "adcp_wébhook"}}, "PostgresConfig.Tables.Deliveries"},
		"punctuated":  {webhook.PostgresConfig{Tables: webhook.PostgresTables{Attempts: "bad-name!"}}, "PostgresConfig.Tables.Attempts"},
		"upper case":  {webhook.PostgresConfig{Tables: webhook.PostgresTables{Breakers: "Breakers"}}, "PostgresConfig.Tables.Breakers"},
		"too long":    {webhook.PostgresConfig{Tables: webhook.PostgresTables{Sequences: strings.Repeat("s", 64)}}, "PostgresConfig.Tables.Sequences"},
		"digit first": {webhook.PostgresConfig{Tables: webhook.PostgresTables{Deliveries: "1st"}}, "PostgresConfig.Tables.Deliveries"},
		"duplicate":   {webhook.PostgresConfig{Tables: webhook.PostgresTables{Attempts: "same", Breakers: "same"}}, "PostgresConfig.Tables.Breakers"},
		"lease":       {webhook.PostgresConfig{LeaseDuration: time.Second}, "PostgresConfig.LeaseDuration"},
		"concurrency": {webhook.PostgresConfig{Concurrency: -1}, "PostgresConfig.Concurrency"},
		"endpoint":    {webhook.PostgresConfig{EndpointConcurrency: -3}, "PostgresConfig.EndpointConcurrency"},
		"retry":       {webhook.PostgresConfig{Retry: webhook.RetryPolicy{MaxAttempts: -2}}, "PostgresConfig.Retry.MaxAttempts"},
		// The attempt columns are integer: a larger limit could never be
		// written, and every completion would fail.
		"attempts past integer":   {webhook.PostgresConfig{Retry: webhook.RetryPolicy{MaxAttempts: 1 << 31}}, "PostgresConfig.Retry.MaxAttempts"},
		"until no horizon":        {webhook.PostgresConfig{Retry: webhook.RetryPolicy{MaxAttempts: webhook.MaxAttemptsUntilHorizon, Horizon: webhook.NoHorizon}}, "PostgresConfig.Retry.Horizon"},
		"horizon below AdCP's":    {webhook.PostgresConfig{Retry: webhook.RetryPolicy{Horizon: time.Hour}}, "PostgresConfig.Retry.Horizon"},
		"retention below horizon": {webhook.PostgresConfig{Retention: 12 * time.Hour}, "PostgresConfig.Retention"},
		"reserved word":           {webhook.PostgresConfig{Tables: webhook.PostgresTables{Deliveries: "order"}}, "PostgresConfig.Tables.Deliveries"},
		"reserved word too":       {webhook.PostgresConfig{Tables: webhook.PostgresTables{Sequences: "user"}}, "PostgresConfig.Tables.Sequences"},
	} {
		_, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), tc.cfg)
		var ce *webhook.ConfigError
		require.ErrorAs(t, err, &ce, name)
		require.Equal(t, tc.field, ce.Field, name)
	}
	// A pool that cannot say how it connects needs PollOnly.
	_, err = webhook.NewPostgresSupervisor(struct{ webhook.PostgresPool }{pool}, newScriptedSender(), webhook.PostgresConfig{})
	require.ErrorIs(t, err, webhook.ErrInvalidConfig)
	_, err = webhook.NewPostgresSupervisor(struct{ webhook.PostgresPool }{pool}, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
}

func TestPostgresDropRefusalStoresNothing(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenAction: webhook.OpenDrop}
	})
	url := "https://buyer.example/dead"
	pe.sender.on(url, step{status: 503})
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "t1"))
	pe.attempts(1)
	w := mcp(url, "t2")
	w.SequenceKey = "s"
	_, err := pe.sup.SendMCP(context.Background(), w)
	require.ErrorIs(t, err, webhook.ErrCircuitOpen)
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`))
	require.Zero(t, pe.count(`SELECT count(*) FROM adcp_webhook_sequences`))
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM adcp_webhook_attempts WHERE delivery_id IS NULL AND outcome = 'circuit_open' AND task_id = 't2'`))
}

func TestPostgresPollOnly(t *testing.T) {
	t.Parallel()
	// A pool that cannot open a LISTEN connection (no Config method), as
	// behind PgBouncer: delivery must come from polling alone.
	pool := pgtest.New(t)
	e := newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		s, err := webhook.NewPostgresSupervisor(struct{ webhook.PostgresPool }{pool}, cfg.Sender, webhook.PostgresConfig{
			PollOnly: true, PollInterval: 20 * time.Millisecond,
			Retry: cfg.Retry, LogSink: cfg.Sink, Clock: cfg.Clock, Logger: cfg.Logger,
		})
		require.NoError(t, err)
		require.NoError(t, s.CreateSchema(context.Background()))
		return s
	})
	e.startWorker()
	r := e.sendMCP(mcp("https://buyer.example/hook", "t1"))
	require.Equal(t, r.ID, e.attempts(1)[0].DeliveryID)
}

func TestPostgresSurvivesRestart(t *testing.T) {
	// Not parallel: it restarts the server every Postgres test shares.
	recv := webhooktest.NewReceiver(webhooktest.Config{})
	t.Cleanup(recv.Close)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	require.NoError(t, err)
	pool := pgtest.New(t)
	logs := &syncBuffer{}
	cfg := suiteConfig{Sender: sender, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	s := newPostgresOn(t, pool, cfg, webhook.PostgresConfig{AllowInsecureHTTP: true, Concurrency: 4})
	runWorker(t, s)
	runWorker(t, s)
	ctx := context.Background()
	var accepted []string
	send := func(i int) {
		if r, err := s.SendMCP(ctx, mcp(recv.URL, fmt.Sprint("t", i))); err == nil {
			accepted = append(accepted, r.IdempotencyKey)
		}
	}
	for i := range 100 {
		send(i)
	}
	pgtest.Restart(t)
	for i := 100; i < 200; i++ {
		send(i)
	}
	require.GreaterOrEqual(t, len(accepted), 100)
	wctx, cancel := context.WithTimeout(ctx, 2*guard)
	defer cancel()
	for {
		seen := map[string]bool{}
		for _, d := range recv.Deliveries() {
			seen[d.IdempotencyKey] = true
		}
		missing := 0
		for _, k := range accepted {
			if !seen[k] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		require.NoError(t, wctx.Err(), "%d of %d accepted webhooks never arrived; logs:\n%s", missing, len(accepted), logs.String())
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPostgresDrainTimeoutCancelsStuckAttempts(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{DrainTimeout: 10 * time.Millisecond}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1}
	})
	url := "https://buyer.example/hangs"
	pe.sender.on(url, step{status: 200, gate: make(chan struct{})}) // never opens
	stop := runWorker(t, pe.sup)
	r := pe.sendMCP(mcp(url, "t1"))
	pe.waitSent(1)
	stop()
	a := pe.attempts(1)[0]
	require.Equal(t, webhook.OutcomeFailure, a.Outcome)
	require.True(t, a.WillRetry, "a cancelled attempt is retried later")
	require.Contains(t, a.Error, "not charged")
	ctx := context.Background()
	d, err := pe.pg.Delivery(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StatePending, d.State)
	require.Zero(t, d.Attempts, "the cancelled attempt is not charged, even the last one allowed")
	st, err := pe.pg.Breaker(ctx, url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, st, "the worker's own cancellation is not the endpoint's failure")

	runWorker(t, pe.another())
	a = pe.attempts(1)[0]
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
	require.Equal(t, 1, a.AttemptNumber)
	require.Equal(t, r.IdempotencyKey, pe.sender.sent()[1].Key)
}

func TestPostgresHorizonCheckedWhenAttemptStarts(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry = webhook.RetryPolicy{MaxAttempts: 5, BaseDelay: 16 * time.Hour, MaxDelay: 16 * time.Hour, Horizon: 24 * time.Hour, NoJitter: true}
	})
	require.Equal(t, 24*time.Hour, pe.sup.DeliveryRetryHorizon())
	require.True(t, pe.sup.DeliveryStateIsDurable())
	url := "https://buyer.example/down"
	pe.sender.on(url, step{status: 500})
	stop := runWorker(t, pe.sup)
	r := pe.sendMCP(mcp(url, "t1"))
	first := pe.attempts(1)[0]
	require.Equal(t, epoch.Add(16*time.Hour), first.NextRetryAt, "due within the horizon")
	stop()

	pe.clock.Set(epoch.Add(48 * time.Hour)) // no worker ran until past the horizon
	runWorker(t, pe.another())
	a := pe.attempts(1)[0]
	require.Equal(t, r.ID, a.DeliveryID)
	require.Equal(t, webhook.OutcomeFailure, a.Outcome)
	require.Zero(t, a.AttemptNumber, "nothing was sent")
	require.Contains(t, a.Error, "horizon")
	require.Len(t, pe.sender.sent(), 1)
	d, err := pe.pg.Delivery(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
	require.Equal(t, 1, d.Attempts)
	require.Contains(t, d.LastError, "horizon")
}

func TestPostgresWaitingForAWorkerRenewsTheLease(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second // the shortest allowed
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 1, ClaimBatch: 4, LeaseDuration: lease}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
	})
	url := "https://buyer.example/slow-then-fast"
	slow1, slow2 := make(chan struct{}), make(chan struct{})
	pe.sender.on(url, step{status: 200, gate: slow1}, step{status: 200, gate: slow2})
	runWorker(t, pe.sup)
	for i := range 4 {
		pe.sendMCP(mcp(url, fmt.Sprint("t", i)))
	}
	// Two slow attempts hold the only worker while the other two
	// deliveries wait, claimed, for most of the lease. (The slow ones may
	// run out of their own half lease on a busy machine; that is not what
	// this test is about.)
	pe.waitSent(1)
	time.Sleep(lease * 7 / 16)
	close(slow1)
	pe.waitSent(2)
	time.Sleep(lease * 7 / 16)
	close(slow2)
	byKey := map[string]webhook.Attempt{}
	for _, a := range pe.attempts(4) {
		byKey[a.IdempotencyKey] = a
	}
	require.Len(t, pe.sender.sent(), 4, "every delivery was sent")
	for _, req := range pe.sender.sent()[2:] {
		a := byKey[req.Key]
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome, "a delivery that waited for a worker still gets its full attempt: %+v", a)
	}
}

func TestPostgresSuccessesResetFailuresUnderConcurrency(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 3}
	})
	url := "https://buyer.example/flaky"
	var gates []chan struct{}
	for i := range 6 {
		g := make(chan struct{})
		gates = append(gates, g)
		status := 200
		if i%2 == 1 {
			status = 503
		}
		pe.sender.on(url, step{status: status, gate: g})
	}
	runWorker(t, pe.sup)
	for i := range 6 {
		pe.sendMCP(mcp(url, fmt.Sprint("t", i)))
	}
	pe.waitSent(6) // all six claimed while the breaker was clean
	var got []webhook.Outcome
	for _, g := range gates {
		close(g)
		got = append(got, pe.attempts(1)[0].Outcome)
	}
	require.Equal(t, []webhook.Outcome{webhook.OutcomeSuccess, webhook.OutcomeFailure, webhook.OutcomeSuccess,
		webhook.OutcomeFailure, webhook.OutcomeSuccess, webhook.OutcomeFailure}, got)
	st, err := pe.pg.Breaker(context.Background(), url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, st, "never three failures in a row")
}

// Concurrent failures to one endpoint from several processes each count
// exactly once: every completion persists the gate only at the version it
// computed from, and decides again when another got there first.
func TestPostgresConcurrentFailuresEachCountOnce(t *testing.T) {
	t.Parallel()
	const n = 120
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 32}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 10 * n} // stays closed: only counts
		c.Sink = nil
	})
	url := "https://buyer.example/down"
	for range n {
		pe.sender.on(url, step{status: 503})
	}
	for i := range n {
		pe.sendMCP(mcp(url, fmt.Sprint("t", i)))
	}
	// Three processes race for the same gate row.
	runWorker(t, pe.sup)
	runWorker(t, pe.another())
	runWorker(t, pe.another())
	pe.waitSent(n)
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE state = 'failed'`) == n
	}, guard, 10*time.Millisecond)
	require.Equal(t, n, pe.count(`SELECT failures FROM adcp_webhook_breakers WHERE breaker_key = $1`, url),
		"every failure counted once: none lost to a race, none counted twice")
	require.LessOrEqual(t, pe.count(`SELECT version FROM adcp_webhook_breakers WHERE breaker_key = $1`, url), n,
		"at most one gate write per failure (a batch writes its failures' count at once)")
}

// oldGateTable is the breakers table as releases before the persisted gate
// created it.
const oldGateTable = `
CREATE TABLE adcp_webhook_breakers (
    breaker_key text PRIMARY KEY,
    state       text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures    integer NOT NULL DEFAULT 0,
    successes   integer NOT NULL DEFAULT 0,
    opened_at   timestamptz,
    period      bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX adcp_webhook_breakers_tripped_idx ON adcp_webhook_breakers (opened_at) WHERE state <> 'closed';`

// A breakers table from before the gate kept retry_at and version is
// upgraded by CreateSchema; an open gate in it half-opens OpenTimeout after
// it opened, as before.
func TestPostgresCreateSchemaUpgradesTheGateTable(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	opened := epoch.Add(-time.Hour)
	_, err := pool.Exec(ctx, oldGateTable+`
INSERT INTO adcp_webhook_breakers (breaker_key, state, failures, opened_at, updated_at)
VALUES ('https://buyer.example/dead', 'open', 0, '`+opened.Format(time.RFC3339)+`', now());`)
	require.NoError(t, err)
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{Clock: fakeclock.New(epoch)})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	require.NoError(t, s.CreateSchema(ctx), "idempotent once upgraded")
	var retryAt *time.Time
	var version int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT retry_at, version FROM adcp_webhook_breakers`).Scan(&retryAt, &version))
	require.Nil(t, retryAt, "an open gate of the old layout keeps its timing: OpenTimeout after it opened")
	require.Equal(t, int64(1), version, "rows start at version 1: 0 means no row")
	var oldIndex *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('adcp_webhook_breakers_tripped_idx')::text`).Scan(&oldIndex))
	require.Nil(t, oldIndex, "the old index is dropped")
	st, err := s.Breaker(ctx, "https://buyer.example/dead")
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerHalfOpen, st)
}

// CreateSchema on a current schema takes no table lock: a process that
// starts while others write (here: a transaction holding a row lock on
// every table) is not held up, and cannot deadlock with them.
func TestPostgresCreateSchemaLeavesACurrentSchemaAlone(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	for _, sql := range []string{
		`INSERT INTO adcp_webhook_breakers (breaker_key, updated_at) VALUES ('k', now())`,
		`INSERT INTO adcp_webhook_sequences (sequence_key, last_value) VALUES ('k', 1)`,
		`INSERT INTO adcp_webhook_attempts (attempt_number, max_attempts, outcome, response_time_us, occurred_at,
			will_retry, url, breaker_key, idempotency_key, payload_size) VALUES (0, 1, 'circuit_open', 0, now(), false, 'u', 'k', 'whk_0123456789abcdef', 0)`,
	} {
		_, err := tx.Exec(ctx, sql)
		require.NoError(t, err)
	}
	pe.sendMCP(mcp("https://buyer.example/hook", "t1")) // a committed row; now lock it
	_, err = tx.Exec(ctx, `UPDATE adcp_webhook_deliveries SET attempts = attempts`)
	require.NoError(t, err)

	other, err := webhook.NewPostgresSupervisor(pe.pool, pe.cfg.Sender, webhook.PostgresConfig{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- other.CreateSchema(ctx) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(guard):
		require.NoError(t, tx.Rollback(ctx))
		<-done
		t.Fatal("CreateSchema waited for the writers' locks")
	}
}

// Deliveries claimed but not yet started when RunWorker's context ends are
// given back, not attempted: RunWorker starts no new attempt once asked to
// stop.
func TestPostgresStopStartsNoClaimedAttempt(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 1, ClaimBatch: 4})
	url := "https://buyer.example/slow"
	gate := make(chan struct{})
	pe.sender.on(url, step{status: 200, gate: gate})
	var ids []string
	for i := range 4 {
		ids = append(ids, pe.sendMCP(mcp(url, fmt.Sprint("t", i))).ID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pe.sup.RunWorker(ctx) }()
	pe.waitSent(1) // one in flight, the others claimed with it and waiting
	cancel()
	close(gate)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(guard):
		t.Fatal("RunWorker did not return")
	}
	require.Equal(t, 1, len(pe.sender.sent()), "an attempt started after RunWorker was asked to stop")
	pending := 0
	for _, id := range ids {
		d, err := pe.pg.Delivery(context.Background(), id)
		require.NoError(t, err)
		if d.State == webhook.StatePending {
			pending++
			require.Zero(t, d.Attempts)
		}
	}
	require.Equal(t, 3, pending, "the three not started are pending again, uncharged")
}

// The table names refused as reserved are exactly those this Postgres
// refuses unquoted.
func TestPostgresReservedWordsAreTheServers(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	rows, err := pool.Query(context.Background(), `SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T') ORDER BY word`)
	require.NoError(t, err)
	words, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.ElementsMatch(t, words, webhook.ReservedWords)
}

// Deliveries claimed ahead of the workers are not sent once their breaker
// has opened: they go back to pending, uncharged, due when it half-opens.
func TestPostgresClaimedAheadRespectABreakerThatOpened(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 1, ClaimBatch: 4}, func(c *suiteConfig) {
		c.Breaker.FailureThreshold = 1
	})
	url := "https://buyer.example/down"
	gate := make(chan struct{})
	pe.sender.on(url, step{status: 503, gate: gate}, step{status: 503}, step{status: 503}, step{status: 503})
	for i := range 4 {
		pe.sendMCP(mcp(url, fmt.Sprint("t", i)))
	}
	pe.startWorker()
	pe.waitSent(1) // one in flight, the other three claimed with it and waiting
	close(gate)
	a := pe.attempts(1)[0]
	require.Equal(t, webhook.OutcomeFailure, a.Outcome)
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE state = 'pending' AND attempts = 0
			AND due_at >= $1`, epoch.Add(time.Minute)) == 3
	}, guard, 10*time.Millisecond, "the three claimed with it are given back, uncharged, until the breaker half-opens")
	require.Len(t, pe.sender.sent(), 1, "sent after the breaker opened")
}

// A delivery whose attempts keep being lost (its worker dies inside Send,
// say) is not sent forever: a claim that takes a running row under a live
// claim's token counts a lost attempt, and after MaxLostAttempts the
// delivery fails without another send. A held retry's row (negative token:
// its result was written) is no lost attempt.
func TestPostgresLostAttemptsAreBounded(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{MaxLostAttempts: 3})
	url := "https://buyer.example/poison"
	// As a worker that died mid-attempt leaves them: running, under its
	// token, the lease expired; two of them already lost before.
	dead := pe.sendMCP(mcp(url, "dead"))
	held := pe.sendMCP(mcp(url, "held"))
	once := pe.sendMCP(mcp(url, "once"))
	for id, row := range map[string]struct{ token, lost int }{dead.ID: {42, 2}, held.ID: {-42, 2}, once.ID: {42, 1}} {
		_, err := pe.pool.Exec(context.Background(), `UPDATE adcp_webhook_deliveries
			SET state = 'running', lease_token = $2, lost_attempts = $3, due_at = $4 WHERE id = $1`,
			id, row.token, row.lost, epoch.Add(-time.Second))
		require.NoError(t, err)
	}
	pe.startWorker()
	byID := map[string]webhook.Attempt{}
	for _, a := range pe.attempts(3) {
		byID[a.DeliveryID] = a
	}
	require.Zero(t, byID[dead.ID].AttemptNumber, "failed without a send")
	require.Equal(t, webhook.OutcomeFailure, byID[dead.ID].Outcome)
	require.Contains(t, byID[dead.ID].Error, "3 attempts were lost")
	require.Contains(t, byID[dead.ID].Error, "MaxLostAttempts")
	d, err := pe.pg.Delivery(context.Background(), dead.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
	require.Contains(t, d.LastError, "attempts were lost")

	require.Equal(t, webhook.OutcomeSuccess, byID[held.ID].Outcome, "a held row is no lost attempt")
	require.Equal(t, webhook.OutcomeSuccess, byID[once.ID].Outcome, "two lost attempts are within the bound")
	require.Len(t, pe.sender.sent(), 2)
	require.Equal(t, 2, pe.count(`SELECT lost_attempts FROM adcp_webhook_deliveries WHERE id = $1`, held.ID))
	require.Equal(t, 2, pe.count(`SELECT lost_attempts FROM adcp_webhook_deliveries WHERE id = $1`, once.ID))
}

// Tables from before lost_attempts and AdCP 3.2's columns (and before
// migrations were numbered: no version table) gain them, and CreateSchema
// then sees the schema as current.
func TestPostgresCreateSchemaUpgradesTheDeliveriesTable(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	_, err = pool.Exec(ctx, `ALTER TABLE adcp_webhook_deliveries DROP COLUMN lost_attempts, DROP COLUMN mcp_body,
		DROP COLUMN payload_sha256, DROP COLUMN reemission_of, DROP COLUMN reemitted_as, DROP COLUMN notification_id,
		DROP COLUMN subscriber_id;
	ALTER TABLE adcp_webhook_attempts DROP COLUMN reemission_of, DROP COLUMN notification_id, DROP COLUMN subscriber_id,
		DROP COLUMN timed_out;
	DROP TABLE adcp_webhook_deliveries_schema_version`)
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	for table, cols := range map[string][]string{
		"adcp_webhook_deliveries": {"lost_attempts", "mcp_body", "payload_sha256", "reemission_of", "reemitted_as", "notification_id", "subscriber_id"},
		"adcp_webhook_attempts":   {"reemission_of", "notification_id", "subscriber_id", "timed_out"},
	} {
		for _, col := range cols {
			var n int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_attribute
				WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped`, table, col).Scan(&n))
			require.Equal(t, 1, n, "%s.%s", table, col)
		}
	}
	_, err = s.SendMCP(ctx, mcp("https://buyer.example/hook", "t1"))
	require.NoError(t, err)
}

// Tables that were never created, or are older than the code, name the fix
// instead of surfacing a bare "relation does not exist".
func TestPostgresMissingSchemaNamesTheFix(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	_, err = s.SendMCP(ctx, mcp("https://buyer.example/hook", "t1"))
	require.ErrorIs(t, err, webhook.ErrSchemaMissing)
	require.ErrorContains(t, err, "CreateSchema")

	require.NoError(t, s.CreateSchema(ctx))
	_, err = pool.Exec(ctx, `ALTER TABLE adcp_webhook_deliveries DROP COLUMN subscriber_id`)
	require.NoError(t, err)
	_, err = s.SendMCP(ctx, mcp("https://buyer.example/hook", "t1"))
	require.ErrorIs(t, err, webhook.ErrSchemaMissing)
	require.ErrorContains(t, err, "upgrade")
}
