package pgstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/receive/pgstore"
)

// These tests run the library's own supervisors, as sellers, against a
// buyer of two receive.Handler "pods" behind a round-robin load balancer,
// sharing one Postgres for their nonce and dedup stores: the deployment
// AdCP 3.2 asks of a buyer.

const agentURL = "https://seller.example/mcp"

var quiet = slog.New(slog.DiscardHandler)

// exchange is one request the load balancer passed on, and its answer.
type exchange struct {
	pod    int
	key    string
	status int
	header http.Header
	body   []byte
}

// buyer is the two pods, the load balancer in front of them and what the
// buyer's handler did.
type buyer struct {
	lb   *httptest.Server
	pods [2]*httptest.Server
	turn atomic.Int64

	mu        sync.Mutex
	log       []exchange
	changed   chan struct{}
	dropOnce  map[string]bool          // keys whose next answer the LB loses
	calls     map[string]int           // next's runs per key
	processed map[string]int           // next's successful runs per key
	fail      map[string]int           // keys whose first n runs fail with 500
	hold      map[string]chan struct{} // keys whose run waits for the channel
}

func newBuyer(t *testing.T, pool *pgxpool.Pool, nc pgstore.NonceConfig, dc pgstore.DedupConfig, key receive.VerifyingKey) *buyer {
	t.Helper()
	b := &buyer{changed: make(chan struct{}), dropOnce: map[string]bool{}, calls: map[string]int{}, processed: map[string]int{},
		fail: map[string]int{}, hold: map[string]chan struct{}{}}
	ctx := context.Background()
	for i := range b.pods {
		// Each pod has its own store values and verifier: only the
		// database is shared.
		nonces, err := pgstore.NewNonceStore(pool, nc)
		require.NoError(t, err)
		dedup, err := pgstore.NewDedupStore(pool, dc)
		require.NoError(t, err)
		require.NoError(t, nonces.CreateSchema(ctx))
		require.NoError(t, dedup.CreateSchema(ctx))
		v, err := receive.NewVerifier(receive.VerifierConfig{Agent: agentURL, Keys: []receive.VerifyingKey{key}, Nonces: nonces})
		require.NoError(t, err)
		h, err := receive.NewHandler(receive.HandlerConfig{Verifier: v, Dedup: dedup, Lease: time.Minute, Logger: quiet}, http.HandlerFunc(b.next))
		require.NoError(t, err)
		b.pods[i] = httptest.NewServer(h)
		t.Cleanup(b.pods[i].Close)
	}
	b.lb = httptest.NewServer(http.HandlerFunc(b.forward))
	t.Cleanup(b.lb.Close)
	t.Cleanup(b.releaseAll) // before the pods close
	return b
}

// next is the buyer's own handler, on both pods.
func (b *buyer) next(w http.ResponseWriter, r *http.Request) {
	wh, _ := receive.WebhookFrom(r.Context())
	b.mu.Lock()
	b.calls[wh.IdempotencyKey]++
	failing := b.fail[wh.IdempotencyKey] > 0
	if failing {
		b.fail[wh.IdempotencyKey]--
	}
	hold := b.hold[wh.IdempotencyKey]
	b.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if failing {
		http.Error(w, "downstream unavailable", http.StatusInternalServerError)
		return
	}
	b.mu.Lock()
	b.processed[wh.IdempotencyKey]++
	b.mu.Unlock()
}

// forward passes a request to the pods in turn, keeping the Host the
// seller signed, and records the exchange.
func (b *buyer) forward(w http.ResponseWriter, r *http.Request) {
	pod := int(b.turn.Add(1) % 2)
	body, _ := io.ReadAll(r.Body)
	resp, err := b.send(r.Context(), pod, r.RequestURI, r.Host, r.Header, body)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	key := keyOf(body)
	b.mu.Lock()
	drop := b.dropOnce[key] && resp.status == http.StatusOK
	if drop {
		delete(b.dropOnce, key)
	}
	b.log = append(b.log, exchange{pod: pod, key: key, status: resp.status, header: r.Header.Clone(), body: body})
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	if drop { // the answer is lost on its way back to the seller
		panic(http.ErrAbortHandler)
	}
	for k, v := range resp.header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.status)
}

type answer struct {
	status int
	header http.Header
}

// send delivers a request to one pod directly.
func (b *buyer) send(ctx context.Context, pod int, uri, host string, header http.Header, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.pods[pod].URL+uri, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header = header.Clone()
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return answer{resp.StatusCode, resp.Header}, nil
}

// waitFor blocks until an exchange satisfies ok.
func (b *buyer) waitFor(t *testing.T, what string, ok func(exchange) bool) exchange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		b.mu.Lock()
		for _, e := range b.log {
			if ok(e) {
				b.mu.Unlock()
				return e
			}
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no exchange: %s", what)
		}
	}
}

