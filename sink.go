package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// LogSink receives one [Attempt] record per attempt, for audit logs and
// metrics.
//
// Implementations must be safe for concurrent use. The context carries a
// deadline of [RetryPolicy.SinkTimeout]; a sink that returns an error, panics
// or outlives the deadline is logged and otherwise ignored: it cannot stop a
// delivery or delay it beyond that bound. Calls for one delivery start in
// attempt order, each after the previous one returned or outlived its
// deadline. A sink that ignores its context keeps its goroutine running
// after the supervisor has moved on; while [MaxStuckSinkCalls] such calls
// are outstanding, records are dropped (and logged, at most once per
// SinkTimeout) without calling the sink, so a stuck sink costs at most
// that many goroutines (plus one per call that started as the last slot
// filled: at most one per worker goroutine, which on Postgres is up to
// 4×Concurrency) and, once that many are stuck, no delay.
type LogSink interface {
	RecordAttempt(ctx context.Context, a Attempt) error
}

// LogSinkFunc adapts a function to [LogSink].
type LogSinkFunc func(ctx context.Context, a Attempt) error

// RecordAttempt calls f(ctx, a).
func (f LogSinkFunc) RecordAttempt(ctx context.Context, a Attempt) error { return f(ctx, a) }

// MaxStuckSinkCalls is how many log sink calls that outlived their
// deadline may be outstanding before further records are dropped unsent.
const MaxStuckSinkCalls = 32

// sinkStuck reports whether the sink has MaxStuckSinkCalls calls
// outstanding past their deadline; if so it logs (at most once per
// SinkTimeout) that the record of this attempt is dropped.
func (k *core) sinkStuck(a Attempt) bool {
	n := k.stuckSinks.Load()
	if n < MaxStuckSinkCalls {
		return false
	}
	now, last := time.Now().UnixNano(), k.sinkDropLogged.Load()
	if now-last >= int64(k.retry.SinkTimeout) && k.sinkDropLogged.CompareAndSwap(last, now) {
		k.sinkFailed(a.DeliveryID, a.AttemptNumber, a.Outcome,
			fmt.Errorf("%d calls outlived SinkTimeout and have not returned; records are dropped until they do", n))
	}
	return true
}

// sinkGuard calls the log sink for one worker goroutine, bounded by
// SinkTimeout. The sink runs on the worker's goroutine, so a fast sink costs
// no goroutine switch; one timer, reused for every call, is the watchdog. If
// a call outlives the bound, the watchdog logs it, runs the call's after
// function and calls replace, which must start a goroutine to carry on the
// worker's job: a stuck sink costs one goroutine, never a worker. Errors and
// panics are logged and swallowed.
type sinkGuard struct {
	k       *core
	parent  context.Context // the worker's: its values reach the sink
	replace func()
	timer   *time.Timer

	mu   sync.Mutex
	call *sinkCall // the call in progress, if any
}

// sinkCall is one guarded call. claimed (under the guard's mutex) records
// that the caller or the watchdog has taken charge of after.
type sinkCall struct {
	sinkContext
	after   func()
	claimed bool
	// For the watchdog's log line.
	deliveryID string
	attempt    int
	outcome    Outcome
}

func (k *core) newSinkGuard(parent context.Context, replace func()) *sinkGuard {
	g := &sinkGuard{k: k, parent: parent, replace: replace}
	g.timer = time.AfterFunc(time.Hour, g.expire)
	g.timer.Stop()
	return g
}

