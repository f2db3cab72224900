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
		b.record(p, breakerFailure, false, now)
	}
	b.record(p, breakerSuccess, false, now)
	require.Zero(t, b.Failures)
	for i := range 5 {
		require.Equal(t, BreakerClosed, b.State, "failure %d", i)
		room, _ := b.room(p, now, 0, b.Period)
		require.Equal(t, unlimited, room)
		b.record(p, breakerFailure, false, now)
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
	b.record(p, breakerNeutral, false, now)
	require.Equal(t, gate{State: BreakerHalfOpen, OpenedAt: now.Add(-time.Minute), Period: 1,
		health: health{FailingSince: now.Add(-time.Minute)}}, b, "the endpoint's run of failures goes on")

	// SuccessThreshold successes close it.
	b.record(p, breakerSuccess, false, now)
	require.Equal(t, BreakerHalfOpen, b.State)
	b.record(p, breakerSuccess, false, now)
	require.Equal(t, BreakerClosed, b.State)
	require.Equal(t, gate{Period: 1}, b, "closed again from scratch, the run of failures over")
}

func TestBreakerHalfOpenRoomIsTheProbeLimit(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1, HalfOpenProbes: 3}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, false, t0)
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
	b.record(p, breakerFailure, false, t0)
	room, _ := b.room(p, t0.Add(time.Minute), 0, 0)
	require.Equal(t, 1, room)
	b.record(p, breakerFailure, false, t0.Add(time.Minute)) // reopened with period 1's probe in flight
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
	b.record(p, breakerFailure, false, t0)
	require.Equal(t, BreakerOpen, b.State)
	t1 := t0.Add(time.Minute)
	room, _ := b.room(p, t1, 0, b.Period)
	require.Equal(t, 1, room)
	b.record(p, breakerSuccess, false, t1)
	b.record(p, breakerFailure, false, t1.Add(time.Second))
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
	b.record(p, breakerFailure, false, now)
	for range 10 {
		b.record(p, breakerNeutral, false, now) // 429s and permanent 4xx
	}
	require.Equal(t, BreakerClosed, b.State)
	require.Equal(t, 1, b.Failures)
}

func TestBreakerPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{}.withDefaults()
	require.Equal(t, BreakerPolicy{FailureThreshold: 5, SuccessThreshold: 2, OpenTimeout: time.Minute, HalfOpenProbes: 1, OpenAction: OpenDefer,
		FailingDeliveries: 5, FailingFor: 15 * time.Minute}, p)
	require.NoError(t, p.validate(""))
	require.Equal(t, "half_open", BreakerHalfOpen.String())
}

func TestBreakerLateFailureDoesNotExtendOpen(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b gate
	b.record(p, breakerFailure, false, t0)
	b.record(p, breakerFailure, false, t0.Add(30*time.Second)) // started before it opened
	require.Equal(t, t0, b.OpenedAt)
	room, _ := b.room(p, t0.Add(time.Minute), 0, b.Period)
	require.Equal(t, 1, room, "half-open on schedule")
}

func TestEndpointHealthRunOfFailures(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	t.Run("failed deliveries", func(t *testing.T) {
		var b gate
		b.record(p, breakerNeutral, false, t0) // a 429 retried: no run
		require.Equal(t, health{}, b.health)
		for i := 1; i < FailingDeliveriesDefault; i++ {
			b.record(p, breakerNeutral, true, t0.Add(time.Duration(i)*time.Second)) // a 4xx rejection
			require.Equal(t, health{FailingSince: t0.Add(time.Second), FailedDeliveries: i}, b.health)
		}
		require.True(t, b.clean() == false)
		b.record(p, breakerNeutral, true, t0.Add(time.Minute))
		require.Equal(t, health{FailingSince: t0.Add(time.Second), FailedDeliveries: 5, Failing: true}, b.health)
		require.Equal(t, BreakerClosed, b.State, "rejections are not the breaker's")
		b.record(p, breakerSuccess, false, t0.Add(2*time.Minute))
		require.Equal(t, health{}, b.health, "a 2xx ends the run")
		require.True(t, b.clean())
	})

	t.Run("duration", func(t *testing.T) {
		p := BreakerPolicy{FailureThreshold: 3}.withDefaults()
		var b gate
		b.record(p, breakerFailure, false, t0)
		for _, at := range []time.Duration{time.Minute, 5 * time.Minute, FailingForDefault - time.Second} {
			b.record(p, breakerFailure, false, t0.Add(at))
			require.False(t, b.Failing, "at %v", at)
			require.Equal(t, t0, b.FailingSince)
		}
		require.Equal(t, BreakerOpen, b.State)
		b.record(p, breakerFailure, false, t0.Add(FailingForDefault)) // a probe (or a late attempt) fails
		require.True(t, b.Failing)
		require.Equal(t, BreakerOpen, b.State)
		require.Equal(t, t0, b.FailingSince, "the breaker's transitions leave the run alone")
		require.Zero(t, b.FailedDeliveries)

		// Half-open, then closed by probes: the first 2xx ends the run.
		now := t0.Add(FailingForDefault + p.OpenTimeout)
		b.advance(p, now)
		require.Equal(t, BreakerHalfOpen, b.State)
		require.True(t, b.Failing)
		b.record(p, breakerSuccess, false, now)
		require.Equal(t, BreakerHalfOpen, b.State)
		require.Equal(t, health{}, b.health)
	})

	t.Run("rules off", func(t *testing.T) {
		off := BreakerPolicy{FailingDeliveries: RuleOff, FailingFor: RuleOff}.withDefaults()
		require.NoError(t, off.validate(""))
		var b gate
		for i := range 100 {
			b.record(off, breakerFailure, true, t0.Add(time.Duration(i)*time.Hour))
		}
		require.False(t, b.Failing)
		require.Equal(t, 100, b.FailedDeliveries)

		byCount := BreakerPolicy{FailingDeliveries: 2, FailingFor: RuleOff}.withDefaults()
		b = gate{}
		b.record(byCount, breakerFailure, true, t0)
		require.False(t, b.Failing)
		b.record(byCount, breakerFailure, true, t0.Add(time.Second))
		require.True(t, b.Failing)
	})
}

func TestBreakerPolicyHealthValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p     BreakerPolicy
		field string
	}{
		{BreakerPolicy{FailingDeliveries: -2}, "Breaker.FailingDeliveries"},
		{BreakerPolicy{FailingFor: -time.Second}, "Breaker.FailingFor"},
	} {
		err := tc.p.withDefaults().validate("Breaker.")
		var ce *ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, tc.field, ce.Field)
		require.Contains(t, err.Error(), "RuleOff")
	}
}
