package webhook

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// idleSender is a Sender for tests that never send.
var idleSender = SenderFunc(func(context.Context, *Request) (*Response, error) { return nil, ErrNoResponse })

func guardFor(t *testing.T, sink LogSinkFunc, timeout time.Duration) (*sinkGuard, chan struct{}) {
	t.Helper()
	k, err := newCore(commonConfig{sender: idleSender, sink: sink, retry: RetryPolicy{SinkTimeout: timeout}})
	require.NoError(t, err)
	replaced := make(chan struct{}, 10)
	g := k.newSinkGuard(context.Background(), func() { replaced <- struct{}{} })
	t.Cleanup(g.stop)
	return g, replaced
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
	require.Empty(t, replaced)
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
		require.Empty(t, replaced)
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
	<-replaced // and a replacement worker started
	close(release)
	require.True(t, <-result, "the stuck worker learns it was replaced")
	require.True(t, sawDone.Load(), "the context was done by the time the sink looked")
	require.Empty(t, replaced, "replaced once")
}
