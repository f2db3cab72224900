package receive_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/receive"
)

const sellerAgent = "https://seller.example/mcp"

// route is one buyer endpoint behind a receive.Handler, on loopback, with
// the seller's signer and a next handler that counts what it processed.
type route struct {
	srv    *httptest.Server
	signer *webhook.RFC9421Signer
	ver    *receive.Verifier
	logs   *bytes.Buffer

	mu   sync.Mutex
	seen []receive.Webhook // what next was given, in order
	next func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook)
}

// newRoute starts a route; adjust edits the handler's configuration
// (Verifier and Dedup are set already).
func newRoute(t *testing.T, adjust func(*receive.HandlerConfig)) *route {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	key, err := webhook.NewSigningKey("seller-2026", priv)
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	ver, err := receive.NewVerifier(receive.VerifierConfig{Agent: sellerAgent, Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	rt := &route{signer: signer, ver: ver, logs: &bytes.Buffer{}}
	cfg := receive.HandlerConfig{Verifier: ver, Dedup: &receive.MemoryDedupStore{},
		Logger: slog.New(slog.NewTextHandler(lockedWriter{w: rt.logs, mu: &rt.mu}, nil))}
	if adjust != nil {
		adjust(&cfg)
	}
	h, err := receive.NewHandler(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wh, ok := receive.WebhookFrom(r.Context())
		if !ok {
			panic("no webhook in the context")
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(body, wh.Body) {
			panic("r.Body is not the verified body")
		}
		rt.mu.Lock()
		rt.seen = append(rt.seen, *wh)
		next := rt.next
		rt.mu.Unlock()
		if next != nil {
			next(w, r, wh)
		}
	}))
	require.NoError(t, err)
	rt.srv = httptest.NewUnstartedServer(h)
	rt.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // a test's panics are expected
	rt.srv.Start()
	t.Cleanup(rt.srv.Close)
	return rt
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (rt *route) processed() []receive.Webhook {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]receive.Webhook(nil), rt.seen...)
}

func (rt *route) log() string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.logs.String()
}

// signed builds a POST of body to the route, signed by the seller.
func (rt *route) signed(t *testing.T, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, rt.srv.URL+"/adcp/webhook", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	require.NoError(t, rt.signer.Sign(req, []byte(body)))
	return req
}

// do sends req and returns the status, the WWW-Authenticate code and the
// response body.
func do(t *testing.T, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	code := strings.TrimSuffix(strings.TrimPrefix(resp.Header.Get("WWW-Authenticate"), `Signature error="`), `"`)
	return resp.StatusCode, code, string(b)
}

func payload(key, status string) string {
	return `{"idempotency_key":"` + key + `","task_id":"task_1","status":"` + status + `","timestamp":"2026-12-03T10:00:00Z"}`
}

func TestHandlerAnswersTheReceiverContract(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, nil)
	key := "whk_0123456789abcdef"

	// The first delivery is processed; a retry signed afresh (new nonce),
	// even with its members reordered and spaced, is a completed duplicate.
	st, _, _ := do(t, rt.signed(t, payload(key, "completed")))
	require.Equal(t, http.StatusOK, st)
	reordered := `{ "status": "completed", "timestamp": "2026-12-03T10:00:00Z", "task_id": "task_1", "idempotency_key": "` + key + `" }`
	st, _, _ = do(t, rt.signed(t, reordered))
	require.Equal(t, http.StatusOK, st, "a JCS-equivalent retry is a completed duplicate")
	// The same key with a changed payload conflicts, and is not processed.
	st, _, _ = do(t, rt.signed(t, payload(key, "failed")))
	require.Equal(t, http.StatusConflict, st)
	// A new key is a new delivery.
	st, _, _ = do(t, rt.signed(t, payload("whk_fedcba9876543210", "completed")))
	require.Equal(t, http.StatusOK, st)

	seen := rt.processed()
	require.Len(t, seen, 2, "next runs once per delivery")
	require.Equal(t, sellerAgent, seen[0].Sender)
	require.Equal(t, key, seen[0].IdempotencyKey)
	require.Equal(t, "rfc9421", seen[0].Scheme)
	require.NotNil(t, seen[0].Signature)
	require.Equal(t, "seller-2026", seen[0].Signature.KeyID)
	require.Equal(t, "whk_fedcba9876543210", seen[1].IdempotencyKey)
	require.Contains(t, rt.log(), "idempotency_key reused with a different payload")
}

