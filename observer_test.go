package webhook_test

import (
	"context"
	"fmt"
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
	health    []webhook.HealthEvent
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
		Health: func(_ context.Context, h webhook.HealthEvent) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.health = append(o.health, h)
		},
	}
}

// settledReason waits for id's delivery_exhausted event and returns its
// reason.
func (e *env) settledReason(id string, o *observed) webhook.FinishReason {
	e.t.Helper()
	var reason webhook.FinishReason
	require.Eventually(e.t, func() bool {
		for _, h := range o.events() {
			if h.Kind == webhook.HealthDeliveryExhausted && h.Delivery.DeliveryID == id {
				reason = h.Delivery.Reason
				return true
			}
		}
		return false
	}, guard, time.Millisecond)
	return reason
}

func (o *observed) events() []webhook.HealthEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]webhook.HealthEvent(nil), o.health...)
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
		// The breaker's transitions, the same from both supervisors: opened
		// by the failure, half-open when the probe was claimed, closed by
		// its success. The run of failures was too short to report.
		key, later := "https://buyer.example/hook", epoch.Add(webhook.OpenTimeoutDefault)
		require.Equal(t, []webhook.HealthEvent{
			{Kind: webhook.HealthBreakerOpened, Key: key, At: epoch, Seq: 1, From: webhook.BreakerClosed, To: webhook.BreakerOpen},
			{Kind: webhook.HealthBreakerHalfOpen, Key: key, At: later, Seq: 2, From: webhook.BreakerOpen, To: webhook.BreakerHalfOpen},
			{Kind: webhook.HealthBreakerClosed, Key: key, At: later, Seq: 3, From: webhook.BreakerHalfOpen, To: webhook.BreakerClosed},
		}, o.health)
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

	// An endpoint's run of failures is reported when it reaches
	// FailingDeliveries failed deliveries, once, and its end when a 2xx
	// comes; deliveries that ran out of attempts are reported each.
	t.Run("HealthEventsByCount", func(t *testing.T) {
		t.Parallel()
		o := &observed{}
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Observer = o.observer()
			c.Retry.MaxAttempts = 1
			c.Breaker.FailureThreshold = 100 // the run of failures, not the breaker
			c.Breaker.FailingDeliveries, c.Breaker.FailingFor = 2, webhook.RuleOff
		})
		in := e.inspector()
		url, key := "https://buyer.example/hook?token=querysecret", "https://buyer.example/hook"
		e.sender.on(url, step{status: 400}, step{status: 503}, step{status: 503}, step{status: 200})
		e.startWorker()
		var first webhook.Attempt
		var ids []string
		for i := range 4 {
			if i == 3 { // before the 2xx: the run, as an operator sees it
				list, err := in.Breakers(context.Background(), webhook.Page{})
				require.NoError(t, err)
				require.Len(t, list.Breakers, 1)
				b := list.Breakers[0]
				require.Equal(t, key, webhook.LoggableURL(b.Key))
				require.Equal(t, webhook.BreakerClosed, b.State)
				require.Equal(t, 2, b.Failures, "the 503s; a 400 is not the breaker's")
				require.True(t, b.Failing)
				require.Equal(t, 3, b.FailedDeliveries)
				require.WithinDuration(t, first.OccurredAt.Add(first.ResponseTime), b.FailingSince, time.Microsecond) // Postgres keeps microseconds
			}
			r := e.sendMCP(mcp(url, fmt.Sprint("t", i)))
			a := e.attempts(1)[0]
			if i == 0 {
				first = a
			}
			e.settled(r.ID)
			ids = append(ids, r.ID)
		}
		got := o.events()
		var kinds []webhook.HealthKind
		for _, h := range got {
			kinds = append(kinds, h.Kind)
			require.Equal(t, key, h.Key, "loggable")
			require.Equal(t, epoch, h.At)
		}
		require.Equal(t, []webhook.HealthKind{webhook.HealthEndpointFailing, webhook.HealthDeliveryExhausted,
			webhook.HealthDeliveryExhausted, webhook.HealthEndpointRecovered}, kinds, "%+v", got)
		since := first.OccurredAt.Add(first.ResponseTime)
		require.WithinDuration(t, since, got[0].FailingSince, time.Microsecond)
		require.Equal(t, 2, got[0].FailedDeliveries)
		for i, h := range got[1:3] {
			require.Equal(t, ids[i+1], h.Delivery.DeliveryID)
			require.Equal(t, webhook.FinishExhausted, h.Delivery.Reason)
			require.Equal(t, key, h.Delivery.URL)
		}
		require.WithinDuration(t, since, got[3].FailingSince, time.Microsecond)
		require.Equal(t, 3, got[3].FailedDeliveries, "the run that ended")

		list, err := in.Breakers(context.Background(), webhook.Page{})
		require.NoError(t, err)
		require.Empty(t, list.Breakers, "the 2xx ended the run")
		require.Equal(t, 1, strings.Count(e.logs.String(), `msg="webhook: endpoint failing"`), e.logs.String())
		require.Equal(t, 1, strings.Count(e.logs.String(), `msg="webhook: endpoint recovered"`), e.logs.String())
		require.Equal(t, 2, strings.Count(e.logs.String(), `msg="webhook: delivery exhausted; the buyer never acknowledged it"`), e.logs.String())
		require.NotContains(t, e.logs.String(), "querysecret")
	})

	// ... or when a failure comes FailingFor after the run began, also
	// while the breaker is open (its probes fail), and also when the
	// delivery is held back past its horizon.
	t.Run("HealthEventsByDuration", func(t *testing.T) {
		t.Parallel()
		o := &observed{}
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Observer = o.observer()
			c.Retry.MaxAttempts = webhook.MaxAttemptsUntilHorizon // retried every 30s at most
			c.Breaker.FailureThreshold = 1
			c.Breaker.FailingDeliveries, c.Breaker.FailingFor = webhook.RuleOff, 10*time.Minute
		})
		url := "https://buyer.example/hook"
		for range 20 {
			e.sender.on(url, step{status: 503})
		}
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		e.attempts(1)
		// A probe a little over a minute apart (each attempt's end, when
		// the breaker reopens, is a little after the fake clock's time).
		for i := 1; i <= 10; i++ {
			e.clock.Set(epoch.Add(time.Duration(i) * 61 * time.Second))
			e.attempts(1)
		}
		var kinds []webhook.HealthKind
		for _, h := range o.events() {
			kinds = append(kinds, h.Kind)
		}
		// Opened; ten probes: half-open, opened again; failing with the
		// tenth.
		require.Len(t, kinds, 22, "%v", kinds)
		require.Equal(t, []webhook.HealthKind{webhook.HealthBreakerOpened, webhook.HealthBreakerHalfOpen, webhook.HealthBreakerOpened}, kinds[:3])
		require.Equal(t, webhook.HealthEndpointFailing, kinds[21])
		require.NotContains(t, kinds[:21], webhook.HealthEndpointFailing)
		h := o.events()[21]
		require.Equal(t, epoch.Add(610*time.Second), h.At)
		require.Zero(t, h.FailedDeliveries)

		// Past the horizon while the breaker holds it back: exhausted.
		e.clock.Set(epoch.Add(25 * time.Hour))
		e.attempts(1)
		require.Equal(t, webhook.FinishHorizon, e.settledReason(r.ID, o))
	})

	// The seller's own backlog expiring (no worker ran for longer than the
	// horizon) is not the endpoint's failure: it was never asked.
	t.Run("ExpiriesAreNotTheEndpoints", func(t *testing.T) {
		t.Parallel()
		o := &observed{}
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Observer = o.observer()
			c.Breaker.FailingDeliveries, c.Breaker.FailingFor = 3, webhook.RuleOff
		})
		url := "https://buyer.example/hook"
		for i := range 5 {
			e.sendMCP(mcp(url, fmt.Sprint("t", i)))
		}
		e.clock.Set(epoch.Add(webhook.HorizonDefault + time.Hour))
		e.startWorker()
		e.attempts(5)
		require.Eventually(t, func() bool { return len(o.events()) == 5 }, guard, time.Millisecond)
		for _, h := range o.events() {
			require.Equal(t, webhook.HealthDeliveryExhausted, h.Kind)
			require.Equal(t, webhook.FinishHorizon, h.Delivery.Reason)
			require.Zero(t, h.Seq)
		}
		require.Empty(t, e.sender.sent(), "the endpoint was never contacted")
		list, err := e.inspector().Breakers(context.Background(), webhook.Page{})
		require.NoError(t, err)
		require.Empty(t, list.Breakers, "no run of failures")
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
				Health: func(ctx context.Context, h webhook.HealthEvent) {
					st, err := in.Stats(ctx) // would deadlock under the memory supervisor's lock
					if err == nil && h.Kind != webhook.HealthDeliveryExhausted {
						states <- h.To
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
			t.Fatal("Health did not return")
		}
		require.NoError(t, in.ResetBreaker(context.Background(), url))
		select {
		case st := <-states:
			require.Equal(t, webhook.BreakerClosed, st)
		case <-time.After(guard):
			t.Fatal("ResetBreaker's Health did not return")
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
		require.Len(t, o.health, 3, "%+v", o.health) // opened, exhausted, closed by the reset
		require.Equal(t, webhook.HealthBreakerOpened, o.health[0].Kind)
		require.Equal(t, webhook.HealthDeliveryExhausted, o.health[1].Kind)
		require.Equal(t, webhook.HealthEvent{Kind: webhook.HealthBreakerClosed, Key: url, From: webhook.BreakerOpen, To: webhook.BreakerClosed, Reset: true, At: epoch, Seq: 2},
			o.health[2], "after the opening (Seq 1)")
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

// Two "processes" share one database and one failing endpoint: each
// health transition is reported once between them, by the process whose
// write made it.
func TestPostgresHealthEventsOncePerTransition(t *testing.T) {
	t.Parallel()
	o, o2 := &observed{}, &observed{} // one per process
	const n, threshold = 40, 10
	// No endpoint limit: both processes claim the one endpoint's
	// deliveries at once (with one, the first to claim can take every
	// slot and open the breaker before the other claims).
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 8, EndpointConcurrency: webhook.NoEndpointLimit}, func(c *suiteConfig) {
		c.Observer = o.observer()
		c.Retry.MaxAttempts = 1
		c.Breaker.FailureThreshold, c.Breaker.SuccessThreshold = threshold, 1
		c.Breaker.FailingDeliveries, c.Breaker.FailingFor = 5, webhook.RuleOff
		c.Sink = nil
	})
	cfg2 := pe.cfg
	cfg2.Observer = o2.observer()
	second := newPostgresOn(t, pe.pool, cfg2, pe.pc)
	url := "https://buyer.example/hook"
	for range n {
		pe.sender.on(url, step{status: 503})
	}
	ctx := context.Background()
	for i := range n {
		_, err := pe.pg.SendMCP(ctx, mcp(url, fmt.Sprint("t", i)))
		require.NoError(t, err)
	}
	pe.startWorker()
	runWorker(t, second)

	// The breaker opens; what was in flight lands.
	require.Eventually(t, func() bool {
		st, err := pe.pg.Stats(ctx)
		b, berr := pe.pg.Breaker(ctx, url)
		return err == nil && berr == nil && b == webhook.BreakerOpen && st.Running == 0 && st.Failed >= threshold
	}, guard, time.Millisecond)
	// The buyer is back: the probe succeeds, and the rest are delivered.
	pe.sender.mu.Lock()
	pe.sender.script[url] = nil
	pe.sender.mu.Unlock()
	pe.clock.Advance(webhook.OpenTimeoutDefault + time.Second)
	var failed int64
	require.Eventually(t, func() bool {
		st, err := pe.pg.Stats(ctx)
		failed = st.Failed
		return err == nil && st.Delivered+st.Failed == n
	}, guard, time.Millisecond)

	count := map[webhook.HealthKind]int{}
	events := func() []webhook.HealthEvent { return append(o.events(), o2.events()...) }
	require.Eventually(t, func() bool {
		clear(count)
		for _, h := range events() {
			count[h.Kind]++
		}
		return count[webhook.HealthEndpointRecovered] == 1
	}, guard, time.Millisecond, "%v", count)
	o.mu.Lock()
	o2.mu.Lock()
	require.NotEmpty(t, o.starts, "the first process made attempts")
	require.NotEmpty(t, o2.starts, "the second process made attempts")
	o2.mu.Unlock()
	o.mu.Unlock()
	require.Equal(t, map[webhook.HealthKind]int{
		webhook.HealthBreakerOpened: 1, webhook.HealthBreakerHalfOpen: 1, webhook.HealthBreakerClosed: 1,
		webhook.HealthEndpointFailing: 1, webhook.HealthEndpointRecovered: 1,
		webhook.HealthDeliveryExhausted: int(failed),
	}, count)
	seq := map[webhook.HealthKind]int64{}
	for _, h := range events() {
		if h.Kind == webhook.HealthEndpointRecovered {
			require.Equal(t, int(failed), h.FailedDeliveries, "every failed delivery counted once in the run")
		}
		if h.Kind != webhook.HealthDeliveryExhausted {
			require.Positive(t, h.Seq, "%+v", h)
			seq[h.Kind] = h.Seq
		}
	}
	// Whatever order the two processes' hooks ran in, Seq orders the
	// changes as they were written.
	require.Less(t, seq[webhook.HealthBreakerOpened], seq[webhook.HealthBreakerHalfOpen])
	require.Less(t, seq[webhook.HealthBreakerHalfOpen], seq[webhook.HealthBreakerClosed])
	require.Less(t, seq[webhook.HealthEndpointFailing], seq[webhook.HealthEndpointRecovered])
	require.LessOrEqual(t, seq[webhook.HealthEndpointRecovered], seq[webhook.HealthBreakerClosed], "the probe's success ends both")
}
