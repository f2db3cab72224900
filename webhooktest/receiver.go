// Package webhooktest provides a webhook receiver for tests, in the spirit
// of net/http/httptest: a loopback buyer endpoint that verifies signatures,
// records every delivery, follows the AdCP 3.2 receiver contract for
// idempotency keys, and fails on demand.
//
// The contract, per key: the first delivery owns the key, bound to the
// SHA-256 of its body's RFC 8785 (JCS) canonical form; an identical
// delivery is answered 503 while the owner is still being handled (see
// [Receiver.HoldNext]) and 200 once it was acknowledged; a delivery with a
// changed canonical payload is answered 409 and not dispatched. A body
// that is not strict JSON is answered 400.
package webhooktest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/adcpkit/webhook/internal/ident"
	"github.com/adcpkit/webhook/internal/jcs"
	"github.com/adcpkit/webhook/internal/strictjson"
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
	// Registration, when set, is what an activation challenge must match
	// ([receive.AnswerChallenge]); a challenge that does not is answered
	// 403. When nil, any well-formed challenge is echoed.
	Registration *receive.Registration
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
	// Duplicate reports that an earlier request with the same key and
	// canonical payload was already acknowledged with 2xx.
	Duplicate bool
	// InProgress reports that an identical delivery was still being
	// handled: it was answered 503.
	InProgress bool
	// Challenge reports an activation challenge (answered with its echo
	// unless it failed verification or the Registration).
	Challenge bool
	// Conflict reports that the key was bound to another canonical
	// payload: it was answered 409.
	Conflict bool
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

	srv          *httptest.Server
	verifier     *receive.Verifier
	registration *receive.Registration
	maxBody      int64

	mu         sync.Mutex
	faults     []Fault
	deliveries []Delivery
	keys       map[string]*keyState
	hold       *Hold   // set by HoldNext: the next new key waits for it
	holds      []*Hold // every hold, released by Close
	changed    chan struct{}
}

// keyState is one idempotency key's binding.
type keyState struct {
	fingerprint [sha256.Size]byte // of the JCS canonical body
	done        bool              // acknowledged
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

// NewReceiver starts a receiver. Call Close when done.
func NewReceiver(cfg Config) *Receiver {
	r := &Receiver{verifier: cfg.Verifier, registration: cfg.Registration, maxBody: cfg.MaxBody, keys: map[string]*keyState{}, changed: make(chan struct{})}
	if r.maxBody <= 0 {
		r.maxBody = receive.MaxBodyBytes
	}
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
	if receive.IsChallenge(body) {
		d.Challenge = true
		answer, err := echoChallenge(body)
		if r.registration != nil {
			answer, err = receive.AnswerChallenge(body, *r.registration)
		}
		if err != nil {
			d.Status = http.StatusForbidden
			w.WriteHeader(d.Status)
			r.record(d)
			return
		}
		d.Status = http.StatusOK
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(d.Status)
		_, _ = w.Write(answer)
		r.record(d)
		return
	}
	if strictjson.Check(body) != nil {
		d.Status = http.StatusBadRequest
		w.WriteHeader(d.Status)
		r.record(d)
		return
	}
	fp, err := jcs.Sum256(body)
	if err != nil {
		d.Status = http.StatusBadRequest
		w.WriteHeader(d.Status)
		r.record(d)
		return
	}
	r.mu.Lock()
	var hold *Hold
	st := r.keys[d.IdempotencyKey]
	switch {
	case d.IdempotencyKey == "":
		d.Status = http.StatusOK
	case st == nil:
		st = &keyState{fingerprint: fp}
		r.keys[d.IdempotencyKey] = st
		hold, r.hold = r.hold, nil
		d.Status = http.StatusOK
	case st.fingerprint != fp:
		d.Conflict, d.Status = true, http.StatusConflict
	case !st.done:
		d.InProgress, d.Status = true, http.StatusServiceUnavailable
	default:
		d.Duplicate, d.Status = true, http.StatusOK
	}
	r.mu.Unlock()
	if hold != nil {
		close(hold.held)
		<-hold.release // the owner is processing; it finishes even if the sender gave up
	}
	if st != nil && d.Status == http.StatusOK && !d.Duplicate {
		r.mu.Lock()
		st.done = true
		r.mu.Unlock()
	}
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

// echoChallenge answers any well-formed challenge, for a receiver given no
// Registration to check it against.
func echoChallenge(body []byte) ([]byte, error) {
	var c struct {
		Challenge string `json:"challenge"`
	}
	if err := json.Unmarshal(body, &c); err != nil || !ident.Valid(c.Challenge, 32, 255) {
		return nil, errors.New("webhooktest: malformed challenge")
	}
	return json.Marshal(c)
}
