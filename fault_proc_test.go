package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// The fault model's worker processes. In some Postgres seeds part of the
// delivering is done by copies of the test binary that the model kills
// with SIGKILL (mid-send, mid-commit, mid-sink, as it happens) and
// replaces. A worker process delivers through faultRemote, which hands
// every request and every sink record to the model's faultSender and
// faultSink over loopback HTTP, so the model checks their traffic as it
// checks its own.

// faultWorkerEnv, when set, makes the test binary a worker process (see
// TestMain); its value is the JSON of a faultWorkerSpec.
const faultWorkerEnv = "WEBHOOK_FAULT_WORKER"

// faultWorkerSpec is what a worker process runs with.
type faultWorkerSpec struct {
	DB      string // database URL
	Parent  string // the model's URL
	Proc    int    // this process's number
	Breaker webhook.BreakerPolicy
	// The retry policy's and PostgresConfig's settings the model varies.
	MaxAttempts                               int
	BaseDelay, MaxDelay, Horizon              time.Duration
	Concurrency, ClaimBatch                   int
	PollInterval, LeaseDuration, DrainTimeout time.Duration
}

func newFaultWorkerSpec(db string, cfg webhook.PostgresConfig) faultWorkerSpec {
	return faultWorkerSpec{DB: db, Breaker: cfg.Breaker, MaxAttempts: cfg.Retry.MaxAttempts, BaseDelay: cfg.Retry.BaseDelay,
		MaxDelay: cfg.Retry.MaxDelay, Horizon: cfg.Retry.Horizon, Concurrency: cfg.Concurrency, ClaimBatch: cfg.ClaimBatch,
		PollInterval: cfg.PollInterval, LeaseDuration: cfg.LeaseDuration, DrainTimeout: cfg.DrainTimeout}
}

func (s faultWorkerSpec) encode() string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// runFaultWorker is a worker process's main: it delivers until SIGTERM
// (a graceful stop) or SIGKILL.
func runFaultWorker(spec string) int {
	var s faultWorkerSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, "fault worker:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, s.DB)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault worker:", err)
		return 2
	}
	defer pool.Close()
	remote := &faultRemote{parent: s.Parent, proc: strconv.Itoa(s.Proc)}
	cfg := webhook.PostgresConfig{Breaker: s.Breaker, LogSink: remote, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retry:       webhook.ShortHorizon(webhook.RetryPolicy{MaxAttempts: s.MaxAttempts, BaseDelay: s.BaseDelay, MaxDelay: s.MaxDelay, Horizon: s.Horizon}),
		Concurrency: s.Concurrency, ClaimBatch: s.ClaimBatch, PollOnly: true, PollInterval: s.PollInterval,
		LeaseDuration: s.LeaseDuration, DrainTimeout: s.DrainTimeout, Retention: -1}
	sup, err := webhook.NewPostgresSupervisor(pool, remote, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault worker:", err)
		return 2
	}
	if err := sup.RunWorker(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "fault worker:", err)
		return 1
	}
	return 0
}

// faultRemote is a worker process's Sender and LogSink: both forward to
// the model.
type faultRemote struct {
	parent string
	proc   string
}

// statusReset is how the model answers a request its endpoint resets.
const statusReset = 599

func (f *faultRemote) Send(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.parent+"/send", bytes.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Fault-URL", r.URL)
	req.Header.Set("X-Fault-Key", r.IdempotencyKey)
	req.Header.Set("X-Fault-Attempt", strconv.Itoa(r.Attempt))
	req.Header.Set("X-Fault-Proc", f.proc)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode == statusReset {
		return nil, &netError{syscall.ECONNRESET}
	}
	return &webhook.Response{StatusCode: resp.StatusCode, Header: resp.Header}, nil
}

func (f *faultRemote) RecordAttempt(ctx context.Context, a webhook.Attempt) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.parent+"/sink", bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// faultProcs runs the worker processes of one seed: it serves their
// requests and records, and starts, kills and stops them.
type faultProcs struct {
	t      *testing.T
	spec   faultWorkerSpec
	srv    *httptest.Server
	mu     sync.Mutex
	live   map[int]*exec.Cmd
	killed map[int]bool // processes stopped by SIGKILL
	kills  []time.Time  // when
	next   int
}

func newFaultProcs(t *testing.T, spec faultWorkerSpec, sender *faultSender, sink *faultSink) *faultProcs {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /send", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		attempt, _ := strconv.Atoi(r.Header.Get("X-Fault-Attempt"))
		proc, _ := strconv.Atoi(r.Header.Get("X-Fault-Proc"))
		resp, err := sender.send(r.Context(), &webhook.Request{URL: r.Header.Get("X-Fault-URL"), IdempotencyKey: r.Header.Get("X-Fault-Key"),
			Body: body, Attempt: attempt}, proc)
		switch {
		case err != nil:
			w.WriteHeader(statusReset)
		default:
			for k, v := range resp.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(resp.StatusCode)
		}
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		var a webhook.Attempt
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = sink.RecordAttempt(r.Context(), a)
	})
	p := &faultProcs{t: t, spec: spec, srv: httptest.NewServer(mux), live: map[int]*exec.Cmd{}, killed: map[int]bool{}, next: 1}
	p.spec.Parent = p.srv.URL
	t.Cleanup(func() { p.stop(true); p.srv.Close() })
	return p
}

// start starts one more worker process.
func (p *faultProcs) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	spec := p.spec
	spec.Proc = p.next
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), faultWorkerEnv+"="+spec.encode())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = faultWorkerAttr()
	require.NoError(p.t, cmd.Start())
	p.live[p.next] = cmd
	p.next++
}

// kill stops one live process, chosen by pick, with SIGKILL or (graceful)
// SIGTERM, and waits for it.
func (p *faultProcs) kill(pick int, graceful bool) {
	p.mu.Lock()
	procs := slices.Sorted(maps.Keys(p.live))
	if len(procs) == 0 {
		p.mu.Unlock()
		return
	}
	proc := procs[pick%len(procs)]
	cmd := p.live[proc]
	delete(p.live, proc)
	if !graceful {
		p.killed[proc] = true
		p.kills = append(p.kills, time.Now())
	}
	p.mu.Unlock()
	if graceful {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	} else {
		_ = cmd.Process.Kill()
	}
	_ = cmd.Wait()
}

// stop stops every live process and waits for them.
func (p *faultProcs) stop(kill bool) {
	for {
		p.mu.Lock()
		n := len(p.live)
		p.mu.Unlock()
		if n == 0 {
			return
		}
		p.kill(0, !kill)
	}
}

// wasKilled reports whether process proc was stopped by SIGKILL.
func (p *faultProcs) wasKilled(proc int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed[proc]
}

// killedAround reports whether a process was killed with SIGKILL between
// just before t and a second after it: the window in which a process that
// finished a delivery at t would still be reporting it.
func (p *faultProcs) killedAround(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range p.kills {
		if !k.Before(t.Add(-10*time.Millisecond)) && !k.After(t.Add(time.Second)) {
			return true
		}
	}
	return false
}

// started is how many processes have been started.
func (p *faultProcs) started() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next - 1
}
