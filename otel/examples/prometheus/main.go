// Command prometheus delivers webhooks through a MemorySupervisor with the
// OpenTelemetry observer, exports the metrics through the OTel Prometheus
// exporter, serves them on /metrics, scrapes that endpoint once and prints
// the library's series:
//
//	cd otel && go run ./examples/prometheus
//
// Four webhooks go to a healthy buyer and two to one that answers 400, so
// the scrape shows 6 accepted, 4 delivered and 2 failed (rejected).
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/adcpkit/webhook"
	webhookotel "github.com/adcpkit/webhook/otel"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run delivers the webhooks, then scrapes /metrics over HTTP and writes
// the library's series to out.
func run(ctx context.Context, out io.Writer) error {
	// The exporter is a Prometheus collector in a registry of its own.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck
	obs, err := webhookotel.New(webhookotel.Config{MeterProvider: mp})
	if err != nil {
		return err
	}

	// The seller: a signing sender (development mode: the buyers are
	// local) and a supervisor with the observer.
	key, err := webhook.GenerateSigningKey("prometheus-example", receive.AlgEd25519)
	if err != nil {
		return err
	}
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	if err != nil {
		return err
	}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true})
	if err != nil {
		return err
	}
	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{Observer: obs})
	if err != nil {
		return err
	}
	if _, err := webhookotel.RegisterQueueMetrics(sup, webhookotel.QueueConfig{MeterProvider: mp}); err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go sup.RunWorker(wctx) //nolint:errcheck

	healthy := webhooktest.NewReceiver(webhooktest.Config{})
	defer healthy.Close()
	rejecting := webhooktest.NewReceiver(webhooktest.Config{})
	defer rejecting.Close()
	rejecting.Fail(webhooktest.Fault{Status: http.StatusBadRequest}, webhooktest.Fault{Status: http.StatusBadRequest})
	var ids []string
	for i, url := range []string{healthy.URL, healthy.URL, rejecting.URL, healthy.URL, rejecting.URL, healthy.URL} {
		r, err := sup.SendMCP(ctx, webhook.MCPWebhook{URL: url, OperationID: "op_1", TaskID: fmt.Sprintf("mb_%d", i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
		if err != nil {
			return err
		}
		ids = append(ids, r.ID)
	}
	for _, id := range ids {
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := sup.Wait(c, id)
		cancel()
		if err != nil {
			return err
		}
	}

	// Serve /metrics as a seller would, and scrape it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck
	defer srv.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "webhook_") || strings.HasPrefix(line, "http_client_request_duration_seconds_count") {
			fmt.Fprintln(out, line)
		}
	}
	return sc.Err()
}
