package webhookotel_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
	webhookotel "github.com/adcpkit/webhook/otel"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(pgtest.Wrap(m))) }

// telemetry is one process's providers, recording in memory.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	obs    *webhook.Observer
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	obs, err := webhookotel.New(webhookotel.Config{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tel.spans)),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader)),
	})
	require.NoError(t, err)
	tel.obs = obs
	return tel
}

// sums returns each counter's points: name -> "attr=v,..." -> value.
func (tel *telemetry) metrics(t *testing.T) map[string]map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tel.reader.Collect(context.Background(), &rm))
	out := map[string]map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			pts := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					pts[attrs(p.Attributes)] += float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					pts[attrs(p.Attributes)] += float64(p.Count)
				}
			}
			out[m.Name] = pts
		}
	}
	return out
}

func attrs(s attribute.Set) string {
	var out string
	for _, kv := range s.ToSlice() {
		if out != "" {
			out += ","
		}
		out += string(kv.Key) + "=" + kv.Value.Emit()
	}
	return out
}

func signingSender(t *testing.T) (webhook.Sender, *receive.Verifier) {
	t.Helper()
	key, err := webhook.GenerateSigningKey("otel-test", receive.AlgEd25519)
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true})
	require.NoError(t, err)
	v, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	return sender, v
}

// checkStory checks one delivery's spans and metrics: accepted by
// "producer", attempted twice (503, then 200) by "worker".
func checkStory(t *testing.T, producer, worker *telemetry, buyerURL string, r webhook.Receipt) {
	t.Helper()
	var accept sdktrace.ReadOnlySpan
	for _, s := range producer.spans.Ended() {
		if s.Name() == "webhook accept" {
			accept = s
		}
	}
	require.NotNil(t, accept)
	require.Equal(t, trace.SpanKindProducer, accept.SpanKind())
	var posts []sdktrace.ReadOnlySpan
	for _, s := range worker.spans.Ended() {
		if s.Name() == "POST" {
			posts = append(posts, s)
		}
	}
	require.Len(t, posts, 2)
	for i, s := range posts {
		require.Equal(t, trace.SpanKindClient, s.SpanKind())
		require.Len(t, s.Links(), 1)
		require.Equal(t, accept.SpanContext().TraceID(), s.Links()[0].SpanContext.TraceID(), "linked to the acceptance")
		require.Equal(t, accept.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID())
		got := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes() {
			got[kv.Key] = kv.Value
		}
		require.Equal(t, "POST", got["http.request.method"].AsString())
		require.Equal(t, buyerURL, got["url.full"].AsString(), "no query")
		require.Equal(t, r.ID, got["webhook.delivery.id"].AsString())
		u, err := url.Parse(buyerURL)
		require.NoError(t, err)
		require.Equal(t, u.Hostname(), got["server.address"].AsString())
		require.Equal(t, u.Port(), strconv.FormatInt(got["server.port"].AsInt64(), 10))
		if i == 0 {
			require.EqualValues(t, 503, got["http.response.status_code"].AsInt64())
			require.Equal(t, "503", got["error.type"].AsString())
			_, ok := got["http.request.resend_count"]
			require.False(t, ok)
		} else {
			require.EqualValues(t, 200, got["http.response.status_code"].AsInt64())
			require.EqualValues(t, 1, got["http.request.resend_count"].AsInt64())
		}
	}
	require.Equal(t, map[string]float64{"": 1}, producer.metrics(t)["webhook.deliveries.accepted"])
	m := worker.metrics(t)
	require.Equal(t, map[string]float64{
		"webhook.attempt.outcome=failure,webhook.attempt.verdict=retry":     1,
		"webhook.attempt.outcome=success,webhook.attempt.verdict=delivered": 1,
	}, m["webhook.attempts"])
	require.Equal(t, map[string]float64{"webhook.delivery.reason=delivered,webhook.delivery.state=delivered": 1}, m["webhook.deliveries.finished"])
	require.Equal(t, map[string]float64{
		"error.type=503,http.request.method=POST,http.response.status_code=503": 1,
		"http.request.method=POST,http.response.status_code=200":                1,
	}, m["http.client.request.duration"])
	require.Equal(t, map[string]float64{"webhook.delivery.state=delivered": 1}, m["webhook.delivery.duration"])
	// The breaker (storyBreaker) opened with the 503, and its probe
	// closed it.
	require.Equal(t, map[string]float64{
		"webhook.breaker.from=closed,webhook.breaker.reset=false,webhook.breaker.to=open":      1,
		"webhook.breaker.from=open,webhook.breaker.reset=false,webhook.breaker.to=half_open":   1,
		"webhook.breaker.from=half_open,webhook.breaker.reset=false,webhook.breaker.to=closed": 1,
	}, m["webhook.breaker.transitions"])
	require.Equal(t, map[string]float64{
		"webhook.health.event=breaker_opened": 1, "webhook.health.event=breaker_half_open": 1, "webhook.health.event=breaker_closed": 1,
	}, m["webhook.health.events"])
}

