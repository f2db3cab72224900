package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Outcome is the result of one attempt.
type Outcome string

// Attempt outcomes.
const (
	// OutcomeSuccess: the receiver answered 2xx.
	OutcomeSuccess Outcome = "success"
	// OutcomeFailure: no 2xx answer (transport error, timeout or status).
	OutcomeFailure Outcome = "failure"
	// OutcomeCircuitOpen: nothing was sent because the breaker was open (see
	// [Attempt]).
	OutcomeCircuitOpen Outcome = "circuit_open"
)

// Attempt is the audit record of one delivery attempt, with every field of
// the Python SDK's DeliveryAttempt and the delivery's identity. It never
// contains credentials or the body.
//
// A few records report a decision rather than a request; their AttemptNumber
// is 0: a webhook refused at acceptance because its breaker was open
// ([OpenDrop]; no DeliveryID), and a delivery failed because its retry
// horizon passed before its next attempt could start (outcome circuit_open
// when its breaker had not closed again by then, failure otherwise).
type Attempt struct {
	// DeliveryID is the [Receipt] ID; empty when the webhook was refused at
	// acceptance.
	DeliveryID string `json:"delivery_id,omitempty"`
	// IdempotencyKey is the delivery's key.
	IdempotencyKey string `json:"idempotency_key"`
	// URL is the destination.
	URL string `json:"url"`
	// BreakerKey is the breaker the attempt counted against.
	BreakerKey string `json:"breaker_key"`
	// SequenceKey and SequenceNumber are the delivery's sequence, if any.
	SequenceKey    string `json:"sequence_key,omitempty"`
	SequenceNumber int64  `json:"sequence_number,omitempty"`
	// AttemptNumber counts the delivery's attempts from 1 (0: see above).
	// An attempt cut short because its worker stopped is not charged: the
	// next attempt carries the same number.
	AttemptNumber int `json:"attempt_number"`
	// MaxAttempts is the retry policy's limit; 0 when only its horizon
	// bounds retries ([MaxAttemptsUntilHorizon]).
	MaxAttempts int `json:"max_attempts"`
	// Outcome is success, failure or circuit_open.
	Outcome Outcome `json:"outcome"`
	// HTTPStatus is the response status, or 0 when no response arrived.
	HTTPStatus int `json:"http_status,omitempty"`
	// Error says why the attempt failed: the transport error, or the status
	// and at most 200 bytes of the receiver's answer. Empty on success.
	Error string `json:"error_message,omitempty"`
	// ResponseTime is how long the send took, by the monotonic clock.
	ResponseTime time.Duration `json:"response_time_ns"`
	// OccurredAt is when the attempt started.
	OccurredAt time.Time `json:"occurred_at"`
	// WillRetry reports whether another attempt is scheduled.
	WillRetry bool `json:"will_retry"`
	// NextRetryAt is when the next attempt is due; zero unless WillRetry.
	NextRetryAt time.Time `json:"next_retry_at,omitzero"`
	// TaskType and TaskID identify the task, when known.
	TaskType TaskType `json:"task_type,omitempty"`
	TaskID   string   `json:"task_id,omitempty"`
	// PayloadSize is the body's length in bytes.
	PayloadSize int `json:"payload_size_bytes"`
	// NotificationType is copied from [Routing].
	NotificationType string `json:"notification_type,omitempty"`
	// ReemissionOf is the ID of the delivery this one re-emits under a
	// fresh idempotency key (see Redeliver), or "".
	ReemissionOf string `json:"reemission_of,omitempty"`
	// NotificationID is the body's notification_id, or "".
	NotificationID string `json:"notification_id,omitempty"`
	// SubscriberID is copied from [Routing].
	SubscriberID string `json:"subscriber_id,omitempty"`
	// TimedOut reports an attempt that got no response in time (as
	// opposed to one that could not connect), for AdCP's activity status
	// timeout versus connection_error.
	TimedOut bool `json:"timed_out,omitempty"`
}

