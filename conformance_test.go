package webhook_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/webhooktest"
)

// TestEmissionConformance follows the retry phase of the AdCP spec's
// webhook_emission runner (schemas/webhook-emission.yaml,
// expect_webhook_retry_keys_stable): the runner's receiver answers 503 to
// the first three deliveries and expects, within 90 s, a delivery that
// goes through, at least two attempts, and a byte-identical
// idempotency_key on all of them. It runs with ProductionRetryPolicy over
// real HTTP, signed with RFC 9421 and verified as a buyer would; the
// supervisor's clock is fake, so the schedule's 90 s are not waited for.
func TestEmissionConformance(t *testing.T) {
	t.Parallel()
	for name, build := range map[string]func(t *testing.T, sender webhook.Sender, cfg suiteConfig) webhook.Supervisor{
		"memory": func(t *testing.T, sender webhook.Sender, cfg suiteConfig) webhook.Supervisor {
			s, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{Retry: cfg.Retry, LogSink: cfg.Sink,
				Clock: cfg.Clock, Logger: cfg.Logger, AllowInsecureHTTP: true})
			require.NoError(t, err)
			return s
		},
		"postgres": func(t *testing.T, sender webhook.Sender, cfg suiteConfig) webhook.Supervisor {
			cfg.Sender = sender
			return newPostgresOn(t, pgtest.New(t), cfg, webhook.PostgresConfig{AllowInsecureHTTP: true})
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sender, verifier := signingSeller(t, true)
			rcv := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
			t.Cleanup(rcv.Close)
			rcv.Fail(webhooktest.Fault{Status: 503}, webhooktest.Fault{Status: 503}, webhooktest.Fault{Status: 503})

			clock := fakeclock.New(epoch)
			sink := newRecordingSink()
			sup := build(t, sender, suiteConfig{Retry: webhook.ProductionRetryPolicy(), Sink: sink, Clock: clock,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			e := &env{t: t, clock: clock, sink: sink, sup: sup}
			e.startWorker()
			w := mcp(rcv.URL+"/webhooks/adcp", "task_retry")
			w.OperationID = "op_webhook_retry_explicit"
			r := e.sendMCP(w)

			as := e.deliverAll(1)
			last := as[len(as)-1]
			require.Equal(t, webhook.OutcomeSuccess, last.Outcome, "delivered: %+v", as)
			require.Len(t, as, 4, "three 503s, then 200")
			require.LessOrEqual(t, last.OccurredAt.Sub(as[0].OccurredAt), 90*time.Second,
				"the production schedule delivers within the runner's 90 s")

			got := rcv.Deliveries()
			require.Len(t, got, 4)
			for i, d := range got {
				require.NoError(t, d.VerifyErr, "attempt %d verifies", i+1)
				require.Equal(t, r.IdempotencyKey, d.IdempotencyKey, "byte-identical key on attempt %d", i+1)
				require.True(t, bytes.Equal(got[0].Body, d.Body), "byte-identical body on attempt %d", i+1)
			}
			require.Equal(t, []int{503, 503, 503, http.StatusOK}, []int{got[0].Status, got[1].Status, got[2].Status, got[3].Status})
		})
	}
}
