package webhookotel_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/adcpkit/webhook"
	webhookotel "github.com/adcpkit/webhook/otel"
)

// The observer's own cost per delivery of two attempts (acceptance, two
// attempt spans, the finish), with a recording SDK tracer (spans sampled,
// no exporter) and meter:
//
//	cd otel && go test -run '^$' -bench BenchmarkObserverPerDelivery -benchmem
func BenchmarkObserverPerDelivery(b *testing.B) {
	obs, err := webhookotel.New(webhookotel.Config{
		TracerProvider: sdktrace.NewTracerProvider(),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	url := "https://buyer.example/adcp/webhooks"
	b.ReportAllocs()
	for b.Loop() {
		carrier, done := obs.Accepting(ctx, webhook.AcceptInfo{URL: url, TaskType: webhook.TaskCreateMediaBuy, PayloadSize: 400, At: now})
		done(webhook.AcceptResult{Receipt: webhook.Receipt{ID: "1"}})
		for n := 1; n <= 2; n++ {
			actx := obs.AttemptStarted(ctx, webhook.AttemptInfo{DeliveryID: "1", AttemptNumber: n, URL: url, Carrier: carrier, AcceptedAt: now})
			a := webhook.Attempt{DeliveryID: "1", AttemptNumber: n, HTTPStatus: 503 - 303*(n-1), Outcome: webhook.OutcomeFailure, ResponseTime: time.Millisecond}
			obs.AttemptFinished(actx, &a, webhook.Classification{Verdict: webhook.VerdictRetry})
		}
		obs.DeliveryFinished(ctx, webhook.FinishInfo{DeliveryID: "1", State: webhook.StateDelivered, Reason: webhook.FinishDelivered,
			Attempts: 2, URL: url, AcceptedAt: now, FinishedAt: now.Add(time.Second)})
	}
}