// storyBreaker opens with one failure and closes with one success, soon.
var storyBreaker = webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 1, OpenTimeout: 10 * time.Millisecond}

func TestMemorySupervisorTelemetry(t *testing.T) {
	t.Parallel()
	tel := newTelemetry(t)
	sender, verifier := signingSender(t)
	buyer := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer buyer.Close()
	buyer.Fail(webhooktest.Fault{Status: http.StatusServiceUnavailable})
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{Observer: tel.obs, Breaker: storyBreaker,
		Retry: webhook.RetryPolicy{BaseDelay: 10 * time.Millisecond, NoJitter: true}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sup.RunWorker(ctx) //nolint:errcheck
	r, err := sup.SendMCP(ctx, webhook.MCPWebhook{URL: buyer.URL + "/hook?sig=querysecret", OperationID: "op_1", TaskID: "mb_1",
		TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
	require.NoError(t, err)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	d, err := sup.Wait(wctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	checkStory(t, tel, tel, buyer.URL+"/hook", r)
}

// Accepted by one process, delivered by another: the attempts link to the
// acceptance through the carrier stored in the table.
func TestPostgresSupervisorTelemetryAcrossProcesses(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	producer, worker := newTelemetry(t), newTelemetry(t)
	sender, verifier := signingSender(t)
	buyer := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer buyer.Close()
	buyer.Fail(webhooktest.Fault{Status: http.StatusServiceUnavailable})
	retry := webhook.RetryPolicy{BaseDelay: 10 * time.Millisecond, NoJitter: true}
	api, err := webhook.NewPostgresSupervisor(pool, nil, webhook.PostgresConfig{Observer: producer.obs, PollOnly: true, AllowInsecureHTTP: true})
	require.NoError(t, err)
	require.NoError(t, api.CreateSchema(ctx))
	pod, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{Observer: worker.obs, Retry: retry, Breaker: storyBreaker,
		PollInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	r, err := api.SendMCP(ctx, webhook.MCPWebhook{URL: buyer.URL + "/hook?sig=querysecret", OperationID: "op_1", TaskID: "mb_1",
		TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- pod.RunWorker(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	d, err := pod.Wait(wctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	require.Eventually(t, func() bool { return len(worker.metrics(t)["webhook.deliveries.finished"]) == 1 }, 20*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	checkStory(t, producer, worker, buyer.URL+"/hook", r)
}

// With PropagateTraceContext, each attempt carries its span's traceparent
// to the buyer, and the signature still verifies; without it, none.
func TestPropagateTraceContext(t *testing.T) {
	t.Parallel()
	for _, propagate := range []bool{true, false} {
		tel := newTelemetry(t)
		key, err := webhook.GenerateSigningKey("otel-prop", receive.AlgEd25519)
		require.NoError(t, err)
		signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
		require.NoError(t, err)
		cfg := webhook.HTTPSenderConfig{Signer: signer, Development: true}
		if propagate {
			cfg.Propagate = webhookotel.PropagateTraceContext
		}
		sender, err := webhook.NewHTTPSender(cfg)
		require.NoError(t, err)
		v, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
		require.NoError(t, err)
		buyer := webhooktest.NewReceiver(webhooktest.Config{Verifier: v})
		sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{Observer: tel.obs})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		go sup.RunWorker(ctx) //nolint:errcheck
		r, err := sup.SendMCP(ctx, webhook.MCPWebhook{URL: buyer.URL, OperationID: "op_1", TaskID: "mb_1",
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
		require.NoError(t, err)
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = sup.Wait(wctx, r.ID)
		wcancel()
		require.NoError(t, err)
		ds := buyer.Deliveries()
		require.Len(t, ds, 1)
		require.NoError(t, ds[0].VerifyErr)
		if !propagate {
			require.Empty(t, ds[0].Header.Get("Traceparent"))
		} else {
			var post sdktrace.ReadOnlySpan
			for _, s := range tel.spans.Ended() {
				if s.Name() == "POST" {
					post = s
				}
			}
			require.NotNil(t, post)
			require.Equal(t, "00-"+post.SpanContext().TraceID().String()+"-"+post.SpanContext().SpanID().String()+"-01", ds[0].Header.Get("Traceparent"))
		}
		cancel()
		buyer.Close()
	}
}
