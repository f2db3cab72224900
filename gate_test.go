package webhook

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBreakerStateMachine(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{}.withDefaults()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate

	// Opens after FailureThreshold consecutive failures; a success resets.
	for range 4 {
		b.record(p, breakerFailure, now)
	}
	b.record(p, breakerSuccess, now)
	require.Zero(t, b.Failures)
	for i := range 5 {
		require.Equal(t, BreakerClosed, b.State, "failure %d", i)
		room, _ := b.room(p, now, 0, b.Period)
		require.Equal(t, unlimited, room)
		b.record(p, breakerFailure, now)
	}
	require.Equal(t, BreakerOpen, b.State)

	// Open: refused until OpenTimeout, and told when to come back.
	room, retryAt := b.room(p, now.Add(59*time.Second), 0, b.Period)
	require.Zero(t, room)
	require.Equal(t, now.Add(time.Minute), retryAt)
	require.True(t, b.refuses(p, now.Add(59*time.Second)))

	// Half-open after the timeout, HalfOpenProbes probes at a time, in a
	// new period.
	now = now.Add(time.Minute)
	require.False(t, b.refuses(p, now))
	room, _ = b.room(p, now, 0, b.Period)
	require.Equal(t, 1, room)
	require.Equal(t, BreakerHalfOpen, b.State)
	require.Equal(t, uint64(1), b.Period)
	room, retryAt = b.room(p, now, 1, b.Period)
	require.Zero(t, room, "only HalfOpenProbes probes in flight")
	require.True(t, retryAt.IsZero(), "the next chance comes with the probe's result")

	// A neutral answer (429) changes nothing.
	b.record(p, breakerNeutral, now)
	require.Equal(t, gate{State: BreakerHalfOpen, OpenedAt: now.Add(-time.Minute), Period: 1}, b)

	// SuccessThreshold successes close it.
	b.record(p, breakerSuccess, now)
	require.Equal(t, BreakerHalfOpen, b.State)
	b.record(p, breakerSuccess, now)
	require.Equal(t, BreakerClosed, b.State)
	require.Equal(t, gate{Period: 1}, b, "closed again from scratch")
}

func TestBreakerHalfOpenRoomIsTheProbeLimit(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1, HalfOpenProbes: 3}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, t0)
	for inFlight, want := range []int{3, 2, 1, 0, 0} {
		room, _ := b.room(p, t0.Add(time.Minute), inFlight, b.Period)
		require.Equal(t, want, room, "%d probes in flight", inFlight)
	}
}

func TestBreakerProbesOfAnEarlierPeriodHoldNoSlot(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, t0)
	room, _ := b.room(p, t0.Add(time.Minute), 0, 0)
	require.Equal(t, 1, room)
	b.record(p, breakerFailure, t0.Add(time.Minute)) // reopened with period 1's probe in flight
	room, _ = b.room(p, t0.Add(2*time.Minute), 1, 1)
	require.Equal(t, 1, room, "period 1's probe counts nothing in period 2")
	room, _ = b.room(p, t0.Add(2*time.Minute), 1, 2)
	require.Zero(t, room)
}

func TestBreakerReopensOnHalfOpenFailure(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, t0)
	require.Equal(t, BreakerOpen, b.State)
	t1 := t0.Add(time.Minute)
	room, _ := b.room(p, t1, 0, b.Period)
	require.Equal(t, 1, room)
	b.record(p, breakerSuccess, t1)
	b.record(p, breakerFailure, t1.Add(time.Second))
	require.Equal(t, BreakerOpen, b.State)
	require.Equal(t, t1.Add(time.Second), b.OpenedAt, "the open timeout restarts")
	require.Zero(t, b.Successes)
	room, retryAt := b.room(p, t1.Add(time.Minute), 0, b.Period)
	require.Zero(t, room)
	require.Equal(t, t1.Add(time.Second+time.Minute), retryAt)
}

func TestBreakerNeutralResultsDoNotCount(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 2}.withDefaults()
	now := time.Now()
	var b gate
	b.record(p, breakerFailure, now)
	for range 10 {
		b.record(p, breakerNeutral, now) // 429s and permanent 4xx
	}
	require.Equal(t, BreakerClosed, b.State)
	require.Equal(t, 1, b.Failures)
}

func TestBreakerPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{}.withDefaults()
	require.Equal(t, BreakerPolicy{FailureThreshold: 5, SuccessThreshold: 2, OpenTimeout: time.Minute, HalfOpenProbes: 1, OpenAction: OpenDefer}, p)
	require.NoError(t, p.validate(""))
	require.Equal(t, "half_open", BreakerHalfOpen.String())
}

func TestBreakerLateFailureDoesNotExtendOpen(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, t0)
	b.record(p, breakerFailure, t0.Add(30*time.Second)) // started before it opened
	require.Equal(t, t0, b.OpenedAt)
	room, _ := b.room(p, t0.Add(time.Minute), 0, b.Period)
	require.Equal(t, 1, room, "half-open on schedule")
}
