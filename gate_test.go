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
		b.record(p, breakerFailure, 0, now)
	}
	b.record(p, breakerSuccess, 0, now)
	require.Zero(t, b.Failures)
	for i := range 5 {
		require.Equal(t, BreakerClosed, b.State, "failure %d", i)
		ok, pr, _ := b.allow(p, now)
		require.True(t, ok)
		require.Zero(t, pr)
		b.record(p, breakerFailure, 0, now)
	}
	require.Equal(t, BreakerOpen, b.State)

	// Open: refused until OpenTimeout, and told when to come back.
	ok, _, retryAt := b.allow(p, now.Add(59*time.Second))
	require.False(t, ok)
	require.Equal(t, now.Add(time.Minute), retryAt)
	require.True(t, b.refuses(p, now.Add(59*time.Second)))

	// Half-open after the timeout, one probe at a time.
	now = now.Add(time.Minute)
	require.False(t, b.refuses(p, now))
	ok, pr, _ := b.allow(p, now)
	require.True(t, ok)
	require.NotZero(t, pr)
	require.Equal(t, BreakerHalfOpen, b.State)
	ok, _, retryAt = b.allow(p, now)
	require.False(t, ok, "only HalfOpenProbes probes in flight")
	require.True(t, retryAt.IsZero(), "the next chance comes with the probe's result")

	// A neutral answer (429) releases the probe and changes nothing else.
	b.record(p, breakerNeutral, pr, now)
	require.Equal(t, BreakerHalfOpen, b.State)
	require.Zero(t, b.Probes)

	// SuccessThreshold successes close it.
	ok, pr, _ = b.allow(p, now)
	require.True(t, ok && pr != 0)
	b.record(p, breakerSuccess, pr, now)
	require.Equal(t, BreakerHalfOpen, b.State)
	ok, pr, _ = b.allow(p, now)
	require.True(t, ok && pr != 0)
	b.record(p, breakerSuccess, pr, now)
	require.Equal(t, BreakerClosed, b.State)
	require.Equal(t, gate{Period: 1}, b, "closed again from scratch")
}

func TestBreakerReopensOnHalfOpenFailure(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, 0, t0)
	require.Equal(t, BreakerOpen, b.State)
	t1 := t0.Add(time.Minute)
	ok, pr, _ := b.allow(p, t1)
	require.True(t, ok && pr != 0)
	b.record(p, breakerSuccess, pr, t1)
	ok, pr, _ = b.allow(p, t1)
	require.True(t, ok && pr != 0)
	b.record(p, breakerFailure, pr, t1.Add(time.Second))
	require.Equal(t, BreakerOpen, b.State)
	require.Equal(t, t1.Add(time.Second), b.OpenedAt, "the open timeout restarts")
	require.Zero(t, b.Successes)
	ok, _, retryAt := b.allow(p, t1.Add(time.Minute))
	require.False(t, ok)
	require.Equal(t, t1.Add(time.Second+time.Minute), retryAt)
}

func TestBreakerNeutralResultsDoNotCount(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 2}.withDefaults()
	now := time.Now()
	var b gate
	b.record(p, breakerFailure, 0, now)
	for range 10 {
		b.record(p, breakerNeutral, 0, now) // 429s and permanent 4xx
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

func TestBreakerStaleProbeCannotFreeANewSlot(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, 0, t0)
	t1 := t0.Add(time.Minute)
	ok, stale, _ := b.allow(p, t1) // a probe that will answer late
	require.True(t, ok)
	b.record(p, breakerFailure, 0, t1) // another attempt fails: open again
	require.Equal(t, BreakerOpen, b.State)

	t2 := t1.Add(time.Minute)
	ok, current, _ := b.allow(p, t2)
	require.True(t, ok)
	require.NotEqual(t, stale, current)
	b.record(p, breakerNeutral, stale, t2) // the stale probe's answer
	ok, _, _ = b.allow(p, t2)
	require.False(t, ok, "the current period's probe is still in flight")
	b.record(p, breakerNeutral, current, t2)
	ok, _, _ = b.allow(p, t2)
	require.True(t, ok)
}

func TestBreakerLateFailureDoesNotExtendOpen(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, 0, t0)
	b.record(p, breakerFailure, 0, t0.Add(30*time.Second)) // started before it opened
	require.Equal(t, t0, b.OpenedAt)
	ok, _, _ := b.allow(p, t0.Add(time.Minute))
	require.True(t, ok, "half-open on schedule")
}
