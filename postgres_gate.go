package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// The endpoint gate's persistence: loading and saving a gate's row, and the
// cache of the newest rows one RunWorker call has seen. The transitions
// themselves are gate.go's.

// saveGate persists a gate whose row the caller has locked, and returns
// the row's new version.
func (s *PostgresSupervisor) saveGate(ctx context.Context, q querier, key string, b gate, now time.Time) (int64, error) {
	var version int64
	err := queryRow(ctx, q, s.q.saveBreaker, saveGateParams{Key: key, gateParams: s.gateParams(b), Now: now}).Scan(&version)
	return version, dbError("save gate", err)
}

// gateParams is b's row.
func (s *PostgresSupervisor) gateParams(b gate) gateParams {
	return gateParams{
		GateState: b.State.String(), GateFailures: b.Failures, GateSuccesses: b.Successes,
		GateOpenedAt: timeOrNil(b.OpenedAt), GatePeriod: int64(b.Period), GateRetryAt: timeOrNil(b.retryAt(s.k.breaker)),
		GateFailingSince: timeOrNil(b.FailingSince), GateFailedDeliveries: b.FailedDeliveries, GateFailing: b.Failing,
	}
}

// gate returns the gate and its row version.
func (r *gateRow) gate() (gate, int64, error) {
	if r.State == nil {
		return gate{}, 0, nil
	}
	var g gate
	switch *r.State {
	case "closed":
		g.State = BreakerClosed
	case "open":
		g.State = BreakerOpen
	case "half_open":
		g.State = BreakerHalfOpen
	default:
		return gate{}, 0, fmt.Errorf("unknown gate state %q", *r.State)
	}
	if p := deref(r.Period); p >= 0 {
		g.Period = uint64(p)
	}
	g.Failures, g.Successes, g.OpenedAt = deref(r.Failures), deref(r.Successes), deref(r.OpenedAt)
	g.FailingSince, g.FailedDeliveries, g.Failing = deref(r.FailingSince), deref(r.FailedDeliveries), deref(r.Failing)
	return g, deref(r.Version), nil
}

// gateCache is the newest row of each gate that one RunWorker call has
// written, or seen when a write found it moved, so that a completion's
// first guess at its gate is usually right. Safe for concurrent use.
type gateCache struct {
	mu sync.Mutex
	m  map[string]cachedGate
}

type cachedGate struct {
	g       gate
	version int64
	at      time.Time // when it was cached, by the real clock
}

// maxCachedGates bounds the cache; past it the cache starts again empty.
const maxCachedGates = 10_000

func newGateCache() *gateCache { return &gateCache{m: make(map[string]cachedGate)} }

// snapshot returns the newer of j's gate and the cached one.
func (c *gateCache) snapshot(j *pgJob) (gate, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[j.breakerKey]; ok && e.version > j.version {
		return e.g, e.version
	}
	return j.gate, j.version
}

// put records a gate's row at version, unless a newer one is cached.
func (c *gateCache) put(key string, g gate, version int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && e.version >= version {
		return
	}
	if len(c.m) >= maxCachedGates {
		clear(c.m)
	}
	c.m[key] = cachedGate{g, version, time.Now()}
}

// since returns key's gate if it was cached after t (a claim's start):
// newer than what that claim saw.
func (c *gateCache) since(key string, t time.Time) (gate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	return e.g, ok && e.at.After(t)
}

// forget drops what the cache knows of key.
func (c *gateCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// reload reads the rows of keys and caches them. On error it forgets
// them: completions then start from what their jobs saw.
func (c *gateCache) reload(ctx context.Context, s *PostgresSupervisor, keys []string) {
	gates, err := s.loadGates(ctx, s.db, keys)
	if err != nil {
		for _, k := range keys {
			c.forget(k)
		}
		return
	}
	for k, e := range gates {
		c.put(k, e.g, e.version)
	}
}

// loadGates reads the gate rows of keys; a key with no row is missing
// from the result (a closed gate at version 0).
func (s *PostgresSupervisor) loadGates(ctx context.Context, q querier, keys []string) (map[string]cachedGate, error) {
	rows, err := collect[keyedGateRow](query(ctx, q, s.q.gates, keysParams{Keys: keys}))
	if err != nil {
		return nil, err
	}
	out := make(map[string]cachedGate, len(rows))
	for _, r := range rows {
		g, v, err := r.gate()
		if err != nil {
			return nil, err
		}
		out[r.Key] = cachedGate{g: g, version: v}
	}
	return out, nil
}