// job is a claimed delivery as the attempt logic sees it. Each supervisor
// embeds it in its own claimed-delivery type.
type job struct {
	prepared
	id       string
	seq      int64
	attempts int       // charged before this claim
	lost     int       // attempts lost before this claim (a worker died or lost its lease)
	broken   string    // why the stored delivery cannot be sent as accepted; empty: it can
	accepted time.Time // acceptance, or the last redelivery
	firstAt  time.Time // the first attempt's start since then; zero until it
	// gated reports that its breaker was not closed when it was claimed:
	// if its horizon has passed, the breaker held it back.
	gated bool
}

// anchor is where the retry horizon counts from: the first attempt, or
// acceptance (or redelivery) while there has been none.
func (j *job) anchor() time.Time {
	if j.firstAt.IsZero() {
		return j.accepted
	}
	return j.firstAt
}

// completion is what one claim of a delivery ends with: the delivery's new
// state and the record that reports it. A store persists it.
type completion struct {
	state      DeliveryState
	attempts   int       // charged, including this attempt when it counts
	due        time.Time // pending: when the next attempt is due
	firstAt    time.Time
	finishedAt time.Time // final states
	status     int
	errText    string
	result     breakerResult // what the attempt means to its breaker
	end        time.Time     // when the attempt ended, by the supervisor's clock
	record     Attempt
	// hold keeps a pending delivery claimed until settle: its next attempt
	// cannot start before the sink has returned from this record, so a sink
	// sees one delivery's records in attempt order.
	hold bool
	// superseded: the claim was lost before c could be written (another
	// worker owns the delivery); c is not reported.
	superseded bool
	// reason is why a final state is final.
	reason FinishReason
	// unstored: the store gave up writing c (the delivery will be
	// attempted again), so its state is not the delivery's.
	unstored bool
}

// failedAtEndpoint reports that the delivery failed for good with an
// attempt the endpoint answered or failed to answer: evidence of its
// health. An expiry (its horizon passed with nothing sent, its attempts
// were lost, its row is broken) is not: the endpoint was not asked.
func (c *completion) failedAtEndpoint() bool {
	return c.state == StateFailed && c.record.AttemptNumber > 0
}

// blamesEndpoint reports whether c counts against its endpoint's breaker
// or health: a breaker failure, or a delivery failed for good at the
// endpoint.
func (c *completion) blamesEndpoint() bool {
	return c.result == breakerFailure || c.failedAtEndpoint()
}

// attemptStore is what a supervisor's storage does for the attempt logic.
// Its methods are called from the worker goroutine that holds j.
type attemptStore[J any] interface {
	// begin prepares j's attempt (a store may renew a lease) and returns the
	// context to send under, or ok false to give j up uncharged.
	begin(ctx context.Context, j J) (sendCtx context.Context, cancel context.CancelFunc, ok bool)
	// complete persists c. It may set c.record.WillRetry and NextRetryAt
	// when it could not persist c and the delivery will be attempted again.
	// It reports whether the claimer should look for work again (a breaker
	// changed, say).
	complete(ctx context.Context, j J, c *completion) (wake bool)
	// settle runs once the sink has the record: it releases a held
	// delivery (c.hold) and the worker's claim.
	settle(j J, c *completion, wake bool)
}

// claimedJob is a supervisor's claimed-delivery type.
type claimedJob interface{ base() *job }

// attemptWorker runs the attempt logic on one of a pool's worker
// goroutines. It reuses its request and completion from attempt to attempt:
// Senders do not retain the request, and a completion is done with once
// settle has run, so neither needs allocating per attempt.
type attemptWorker[J claimedJob] struct {
	k     *core
	st    attemptStore[J]
	guard *sinkGuard
	req   Request
	c     completion
}

// newAttemptWorker returns a worker for a pool goroutine whose attempts run
// under ctx and whose replacement (when the sink outlives its bound) replace
// starts.
func newAttemptWorker[J claimedJob](k *core, ctx context.Context, replace func(), st attemptStore[J]) *attemptWorker[J] {
	return &attemptWorker[J]{k: k, st: st, guard: k.newSinkGuard(ctx, replace)}
}

// Stop releases the sink guard's timer when the goroutine exits.
func (w *attemptWorker[J]) Stop() { w.guard.stop() }