func TestHandlerRefusesBeforeAndAtVerification(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, func(c *receive.HandlerConfig) { c.MaxBody = 512 })
	good := payload("whk_0123456789abcdef", "completed")

	req := rt.signed(t, good)
	req.Method = http.MethodPut
	st, _, _ := do(t, req)
	require.Equal(t, http.StatusMethodNotAllowed, st)

	big := `{"idempotency_key":"whk_0123456789abcdef","pad":"` + strings.Repeat("x", 600) + `"}`
	st, _, _ = do(t, rt.signed(t, big))
	require.Equal(t, http.StatusRequestEntityTooLarge, st, "Content-Length over the limit")
	req = rt.signed(t, big)
	req.ContentLength = -1 // chunked: the limit is found while reading
	req.Body = io.NopCloser(strings.NewReader(big))
	st, _, _ = do(t, req)
	require.Equal(t, http.StatusRequestEntityTooLarge, st, "a chunked body over the limit")

	req = rt.signed(t, good)
	req.Header.Set("Content-Type", "text/plain")
	st, _, _ = do(t, req)
	require.Equal(t, http.StatusUnsupportedMediaType, st)
	req = rt.signed(t, good)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	st, code, _ := do(t, req)
	require.Equal(t, http.StatusUnauthorized, st, "parameters are allowed, but the signature covers the Content-Type")
	require.Equal(t, receive.CodeSignatureInvalid, code)

	req, _ = http.NewRequest(http.MethodPost, rt.srv.URL+"/adcp/webhook", strings.NewReader(good))
	req.Header.Set("Content-Type", "application/json")
	st, code, _ = do(t, req)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeHeaderMalformed, code, "unsigned")

	req = rt.signed(t, good)
	req.Body = io.NopCloser(strings.NewReader(strings.Replace(good, "completed", "cancelled", 1)))
	req.ContentLength = -1
	st, code, _ = do(t, req)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeDigestMismatch, code, "a body changed in transit")

	req, _ = http.NewRequest(http.MethodPost, rt.srv.URL+"/adcp/webhook", strings.NewReader(good))
	req.Header.Set("Content-Type", "application/json")
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("X-ADCP-Timestamp", ts)
	req.Header.Set("X-ADCP-Signature", "sha256="+receive.LegacyHMAC(strings.Repeat("s", 32), ts, []byte(good)))
	st, code, _ = do(t, req)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeModeMismatch, code, "legacy HMAC on an RFC 9421 route")
	req, _ = http.NewRequest(http.MethodPost, rt.srv.URL+"/adcp/webhook", strings.NewReader(good))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("b", 40))
	st, code, _ = do(t, req)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeModeMismatch, code, "a Bearer token on an RFC 9421 route")

	st, code, _ = do(t, rt.signed(t, `{"idempotency_key":"whk_0123456789abcdef","idempotency_key":"whk_0123456789abcdeX"}`))
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeBodyMalformed, code, "duplicate member names")

	replay := rt.signed(t, good)
	st, _, _ = do(t, replay)
	require.Equal(t, http.StatusOK, st)
	again := rt.signed(t, good)
	again.Header = replay.Header.Clone()
	st, code, _ = do(t, again)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeReplayed, code, "the same signature twice")

	for _, body := range []string{
		`{"task_id":"t"}`,
		`{"idempotency_key":"short"}`,
		`{"idempotency_key":"whk_0123456789abcdef/"}`,
		`{"idempotency_key":123456789012345678}`,
		`{"Idempotency_Key":"whk_0123456789abcdef"}`,
		`["whk_0123456789abcdef"]`,
		`{"idempotency_key":"` + strings.Repeat("k", 256) + `"}`,
	} {
		st, _, msg := do(t, rt.signed(t, body))
		require.Equal(t, http.StatusBadRequest, st, body)
		require.Contains(t, msg, "idempotency_key", body)
	}
	require.Len(t, rt.processed(), 1)
	require.Contains(t, rt.log(), "code="+receive.CodeModeMismatch)
}

