package webhook

import (
	"context"
	"testing"
	"time"

	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// The locked path caches the gate it wrote before its transaction commits:
// when the commit fails, the cache holds a version the table never had, and
// a later completion computes from it and passes the version check.
func TestPostgresLockedGateWriteCachesOnlyWhatCommitted(t *testing.T) {
	pool := pgtest.New(t)
	ctx := context.Background()
	s, err := NewPostgresSupervisor(pool, idleSender, PostgresConfig{Breaker: BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Hour}})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	now := time.Now()
	newJob := func(token int64) *pgJob {
		var id int64
		require.NoError(t, pool.QueryRow(ctx, `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key,
			breaker_key, accepted_at, lease_token) VALUES ('running', $1, 'https://x.example/', '\x00', 'whk_0123456789abcdef', 'k', $2, $3)
			RETURNING id`, now.Add(time.Hour), now, token).Scan(&id))
		j := &pgJob{row: id, token: token, claimed: time.Now(), leaseEnd: now.Add(time.Hour)}
		j.breakerKey, j.url, j.key = "k", "https://x.example/", "whk_0123456789abcdef"
		return j
	}
	failure := func() *completion {
		return &completion{state: StateFailed, attempts: 1, due: now, finishedAt: now, result: breakerFailure, end: now,
			record: Attempt{IdempotencyKey: "whk_0123456789abcdef", URL: "https://x.example/", BreakerKey: "k",
				AttemptNumber: 1, MaxAttempts: 1, Outcome: OutcomeFailure, OccurredAt: now}}
	}
	// Every write to the gate table fails at commit.
	_, err = pool.Exec(ctx, `
CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'commit refused'; END $$;
CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT OR UPDATE ON adcp_webhook_breakers
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit();`)
	require.NoError(t, err)
	gates := newGateCache()
	_, err = s.writeCompletion(ctx, gates, newJob(41), failure(), true, true)
	require.Error(t, err, "the commit failed")
	_, err = pool.Exec(ctx, `DROP TRIGGER fail_commit ON adcp_webhook_breakers`)
	require.NoError(t, err)

	var rows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_breakers`).Scan(&rows))
	require.Zero(t, rows, "nothing was committed")
	g, v := gates.snapshot(&pgJob{job: job{prepared: prepared{breakerKey: "k"}}})
	t.Logf("cache after the failed commit: %v at version %d", g.State, v)

	// Another delivery's failure on the same endpoint (FailureThreshold 1)
	// must open the gate.
	_, err = s.writeCompletion(ctx, gates, newJob(43), failure(), true, false)
	require.NoError(t, err)
	var state string
	err = pool.QueryRow(ctx, `SELECT state FROM adcp_webhook_breakers WHERE breaker_key = 'k'`).Scan(&state)
	require.NoError(t, err, "the failure was not counted: no gate row")
	require.Equal(t, "open", state)
}

// The locked path holds a pooled connection in its transaction and asks the
// pool for another (gateChanged's deferBreaker) before committing.
func TestPostgresLockedGateWriteNeedsOneConnection(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	s, err := NewPostgresSupervisor(pool, idleSender, PostgresConfig{Breaker: BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Hour}})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	now := time.Now()
	var id int64
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key,
		breaker_key, accepted_at, lease_token) VALUES ('running', $1, 'https://x.example/', '\x00', 'whk_0123456789abcdef', 'k', $2, 41)
		RETURNING id`, now.Add(time.Hour), now).Scan(&id))
	j := &pgJob{row: id, token: 41, claimed: time.Now(), leaseEnd: now.Add(time.Hour)}
	j.breakerKey, j.url, j.key = "k", "https://x.example/", "whk_0123456789abcdef"
	c := &completion{state: StateFailed, attempts: 1, due: now, finishedAt: now, result: breakerFailure, end: now,
		record: Attempt{IdempotencyKey: "whk_0123456789abcdef", URL: "https://x.example/", BreakerKey: "k",
			AttemptNumber: 1, MaxAttempts: 1, Outcome: OutcomeFailure, OccurredAt: now}}
	tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err = s.writeCompletion(tctx, newGateCache(), j, c, true, true)
	require.NoError(t, err, "after %v", time.Since(start))
}

// A worker whose failure opened a gate commits it, then defers the
// endpoint's pending deliveries to the probe in a second statement. An
// operator's reset between the two must not be undone: the deferral
// applies only while the gate is still open.
func TestPostgresDeferralAfterAResetLeavesDeliveriesDue(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	s, err := NewPostgresSupervisor(pool, idleSender, PostgresConfig{Breaker: BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Hour}})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	now := time.Now()
	_, err = pool.Exec(ctx, `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key,
		breaker_key, accepted_at) VALUES ('pending', $1, 'https://x.example/', '\x00', 'whk_0123456789abcdef', 'k', $1)`, now)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO adcp_webhook_breakers (breaker_key, state, opened_at, retry_at, updated_at)
		VALUES ('k', 'open', $1, $2, $1)`, now, now.Add(time.Hour)) // the worker's completion
	require.NoError(t, err)
	require.NoError(t, s.ResetBreaker(ctx, "k"))                                                    // the operator
	s.gateChanged(ctx, "k", gate{State: BreakerClosed}, gate{State: BreakerOpen, OpenedAt: now}, 2) // the worker, late
	d, err := s.Delivery(ctx, "1")
	require.NoError(t, err)
	require.False(t, d.NextAttemptAt.After(time.Now()), "the breaker is closed, but its delivery waits until %v", d.NextAttemptAt)
}

// The same, with the reset still in flight when the worker defers: the
// deferral waits for it (it reads the gate row FOR SHARE) instead of
// reading past it.
func TestPostgresDeferralWaitsForAResetInFlight(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	s, err := NewPostgresSupervisor(pool, idleSender, PostgresConfig{Breaker: BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Hour}})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	now := time.Now()
	_, err = pool.Exec(ctx, `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key,
		breaker_key, accepted_at) VALUES ('pending', $1, 'https://x.example/', '\x00', 'whk_0123456789abcdef', 'k', $1)`, now.Add(-time.Second))
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO adcp_webhook_breakers (breaker_key, state, opened_at, retry_at, updated_at)
		VALUES ('k', 'open', $1, $2, $1)`, now, now.Add(time.Hour))
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // a failure below must not leave the database held until the test times out
	var old string
	var version int64
	require.NoError(t, queryRow(ctx, tx, s.q.resetBreaker, keyAtParams{Key: "k", Now: now}).Scan(&old, &version)) // not yet committed
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.gateChanged(ctx, "k", gate{State: BreakerClosed}, gate{State: BreakerOpen, OpenedAt: now}, 2)
	}()
	for waiting := false; !waiting; { // until the deferral waits on the reset, or is done without waiting
		select {
		case <-done:
			waiting = true
		default:
			var n int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&n))
			waiting = n > 0
		}
	}
	require.NoError(t, tx.Commit(ctx))
	<-done
	d, err := s.Delivery(ctx, "1")
	require.NoError(t, err)
	require.False(t, d.NextAttemptAt.After(time.Now()), "the breaker is closed, but its delivery waits until %v", d.NextAttemptAt)
}