// Run is the one attempt logic both supervisors run for a claimed
// delivery: expire it if its retry horizon has passed, else send, classify
// and decide (delivered, retry at t, failed, or, when the worker stopped
// mid-attempt, due again uncharged); persist the decision; report it to the
// sink; then settle. It calls release once the attempt is over, before its
// result is persisted (the pool may start the next attempt meanwhile),
// unless the result blames its endpoint: then the next claim must see it
// written. It returns true when the sink outlived its bound and the guard
// replaced the calling worker, which must then exit (and leave w to the
// settle the guard runs).
func (w *attemptWorker[J]) Run(ctx context.Context, j J, release func()) (replaced bool) {
	k, st, b, c := w.k, w.st, j.base(), &w.c
	if now := k.clock.Now(); b.broken != "" || k.pastHorizon(b.anchor(), now) || k.maxLost > 0 && b.lost >= k.maxLost {
		*c = k.expiry(b, now)
		release()
		return w.finish(ctx, j)
	}
	sendCtx, cancel, ok := st.begin(ctx, j)
	if !ok {
		*c = completion{state: StateRunning}
		st.settle(j, c, false)
		return false
	}
	n := b.attempts + 1
	if obs := k.obs; obs != nil && obs.AttemptStarted != nil {
		k.guardHook("AttemptStarted", func() {
			if hctx := obs.AttemptStarted(sendCtx, AttemptInfo{DeliveryID: b.id, AttemptNumber: n, URL: LoggableURL(b.url),
				TaskType: b.taskType, NotificationType: b.routing.NotificationType, Carrier: b.carrier, AcceptedAt: b.accepted.UTC()}); hctx != nil {
				sendCtx = hctx
			}
		})
	}
	res := k.send(sendCtx, &w.req, &b.prepared, b.id, n)
	*c = k.decide(b, n, res, ctx.Err() != nil)
	if obs := k.obs; obs != nil && obs.AttemptFinished != nil {
		class := res.class
		if c.attempts == b.attempts { // cut short by the worker's stop: not charged, not the endpoint's
			class.BreakerFailure = false
		}
		k.guardHook("AttemptFinished", func() { obs.AttemptFinished(sendCtx, &c.record, class) })
	}
	cancel()
	if !c.blamesEndpoint() {
		release()
	}
	return w.finish(ctx, j)
}

// finish persists w.c, reports it to the sink (unless another worker had
// taken the delivery over, and reports its own) and settles.
func (w *attemptWorker[J]) finish(ctx context.Context, j J) (replaced bool) {
	st, c := w.st, &w.c
	wake := st.complete(ctx, j, c)
	if c.superseded {
		st.settle(j, c, wake)
		return false
	}
	if c.state.Final() && !c.unstored {
		w.finished(ctx, j.base(), c)
	}
	return w.guard.report(c.record, func() { st.settle(j, c, wake) })
}

// finished reports a delivery's final state, which c stored.
func (w *attemptWorker[J]) finished(ctx context.Context, b *job, c *completion) {
	k := w.k
	exhausted := c.state == StateFailed && (c.reason == FinishExhausted || c.reason == FinishHorizon || c.reason == FinishLost)
	watched := k.obs != nil && k.obs.DeliveryFinished != nil
	if !watched && !exhausted {
		return
	}
	d := &FinishInfo{DeliveryID: b.id, State: c.state, Reason: c.reason, Attempts: c.attempts,
		URL: LoggableURL(b.url), TaskType: b.taskType, NotificationType: b.routing.NotificationType, Carrier: b.carrier,
		AcceptedAt: b.accepted.UTC(), FinishedAt: c.finishedAt.UTC()}
	if watched {
		k.guardHook("DeliveryFinished", func() { k.obs.DeliveryFinished(ctx, *d) })
	}
	if exhausted {
		k.exhausted(ctx, b.breakerKey, d)
	}
}

