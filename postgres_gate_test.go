package webhook_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// A 2xx that lands while the gate is open (it was claimed while closed,
// another delivery's failure opened the gate meanwhile) must be written:
// the delivery is delivered, as on the memory supervisor.
func TestPostgresSuccessWhileGateOpenIsWritten(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 2, EndpointConcurrency: 2}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Hour}
	})
	ctx := context.Background()
	url := "https://buyer.example/flaky"
	slow := make(chan struct{})
	pe.sender.on(url, step{status: 200, gate: slow}, step{status: 503})
	runWorker(t, pe.sup)
	r1 := pe.sendMCP(mcp(url, "t1"))
	pe.waitSent(1) // t1 in flight, gate closed
	pe.sendMCP(mcp(url, "t2"))
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome)
	st, err := pe.pg.Breaker(ctx, url)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerOpen, st)
	close(slow) // t1 answers 2xx while the gate is open
	require.Eventually(t, func() bool {
		d, err := pe.pg.Delivery(ctx, r1.ID)
		return err == nil && d.State == webhook.StateDelivered
	}, 5*time.Second, 20*time.Millisecond, "t1's 2xx was never written; logs:\n%s", pe.logs.String())
}

// Under a backlog of healthy deliveries (every claim fills up), a gate
// that is due for its half-open probe still gets one "at most once a
// second" (postgres_worker.go claim).
func TestPostgresProbeNotStarvedByBacklog(t *testing.T) {
	t.Parallel()
	dead, healthy := "https://buyer.example/dead", "https://buyer.example/healthy"
	var healthySent atomic.Int64
	probed := make(chan int64, 1)
	var deadCalls atomic.Int64
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 1, ClaimBatch: 1}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Minute}
		c.Sink = nil
		c.Sender = webhook.SenderFunc(func(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
			if r.URL == dead {
				if deadCalls.Add(1) == 1 {
					return &webhook.Response{StatusCode: 503}, nil
				}
				select {
				case probed <- healthySent.Load():
				default:
				}
				return &webhook.Response{StatusCode: 200}, nil
			}
			time.Sleep(10 * time.Millisecond)
			healthySent.Add(1)
			return &webhook.Response{StatusCode: 200}, nil
		})
	})
	ctx := context.Background()
	pe.sendMCP(mcp(dead, "d0"))
	runWorker(t, pe.sup)
	require.Eventually(t, func() bool {
		st, err := pe.pg.Breaker(ctx, dead)
		return err == nil && st == webhook.BreakerOpen
	}, guard, 10*time.Millisecond)
	pe.sendMCP(mcp(dead, "d1")) // deferred to the probe
	const backlog = 600
	for i := range backlog {
		pe.sendMCP(mcp(healthy, fmt.Sprint("h", i)))
	}
	due := healthySent.Load()
	pe.clock.Set(epoch.Add(2 * time.Minute)) // the dead gate is due for a probe
	select {
	case n := <-probed:
		t.Logf("probe sent after %d healthy deliveries", n-due)
		require.Less(t, n-due, int64(backlog/2), "the probe waited for the backlog to drain")
	case <-time.After(guard):
		t.Fatalf("no probe within %v; %d healthy sent", guard, healthySent.Load())
	}
}

// A gate opened by a worker of the previous release (which writes state and
// opened_at, not retry_at or version) after CreateSchema upgraded the table,
// as happens during a rolling deploy.
func TestPostgresGateOpenedByAnOldWorkerIsProbed(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	url := "https://buyer.example/hook"
	_, err := pe.pool.Exec(ctx, `INSERT INTO adcp_webhook_breakers (breaker_key, state, failures, opened_at, updated_at)
		VALUES ($1, 'open', 0, $2, now())`, url, epoch.Add(-time.Hour))
	require.NoError(t, err)
	st, err := pe.pg.Breaker(ctx, url)
	require.NoError(t, err)
	t.Logf("Breaker says %v", st)
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "t1"))
	require.True(t, pe.sentWithin(1, 5*time.Second), "the delivery is never probed")
}

// A gate row of the old layout keeps its failure count across the upgrade.
func TestPostgresUpgradedGateKeepsItsFailures(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	url := "https://buyer.example/flaky"
	_, err := pool.Exec(ctx, oldGateTable+`
INSERT INTO adcp_webhook_breakers (breaker_key, failures, updated_at) VALUES ('`+url+`', 3, now());`)
	require.NoError(t, err)
	sender := newScriptedSender()
	sender.on(url, step{status: 503})
	sink := newRecordingSink()
	s, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{Clock: fakeclock.New(epoch), LogSink: sink,
		Retry: webhook.RetryPolicy{MaxAttempts: 1}, Breaker: webhook.BreakerPolicy{FailureThreshold: 5}})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	runWorker(t, s)
	_, err = s.SendMCP(ctx, mcp(url, "t1"))
	require.NoError(t, err)
	select {
	case <-sink.ch:
	case <-time.After(guard):
		t.Fatal("no attempt")
	}
	var failures int
	require.NoError(t, pool.QueryRow(ctx, `SELECT failures FROM adcp_webhook_breakers WHERE breaker_key = $1`, url).Scan(&failures))
	require.Equal(t, 4, failures, "3 before the upgrade, 1 after")
}

// A probe claim that fails (here: an unreadable row of a tripped endpoint,
// headers that are not a string map) does not stop the claims of every
// other endpoint: probes are claimed first, but their error is logged and
// the normal claim runs.
func TestPostgresProbeClaimErrorDoesNotBlockOtherClaims(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Minute}
	})
	ctx := context.Background()
	dead, healthy := "https://buyer.example/dead", "https://buyer.example/healthy"
	pe.sender.on(dead, step{status: 503})
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(dead, "d0"))
	pe.attempts(1)
	r := pe.sendMCP(mcp(dead, "d1"))
	_, err := pe.pool.Exec(ctx, `UPDATE adcp_webhook_deliveries SET headers = '{"x": 1}' WHERE id = $1`, r.ID)
	require.NoError(t, err)
	pe.clock.Set(epoch.Add(2 * time.Minute)) // the dead gate is due for a probe
	pe.sendMCP(mcp(healthy, "h1"))
	require.True(t, pe.sentWithin(2, 5*time.Second), "the healthy delivery was never sent; logs:\n%s", pe.logs.String())
}

// A completion whose batched gate write loses to another process's is
// written again on its own; that path, too, keeps the gate under the
// delivery's real breaker key (here a URL with a query, which attempt
// records show without it), and counts the failure once.
func TestPostgresGateFallbackUsesTheRealKey(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker.FailureThreshold = 5
	})
	ctx := context.Background()
	url := "https://buyer.example/hook?sig=0123456789abcdef"
	pe.sender.on(url, step{status: 503}, step{status: 503})
	runWorker(t, pe.sup)
	r := pe.sendMCP(mcp(url, "t1"))
	pe.attempts(1)
	pe.settled(r.ID)
	// Another process moved the gate on (its version) without the
	// worker's knowledge.
	_, err := pe.pool.Exec(ctx, `UPDATE adcp_webhook_breakers SET version = version + 10`)
	require.NoError(t, err)
	r = pe.sendMCP(mcp(url, "t2"))
	pe.attempts(1)
	pe.settled(r.ID)
	var keys []string
	rows, err := pe.pool.Query(ctx, `SELECT breaker_key || ' ' || failures FROM adcp_webhook_breakers ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{url + " 2"}, keys)
}
