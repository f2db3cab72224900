// Package webhookotel exports a webhook supervisor's work to
// OpenTelemetry: traces and metrics, through the library's
// [webhook.Observer] seam. It is its own module, so that the library's
// go.mod does not gain OpenTelemetry.
//
//	obs, err := webhookotel.New(webhookotel.Config{})  // the global providers
//	sup, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{Observer: obs})
//
// Traces: a PRODUCER span at acceptance ("webhook accept"), whose context
// the supervisor stores with the delivery (in Postgres, its trace_carrier
// column), and one CLIENT span per attempt named "POST", in whatever
// process makes it, linked to the producer span. Attempt spans carry the
// stable HTTP client attributes (http.request.method,
// http.response.status_code, server.address, server.port, url.full without
// its query, http.request.resend_count on retries, error.type).
//
// Metrics, in base units and with no URL or breaker-key attribute (so
// their cardinality stays bounded):
//
//	webhook.deliveries.accepted          counter
//	webhook.deliveries.finished          counter, by webhook.delivery.state and webhook.delivery.reason
//	webhook.attempts                     counter, by webhook.attempt.outcome and webhook.attempt.verdict
//	http.client.request.duration         histogram (s), by http.request.method, http.response.status_code, error.type
//	webhook.delivery.duration            histogram (s), acceptance to final state, by webhook.delivery.state
//	webhook.breaker.transitions          counter, by webhook.breaker.from, webhook.breaker.to, webhook.breaker.reset
//	webhook.health.events                counter, by webhook.health.event (a webhook.HealthKind)
//	webhook.leases.lost                  counter
//
// [RegisterQueueMetrics] adds gauges of the queue, fed by the Inspector's
// Stats behind a cache.
package webhookotel

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/adcpkit/webhook"
)

// Scope is the instrumentation scope's name.
const Scope = "github.com/adcpkit/webhook/otel"

// Config configures [New]. The zero value uses the global providers.
type Config struct {
	// TracerProvider makes the spans. Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider makes the instruments. Defaults to
	// otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
}

// New returns an Observer that records traces and metrics.
func New(cfg Config) (*webhook.Observer, error) {
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otelMeterProvider()
	}
	o := &observer{tracer: tp.Tracer(Scope), prop: propagation.TraceContext{}}
	m := mp.Meter(Scope)
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	counter := func(name, unit, description string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(description))
		add(err)
		return c
	}
	o.accepted = counter("webhook.deliveries.accepted", "{delivery}", "Webhooks accepted for delivery.")
	o.finished = counter("webhook.deliveries.finished", "{delivery}", "Deliveries that reached a final state.")
	o.attempts = counter("webhook.attempts", "{attempt}", "Delivery attempts, by outcome and classification.")
	var err error
	o.requestDuration, err = m.Float64Histogram("http.client.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of webhook HTTP requests."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	add(err)
	o.deliveryDuration, err = m.Float64Histogram("webhook.delivery.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from acceptance to a final state."),
		metric.WithExplicitBucketBoundaries(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400))
	add(err)
	o.breakers = counter("webhook.breaker.transitions", "{transition}", "Circuit-breaker state changes.")
	o.healthEvents = counter("webhook.health.events", "{event}",
		"Endpoint-health events: breakers opened, half-open and closed, endpoints failing and recovered, deliveries exhausted.")
	o.leases = counter("webhook.leases.lost", "{lease}", "Attempts whose lease another worker took over before their result was stored.")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &webhook.Observer{
		Accepting:        o.accepting,
		AttemptStarted:   o.attemptStarted,
		AttemptFinished:  o.attemptFinished,
		DeliveryFinished: o.deliveryFinished,
		Health:           o.health,
		LeaseLost:        o.leaseLost,
	}, nil
}