func TestHandlerReadsTheExactKeyMember(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, nil)
	// encoding/json would let the last, case-folded member win.
	st, _, _ := do(t, rt.signed(t, `{"idempotency_key":"whk_0123456789abcdef","IDEMPOTENCY_KEY":"whk_other0123456789"}`))
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "whk_0123456789abcdef", rt.processed()[0].IdempotencyKey)
	require.False(t, receive.IsChallenge([]byte(`{"TYPE":"webhook.challenge"}`)), "nor the type")
	require.True(t, receive.IsChallenge([]byte(`{"type":"webhook.challenge"}`)))
}

func TestHandlerInProgressThenCompleted(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, nil)
	entered, releaseCh := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(releaseCh) })
	t.Cleanup(release) // before the server closes, should the test fail
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		close(entered)
		<-releaseCh
		w.Header().Set("X-Buyer", "processed")
		_, _ = io.WriteString(w, "ok")
	}
	body := payload("whk_0123456789abcdef", "completed")
	type answer struct {
		status int
		body   string
		header string
	}
	first := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(rt.signed(t, body))
		if err != nil {
			first <- answer{}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		first <- answer{resp.StatusCode, string(b), resp.Header.Get("X-Buyer")}
	}()
	<-entered
	resp, err := http.DefaultClient.Do(rt.signed(t, body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "an identical delivery in progress")
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	release()
	a := <-first
	require.Equal(t, answer{http.StatusOK, "ok", "processed"}, a, "next's response is sent once recorded")
	st, _, _ := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st, "completed")
	require.Len(t, rt.processed(), 1)
}

func TestHandlerFailureReleasesTheKey(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, nil)
	var calls atomic.Int32
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		switch calls.Add(1) {
		case 1:
			http.Error(w, "database down", http.StatusInternalServerError)
		case 2:
			panic("handler bug")
		}
	}
	body := payload("whk_0123456789abcdef", "completed")
	st, _, msg := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusInternalServerError, st, "next's failure passes through")
	require.Contains(t, msg, "database down")
	_, err := http.DefaultClient.Do(rt.signed(t, body))
	require.Error(t, err, "a panic aborts the response")
	st, _, _ = do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st, "the sender's retry runs next again")
	st, _, _ = do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st)
	require.EqualValues(t, 3, calls.Load(), "processed once it succeeded, not after")
	st, _, _ = do(t, rt.signed(t, payload("whk_0123456789abcdef", "failed")))
	require.Equal(t, http.StatusConflict, st, "a released key stays bound to its payload")
}

func TestHandlerOverCap(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, func(c *receive.HandlerConfig) { c.Dedup = &receive.MemoryDedupStore{PerSenderCap: 1} })
	st, _, _ := do(t, rt.signed(t, payload("whk_0123456789abcdef", "completed")))
	require.Equal(t, http.StatusOK, st)
	st, _, _ = do(t, rt.signed(t, payload("whk_fedcba9876543210", "completed")))
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Len(t, rt.processed(), 1)
	require.Contains(t, rt.log(), "answered 429")
}

