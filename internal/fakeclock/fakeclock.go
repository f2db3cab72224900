// Package fakeclock is a manually advanced clock for tests. It satisfies
// webhook.Clock without importing it.
package fakeclock

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake clock. Time moves only when Advance or Set is called. The
// zero value is not usable; call New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*timer]struct{}
	changed chan struct{} // closed and replaced whenever a timer is armed
}

type timer struct {
	deadline time.Time
	c        chan time.Time
}

// New returns a clock reading start.
func New(start time.Time) *Clock {
	return &Clock{now: start, timers: make(map[*timer]struct{}), changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// TimerAt returns a channel that receives once the clock reaches deadline.
func (c *Clock) TimerAt(deadline time.Time) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{deadline: deadline, c: make(chan time.Time, 1)}
	if !deadline.After(c.now) {
		t.c <- c.now
		return t.c, func() bool { return false }
	}
	c.timers[t] = struct{}{}
	close(c.changed)
	c.changed = make(chan struct{})
	return t.c, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[t]
		delete(c.timers, t)
		return pending
	}
}

// Advance moves the clock forward by d and fires the timers that fall due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// Set moves the clock to t (never backwards) and fires the timers that fall due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.setLocked(t)
	}
}

func (c *Clock) setLocked(t time.Time) {
	c.now = t
	for tm := range c.timers {
		if !tm.deadline.After(t) {
			tm.c <- t
			delete(c.timers, tm)
		}
	}
}

// WaitForTimer blocks until a pending timer satisfies match, and reports
// whether one did before ctx ended.
func (c *Clock) WaitForTimer(ctx context.Context, match func(deadline time.Time) bool) bool {
	for {
		c.mu.Lock()
		for t := range c.timers {
			if match(t.deadline) {
				c.mu.Unlock()
				return true
			}
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}