type observer struct {
	tracer           trace.Tracer
	prop             propagation.TextMapPropagator
	accepted         metric.Int64Counter
	finished         metric.Int64Counter
	attempts         metric.Int64Counter
	requestDuration  metric.Float64Histogram
	deliveryDuration metric.Float64Histogram
	breakers         metric.Int64Counter
	healthEvents     metric.Int64Counter
	leases           metric.Int64Counter
	sets             setCache
}

// Keys of the attribute sets the observer reuses: each is one of few
// values, so the sets are built once, not at every measurement.
type (
	requestKey struct {
		status  int
		errType string
	}
	attemptKey struct {
		outcome webhook.Outcome
		verdict webhook.Verdict
	}
	finishKey struct {
		state  webhook.DeliveryState
		reason webhook.FinishReason
	}
)

// setCache holds attribute sets by key (bounded: statuses are at most a
// few hundred values).
type setCache struct{ m sync.Map }

func (c *setCache) get(key any, build func() attribute.Set) attribute.Set {
	if s, ok := c.m.Load(key); ok {
		return s.(attribute.Set)
	}
	s := build()
	c.m.Store(key, s)
	return s
}

// hostPort reads the host and port of an absolute http(s) URL in its
// loggable form, without url.Parse (which allocates).
func hostPort(u string) (string, int, bool) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "", 0, false
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	host, port := rest, 0
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host = rest[:i]
		p, err := strconv.Atoi(rest[i+1:])
		if err != nil {
			return "", 0, false
		}
		port = p
	}
	switch {
	case port != 0:
	case scheme == "https":
		port = 443
	case scheme == "http":
		port = 80
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host, port, host != ""
}

// carrier is a one-header TextMapCarrier for traceparent.
type carrier struct{ traceparent string }

func (c *carrier) Get(key string) string {
	if key == "traceparent" {
		return c.traceparent
	}
	return ""
}

func (c *carrier) Set(key, value string) {
	if key == "traceparent" {
		c.traceparent = value
	}
}

func (c *carrier) Keys() []string { return []string{"traceparent"} }

func (o *observer) accepting(ctx context.Context, a webhook.AcceptInfo) (string, func(webhook.AcceptResult)) {
	attrs := []attribute.KeyValue{semconv.URLFull(a.URL), attribute.Int("webhook.payload.size", a.PayloadSize)}
	if a.TaskType != "" {
		attrs = append(attrs, attribute.String("webhook.task.type", string(a.TaskType)))
	}
	if a.NotificationType != "" {
		attrs = append(attrs, attribute.String("webhook.notification.type", a.NotificationType))
	}
	if a.ReemissionOf != "" {
		attrs = append(attrs, attribute.String("webhook.reemission_of", a.ReemissionOf))
	}
	ctx, span := o.tracer.Start(ctx, "webhook accept", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithTimestamp(a.At), trace.WithAttributes(attrs...))
	var c carrier
	o.prop.Inject(ctx, &c)
	return c.traceparent, func(r webhook.AcceptResult) {
		switch {
		case r.Err != nil:
			span.RecordError(r.Err)
			span.SetStatus(codes.Error, "refused")
		case r.Duplicate: // the delivery exists; nothing new to count
			span.SetAttributes(attribute.String("webhook.delivery.id", r.Receipt.ID), attribute.Bool("webhook.duplicate", true))
		default:
			span.SetAttributes(attribute.String("webhook.delivery.id", r.Receipt.ID))
			o.accepted.Add(ctx, 1)
		}
		span.End()
	}
}

func (o *observer) attemptStarted(ctx context.Context, a webhook.AttemptInfo) context.Context {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodPost, semconv.URLFull(a.URL),
		attribute.String("webhook.delivery.id", a.DeliveryID),
	}
	if host, port, ok := hostPort(a.URL); ok {
		attrs = append(attrs, semconv.ServerAddress(host), semconv.ServerPort(port))
	}
	if a.AttemptNumber > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(a.AttemptNumber-1))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...)}
	if a.Carrier != "" {
		if sc := trace.SpanContextFromContext(o.prop.Extract(context.Background(), &carrier{a.Carrier})); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	ctx, _ = o.tracer.Start(ctx, "POST", opts...)
	return ctx
}