// report hands a to the sink, then runs after. It returns true when the
// call outlived its bound: the watchdog has run after and replace, and the
// calling worker must exit.
func (g *sinkGuard) report(a Attempt, after func()) (replaced bool) {
	if g.k.sink == nil || g.k.sinkStuck(a) {
		after()
		return false
	}
	timeout := g.k.retry.SinkTimeout
	c := &sinkCall{after: after, deliveryID: a.DeliveryID, attempt: a.AttemptNumber, outcome: a.Outcome}
	c.parent, c.deadline = g.parent, time.Now().Add(timeout)
	g.mu.Lock()
	g.call = c
	g.mu.Unlock()
	g.timer.Reset(timeout)
	err := callSink(&c.sinkContext, g.k.sink, a)
	g.timer.Stop()
	c.expire() // like cancel: a sink that kept the context sees it done
	g.mu.Lock()
	if c.claimed {
		g.mu.Unlock()
		g.k.stuckSinks.Add(-1) // the watchdog counted it
		return true
	}
	c.claimed = true
	g.call = nil
	g.mu.Unlock()
	if err != nil {
		g.k.sinkFailed(a.DeliveryID, a.AttemptNumber, a.Outcome, err)
	}
	after()
	return false
}

// expire is the watchdog. A firing left over from an earlier call finds that
// call gone, or a later deadline, and does nothing.
func (g *sinkGuard) expire() {
	g.mu.Lock()
	c := g.call
	if c == nil || c.claimed || time.Now().Before(c.deadline) {
		g.mu.Unlock()
		return
	}
	c.claimed = true
	g.call = nil
	g.mu.Unlock()
	g.k.stuckSinks.Add(1)
	c.expire()
	g.k.sinkFailed(c.deliveryID, c.attempt, c.outcome, fmt.Errorf("log sink did not return within %v", g.k.retry.SinkTimeout))
	c.after()
	g.replace()
}

// stop releases the guard's timer when its worker exits.
func (g *sinkGuard) stop() { g.timer.Stop() }

// sinkContext is the context a worker passes to the log sink: the worker
// context's values, not its cancellation, and a deadline. It is cheaper than
// context.WithTimeout(context.WithoutCancel(parent)) on the hot path because
// its Done channel is made only if the sink asks for it.
type sinkContext struct {
	parent   context.Context
	deadline time.Time
	mu       sync.Mutex
	done     chan struct{}
	expired  bool
}

func (c *sinkContext) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *sinkContext) Value(key any) any           { return c.parent.Value(key) }

func (c *sinkContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.expired {
			close(c.done)
		}
	}
	return c.done
}

func (c *sinkContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expired {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *sinkContext) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.expired {
		c.expired = true
		if c.done != nil {
			close(c.done)
		}
	}
}

// emit hands a record to the log sink from a goroutine that is not a worker
// (acceptance under OpenDrop), bounded by SinkTimeout. The sink's context
// carries ctx's values.
func (k *core) emit(ctx context.Context, a Attempt) {
	if k.sink == nil || k.sinkStuck(a) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.retry.SinkTimeout)
	defer cancel()
	var mu sync.Mutex
	late := false // the call outlived the bound and is counted as stuck
	done := make(chan error, 1)
	go func() {
		err := callSink(ctx, k.sink, a)
		mu.Lock()
		defer mu.Unlock()
		if late {
			k.stuckSinks.Add(-1)
		}
		done <- err // buffered: under the lock, so the waiter sees it or sets late first
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		mu.Lock()
		select {
		case err = <-done: // returned just now
		default:
			late = true
			k.stuckSinks.Add(1)
			err = fmt.Errorf("log sink did not return within %v", k.retry.SinkTimeout)
		}
		mu.Unlock()
	}
	if err != nil {
		k.sinkFailed(a.DeliveryID, a.AttemptNumber, a.Outcome, err)
	}
}

func (k *core) sinkFailed(deliveryID string, attempt int, outcome Outcome, err error) {
	k.logger.LogAttrs(context.Background(), slog.LevelWarn, "webhook: log sink failed; attempt record dropped",
		slog.String("delivery_id", deliveryID),
		slog.Int("attempt_number", attempt),
		slog.String("outcome", string(outcome)),
		slog.String("error", errorString(err)))
}

func callSink(ctx context.Context, sink LogSink, a Attempt) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("log sink panicked with a %T", r)
		}
	}()
	return sink.RecordAttempt(ctx, a)
}