func TestHandlerLegacyRoutes(t *testing.T) {
	t.Parallel()
	secret := "hmac-secret-0123456789abcdef-0123456789"
	token := "bearer-token-0123456789abcdef-012345678"
	store := &receive.MemoryDedupStore{}
	hmacRoute := newRoute(t, func(c *receive.HandlerConfig) {
		c.Dedup = store
		c.Legacy = &receive.LegacyAuth{Scheme: receive.SchemeHMAC, Credentials: secret, Agent: sellerAgent}
		c.Verifier = nil
	})
	bearerRoute := newRoute(t, func(c *receive.HandlerConfig) {
		c.Legacy = &receive.LegacyAuth{Scheme: receive.SchemeBearer, Credentials: token, Agent: sellerAgent}
	})
	// The seller's 9421 route shares the dedup store: a migration.
	rfcRoute := newRoute(t, func(c *receive.HandlerConfig) { c.Dedup = store })

	hmacReq := func(body, secret string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, hmacRoute.srv.URL+"/adcp/webhook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set("X-ADCP-Timestamp", ts)
		req.Header.Set("X-ADCP-Signature", "sha256="+receive.LegacyHMAC(secret, ts, []byte(body)))
		return req
	}
	body := payload("whk_0123456789abcdef", "completed")
	st, _, _ := do(t, hmacReq(body, secret))
	require.Equal(t, http.StatusOK, st)
	st, code, _ := do(t, hmacReq(body, strings.Repeat("w", 40)))
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeSignatureInvalid, code)
	req := hmacRoute.signed(t, payload("whk_1111111111111111", "completed"))
	st, code, _ = do(t, req)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeModeMismatch, code, "RFC 9421 on an HMAC route")
	req, _ = http.NewRequest(http.MethodPost, hmacRoute.srv.URL+"/adcp/webhook", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	st, code, _ = do(t, req)
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeModeMismatch, code, "Bearer on an HMAC route")
	require.Len(t, hmacRoute.processed(), 1)
	require.Equal(t, receive.Webhook{Sender: sellerAgent, IdempotencyKey: "whk_0123456789abcdef", Scheme: receive.SchemeHMAC, Body: []byte(body)}, hmacRoute.processed()[0])

	// After the cutover the same delivery, signed with RFC 9421, is a
	// duplicate of the HMAC one: one keyspace per seller.
	st, _, _ = do(t, rfcRoute.signed(t, body))
	require.Equal(t, http.StatusOK, st)
	require.Empty(t, rfcRoute.processed())

	bearer := func(tok string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, bearerRoute.srv.URL+"/adcp/webhook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		return req
	}
	st, _, _ = do(t, bearer(token))
	require.Equal(t, http.StatusOK, st)
	st, code, _ = do(t, bearer(strings.Repeat("t", 40)))
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeSignatureInvalid, code)
	st, code, _ = do(t, bearerRoute.signed(t, body))
	require.Equal(t, http.StatusUnauthorized, st)
	require.Equal(t, receive.CodeModeMismatch, code, "RFC 9421 on a Bearer route")
	require.Len(t, bearerRoute.processed(), 1)
}

