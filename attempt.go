package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
	sender            Sender
	retry             RetryPolicy
	breaker           BreakerPolicy
	sink              LogSink
	logger            *slog.Logger
	clock             Clock
	allowInsecureHTTP bool
}

func newCore(c commonConfig) (*core, error) {
	if c.sender == nil {
		return nil, ErrNilSender
	}
	retry := c.retry.withDefaults()
	if err := retry.validate(); err != nil {
		return nil, err
	}
	br := c.breaker.withDefaults()
	if err := br.validate(); err != nil {
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

// sent is the result of one HTTP attempt, classified.
type sent struct {
	class   Classification
	status  int
	errText string
	start   time.Time
	elapsed time.Duration
}

// send runs attempt n of delivery d and classifies the result.
func (k *core) send(ctx context.Context, d *prepared, id string, n int) sent {
	req := &Request{
		URL:            d.url,
		Body:           d.body,
		IdempotencyKey: d.key,
		Authentication: d.routing.Authentication,
		DeliveryID:     id,
		Attempt:        n,
	}
	start := k.clock.Now()
	resp, err := k.sender.Send(ctx, req)
	end := k.clock.Now()
	if resp != nil {
		err = nil // a response was obtained: its status decides
	} else if err == nil {
		err = ErrNoResponse
	}
	s := sent{class: k.retry.Classify(resp, err, end), start: start, elapsed: end.Sub(start)}
	switch {
	case err != nil:
		s.errText = err.Error()
	default:
		s.status = resp.StatusCode
		if s.class.Verdict != Delivered {
			s.errText = describeResponse(resp)
		}
	}
	return s
}

// breakerResult maps a classification onto the breaker.
func (c Classification) breakerResult() breakerResult {
	switch {
	case c.Verdict == Delivered:
		return breakerSuccess
	case c.BreakerFailure:
		return breakerFailure
	}
	return breakerNeutral
}

// describeResponse names the status and at most maxReceiverText bytes of the
// receiver's answer, as printable text.
func describeResponse(r *Response) string {
	var b strings.Builder
	b.WriteString("HTTP ")
	b.WriteString(strconv.Itoa(r.StatusCode))
	text := r.Body
	if len(text) > maxReceiverText {
		text = text[:maxReceiverText]
		for len(text) > 0 && !utf8.Valid(text) {
			text = text[:len(text)-1]
		}
	}
	printable := strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(text)))
	if printable != "" {
		b.WriteString(": ")
		b.WriteString(printable)
	}
	return b.String()
}

// nextAttemptAt decides whether attempt n, which ended at end, is followed by
// another, and when. anchor is the first attempt's start.
func (k *core) nextAttemptAt(n int, c Classification, anchor, end time.Time) (time.Time, bool) {
	if c.Verdict != Retry || n >= k.retry.MaxAttempts {
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
	if s.class.Verdict == Delivered {
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

// emit hands one record to the log sink from a goroutine that has no
// sinkCaller of its own (acceptance under OpenDrop).
func (k *core) emit(a Attempt) {
	c := k.newSinkCaller()
	c.emit(a)
	c.close()
}

// sinkCaller calls the log sink for one worker goroutine, bounded by
// SinkTimeout. It keeps one helper goroutine between calls, so a fast sink
// costs no goroutine per record; a sink that outlives the bound keeps its
// helper, which exits when the sink returns, and the next call starts a new
// one. Errors, timeouts and panics are logged and swallowed.
type sinkCaller struct {
	k   *core
	in  chan sinkCall
	out chan error
}

type sinkCall struct {
	ctx context.Context
	a   Attempt
}

func (k *core) newSinkCaller() *sinkCaller { return &sinkCaller{k: k} }

func (c *sinkCaller) emit(a Attempt) {
	sink := c.k.sink
	if sink == nil {
		return
	}
	if c.in == nil {
		c.in, c.out = make(chan sinkCall, 1), make(chan error, 1)
		go runSink(sink, c.in, c.out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.k.retry.SinkTimeout)
	defer cancel()
	c.in <- sinkCall{ctx: ctx, a: a}
	var err error
	select {
	case err = <-c.out:
	case <-ctx.Done():
		close(c.in) // abandon the helper; it exits once the sink returns
		c.in = nil
		err = fmt.Errorf("log sink did not return within %v", c.k.retry.SinkTimeout)
	}
	if err != nil {
		c.k.logger.LogAttrs(context.Background(), slog.LevelWarn, "webhook: log sink failed; attempt record dropped",
			slog.String("delivery_id", a.DeliveryID),
			slog.Int("attempt_number", a.AttemptNumber),
			slog.String("outcome", string(a.Outcome)),
			slog.String("error", err.Error()))
	}
}

// close stops the helper goroutine (once its current call, if any, returns).
func (c *sinkCaller) close() {
	if c.in != nil {
		close(c.in)
		c.in = nil
	}
}

func runSink(sink LogSink, in <-chan sinkCall, out chan<- error) {
	for call := range in {
		out <- callSink(sink, call)
	}
}

func callSink(sink LogSink, call sinkCall) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("log sink panicked: %v", r)
		}
	}()
	return sink.RecordAttempt(call.ctx, call.a)
}
