package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Observer is told what happens to deliveries, for telemetry: the
// OpenTelemetry module (github.com/adcpkit/webhook/otel) is one. Every
// field is optional; a nil *Observer, the default, costs nothing.
//
// The functions run synchronously on the paths they observe (acceptance,
// a worker's attempt, a breaker's transition), so they must be quick and
// must not block; they may be called from many goroutines at once. They
// see URLs and breaker keys only in their loggable form ([LoggableURL]),
// and never a body, credential or header value.
type Observer struct {
	// Accepting is called as SendMCP, SendPrepared (or their Tx forms), or
	// a Redeliver that re-emits, accepts a webhook, before it is stored.
	// It returns a carrier (a W3C traceparent, say; at most 512 bytes of
	// printable ASCII, or "") that the supervisor stores with the delivery
	// and hands to every AttemptStarted, in any process; and a func, which
	// may be nil, called once with the outcome (a duplicate submission of
	// an accepted key stores nothing, and its carrier is dropped). Inside
	// SendMCPTx, the caller's transaction may still roll back.
	Accepting func(ctx context.Context, a AcceptInfo) (carrier string, accepted func(AcceptResult))

	// AttemptStarted is called before each attempt is sent. The context it
	// returns is the one the Sender gets (so a span started here is the
	// request's parent), and the one AttemptFinished gets.
	AttemptStarted func(ctx context.Context, a AttemptInfo) context.Context

	// AttemptFinished is called once the attempt has been classified,
	// before its result is stored, with the context AttemptStarted
	// returned and the attempt's record (not to be retained or changed).
	AttemptFinished func(ctx context.Context, a *Attempt, c Classification)

	// DeliveryFinished is called once a delivery reaches a final state
	// and it has been stored.
	DeliveryFinished func(ctx context.Context, d FinishInfo)

	// BreakerChanged is called when a breaker changes state: by a worker
	// (on Postgres, the worker whose write made the change) or by an
	// operator's ResetBreaker.
	BreakerChanged func(ctx context.Context, b BreakerChange)

	// LeaseLost is called when a Postgres worker finds, as it stores an
	// attempt's result, that its lease on the delivery was taken over:
	// the result is dropped and another worker attempts the delivery.
	LeaseLost func(ctx context.Context, l LeaseInfo)
}

// AcceptInfo describes a webhook being accepted.
type AcceptInfo struct {
	// URL is the destination in its loggable form.
	URL string
	// TaskType and NotificationType are the webhook's, when set.
	TaskType         TaskType
	NotificationType string
	// PayloadSize is the body's size in bytes.
	PayloadSize int
	// ReemissionOf is set for a Redeliver's re-emission: the original's
	// ID.
	ReemissionOf string
	// At is the acceptance time.
	At time.Time
}

// AcceptResult is how an acceptance ended.
type AcceptResult struct {
	// Receipt identifies the delivery; zero when Err is set.
	Receipt Receipt
	// Duplicate reports that the key was accepted before with the same
	// payload: Receipt is that delivery's, and nothing new was stored.
	Duplicate bool
	// Err is why the webhook was refused, or nil.
	Err error
}

// AttemptInfo describes an attempt about to be sent.
type AttemptInfo struct {
	DeliveryID string
	// AttemptNumber counts from 1 (a redelivery starts again at 1).
	AttemptNumber int
	// URL is the destination in its loggable form.
	URL string
	// TaskType and NotificationType are the delivery's, when set.
	TaskType         TaskType
	NotificationType string
	// Carrier is what Accepting returned when the delivery was accepted.
	Carrier string
	// AcceptedAt is when the delivery was accepted (a redelivery does not
	// move it).
	AcceptedAt time.Time
}

// FinishReason says why a delivery reached its final state.
type FinishReason string

// Finish reasons.
const (
	// FinishDelivered: the receiver answered 2xx.
	FinishDelivered FinishReason = "delivered"
	// FinishRejected: the receiver's answer failed the delivery at once
	// (a 4xx, say).
	FinishRejected FinishReason = "rejected"
	// FinishExhausted: RetryPolicy.MaxAttempts attempts all failed.
	FinishExhausted FinishReason = "exhausted"
	// FinishHorizon: the retry horizon passed before the next attempt
	// could start.
	FinishHorizon FinishReason = "horizon"
	// FinishLost: its attempts were lost PostgresConfig.MaxLostAttempts
	// times.
	FinishLost FinishReason = "lost"
	// FinishBroken: the stored delivery could not be sent as accepted.
	FinishBroken FinishReason = "broken"
)

// FinishInfo describes a delivery that reached a final state.
type FinishInfo struct {
	DeliveryID string
	State      DeliveryState
	Reason     FinishReason
	// Attempts is how many attempts were charged.
	Attempts int
	// URL is the destination in its loggable form.
	URL              string
	TaskType         TaskType
	NotificationType string
	Carrier          string
	// AcceptedAt and FinishedAt bound the delivery's life (a redelivery
	// does not move AcceptedAt).
	AcceptedAt, FinishedAt time.Time
}

// BreakerChange is a breaker's transition.
type BreakerChange struct {
	// Key is the breaker key in its loggable form.
	Key      string
	From, To BreakerState
	// Reset reports an operator's ResetBreaker.
	Reset bool
	At    time.Time
}

// LeaseInfo describes a lost lease.
type LeaseInfo struct {
	DeliveryID    string
	AttemptNumber int
}

// maxCarrier bounds Observer.Accepting's carrier.
const maxCarrier = 512

// accepting calls the observer's Accepting, if any, for d, and stores the
// carrier in d. It returns the func to call with the outcome (never nil).
func (k *core) accepting(ctx context.Context, d *prepared, at time.Time) func(AcceptResult) {
	if k.obs == nil || k.obs.Accepting == nil {
		return noAccepted
	}
	var carrier string
	var done func(AcceptResult)
	k.guardHook("Accepting", func() {
		carrier, done = k.obs.Accepting(ctx, AcceptInfo{URL: LoggableURL(d.url), TaskType: d.taskType,
			NotificationType: d.routing.NotificationType, PayloadSize: len(d.body), ReemissionOf: d.reemissionOf, At: at})
	})
	if len(carrier) <= maxCarrier && printableASCII(carrier) {
		d.carrier = carrier
	}
	if done == nil {
		return noAccepted
	}
	return func(r AcceptResult) { k.guardHook("Accepting's func", func() { done(r) }) }
}

func noAccepted(AcceptResult) {}

// guardHook runs an Observer function, logging (once per hook) and
// swallowing a panic: telemetry must not take a worker or a caller down.
func (k *core) guardHook(name string, f func()) {
	defer func() {
		if v := recover(); v != nil {
			if _, seen := k.hookPanics.LoadOrStore(name, true); !seen {
				k.logger.LogAttrs(context.Background(), slog.LevelError, "webhook: an Observer function panicked; its panics are ignored from now on",
					slog.String("hook", name), slog.String("panic", fmt.Sprintf("a %T", v)))
			}
		}
	}()
	f()
}

// observeBreaker tells the observer, if any, of a breaker's change. Call
// it with no supervisor lock held: the hook may call back in.
func (k *core) observeBreaker(key string, from, to BreakerState, reset bool) {
	if k.obs == nil || k.obs.BreakerChanged == nil || from == to {
		return
	}
	k.guardHook("BreakerChanged", func() {
		k.obs.BreakerChanged(context.Background(), BreakerChange{Key: LoggableURL(key), From: from, To: to, Reset: reset, At: k.clock.Now()})
	})
}

// printableASCII reports whether s is printable ASCII.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