func TestHandlerActivationChallenge(t *testing.T) {
	t.Parallel()
	secret := "hmac-secret-0123456789abcdef-0123456789"
	reg := &receive.Registration{SubscriberID: "caps", SellerAgentURL: sellerAgent, EventTypes: []string{"capabilities.changed"},
		Scheme: receive.SchemeHMAC, Credentials: secret}
	rt := newRoute(t, func(c *receive.HandlerConfig) {
		c.Legacy = &receive.LegacyAuth{Scheme: receive.SchemeHMAC, Credentials: secret, Agent: sellerAgent}
		c.Registration = reg
	})
	fp := sha256.Sum256([]byte(secret))
	challenge := func(subscriber string) string {
		return `{"type":"webhook.challenge","scope":"agent","challenge":"` + strings.Repeat("c", 43) + `","subscriber_id":"` + subscriber +
			`","seller_agent_url":"` + sellerAgent + `","event_types":["capabilities.changed"],"delivery_auth":{"mode":"HMAC-SHA256","credential_fingerprint":"` + hex.EncodeToString(fp[:]) + `"}}`
	}
	st, _, answer := do(t, rt.signed(t, challenge("caps")))
	require.Equal(t, http.StatusOK, st, "an RFC 9421 signed challenge on a legacy route")
	require.JSONEq(t, `{"challenge":"`+strings.Repeat("c", 43)+`"}`, answer)
	st, _, _ = do(t, rt.signed(t, challenge("other")))
	require.Equal(t, http.StatusForbidden, st, "a challenge for another subscriber is not echoed")
	req, _ := http.NewRequest(http.MethodPost, rt.srv.URL+"/adcp/webhook", strings.NewReader(challenge("caps")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Signature-Input", "sig1=();created=1")
	req.Header.Set("Signature", "sig1=:AAAA:")
	st, code, _ := do(t, req)
	require.Equal(t, http.StatusUnauthorized, st, "a challenge must verify")
	require.NotEmpty(t, code)
	require.Empty(t, rt.processed(), "challenges never reach next")

	plain := newRoute(t, nil)
	st, _, _ = do(t, plain.signed(t, challenge("caps")))
	require.Equal(t, http.StatusForbidden, st, "no Registration: not echoed")
}

// faultyStore fails on demand: a database outage a real store cannot
// produce on cue.
type faultyStore struct {
	receive.MemoryDedupStore
	failClaim, failComplete, failRelease atomic.Bool
	released                             atomic.Int32
}

var errOutage = errors.New("store outage")

func (s *faultyStore) Claim(ctx context.Context, sender, key string, fp [32]byte, now time.Time, lease time.Duration) (receive.DedupClaim, error) {
	if s.failClaim.Load() {
		return receive.DedupClaim{}, errOutage
	}
	return s.MemoryDedupStore.Claim(ctx, sender, key, fp, now, lease)
}

func (s *faultyStore) Complete(ctx context.Context, c receive.DedupClaim, now time.Time) error {
	if s.failComplete.Load() {
		return errOutage
	}
	return s.MemoryDedupStore.Complete(ctx, c, now)
}

func (s *faultyStore) Release(ctx context.Context, c receive.DedupClaim, now time.Time) error {
	s.released.Add(1)
	if s.failRelease.Load() {
		return errOutage
	}
	return s.MemoryDedupStore.Release(ctx, c, now)
}

func TestHandlerStoreFailures(t *testing.T) {
	t.Parallel()
	store := &faultyStore{}
	rt := newRoute(t, func(c *receive.HandlerConfig) { c.Dedup = store; c.Lease = time.Hour })
	body := payload("whk_0123456789abcdef", "completed")

	store.failClaim.Store(true)
	st, _, _ := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusServiceUnavailable, st, "no claim, no processing")
	require.Empty(t, rt.processed())
	store.failClaim.Store(false)

	store.failComplete.Store(true)
	st, _, _ = do(t, rt.signed(t, body))
	require.Equal(t, http.StatusServiceUnavailable, st, "processed but not durably acknowledged: the sender must retry")
	require.Len(t, rt.processed(), 1)
	store.failComplete.Store(false)
	st, _, _ = do(t, rt.signed(t, body))
	require.Equal(t, http.StatusServiceUnavailable, st, "the claim's lease still holds")
	require.Contains(t, rt.log(), "failed to record a processed webhook")

	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		w.WriteHeader(http.StatusBadGateway)
	}
	store.failRelease.Store(true)
	st, _, _ = do(t, rt.signed(t, payload("whk_1111111111111111", "completed")))
	require.Equal(t, http.StatusBadGateway, st)
	require.EqualValues(t, 1, store.released.Load())
	require.Contains(t, rt.log(), "failed to release a claim")
}

func TestHandlerContextOutlivesTheSender(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, func(c *receive.HandlerConfig) { c.Lease = time.Hour })
	entered, release := make(chan struct{}), make(chan struct{})
	finished := make(chan error, 1)
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		deadline, ok := r.Context().Deadline()
		if !ok || time.Until(deadline) > time.Hour {
			finished <- errors.New("no deadline within the lease")
			return
		}
		close(entered)
		<-release
		finished <- r.Context().Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	req := rt.signed(t, payload("whk_0123456789abcdef", "completed")).WithContext(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case err := <-finished:
		t.Fatal(err)
	}
	cancel() // the sender gives up
	<-done
	close(release)
	require.NoError(t, <-finished, "next's context is not cut short by the sender")
}

