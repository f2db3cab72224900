package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
)

// This file is the behavioural suite every Supervisor must pass. It ports the
// Python SDK's in-memory supervisor tests to the Go contract. Implementations
// run it with runSupervisorSuite and a constructor.

// suiteConfig is what a constructor must wire into its supervisor.
type suiteConfig struct {
	Sender  webhook.Sender
	Retry   webhook.RetryPolicy
	Breaker webhook.BreakerPolicy
	Sink    webhook.LogSink
	Clock   webhook.Clock
	Logger  *slog.Logger
	// Observer, when set, is the supervisor's.
	Observer *webhook.Observer
	// Concurrency and EndpointConcurrency, when set, are the supervisor's.
	Concurrency, EndpointConcurrency int
}

// newSupervisorFunc builds a supervisor for one test. The supervisor must
// start empty; the test runs its workers.
type newSupervisorFunc func(t *testing.T, cfg suiteConfig) webhook.Supervisor

// guard bounds every wait in the suite so a broken supervisor fails the test
// instead of hanging it. It is never a timing assertion.
const guard = 20 * time.Second

var epoch = time.Date(2026, 4, 18, 14, 0, 0, 0, time.UTC)

// env is one test's world: a fake clock, a scripted sender and a recording
// sink around the supervisor under test.
type env struct {
	t      *testing.T
	logs   *syncBuffer
	clock  *fakeclock.Clock
	sender *scriptedSender
	sink   *recordingSink
	sup    webhook.Supervisor
}

type envOption func(*suiteConfig)

func newEnv(t *testing.T, newSup newSupervisorFunc, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, logs: &syncBuffer{}, clock: fakeclock.New(epoch), sink: newRecordingSink()}
	e.sender = newScriptedSender()
	cfg := suiteConfig{
		Sender: e.sender,
		Retry:  webhook.RetryPolicy{NoJitter: true},
		Sink:   e.sink,
		Clock:  e.clock,
		Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.sup = newSup(t, cfg)
	return e
}

// startWorker runs RunWorker until the test ends and checks that it returns.
func (e *env) startWorker() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.sup.RunWorker(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(e.t, err)
		case <-time.After(guard):
			e.t.Error("RunWorker did not return after its context was cancelled")
		}
	})
}

// attempts waits for the next n attempt records.
func (e *env) attempts(n int) []webhook.Attempt {
	e.t.Helper()
	out := make([]webhook.Attempt, 0, n)
	timeout := time.After(guard)
	for len(out) < n {
		select {
		case a := <-e.sink.ch:
			out = append(out, a)
		case <-timeout:
			e.t.Fatalf("got %d of %d attempt records: %+v", len(out), n, out)
		}
	}
	return out
}

// finalAttempts collects records until one for each of n deliveries says it
// will not retry, advancing the clock to each scheduled retry.
func (e *env) deliverAll(n int) []webhook.Attempt {
	e.t.Helper()
	var out []webhook.Attempt
	done := 0
	for done < n {
		a := e.attempts(1)[0]
		out = append(out, a)
		if a.WillRetry {
			e.clock.Set(a.NextRetryAt)
		} else {
			done++
		}
	}
	return out
}

func (e *env) sendMCP(w webhook.MCPWebhook) webhook.Receipt {
	e.t.Helper()
	r, err := e.sup.SendMCP(context.Background(), w)
	require.NoError(e.t, err)
	return r
}

func mcp(url, task string) webhook.MCPWebhook {
	return webhook.MCPWebhook{
		URL:         url,
		OperationID: "op_" + task,
		TaskID:      task,
		TaskType:    webhook.TaskCreateMediaBuy,
		Status:      webhook.StatusCompleted,
		Result:      map[string]any{"media_buy_id": "mb_" + task},
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers: the supervisor's
// log output in tests.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// step is one scripted answer: a status, or a transport error.
type step struct {
	status int
	header http.Header
	body   string
	err    error
	// gate, when set, blocks the send until it is closed.
	gate chan struct{}
	// advance moves the test clock forward during the send.
	advance time.Duration
}

type sentRequest struct {
	URL     string
	Key     string
	Body    []byte
	Attempt int
	Auth    *webhook.Authentication
	Headers map[string]string
	// InFlight and InFlightURL count the requests in flight, in all and to
	// this URL, when this one started (itself included).
	InFlight, InFlightURL int
}

// scriptedSender answers per URL from a script, then 200 OK, and records
// every request.
type scriptedSender struct {
	mu       sync.Mutex
	script   map[string][]step
	requests []sentRequest
	inflight map[string]int
	clock    *fakeclock.Clock
	changed  chan struct{} // closed and replaced on every request
}

func newScriptedSender() *scriptedSender {
	return &scriptedSender{script: make(map[string][]step), inflight: make(map[string]int), changed: make(chan struct{})}
}

// waitSent blocks until at least n requests were sent and returns them.
func (e *env) waitSent(n int) []sentRequest {
	e.t.Helper()
	if !e.sentWithin(n, guard) {
		e.t.Fatalf("%d of %d requests sent", len(e.sender.sent()), n)
	}
	return e.sender.sent()
}

func (s *scriptedSender) on(url string, steps ...step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script[url] = append(s.script[url], steps...)
}

func (s *scriptedSender) sent() []sentRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentRequest(nil), s.requests...)
}