func (b *buyer) statuses(key string) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for _, e := range b.log {
		if e.key == key {
			out = append(out, e.status)
		}
	}
	return out
}

func (b *buyer) counts(key string) (calls, processed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[key], b.processed[key]
}

func (b *buyer) releaseAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, ch := range b.hold {
		close(ch)
		delete(b.hold, k)
	}
}

func keyOf(body []byte) string {
	var k string
	if m := bytes.Index(body, []byte(`"idempotency_key":"`)); m >= 0 {
		rest := body[m+len(`"idempotency_key":"`):]
		if end := bytes.IndexByte(rest, '"'); end >= 0 {
			k = string(rest[:end])
		}
	}
	return k
}

// seller is one seller deployment: a supervisor of the given kind,
// delivering through an RFC 9421 signing sender until the test ends.
type seller struct {
	sup interface {
		webhook.Supervisor
		Wait(ctx context.Context, id string) (webhook.Delivery, error)
	}
}

func newSeller(t *testing.T, kind string, signer webhook.Signer, attempts int) seller {
	t.Helper()
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, AllowPrivateDestinations: true, Timeout: time.Second})
	require.NoError(t, err)
	retry := webhook.RetryPolicy{MaxAttempts: attempts, BaseDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond, NoJitter: true}
	var sup interface {
		webhook.Supervisor
		Wait(ctx context.Context, id string) (webhook.Delivery, error)
	}
	if kind == "Memory" {
		sup, err = webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{AllowInsecureHTTP: true, Retry: retry, Logger: quiet})
		require.NoError(t, err)
	} else {
		pg, err := webhook.NewPostgresSupervisor(pgtest.New(t), sender, webhook.PostgresConfig{AllowInsecureHTTP: true, Retry: retry, Logger: quiet})
		require.NoError(t, err)
		require.NoError(t, pg.CreateSchema(context.Background()))
		sup = pg
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.RunWorker(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return seller{sup: sup}
}

// deliver sends one webhook for task to the buyer and waits for its end.
func (s seller) deliver(t *testing.T, b *buyer, body []byte, key string) webhook.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := s.sup.SendPrepared(ctx, webhook.PreparedWebhook{URL: b.lb.URL + "/adcp/webhook", Body: body, IdempotencyKey: key})
	require.NoError(t, err)
	d, err := s.sup.Wait(ctx, r.ID)
	require.NoError(t, err)
	return d
}

// mcpBody builds a task webhook's body, under key (a fresh one when
// empty).
func mcpBody(t *testing.T, task string, status webhook.Status, key ...string) ([]byte, string) {
	t.Helper()
	body, k, err := webhook.BuildMCPBody(webhook.MCPWebhook{OperationID: "op_" + task, TaskID: task, TaskType: webhook.TaskCreateMediaBuy,
		Status: status, Result: map[string]any{"media_buy_id": "mb_" + task}, IdempotencyKey: strings.Join(key, "")}, time.Now())
	require.NoError(t, err)
	return body, k
}

func newSellerKey(t *testing.T) (*webhook.RFC9421Signer, receive.VerifyingKey) {
	t.Helper()
	key, err := webhook.GenerateSigningKey("seller-2026", "")
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	return signer, key.VerifyingKey()
}

