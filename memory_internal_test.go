package webhook

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// admitOne asks b's gate for room and, when there is some, admits an
// attempt the way claimLocked does.
func admitOne(p BreakerPolicy, b *memBreaker, now time.Time) (probe, bool) {
	if room, _ := b.room(p, now, b.probes, b.probePeriod); room == 0 {
		return 0, false
	}
	return b.admit(), true
}

func TestMemoryProbeSlotsFollowTheGate(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1, HalfOpenProbes: 2}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b memBreaker
	pr, ok := admitOne(p, &b, t0)
	require.True(t, ok)
	require.Zero(t, pr, "a closed gate's attempt is no probe")
	b.record(p, breakerFailure, t0)

	t1 := t0.Add(time.Minute)
	first, ok := admitOne(p, &b, t1)
	require.True(t, ok)
	require.NotZero(t, first)
	second, ok := admitOne(p, &b, t1)
	require.True(t, ok)
	_, ok = admitOne(p, &b, t1)
	require.False(t, ok, "HalfOpenProbes probes in flight")
	b.release(first) // a neutral answer frees its slot
	third, ok := admitOne(p, &b, t1)
	require.True(t, ok)
	require.Equal(t, second, third, "probes of one period")
}

func TestMemoryStaleProbeCannotFreeANewSlot(t *testing.T) {
	t.Parallel()
	p := BreakerPolicy{FailureThreshold: 1}.withDefaults()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b memBreaker
	b.record(p, breakerFailure, t0)
	t1 := t0.Add(time.Minute)
	stale, ok := admitOne(p, &b, t1) // a probe that will answer late
	require.True(t, ok)
	b.record(p, breakerFailure, t1) // another attempt fails: open again
	require.Equal(t, BreakerOpen, b.State)

	t2 := t1.Add(time.Minute)
	current, ok := admitOne(p, &b, t2)
	require.True(t, ok)
	require.NotEqual(t, stale, current)
	b.release(stale) // the stale probe's answer
	_, ok = admitOne(p, &b, t2)
	require.False(t, ok, "the current period's probe is still in flight")
	b.release(current)
	_, ok = admitOne(p, &b, t2)
	require.True(t, ok)
}

func TestForgottenBreakerPeriodsAreNotReused(t *testing.T) {
	t.Parallel()
	s, err := NewMemorySupervisor(idleSender, MemoryConfig{})
	require.NoError(t, err)
	key := "https://buyer.example/hook"
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.newBreakerLocked(key)
	old.Period = 3 // it went half-open three times; a probe of period 3 may still be in flight
	s.releaseParkedLocked(key, old)
	require.NotContains(t, s.breakers, key, "a closed, clean breaker is forgotten")
	fresh := s.newBreakerLocked(key)
	for range 5 {
		fresh.record(s.k.breaker, breakerFailure, at)
	}
	require.Equal(t, BreakerOpen, fresh.State)
	pr, ok := admitOne(s.k.breaker, fresh, at.Add(time.Hour))
	require.True(t, ok)
	require.Greater(t, uint64(pr), uint64(3), "the new breaker's probes cannot be mistaken for the old one's")
	fresh.release(probe(3)) // the stale probe answers
	_, ok = admitOne(s.k.breaker, fresh, at.Add(time.Hour))
	require.False(t, ok, "the current probe still holds the only slot")
}