func TestHandlerConfig(t *testing.T) {
	t.Parallel()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key, err := webhook.NewSigningKey("k", priv)
	require.NoError(t, err)
	anonymous, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	withAgent, err := receive.NewVerifier(receive.VerifierConfig{Agent: sellerAgent, Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	require.NoError(t, err)
	next := http.NotFoundHandler()
	store := &receive.MemoryDedupStore{}
	for _, tc := range []struct {
		cfg   receive.HandlerConfig
		next  http.Handler
		field string
	}{
		{receive.HandlerConfig{Verifier: withAgent, Dedup: store}, nil, "NewHandler next"},
		{receive.HandlerConfig{Verifier: withAgent}, next, "HandlerConfig.Dedup"},
		{receive.HandlerConfig{Dedup: store}, next, "HandlerConfig.Verifier"},
		{receive.HandlerConfig{Verifier: anonymous, Dedup: store}, next, "VerifierConfig.Agent"},
		{receive.HandlerConfig{Verifier: withAgent, Dedup: store, Lease: -time.Second}, next, "HandlerConfig.Lease"},
		{receive.HandlerConfig{Verifier: withAgent, Dedup: store, MaxBody: -1}, next, "HandlerConfig.MaxBody"},
		{receive.HandlerConfig{Dedup: store, Legacy: &receive.LegacyAuth{Scheme: "Basic", Credentials: strings.Repeat("c", 32), Agent: sellerAgent}}, next, "LegacyAuth.Scheme"},
		{receive.HandlerConfig{Dedup: store, Legacy: &receive.LegacyAuth{Scheme: receive.SchemeHMAC, Credentials: "short", Agent: sellerAgent}}, next, "LegacyAuth.Credentials"},
		{receive.HandlerConfig{Dedup: store, Legacy: &receive.LegacyAuth{Scheme: receive.SchemeBearer, Credentials: strings.Repeat("c", 32)}}, next, "LegacyAuth.Agent"},
	} {
		_, err := receive.NewHandler(tc.cfg, tc.next)
		var ce *receive.ConfigError
		require.ErrorAs(t, err, &ce, tc.field)
		require.Equal(t, tc.field, ce.Field)
		require.ErrorIs(t, err, receive.ErrInvalidConfig)
		require.NotContains(t, err.Error(), strings.Repeat("c", 32), "no credential in errors")
	}
	_, err = receive.NewHandler(receive.HandlerConfig{Dedup: store, Legacy: &receive.LegacyAuth{Scheme: receive.SchemeBearer, Credentials: strings.Repeat("c", 32), Agent: sellerAgent}}, next)
	require.NoError(t, err, "a legacy route needs no Verifier")
}

func TestHandlerInformationalAnswersAreNotFinal(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, nil)
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusAccepted)
	}
	body := payload("whk_0123456789abcdef", "completed")
	st, _, _ := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusAccepted, st)
	st, _, _ = do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st, "recorded as processed")
	require.Len(t, rt.processed(), 1)
}

// ctxStore is a MemoryDedupStore that, like a database driver, fails a
// call whose context has ended, and notes when each claim was made.
type ctxStore struct {
	receive.MemoryDedupStore
	mu      sync.Mutex
	claimed []time.Time
}

func (s *ctxStore) Claim(ctx context.Context, sender, key string, fp [32]byte, now time.Time, lease time.Duration) (receive.DedupClaim, error) {
	if err := ctx.Err(); err != nil {
		return receive.DedupClaim{}, err
	}
	s.mu.Lock()
	s.claimed = append(s.claimed, time.Now())
	s.mu.Unlock()
	return s.MemoryDedupStore.Claim(ctx, sender, key, fp, now, lease)
}

func (s *ctxStore) Complete(ctx context.Context, c receive.DedupClaim, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.MemoryDedupStore.Complete(ctx, c, now)
}

// Found by review: next used its whole context, and the outcome was then
// recorded on that ended context: 503, and the retry ran next again. And
// next's context must end before the lease the store recorded.
func TestHandlerRecordsTheOutcomeAfterNextUsedItsTime(t *testing.T) {
	t.Parallel()
	store := &ctxStore{}
	const lease = 2 * time.Second // a tenth of it, 200 ms, is left to record the outcome
	rt := newRoute(t, func(c *receive.HandlerConfig) { c.Dedup = store; c.Lease = lease })
	deadlines := make(chan time.Time, 1)
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		d, _ := r.Context().Deadline()
		deadlines <- d
		<-r.Context().Done() // a handler that takes all the time it is given
	}
	body := payload("whk_0123456789abcdef", "completed")
	st, _, _ := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st)
	st, _, _ = do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st)
	require.Len(t, rt.processed(), 1, "processed once")
	store.mu.Lock()
	claimed := store.claimed[0]
	store.mu.Unlock()
	require.True(t, (<-deadlines).Before(claimed.Add(lease)), "next's context ends before the lease the store holds")
}

