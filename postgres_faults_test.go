package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// ackLossPool is a real pool whose chosen statements run and commit, but
// whose caller then sees a connection error, as when the server's
// acknowledgement is lost on the way back.
type ackLossPool struct {
	*pgxpool.Pool
	drop func(sql string) bool // called once per statement; true: lose its acknowledgement
}

var errAckLost = errors.New("read tcp: connection reset by peer (acknowledgement lost after commit)")

func (p *ackLossPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if !p.drop(sql) {
		return p.Pool.Query(ctx, sql, args...)
	}
	return nil, runLosingAck(ctx, p.Pool, sql, args)
}

func (p *ackLossPool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if !p.drop(sql) {
		return p.Pool.QueryRow(ctx, sql, args...)
	}
	return mockRow{err: runLosingAck(ctx, p.Pool, sql, args)}
}

// runLosingAck runs a statement to its end (so it commits) and returns the
// error its caller would see had the acknowledgement been lost.
func runLosingAck(ctx context.Context, pool *pgxpool.Pool, sql string, args []any) error {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	return errAckLost
}

// A completion whose commit's acknowledgement is lost is not applied to its
// breaker twice: one half-open success of the two SuccessThreshold needs
// leaves the breaker half-open.
func TestPostgresLostAcknowledgementCountsABreakerResultOnce(t *testing.T) {
	t.Parallel()
	var armed, dropped atomic.Bool
	pool := &ackLossPool{Pool: pgtest.New(t), drop: func(sql string) bool {
		// The first completion that writes a gate, once armed.
		return armed.Load() && strings.Contains(sql, "INSERT INTO adcp_webhook_breakers") &&
			!strings.Contains(sql, "ON CONFLICT (breaker_key) DO UPDATE SET updated_at") && dropped.CompareAndSwap(false, true)
	}}
	e := newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		pc := webhook.PostgresConfig{PollOnly: true, Retry: cfg.Retry, Breaker: cfg.Breaker, LogSink: cfg.Sink, Clock: cfg.Clock, Logger: cfg.Logger}
		s, err := webhook.NewPostgresSupervisor(pool, cfg.Sender, pc)
		require.NoError(t, err)
		require.NoError(t, s.CreateSchema(context.Background()))
		return s
	}, func(c *suiteConfig) {
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 2, HalfOpenProbes: 1}
		c.Retry.MaxAttempts = 1
	})
	url := "https://buyer.example/flaky"
	e.sender.on(url, step{status: 503}, step{status: 200})
	e.startWorker()
	e.sendMCP(mcp(url, "t1"))
	require.Equal(t, webhook.OutcomeFailure, e.attempts(1)[0].Outcome)
	pg := e.sup.(*webhook.PostgresSupervisor)
	st, err := pg.Breaker(context.Background(), url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerOpen, st)

	armed.Store(true)
	e.clock.Advance(time.Minute) // half-open
	e.sendMCP(mcp(url, "t2"))
	require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
	require.True(t, dropped.Load(), "the probe's completion lost its acknowledgement")
	st, err = pg.Breaker(context.Background(), url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerHalfOpen, st, "one success counted once: SuccessThreshold is 2")
	var successes int
	require.NoError(t, pool.Pool.QueryRow(context.Background(), `SELECT successes FROM adcp_webhook_breakers`).Scan(&successes))
	require.Equal(t, 1, successes)
}

