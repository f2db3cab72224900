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

	// Health is told the endpoint-health events operators alert on: a
	// breaker opened, half-open or closed, an endpoint failing or
	// recovered, a delivery that exhausted its attempts or its horizon.
	// Each is reported once, by the process whose write made it happen:
	// on Postgres, the one whose transaction changed the breaker's row or
	// finished the delivery, so that two pods never both report it. (A
	// process that dies between its commit and the call loses the event;
	// the breakers table, Inspector.Breakers, still shows the state.)
	// Workers and pods report concurrently, so one key's events can
	// arrive out of order: HealthEvent.Seq orders them. The context
	// carries the caller's values but no deadline.
	Health func(ctx context.Context, e HealthEvent)

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

// HealthKind is what a [HealthEvent] reports.
type HealthKind string

// Health event kinds.
const (
	// HealthBreakerOpened: the endpoint's breaker opened (From is closed,
	// or half-open when a probe failed); attempts wait for
	// BreakerPolicy.OpenTimeout.
	HealthBreakerOpened HealthKind = "breaker_opened"
	// HealthBreakerHalfOpen: an open breaker let its first probe through
	// (reported when the probe is claimed, or when a late attempt's
	// result found it past its open timeout).
	HealthBreakerHalfOpen HealthKind = "breaker_half_open"
	// HealthBreakerClosed: probes succeeded (From is half-open), or an
	// operator reset the breaker (Reset).
	HealthBreakerClosed HealthKind = "breaker_closed"
	// HealthEndpointFailing: the endpoint's run of failures reached
	// BreakerPolicy.FailingDeliveries failed deliveries, or lasted
	// BreakerPolicy.FailingFor. Reported once per run.
	HealthEndpointFailing HealthKind = "endpoint_failing"
	// HealthEndpointRecovered: a failing endpoint answered 2xx, ending its
	// run of failures.
	HealthEndpointRecovered HealthKind = "endpoint_recovered"
	// HealthDeliveryExhausted: a delivery failed for good without the
	// buyer refusing it: Delivery.Reason is exhausted (its attempts),
	// horizon (its retry horizon) or lost (its attempts were lost).
	HealthDeliveryExhausted HealthKind = "delivery_exhausted"
)

// HealthEvent is one endpoint-health event.
type HealthEvent struct {
	Kind HealthKind
	// Key is the endpoint's breaker key (its Routing.BreakerKey, or its
	// URL) in loggable form.
	Key string
	// At is when the event was reported, by the supervisor's clock.
	At time.Time
	// Seq orders the breaker and endpoint events of one key: a later
	// change has a greater Seq (on Postgres, the breaker row's version;
	// in memory, a supervisor-wide counter). Keep the greatest seen per
	// key and ignore an event with a smaller one: it arrived late. Zero
	// for delivery_exhausted.
	Seq int64
	// From and To are the breaker's states, for the breaker kinds.
	From, To BreakerState
	// Reset marks an operator's ResetBreaker.
	Reset bool
	// FailingSince and FailedDeliveries describe the endpoint's run of
	// failures, for endpoint_failing (the run so far) and
	// endpoint_recovered (the run that ended): when its first failure
	// came, and how many deliveries failed for good in it.
	FailingSince     time.Time
	FailedDeliveries int
	// Delivery is the delivery, for delivery_exhausted.
	Delivery *FinishInfo
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

// gateChanged reports a gate's change from before to after, which the
// caller's write made: it logs it and tells the observer. Call it with no
// supervisor lock held (the hook may call back in), once per write.
// seq is the change's Seq.
func (k *core) gateChanged(ctx context.Context, key string, before, after gate, seq int64) {
	if before.State == after.State && before.health == after.health {
		return
	}
	ctx = context.WithoutCancel(ctx) // a statement's timeout is not the hook's
	at := k.clock.Now()
	if before.State != after.State {
		k.breakerChanged(key, before.State, after.State)
		k.health(ctx, HealthEvent{Kind: breakerKind(after.State), Key: LoggableURL(key), At: at, Seq: seq, From: before.State, To: after.State})
	}
	ended := before.Failing && (!after.Failing || !after.FailingSince.Equal(before.FailingSince))
	if ended {
		k.logger.LogAttrs(ctx, slog.LevelInfo, "webhook: endpoint recovered",
			slog.String("breaker_key", LoggableURL(key)), slog.Time("failing_since", before.FailingSince.UTC()), slog.Int("failed_deliveries", before.FailedDeliveries))
		k.health(ctx, HealthEvent{Kind: HealthEndpointRecovered, Key: LoggableURL(key), At: at, Seq: seq,
			FailingSince: before.FailingSince.UTC(), FailedDeliveries: before.FailedDeliveries})
	}
	if after.Failing && (ended || !before.Failing) {
		k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: endpoint failing",
			slog.String("breaker_key", LoggableURL(key)), slog.Time("failing_since", after.FailingSince.UTC()), slog.Int("failed_deliveries", after.FailedDeliveries))
		k.health(ctx, HealthEvent{Kind: HealthEndpointFailing, Key: LoggableURL(key), At: at, Seq: seq,
			FailingSince: after.FailingSince.UTC(), FailedDeliveries: after.FailedDeliveries})
	}
}

// breakerReset reports an operator's reset of key's breaker, which was
// from: it logs it and, if it was not closed, tells the observer.
func (k *core) breakerReset(ctx context.Context, key string, from BreakerState, seq int64) {
	k.logger.LogAttrs(ctx, slog.LevelInfo, "webhook: circuit breaker reset by an operator",
		slog.String("breaker_key", LoggableURL(key)), slog.String("from", from.String()), slog.String("to", BreakerClosed.String()))
	if from != BreakerClosed {
		k.health(context.WithoutCancel(ctx), HealthEvent{Kind: HealthBreakerClosed, Key: LoggableURL(key), At: k.clock.Now(), Seq: seq,
			From: from, To: BreakerClosed, Reset: true})
	}
}

// breakerKind is the event of a breaker's transition to s.
func breakerKind(s BreakerState) HealthKind {
	switch s {
	case BreakerOpen:
		return HealthBreakerOpened
	case BreakerHalfOpen:
		return HealthBreakerHalfOpen
	}
	return HealthBreakerClosed
}

// health tells the observer, if any, of e.
func (k *core) health(ctx context.Context, e HealthEvent) {
	if k.obs == nil || k.obs.Health == nil {
		return
	}
	k.guardHook("Health", func() { k.obs.Health(ctx, e) })
}

// exhausted reports a delivery that failed for good without the buyer
// refusing it, which its worker's write finished.
func (k *core) exhausted(ctx context.Context, breakerKey string, d *FinishInfo) {
	k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: delivery exhausted; the buyer never acknowledged it",
		slog.String("delivery_id", d.DeliveryID), slog.String("breaker_key", LoggableURL(breakerKey)),
		slog.String("reason", string(d.Reason)), slog.Int("attempts", d.Attempts))
	k.health(context.WithoutCancel(ctx), HealthEvent{Kind: HealthDeliveryExhausted, Key: LoggableURL(breakerKey), At: d.FinishedAt, Delivery: d})
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
