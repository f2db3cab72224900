package webhook_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/internal/pgtest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(faultWorkerEnv); spec != "" {
		os.Exit(runFaultWorker(spec)) // a fault-model worker process
	}
	// pgtest.Wrap stops the throwaway Postgres after the tests, before
	// goleak looks for leaked goroutines.
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

func newMemory(t *testing.T, cfg suiteConfig) webhook.Supervisor {
	t.Helper()
	s, err := webhook.NewMemorySupervisor(cfg.Sender, webhook.MemoryConfig{
		Retry:               cfg.Retry,
		Breaker:             cfg.Breaker,
		LogSink:             cfg.Sink,
		Clock:               cfg.Clock,
		Logger:              cfg.Logger,
		Observer:            cfg.Observer,
		Concurrency:         cfg.Concurrency,
		EndpointConcurrency: cfg.EndpointConcurrency,
	})
	require.NoError(t, err)
	return s
}

func TestMemorySupervisor(t *testing.T) {
	t.Parallel()
	runSupervisorSuite(t, newMemory)
}

func TestMemorySupervisorIsNotDurable(t *testing.T) {
	t.Parallel()
	s := newMemory(t, suiteConfig{Sender: newScriptedSender(), Retry: webhook.RetryPolicy{Horizon: 48 * time.Hour}})
	require.False(t, s.DeliveryStateIsDurable())
	require.Equal(t, 48*time.Hour, s.DeliveryRetryHorizon())
}

func TestNewMemorySupervisorRejectsBadInput(t *testing.T) {
	t.Parallel()
	_, err := webhook.NewMemorySupervisor((*webhook.HTTPSender)(nil), webhook.MemoryConfig{})
	require.ErrorIs(t, err, webhook.ErrNilSender, "a typed nil is caught too")
	_, err = webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: (*webhook.RFC9421Signer)(nil)})
	require.ErrorIs(t, err, webhook.ErrInvalidConfig)

	sender := newScriptedSender()
	for name, cfg := range map[string]webhook.MemoryConfig{
		"MemoryConfig.Retry.MaxAttempts":        {Retry: webhook.RetryPolicy{MaxAttempts: 1 << 31}},
		"MemoryConfig.Retry.MaxDelay":           {Retry: webhook.RetryPolicy{BaseDelay: time.Minute, MaxDelay: time.Second}},
		"MemoryConfig.Retry.Horizon":            {Retry: webhook.RetryPolicy{MaxAttempts: webhook.MaxAttemptsUntilHorizon, Horizon: webhook.NoHorizon}},
		"MemoryConfig.Breaker.FailureThreshold": {Breaker: webhook.BreakerPolicy{FailureThreshold: -1}},
		"MemoryConfig.Breaker.OpenAction":       {Breaker: webhook.BreakerPolicy{OpenAction: 7}},
		"MemoryConfig.Concurrency":              {Concurrency: -1},
		"MemoryConfig.EndpointConcurrency":      {EndpointConcurrency: -2},
		"MemoryConfig.MaxQueued":                {MaxQueued: -5},
		"MemoryConfig.Breaker.HalfOpenProbes":   {Breaker: webhook.BreakerPolicy{HalfOpenProbes: -1}},
		"MemoryConfig.Breaker.SuccessThreshold": {Breaker: webhook.BreakerPolicy{SuccessThreshold: -2}},
		"MemoryConfig.DrainTimeout":             {DrainTimeout: -time.Second},
		"MemoryConfig.MaxQueuedBytes":           {MaxQueuedBytes: -1},
		"MemoryConfig.Clock":                    {Clock: (*fakeclock.Clock)(nil)},
	} {
		_, err := webhook.NewMemorySupervisor(sender, cfg)
		require.ErrorIs(t, err, webhook.ErrInvalidConfig, name)
		if strings.HasSuffix(name, ".MaxAttempts") || strings.HasSuffix(name, ".Horizon") {
			require.ErrorContains(t, err, "MaxAttemptsUntilHorizon", "the error names the way out")
		}
		var ce *webhook.ConfigError
		require.ErrorAs(t, err, &ce, name)
		require.Equal(t, name, ce.Field)
	}
}

