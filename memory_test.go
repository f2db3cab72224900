package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/adcpkit/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newMemory(t *testing.T, cfg suiteConfig) webhook.Supervisor {
	t.Helper()
	s, err := webhook.NewMemorySupervisor(cfg.Sender, webhook.MemoryConfig{
		Retry:   cfg.Retry,
		Breaker: cfg.Breaker,
		LogSink: cfg.Sink,
		Clock:   cfg.Clock,
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
	_, err := webhook.NewMemorySupervisor(nil, webhook.MemoryConfig{})
	require.ErrorIs(t, err, webhook.ErrNilSender)

	sender := newScriptedSender()
	for name, cfg := range map[string]webhook.MemoryConfig{
		"RetryPolicy.MaxAttempts":        {Retry: webhook.RetryPolicy{MaxAttempts: -1}},
		"RetryPolicy.MaxDelay":           {Retry: webhook.RetryPolicy{BaseDelay: time.Minute, MaxDelay: time.Second}},
		"RetryPolicy.Horizon":            {Retry: webhook.RetryPolicy{Horizon: -time.Hour}},
		"BreakerPolicy.FailureThreshold": {Breaker: webhook.BreakerPolicy{FailureThreshold: -1}},
		"BreakerPolicy.OpenAction":       {Breaker: webhook.BreakerPolicy{OpenAction: 7}},
		"MemoryConfig.Concurrency":       {Concurrency: -1},
		"MemoryConfig.MaxQueued":         {MaxQueued: -5},
		"BreakerPolicy.HalfOpenProbes":   {Breaker: webhook.BreakerPolicy{HalfOpenProbes: -1}},
		"BreakerPolicy.SuccessThreshold": {Breaker: webhook.BreakerPolicy{SuccessThreshold: -2}},
		"MemoryConfig.DrainTimeout":      {DrainTimeout: -time.Second},
	} {
		_, err := webhook.NewMemorySupervisor(sender, cfg)
		require.ErrorIs(t, err, webhook.ErrInvalidConfig, name)
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
