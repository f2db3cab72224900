package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// maxReceiverText bounds how much of a receiver's answer an Attempt records.
const maxReceiverText = 200

// core is what every supervisor shares: policies, sender, sink, logger and
// clock, and the one way to run an attempt and report it.
type core struct {
	sender  Sender
	retry   RetryPolicy   // defaults applied
	breaker BreakerPolicy // defaults applied
	sink    LogSink
	logger  *slog.Logger
	clock   Clock
	random  func() float64
	urls    urlPolicy
}

// commonConfig is the part of every supervisor's config that core needs.
type commonConfig struct {
	prefix            string // the config's name, for errors: "MemoryConfig."
	sender            Sender
	retry             RetryPolicy
	breaker           BreakerPolicy
	sink              LogSink
	logger            *slog.Logger
	clock             Clock
	allowInsecureHTTP bool
}

func newCore(c commonConfig) (*core, error) {
	if c.sender == nil || isNil(c.sender) {
		return nil, ErrNilSender
	}
	if c.sink != nil && isNil(c.sink) {
		return nil, badConfig(c.prefix+"LogSink", "is a typed nil; leave it nil for no sink")
	}
	retry := c.retry.withDefaults()
	if err := retry.validate(c.prefix + "Retry."); err != nil {
		return nil, err
	}
	br := c.breaker.withDefaults()
	if err := br.validate(c.prefix + "Breaker."); err != nil {
		return nil, err
	}
	k := &core{
		sender:  c.sender,
		retry:   retry,
		breaker: br,
		sink:    c.sink,
		logger:  c.logger,
		clock:   c.clock,
		random:  defaultRandom,
		urls:    urlPolicy{allowHTTP: c.allowInsecureHTTP},
	}
	if k.logger == nil {
		k.logger = slog.Default()
	}
	if k.clock == nil {
		k.clock = systemClock{}
	}
	return k, nil
}

// isNil reports whether v holds a nil pointer, map, slice, channel or
// function: an interface that is not nil but cannot be used.
func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// sent is the result of one HTTP attempt, classified.
type sent struct {
	class   Classification
	status  int
	errText string
	start   time.Time
	elapsed time.Duration
}

// send runs attempt n of delivery d and classifies the result. req is the
// caller's to reuse: Senders do not retain it.
func (k *core) send(ctx context.Context, req *Request, d *prepared, id string, n int) sent {
	*req = Request{
		URL:            d.url,
		Body:           d.body,
		IdempotencyKey: d.key,
		Authentication: d.routing.Authentication,
		Headers:        d.routing.Headers,
		DeliveryID:     id,
		Attempt:        n,
	}
	start := k.clock.Now()
	resp, err := callSender(ctx, k.sender, req)
	end := k.clock.Now()
	if resp != nil {
		err = nil // a response was obtained: its status decides
	} else if err == nil {
		err = ErrNoResponse
	}
	s := sent{class: k.retry.Classify(resp, err, end), start: start, elapsed: end.Sub(start)}
	switch {
	case err != nil:
		s.errText = errorText(err)
	default:
		s.status = resp.StatusCode
		if s.class.Verdict != VerdictDelivered {
			s.errText = describeResponse(resp)
		}
	}
	return s
}

// callSender calls the sender, turning a panic into a transport error so
// that a buggy Sender costs a retry, not the process.
func callSender(ctx context.Context, sender Sender, req *Request) (resp *Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, fmt.Errorf("webhook: sender panicked: %v", r)
		}
	}()
	return sender.Send(ctx, req)
}

// breakerResult maps a classification onto the breaker.
func (c Classification) breakerResult() breakerResult {
	switch {
	case c.Verdict == VerdictDelivered:
		return breakerSuccess
	case c.BreakerFailure:
		return breakerFailure
	}
	return breakerNeutral
}

// maxErrorText bounds a transport error's text in an Attempt.
const maxErrorText = 1024

// errorText is a transport error's text made safe to store and log: valid
// UTF-8, no control characters (NUL among them, which Postgres refuses),
// at most maxErrorText bytes. A custom Sender's error can carry anything.
func errorText(err error) string {
	return printable([]byte(err.Error()), maxErrorText)
}

// printable returns at most max bytes of text as valid UTF-8 with control
// characters turned into spaces, trimmed.
func printable(text []byte, max int) string {
	if len(text) > max {
		text = text[:max]
		for len(text) > 0 && !utf8.Valid(text) {
			text = text[:len(text)-1]
		}
	}
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(text)))
}

