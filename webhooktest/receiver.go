// Package webhooktest provides a webhook receiver for tests, in the spirit
// of net/http/httptest: a loopback buyer endpoint that verifies signatures,
// records every delivery, answers duplicate idempotency keys with 200 as
// AdCP receivers must, and fails on demand.
package webhooktest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/adcpkit/webhook/receive"
)

// Config configures [NewReceiver]. The zero value is valid.
type Config struct {
	// Verifier, when set, checks every request's RFC 9421 signature;
	// a request that fails is answered 401 with
	// WWW-Authenticate: Signature error="<code>". Defaults to nil: no
	// verification.
	Verifier *receive.Verifier
	// MaxBody bounds the body read from each request. Defaults to 10 MiB.
	MaxBody int64
}

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
	// Duplicate reports that an earlier request with the same key was
	// already acknowledged with 2xx.
	Duplicate bool
	// VerifyErr is the signature verification error, if any (checked
	// before any fault is applied).
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
	verifier *receive.Verifier
	maxBody  int64

	mu         sync.Mutex
	faults     []Fault
	deliveries []Delivery
	acked      map[string]bool
	changed    chan struct{}
}

// NewReceiver starts a receiver. Call Close when done.
func NewReceiver(cfg Config) *Receiver {
	r := &Receiver{verifier: cfg.Verifier, maxBody: cfg.MaxBody, acked: map[string]bool{}, changed: make(chan struct{})}
	if r.maxBody <= 0 {
		r.maxBody = receive.MaxBodyBytes
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	return r
}

// Close shuts the receiver down, cutting off requests still held by a
// Delay or SlowBody fault.
func (r *Receiver) Close() {
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

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, r.maxBody+1))
	if err != nil || int64(len(body)) > r.maxBody {
		http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	d := Delivery{Method: req.Method, URI: req.RequestURI, Header: req.Header.Clone(), Body: body}
	var envelope struct {
		IdempotencyKey string `json:"idempotency_key"`
	}
	if json.Unmarshal(body, &envelope) == nil {
		d.IdempotencyKey = envelope.IdempotencyKey
	}

	r.mu.Lock()
	var fault *Fault
	if len(r.faults) > 0 {
		f := r.faults[0]
		r.faults = r.faults[1:]
		fault = &f
	}
	r.mu.Unlock()

	if r.verifier != nil {
		_, d.VerifyErr = r.verifier.VerifyRequest(req, body)
	}
	if fault != nil {
		d.Fault = fault
		d.Status = r.applyFault(w, req, *fault)
		r.record(d)
		return
	}
	if r.verifier != nil {
		if err := d.VerifyErr; err != nil {
			code := receive.CodeSignatureInvalid
			var ve *receive.VerifyError
			if errors.As(err, &ve) {
				code = ve.Code
			}
			w.Header().Set("WWW-Authenticate", `Signature error="`+code+`"`)
			d.Status = http.StatusUnauthorized
			w.WriteHeader(d.Status)
			r.record(d)
			return
		}
	}
	r.mu.Lock()
	if d.IdempotencyKey != "" {
		d.Duplicate = r.acked[d.IdempotencyKey]
		r.acked[d.IdempotencyKey] = true
	}
	r.mu.Unlock()
	d.Status = http.StatusOK
	w.WriteHeader(d.Status)
	r.record(d)
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