func TestReceivingEndToEnd(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"Memory", "Postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			signer, vk := newSellerKey(t)
			b := newBuyer(t, pgtest.New(t), pgstore.NonceConfig{}, pgstore.DedupConfig{}, vk)
			s := newSeller(t, kind, signer, 8)

			t.Run("LostAnswerIsADuplicateOnTheOtherPod", func(t *testing.T) {
				body, key := mcpBody(t, "lost", webhook.StatusCompleted)
				b.mu.Lock()
				b.dropOnce[key] = true
				b.mu.Unlock()
				d := s.deliver(t, b, body, key)
				require.Equal(t, webhook.StateDelivered, d.State)
				require.Equal(t, 2, d.Attempts, "the lost answer is retried")
				require.Equal(t, []int{200, 200}, b.statuses(key))
				calls, processed := b.counts(key)
				require.Equal(t, 1, calls, "the retry, on the other pod, is a completed duplicate")
				require.Equal(t, 1, processed)
			})

			t.Run("InFlightDuplicateIs503Then2xx", func(t *testing.T) {
				body, key := mcpBody(t, "slow", webhook.StatusCompleted)
				hold := make(chan struct{})
				b.mu.Lock()
				b.hold[key] = hold
				b.mu.Unlock()
				done := make(chan webhook.Delivery, 1)
				go func() { done <- s.deliver(t, b, body, key) }()
				// The first attempt outlasts the sender's timeout; its
				// retry finds the delivery in progress.
				b.waitFor(t, "a 503 while the first owner processes", func(e exchange) bool {
					return e.key == key && e.status == http.StatusServiceUnavailable
				})
				b.mu.Lock()
				close(hold)
				delete(b.hold, key)
				b.mu.Unlock()
				d := <-done
				require.Equal(t, webhook.StateDelivered, d.State)
				st := b.statuses(key)
				require.Equal(t, http.StatusOK, st[len(st)-1], "once processed, a duplicate is 2xx: %v", st)
				calls, processed := b.counts(key)
				require.Equal(t, 1, calls, "one owner across pods")
				require.Equal(t, 1, processed)
			})

			t.Run("HandlerFailureIsRetriedAndProcessedOnce", func(t *testing.T) {
				body, key := mcpBody(t, "flaky", webhook.StatusCompleted)
				b.mu.Lock()
				b.fail[key] = 2
				b.mu.Unlock()
				d := s.deliver(t, b, body, key)
				require.Equal(t, webhook.StateDelivered, d.State)
				require.Equal(t, []int{500, 500, 200}, b.statuses(key))
				calls, processed := b.counts(key)
				require.Equal(t, 3, calls)
				require.Equal(t, 1, processed)
			})

			t.Run("ChangedPayloadIs409", func(t *testing.T) {
				body, key := mcpBody(t, "changed", webhook.StatusCompleted)
				require.Equal(t, webhook.StateDelivered, s.deliver(t, b, body, key).State)
				// A seller deployment that forgot the binding sends the
				// key again with another payload.
				forgetful := newSeller(t, kind, signer, 8)
				changed, _ := mcpBody(t, "changed", webhook.StatusFailed, key)
				d := forgetful.deliver(t, b, changed, key)
				require.Equal(t, webhook.StateFailed, d.State, "409 is not retried")
				require.Equal(t, http.StatusConflict, d.LastStatus)
				require.Equal(t, 1, d.Attempts)
				_, processed := b.counts(key)
				require.Equal(t, 1, processed, "the changed payload is not dispatched")
			})

			t.Run("ReplayedNonceIsRefusedOnEveryPod", func(t *testing.T) {
				body, key := mcpBody(t, "replayed", webhook.StatusCompleted)
				require.Equal(t, webhook.StateDelivered, s.deliver(t, b, body, key).State)
				e := b.waitFor(t, "the delivered exchange", func(e exchange) bool { return e.key == key })
				host := b.lb.Listener.Addr().String()
				for _, pod := range []int{1 - e.pod, e.pod} {
					a, err := b.send(context.Background(), pod, "/adcp/webhook", host, e.header, e.body)
					require.NoError(t, err)
					require.Equal(t, http.StatusUnauthorized, a.status, "pod %d", pod)
					require.Equal(t, `Signature error="`+receive.CodeReplayed+`"`, a.header.Get("WWW-Authenticate"), "pod %d", pod)
				}
				calls, _ := b.counts(key)
				require.Equal(t, 1, calls)
			})
		})
	}
}

// TestReceivingCapsEndToEnd: a sender over its dedup cap is answered 429
// (and retried); a key over its nonce cap is refused with
// webhook_signature_rate_abuse (and not retried), whichever pod answers.
func TestReceivingCapsEndToEnd(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"Memory", "Postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			pool := pgtest.New(t)
			signer, vk := newSellerKey(t)
			b := newBuyer(t, pool, pgstore.NonceConfig{}, pgstore.DedupConfig{PerSenderCap: 3}, vk)
			s := newSeller(t, kind, signer, 3)
			for i := range 3 {
				body, key := mcpBody(t, fmt.Sprint("cap", i), webhook.StatusCompleted)
				require.Equal(t, webhook.StateDelivered, s.deliver(t, b, body, key).State)
			}
			body, key := mcpBody(t, "cap3", webhook.StatusCompleted)
			d := s.deliver(t, b, body, key)
			require.Equal(t, webhook.StateFailed, d.State)
			require.Equal(t, http.StatusTooManyRequests, d.LastStatus)
			require.Equal(t, []int{429, 429, 429}, b.statuses(key), "refused by both pods, retried")
			calls, _ := b.counts(key)
			require.Zero(t, calls)

			signer2, vk2 := newSellerKey(t)
			b2 := newBuyer(t, pgtest.New(t), pgstore.NonceConfig{PerKeyCap: 3}, pgstore.DedupConfig{}, vk2)
			s2 := newSeller(t, kind, signer2, 3)
			for i := range 3 {
				body, key := mcpBody(t, fmt.Sprint("nonce", i), webhook.StatusCompleted)
				require.Equal(t, webhook.StateDelivered, s2.deliver(t, b2, body, key).State)
			}
			body, key = mcpBody(t, "nonce3", webhook.StatusCompleted)
			d = s2.deliver(t, b2, body, key)
			require.Equal(t, webhook.StateFailed, d.State)
			require.Equal(t, 1, d.Attempts, "a webhook_* refusal is terminal")
			require.Contains(t, d.LastError, receive.CodeRateAbuse)
		})
	}
}
