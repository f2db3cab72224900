package webhookotel_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
	webhookotel "github.com/adcpkit/webhook/otel"
)

// countingInspector counts Stats calls.
type countingInspector struct {
	webhook.Inspector
	calls atomic.Int32
}

func (c *countingInspector) Stats(ctx context.Context) (webhook.Stats, error) {
	c.calls.Add(1)
	return c.Inspector.Stats(ctx)
}

func gauges(t *testing.T, r *sdkmetric.ManualReader) map[string]map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := map[string]map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			pts := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					pts[attrs(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					pts[attrs(p.Attributes)] = p.Value
				}
			}
			out[m.Name] = pts
		}
	}
	return out
}

// The queue gauges report a Postgres supervisor's Stats, and one Stats
// answer serves every scrape within the TTL.
func TestQueueMetrics(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	sup, err := webhook.NewPostgresSupervisor(pool, nil, webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	require.NoError(t, sup.CreateSchema(ctx))
	send := func(task string) {
		_, err := sup.SendMCP(ctx, webhook.MCPWebhook{URL: "https://buyer.example/hook", OperationID: "op_1", TaskID: task,
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
		require.NoError(t, err)
	}
	send("t1")
	send("t2")
	in := &countingInspector{Inspector: sup}
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	reader := sdkmetric.NewManualReader()
	reg, err := webhookotel.RegisterQueueMetrics(in, webhookotel.QueueConfig{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		TTL:           time.Minute,
		Now:           func() time.Time { return time.Unix(0, now.Load()) },
	})
	require.NoError(t, err)
	defer reg.Unregister() //nolint:errcheck

	g := gauges(t, reader)
	require.Equal(t, map[string]float64{"webhook.delivery.state=pending": 2, "webhook.delivery.state=running": 0,
		"webhook.delivery.state=delivered": 0, "webhook.delivery.state=failed": 0}, g["webhook.queue.deliveries"])
	require.Equal(t, map[string]float64{"": 2}, g["webhook.queue.due"])
	require.Equal(t, map[string]float64{"": 0}, g["webhook.breakers.open"])
	require.GreaterOrEqual(t, g["webhook.queue.oldest_due_age"][""], 0.0)

	send("t3")
	for range 5 { // scrapes within the TTL: the cached answer
		require.Equal(t, 2.0, gauges(t, reader)["webhook.queue.due"][""])
	}
	require.EqualValues(t, 1, in.calls.Load())
	now.Add(int64(time.Minute))
	require.Equal(t, 3.0, gauges(t, reader)["webhook.queue.due"][""])
	require.EqualValues(t, 2, in.calls.Load())
}
