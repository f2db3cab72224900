package webhook_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// observed records what an Observer is told.
type observed struct {
	mu        sync.Mutex
	accepts   []webhook.AcceptInfo
	results   []webhook.AcceptResult
	receipts  []webhook.Receipt
	starts    []webhook.AttemptInfo
	finishes  []webhook.Attempt
	classes   []webhook.Classification
	ctxOK     []bool // AttemptFinished got AttemptStarted's context
	delivered []webhook.FinishInfo
	breakers  []webhook.BreakerChange
	carrier   string
}

type obsKey struct{}

func (o *observed) observer() *webhook.Observer {
	return &webhook.Observer{
		Accepting: func(ctx context.Context, a webhook.AcceptInfo) (string, func(webhook.AcceptResult)) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.accepts = append(o.accepts, a)
			return o.carrier, func(r webhook.AcceptResult) {
				o.mu.Lock()
				defer o.mu.Unlock()
				o.results = append(o.results, r)
				if r.Err == nil && !r.Duplicate {
					o.receipts = append(o.receipts, r.Receipt)
				}
			}
		},
		AttemptStarted: func(ctx context.Context, a webhook.AttemptInfo) context.Context {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.starts = append(o.starts, a)
			return context.WithValue(ctx, obsKey{}, a.DeliveryID)
		},
		AttemptFinished: func(ctx context.Context, a *webhook.Attempt, c webhook.Classification) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.finishes = append(o.finishes, *a)
			o.classes = append(o.classes, c)
			o.ctxOK = append(o.ctxOK, ctx.Value(obsKey{}) == a.DeliveryID)
		},
		DeliveryFinished: func(_ context.Context, d webhook.FinishInfo) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.delivered = append(o.delivered, d)
		},
		BreakerChanged: func(_ context.Context, b webhook.BreakerChange) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.breakers = append(o.breakers, b)
		},
	}
}

func (o *observed) finished() []webhook.FinishInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]webhook.FinishInfo(nil), o.delivered...)
}