// "Consecutive failures" are consecutive: a success written while another
// transaction holds its breaker's row still resets the count.
func TestPostgresSuccessResetsFailuresWhileTheGateRowIsLocked(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 1}, func(c *suiteConfig) {
		c.Breaker.FailureThreshold = 2
		c.Retry.MaxAttempts = 1
	})
	url := "https://buyer.example/flaky"
	pe.sender.on(url, step{status: 503}, step{status: 200}, step{status: 503})
	pe.startWorker()
	pe.sendMCP(mcp(url, "t1"))
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome)

	// Hold the gate row's lock while the success is written.
	ctx := context.Background()
	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM adcp_webhook_breakers WHERE breaker_key = $1 FOR UPDATE`, url)
	require.NoError(t, err)
	pe.sendMCP(mcp(url, "t2"))
	pe.waitSent(2)
	require.Eventually(t, func() bool { // the success's completion waits for the row
		return pe.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
	}, guard, 5*time.Millisecond)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, webhook.OutcomeSuccess, pe.attempts(1)[0].Outcome)

	pe.sendMCP(mcp(url, "t3"))
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome)
	st, err := pe.pg.Breaker(ctx, url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, st, "failure, success, failure is not two consecutive failures")
}

// A row changed outside the supervisor so that it cannot be sent as it was
// accepted fails alone, with the reason, and holds back nothing claimed
// with it.
func TestPostgresCorruptRowFailsAlone(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{ClaimBatch: 4})
	url := "https://buyer.example/hook"
	w := mcp(url, "bad")
	w.Headers = map[string]string{"X-Token": "secret-token-value"}
	bad := pe.sendMCP(w)
	good := pe.sendMCP(mcp(url, "good"))
	_, err := pe.pool.Exec(context.Background(), `UPDATE adcp_webhook_deliveries SET headers = '["secret-token-value"]' WHERE id = $1`, bad.ID)
	require.NoError(t, err)
	pe.startWorker()
	byID := map[string]webhook.Attempt{}
	for _, a := range pe.attempts(2) {
		byID[a.DeliveryID] = a
	}
	require.Equal(t, webhook.OutcomeSuccess, byID[good.ID].Outcome)
	require.Equal(t, webhook.OutcomeFailure, byID[bad.ID].Outcome)
	require.Contains(t, byID[bad.ID].Error, "headers column")
	require.NotContains(t, byID[bad.ID].Error, "secret-token-value")
	require.Len(t, pe.sender.sent(), 1)
	d, err := pe.pg.Delivery(context.Background(), bad.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
}

// A half-open probe that ends frees its slot: the next probe goes out at
// once, not a PollInterval later.
func TestPostgresProbeEndWakesTheClaimer(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{PollOnly: true, PollInterval: time.Hour}, func(c *suiteConfig) {
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 3, HalfOpenProbes: 1}
		c.Retry.MaxAttempts = 1
	})
	url := "https://buyer.example/recovering"
	pe.sender.on(url, step{status: 503}, step{status: 200}, step{status: 200})
	pe.sendMCP(mcp(url, "t1")) // before the worker: with PollOnly, only polls find new work
	pe.startWorker()
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome)
	pe.sendMCP(mcp(url, "t2"))
	pe.sendMCP(mcp(url, "t3"))
	pe.clock.Advance(time.Minute) // half-open: one probe at a time
	as := pe.attempts(2)          // bounded by the suite's guard, far below PollInterval
	require.Equal(t, webhook.OutcomeSuccess, as[0].Outcome)
	require.Equal(t, webhook.OutcomeSuccess, as[1].Outcome)
}

// An enqueue whose acknowledgement is lost says so: the delivery may have
// been accepted (here it was, and it is delivered). A statement the server
// refused is no such case.
func TestPostgresEnqueueWithLostAcknowledgementIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	var armed atomic.Bool
	pool := &ackLossPool{Pool: pgtest.New(t), drop: func(sql string) bool {
		return strings.Contains(sql, "INSERT INTO adcp_webhook_deliveries") && armed.CompareAndSwap(true, false)
	}}
	e := newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		s, err := webhook.NewPostgresSupervisor(pool, cfg.Sender, webhook.PostgresConfig{PollOnly: true, LogSink: cfg.Sink, Clock: cfg.Clock, Logger: cfg.Logger})
		require.NoError(t, err)
		require.NoError(t, s.CreateSchema(context.Background()))
		return s
	})
	armed.Store(true)
	_, err := e.sup.SendMCP(context.Background(), mcp("https://buyer.example/hook", "t1"))
	require.ErrorIs(t, err, webhook.ErrOutcomeUnknown)
	e.startWorker()
	require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome, "it had been accepted")

	// A refusal by the server is a plain error: nothing was committed.
	_, err = pool.Pool.Exec(context.Background(), `ALTER TABLE adcp_webhook_deliveries ADD CONSTRAINT no_more CHECK (task_id <> 't2')`)
	require.NoError(t, err)
	_, err = e.sup.SendMCP(context.Background(), mcp("https://buyer.example/hook", "t2"))
	require.Error(t, err)
	require.NotErrorIs(t, err, webhook.ErrOutcomeUnknown)
}

// failFirstPool refuses, before it reaches the server, the first statement
// that matches.
type failFirstPool struct {
	*pgxpool.Pool
	match func(sql string) bool
	done  atomic.Bool
}

func (p *failFirstPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if p.match(sql) && p.done.CompareAndSwap(false, true) {
		return pgconn.CommandTag{}, errInjected
	}
	return p.Pool.Exec(ctx, sql, args...)
}

// A held retry whose release fails once is released on a second try, not
// left held until its hold (SinkTimeout and a statement's time) passes.
// (Found by the fault model.)
func TestPostgresReleaseRetriesThroughConnectionTrouble(t *testing.T) {
	t.Parallel()
	pool := &failFirstPool{Pool: pgtest.New(t), match: func(sql string) bool {
		return strings.HasPrefix(sql, "UPDATE adcp_webhook_deliveries SET state = 'pending'")
	}}
	e := newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		s, err := webhook.NewPostgresSupervisor(pool, cfg.Sender, webhook.PostgresConfig{PollOnly: true, Retry: cfg.Retry,
			LogSink: cfg.Sink, Clock: cfg.Clock, Logger: cfg.Logger})
		require.NoError(t, err)
		require.NoError(t, s.CreateSchema(context.Background()))
		return s
	})
	url := "https://buyer.example/hook"
	e.sender.on(url, step{status: 503}, step{status: 200})
	e.startWorker()
	e.sendMCP(mcp(url, "t1"))
	as := e.deliverAll(1) // the clock moves only to each NextRetryAt
	require.Len(t, as, 2)
	require.Equal(t, webhook.OutcomeSuccess, as[1].Outcome)
	require.True(t, pool.done.Load(), "the release failed once")
}

// A worker whose lease ran out mid-attempt (the clock stepped past it) and
// another worker took the delivery over: the first one's result is not
// written and not reported, so the sink's last record of the delivery is
// its owner's, and final. (Found by the fault model.)
func TestPostgresSupersededAttemptIsNotReported(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	url := "https://buyer.example/slow"
	gate := make(chan struct{})
	pe.sender.on(url, step{status: 200, gate: gate}, step{status: 200})
	pe.startWorker()
	r := pe.sendMCP(mcp(url, "t1"))
	pe.waitSent(1)
	pe.clock.Advance(3 * time.Minute) // past the first claim's lease
	runWorker(t, pe.another())
	a := pe.attempts(1)[0]
	require.Equal(t, r.ID, a.DeliveryID)
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
	require.False(t, a.WillRetry)
	close(gate) // the first worker's attempt ends; its lease is gone
	require.Eventually(t, func() bool { return strings.Contains(pe.logs.String(), "lease lost") }, guard, 5*time.Millisecond)
	select {
	case extra := <-pe.sink.ch:
		t.Fatalf("the superseded attempt was reported after the final one: %+v", extra)
	case <-time.After(100 * time.Millisecond):
	}
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM adcp_webhook_attempts`))
}