// describeResponse names the status and at most maxReceiverText bytes of the
// receiver's answer, as printable text.
func describeResponse(r *Response) string {
	var b strings.Builder
	b.WriteString("HTTP ")
	b.WriteString(strconv.Itoa(r.StatusCode))
	if text := printable(r.Body, maxReceiverText); text != "" {
		b.WriteString(": ")
		b.WriteString(text)
	}
	return b.String()
}

// nextAttemptAt decides whether attempt n, which ended at end, is followed by
// another, and when. anchor is the first attempt's start.
func (k *core) nextAttemptAt(n int, c Classification, anchor, end time.Time) (time.Time, bool) {
	if c.Verdict != VerdictRetry || n >= k.retry.MaxAttempts {
		return time.Time{}, false
	}
	next := end.Add(k.retry.nextDelay(n+1, c.RetryAfter, k.random))
	if k.pastHorizon(anchor, next) {
		return time.Time{}, false
	}
	return next, true
}

// pastHorizon reports whether an attempt starting at t would break the retry
// horizon counted from anchor.
func (k *core) pastHorizon(anchor, t time.Time) bool {
	return k.retry.Horizon > 0 && t.After(anchor.Add(k.retry.Horizon))
}

// record builds the audit record of an attempt.
func (k *core) record(d *prepared, id string, seq int64, n int, s sent) Attempt {
	a := k.baseRecord(d, id, seq)
	a.AttemptNumber = n
	a.HTTPStatus = s.status
	a.Error = s.errText
	a.ResponseTime = s.elapsed
	a.OccurredAt = s.start
	a.Outcome = OutcomeFailure
	if s.class.Verdict == VerdictDelivered {
		a.Outcome = OutcomeSuccess
	}
	return a
}

func (k *core) baseRecord(d *prepared, id string, seq int64) Attempt {
	return Attempt{
		DeliveryID:       id,
		IdempotencyKey:   d.key,
		URL:              d.url,
		BreakerKey:       d.breakerKey,
		SequenceKey:      d.routing.SequenceKey,
		SequenceNumber:   seq,
		MaxAttempts:      k.retry.MaxAttempts,
		TaskType:         d.taskType,
		TaskID:           d.taskID,
		PayloadSize:      len(d.body),
		NotificationType: d.routing.NotificationType,
	}
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

func (k *core) newSinkGuard(replace func()) *sinkGuard {
	g := &sinkGuard{k: k, replace: replace}
	g.timer = time.AfterFunc(time.Hour, g.expire)
	g.timer.Stop()
	return g
}

// report hands a to the sink, then runs after. It returns true when the
// call outlived its bound: the watchdog has run after and replace, and the
// calling worker must exit.
func (g *sinkGuard) report(a Attempt, after func()) (replaced bool) {
	if g.k.sink == nil {
		after()
		return false
	}
	timeout := g.k.retry.SinkTimeout
	c := &sinkCall{after: after, deliveryID: a.DeliveryID, attempt: a.AttemptNumber, outcome: a.Outcome}
	c.deadline = time.Now().Add(timeout)
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
	c.expire()
	g.k.sinkFailed(c.deliveryID, c.attempt, c.outcome, fmt.Errorf("log sink did not return within %v", g.k.retry.SinkTimeout))
	c.after()
	g.replace()
}

// stop releases the guard's timer when its worker exits.
func (g *sinkGuard) stop() { g.timer.Stop() }

// sinkContext is the context a worker passes to the log sink: a deadline
// and nothing else. It is cheaper than context.WithTimeout on the hot path
// because its Done channel is made only if the sink asks for it.
type sinkContext struct {
	deadline time.Time
	mu       sync.Mutex
	done     chan struct{}
	expired  bool
}

func (c *sinkContext) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *sinkContext) Value(any) any               { return nil }

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
// (acceptance under OpenDrop), bounded by SinkTimeout.
func (k *core) emit(a Attempt) {
	if k.sink == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.retry.SinkTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- callSink(ctx, k.sink, a) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("log sink did not return within %v", k.retry.SinkTimeout)
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
		slog.String("error", err.Error()))
}

func callSink(ctx context.Context, sink LogSink, a Attempt) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("log sink panicked: %v", r)
		}
	}()
	return sink.RecordAttempt(ctx, a)
}

// drain waits for a stopping RunWorker's workers; once timeout passes it
// cancels their attempts (cancel) and waits for them to record that.
func (k *core) drain(ctx context.Context, workers *sync.WaitGroup, timeout time.Duration, cancel func()) {
	drained := make(chan struct{})
	go func() {
		workers.Wait()
		close(drained)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: drain timeout passed; cancelling in-flight attempts",
			slog.Duration("drain_timeout", timeout))
		cancel()
		<-drained
	}
}
