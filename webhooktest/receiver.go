// Package webhooktest provides a webhook receiver for tests, in the spirit
// of net/http/httptest: a loopback buyer endpoint that records every
// delivery and fails on demand, in front of the same [receive.Handler] a
// production buyer runs.
//
// Every request that is not given a [Fault] goes through a receive.Handler
// with an in-memory dedup store: 413 past the body limit, 415 for a
// Content-Type other than application/json, 401 with the spec's code for a
// signature that fails (when a Verifier is configured), 400 without a valid
// idempotency_key; then, per key, the first delivery owns the key, bound to
// the SHA-256 of its body's RFC 8785 (JCS) canonical form; an identical
// delivery is answered 503 while the owner is still being handled (see
// [Receiver.HoldNext]) and 200 once it was acknowledged; a delivery with a
// changed canonical payload is answered 409 and not dispatched.
package webhooktest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/adcpkit/webhook/internal/recvhook"
	"github.com/adcpkit/webhook/receive"
)

// Config configures [NewReceiver]. The zero value is valid.
type Config struct {
	// Verifier, when set, checks every request's RFC 9421 signature;
	// a request that fails is answered 401 with
	// WWW-Authenticate: Signature error="<code>". Defaults to nil: no
	// verification (the body must still be strict JSON). Its
	// VerifierConfig.Agent, if set, is the sender identity; otherwise
	// [Sender] is.
	Verifier *receive.Verifier
	// Legacy, when set, makes the receiver a legacy HMAC or Bearer route,
	// as [receive.HandlerConfig.Legacy].
	Legacy *receive.LegacyAuth
	// MaxBody bounds the body. Defaults to the 10 MiB a seller using this
	// module may send (receive.MaxBodyBytes); a production
	// [receive.Handler] defaults to 1 MiB.
	MaxBody int64
	// Registration, when set, is what an activation challenge must match
	// ([receive.AnswerChallenge]); a challenge that does not is answered
	// 403. When nil, every challenge is answered 403.
	Registration *receive.Registration
}

// Sender is the sender identity of the webhooks a [Receiver] accepts when
// its Verifier names no seller agent, or when it verifies nothing.
const Sender = "webhooktest:seller"

// Fault is what the receiver does to one request instead of answering 200.
type Fault struct {
	// Status, when non-zero, is the status to answer.
	Status int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Body is the response body.
	Body string
	// Delay holds the response back this long (or until the client gives
	// up).
	Delay time.Duration
	// Drop closes the connection without answering.
	Drop bool
	// SlowBody writes Body one byte at a time, this long apart.
	SlowBody time.Duration
}

// Delivery is one request the receiver saw.
type Delivery struct {
	Method string
	// URI is the request URI (path and query).
	URI    string
	Header http.Header
	Body   []byte
	// IdempotencyKey is the body's idempotency_key member, if any.
	IdempotencyKey string
	// Duplicate reports that an earlier request with the same key and
	// canonical payload was already acknowledged with 2xx.
	Duplicate bool
	// InProgress reports that an identical delivery was still being
	// handled: it was answered 503.
	InProgress bool
	// Challenge reports an activation challenge (answered with its echo
	// when it verified and matched the Registration).
	Challenge bool
	// Conflict reports that the key was bound to another canonical
	// payload: it was answered 409.
	Conflict bool
	// VerifyErr is the authentication error, if any: a
	// [*receive.VerifyError] for a request answered 401. A request given a
	// Fault is verified too, and VerifyErr says how that went.
	VerifyErr error
	// Fault is the fault applied, if any.
	Fault *Fault
	// Status is the status answered (0 for a dropped connection).
	Status int
}

// Receiver is a loopback webhook endpoint. Its methods are safe for
// concurrent use.
type Receiver struct {
	// URL is the receiver's base URL, http://127.0.0.1:port.
	URL string

	srv      *httptest.Server
	handler  http.Handler // a receive.Handler around dispatch
	verifier *receive.Verifier
	maxBody  int64

	mu         sync.Mutex
	faults     []Fault
	deliveries []Delivery
	hold       *Hold   // set by HoldNext: the next new key waits for it
	holds      []*Hold // every hold, released by Close
	changed    chan struct{}
}

// Hold keeps one delivery "in processing"; see [Receiver.HoldNext].
type Hold struct {
	held    chan struct{} // closed when a delivery is being held
	release chan struct{} // closed by Release
	once    sync.Once
}

// Held is closed once a delivery is being held: from then until Release,
// identical deliveries are answered 503.
func (h *Hold) Held() <-chan struct{} { return h.held }

// Release lets the held delivery finish: it is answered 200 and later
// identical deliveries are answered 200 as duplicates. Release is
// idempotent, and [Receiver.Close] releases every hold.
func (h *Hold) Release() { h.once.Do(func() { close(h.release) }) }

// HoldNext makes the receiver keep the next delivery of a new key "in
// processing" until the returned hold is released, so tests can exercise a
// sender's handling of 503 for a delivery the buyer is still processing.
// A later HoldNext replaces one that has not yet caught a delivery.
func (r *Receiver) HoldNext() *Hold {
	h := &Hold{held: make(chan struct{}), release: make(chan struct{})}
	r.mu.Lock()
	r.hold = h
	r.holds = append(r.holds, h)
	r.mu.Unlock()
	return h
}