// An enqueue that certainly reached no server is a plain error, not
// ErrOutcomeUnknown: a context already done, a database that cannot be
// reached. (Found in review.)
func TestPostgresEnqueueThatSentNothingIsNotOutcomeUnknown(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.SendMCP(ctx, mcp("https://buyer.example/hook", "t1"))
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, webhook.ErrOutcomeUnknown)

	dead, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/db?connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(dead.Close)
	s2, err := webhook.NewPostgresSupervisor(dead, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	_, err = s2.SendMCP(context.Background(), mcp("https://buyer.example/hook", "t2"))
	require.Error(t, err)
	require.NotErrorIs(t, err, webhook.ErrOutcomeUnknown)
}

// slowSender answers 200 after a while, counting requests per key.
type slowSender struct {
	d    time.Duration
	mu   sync.Mutex
	sent map[string]int
}

func (s *slowSender) Send(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
	s.mu.Lock()
	s.sent[req.IdempotencyKey]++
	s.mu.Unlock()
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &webhook.Response{StatusCode: 200}, nil
}

// A healthy run counts no lost attempt: deliveries claimed ahead of a busy
// worker (ClaimBatch above Concurrency) wait for at most one attempt, so
// their leases cannot run out while they wait and no other process claims
// them again. (Found in review: they used to wait behind the whole batch,
// be claimed again, and be failed as lost without being sent.)
func TestPostgresHealthyRunLosesNoAttempt(t *testing.T) {
	t.Parallel()
	const n = 12
	pool := pgtest.New(t)
	sender := &slowSender{d: 700 * time.Millisecond, sent: map[string]int{}}
	pc := webhook.PostgresConfig{Concurrency: 1, ClaimBatch: 8, LeaseDuration: 2 * time.Second, PollOnly: true,
		PollInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var sups []*webhook.PostgresSupervisor
	for range 3 {
		s, err := webhook.NewPostgresSupervisor(pool, sender, pc)
		require.NoError(t, err)
		require.NoError(t, s.CreateSchema(context.Background()))
		sups = append(sups, s)
	}
	for i := range n {
		_, err := sups[0].SendMCP(context.Background(), mcp(fmt.Sprintf("https://buyer%d.example/hook", i), fmt.Sprint("t", i)))
		require.NoError(t, err)
	}
	for _, s := range sups {
		runWorker(t, s)
	}
	count := func(sql string) int {
		var c int
		require.NoError(t, pool.QueryRow(context.Background(), sql).Scan(&c))
		return c
	}
	require.Eventually(t, func() bool {
		return count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE state IN ('delivered', 'failed')`) == n
	}, guard*3, 20*time.Millisecond)
	require.Zero(t, count(`SELECT coalesce(sum(lost_attempts), 0) FROM adcp_webhook_deliveries`), "lost attempts in a run where no worker died")
	require.Equal(t, n, count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE state = 'delivered'`))
	for key, c := range sender.sent {
		require.Equal(t, 1, c, "%s sent %d times", key, c)
	}
}
