package main

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// receiver is the buyer endpoint every system delivers to: a loopback
// server that answers after Latency, fails a share of first requests per
// idempotency key with 503 (and Retry-After when set), and records every
// request it receives.
type receiver struct {
	srv *httptest.Server

	Latency    time.Duration
	FailRate   float64 // share of requests answered 503, first attempts only unless FailAll
	FailAll    bool    // fail any request with FailRate, not just first attempts
	RetryAfter int     // seconds, on 503; 0: none
	// HangPath, when set, is an endpoint that answers 504 after Hang, as
	// a buyer's gateway would whose application hangs; FlakyPath one that
	// answers 503 to every request with probability FlakyRate.
	HangPath, FlakyPath string
	Hang                time.Duration
	FlakyRate           float64

	mu    sync.Mutex
	seen  map[string]*received // by idempotency key
	total int
	ok    chan string // keys answered 2xx for the first time
}

// received is what arrived under one idempotency key.
type received struct {
	requests int
	ok       bool
	body     [sha256.Size]byte
	differ   bool      // a request carried different bytes than the first
	afterOK  int       // requests that came after one was answered 2xx: duplicates
	first    time.Time // when the first request arrived
	okAt     time.Time // when the first 2xx was answered
}

func newReceiver() *receiver {
	r := &receiver{seen: make(map[string]*received), ok: make(chan string, 1<<20)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *receiver) URL() string { return r.srv.URL + "/webhook" }
func (r *receiver) Close()      { r.srv.Close() }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var env struct {
		Key string `json:"idempotency_key"`
	}
	if json.Unmarshal(body, &env) != nil || env.Key == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	key := env.Key
	sum := sha256.Sum256(body)
	switch path := req.URL.Path; {
	case path == r.HangPath:
		select {
		case <-time.After(r.Hang):
		case <-req.Context().Done():
		}
		r.count()
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	case path == r.FlakyPath && rand.Float64() < r.FlakyRate:
		r.count()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if r.Latency > 0 {
		time.Sleep(r.Latency)
	}
	r.mu.Lock()
	r.total++
	rec := r.seen[key]
	first := rec == nil
	if first {
		rec = &received{body: sum, first: time.Now()}
		r.seen[key] = rec
	} else if rec.body != sum {
		rec.differ = true
	}
	if rec.ok {
		rec.afterOK++
	}
	rec.requests++
	fail := r.FailRate > 0 && (first || r.FailAll) && rand.Float64() < r.FailRate
	newlyOK := !fail && !rec.ok
	if newlyOK {
		rec.ok, rec.okAt = true, time.Now()
	}
	r.mu.Unlock()
	if fail {
		if r.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(r.RetryAfter))
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if newlyOK {
		r.ok <- key
	}
	w.WriteHeader(http.StatusNoContent)
}

// count counts a request that is not recorded by key.
func (r *receiver) count() {
	r.mu.Lock()
	r.total++
	r.mu.Unlock()
}

// ack records a delivery that made no request (the minimal-SQL ceiling).
func (r *receiver) ack(key string) {
	now := time.Now()
	r.mu.Lock()
	r.total++
	r.seen[key] = &received{requests: 1, ok: true, first: now, okAt: now}
	r.mu.Unlock()
	r.ok <- key
}

// snapshot copies what arrived so far.
func (r *receiver) snapshot() (map[string]received, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]received, len(r.seen))
	for k, v := range r.seen {
		out[k] = *v
	}
	return out, r.total
}

// reset forgets everything, between runs.
func (r *receiver) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = make(map[string]*received)
	r.total = 0
	for {
		select {
		case <-r.ok:
		default:
			return
		}
	}
}
