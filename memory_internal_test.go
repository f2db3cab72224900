package webhook

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adcpkit/webhook/internal/fakeclock"
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
	b.record(p, breakerFailure, false, t0)

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
	b.record(p, breakerFailure, false, t0)
	t1 := t0.Add(time.Minute)
	stale, ok := admitOne(p, &b, t1) // a probe that will answer late
	require.True(t, ok)
	b.record(p, breakerFailure, false, t1) // another attempt fails: open again
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
		fresh.record(s.k.breaker, breakerFailure, false, at)
	}
	require.Equal(t, BreakerOpen, fresh.State)
	pr, ok := admitOne(s.k.breaker, fresh, at.Add(time.Hour))
	require.True(t, ok)
	require.Greater(t, uint64(pr), uint64(3), "the new breaker's probes cannot be mistaken for the old one's")
	fresh.release(probe(3)) // the stale probe answers
	_, ok = admitOne(s.k.breaker, fresh, at.Add(time.Hour))
	require.False(t, ok, "the current probe still holds the only slot")
}

// hookClock runs its hook (once) the next time it is read.
type hookClock struct {
	*fakeclock.Clock
	hook atomic.Pointer[func()]
}

func (c *hookClock) Now() time.Time {
	if f := c.hook.Swap(nil); f != nil {
		(*f)()
	}
	return c.Clock.Now()
}

// A half-open probe claimed just as RunWorker stops is given back unsent,
// with its probe slot, and the next RunWorker sends it.
func TestMemoryProbeClaimedWhileStoppingIsGivenBack(t *testing.T) {
	t.Parallel()
	clock := &hookClock{Clock: fakeclock.New(at)}
	var sent atomic.Int32
	sender := SenderFunc(func(context.Context, *Request) (*Response, error) {
		sent.Add(1)
		return &Response{StatusCode: 200}, nil
	})
	s, err := NewMemorySupervisor(sender, MemoryConfig{Clock: clock, Concurrency: 1,
		Breaker: BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 1}})
	require.NoError(t, err)
	url := "https://buyer.example/hook"
	s.mu.Lock()
	s.newBreakerLocked(url).record(s.k.breaker, breakerFailure, false, at) // open until at + 1 minute
	s.mu.Unlock()
	r, err := s.SendPrepared(context.Background(), PreparedWebhook{URL: url, Body: []byte(`{}`), IdempotencyKey: NewIdempotencyKey()})
	require.NoError(t, err)
	clock.Advance(time.Minute) // half-open: the delivery is its first probe

	ctx, cancel := context.WithCancel(context.Background())
	stop := func() { cancel() }
	clock.hook.Store(&stop) // RunWorker's context ends as its first claim reads the clock
	require.NoError(t, s.RunWorker(ctx))

	require.Zero(t, sent.Load(), "an attempt started after RunWorker was asked to stop")
	d, err := s.Delivery(context.Background(), r.ID)
	require.NoError(t, err)
	require.Equal(t, StatePending, d.State)
	require.Zero(t, d.Attempts)
	s.mu.Lock()
	b := s.breakers[url]
	require.Equal(t, BreakerHalfOpen, b.State)
	require.Zero(t, b.probes, "the probe slot was given back")
	s.mu.Unlock()

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go s.RunWorker(ctx) //nolint:errcheck // returns nil
	d, err = s.Wait(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, StateDelivered, d.State)
	require.Equal(t, int32(1), sent.Load())
}

// ResetBreaker makes every pending delivery of the key due now, wherever
// it sits in the delay heap: removing while walking the heap by index
// skipped an element that heap.Remove moved up behind the walk.
func TestMemoryResetBreakerReachesTheWholeHeap(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s, err := NewMemorySupervisor(idleSender, MemoryConfig{Clock: clock})
	require.NoError(t, err)
	k, o := "https://k.example/h", "https://o.example/h"
	s.mu.Lock()
	var ks []*memDelivery
	for i, p := range []struct {
		key string
		in  int
	}{{o, 10}, {o, 50}, {o, 20}, {k, 60}, {o, 70}, {o, 30}, {k, 40}} { // heap [o10 o50 o20 k60 o70 o30 k40]
		d := &memDelivery{job: job{id: string(rune('a' + i))}, order: uint64(i + 1), dueAt: clock.Now().Add(time.Duration(p.in) * time.Second)}
		d.breakerKey, d.state = p.key, StatePending
		s.delayed.Push(d)
		if p.key == k {
			ks = append(ks, d)
		}
	}
	s.breakers[k] = &memBreaker{gate: gate{Failures: 2}}
	s.mu.Unlock()

	require.NoError(t, s.ResetBreaker(context.Background(), k))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range ks {
		require.Equal(t, clock.Now(), d.dueAt, "delivery %s", d.id)
		require.Contains(t, s.ready, d)
	}
	require.Len(t, s.delayed, 5, "the other endpoint's deliveries keep their delays")
	for i := 1; i < len(s.delayed); i++ {
		require.False(t, s.delayed.Less(i, (i-1)/2), "still a heap")
	}
}