func (s *scriptedSender) Send(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // as an HTTP client would: nothing is sent
	}
	s.mu.Lock()
	s.inflight[req.URL]++
	total := 0
	for _, n := range s.inflight {
		total += n
	}
	s.requests = append(s.requests, sentRequest{URL: req.URL, Key: req.IdempotencyKey, Body: append([]byte(nil), req.Body...),
		Attempt: req.Attempt, Auth: req.Authentication, Headers: maps.Clone(req.Headers), InFlight: total, InFlightURL: s.inflight[req.URL]})
	defer func() {
		s.mu.Lock()
		s.inflight[req.URL]--
		s.mu.Unlock()
	}()
	close(s.changed)
	s.changed = make(chan struct{})
	st := step{status: 200}
	if q := s.script[req.URL]; len(q) > 0 {
		st, s.script[req.URL] = q[0], q[1:]
	}
	clock := s.clock
	s.mu.Unlock()
	if st.gate != nil {
		select {
		case <-st.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if st.advance > 0 {
		clock.Advance(st.advance)
	}
	if st.err != nil {
		return nil, st.err
	}
	h := st.header
	if h == nil {
		h = http.Header{}
	}
	return &webhook.Response{StatusCode: st.status, Header: h, Body: []byte(st.body)}, nil
}

// recordingSink keeps every record and passes it on a channel.
type recordingSink struct {
	ch chan webhook.Attempt
}

func newRecordingSink() *recordingSink { return &recordingSink{ch: make(chan webhook.Attempt, 10_000)} }

func (s *recordingSink) RecordAttempt(_ context.Context, a webhook.Attempt) error {
	s.ch <- a
	return nil
}

func outcomes(as []webhook.Attempt) []webhook.Outcome {
	var out []webhook.Outcome
	for _, a := range as {
		out = append(out, a.Outcome)
	}
	return out
}

func willRetry(as []webhook.Attempt) []bool {
	var out []bool
	for _, a := range as {
		out = append(out, a.WillRetry)
	}
	return out
}

// runSupervisorSuite runs the behavioural suite against newSup.
func runSupervisorSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("OneSuccessOneRecord", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		r := e.sendMCP(mcp("https://buyer.example/hook", "t1"))
		a := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
		require.Equal(t, 1, a.AttemptNumber)
		require.Equal(t, 3, a.MaxAttempts)
		require.Equal(t, 200, a.HTTPStatus)
		require.False(t, a.WillRetry)
		require.True(t, a.NextRetryAt.IsZero())
		require.Empty(t, a.Error)
		require.Equal(t, r.ID, a.DeliveryID)
		require.Equal(t, r.IdempotencyKey, a.IdempotencyKey)
		require.Equal(t, webhook.TaskCreateMediaBuy, a.TaskType)
		require.Equal(t, "t1", a.TaskID)
		require.Equal(t, "https://buyer.example/hook", a.URL)
		require.Equal(t, "https://buyer.example/hook", a.BreakerKey)
		require.Equal(t, len(e.sender.sent()[0].Body), a.PayloadSize)
		require.Len(t, e.sender.sent(), 1)
	})

	t.Run("OperationIDReachesPayload", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		w := mcp("https://buyer.example/hook", "t1")
		w.OperationID = "op_from_buyer_registration"
		r := e.sendMCP(w)
		e.attempts(1)
		var body map[string]any
		require.NoError(t, json.Unmarshal(e.sender.sent()[0].Body, &body))
		require.Equal(t, "op_from_buyer_registration", body["operation_id"])
		require.Equal(t, r.IdempotencyKey, body["idempotency_key"])
		require.Equal(t, "t1.terminal", body["notification_id"])
		require.Equal(t, "media-buy", body["protocol"])
		require.Equal(t, "2026-04-18T14:00:00.000Z", body["timestamp"])
	})

	t.Run("RetriesSendIdenticalBytesUnderOneKey", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/flaky"
		e.sender.on(url, step{status: 503}, step{status: 502})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 3)
		require.Equal(t, []webhook.Outcome{webhook.OutcomeFailure, webhook.OutcomeFailure, webhook.OutcomeSuccess}, outcomes(as))
		require.Equal(t, []bool{true, true, false}, willRetry(as))
		for i, a := range as {
			require.Equal(t, i+1, a.AttemptNumber)
			require.Equal(t, r.IdempotencyKey, a.IdempotencyKey)
		}
		require.Equal(t, []int{503, 502, 200}, []int{as[0].HTTPStatus, as[1].HTTPStatus, as[2].HTTPStatus})
		// Delays without jitter: 1s before attempt 2, 2s before attempt 3.
		require.Equal(t, time.Second, as[1].OccurredAt.Sub(as[0].OccurredAt))
		require.Equal(t, 2*time.Second, as[2].OccurredAt.Sub(as[1].OccurredAt))
		reqs := e.sender.sent()
		require.Len(t, reqs, 3)
		for _, req := range reqs {
			require.Equal(t, r.IdempotencyKey, req.Key)
			require.Equal(t, reqs[0].Body, req.Body)
		}
		require.Equal(t, []int{1, 2, 3}, []int{reqs[0].Attempt, reqs[1].Attempt, reqs[2].Attempt})
	})

	t.Run("SecretsNeverReachLogsErrorsOrRecords", func(t *testing.T) {
		t.Parallel()
		const (
			queryToken = "qtok-4f9d2c7e1b"
			pathToken  = "p8Kx2Lm9Qr4St7Uv1Wx3Yz5Ab"
			headerVal  = "hdr-tok-8e7d6c5b4a"
			mcpToken   = "mcp-token-0123456789abcdef"
		)
		secrets := []string{queryToken, pathToken, headerVal, mcpToken, goodCredentials}
		url := "https://buyer.example/hooks/" + pathToken + "?token=" + queryToken
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Breaker.FailureThreshold = 1 // opens, closes: both logged with the breaker key (the URL)
			c.Breaker.OpenTimeout = time.Second
			c.Sender = webhook.SenderFunc(func(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
				echo := fmt.Sprintf("%s %s %s %v %s", r.URL, r.Authentication.Credentials, r.Headers["X-Tenant-Token"], r.Headers, r.Body)
				switch r.Attempt {
				case 1: // a custom Sender whose error echoes the request
					return nil, errors.New("proxy said: " + echo)
				case 2: // one that panics with it
					panic(echo)
				}
				// A receiver that echoes the request.
				return &webhook.Response{StatusCode: 400, Body: []byte(echo), Header: http.Header{"X-Echo": {echo}}}, nil
			})
		})
		e.startWorker()
		w := mcp(url, "t1")
		w.Token = mcpToken
		w.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: goodCredentials}
		w.Headers = map[string]string{"X-Tenant-Token": headerVal}
		r := e.sendMCP(w)
		records := e.attempts(1)
		e.clock.Advance(2 * time.Second) // half-open: the retry is a probe
		records = append(records, e.attempts(1)...)
		e.clock.Advance(2 * time.Second)
		records = append(records, e.attempts(1)...)
		var d webhook.Delivery
		var err error
		switch s := e.sup.(type) {
		case *webhook.MemorySupervisor:
			d, err = s.Delivery(context.Background(), r.ID)
		case *webhook.PostgresSupervisor:
			d, err = s.Delivery(context.Background(), r.ID)
		}
		require.NoError(t, err)
		require.Equal(t, webhook.StateFailed, d.State, "the 400 failed it")
		var seen []string
		for _, a := range records {
			seen = append(seen, fmt.Sprintf("%+v", a), a.URL, a.BreakerKey, a.Error)
		}
		seen = append(seen, e.logs.String(), d.LastError, fmt.Sprintf("%+v %v %#v", d, w, w))
		for _, text := range seen {
			for _, secret := range secrets {
				require.NotContains(t, text, secret)
			}
		}
		require.Contains(t, e.logs.String(), "circuit breaker open", "the breaker's transition was logged")
	})

	t.Run("ReceiverAnswers401PerAdCP32", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Breaker.FailureThreshold = 1 })
		plain, refused := "https://buyer.example/misconfigured", "https://buyer.example/verifier"
		e.sender.on(plain, step{status: 401}, step{status: 401})
		e.sender.on(refused, step{status: 401, header: http.Header{"Www-Authenticate": {`Signature error="webhook_signature_key_unknown"`}}})
		e.startWorker()
		e.sendMCP(mcp(plain, "t1"))
		as := e.deliverAll(1)
		require.Equal(t, []bool{true, true, false}, willRetry(as), "a plain 401 is retried on the normal schedule")
		require.Equal(t, webhook.OutcomeSuccess, as[2].Outcome)
		e.sendMCP(mcp(refused, "t2"))
		as = e.deliverAll(1)
		require.Len(t, as, 1, "a webhook_* refusal is terminal for the delivery")
		require.Equal(t, "HTTP 401 Unauthorized (webhook_signature_key_unknown)", as[0].Error)
		e.sendMCP(mcp(plain, "t3"))
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome, "neither kind of 401 opened the breaker")
	})

	t.Run("AllAttemptsFail", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/down"
		e.sender.on(url, step{status: 500, body: "boom"}, step{status: 500, body: "boom"}, step{status: 500, body: "boom"})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 3)
		require.Equal(t, []bool{true, true, false}, willRetry(as))
		last := as[2]
		require.Equal(t, webhook.OutcomeFailure, last.Outcome)
		require.Equal(t, "HTTP 500 Internal Server Error", last.Error)
		require.Len(t, e.sender.sent(), 3)
	})

	// MaxAttemptsUntilHorizon: no count, the horizon alone ends retries.
	t.Run("RetriesUntilTheHorizon", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts, c.Retry.Horizon = webhook.MaxAttemptsUntilHorizon, 24*time.Hour
			c.Retry.BaseDelay, c.Retry.MaxDelay = time.Hour, 4*time.Hour
			c.Breaker.FailureThreshold = 1000
		})
		url := "https://buyer.example/down"
		var down []step
		for range 12 {
			down = append(down, step{status: 503})
		}
		e.sender.on(url, down...)
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Greater(t, len(as), 5, "more attempts than MaxAttemptsDefault")
		last := as[len(as)-1]
		require.False(t, last.WillRetry)
		require.Zero(t, last.MaxAttempts, "no count bounds the retries")
		for _, a := range as {
			require.False(t, a.OccurredAt.After(as[0].OccurredAt.Add(24*time.Hour)), "an attempt after the horizon")
		}
		require.True(t, last.OccurredAt.Add(4*time.Hour).After(as[0].OccurredAt.Add(24*time.Hour)),
			"the last attempt is the last the horizon allowed")
	})

	t.Run("TransportErrorKeepsKeyAndBytes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/reset"
		e.sender.on(url, step{err: errors.New("connection reset by peer")})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 2)
		require.Equal(t, 0, as[0].HTTPStatus)
		require.Contains(t, as[0].Error, "connection reset by peer")
		require.True(t, as[0].WillRetry)
		reqs := e.sender.sent()
		require.Equal(t, r.IdempotencyKey, reqs[0].Key)
		require.Equal(t, r.IdempotencyKey, reqs[1].Key)
		require.Equal(t, reqs[0].Body, reqs[1].Body)
	})

	t.Run("TransportErrorTextIsMadePrintable", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/odd-proxy"
		e.sender.on(url, step{err: errors.New("proxy said: \x00\xff\x1b[31m" + strings.Repeat("x", 5000))})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 2, "the odd error is retried like any transport error")
		require.True(t, utf8.ValidString(as[0].Error))
		require.NotContains(t, as[0].Error, "\x00")
		require.NotContains(t, as[0].Error, "\x1b")
		require.True(t, strings.HasPrefix(as[0].Error, "proxy said:"), as[0].Error)
		require.LessOrEqual(t, len(as[0].Error), 1024)
		require.Equal(t, webhook.OutcomeSuccess, as[1].Outcome)
	})

	// An invalid byte costs that byte, not the rest of the text.
	t.Run("LongErrorTextKeepsWhatFollowsAnInvalidByte", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/odd-proxy"
		e.sender.on(url, step{err: errors.New("\xff" + strings.Repeat("y", 2000))})
		e.sender.on(url, step{status: 502, body: "\xfe\xff" + strings.Repeat("z", 500)})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 3)
		require.True(t, utf8.ValidString(as[0].Error))
		require.Contains(t, as[0].Error, strings.Repeat("y", 1000), "the text after the invalid byte")
		require.LessOrEqual(t, len(as[0].Error), 1024)
		require.Equal(t, "HTTP 502 Bad Gateway", as[1].Error, "the status, never the receiver's answer")
	})

	// A classifier that panics costs neither the process nor the
	// delivery: the attempt is classified as DefaultClassifier would, and
	// the record says why.
	t.Run("ClassifierPanicIsContained", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.Classify = func(resp *webhook.Response, err error, now time.Time) webhook.Classification {
				panic("classifier bug")
			}
		})
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 2)
		require.Contains(t, as[0].Error, "RetryPolicy.Classify panicked")
		require.NotContains(t, as[0].Error, "classifier bug", "a panic's value may hold the response: only its type is kept")
		require.Contains(t, as[0].Error, "HTTP 503")
		require.True(t, as[0].WillRetry, "a 503 is retried, as DefaultClassifier says")
		require.Equal(t, webhook.OutcomeSuccess, as[1].Outcome, "a 2xx is delivered, not retried")
	})

	t.Run("SenderPanicIsATransportError", func(t *testing.T) {
		t.Parallel()
		calls := 0
		e := newEnv(t, newSup, func(c *suiteConfig) {
			inner := c.Sender
			c.Sender = webhook.SenderFunc(func(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
				if calls++; calls == 1 { // attempts of one delivery never overlap
					panic("sender bug")
				}
				return inner.Send(ctx, r)
			})
		})
		e.startWorker()
		e.sendMCP(mcp("https://buyer.example/hook", "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 2)
		require.Contains(t, as[0].Error, "Sender panicked")
		require.NotContains(t, as[0].Error, "sender bug", "a panic's value may hold the request: only its type is kept")
		require.True(t, as[0].WillRetry)
		require.Equal(t, webhook.OutcomeSuccess, as[1].Outcome)
	})

	t.Run("PermanentStatusesAreNotRetried", func(t *testing.T) {
		t.Parallel()
		sigErr := http.Header{"Www-Authenticate": {`Signature error="webhook_signature_invalid"`}}
		for _, st := range []step{{status: 400}, {status: 409}, {status: 401, header: sigErr}, {status: 302}} {
			t.Run(fmt.Sprint(st.status), func(t *testing.T) {
				e := newEnv(t, newSup, func(c *suiteConfig) {
					c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenAction: webhook.OpenDrop}
				})
				url := "https://buyer.example/refuses"
				e.sender.on(url, st)
				e.startWorker()
				e.sendMCP(mcp(url, "t1"))
				a := e.attempts(1)[0]
				require.Equal(t, webhook.OutcomeFailure, a.Outcome)
				require.False(t, a.WillRetry)
				require.Equal(t, st.status, a.HTTPStatus)
				require.Len(t, e.sender.sent(), 1)
				// The endpoint answered: its breaker is still closed.
				e.sendMCP(mcp(url, "t2"))
				require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
			})
		}
	})

	t.Run("RetryAfterIsAFloor", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/throttled"
		e.sender.on(url, step{status: 429, header: http.Header{"Retry-After": {"20"}}})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		a := e.attempts(1)[0]
		require.True(t, a.WillRetry)
		require.Equal(t, 20*time.Second, a.NextRetryAt.Sub(a.OccurredAt))
		e.clock.Set(a.NextRetryAt)
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
	})

	t.Run("BreakerDropRefusesAtAcceptance", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenAction: webhook.OpenDrop}
		})
		url := "https://buyer.example/dead"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		w := mcp(url, "t1")
		w.SequenceKey = "buyer-1"
		first := e.sendMCP(w)
		require.Equal(t, int64(1), first.Sequence)
		require.Equal(t, webhook.OutcomeFailure, e.attempts(1)[0].Outcome)

		w.TaskID = "t2"
		_, err := e.sup.SendMCP(context.Background(), w)
		require.ErrorIs(t, err, webhook.ErrCircuitOpen)
		a := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeCircuitOpen, a.Outcome)
		require.Equal(t, "t2", a.TaskID)
		require.Zero(t, a.SequenceNumber)
		require.False(t, a.WillRetry)
		require.Len(t, e.sender.sent(), 1, "nothing is sent while the breaker is open")

		// After the open timeout the breaker lets webhooks in again, and the
		// refused one did not burn a sequence number.
		e.clock.Advance(webhook.OpenTimeoutDefault)
		w.TaskID = "t3"
		r := e.sendMCP(w)
		require.Equal(t, int64(2), r.Sequence)
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
	})

	t.Run("BreakerDeferHoldsWithoutCharging", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 1, OpenTimeout: time.Minute}
		})
		url := "https://buyer.example/dead"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		failed := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeFailure, failed.Outcome)
		openUntil := failed.OccurredAt.Add(time.Minute)

		r := e.sendMCP(mcp(url, "t2"))
		// The worker parks the delivery until the breaker's timeout.
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		require.True(t, e.clock.WaitForTimer(ctx, func(d time.Time) bool { return !d.Before(openUntil) }))
		require.Len(t, e.sender.sent(), 1, "no attempt while the breaker is open")

		e.clock.Set(openUntil)
		a := e.attempts(1)[0]
		require.Equal(t, r.ID, a.DeliveryID)
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
		require.Equal(t, 1, a.AttemptNumber, "waiting for the breaker is not charged an attempt")
		require.False(t, a.OccurredAt.Before(openUntil))
	})

	t.Run("RetriesWaitForTheBreaker", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 2, SuccessThreshold: 1, OpenTimeout: time.Minute}
		})
		url := "https://buyer.example/down"
		e.sender.on(url, step{status: 503}, step{status: 503})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		e.sendMCP(mcp(url, "t2"))
		first := e.attempts(2)
		require.True(t, first[0].WillRetry && first[1].WillRetry)
		// Two failures opened the breaker; both retries fall due at +1s
		// but must wait for the half-open probe at +60s.
		retryAt := first[0].NextRetryAt
		openUntil := epoch.Add(time.Minute)
		require.True(t, retryAt.Before(openUntil))
		e.clock.Set(retryAt)
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		require.True(t, e.clock.WaitForTimer(ctx, func(d time.Time) bool { return !d.Before(openUntil) }))
		require.Len(t, e.sender.sent(), 2, "no retry while the breaker is open")

		e.clock.Set(openUntil)
		second := e.attempts(2)
		for _, a := range second {
			require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
			require.Equal(t, 2, a.AttemptNumber, "waiting for the breaker charged nothing")
			require.False(t, a.OccurredAt.Before(openUntil))
		}
	})

	// A worker takes its next delivery only once a failure's result is
	// written, so the next claim sees the breaker it opened: with one
	// worker, an endpoint that fails at once gets exactly FailureThreshold
	// requests. (No endpoint limit: with one worker the default limit of
	// one would hold the next claim until the write too.)
	t.Run("BreakerOpensAfterExactlyItsThreshold", func(t *testing.T) {
		t.Parallel()
		const threshold, n = 3, 20
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Concurrency, c.EndpointConcurrency = 1, webhook.NoEndpointLimit
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: threshold, SuccessThreshold: 1, OpenTimeout: time.Hour}
		})
		url := "https://buyer.example/down"
		for i := range n {
			e.sender.on(url, step{status: 503})
			e.sendMCP(mcp(url, fmt.Sprint("t", i)))
		}
		e.startWorker()
		insp := e.sup.(webhook.Inspector)
		ctx := context.Background()
		require.Eventually(t, func() bool {
			b, err := insp.Breaker(ctx, url)
			st, serr := insp.Stats(ctx)
			return err == nil && serr == nil && b == webhook.BreakerOpen && st.Running == 0
		}, guard, time.Millisecond)
		require.Len(t, e.sender.sent(), threshold, "requests sent to a failing endpoint before its breaker opened")
	})

	t.Run("BreakersIsolatedPerURLAndKey", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenAction: webhook.OpenDrop}
		})
		shared := "https://saas-receiver.example/hook"
		other := "https://other.example/hook"
		e.sender.on(shared, step{status: 503})
		e.startWorker()

		tenantA := mcp(shared, "a1")
		tenantA.BreakerKey = "tenant-a"
		e.sendMCP(tenantA)
		a := e.attempts(1)[0]
		require.Equal(t, "tenant-a", a.BreakerKey)
		require.Equal(t, webhook.OutcomeFailure, a.Outcome)

		tenantA.TaskID = "a2"
		_, err := e.sup.SendMCP(context.Background(), tenantA)
		require.ErrorIs(t, err, webhook.ErrCircuitOpen, "tenant-a's breaker is open")
		e.attempts(1)

		tenantB := mcp(shared, "b1")
		tenantB.BreakerKey = "tenant-b"
		e.sendMCP(tenantB)
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome, "tenant-b shares the URL, not the breaker")

		// Without a BreakerKey the URL is the key, and it is still closed.
		e.sendMCP(mcp(shared, "u1"))
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
		e.sendMCP(mcp(other, "o1"))
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
	})

	t.Run("EndpointConcurrencyKeepsWorkersForOthers", func(t *testing.T) {
		t.Parallel()
		// Four workers: by default an endpoint gets two of them.
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Concurrency = 4 })
		slow, fast := "https://slow.example/hook", "https://fast.example/hook"
		release := make(chan struct{})
		for range 6 {
			e.sender.on(slow, step{status: 200, gate: release})
		}
		for i := range 6 {
			e.sendMCP(mcp(slow, fmt.Sprint("s", i)))
		}
		e.startWorker()
		e.waitSent(2)
		for i := range 3 {
			e.sendMCP(mcp(fast, fmt.Sprint("f", i)))
		}
		// The fast endpoint's deliveries go through while the slow one
		// holds its two workers; without the limit it would hold all four.
		for _, a := range e.attempts(3) {
			require.Equal(t, fast, a.URL)
		}
		close(release)
		for _, a := range e.attempts(6) {
			require.Equal(t, slow, a.URL)
			require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
		}
		most := 0
		for _, r := range e.sender.sent() {
			if r.URL == slow {
				most = max(most, r.InFlightURL)
			}
		}
		require.Equal(t, 2, most, "the slow endpoint had its two attempts in flight, and never more")
	})

	t.Run("EndpointConcurrencyBoundsHalfOpenProbes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Concurrency, c.EndpointConcurrency = 4, 1
			c.Retry.MaxAttempts = 1
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, SuccessThreshold: 1, HalfOpenProbes: 3, OpenTimeout: time.Minute}
		})
		url := "https://buyer.example/recovering"
		gate := make(chan struct{})
		e.sender.on(url, step{status: 503}, step{status: 200, gate: gate}, step{status: 200, gate: gate}, step{status: 200, gate: gate})
		e.startWorker()
		e.sendMCP(mcp(url, "t0"))
		require.Equal(t, webhook.OutcomeFailure, e.attempts(1)[0].Outcome)
		for i := range 3 {
			e.sendMCP(mcp(url, fmt.Sprint("t", i+1)))
		}
		// Half-open would let three probes through; the endpoint's limit
		// lets one. (A second would be sent at once: the wait gives it
		// the chance.)
		e.clock.Advance(time.Minute)
		e.waitSent(2)
		require.False(t, e.sentWithin(3, time.Second), "a second probe went past EndpointConcurrency 1")
		close(gate)
		e.attempts(3)
		for _, r := range e.sender.sent() {
			require.LessOrEqual(t, r.InFlightURL, 1, "%+v", r)
		}
	})

	t.Run("NoEndpointLimitLetsOneEndpointTakeEveryWorker", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Concurrency, c.EndpointConcurrency = 4, webhook.NoEndpointLimit })
		slow := "https://slow.example/hook"
		release := make(chan struct{})
		for range 4 {
			e.sender.on(slow, step{status: 200, gate: release})
		}
		for i := range 4 {
			e.sendMCP(mcp(slow, fmt.Sprint("s", i)))
		}
		e.startWorker()
		sent := e.waitSent(4)
		close(release)
		e.attempts(4)
		require.Equal(t, 4, sent[3].InFlightURL)
	})

	t.Run("SequenceNumbersPerKey", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		want := map[string]int64{}
		for i, key := range []string{"a", "b", "a", "a", "b", ""} {
			w := mcp("https://buyer.example/hook", fmt.Sprint("t", i))
			w.SequenceKey = key
			r := e.sendMCP(w)
			if key != "" {
				want[key]++
			}
			require.Equal(t, want[key], r.Sequence, "delivery %d", i)
		}
		got := map[string][]int64{}
		for _, a := range e.attempts(6) {
			got[a.SequenceKey] = append(got[a.SequenceKey], a.SequenceNumber)
		}
		require.ElementsMatch(t, []int64{1, 2, 3}, got["a"])
		require.ElementsMatch(t, []int64{1, 2}, got["b"])
		require.Equal(t, []int64{0}, got[""])
	})

	t.Run("NotificationTypePassesThrough", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		w := mcp("https://buyer.example/hook", "t1")
		w.NotificationType = "scheduled"
		e.sendMCP(w)
		require.Equal(t, "scheduled", e.attempts(1)[0].NotificationType)
	})

	t.Run("ResponseTimeFromTheClock", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.sender.clock = e.clock
		url := "https://buyer.example/slow"
		e.sender.on(url, step{status: 200, advance: 250 * time.Millisecond})
		e.startWorker()
		e.sendMCP(mcp(url, "t1"))
		require.Equal(t, 250*time.Millisecond, e.attempts(1)[0].ResponseTime)
	})

	t.Run("BadSinksCannotStallDelivery", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		for name, sink := range map[string]webhook.LogSinkFunc{
			"error": func(context.Context, webhook.Attempt) error { return errors.New("disk full") },
			"panic": func(context.Context, webhook.Attempt) error { panic("sink bug") },
			"slow": func(ctx context.Context, _ webhook.Attempt) error {
				<-ctx.Done()
				return ctx.Err()
			},
			"stuck": func(context.Context, webhook.Attempt) error {
				<-release // ignores its context
				return nil
			},
		} {
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, newSup, func(c *suiteConfig) {
					c.Sink = sink
					c.Retry.SinkTimeout = 10 * time.Millisecond
				})
				url := "https://buyer.example/flaky"
				e.sender.on(url, step{status: 503})
				e.startWorker()
				e.sendMCP(mcp(url, "t1"))
				e.sendMCP(mcp("https://buyer.example/ok", "t2"))
				// The first attempt of t1 fails; its retry must still come
				// due and be delivered despite the sink.
				ctx, cancel := context.WithTimeout(context.Background(), guard)
				defer cancel()
				retryAt := epoch.Add(time.Second)
				require.True(t, e.clock.WaitForTimer(ctx, func(d time.Time) bool { return d.Equal(retryAt) }))
				e.clock.Set(retryAt)
				e.waitSent(3)
				if name != "stuck" { // a stuck sink's last warning may come later
					// A durable supervisor commits the retry before it
					// calls the sink, so the retry can beat the warning.
					require.Eventually(t, func() bool { return strings.Contains(e.logs.String(), "log sink failed") },
						guard, time.Millisecond)
				}
				require.Len(t, e.sender.sent(), 3)
			})
		}
	})

	t.Run("InvalidInputQueuesNothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		for _, tc := range invalidWebhooks() {
			w := tc.mutate(mcp("https://buyer.example/hook", "t1"))
			w.SequenceKey = "s"
			_, err := e.sup.SendMCP(context.Background(), w)
			require.ErrorIs(t, err, webhook.ErrInvalidWebhook, tc.name)
			var ve *webhook.ValidationError
			require.ErrorAs(t, err, &ve, tc.name)
			require.Equal(t, tc.field, ve.Field, tc.name)
			require.NotContains(t, err.Error(), "secret-in-panic", tc.name)
			require.NotContains(t, err.Error(), goodCredentials, tc.name)
		}
		for name, body := range map[string]string{
			"duplicate keys": `{"kind":"task","kind":"message"}`,
			"invalid UTF-8":  "{\"id\":\"\xfe\"}",
			"two values":     `{} {}`,
		} {
			_, err := e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{URL: "https://buyer.example/a2a",
				Body: []byte(body), IdempotencyKey: webhook.NewIdempotencyKey(), Routing: webhook.Routing{SequenceKey: "s"}})
			var ve *webhook.ValidationError
			require.ErrorAs(t, err, &ve, name)
			require.Equal(t, "Body", ve.Field, name)
		}
		w := mcp("https://buyer.example/hook", "t1")
		w.SequenceKey = "s"
		w.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: goodCredentials}
		r := e.sendMCP(w)
		require.Equal(t, int64(1), r.Sequence, "rejected webhooks burn no sequence number")
		e.attempts(1)
		require.Len(t, e.sender.sent(), 1)
	})

	t.Run("PreparedBodySentVerbatim", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		body := []byte(`{"kind":"task","id":"a2a-1", "status":{"state":"completed"}}`)
		key := webhook.NewIdempotencyKey()
		r, err := e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{
			URL: "https://buyer.example/a2a", Body: body, IdempotencyKey: key, TaskID: "a2a-1",
			Routing: webhook.Routing{NotificationType: "a2a.push"},
		})
		require.NoError(t, err)
		body[0] = 'X' // the supervisor kept its own copy
		a := e.attempts(1)[0]
		require.Equal(t, r.ID, a.DeliveryID)
		require.Equal(t, key, a.IdempotencyKey)
		require.Equal(t, `{"kind":"task","id":"a2a-1", "status":{"state":"completed"}}`, string(e.sender.sent()[0].Body))
	})

	t.Run("LegacyAuthenticationReachesTheSender", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		e.startWorker()
		w := mcp("https://buyer.example/hook", "t1")
		secret := "0123456789abcdef0123456789abcdef-secret"
		w.Authentication = &webhook.Authentication{Scheme: webhook.AuthHMACSHA256, Credentials: secret}
		e.sendMCP(w)
		a := e.attempts(1)[0]
		got := e.sender.sent()[0].Auth
		require.NotNil(t, got)
		require.Equal(t, secret, got.Credentials)
		raw, err := json.Marshal(a)
		require.NoError(t, err)
		require.NotContains(t, string(raw), secret, "attempt records never carry credentials")
		require.NotContains(t, fmt.Sprintf("%v %+v %#v", w, w, w), secret)
	})

	t.Run("HeadersReachTheSenderOnEveryAttempt", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		url := "https://buyer.example/a2a"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		token := "a2a-notification-token-0123456789"
		headers := map[string]string{"X-A2A-Notification-Token": token}
		r, err := e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{
			URL: url, Body: []byte(`{"id":"task-1"}`), IdempotencyKey: webhook.NewIdempotencyKey(),
			Routing: webhook.Routing{Headers: headers},
		})
		require.NoError(t, err)
		headers["X-A2A-Notification-Token"] = "changed" // the supervisor kept its own copy
		as := e.deliverAll(1)
		require.Len(t, as, 2)
		for _, req := range e.sender.sent() {
			require.Equal(t, map[string]string{"X-A2A-Notification-Token": token}, req.Headers)
		}
		raw, err := json.Marshal(as)
		require.NoError(t, err)
		require.NotContains(t, string(raw), token, "attempt records never carry headers")
		require.Equal(t, r.ID, as[1].DeliveryID)
	})

	t.Run("DrainFinishesInFlightAndKeepsQueued", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		gate := make(chan struct{})
		slow, flaky := "https://buyer.example/slow", "https://buyer.example/flaky"
		e.sender.on(slow, step{status: 200, gate: gate})
		e.sender.on(flaky, step{status: 503})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.sup.RunWorker(ctx) }()
		waiting := e.sendMCP(mcp(flaky, "t0"))
		retry := e.attempts(1)[0]
		require.True(t, retry.WillRetry)
		r := e.sendMCP(mcp(slow, "t1"))
		e.waitSent(2)
		cancel()
		select {
		case <-done:
			t.Fatal("RunWorker returned while an attempt was in flight")
		default:
		}
		close(gate)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(guard):
			t.Fatal("RunWorker did not return")
		}
		a := e.attempts(1)[0]
		require.Equal(t, r.ID, a.DeliveryID)
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)

		// Accepted while no worker runs, and the retry that fell due while
		// none ran: both delivered by the next RunWorker, the retry as
		// attempt 2 under its original key.
		e.clock.Set(retry.NextRetryAt)
		r2 := e.sendMCP(mcp("https://buyer.example/hook", "t2"))
		require.Len(t, e.sender.sent(), 2, "nothing is sent while no worker runs")
		e.startWorker()
		got := map[string]webhook.Attempt{}
		for _, a := range e.attempts(2) {
			got[a.DeliveryID] = a
		}
		require.Equal(t, webhook.OutcomeSuccess, got[r2.ID].Outcome)
		require.Equal(t, 2, got[waiting.ID].AttemptNumber)
		require.Equal(t, waiting.IdempotencyKey, got[waiting.ID].IdempotencyKey)
	})

	t.Run("SinkSeesEachDeliveryInAttemptOrder", func(t *testing.T) {
		t.Parallel()
		// The sink holds the records of first attempts while attempt 2 of
		// one delivery falls due: that attempt may start only once the sink
		// has returned from attempt 1's record.
		release, held := make(chan struct{}), make(chan struct{}, 2)
		e := newEnv(t, newSup, func(c *suiteConfig) {
			sink := c.Sink
			c.Retry.SinkTimeout = guard
			c.Sink = webhook.LogSinkFunc(func(ctx context.Context, a webhook.Attempt) error {
				if a.AttemptNumber == 1 {
					held <- struct{}{}
					select {
					case <-release:
					case <-ctx.Done():
					}
				}
				return sink.RecordAttempt(ctx, a)
			})
		})
		url := "https://buyer.example/flaky"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		<-held
		e.clock.Set(epoch.Add(webhook.BaseDelayDefault)) // attempt 2 is due
		// Another delivery wakes the workers, which then look for due work.
		e.sendMCP(mcp("https://buyer.example/other", "t2"))
		e.waitSent(2)
		require.False(t, e.sentWithin(3, time.Second), "attempt 2 was sent while the sink still held attempt 1's record")
		close(release)
		var as []webhook.Attempt
		for _, a := range e.attempts(3) {
			if a.DeliveryID == r.ID {
				as = append(as, a)
			}
		}
		require.Len(t, as, 2)
		require.Equal(t, []int{1, 2}, []int{as[0].AttemptNumber, as[1].AttemptNumber})
		require.Equal(t, webhook.OutcomeSuccess, as[1].Outcome)
	})

	t.Run("HorizonPassingBehindAnOpenBreaker", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry = webhook.RetryPolicy{MaxAttempts: 1, Horizon: 24 * time.Hour, NoJitter: true}
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenTimeout: 25 * time.Hour}
		})
		url := "https://buyer.example/dead"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		e.sendMCP(mcp(url, "t0"))
		require.Equal(t, webhook.OutcomeFailure, e.attempts(1)[0].Outcome)
		r := e.sendMCP(mcp(url, "t1")) // deferred: the breaker is open for 25 hours
		e.clock.Set(epoch.Add(25 * time.Hour))
		a := e.attempts(1)[0]
		require.Equal(t, r.ID, a.DeliveryID)
		require.Equal(t, webhook.OutcomeCircuitOpen, a.Outcome, "its breaker held it back until its horizon passed")
		require.Zero(t, a.AttemptNumber, "nothing was sent")
		require.False(t, a.WillRetry)
		require.Contains(t, a.Error, "horizon")
		require.Len(t, e.sender.sent(), 1)
	})
	t.Run("SinkContextCarriesTheWorkersValues", func(t *testing.T) {
		t.Parallel()
		type key struct{}
		type seenCtx struct {
			value       any
			hasDeadline bool
		}
		seen := make(chan seenCtx, 1)
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Sink = webhook.LogSinkFunc(func(ctx context.Context, a webhook.Attempt) error {
				_, hasDeadline := ctx.Deadline()
				seen <- seenCtx{ctx.Value(key{}), hasDeadline}
				return nil
			})
		})
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "trace-7"))
		done := make(chan error, 1)
		go func() { done <- e.sup.RunWorker(ctx) }()
		defer func() { cancel(); <-done }()
		e.sendMCP(mcp("https://buyer.example/hook", "t1"))
		select {
		case v := <-seen:
			require.Equal(t, "trace-7", v.value, "a value of RunWorker's context reaches the sink")
			require.True(t, v.hasDeadline, "the sink's call is bounded by SinkTimeout")
		case <-time.After(guard):
			t.Fatal("no record reached the sink")
		}
	})
}