// runObserverSuite: both supervisors tell an Observer the same story, and
// the carrier it returns at acceptance comes back at every attempt (on
// Postgres, through the table).
func runObserverSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("TheStoryOfADelivery", func(t *testing.T) {
		t.Parallel()
		o := &observed{carrier: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
		var sawCtx []bool
		var mu sync.Mutex
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Observer = o.observer()
			c.Breaker.FailureThreshold, c.Breaker.SuccessThreshold = 1, 1
			inner := c.Sender
			c.Sender = webhook.SenderFunc(func(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
				mu.Lock()
				sawCtx = append(sawCtx, ctx.Value(obsKey{}) == r.DeliveryID)
				mu.Unlock()
				return inner.Send(ctx, r)
			})
		})
		url := "https://buyer.example/hook?sig=querysecret"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		w := mcp(url, "t1")
		w.NotificationType = "scheduled"
		r := e.sendMCP(w)
		as := e.attempts(1)
		e.clock.Advance(webhook.OpenTimeoutDefault) // the breaker opened: its probe
		as = append(as, e.attempts(1)...)
		d := e.settled(r.ID)
		require.Equal(t, webhook.StateDelivered, d.State)
		require.Eventually(t, func() bool { return len(o.finished()) == 1 }, guard, time.Millisecond)

		o.mu.Lock()
		defer o.mu.Unlock()
		require.Len(t, o.accepts, 1)
		require.Equal(t, "https://buyer.example/hook", o.accepts[0].URL, "loggable")
		require.Equal(t, "scheduled", o.accepts[0].NotificationType)
		require.Equal(t, []webhook.Receipt{r}, o.receipts)
		require.Len(t, o.starts, 2)
		for i, s := range o.starts {
			require.Equal(t, r.ID, s.DeliveryID)
			require.Equal(t, i+1, s.AttemptNumber)
			require.Equal(t, o.carrier, s.Carrier, "the carrier comes back at every attempt")
			require.Equal(t, "https://buyer.example/hook", s.URL)
		}
		require.Equal(t, []bool{true, true}, sawCtx, "the Sender got AttemptStarted's context")
		require.Equal(t, []bool{true, true}, o.ctxOK)
		require.Equal(t, []webhook.Outcome{webhook.OutcomeFailure, webhook.OutcomeSuccess}, []webhook.Outcome{o.finishes[0].Outcome, o.finishes[1].Outcome})
		require.Equal(t, webhook.VerdictRetry, o.classes[0].Verdict)
		require.True(t, o.classes[0].BreakerFailure)
		require.Equal(t, webhook.FinishInfo{DeliveryID: r.ID, State: webhook.StateDelivered, Reason: webhook.FinishDelivered, Attempts: 2,
			URL: "https://buyer.example/hook", TaskType: webhook.TaskCreateMediaBuy, NotificationType: "scheduled", Carrier: o.carrier,
			AcceptedAt: epoch, FinishedAt: as[1].OccurredAt.Add(as[1].ResponseTime)}, o.delivered[0])
		// Transitions that a worker's write makes. (Open to half-open
		// happens by the clock, with no write: the memory supervisor
		// reports the probe's success as half-open -> closed, Postgres as
		// open -> closed, from the row.)
		require.Len(t, o.breakers, 2, "%+v", o.breakers)
		require.Equal(t, webhook.BreakerChange{Key: "https://buyer.example/hook", From: webhook.BreakerClosed, To: webhook.BreakerOpen, At: epoch}, o.breakers[0])
		require.Equal(t, webhook.BreakerClosed, o.breakers[1].To)
	})

	t.Run("Reasons", func(t *testing.T) {
		t.Parallel()
		o := &observed{carrier: "bad\ncarrier"} // not stored: not printable
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Observer = o.observer()
			c.Retry.MaxAttempts = 2
		})
		in := e.inspector()
		rejected, exhausted := "https://buyer.example/rejects", "https://buyer.example/down"
		e.sender.on(rejected, step{status: 400})
		e.sender.on(exhausted, step{status: 503}, step{status: 503})
		e.startWorker()
		r1 := e.sendMCP(mcp(rejected, "t1"))
		e.deliverAll(1)
		r2 := e.sendMCP(mcp(exhausted, "t2"))
		e.deliverAll(1)
		e.settled(r1.ID)
		e.settled(r2.ID)
		require.Eventually(t, func() bool { return len(o.finished()) == 2 }, guard, time.Millisecond)
		got := map[string]webhook.FinishReason{}
		for _, f := range o.finished() {
			got[f.DeliveryID] = f.Reason
			require.Empty(t, f.Carrier)
		}
		require.Equal(t, map[string]webhook.FinishReason{r1.ID: webhook.FinishRejected, r2.ID: webhook.FinishExhausted}, got)

		// Past the horizon, a redelivery re-emits: accepted again, and
		// linked.
		e.clock.Advance(25 * time.Hour)
		re, err := in.Redeliver(context.Background(), r1.ID)
		require.NoError(t, err)
		o.mu.Lock()
		last := o.accepts[len(o.accepts)-1]
		o.mu.Unlock()
		require.Equal(t, r1.ID, last.ReemissionOf)
		require.Equal(t, "https://buyer.example/rejects", last.URL)
		e.deliverAll(1)
		require.Eventually(t, func() bool { return len(o.finished()) == 3 }, guard, time.Millisecond)
		require.Equal(t, re.ID, o.finished()[2].DeliveryID)

		// A pending delivery whose horizon passes while nothing can be
		// attempted finishes with reason horizon.
		e.sender.on(exhausted, step{status: 503})
		r3 := e.sendMCP(mcp(exhausted, "t3"))
		a := e.attempts(1)[0]
		require.True(t, a.WillRetry)
		e.clock.Advance(25 * time.Hour)
		e.attempts(1)
		require.Eventually(t, func() bool { return len(o.finished()) == 4 }, guard, time.Millisecond)
		require.Equal(t, r3.ID, o.finished()[3].DeliveryID)
		require.Equal(t, webhook.FinishHorizon, o.finished()[3].Reason)
	})

	// A duplicate submission is told as one; nothing new is stored.
	t.Run("DuplicateIsNotANewDelivery", func(t *testing.T) {
		t.Parallel()
		o := &observed{carrier: "first"}
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Observer = o.observer() })
		w := mcp("https://buyer.example/hook", "t1")
		w.IdempotencyKey = "whk_0123456789abcdef"
		r1 := e.sendMCP(w)
		o.mu.Lock()
		o.carrier = "second"
		o.mu.Unlock()
		r2 := e.sendMCP(w)
		require.Equal(t, r1, r2)
		e.startWorker()
		e.attempts(1)
		o.mu.Lock()
		defer o.mu.Unlock()
		require.Len(t, o.results, 2)
		require.False(t, o.results[0].Duplicate)
		require.True(t, o.results[1].Duplicate)
		require.Equal(t, r1, o.results[1].Receipt)
		require.Equal(t, []webhook.Receipt{r1}, o.receipts)
		require.Equal(t, "first", o.starts[0].Carrier, "the duplicate's carrier is dropped")
	})

	// Hooks may call back into the supervisor (no lock is held), and a
	// hook that panics is logged and ignored: delivery goes on.
	t.Run("HooksMayCallBackAndMayPanic", func(t *testing.T) {
		t.Parallel()
		var in webhook.Inspector
		states := make(chan webhook.BreakerState, 10)
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Breaker.FailureThreshold = 1
			c.Retry.MaxAttempts = 1
			c.Observer = &webhook.Observer{
				BreakerChanged: func(ctx context.Context, b webhook.BreakerChange) {
					st, err := in.Stats(ctx) // would deadlock under the memory supervisor's lock
					if err == nil {
						states <- b.To
						_ = st
					}
				},
				AttemptFinished: func(context.Context, *webhook.Attempt, webhook.Classification) { panic("observer bug") },
			}
		})
		in = e.inspector()
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		e.attempts(1)
		require.Equal(t, webhook.StateFailed, e.settled(r.ID).State)
		select {
		case st := <-states:
			require.Equal(t, webhook.BreakerOpen, st)
		case <-time.After(guard):
			t.Fatal("BreakerChanged did not return")
		}
		require.NoError(t, in.ResetBreaker(context.Background(), url))
		select {
		case st := <-states:
			require.Equal(t, webhook.BreakerClosed, st)
		case <-time.After(guard):
			t.Fatal("ResetBreaker's BreakerChanged did not return")
		}
		r2 := e.sendMCP(mcp(url, "t2")) // the worker survived the panic
		e.attempts(1)
		e.settled(r2.ID)
		require.Equal(t, 1, strings.Count(e.logs.String(), "an Observer function panicked"), e.logs.String())
	})

	t.Run("OperatorResetIsAChange", func(t *testing.T) {
		t.Parallel()
		o := &observed{}
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Observer = o.observer()
			c.Breaker.FailureThreshold = 1
			c.Retry.MaxAttempts = 1
		})
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: http.StatusServiceUnavailable})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		e.attempts(1)
		e.settled(r.ID)
		require.NoError(t, e.inspector().ResetBreaker(context.Background(), url))
		require.NoError(t, e.inspector().ResetBreaker(context.Background(), url), "closed already: no change")
		o.mu.Lock()
		defer o.mu.Unlock()
		require.Len(t, o.breakers, 2)
		require.Equal(t, webhook.BreakerChange{Key: url, From: webhook.BreakerOpen, To: webhook.BreakerClosed, Reset: true, At: epoch}, o.breakers[1])
	})
}

func TestMemoryObserver(t *testing.T) {
	t.Parallel()
	runObserverSuite(t, newMemory)
}

func TestPostgresObserver(t *testing.T) {
	t.Parallel()
	runObserverSuite(t, newPostgres)
}