// NewReceiver starts a receiver. Call Close when done. It panics on a
// Config a receive.Handler refuses (a Legacy with short credentials, say).
func NewReceiver(cfg Config) *Receiver {
	r := &Receiver{verifier: cfg.Verifier, maxBody: cfg.MaxBody, changed: make(chan struct{})}
	if r.maxBody <= 0 {
		r.maxBody = receive.MaxBodyBytes
	}
	h, err := recvhook.New(receive.HandlerConfig{
		Verifier:     cfg.Verifier,
		Legacy:       cfg.Legacy,
		Dedup:        &receive.MemoryDedupStore{},
		Registration: cfg.Registration,
		MaxBody:      r.maxBody,
		Logger:       slog.New(slog.DiscardHandler),
	}, http.HandlerFunc(r.dispatch), recvhook.Hooks{
		Unverified: cfg.Verifier == nil, // a legacy route's challenges too: they are RFC 9421 signed
		Sender:     Sender,
		Refused: func(req *http.Request, err error) {
			if o, ok := req.Context().Value(outcomeKey{}).(*outcome); ok {
				o.refused = err
			}
		},
	})
	if err != nil {
		panic("webhooktest: " + err.Error())
	}
	r.handler = h
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	return r
}

// Close shuts the receiver down, releasing every [Hold] and cutting off
// requests still held by a Delay or SlowBody fault.
func (r *Receiver) Close() {
	r.mu.Lock()
	holds := r.holds
	r.mu.Unlock()
	for _, h := range holds {
		h.Release() // a held request would keep Close waiting
	}
	r.srv.CloseClientConnections()
	r.srv.Close()
}

// Fail queues faults: the next len(faults) requests get them, in order.
func (r *Receiver) Fail(faults ...Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, faults...)
}

// Deliveries returns every request seen so far.
func (r *Receiver) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.deliveries...)
}

// WaitFor blocks until at least n requests have been answered, without
// polling, and returns them; or returns ctx's error.
func (r *Receiver) WaitFor(ctx context.Context, n int) ([]Delivery, error) {
	for {
		r.mu.Lock()
		if len(r.deliveries) >= n {
			defer r.mu.Unlock()
			return append([]Delivery(nil), r.deliveries...), nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return r.Deliveries(), ctx.Err()
		}
	}
}

func (r *Receiver) record(d Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deliveries = append(r.deliveries, d)
	close(r.changed)
	r.changed = make(chan struct{})
}

// outcome is what the handler did with one request.
type outcome struct {
	refused    error // authentication failed
	dispatched bool  // dispatch ran: the request owned its key
}

type outcomeKey struct{}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, r.maxBody+1))
	if err != nil {
		http.Error(w, "the body could not be read", http.StatusBadRequest)
		return
	}
	d := Delivery{Method: req.Method, URI: req.RequestURI, Header: req.Header.Clone(), Body: body,
		IdempotencyKey: idempotencyKey(body), Challenge: receive.IsChallenge(body)}

	r.mu.Lock()
	var fault *Fault
	if len(r.faults) > 0 {
		f := r.faults[0]
		r.faults = r.faults[1:]
		fault = &f
	}
	r.mu.Unlock()
	if fault != nil {
		if r.verifier != nil {
			_, d.VerifyErr = r.verifier.VerifyRequest(req, body)
		}
		d.Fault = fault
		d.Status = r.applyFault(w, req, *fault)
		r.record(d)
		return
	}

	o := &outcome{}
	req = req.WithContext(context.WithValue(req.Context(), outcomeKey{}, o))
	req.Body = io.NopCloser(bytes.NewReader(body))
	sw := &statusWriter{ResponseWriter: w}
	r.handler.ServeHTTP(sw, req)
	d.Status, d.VerifyErr = sw.status, o.refused
	if d.Status == 0 {
		d.Status = http.StatusOK
	}
	switch {
	case d.Status == http.StatusConflict:
		d.Conflict = true
	case o.dispatched || d.Challenge:
	case d.Status == http.StatusServiceUnavailable:
		d.InProgress = true
	case d.Status == http.StatusOK:
		d.Duplicate = true
	}
	r.record(d)
}

// dispatch is the buyer's handler behind the receive.Handler: it runs for
// the owner of a new key, and holds it when HoldNext asked.
func (r *Receiver) dispatch(w http.ResponseWriter, req *http.Request) {
	if o, ok := req.Context().Value(outcomeKey{}).(*outcome); ok {
		o.dispatched = true
	}
	r.mu.Lock()
	hold := r.hold
	r.hold = nil
	r.mu.Unlock()
	if hold != nil {
		close(hold.held)
		<-hold.release // the owner is processing; it finishes even if the sender gave up
	}
	w.WriteHeader(http.StatusOK)
}

// statusWriter notes the status answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// idempotencyKey is the body's idempotency_key member, for the record.
func idempotencyKey(body []byte) string {
	var doc map[string]json.RawMessage
	var key string
	if json.Unmarshal(body, &doc) == nil && json.Unmarshal(doc["idempotency_key"], &key) == nil {
		return key
	}
	return ""
}

func (r *Receiver) applyFault(w http.ResponseWriter, req *http.Request, f Fault) int {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
		}
	}
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return 0
			}
		}
		panic(http.ErrAbortHandler) // aborts the response without answering
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.SlowBody > 0 && f.Body != "" {
		w.Header().Set("Content-Length", strconv.Itoa(len(f.Body)))
	}
	w.WriteHeader(status)
	if f.SlowBody <= 0 {
		_, _ = io.WriteString(w, f.Body)
		return status
	}
	flusher, _ := w.(http.Flusher)
	for i := 0; i < len(f.Body); i++ {
		if _, err := w.Write([]byte{f.Body[i]}); err != nil {
			break
		}
		if flusher != nil {
			flusher.Flush()
		}
		t := time.NewTimer(f.SlowBody)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return status
		}
	}
	return status
}