// sentWithin reports whether at least n requests were sent within d. It is
// for checking that something does not happen: a false answer after d is
// the expected one, and d only bounds how long the test looks.
func (e *env) sentWithin(n int, d time.Duration) bool {
	e.t.Helper()
	timeout := time.After(d)
	for {
		e.sender.mu.Lock()
		got, changed := len(e.sender.requests), e.sender.changed
		e.sender.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-changed:
		case <-timeout:
			return false
		}
	}
}

type invalidCase struct {
	name   string
	field  string
	mutate func(webhook.MCPWebhook) webhook.MCPWebhook
}

func invalidWebhooks() []invalidCase {
	set := func(f func(*webhook.MCPWebhook)) func(webhook.MCPWebhook) webhook.MCPWebhook {
		return func(w webhook.MCPWebhook) webhook.MCPWebhook { f(&w); return w }
	}
	return []invalidCase{
		{"empty url", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "" })},
		{"relative url", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "/hook" })},
		{"ftp scheme", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "ftp://buyer.example/hook" })},
		{"plain http", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "http://buyer.example/hook" })},
		{"userinfo", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "https://user:pw@buyer.example/hook" })},
		{"control char", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "https://buyer.example/ho\nok" })},
		{"C1 control char", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "https://buyer.example/ho\u0085ok" })},
		{"port out of range", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "https://buyer.example:70000/hook" })},
		{"port zero", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "https://buyer.example:0/hook" })},
		{"zone id", "URL", set(func(w *webhook.MCPWebhook) { w.URL = "https://[fe80::1%25eth0]/hook" })},
		{"no operation id", "OperationID", set(func(w *webhook.MCPWebhook) { w.OperationID = "" })},
		{"no task id", "TaskID", set(func(w *webhook.MCPWebhook) { w.TaskID = "" })},
		{"no task type", "TaskType", set(func(w *webhook.MCPWebhook) { w.TaskType = "" })},
		{"bad task type", "TaskType", set(func(w *webhook.MCPWebhook) { w.TaskType = "Create-Media-Buy" })},
		{"unknown status", "Status", set(func(w *webhook.MCPWebhook) { w.Status = "done" })},
		{"bad protocol", "Protocol", set(func(w *webhook.MCPWebhook) { w.Protocol = "media_buy" })},
		{"short token", "Token", set(func(w *webhook.MCPWebhook) { w.Token = "short" })},
		{"long token", "Token", set(func(w *webhook.MCPWebhook) { w.Token = strings.Repeat("t", 4097) })},
		{"short key", "IdempotencyKey", set(func(w *webhook.MCPWebhook) { w.IdempotencyKey = "abc" })},
		{"bad key chars", "IdempotencyKey", set(func(w *webhook.MCPWebhook) { w.IdempotencyKey = "whk_0123456789abcdef!" })},
		{"bad notification id", "NotificationID", set(func(w *webhook.MCPWebhook) { w.NotificationID = "has space" })},
		{"unmarshalable result", "Result", set(func(w *webhook.MCPWebhook) { w.Result = make(chan int) })},
		{"invalid raw result", "Result", set(func(w *webhook.MCPWebhook) { w.Result = json.RawMessage(`{"a":`) })},
		{"huge result", "Result", set(func(w *webhook.MCPWebhook) { w.Result = strings.Repeat("r", webhook.MaxBodyBytes) })},
		{"reserved header", "Headers", set(func(w *webhook.MCPWebhook) { w.Headers = map[string]string{"content-type": "text/plain"} })},
		{"signature header", "Headers", set(func(w *webhook.MCPWebhook) { w.Headers = map[string]string{"Signature": "sig1=:x:"} })},
		{"adcp header", "Headers", set(func(w *webhook.MCPWebhook) { w.Headers = map[string]string{"X-ADCP-Timestamp": "1"} })},
		{"bad header name", "Headers", set(func(w *webhook.MCPWebhook) { w.Headers = map[string]string{"Bad Name": "v"} })},
		{"header value newline", "Headers", set(func(w *webhook.MCPWebhook) { w.Headers = map[string]string{"X-Token": "a\r\nInjected: 1"} })},
		{"too many headers", "Headers", set(func(w *webhook.MCPWebhook) {
			w.Headers = map[string]string{}
			for i := range 17 {
				w.Headers[fmt.Sprint("X-H", i)] = "v"
			}
		})},
		{"bad auth scheme", "Authentication.Scheme", set(func(w *webhook.MCPWebhook) {
			w.Authentication = &webhook.Authentication{Scheme: "Basic", Credentials: "0123456789abcdef0123456789abcdef"}
		})},
		{"short credentials", "Authentication.Credentials", set(func(w *webhook.MCPWebhook) {
			w.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: "short-secret"}
		})},
		{"credentials with CRLF", "Authentication.Credentials", creds(webhook.AuthBearer, goodCredentials+"\r\nX-Injected: 1")},
		{"credentials with NUL", "Authentication.Credentials", creds(webhook.AuthHMACSHA256, goodCredentials+"\x00")},
		{"credentials with a space", "Authentication.Credentials", creds(webhook.AuthBearer, goodCredentials+" x")},
		{"non-ASCII credentials", "Authentication.Credentials", creds(webhook.AuthHMACSHA256, goodCredentials+"é")},
		{"one repeated character", "Authentication.Credentials", creds(webhook.AuthHMACSHA256, strings.Repeat("a", 64))},
		{"few distinct characters", "Authentication.Credentials", creds(webhook.AuthBearer, strings.Repeat("abcdefg", 8))},
		{"huge credentials", "Authentication.Credentials", creds(webhook.AuthBearer, strings.Repeat(goodCredentials, 200))},
		{"header named twice", "Headers", set(func(w *webhook.MCPWebhook) { w.Headers = map[string]string{"X-Tenant": "a", "x-tenant": "b"} })},
		{"raw result with duplicate keys", "Result", set(func(w *webhook.MCPWebhook) { w.Result = json.RawMessage(`{"id":"a","id":"b"}`) })},
		{"raw result with invalid UTF-8", "Result", set(func(w *webhook.MCPWebhook) { w.Result = json.RawMessage("\"\xff\"") })},
		{"nested raw duplicate keys", "Result", set(func(w *webhook.MCPWebhook) { w.Result = map[string]any{"x": json.RawMessage(`{"k":1,"k":2}`)} })},
		{"panicking MarshalJSON", "Result", set(func(w *webhook.MCPWebhook) { w.Result = panickyResult{} })},
		{"huge message", "Message", set(func(w *webhook.MCPWebhook) { w.Message = strings.Repeat("m", webhook.MaxBodyBytes) })},
		{"timestamp past 9999", "Timestamp", set(func(w *webhook.MCPWebhook) { w.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"timestamp before 0000", "Timestamp", set(func(w *webhook.MCPWebhook) { w.Timestamp = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) })},
	}
}

// goodCredentials are acceptable legacy credentials.
const goodCredentials = "Zq8-uR2_kL5.mN7~pX4+wV1/cB9=jH3dF6"

func creds(scheme webhook.AuthScheme, c string) func(webhook.MCPWebhook) webhook.MCPWebhook {
	return func(w webhook.MCPWebhook) webhook.MCPWebhook {
		w.Authentication = &webhook.Authentication{Scheme: scheme, Credentials: c}
		return w
	}
}

// panickyResult panics when marshalled, with a value that must not reach
// the error.
type panickyResult struct{}

func (panickyResult) MarshalJSON() ([]byte, error) { panic("secret-in-panic") }
