package webhook

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The MemorySupervisor's Inspector methods beyond single lookups. Each
// scans the deliveries it holds under the supervisor's lock: the memory
// supervisor is for development and tests, where they are few.

// Deliveries lists the deliveries f selects, newest first, without their
// bodies. See [Inspector].
func (s *MemorySupervisor) Deliveries(_ context.Context, f DeliveryFilter, p Page) (DeliveryList, error) {
	limit, err := p.limit()
	if err != nil {
		return DeliveryList{}, err
	}
	ds, next, err := memList(s, f, p.After, limit, func(d *memDelivery, v *Delivery) (Delivery, bool) { return *v, true })
	return DeliveryList{Deliveries: ds, Next: next}, err
}

// memList returns, for each delivery f selects that was accepted before
// the cursor after, newest first, at most limit of them, what keep makes
// of it (under the lock) if it keeps it, and the next cursor.
func memList[T any](s *MemorySupervisor, f DeliveryFilter, after string, limit int, keep func(*memDelivery, *Delivery) (T, bool)) ([]T, string, error) {
	if err := f.check(); err != nil {
		return nil, "", err
	}
	before := uint64(0) // 0: no bound
	if after != "" {
		n, err := strconv.ParseUint(strings.TrimPrefix(after, s.idPrefix), 10, 64)
		if err != nil || !strings.HasPrefix(after, s.idPrefix) || n == 0 {
			return nil, "", badCursor(after)
		}
		before = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ds []*memDelivery
	for _, d := range s.byID {
		if before == 0 || d.order < before {
			if v := d.view(false); f.matches(&v) {
				ds = append(ds, d)
			}
		}
	}
	slices.SortFunc(ds, func(a, b *memDelivery) int { return cmp.Compare(b.order, a.order) })
	next := ""
	if len(ds) > limit {
		ds = ds[:limit]
		next = ds[limit-1].id
	}
	out := make([]T, 0, len(ds))
	for _, d := range ds {
		v := d.view(false)
		if t, ok := keep(d, &v); ok {
			out = append(out, t)
		}
	}
	return out, next, nil
}

// candidates lists the failed deliveries f selects that were not
// re-emitted (see bulkSource).
func (s *MemorySupervisor) candidates(_ context.Context, f DeliveryFilter, after string, limit int) ([]candidate, string, error) {
	return memList(s, f, after, limit, func(d *memDelivery, _ *Delivery) (candidate, bool) {
		return candidate{id: d.id, anchor: d.anchor(), status: d.lastStatus, prepared: !d.mcp}, d.reemitted == ""
	})
}

// RedeliverMatching redelivers every failed delivery f selects, one at a
// time, newest first, as [MemorySupervisor.Redeliver] does. See
// [BulkOptions] and [Inspector]. A full queue ([ErrQueueFull]) stops it,
// with what it did so far.
func (s *MemorySupervisor) RedeliverMatching(ctx context.Context, f DeliveryFilter, o BulkOptions) (BulkResult, error) {
	return redeliverMatching(ctx, s.k, s, f, o)
}

// Stats counts the deliveries the supervisor holds by state. See
// [Inspector].
func (s *MemorySupervisor) Stats(_ context.Context) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.k.clock.Now()
	var st Stats
	for _, d := range s.byID {
		switch d.state {
		case StatePending:
			st.Pending++
			if d.dueAt.After(now) {
				continue
			}
			if b := s.breakers[d.breakerKey]; b != nil {
				g := b.gate
				if g.advance(s.k.breaker, now); g.State != BreakerClosed {
					continue
				}
			}
			st.Due++
			if st.OldestDueAt.IsZero() || d.dueAt.Before(st.OldestDueAt) {
				st.OldestDueAt = d.dueAt
			}
		case StateRunning:
			st.Running++
		case StateDelivered:
			st.Delivered++
		case StateFailed:
			st.Failed++
		}
	}
	if !st.OldestDueAt.IsZero() {
		st.OldestDueAge = now.Sub(st.OldestDueAt)
	}
	for _, b := range s.breakers {
		g := b.gate
		if g.advance(s.k.breaker, now); g.State != BreakerClosed {
			st.OpenBreakers++
		}
	}
	return st, nil
}

// Breakers lists the breakers that are open, half-open or counting
// failures, in key order. See [Inspector].
func (s *MemorySupervisor) Breakers(_ context.Context, p Page) (BreakerList, error) {
	limit, err := p.limit()
	if err != nil {
		return BreakerList{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.k.clock.Now()
	var out BreakerList
	for key, b := range s.breakers {
		if key > p.After && b.listed() {
			out.Breakers = append(out.Breakers, b.info(key, s.k.breaker, now))
		}
	}
	slices.SortFunc(out.Breakers, func(a, b BreakerInfo) int { return strings.Compare(a.Key, b.Key) })
	if len(out.Breakers) > limit {
		out.Breakers = out.Breakers[:limit]
		out.Next = out.Breakers[limit-1].Key
	}
	return out, nil
}

// ResetBreaker closes key's breaker and makes its pending deliveries due
// now. See [Inspector].
func (s *MemorySupervisor) ResetBreaker(ctx context.Context, key string) error {
	s.mu.Lock()
	b := s.breakers[key]
	if b == nil || b.State == BreakerClosed && b.Failures == 0 {
		s.mu.Unlock()
		return nil // closed with no failures counted already
	}
	before := b.State
	s.seq++
	defer s.k.breakerReset(ctx, key, before, s.seq) // after the unlock below
	defer s.mu.Unlock()
	// A new period: a probe still in flight cannot free a slot of it. The
	// endpoint's run of failures goes on until a 2xx.
	b.gate = gate{Period: b.Period + 1, health: b.health}
	now := s.k.clock.Now()
	kept := s.delayed[:0]
	for _, d := range s.delayed {
		if d.breakerKey == key && d.dueAt.After(now) {
			d.dueAt = now
			s.ready = append(s.ready, d)
			continue
		}
		kept = append(kept, d)
	}
	clear(s.delayed[len(kept):])
	s.delayed = kept
	heap.Init(&s.delayed)
	s.releaseParkedLocked(key, b)
	s.signalLocked()
	return nil
}

// Purge forgets delivered and failed deliveries that finished before
// before, with their attempt records, and returns how many. See
// [Inspector].
func (s *MemorySupervisor) Purge(_ context.Context, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	kept := s.finished[:0]
	for _, id := range s.finished {
		d := s.byID[id]
		if d == nil || !d.finishedAt.Before(before) {
			kept = append(kept, id)
			continue
		}
		s.heldBytes -= d.size
		delete(s.byID, id)
		if s.byKey[d.key] == d {
			delete(s.byKey, d.key)
		}
		n++
	}
	clear(s.finished[len(kept):])
	s.finished = kept
	return n, nil
}

// through returns the cursor of the page that starts with the delivery id.
func (s *MemorySupervisor) through(id string) (string, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(id, s.idPrefix), 10, 64)
	if err != nil || !strings.HasPrefix(id, s.idPrefix) || n == 0 {
		return "", fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.idPrefix + strconv.FormatUint(n+1, 10), nil
}