func TestMemoryQueueFull(t *testing.T) {
	t.Parallel()
	sender := newScriptedSender()
	s, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{MaxQueued: 2})
	require.NoError(t, err)
	ctx := context.Background()
	r1, err := s.SendMCP(ctx, mcp("https://buyer.example/hook", "t1"))
	require.NoError(t, err)
	r2, err := s.SendMCP(ctx, mcp("https://buyer.example/hook", "t2"))
	require.NoError(t, err)
	w := mcp("https://buyer.example/hook", "t3")
	w.SequenceKey = "k"
	_, err = s.SendMCP(ctx, w)
	require.ErrorIs(t, err, webhook.ErrQueueFull)
	require.Equal(t, int64(1), s.NextSequence("k"), "a refused webhook burns no sequence number")

	// Once the queue drains there is room again.
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(wctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	for _, id := range []string{r1.ID, r2.ID} {
		d, err := s.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State)
	}
	r3, err := s.SendMCP(ctx, w)
	require.NoError(t, err)
	require.Equal(t, int64(2), r3.Sequence)
}

// TestMemoryQueueBoundedInBytes: MaxQueuedBytes refuses what the
// unfinished deliveries cannot hold, and forgets finished ones, oldest
// first, to make room.
func TestMemoryQueueBoundedInBytes(t *testing.T) {
	t.Parallel()
	// One at a time, so deliveries finish in the order they were accepted
	// and "oldest finished" is ids[0].
	s, err := webhook.NewMemorySupervisor(newScriptedSender(), webhook.MemoryConfig{MaxQueuedBytes: 11 << 10, Concurrency: 1})
	require.NoError(t, err)
	ctx := context.Background()
	big := func(task string) webhook.MCPWebhook {
		w := mcp("https://buyer.example/hook", task)
		w.Result = map[string]any{"blob": strings.Repeat("x", 3<<10)}
		return w
	}
	var ids []string
	for i := range 3 {
		r, err := s.SendMCP(ctx, big(fmt.Sprint("t", i)))
		require.NoError(t, err)
		ids = append(ids, r.ID)
	}
	_, err = s.SendMCP(ctx, big("t3"))
	require.ErrorIs(t, err, webhook.ErrQueueFull)
	require.ErrorContains(t, err, "MaxQueuedBytes")
	_, err = s.SendMCP(ctx, mcp("https://buyer.example/hook", "small"))
	require.NoError(t, err, "a small one still fits")

	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(wctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	for _, id := range ids {
		_, err := s.Wait(ctx, id)
		require.NoError(t, err)
	}
	huge := big("huge")
	huge.Result = map[string]any{"blob": strings.Repeat("x", 12<<10)}
	_, err = s.SendMCP(ctx, huge)
	require.ErrorIs(t, err, webhook.ErrQueueFull, "bigger than the whole bound")
	_, err = s.Delivery(context.Background(), ids[0])
	require.NoError(t, err, "a refusal forgets nothing")
	_, err = s.SendMCP(ctx, big("t3"))
	require.NoError(t, err, "finished deliveries make room")
	_, err = s.Delivery(context.Background(), ids[0])
	require.ErrorIs(t, err, webhook.ErrNotFound, "the oldest finished one was forgotten for it")
	_, err = s.Delivery(context.Background(), ids[2])
	require.NoError(t, err, "the newest finished ones are kept while there is room")
}

// memEnv is an env whose supervisor is a *MemorySupervisor with cfg applied.
func memEnv(t *testing.T, cfg webhook.MemoryConfig) (*env, *webhook.MemorySupervisor) {
	t.Helper()
	var ms *webhook.MemorySupervisor
	e := newEnv(t, func(t *testing.T, sc suiteConfig) webhook.Supervisor {
		cfg.Retry.NoJitter = true
		cfg.LogSink, cfg.Clock, cfg.Logger = sc.Sink, sc.Clock, sc.Logger
		s, err := webhook.NewMemorySupervisor(sc.Sender, cfg)
		require.NoError(t, err)
		ms = s
		return s
	})
	return e, ms
}

func TestMemoryWaitBlocksUntilFinal(t *testing.T) {
	t.Parallel()
	e, s := memEnv(t, webhook.MemoryConfig{})
	url := "https://buyer.example/flaky"
	e.sender.on(url, step{status: 500})
	e.startWorker()
	r := e.sendMCP(mcp(url, "t1"))

	d, err := s.Delivery(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, r.IdempotencyKey, d.IdempotencyKey)

	waited := make(chan webhook.Delivery, 1)
	go func() {
		d, err := s.Wait(context.Background(), r.ID)
		require.NoError(t, err)
		waited <- d
	}()
	a := e.attempts(1)[0]
	require.True(t, a.WillRetry)
	select {
	case <-waited:
		t.Fatal("Wait returned before the delivery finished")
	default:
	}
	e.clock.Set(a.NextRetryAt)
	d = <-waited
	require.Equal(t, webhook.StateDelivered, d.State)
	require.Equal(t, 2, d.Attempts)
	require.Equal(t, 200, d.LastStatus)
	require.Equal(t, e.sender.sent()[0].Body, d.Body)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Wait(ctx, "no-such-id")
	require.ErrorIs(t, err, webhook.ErrNotFound)
}

func TestMemoryWaitHonoursContext(t *testing.T) {
	t.Parallel()
	_, s := memEnv(t, webhook.MemoryConfig{})
	r, err := s.SendMCP(context.Background(), mcp("https://buyer.example/hook", "t1"))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := s.Wait(ctx, r.ID) // no worker runs
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, webhook.StatePending, d.State)
}