// decide turns attempt n's result into the delivery's next state. stopped
// reports that the worker was stopping: an attempt cut short then, with no
// response, is not the endpoint's fault, so it is not charged and not
// counted by the breaker, and the delivery is due again at once under the
// same attempt number.
func (k *core) decide(b *job, n int, res sent, stopped bool) completion {
	end := res.start.Add(res.elapsed)
	a := k.record(&b.prepared, b.id, b.seq, n, res)
	c := completion{status: res.status, errText: res.errText, end: end, firstAt: b.firstAt}
	if stopped && res.status == 0 {
		a.Error = cancelledText + " (" + res.errText + ")"
		a.WillRetry, a.NextRetryAt = true, end
		c.state, c.attempts, c.due, c.errText = StatePending, b.attempts, end, a.Error
	} else {
		if c.firstAt.IsZero() {
			c.firstAt = res.start
		}
		next, retry := k.nextAttemptAt(n, res.class, c.firstAt, end)
		a.WillRetry, a.NextRetryAt = retry, next
		c.attempts, c.result = n, res.class.breakerResult()
		switch {
		case retry:
			c.state, c.due = StatePending, next
		case res.class.Verdict == VerdictDelivered:
			c.state, c.due, c.finishedAt, c.reason = StateDelivered, end, end, FinishDelivered
		default:
			c.state, c.due, c.finishedAt = StateFailed, end, end
			switch {
			case res.class.Verdict != VerdictRetry:
				c.reason = FinishRejected
			case k.retry.MaxAttempts > 0 && n >= k.retry.MaxAttempts:
				c.reason = FinishExhausted
			default: // the next attempt would start past the horizon
				c.reason = FinishHorizon
			}
		}
	}
	c.record = a
	c.hold = c.state == StatePending && k.sink != nil
	return c
}

// expiry fails a delivery that may not be attempted again: its stored
// form is broken, its retry horizon passed before its next attempt could
// start, or its attempts were lost maxLost times. Nothing is sent; the record's AttemptNumber is 0, and
// its outcome is circuit_open when the breaker held the delivery back past
// its horizon.
func (k *core) expiry(b *job, now time.Time) completion {
	a := k.baseRecord(&b.prepared, b.id, b.seq)
	a.Outcome, a.OccurredAt = OutcomeFailure, now
	reason := FinishHorizon
	switch {
	case b.broken != "":
		a.Error = "the stored delivery cannot be sent as it was accepted: " + b.broken
		reason = FinishBroken
	case k.maxLost > 0 && b.lost >= k.maxLost:
		reason = FinishLost
		a.Error = fmt.Sprintf("%d attempts were lost (each time, the worker died or lost its lease before the result was written); "+
			"failed without another send, so that a delivery that crashes its worker is not sent forever (PostgresConfig.MaxLostAttempts)", b.lost)
	case b.gated:
		a.Error = fmt.Sprintf("retry horizon of %v passed while the circuit breaker held the delivery back", k.retry.Horizon)
		a.Outcome = OutcomeCircuitOpen
	default:
		a.Error = fmt.Sprintf("retry horizon of %v passed before the next attempt could start", k.retry.Horizon)
	}
	return completion{state: StateFailed, attempts: b.attempts, due: now, firstAt: b.firstAt, finishedAt: now,
		errText: a.Error, end: now, record: a, reason: reason}
}

// sent is the result of one HTTP attempt, classified.
type sent struct {
	class   Classification
	status  int
	errText string
	// timedOut: no response came in time.
	timedOut bool
	start    time.Time
	elapsed  time.Duration
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
		Tenant:         d.routing.Tenant,
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
	class, panicked := classify(k.retry.Classify, resp, err, end)
	s := sent{class: class, start: start, elapsed: end.Sub(start)}
	switch {
	case err != nil:
		s.errText = d.errorText(err)
		s.timedOut = isTimeout(err)
		if errors.Is(err, ErrBlockedDestination) {
			k.warnBlocked(ctx, d.url)
		}
	default:
		s.status = resp.StatusCode
		if s.class.Verdict != VerdictDelivered {
			s.errText = describeResponse(resp)
		}
	}
	if panicked != "" {
		k.logger.LogAttrs(ctx, slog.LevelError, "webhook: RetryPolicy.Classify panicked; the attempt was classified by DefaultClassifier",
			slog.String("delivery_id", id), slog.Int("attempt_number", n), slog.String("panic", panicked))
		if s.class.Verdict != VerdictDelivered {
			s.errText = printable([]byte("RetryPolicy.Classify panicked: "+panicked+"; classified by DefaultClassifier: "+s.errText), maxErrorText)
		}
	}
	return s
}

