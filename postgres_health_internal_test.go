package webhook

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/internal/pgtest"
)

// healthLog records the health events an Observer is told.
type healthLog struct {
	mu     sync.Mutex
	events []HealthEvent
}

func (l *healthLog) observer() *Observer {
	return &Observer{Health: func(_ context.Context, e HealthEvent) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.events = append(l.events, e)
	}}
}

func (l *healthLog) kinds() []HealthKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []HealthKind
	for _, e := range l.events {
		out = append(out, e.Kind)
	}
	return out
}

// healthFixture is a PostgresSupervisor with one delivery row running
// under lease token 41, and builders for completions of it.
type healthFixture struct {
	s   *PostgresSupervisor
	id  int64
	now time.Time
}

func newHealthFixture(t *testing.T, p BreakerPolicy, o *Observer) *healthFixture {
	t.Helper()
	ctx := context.Background()
	s, err := NewPostgresSupervisor(pgtest.New(t), idleSender, PostgresConfig{Breaker: p, Observer: o})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	f := &healthFixture{s: s, now: time.Now()}
	require.NoError(t, s.db.QueryRow(ctx, `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key,
		breaker_key, accepted_at, lease_token) VALUES ('running', $1, 'https://x.example/', '\x00', 'whk_0123456789abcdef', 'k', $2, 41)
		RETURNING id`, f.now.Add(time.Hour), f.now).Scan(&f.id))
	return f
}

// job is the delivery as a claim under token holds it.
func (f *healthFixture) job(token int64) *pgJob {
	j := &pgJob{row: f.id, token: token, claimed: time.Now(), leaseEnd: f.now.Add(time.Hour)}
	j.breakerKey, j.url, j.key = "k", "https://x.example/", "whk_0123456789abcdef"
	return j
}

// failure is attempt 1 failing for good with a 503.
func (f *healthFixture) failure() *completion {
	return &completion{state: StateFailed, attempts: 1, due: f.now, finishedAt: f.now, result: breakerFailure, end: f.now,
		reason: FinishExhausted, record: Attempt{IdempotencyKey: "whk_0123456789abcdef", URL: "https://x.example/", BreakerKey: "k",
			AttemptNumber: 1, MaxAttempts: 1, Outcome: OutcomeFailure, OccurredAt: f.now}}
}

func (f *healthFixture) breakerRow(t *testing.T) (state string, failedDeliveries int) {
	t.Helper()
	require.NoError(t, f.s.db.QueryRow(context.Background(),
		`SELECT state, failed_deliveries FROM adcp_webhook_breakers WHERE breaker_key = 'k'`).Scan(&state, &failedDeliveries))
	return state, failedDeliveries
}

// A batch must not persist a gate computed from a completion whose lease
// was taken over: the delivery would count twice (once for the stale
// worker, once for its new owner), and a change would be reported that
// no stored completion made.
func TestPostgresBatchGateNeedsTheLease(t *testing.T) {
	t.Parallel()
	log := &healthLog{}
	f := newHealthFixture(t, BreakerPolicy{FailureThreshold: 100, FailingDeliveries: 1, FailingFor: RuleOff}, log.observer())
	ctx := context.Background()
	w := &pgWriter{s: f.s, gates: newGateCache()}
	stale := &pgWrite{j: f.job(99), c: f.failure(), written: make(chan bool, 1)} // token 41 owns the row now
	w.write(ctx, []*pgWrite{stale})
	require.False(t, <-stale.written)
	require.Empty(t, log.kinds(), "nothing stored, nothing reported")

	f.s.finish(ctx, newGateCache(), f.job(41), f.failure()) // the owner's completion
	_, failed := f.breakerRow(t)
	require.Equal(t, 1, failed, "one delivery failed, counted once")
	require.Equal(t, []HealthKind{HealthEndpointFailing}, log.kinds())
}

// A completion whose statement committed although the worker heard an
// error: the retry finds it written, and reports the change it made.
func TestPostgresUnheardCommitIsReported(t *testing.T) {
	t.Parallel()
	log := &healthLog{}
	f := newHealthFixture(t, BreakerPolicy{FailureThreshold: 1, FailingDeliveries: 1, FailingFor: RuleOff}, log.observer())
	ctx := context.Background()
	j, c, gates := f.job(41), f.failure(), newGateCache()
	// The first try commits; then (say) the connection drops before the
	// answer arrives, and the worker hears an error.
	pool := f.s.db
	f.s.db = &unheardPool{PostgresPool: pool}
	_, err := f.s.writeCompletion(ctx, gates, j, c, true, false)
	f.s.db = pool
	require.ErrorIs(t, err, errUnheard)
	state, _ := f.breakerRow(t)
	require.Equal(t, "open", state, "the first try committed")
	require.Empty(t, log.kinds())

	f.s.finish(ctx, gates, j, c) // the retry, as finish's loop makes it
	require.Equal(t, []HealthKind{HealthBreakerOpened, HealthEndpointFailing}, log.kinds())
	f.s.finish(ctx, gates, j, c) // and only once
	require.Len(t, log.kinds(), 2)
}

var errUnheard = errors.New("the connection dropped before the answer arrived")

// unheardPool runs every Query to its end (committing it, outside a
// transaction) and then reports errUnheard, as a client does whose
// connection drops after the server committed.
type unheardPool struct{ PostgresPool }

func (p *unheardPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := p.PostgresPool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return nil, errUnheard
}
