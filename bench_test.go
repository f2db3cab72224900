package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adcpkit/webhook"
)

// benchConcurrency is the number of attempts in flight in both benchmarks.
const benchConcurrency = webhook.ConcurrencyDefault

// benchBacklog bounds the deliveries accepted and not yet delivered: a
// steady stream four times deeper than the workers. (A deeper queue costs
// more CPU per delivery on this small heap, mostly for the garbage collector
// to mark the queued deliveries: about 10% more at 1,024.)
const benchBacklog = 4 * benchConcurrency

func benchReceiver(b *testing.B) (*httptest.Server, *webhook.HTTPSender) {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	if err != nil {
		b.Fatal(err)
	}
	return srv, sender
}

// reportDeliveries reports throughput and the CPU time (receiver included)
// each delivery cost: on a saturated machine the second is the steadier
// measure of overhead.
func reportDeliveries(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/delivery")
	}
}

func benchWebhook(url string, i int) webhook.MCPWebhook {
	return webhook.MCPWebhook{
		URL:         url,
		OperationID: "op_bench",
		TaskID:      fmt.Sprint("task_", i),
		TaskType:    webhook.TaskCreateMediaBuy,
		Status:      webhook.StatusCompleted,
		Result:      map[string]any{"media_buy_id": "mb_12345", "packages": []string{"pkg_1", "pkg_2"}},
	}
}

// BenchmarkMemorySupervisor measures deliveries per second through the
// in-memory supervisor to a loopback receiver ("supervisor"), beside the same
// HTTPSender called directly by the same number of goroutines ("bare-sender",
// building each body; "bare-sender-prebuilt", sending one body over and over).
// The supervisor's figure includes building each body, queueing, the breaker
// check and the audit record.
//
//	go test -run '^$' -bench BenchmarkMemorySupervisor -benchmem -count 5
func BenchmarkMemorySupervisor(b *testing.B) {
	// The bare sender, given each webhook's body built the same way, as a
	// caller without the supervisor would have to; and, as a floor, one
	// body built once and sent over and over.
	for _, name := range []string{"bare-sender", "bare-sender-prebuilt"} {
		b.Run(name, func(b *testing.B) {
			srv, sender := benchReceiver(b)
			prebuilt, prebuiltKey, err := webhook.BuildMCPBody(benchWebhook(srv.URL, 0), epoch)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range benchConcurrency {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						body, key := prebuilt, prebuiltKey
						if name == "bare-sender" {
							if body, key, err = webhook.BuildMCPBody(benchWebhook(srv.URL, int(i)), time.Now()); err != nil {
								b.Error(err)
								return
							}
						}
						resp, err := sender.Send(context.Background(), &webhook.Request{URL: srv.URL, Body: body, IdempotencyKey: key})
						if err != nil || resp.StatusCode != http.StatusNoContent {
							b.Error("send failed", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			reportDeliveries(b, processCPU()-cpu)
		})
	}

	b.Run("supervisor", func(b *testing.B) {
		srv, sender := benchReceiver(b)
		var delivered atomic.Int64
		done := make(chan struct{})
		// The producer keeps at most benchBacklog deliveries outstanding
		// rather than queueing b.N at once, and refills once half have been
		// delivered, so that waking it costs little.
		var outstanding atomic.Int64
		refill := make(chan struct{}, 1)
		sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{
			Concurrency:       benchConcurrency,
			MaxQueued:         b.N + 1,
			RetainFinished:    1,
			AllowInsecureHTTP: true,
			LogSink: webhook.LogSinkFunc(func(_ context.Context, a webhook.Attempt) error {
				if a.Outcome != webhook.OutcomeSuccess {
					return fmt.Errorf("attempt failed: %s", a.Error)
				}
				if outstanding.Add(-1) == benchBacklog/2 {
					select {
					case refill <- struct{}{}:
					default:
					}
				}
				if delivered.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			}),
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		worker := make(chan error, 1)
		go func() { worker <- sup.RunWorker(ctx) }()
		b.ReportAllocs()
		b.ResetTimer()
		cpu := processCPU()
		for i := range b.N {
			if outstanding.Add(1) > benchBacklog {
				<-refill
			}
			if _, err := sup.SendMCP(context.Background(), benchWebhook(srv.URL, i)); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		b.StopTimer()
		reportDeliveries(b, processCPU()-cpu)
		stop()
		if err := <-worker; err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkSendMCP measures acceptance alone: validation, building the body
// and queueing, with no worker running.
//
//	go test -run '^$' -bench BenchmarkSendMCP -benchmem
func BenchmarkSendMCP(b *testing.B) {
	sup, err := webhook.NewMemorySupervisor(webhook.SenderFunc(func(context.Context, *webhook.Request) (*webhook.Response, error) {
		return &webhook.Response{StatusCode: http.StatusOK}, nil
	}), webhook.MemoryConfig{MaxQueued: 1 << 30, MaxQueuedBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	w := benchWebhook("https://buyer.example/hook", 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sup.SendMCP(context.Background(), w); err != nil {
			b.Fatal(err)
		}
	}
}