func TestMemoryFailedDeliveryKeepsItsReason(t *testing.T) {
	t.Parallel()
	e, s := memEnv(t, webhook.MemoryConfig{})
	url := "https://buyer.example/conflict"
	e.sender.on(url, step{status: 409, body: "key bound to another payload"})
	e.startWorker()
	r := e.sendMCP(mcp(url, "t1"))
	d, err := s.Wait(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
	require.Equal(t, "HTTP 409 Conflict", d.LastError, "the status; the receiver's answer is not recorded")
	require.Equal(t, 1, d.Attempts)
}

func TestMemoryDelayedRetryHoldsNoSlot(t *testing.T) {
	t.Parallel()
	e, _ := memEnv(t, webhook.MemoryConfig{Concurrency: 1})
	url := "https://buyer.example/flaky"
	e.sender.on(url, step{status: 503})
	e.startWorker()
	e.sendMCP(mcp(url, "t1"))
	require.True(t, e.attempts(1)[0].WillRetry)
	r2 := e.sendMCP(mcp("https://buyer.example/ok", "t2"))
	a := e.attempts(1)[0]
	require.Equal(t, r2.ID, a.DeliveryID, "delivered while t1 waits for its retry, with the clock standing still")
	require.Equal(t, epoch, e.clock.Now())
}

func TestMemoryConcurrencyBound(t *testing.T) {
	t.Parallel()
	e, _ := memEnv(t, webhook.MemoryConfig{Concurrency: 2})
	gates := map[string]chan struct{}{}
	for _, u := range []string{"https://a.example/", "https://b.example/", "https://c.example/"} {
		gates[u] = make(chan struct{})
		e.sender.on(u, step{status: 200, gate: gates[u]})
	}
	e.startWorker()
	t.Cleanup(func() { // before the worker stops
		for _, g := range gates {
			close(g)
		}
	})
	for _, u := range []string{"https://a.example/", "https://b.example/", "https://c.example/"} {
		e.sendMCP(mcp(u, u))
	}
	first := e.waitSent(2)[0].URL
	close(gates[first]) // free one slot
	delete(gates, first)
	for _, r := range e.waitSent(3) {
		require.LessOrEqual(t, r.InFlight, 2, "at most Concurrency attempts in flight")
	}
}

func TestMemoryHalfOpenLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	e, s := memEnv(t, webhook.MemoryConfig{
		Retry:   webhook.RetryPolicy{MaxAttempts: 1},
		Breaker: webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 1, OpenTimeout: time.Minute},
	})
	url := "https://buyer.example/recovering"
	gate := make(chan struct{})
	e.sender.on(url, step{status: 503}, step{status: 200, gate: gate})
	e.startWorker()
	released := false
	t.Cleanup(func() { // before the worker stops
		if !released {
			close(gate)
		}
	})
	e.sendMCP(mcp(url, "t0"))
	e.attempts(1)
	require.Equal(t, webhook.BreakerOpen, memBreaker(t, s, url))
	for i := 1; i <= 3; i++ {
		e.sendMCP(mcp(url, fmt.Sprint("t", i)))
	}
	e.clock.Advance(time.Minute)
	e.waitSent(2) // the probe, blocked on the gate
	require.Equal(t, webhook.BreakerHalfOpen, memBreaker(t, s, url))
	close(gate)
	released = true
	as := e.attempts(3)
	for _, a := range as {
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
		require.Equal(t, 1, a.AttemptNumber)
	}
	for _, r := range e.sender.sent() {
		require.Equal(t, 1, r.InFlightURL, "one request at a time to a recovering endpoint")
	}
	require.Equal(t, webhook.BreakerClosed, memBreaker(t, s, url))
}

