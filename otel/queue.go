package webhookotel

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/adcpkit/webhook"
)

// QueueConfig configures [RegisterQueueMetrics].
type QueueConfig struct {
	// MeterProvider makes the gauges. Defaults to otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// TTL is how long one Inspector.Stats answer serves collections:
	// Stats counts the deliveries table on Postgres, so scrapes must not
	// call it each time. Defaults to 15s.
	TTL time.Duration
	// Timeout bounds one Stats call. Defaults to 5s.
	Timeout time.Duration
	// Now is the clock the TTL is measured by. Defaults to time.Now.
	Now func() time.Time
}

// RegisterQueueMetrics registers observable gauges fed by in.Stats (any
// supervisor), cached for cfg.TTL:
//
//	webhook.queue.deliveries       {delivery}, by webhook.delivery.state
//	webhook.queue.due              {delivery}: due now, breaker closed (the backlog)
//	webhook.queue.oldest_due_age   s: how long the oldest due delivery has waited
//	webhook.breakers.open          {breaker}: open or half-open
//
// One process per database is enough to register them. A Stats error
// leaves the gauges unreported for that collection. Unregister the
// returned registration to stop.
func RegisterQueueMetrics(in webhook.Inspector, cfg QueueConfig) (metric.Registration, error) {
	if in == nil {
		return nil, errors.New("webhookotel: RegisterQueueMetrics needs an Inspector (a supervisor)")
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otelMeterProvider()
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 15 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := mp.Meter(Scope)
	deliveries, err1 := m.Int64ObservableGauge("webhook.queue.deliveries", metric.WithUnit("{delivery}"),
		metric.WithDescription("Deliveries held, by state (finished ones as long as they are kept)."))
	due, err2 := m.Int64ObservableGauge("webhook.queue.due", metric.WithUnit("{delivery}"),
		metric.WithDescription("Pending deliveries due now whose breaker is closed: the backlog."))
	age, err3 := m.Float64ObservableGauge("webhook.queue.oldest_due_age", metric.WithUnit("s"),
		metric.WithDescription("How long the oldest due delivery has waited."))
	open, err4 := m.Int64ObservableGauge("webhook.breakers.open", metric.WithUnit("{breaker}"),
		metric.WithDescription("Breakers open or half-open."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, err
	}
	c := &statsCache{in: in, cfg: cfg}
	states := []webhook.DeliveryState{webhook.StatePending, webhook.StateRunning, webhook.StateDelivered, webhook.StateFailed}
	sets := make([]metric.ObserveOption, len(states))
	for i, st := range states {
		sets[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("webhook.delivery.state", string(st))))
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		st, ok := c.get(ctx)
		if !ok {
			return nil
		}
		for i, n := range []int64{st.Pending, st.Running, st.Delivered, st.Failed} {
			o.ObserveInt64(deliveries, n, sets[i])
		}
		o.ObserveInt64(due, st.Due)
		o.ObserveFloat64(age, st.OldestDueAge.Seconds())
		o.ObserveInt64(open, st.OpenBreakers)
		return nil
	}, deliveries, due, age, open)
}

// statsCache is one Stats answer, kept for the TTL.
type statsCache struct {
	in  webhook.Inspector
	cfg QueueConfig

	mu sync.Mutex
	at time.Time
	st webhook.Stats
	ok bool
}

func (c *statsCache) get(ctx context.Context) (webhook.Stats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if c.ok && now.Sub(c.at) < c.cfg.TTL {
		return c.st, true
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	st, err := c.in.Stats(ctx)
	if err != nil {
		return webhook.Stats{}, false
	}
	c.st, c.at, c.ok = st, now, true
	return st, true
}