// A handler that outlasts its lease, whose delivery another request took
// over, is answered 503 (the new owner acknowledges), and the warning says
// to raise the lease.
func TestHandlerOutlastingItsLease(t *testing.T) {
	t.Parallel()
	c := fakeclock.New(time.Now())
	rt := newRoute(t, func(cfg *receive.HandlerConfig) { cfg.Lease = time.Minute; cfg.Now = c.Now })
	entered, release := make(chan struct{}, 2), make(chan struct{})
	var runs atomic.Int32
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		if runs.Add(1) == 1 {
			entered <- struct{}{}
			<-release
		}
	}
	body := payload("whk_0123456789abcdef", "completed")
	first := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(rt.signed(t, body))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	c.Advance(2 * time.Minute) // the first owner's lease passes
	st, _, _ := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusOK, st, "taken over")
	close(release)
	require.Equal(t, http.StatusServiceUnavailable, <-first, "not acknowledged durably by this request")
	require.EqualValues(t, 2, runs.Load())
	require.Contains(t, rt.log(), "outlasted its lease")
}

// Found by review: the held response lost no bytes silently behind a
// stale Content-Length, and an invalid status is a failure, not a 200.
func TestHandlerHeldResponseEdges(t *testing.T) {
	t.Parallel()
	rt := newRoute(t, nil)
	rt.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		big := strings.Repeat("x", receive.MaxResponseBytes+100)
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		_, err := io.WriteString(w, big)
		if err == nil {
			panic("a response over MaxResponseBytes was taken whole")
		}
	}
	resp, err := http.DefaultClient.Do(rt.signed(t, payload("whk_0123456789abcdef", "completed")))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err, "a body that matches its length")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, b, "the write that passed the limit was refused whole")

	rt2 := newRoute(t, nil)
	var runs atomic.Int32
	rt2.next = func(w http.ResponseWriter, r *http.Request, wh *receive.Webhook) {
		if runs.Add(1) == 1 {
			w.WriteHeader(42)
		}
	}
	st, _, _ := do(t, rt2.signed(t, payload("whk_0123456789abcdef", "completed")))
	require.Equal(t, http.StatusInternalServerError, st)
	st, _, _ = do(t, rt2.signed(t, payload("whk_0123456789abcdef", "completed")))
	require.Equal(t, http.StatusOK, st, "released: the retry runs next")
	require.EqualValues(t, 2, runs.Load())
}

func TestHandlerChallengeFromAnotherAgent(t *testing.T) {
	t.Parallel()
	reg := &receive.Registration{SubscriberID: "caps", SellerAgentURL: "https://other-seller.example/mcp", EventTypes: []string{"capabilities.changed"}}
	rt := newRoute(t, func(c *receive.HandlerConfig) { c.Registration = reg })
	body := `{"type":"webhook.challenge","scope":"agent","challenge":"` + strings.Repeat("c", 43) +
		`","subscriber_id":"caps","seller_agent_url":"https://other-seller.example/mcp","event_types":["capabilities.changed"],"delivery_auth":{"mode":"rfc9421"}}`
	st, _, _ := do(t, rt.signed(t, body))
	require.Equal(t, http.StatusForbidden, st, "signed by "+sellerAgent+"'s keys, registered for another agent")

	_, err := receive.NewHandler(receive.HandlerConfig{Dedup: &receive.MemoryDedupStore{}, Registration: reg,
		Legacy: &receive.LegacyAuth{Scheme: receive.SchemeBearer, Credentials: strings.Repeat("c", 32), Agent: sellerAgent}}, http.NotFoundHandler())
	require.ErrorContains(t, err, "HandlerConfig.Verifier", "a legacy route answering challenges needs the seller's Verifier")
}

func TestVerifyLegacyBearerRefusesTwoAuthorizations(t *testing.T) {
	t.Parallel()
	token := strings.Repeat("t", 40)
	h := http.Header{}
	h.Add("Authorization", "Bearer "+token)
	h.Add("Authorization", "Bearer other")
	require.Equal(t, receive.CodeSignatureInvalid, verifyCode(receive.VerifyLegacyBearer(h, []byte(`{}`), token)))
	h.Del("Authorization")
	h.Set("Authorization", "Bearer "+token)
	require.NoError(t, receive.VerifyLegacyBearer(h, []byte(`{}`), token))
}