func TestMemoryHorizonStopsRetries(t *testing.T) {
	t.Parallel()
	e, s := memEnv(t, webhook.MemoryConfig{
		Retry: webhook.RetryPolicy{MaxAttempts: 10, BaseDelay: 16 * time.Hour, MaxDelay: 16 * time.Hour, Horizon: 24 * time.Hour},
	})
	url := "https://buyer.example/down"
	e.sender.on(url, step{status: 500}, step{status: 500}, step{status: 500})
	e.startWorker()
	r := e.sendMCP(mcp(url, "t1"))
	as := e.deliverAll(1)
	require.Len(t, as, 2, "attempt at 0h, retry at 16h; 32h is past the 24h horizon")
	require.False(t, as[1].WillRetry)
	d, err := s.Wait(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
}

func TestMemoryDrainTimeoutCancelsStuckAttempts(t *testing.T) {
	t.Parallel()
	e, s := memEnv(t, webhook.MemoryConfig{
		DrainTimeout: 10 * time.Millisecond,
		Retry:        webhook.RetryPolicy{MaxAttempts: 1},
		Breaker:      webhook.BreakerPolicy{FailureThreshold: 1},
	})
	url := "https://buyer.example/hangs"
	e.sender.on(url, step{status: 200, gate: make(chan struct{})}) // never opens
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(ctx) }()
	r := e.sendMCP(mcp(url, "t1"))
	e.waitSent(1)
	cancel()
	require.NoError(t, <-done)
	a := e.attempts(1)[0]
	require.Equal(t, webhook.OutcomeFailure, a.Outcome)
	require.Equal(t, 1, a.AttemptNumber)
	require.True(t, a.WillRetry, "a cancelled attempt is retried later")
	require.Contains(t, a.Error, "not charged")
	d, err := s.Delivery(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StatePending, d.State)
	require.Zero(t, d.Attempts, "the cancelled attempt is not charged, even the last one allowed")
	require.Equal(t, webhook.BreakerClosed, memBreaker(t, s, url), "the worker's own cancellation is not the endpoint's failure")

	e.startWorker()
	a = e.attempts(1)[0]
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
	require.Equal(t, 1, a.AttemptNumber)
	require.Equal(t, r.IdempotencyKey, e.sender.sent()[1].Key)
}

