package webhook_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/engine"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// The fault model: a seeded random workload and random faults, run on both
// supervisors, checked against the promises the README makes. CI runs a
// few seeds of each; a soak runs many:
//
//	go test -run TestFaultModel -fault.seeds 500 -timeout 60m
//	go test -run 'TestFaultModel/postgres/seed=17' -fault.first 17 -fault.seeds 1   # replay one
//
// The clock is real (retry delays and open timeouts are milliseconds), so a
// seed replays its workload, policies and fault schedule exactly and its
// interleavings approximately.

var (
	faultSeeds = flag.Int("fault.seeds", 6, "fault model: seeds per supervisor")
	faultFirst = flag.Int("fault.first", 1, "fault model: first seed")
)

// faultRegressions are seeds that once found a bug, run on every go test.
var faultRegressions = map[string][]int{
	// An expiry whose claim another worker had taken over (the clock
	// stepped past the lease) was reported as final, then the owner's too.
	"postgres": {535},
}

func TestFaultModel(t *testing.T) {
	t.Parallel()
	for _, sys := range []string{"memory", "postgres"} {
		t.Run(sys, func(t *testing.T) {
			t.Parallel()
			seeds := faultRegressions[sys]
			for seed := *faultFirst; seed < *faultFirst+*faultSeeds; seed++ {
				seeds = append(seeds, seed)
			}
			for _, seed := range seeds {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					runFaultModel(t, sys, uint64(seed))
				})
			}
		})
	}
}

// endpoint behaviours
const (
	epHealthy   = iota // 2xx
	epFlaky            // fails its first k requests per delivery (503, 500, reset, timeout), then 2xx
	epDown             // 503 with Retry-After, always
	epRejecting        // 400: permanent
	epThrottled        // 429 then 2xx
	epKinds
)

type faultEndpoint struct {
	url   string
	kind  int
	k     int           // epFlaky: failures per delivery
	delay time.Duration // how long each answer takes
}

type faultRequest struct {
	key     string
	body    [32]byte
	attempt int
	at      time.Time
	ok      bool
	status  int // 0: reset
	proc    int // the worker process that sent it; 0: the model's own
}

// jumpClock is the system clock plus an offset that only moves forward:
// a clock that jumps (an NTP step, a VM resumed).
type jumpClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *jumpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *jumpClock) TimerAt(deadline time.Time) (<-chan time.Time, func() bool) {
	t := time.NewTimer(deadline.Sub(c.Now()))
	return t.C, t.Stop
}