func (o *observer) attemptFinished(ctx context.Context, a *webhook.Attempt, c webhook.Classification) {
	span := trace.SpanFromContext(ctx)
	var errType string
	switch {
	case a.HTTPStatus >= 400:
		errType = strconv.Itoa(a.HTTPStatus)
	case a.HTTPStatus == 0 && a.TimedOut:
		errType = "timeout"
	case a.HTTPStatus == 0:
		errType = "connection_error"
	}
	set := o.sets.get(requestKey{a.HTTPStatus, errType}, func() attribute.Set {
		attrs := []attribute.KeyValue{semconv.HTTPRequestMethodPost}
		if a.HTTPStatus != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(a.HTTPStatus))
		}
		if errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		}
		return attribute.NewSet(attrs...)
	})
	if span.IsRecording() {
		span.SetAttributes(set.ToSlice()...)
		if a.Outcome != webhook.OutcomeSuccess {
			span.SetStatus(codes.Error, errType)
		}
	}
	span.End()
	o.requestDuration.Record(ctx, a.ResponseTime.Seconds(), metric.WithAttributeSet(set))
	o.attempts.Add(ctx, 1, metric.WithAttributeSet(o.sets.get(attemptKey{a.Outcome, c.Verdict}, func() attribute.Set {
		return attribute.NewSet(attribute.String("webhook.attempt.outcome", string(a.Outcome)),
			attribute.String("webhook.attempt.verdict", c.Verdict.String()))
	})))
}

func (o *observer) deliveryFinished(ctx context.Context, d webhook.FinishInfo) {
	o.finished.Add(ctx, 1, metric.WithAttributeSet(o.sets.get(finishKey{d.State, d.Reason}, func() attribute.Set {
		return attribute.NewSet(attribute.String("webhook.delivery.state", string(d.State)), attribute.String("webhook.delivery.reason", string(d.Reason)))
	})))
	if !d.AcceptedAt.IsZero() && !d.FinishedAt.Before(d.AcceptedAt) {
		o.deliveryDuration.Record(ctx, d.FinishedAt.Sub(d.AcceptedAt).Seconds(), metric.WithAttributeSet(o.sets.get(d.State, func() attribute.Set {
			return attribute.NewSet(attribute.String("webhook.delivery.state", string(d.State)))
		})))
	}
}

func (o *observer) health(ctx context.Context, e webhook.HealthEvent) {
	o.healthEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("webhook.health.event", string(e.Kind))))
	switch e.Kind {
	case webhook.HealthBreakerOpened, webhook.HealthBreakerHalfOpen, webhook.HealthBreakerClosed:
		o.breakers.Add(ctx, 1, metric.WithAttributes(attribute.String("webhook.breaker.from", e.From.String()),
			attribute.String("webhook.breaker.to", e.To.String()), attribute.Bool("webhook.breaker.reset", e.Reset)))
	}
}

func (o *observer) leaseLost(ctx context.Context, _ webhook.LeaseInfo) {
	o.leases.Add(ctx, 1)
}

func otelMeterProvider() metric.MeterProvider { return otel.GetMeterProvider() }

// PropagateTraceContext is an HTTPSenderConfig.Propagate that sends the
// attempt span's W3C traceparent (and tracestate) to the buyer, so that a
// buyer who traces can join the trace. The headers are not signed; set it
// only when your buyers want them.
func PropagateTraceContext(ctx context.Context, set func(name, value string)) {
	propagation.TraceContext{}.Inject(ctx, setter(set))
}

// setter is a write-only TextMapCarrier.
type setter func(name, value string)

func (s setter) Get(string) string     { return "" }
func (s setter) Set(key, value string) { s(key, value) }
func (s setter) Keys() []string        { return nil }