func TestMemoryHorizonCheckedWhenAttemptStarts(t *testing.T) {
	t.Parallel()
	e, s := memEnv(t, webhook.MemoryConfig{
		Retry: webhook.RetryPolicy{MaxAttempts: 5, BaseDelay: 16 * time.Hour, MaxDelay: 16 * time.Hour, Horizon: 24 * time.Hour},
	})
	url := "https://buyer.example/down"
	e.sender.on(url, step{status: 500})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(ctx) }()
	r := e.sendMCP(mcp(url, "t1"))
	first := e.attempts(1)[0]
	require.Equal(t, epoch.Add(16*time.Hour), first.NextRetryAt, "due within the horizon")
	cancel()
	require.NoError(t, <-done)

	e.clock.Set(epoch.Add(48 * time.Hour)) // no worker ran until past the horizon
	e.startWorker()
	a := e.attempts(1)[0]
	require.Equal(t, r.ID, a.DeliveryID)
	require.Equal(t, webhook.OutcomeFailure, a.Outcome)
	require.Zero(t, a.AttemptNumber, "nothing was sent")
	require.Contains(t, a.Error, "horizon")
	require.Len(t, e.sender.sent(), 1)
	d, err := s.Wait(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
	require.Equal(t, 1, d.Attempts)
}

func TestMemorySeveralWorkersShareOneQueue(t *testing.T) {
	t.Parallel()
	e, _ := memEnv(t, webhook.MemoryConfig{Concurrency: 1})
	e.startWorker()
	e.startWorker()
	e.startWorker()
	ids := map[string]bool{}
	for i := range 50 {
		ids[e.sendMCP(mcp("https://buyer.example/hook", fmt.Sprint("t", i))).ID] = true
	}
	for _, a := range e.attempts(50) {
		require.True(t, ids[a.DeliveryID])
		delete(ids, a.DeliveryID)
	}
	require.Empty(t, ids, "each delivery attempted exactly once")
}

func TestMemoryStuckSinkDoesNotCostAWorker(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := newEnv(t, func(t *testing.T, sc suiteConfig) webhook.Supervisor {
		s, err := webhook.NewMemorySupervisor(sc.Sender, webhook.MemoryConfig{
			Concurrency: 1,
			Clock:       sc.Clock,
			Logger:      sc.Logger,
			Retry:       webhook.RetryPolicy{SinkTimeout: 5 * time.Millisecond},
			LogSink: webhook.LogSinkFunc(func(context.Context, webhook.Attempt) error {
				<-release // ignores its context
				return nil
			}),
		})
		require.NoError(t, err)
		return s
	})
	e.startWorker()
	t.Cleanup(func() { close(release) }) // runs before the worker is stopped
	for i := range 3 {
		e.sendMCP(mcp("https://buyer.example/hook", fmt.Sprint("t", i)))
	}
	e.waitSent(3)
	require.Len(t, e.sender.sent(), 3, "one worker, three deliveries, every sink call stuck")
}

// TestMemoryStuckSinkCostIsBounded: a sink that ignores its context holds
// at most MaxStuckSinkCalls goroutines (plus one per worker); past that, records are dropped
// (and said so in the log) and delivery goes on without waiting for it.
func TestMemoryStuckSinkCostIsBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var stuck, most atomic.Int32
	e := newEnv(t, func(t *testing.T, sc suiteConfig) webhook.Supervisor {
		s, err := webhook.NewMemorySupervisor(sc.Sender, webhook.MemoryConfig{
			Concurrency: 4,
			Clock:       sc.Clock,
			Logger:      sc.Logger,
			Retry:       webhook.RetryPolicy{SinkTimeout: time.Millisecond},
			LogSink: webhook.LogSinkFunc(func(context.Context, webhook.Attempt) error {
				n := stuck.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				<-release // ignores its context
				stuck.Add(-1)
				return nil
			}),
		})
		require.NoError(t, err)
		return s
	})
	e.startWorker()
	t.Cleanup(func() { close(release) }) // runs before the worker is stopped
	n := webhook.MaxStuckSinkCalls + 40
	for i := range n {
		e.sendMCP(mcp("https://buyer.example/hook", fmt.Sprint("t", i)))
	}
	e.waitSent(n)
	// Each worker checks the count before its call: the 4 may all find
	// one slot left.
	require.LessOrEqual(t, int(most.Load()), webhook.MaxStuckSinkCalls+4, "sink goroutines held at once")
	require.Eventually(t, func() bool { return strings.Contains(e.logs.String(), "records are dropped") }, guard, time.Millisecond)
}

