package webhook

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func guardFor(t *testing.T, sink LogSinkFunc, timeout time.Duration) (*sinkGuard, *atomic.Int32) {
	t.Helper()
	k, err := newCore(commonConfig{sender: SenderFunc(nil), sink: sink, retry: RetryPolicy{SinkTimeout: timeout}})
	require.NoError(t, err)
	var replaced atomic.Int32
	g := k.newSinkGuard(func() { replaced.Add(1) })
	t.Cleanup(g.stop)
	return g, &replaced
}

func TestSinkGuardFastSink(t *testing.T) {
	t.Parallel()
	var got Attempt
	var deadline bool
	g, replaced := guardFor(t, func(ctx context.Context, a Attempt) error {
		got = a
		_, deadline = ctx.Deadline()
		return nil
	}, time.Hour)
	after := 0
	for i := range 3 { // the timer is reused across calls
		require.False(t, g.report(Attempt{DeliveryID: "d", AttemptNumber: i + 1}, func() { after++ }))
	}
	require.Equal(t, 3, after)
	require.Equal(t, 3, got.AttemptNumber)
	require.True(t, deadline, "the sink's context carries the SinkTimeout deadline")
	require.Zero(t, replaced.Load())
}

func TestSinkGuardErrorsAndPanicsAreSwallowed(t *testing.T) {
	t.Parallel()
	for _, sink := range []LogSinkFunc{
		func(context.Context, Attempt) error { return errors.New("disk full") },
		func(context.Context, Attempt) error { panic("bug") },
	} {
		g, replaced := guardFor(t, sink, time.Hour)
		after := 0
		require.False(t, g.report(Attempt{}, func() { after++ }))
		require.Equal(t, 1, after)
		require.Zero(t, replaced.Load())
	}
}

func TestSinkGuardStuckSinkIsReplaced(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var sawDone atomic.Bool
	g, replaced := guardFor(t, func(ctx context.Context, _ Attempt) error {
		<-release // ignores ctx
		select {
		case <-ctx.Done():
			sawDone.Store(true)
		default:
		}
		return nil
	}, time.Millisecond)
	afterRan := make(chan struct{})
	result := make(chan bool)
	go func() { result <- g.report(Attempt{}, func() { close(afterRan) }) }()
	<-afterRan // run by the watchdog while the sink is still stuck
	require.Equal(t, int32(1), replaced.Load())
	close(release)
	require.True(t, <-result, "the stuck worker learns it was replaced")
	require.True(t, sawDone.Load(), "the context was done by the time the sink looked")
	require.Equal(t, int32(1), replaced.Load())
}