func (c *jumpClock) jump(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// faultSender answers by endpoint and records every request.
type faultSender struct {
	clock     *jumpClock
	mu        sync.Mutex
	endpoints map[string]*faultEndpoint
	perKey    map[string]int
	requests  []faultRequest
}

func (s *faultSender) Send(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
	return s.send(ctx, r, 0)
}

// send answers a request from worker process proc (0: this process).
func (s *faultSender) send(ctx context.Context, r *webhook.Request, proc int) (*webhook.Response, error) {
	s.mu.Lock()
	ep := s.endpoints[r.URL]
	n := s.perKey[r.IdempotencyKey]
	s.perKey[r.IdempotencyKey] = n + 1
	req := faultRequest{key: r.IdempotencyKey, body: sha256.Sum256(r.Body), attempt: r.Attempt, at: s.clock.Now(), proc: proc}
	s.mu.Unlock()
	answer := func(status int, h http.Header, err error) (*webhook.Response, error) {
		select {
		case <-time.After(ep.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		req.ok, req.status = err == nil && status < 300, status
		s.requests = append(s.requests, req)
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return &webhook.Response{StatusCode: status, Header: h}, nil
	}
	switch ep.kind {
	case epFlaky:
		if n < ep.k {
			switch n % 3 {
			case 0:
				return answer(503, nil, nil)
			case 1:
				return answer(0, nil, &netError{syscall.ECONNRESET})
			default:
				return answer(500, nil, nil)
			}
		}
	case epDown:
		return answer(503, http.Header{"Retry-After": {"1"}}, nil)
	case epRejecting:
		return answer(400, nil, nil)
	case epThrottled:
		if n == 0 {
			return answer(429, http.Header{"Retry-After": {"1"}}, nil)
		}
	}
	return answer(204, nil, nil)
}

type netError struct{ err error }

func (e *netError) Error() string { return "read tcp: " + e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// faultSink checks, as records arrive, that one delivery's records never
// overlap and come in attempt order.
type faultSink struct {
	mu       sync.Mutex
	inCall   map[string]bool
	last     map[string]webhook.Attempt
	records  map[string][]webhook.Attempt
	problems []string
}

func (s *faultSink) RecordAttempt(ctx context.Context, a webhook.Attempt) error {
	if a.DeliveryID == "" {
		return nil // a refusal at acceptance
	}
	s.mu.Lock()
	if s.inCall[a.DeliveryID] {
		s.problems = append(s.problems, fmt.Sprintf("delivery %s: sink calls overlap", a.DeliveryID))
	}
	if prev, ok := s.last[a.DeliveryID]; ok {
		if a.AttemptNumber != 0 && a.AttemptNumber < prev.AttemptNumber {
			s.problems = append(s.problems, fmt.Sprintf("delivery %s: attempt %d reported after attempt %d", a.DeliveryID, a.AttemptNumber, prev.AttemptNumber))
		}
		if !prev.WillRetry {
			s.problems = append(s.problems, fmt.Sprintf("delivery %s: a record after the final one (%+v after %+v)", a.DeliveryID, a, prev))
		}
	}
	s.inCall[a.DeliveryID] = true
	s.mu.Unlock()
	time.Sleep(time.Duration(len(a.DeliveryID)%3) * 100 * time.Microsecond) // a sink that takes a little time
	s.mu.Lock()
	s.inCall[a.DeliveryID] = false
	s.last[a.DeliveryID] = a
	s.records[a.DeliveryID] = append(s.records[a.DeliveryID], a)
	s.mu.Unlock()
	return nil
}

// flakyPool injects database faults: statements that fail before they
// reach the server, and statements whose acknowledgement is lost after
// they committed.
type flakyPool struct {
	*pgxpool.Pool
	mu       sync.Mutex
	rng      *rand.Rand
	fail     float64 // share of statements refused before sending
	lose     float64 // share of statements whose acknowledgement is lost
	disabled bool
}

// errInjected is a failure before anything reached the server, as pgx
// reports a refused connection: safe to retry.
var errInjected error = injectedError{}

type injectedError struct{}

func (injectedError) Error() string     { return "dial tcp: connection refused (injected)" }
func (injectedError) SafeToRetry() bool { return true }

func (p *flakyPool) roll() (fail, lose bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disabled {
		return false, false
	}
	r := p.rng.Float64()
	return r < p.fail, r >= p.fail && r < p.fail+p.lose
}

func (p *flakyPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	fail, lose := p.roll()
	switch {
	case fail:
		return pgconn.CommandTag{}, errInjected
	case lose:
		_, err := p.Pool.Exec(ctx, sql, args...)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		return pgconn.CommandTag{}, errAckLost
	}
	return p.Pool.Exec(ctx, sql, args...)
}

func (p *flakyPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	fail, lose := p.roll()
	switch {
	case fail:
		return nil, errInjected
	case lose:
		return nil, runLosingAck(ctx, p.Pool, sql, args)
	}
	return p.Pool.Query(ctx, sql, args...)
}

func (p *flakyPool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := p.Query(ctx, sql, args...)
	return mockRow{rows: rows, err: err}
}

// cutProxy forwards TCP connections to Postgres and cuts them all on
// demand, mid-statement or mid-commit as it happens.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close(); c.Close() }()
			go func() { _, _ = io.Copy(c, s); s.Close(); c.Close() }()
		}
	}()
	return p
}

// cut closes every connection through the proxy.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func runFaultModel(t *testing.T, sys string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	pick := func(lo, hi int) int { return lo + rng.IntN(hi-lo+1) }

	// Endpoints, possibly sharing breaker keys.
	clock := &jumpClock{}
	sender := &faultSender{clock: clock, endpoints: map[string]*faultEndpoint{}, perKey: map[string]int{}}
	var eps []*faultEndpoint
	for i := range pick(1, 4) {
		ep := &faultEndpoint{url: fmt.Sprintf("https://buyer%d.example/hook", i), kind: rng.IntN(epKinds),
			k: pick(1, 4), delay: time.Duration(rng.IntN(3)) * time.Millisecond}
		eps = append(eps, ep)
		sender.endpoints[ep.url] = ep
	}
	retry := webhook.RetryPolicy{MaxAttempts: pick(1, 5), BaseDelay: time.Millisecond, MaxDelay: time.Duration(pick(2, 15)) * time.Millisecond}
	if rng.IntN(3) == 0 {
		retry.Horizon = time.Duration(pick(20, 200)) * time.Millisecond
	}
	retry = webhook.ShortHorizon(retry) // 0 still means the default, a day: none within a run
	breaker := webhook.BreakerPolicy{FailureThreshold: pick(1, 4), SuccessThreshold: pick(1, 2), HalfOpenProbes: pick(1, 2),
		OpenTimeout: time.Duration(pick(5, 40)) * time.Millisecond}
	if rng.IntN(4) == 0 {
		breaker.OpenAction = webhook.OpenDrop
	}
	concurrency := pick(1, 6)
	sink := &faultSink{inCall: map[string]bool{}, last: map[string]webhook.Attempt{}, records: map[string][]webhook.Attempt{}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Faults added since the first seeds ran draw from their own stream,
	// so that every older seed still replays its workload: worker
	// processes killed with SIGKILL, and Postgres restarted.
	extra := rand.New(rand.NewPCG(seed, 0xe47a))
	withProcs := sys == "postgres" && extra.IntN(3) == 0
	withRestart := sys == "postgres" && extra.IntN(4) == 0
	if sys == "memory" && extra.IntN(2) == 0 {
		concurrency = 1 // one attempt at a time: the breaker check is exact
	}
	plan := fmt.Sprintf("seed %d on %s: endpoints %+v, retry %+v, breaker %+v, concurrency %d, worker processes %v, Postgres restart %v",
		seed, sys, derefAll(eps), retry, breaker, concurrency, withProcs, withRestart)
	t.Log(plan)

	// One or two supervisors on one queue.
	var sups []webhook.Supervisor
	var lookup func(ctx context.Context, id string) (webhook.Delivery, error)
	var mem *webhook.MemorySupervisor
	var pool *flakyPool
	var proxy *cutProxy
	var countRows func() int        // Postgres: the deliveries the database holds
	var dump func(id string) string // Postgres: a delivery's row and the gates, for a failure's report
	var maxLost func() int          // Postgres: the most lost attempts of any delivery
	var procs *faultProcs           // worker processes, if any
	var restart func() error        // restarts Postgres, if the seed does
	switch sys {
	case "memory":
		s, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{Retry: retry, Breaker: breaker, LogSink: sink, Clock: clock,
			Logger: logger, Concurrency: concurrency, DrainTimeout: time.Duration(pick(1, 20)) * time.Millisecond})
		require.NoError(t, err, plan)
		sups, mem = append(sups, s), s
		lookup = s.Delivery
	default:
		var direct *pgxpool.Pool
		if withRestart {
			// A private cluster: the one other tests share must stay up.
			cluster, err := pgtest.StartCluster("fsync=off")
			require.NoError(t, err, plan)
			t.Cleanup(func() { _ = cluster.Stop() })
			url, err := cluster.CreateDatabase("fault")
			require.NoError(t, err)
			direct, err = pgxpool.New(context.Background(), url)
			require.NoError(t, err)
			t.Cleanup(direct.Close)
			restart = cluster.Restart
		} else {
			direct = pgtest.New(t)
		}
		db, dbURL := direct, direct.Config().ConnString()
		if rng.IntN(3) == 0 {
			// Through a proxy that cuts every connection now and then.
			cfg := direct.Config().Copy()
			proxy = newCutProxy(t, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port))
			cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", uint16(proxy.ln.Addr().(*net.TCPAddr).Port)
			var err error
			db, err = pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(db.Close)
			u, err := url.Parse(dbURL)
			require.NoError(t, err)
			u.Host = proxy.ln.Addr().String()
			dbURL = u.String()
		}
		pool = &flakyPool{Pool: db, rng: rand.New(rand.NewPCG(seed, 0xdb)), fail: 0.01 * float64(rng.IntN(3)), lose: 0.01 * float64(rng.IntN(3))}
		dump = func(id string) string {
			rows, err := direct.Query(context.Background(), `SELECT to_jsonb(d) - 'body' FROM adcp_webhook_deliveries d WHERE id = $1
				UNION ALL SELECT to_jsonb(b) FROM adcp_webhook_breakers b`, id)
			if err != nil {
				return err.Error()
			}
			docs, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err.Error()
			}
			return strings.Join(docs, "\n")
		}
		maxLost = func() int {
			var n int
			require.NoError(t, direct.QueryRow(context.Background(), `SELECT coalesce(max(lost_attempts), 0) FROM adcp_webhook_deliveries`).Scan(&n))
			return n
		}
		countRows = func() int {
			var n int
			require.NoError(t, direct.QueryRow(context.Background(), `SELECT count(*) FROM adcp_webhook_deliveries`).Scan(&n))
			return n
		}
		pc := webhook.PostgresConfig{Retry: retry, Breaker: breaker, LogSink: sink, Clock: clock, Logger: logger, Concurrency: concurrency,
			ClaimBatch: pick(1, 8), PollOnly: true, PollInterval: 20 * time.Millisecond, LeaseDuration: 2 * time.Second,
			DrainTimeout: time.Duration(pick(1, 20)) * time.Millisecond, Retention: -1}
		for range pick(1, 2) {
			s, err := webhook.NewPostgresSupervisor(pool, sender, pc)
			require.NoError(t, err, plan)
			sups = append(sups, s)
		}
		pool.mu.Lock()
		pool.disabled = true
		pool.mu.Unlock()
		require.NoError(t, sups[0].(*webhook.PostgresSupervisor).CreateSchema(context.Background()), plan)
		pool.mu.Lock()
		pool.disabled = false
		pool.mu.Unlock()
		if withProcs {
			pc := pc
			pc.Concurrency = 1 + extra.IntN(4)
			procs = newFaultProcs(t, newFaultWorkerSpec(dbURL, pc), sender, sink)
		}
		// Lookups go around the faults.
		reader, err := webhook.NewPostgresSupervisor(direct, sender, webhook.PostgresConfig{PollOnly: true})
		require.NoError(t, err, plan)
		lookup = reader.Delivery
	}

	// Workers that come and go: each supervisor runs RunWorker calls of
	// random lifetimes while the workload arrives.
	ctx, cancel := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	for i, s := range sups {
		wr := rand.New(rand.NewPCG(seed, uint64(i)))
		workers.Go(func() {
			for ctx.Err() == nil {
				life, stop := context.WithTimeout(ctx, time.Duration(5+wr.IntN(60))*time.Millisecond)
				_ = s.RunWorker(life)
				stop()
			}
		})
	}

	// The clock jumps forward now and then: by a few milliseconds (timers
	// fire late, horizons and open timeouts pass early) and, rarely, past
	// a lease (Postgres claims in-flight deliveries again: duplicates, and
	// lost attempts).
	jumps := rand.New(rand.NewPCG(seed, 0xc10c))
	bigJumps := rng.IntN(4) == 0
	workers.Go(func() {
		for ctx.Err() == nil && procs == nil { // worker processes read the system clock
			time.Sleep(time.Duration(1+jumps.IntN(10)) * time.Millisecond)
			d := time.Duration(jumps.IntN(20)) * time.Millisecond
			if bigJumps && jumps.IntN(50) == 0 {
				d = 3 * time.Second
			}
			clock.jump(d)
		}
	})

	if procs != nil {
		// Worker processes, one killed (mostly with SIGKILL) and replaced
		// now and then.
		kills := rand.New(rand.NewPCG(seed, 0x4111))
		for range 1 + kills.IntN(2) {
			procs.start()
		}
		workers.Go(func() {
			for engine.Sleep(ctx, time.Duration(20+kills.IntN(150))*time.Millisecond) {
				procs.kill(kills.IntN(8), kills.IntN(4) == 0)
				procs.start()
			}
			procs.stop(kills.IntN(2) == 0)
		})
	}
	if restart != nil {
		restarts := rand.New(rand.NewPCG(seed, 0x4e57))
		workers.Go(func() {
			if engine.Sleep(ctx, time.Duration(10+restarts.IntN(150))*time.Millisecond) {
				require.NoError(t, restart())
			}
		})
	}
	if proxy != nil {
		cuts := rand.New(rand.NewPCG(seed, 0xc07))
		workers.Go(func() {
			for engine.Sleep(ctx, time.Duration(30+cuts.IntN(120))*time.Millisecond) {
				proxy.cut()
			}
		})
	}

	// The workload.
	type accepted struct {
		receipt webhook.Receipt
		seqKey  string
		ep      *faultEndpoint
	}
	var got []accepted
	unknown := 0
	n := pick(10, 50)
	for i := range n {
		ep := eps[rng.IntN(len(eps))]
		w := webhook.MCPWebhook{URL: ep.url, OperationID: fmt.Sprint("op_", i), TaskID: fmt.Sprint("task_", i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Result: map[string]any{"i": i}}
		if k := rng.IntN(3); k > 0 {
			w.SequenceKey = fmt.Sprint("seq-", k)
		}
		if rng.IntN(3) == 0 {
			w.BreakerKey = "shared"
		}
		s := sups[rng.IntN(len(sups))]
		r, err := s.SendMCP(context.Background(), w)
		switch {
		case errors.Is(err, webhook.ErrCircuitOpen):
		case errors.Is(err, webhook.ErrOutcomeUnknown):
			unknown++
		case err != nil && pool != nil && !errors.Is(err, webhook.ErrInvalidWebhook):
			// Database trouble: not accepted (checked below against the
			// rows the database holds).
		default:
			require.NoError(t, err, plan)
			got = append(got, accepted{r, w.SequenceKey, ep})
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
		}
	}

	// Let the churn run a little, then stop it and run steady workers
	// (with the database faults off) until every delivery is final.
	time.Sleep(time.Duration(pick(10, 100)) * time.Millisecond)
	if procs != nil || restart != nil {
		time.Sleep(time.Duration(200+extra.IntN(400)) * time.Millisecond) // time for kills and a restart to land
	}
	cancel()
	workers.Wait()
	if pool != nil {
		pool.mu.Lock()
		pool.disabled = true
		pool.mu.Unlock()
	}
	finalCtx, stopFinal := context.WithCancel(context.Background())
	var final sync.WaitGroup
	for _, s := range sups {
		final.Go(func() { _ = s.RunWorker(finalCtx) })
	}
	deadline := time.Now().Add(guard)
	if procs != nil {
		// A process killed between a retry's completion and its report
		// leaves the delivery held for SinkTimeout and a statement's
		// timeout (5 s + 15 s) before another worker may take it.
		deadline = deadline.Add(20 * time.Second)
	}
	ds := map[string]webhook.Delivery{}
	for _, a := range got {
		for {
			d, err := lookup(context.Background(), a.receipt.ID)
			require.NoError(t, err, plan)
			if d.State == webhook.StateDelivered || d.State == webhook.StateFailed {
				ds[a.receipt.ID] = d
				break
			}
			if time.Now().After(deadline) {
				stopFinal()
				final.Wait()
				var state string
				if dump != nil {
					state = dump(a.receipt.ID)
				}
				d.Body = nil
				t.Fatalf("%s\ndelivery %s never finished: %+v\nclock %v\n%s", plan, a.receipt.ID, d, clock.Now(), state)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	// A delivery's final record may be missing when the process that
	// finished it was killed between its commit and its report, as the
	// README's crash window says: the process that sent its last request,
	// or, for a delivery that failed without a request of its own (its
	// horizon passed, its attempts were lost), one killed right after it
	// finished.
	reportLost := func(key string, finished time.Time) bool {
		if procs == nil {
			return false
		}
		if procs.killedAround(finished) {
			return true
		}
		sender.mu.Lock()
		defer sender.mu.Unlock()
		last := faultRequest{}
		for _, r := range sender.requests {
			if r.key == key && !r.at.Before(last.at) {
				last = r
			}
		}
		return last.proc != 0 && procs.wasKilled(last.proc)
	}
	// Give the sinks of the last attempts time to finish, then stop.
	sinkDone := time.Now().Add(guard)
	for {
		missing := 0
		for _, a := range got {
			sink.mu.Lock()
			l, ok := sink.last[a.receipt.ID]
			sink.mu.Unlock()
			if (!ok || l.WillRetry) && !reportLost(a.receipt.IdempotencyKey, ds[a.receipt.ID].FinishedAt) {
				missing++
			}
		}
		if missing == 0 || time.Now().After(sinkDone) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	stopFinal()
	final.Wait()
	// Every RunWorker has returned: nothing is sent any more.
	sender.mu.Lock()
	startedAtStop := sumCounts(sender.perKey)
	sender.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	sender.mu.Lock()
	startedAfter := sumCounts(sender.perKey) - startedAtStop
	sender.mu.Unlock()

	// The promises.
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	sender.mu.Lock()
	byKey := map[string][]faultRequest{}
	for _, r := range sender.requests {
		byKey[r.key] = append(byKey[r.key], r)
	}
	sender.mu.Unlock()
	sink.mu.Lock()
	problems = append(problems, sink.problems...)
	sink.mu.Unlock()
	seqs := map[string][]int64{}
	for _, a := range got {
		d := ds[a.receipt.ID]
		reqs := byKey[a.receipt.IdempotencyKey]
		for _, r := range reqs {
			if r.body != reqs[0].body {
				fail("delivery %s: attempts sent different bytes under one key", d.ID)
			}
		}
		if d.State == webhook.StateDelivered && !anyOK(reqs) {
			fail("delivery %s is delivered but no request was answered 2xx", d.ID)
		}
		if d.State == webhook.StateFailed && d.LastError == "" {
			fail("delivery %s failed with no reason", d.ID)
		}
		if d.State != webhook.StateDelivered && a.ep.kind == epHealthy && d.BreakerKey == d.URL && retry.Horizon == 0 &&
			!strings.Contains(d.LastError, "attempts were lost") {
			fail("delivery %s to a healthy endpoint with a breaker of its own ended %s: %s", d.ID, d.State, d.LastError)
		}
		if d.Attempts > retry.MaxAttempts {
			fail("delivery %s charged %d attempts, MaxAttempts is %d", d.ID, d.Attempts, retry.MaxAttempts)
		}
		if most := highestAttempt(reqs); most > retry.MaxAttempts {
			fail("delivery %s: a request carried attempt number %d, MaxAttempts is %d", d.ID, most, retry.MaxAttempts)
		}
		for _, r := range reqs {
			if !d.FinishedAt.IsZero() && r.at.After(d.FinishedAt.Add(time.Second)) {
				fail("delivery %s: a request at %v, after it finished at %v", d.ID, r.at, d.FinishedAt)
			}
		}
		if retry.Horizon > 0 && len(reqs) > 0 {
			first := reqs[0].at
			for _, r := range reqs {
				// Each attempt starts within the horizon (plus the time a
				// claim and a send take, and a clock jump between them).
				if r.at.Sub(first) > retry.Horizon+4*time.Second {
					fail("delivery %s: a request %v after its first, past its horizon %v", d.ID, r.at.Sub(first), retry.Horizon)
				}
			}
		}
		sink.mu.Lock()
		recs := sink.records[a.receipt.ID]
		sink.mu.Unlock()
		if (len(recs) == 0 || recs[len(recs)-1].WillRetry) && !reportLost(a.receipt.IdempotencyKey, d.FinishedAt) {
			fail("delivery %s (%s, %d attempts, %q, %d requests): the sink never got its final record (%d records)", d.ID, d.State, d.Attempts, d.LastError, len(reqs), len(recs))
		}
		if a.seqKey != "" {
			seqs[a.seqKey] = append(seqs[a.seqKey], a.receipt.Sequence)
		}
	}
	// The breaker gates every attempt: to a key whose endpoints are all
	// down, after FailureThreshold failures and the attempts already in
	// flight then, only HalfOpenProbes probes go out per half-open period,
	// and periods are at least OpenTimeout apart.
	down := map[string]bool{}
	byBreaker := map[string][]faultRequest{}
	for _, a := range got {
		key := ds[a.receipt.ID].BreakerKey
		if _, seen := down[key]; !seen {
			down[key] = true
		}
		down[key] = down[key] && a.ep.kind == epDown
		byBreaker[key] = append(byBreaker[key], byKey[a.receipt.IdempotencyKey]...)
	}
	for key, reqs := range byBreaker {
		if !down[key] || len(reqs) == 0 {
			continue
		}
		first, last := reqs[0].at, reqs[0].at
		for _, r := range reqs {
			first, last = minTime(first, r.at), maxTime(last, r.at)
		}
		periods := int(last.Sub(first)/breaker.OpenTimeout) + 1
		inFlight := concurrency * len(sups)
		if procs != nil {
			inFlight += procs.spec.Concurrency * procs.started()
		}
		bound := breaker.FailureThreshold + inFlight + breaker.HalfOpenProbes*periods
		if len(reqs) > bound {
			fail("breaker %s: %d requests to an endpoint that is down over %v; the breaker allows at most %d", key, len(reqs), last.Sub(first), bound)
		}
	}
	if mem != nil && concurrency == 1 {
		problems = append(problems, checkBreakersExactly(mem, breaker, sender, sink, ds)...)
	}
	if unknown == 0 {
		for key, ns := range seqs {
			if !contiguous(ns) {
				fail("sequence %s is not 1..n: %v", key, ns)
			}
		}
	}
	if startedAfter > 0 {
		fail("%d requests started after every RunWorker had returned", startedAfter)
	}
	if maxLost != nil {
		if most := maxLost(); most > webhook.MaxLostAttemptsDefault {
			fail("a delivery has %d lost attempts; MaxLostAttempts is %d", most, webhook.MaxLostAttemptsDefault)
		}
	}
	if countRows != nil {
		// An error other than ErrOutcomeUnknown means nothing was accepted.
		if rows := countRows(); rows < len(got) || rows > len(got)+unknown {
			fail("the database holds %d deliveries: %d were accepted and %d had an unknown outcome", rows, len(got), unknown)
		}
	}
	if procs != nil {
		sender.mu.Lock()
		fromProcs, all := 0, len(sender.requests)
		for _, r := range sender.requests {
			if r.proc != 0 {
				fromProcs++
			}
		}
		sender.mu.Unlock()
		procs.mu.Lock()
		killed := len(procs.killed)
		procs.mu.Unlock()
		t.Logf("%d worker processes, %d killed with SIGKILL; %d of %d requests answered were theirs", procs.started(), killed, fromProcs, all)
	}
	if maxLost != nil {
		t.Logf("most lost attempts of a delivery: %d", maxLost())
	}
	if len(problems) > 0 {
		t.Fatalf("%s\n%d accepted; promises broken:\n- %s", plan, len(got), strings.Join(problems, "\n- "))
	}
}

// checkBreakersExactly replays, on a model of the breaker, the results of
// a memory supervisor that made one attempt at a time, and compares each
// breaker's state and consecutive failures with the model's. One attempt
// at a time, results reach the breaker in the order the endpoints
// answered them (faultSender.requests), and a failure that opened it left
// no attempt in flight, so whatever happens while it is not closed is a
// half-open probe.
func checkBreakersExactly(mem *webhook.MemorySupervisor, p webhook.BreakerPolicy, sender *faultSender, sink *faultSink, ds map[string]webhook.Delivery) []string {
	// A reset that came back as the worker stopped is not the endpoint's
	// fault: the supervisor records it as cancelled and does not count it.
	discounted := map[string]int{} // idempotency key and attempt number
	sink.mu.Lock()
	for _, recs := range sink.records {
		for _, r := range recs {
			if strings.HasPrefix(r.Error, "cancelled:") && strings.Contains(r.Error, syscall.ECONNRESET.Error()) {
				discounted[fmt.Sprint(r.IdempotencyKey, "/", r.AttemptNumber)]++
			}
		}
	}
	sink.mu.Unlock()
	breakerOf := map[string]string{}
	for _, d := range ds {
		breakerOf[d.IdempotencyKey] = d.BreakerKey
	}
	type modelGate struct {
		open                bool // open or half-open
		failures, successes int
	}
	model := map[string]*modelGate{}
	sender.mu.Lock()
	for _, r := range sender.requests {
		if k := fmt.Sprint(r.key, "/", r.attempt); r.status == 0 && discounted[k] > 0 {
			discounted[k]--
			continue
		}
		g := model[breakerOf[r.key]]
		if g == nil {
			g = &modelGate{}
			model[breakerOf[r.key]] = g
		}
		switch {
		case r.ok && !g.open:
			g.failures = 0
		case r.ok:
			if g.successes++; g.successes >= p.SuccessThreshold {
				*g = modelGate{}
			}
		case r.status == 0 || r.status >= 500: // 429 and 4xx leave the breaker alone
			if g.failures++; g.open || g.failures >= p.FailureThreshold {
				*g = modelGate{open: true}
			}
		}
	}
	sender.mu.Unlock()
	var problems []string
	for key, g := range model {
		st, _ := mem.Breaker(context.Background(), key)
		closed, failures := st == webhook.BreakerClosed, webhook.BreakerFailures(mem, key)
		if closed == g.open || closed && failures != g.failures {
			problems = append(problems, fmt.Sprintf("breaker %s: closed %v with %d failures; the model says closed %v with %d",
				key, closed, failures, !g.open, g.failures))
		}
	}
	return problems
}

func derefAll(eps []*faultEndpoint) []faultEndpoint {
	out := make([]faultEndpoint, len(eps))
	for i, e := range eps {
		out[i] = *e
	}
	return out
}

func anyOK(reqs []faultRequest) bool {
	for _, r := range reqs {
		if r.ok {
			return true
		}
	}
	return false
}

func highestAttempt(reqs []faultRequest) int {
	most := 0
	for _, r := range reqs {
		most = max(most, r.attempt)
	}
	return most
}

// contiguous reports whether ns, in any order, are 1..len(ns). Numbers
// of a sequence drawn by refused webhooks leave no gap: refusals draw none.
func contiguous(ns []int64) bool {
	seen := make(map[int64]bool, len(ns))
	for _, n := range ns {
		if n < 1 || n > int64(len(ns)) || seen[n] {
			return false
		}
		seen[n] = true
	}
	return true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}