// classify runs the policy's classifier. One that panics is a bug in the
// caller's code: the attempt is classified by DefaultClassifier instead,
// so a 2xx is still delivered and not sent again, and panicked says what
// the panic was.
func classify(c Classifier, resp *Response, err error, now time.Time) (class Classification, panicked string) {
	defer func() {
		if r := recover(); r != nil {
			// Its type, not its value: the value may hold the response.
			class, panicked = DefaultClassifier(resp, err, now), fmt.Sprintf("a %T", r)
		}
	}()
	return c(resp, err, now), ""
}

// callSender calls the sender, turning a panic into a transport error so
// that a buggy Sender costs a retry, not the process.
func callSender(ctx context.Context, sender Sender, req *Request) (resp *Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			// Its type, not its value: the value may hold the request.
			resp, err = nil, fmt.Errorf("webhook: the Sender panicked with a %T", r)
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

// printable returns at most max bytes of text as valid UTF-8: each
// invalid byte and each control character becomes a space, and the rest of
// the text is kept (up to max bytes, cut at a character boundary), trimmed.
// It reads at most max runes of text, so a huge answer costs no more than
// a short one.
func printable(text []byte, max int) string {
	var b strings.Builder
	b.Grow(min(len(text), max))
	for i := 0; i < len(text) && b.Len() < max; {
		r, size := utf8.DecodeRune(text[i:])
		i += size
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// describeResponse classifies a response by its status alone: "HTTP 503
// Service Unavailable". The receiver's headers and body stay out of
// records, as AdCP's webhook activity rules require (a receiver that
// echoes the request would otherwise put its credentials there).
func describeResponse(r *Response) string {
	s := "HTTP " + strconv.Itoa(r.StatusCode)
	if text := http.StatusText(r.StatusCode); text != "" {
		s += " " + text
	}
	if code := SignatureErrorCode(r.Header); code != "" && r.StatusCode == http.StatusUnauthorized {
		s += " (" + code + ")" // the buyer verifier's classification, from the taxonomy
	}
	return s
}

// nextAttemptAt decides whether attempt n, which ended at end, is followed by
// another, and when. anchor is the first attempt's start.
func (k *core) nextAttemptAt(n int, c Classification, anchor, end time.Time) (time.Time, bool) {
	if c.Verdict != VerdictRetry || k.retry.MaxAttempts > 0 && n >= k.retry.MaxAttempts {
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
	a.TimedOut = s.timedOut
	a.Outcome = OutcomeFailure
	if s.class.Verdict == VerdictDelivered {
		a.Outcome = OutcomeSuccess
	}
	return a
}

func (k *core) baseRecord(d *prepared, id string, seq int64) Attempt {
	url, breakerKey := LoggableURL(d.url), d.breakerKey
	if breakerKey == d.url { // the default: one conversion, not two
		breakerKey = url
	} else {
		breakerKey = LoggableURL(breakerKey)
	}
	return Attempt{
		DeliveryID:       id,
		IdempotencyKey:   d.key,
		URL:              url,
		BreakerKey:       breakerKey,
		SequenceKey:      d.routing.SequenceKey,
		SequenceNumber:   seq,
		MaxAttempts:      max(k.retry.MaxAttempts, 0),
		TaskType:         d.taskType,
		TaskID:           d.taskID,
		PayloadSize:      len(d.body),
		NotificationType: d.routing.NotificationType,
		ReemissionOf:     d.reemissionOf,
		NotificationID:   d.nid,
		SubscriberID:     d.routing.SubscriberID,
	}
}

// isTimeout reports whether a send failed because no response came in
// time: its deadline passed, or the network said so.
// A timeout before a connection was made (dialling, a DNS lookup, the TLS
// handshake) is a connection error, as AdCP's activity status defines it.
func isTimeout(err error) (timedOut bool) {
	defer func() {
		if recover() != nil { // a Sender's error whose methods panic
			timedOut = false
		}
	}()
	var op *net.OpError
	var dns *net.DNSError
	if errors.As(err, &op) && op.Op == "dial" || errors.As(err, &dns) || strings.Contains(err.Error(), "TLS handshake timeout") {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// cancelledText starts the error of an attempt cut short because its
// worker stopped: not charged, and not shown as activity (the seller
// stopped it; the buyer's endpoint did nothing wrong).
const cancelledText = "cancelled: the worker stopped before the attempt finished; not charged"
