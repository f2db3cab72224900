package pgstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/receive/pgstore"
)

// BenchmarkReceive measures verified, de-duplicated receptions per second:
// signed webhooks (each a new idempotency key, signed before the timer
// starts) POSTed over loopback by 16 concurrent senders to one
// receive.Handler, whose nonce and dedup stores are in Postgres ("postgres")
// or in memory ("memory", the same work without a database). Each
// reception runs the verifier checklist, a nonce Use, a dedup Claim and
// Complete, and an empty buyer handler.
//
//	go test -run '^$' -bench BenchmarkReceive -benchtime 5000x ./receive/pgstore
func BenchmarkReceive(b *testing.B) {
	for _, mode := range []string{"postgres", "memory"} {
		b.Run(mode, func(b *testing.B) {
			key, err := webhook.GenerateSigningKey("seller-2026", "")
			require.NoError(b, err)
			signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
			require.NoError(b, err)
			var nonces receive.NonceStore = &receive.MemoryNonceStore{}
			var dedup receive.DedupStore = &receive.MemoryDedupStore{}
			if mode == "postgres" {
				pool := pgtest.New(b)
				pn, err := pgstore.NewNonceStore(pool, pgstore.NonceConfig{})
				require.NoError(b, err)
				pd, err := pgstore.NewDedupStore(pool, pgstore.DedupConfig{})
				require.NoError(b, err)
				require.NoError(b, pn.CreateSchema(context.Background()))
				require.NoError(b, pd.CreateSchema(context.Background()))
				nonces, dedup = pn, pd
			}
			v, err := receive.NewVerifier(receive.VerifierConfig{Agent: agentURL, Keys: []receive.VerifyingKey{key.VerifyingKey()}, Nonces: nonces})
			require.NoError(b, err)
			var processed atomic.Int64
			h, err := receive.NewHandler(receive.HandlerConfig{Verifier: v, Dedup: dedup, Logger: quiet},
				http.HandlerFunc(func(http.ResponseWriter, *http.Request) { processed.Add(1) }))
			require.NoError(b, err)
			srv := httptest.NewServer(h)
			defer srv.Close()

			type signedReq struct {
				header http.Header
				body   []byte
			}
			reqs := make([]signedReq, b.N)
			for i := range reqs {
				body, _, err := webhook.BuildMCPBody(webhook.MCPWebhook{OperationID: "op", TaskID: fmt.Sprint("t", i),
					TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Result: map[string]any{"media_buy_id": "mb_1"}}, time.Now())
				require.NoError(b, err)
				r, err := http.NewRequest(http.MethodPost, srv.URL+"/adcp/webhook", nil)
				require.NoError(b, err)
				require.NoError(b, signer.Sign(r, body))
				reqs[i] = signedReq{r.Header, body}
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(len(reqs)) {
							return
						}
						r, _ := http.NewRequest(http.MethodPost, srv.URL+"/adcp/webhook", bytes.NewReader(reqs[i].body))
						r.Header = reqs[i].header
						resp, err := client.Do(r)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							b.Errorf("status %d", resp.StatusCode)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "receptions/s")
			b.StopTimer()
			if int(processed.Load()) != b.N {
				b.Fatalf("processed %d of %d", processed.Load(), b.N)
			}
		})
	}
}