type typedNilError struct{}

func (*typedNilError) Error() string { panic("nil receiver") }

// TestMemoryTypedNilErrorsAreContained: a Sender or LogSink returning a
// typed-nil error (whose Error method panics) costs an attempt record's
// text, not the process.
func TestMemoryTypedNilErrorsAreContained(t *testing.T) {
	t.Parallel()
	var nilErr *typedNilError
	calls := 0
	e := newEnv(t, newMemory, func(c *suiteConfig) {
		c.Sender = webhook.SenderFunc(func(context.Context, *webhook.Request) (*webhook.Response, error) {
			if calls++; calls == 1 {
				return nil, nilErr
			}
			return &webhook.Response{StatusCode: 200}, nil
		})
		inner := c.Sink
		c.Sink = webhook.LogSinkFunc(func(ctx context.Context, a webhook.Attempt) error {
			_ = inner.RecordAttempt(ctx, a)
			return nilErr
		})
	})
	e.startWorker()
	e.sendMCP(mcp("https://buyer.example/hook", "t1"))
	as := e.deliverAll(1)
	require.Contains(t, as[0].Error, "Error method panicked")
	require.Equal(t, webhook.OutcomeSuccess, as[len(as)-1].Outcome)
	require.Eventually(t, func() bool { return strings.Contains(e.logs.String(), "Error method panicked") }, guard, time.Millisecond)
}

// memBreaker is a memory supervisor's breaker state.
func memBreaker(t *testing.T, s *webhook.MemorySupervisor, key string) webhook.BreakerState {
	t.Helper()
	st, err := s.Breaker(context.Background(), key)
	require.NoError(t, err)
	return st
}

// A destination the sender refuses to dial fails after SendMCP returned
// nil: the supervisor says why, once per destination.
func TestBlockedDestinationIsWarnedOnce(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{}) // loopback is refused
	require.NoError(t, err)
	sink := newRecordingSink()
	s, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{LogSink: sink, AllowInsecureHTTP: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(ctx) }()
	defer func() { cancel(); <-done }()
	for i := range 3 {
		r, err := s.SendMCP(context.Background(), mcp("http://127.0.0.1:9/hook?token=secret123", fmt.Sprint("t", i)))
		require.NoError(t, err)
		d, err := s.Wait(context.Background(), r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateFailed, d.State)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "refuses to dial"), logs.String())
	require.Contains(t, logs.String(), "HTTPSenderConfig.Development")
	require.NotContains(t, logs.String(), "secret123")
}

// A delivery that waited for its endpoint's slot takes it before newer
// deliveries of the endpoint that were queued when the slot freed.
func TestMemoryEndpointConcurrencyKeepsOrder(t *testing.T) {
	t.Parallel()
	e, _ := memEnv(t, webhook.MemoryConfig{Concurrency: 2, EndpointConcurrency: 1})
	k, other := "https://k.example/hook", "https://other.example/hook"
	gateA, gateX := make(chan struct{}), make(chan struct{})
	defer close(gateX)
	e.sender.on(k, step{status: 200, gate: gateA})
	e.sender.on(other, step{status: 200, gate: gateX})
	e.startWorker()
	e.sendMCP(mcp(k, "a"))
	e.waitSent(1)
	e.sendMCP(mcp(k, "b")) // waits for a's slot
	e.sendMCP(mcp(other, "x"))
	e.waitSent(2) // both workers busy
	e.sendMCP(mcp(k, "c"))
	e.sendMCP(mcp(k, "d"))
	close(gateA)
	var order []string
	for range 4 {
		order = append(order, e.attempts(1)[0].TaskID)
	}
	require.Equal(t, []string{"a", "b", "c", "d"}, order)
}
