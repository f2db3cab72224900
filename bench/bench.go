package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// pollIdle is how long the ceilings' loops wait when they find nothing.
const pollIdle = time.Millisecond

// workers is the number of deliveries every system runs at once, unless a
// scenario says otherwise.
const workers = 16

// poolConns is every system's database pool size: the same Postgres, the
// same connections, whatever each does with them.
const poolConns = 16

// scenario is one workload.
type scenario struct {
	name       string
	n          int           // webhooks
	latency    time.Duration // receiver latency
	failRate   float64       // share of first attempts answered 503
	retryAfter int           // Retry-After seconds on those 503s
	rate       int           // steady arrivals per second; 0: a burst, all enqueued first
	workers    int           // deliveries in flight per system; 0: workers
	// fanout, when set, makes acceptance part of the run: 16 producers
	// each accept events of fanout webhooks, an event a call to the
	// system's bulk insert (the library's SendPreparedBatch, River's
	// InsertMany), or for 1 a webhook a call to its single insert, while
	// the system delivers.
	fanout int
	// endpoints, when set, spreads the webhooks over this many receiver
	// URLs (paths), the i-th webhook of an event to the i-th.
	endpoints int
	// noisy, with endpoints, makes two of them bad neighbours: the
	// second to last hangs for the library's default send timeout (10 s)
	// and answers 504, the last answers 503 to half of all requests. The
	// others are measured: the run lasts until they have every webhook.
	noisy   bool
	breaker webhook.BreakerPolicy
	// defaultLimit runs the library's supervisors with their default
	// EndpointConcurrency (half the workers). Otherwise they run with
	// NoEndpointLimit, as the other systems have none: the scenarios with a
	// single endpoint measure how fast a system delivers to it.
	defaultLimit bool
	// endpointLimit, when set (-endpoint-limit), overrides defaultLimit.
	endpointLimit int
	only          []string // systems that run it, when not all
	prepare       func(ctx context.Context, s system, e env) error
}

// result is one scenario × system.
type result struct {
	Scenario      string  `json:"scenario"`
	System        string  `json:"system"`
	Run           int     `json:"run"` // 1 to -repeat
	N             int     `json:"webhooks"`
	PerSecond     float64 `json:"deliveries_per_second"`
	AcceptPerSec  float64 `json:"accepted_per_second,omitempty"` // fan-out runs: webhooks accepted per second
	P50, P99      float64 `json:"-"`
	P999          float64 `json:"-"`
	FirstP50      float64 `json:"first_attempt_p50_ms,omitempty"`
	FirstP99      float64 `json:"first_attempt_p99_ms,omitempty"`
	FirstP999     float64 `json:"first_attempt_p999_ms,omitempty"`
	DeliveredP50  float64 `json:"delivered_p50_ms,omitempty"`
	DeliveredP99  float64 `json:"delivered_p99_ms,omitempty"`
	DeliveredP999 float64 `json:"delivered_p999_ms,omitempty"`
	Requests      int     `json:"requests"`
	StmtsPerDeliv float64 `json:"statements_per_delivery"`
	TxPerDelivery float64 `json:"transactions_per_delivery"`
	RSSMB         float64 `json:"rss_mb"`
	// CPUPerDeliv is the whole machine's busy CPU time (every process:
	// Postgres, the harness, the receiver) per delivery, in µs, on Linux.
	CPUPerDeliv float64 `json:"cpu_us_per_delivery"`
	Err         string  `json:"error,omitempty"`
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "small runs (the backlog with 50,000 + 50,000 rows): finishes in under two minutes")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	only := fs.String("systems", "", "comma-separated system names to run (default: all)")
	which := fs.String("scenarios", "", "comma-separated scenario names to run (default: all)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the harness process to this file")
	n := fs.Int("n", 0, "run one custom scenario of this many webhooks instead, with the receiver flags below")
	latency := fs.Duration("latency", 0, "custom scenario: the receiver's latency")
	failRate := fs.Float64("fail", 0, "custom scenario: share of first attempts the receiver answers 503")
	retryAfter := fs.Int("retry-after", 0, "custom scenario: Retry-After seconds on those 503s")
	rate := fs.Int("rate", 0, "custom scenario: arrivals per second (0: all enqueued first)")
	endpointLimit := fs.Int("endpoint-limit", 0, "the library supervisors' EndpointConcurrency in every scenario (-1: NoEndpointLimit; 0: each scenario's own: the default with many endpoints, NoEndpointLimit with one)")
	topStatements = fs.Int("statements", 0, "print each run's N most time-consuming statements from pg_stat_statements (calls, total and mean ms, rows) to stderr")
	repeat := fs.Int("repeat", 1, "run every scenario this many times, the systems interleaved run by run (their order rotating), and report each figure's median and range and each ratio as the median of the per-run ratios")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage:\n  go run . [flags]          the benchmark scenarios, a table\n"+
			"  go run . chaos [flags]    the kill -9 soak: nothing may be lost (go run . chaos -help)\n\nflags:\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		if fs.Arg(0) == "help" {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return nil
		}
		fs.Usage()
		return fmt.Errorf("unknown command %q: the commands are chaos and help; flags come before nothing else", fs.Arg(0))
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	// full and quick sizes
	size := func(full, small int) int {
		if *quick {
			return small
		}
		return full
	}
	scenarios := []scenario{
		{name: "burst", n: size(20000, 5000)},
		// Every system may run 1,024 sends at once over the same 16
		// database connections; a design that holds a connection across
		// HTTP gets only as many sends as connections.
		{name: "slow receiver (50 ms)", n: size(20000, 2000), latency: 50 * time.Millisecond, workers: 1024},
		{name: "steady 500/s", n: size(10000, 1500), rate: 500},
		// Account events, each to 1,000 subscribers' endpoints, from 16
		// request handlers at once, accepted while the system delivers;
		// and 16 request handlers accepting one webhook a call.
		{name: "fan-out (1000 endpoints)", n: size(40000, 10000), fanout: 1000, endpoints: 1000, defaultLimit: true, only: perItemURL},
		{name: "enqueue-heavy (16 producers)", n: size(20000, 5000), fanout: 1},
		// 20% of first attempts fail at random: five in a row would open
		// the library's breaker (the Python policy) and hold deliveries for
		// its 60 s timeout, which River and the seed design do not have.
		// This scenario measures retries, so the breaker is set aside.
		{name: "flaky (20% 503)", n: size(5000, 1250), failRate: 0.2, breaker: webhook.BreakerPolicy{FailureThreshold: 1 << 30}},
		// 50 healthy endpoints at 500/s in all, and beside them one that
		// hangs and one that fails half the time; the baseline sends the
		// same webhooks with all 52 healthy. The library's supervisors run
		// with their defaults (EndpointConcurrency: half the workers).
		{name: "noisy neighbour", n: size(10000, 3000), rate: 500, endpoints: 52, noisy: true,
			defaultLimit: true, only: noisyNeighbours},
		{name: "noisy neighbour (baseline)", n: size(10000, 3000), rate: 500, endpoints: 52,
			defaultLimit: true, only: noisyNeighbours},
		{name: "backlog (1M+1M rows)", n: size(20000, 5000), only: []string{"PostgresSupervisor"},
			prepare: backlog(size(1_000_000, 50_000))},
	}
	scaleN := size(20000, 5000)
	if *n > 0 {
		scenarios = []scenario{{name: "custom", n: *n, latency: *latency, failRate: *failRate, retryAfter: *retryAfter, rate: *rate}}
		*which = "custom"
	}
	if err := checkNames(*which, *only, scenarios); err != nil {
		return err
	}
	if *repeat < 1 {
		return fmt.Errorf("-repeat is %d; use 1 or more", *repeat)
	}
	// pg_stat_statements counts the statements every system sends.
	cluster, err := pgtest.StartCluster("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track_utility=on")
	if err != nil {
		return err
	}
	defer cluster.Stop()
	// An interrupted run removes its cluster (hundreds of MB) too.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(interrupted)
	go func() {
		if _, ok := <-interrupted; ok {
			fmt.Fprintln(os.Stderr, "interrupted: removing the throwaway Postgres")
			cluster.Stop()
			os.Exit(130)
		}
	}()
	recv := newReceiver()
	defer recv.Close()
	// One Sender for every system. Its client keeps enough idle
	// connections for 1,024 sends to one loopback host (the default keeps
	// 64 per host, which would make the slow-receiver runs measure
	// connection churn).
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute},
	}})
	if err != nil {
		return err
	}
	var results []result
	db := 0
	// A throwaway run first, so that the first measured system does not
	// pay for a cold cluster (catalog caches, the first checkpoint).
	if *n == 0 {
		db++
		runOne(cluster, "bench_warmup", recv, sender, scenario{name: "warm-up", n: 2000}, &postgresSystem{})
	}
	for _, sc := range scenarios {
		if *which != "" && !slices.Contains(strings.Split(*which, ","), sc.name) {
			continue
		}
		sc.endpointLimit = *endpointLimit
		var systems []system
		for _, sys := range allSystems() {
			if *only != "" && !slices.Contains(strings.Split(*only, ","), sys.Name()) {
				continue
			}
			if sc.only != nil && !slices.Contains(sc.only, sys.Name()) {
				continue
			}
			systems = append(systems, sys)
		}
		for run := 1; run <= *repeat; run++ {
			for i := range systems {
				sys := systems[(i+run-1)%len(systems)] // each run starts with the next system
				db++
				r := runOne(cluster, fmt.Sprintf("bench_%d", db), recv, sender, sc, sys)
				r.Run = run
				fmt.Fprintf(os.Stderr, "%-24s %-24s run %d %8.0f/s %s\n", sc.name, sys.Name(), run, r.PerSecond, r.Err)
				results = append(results, r)
			}
		}
	}
	if *which == "" || slices.Contains(strings.Split(*which, ","), "scale-out") {
		for run := 1; run <= *repeat; run++ {
			for _, k := range []int{1, 2, 4} {
				db++
				r := runScaleOut(cluster, fmt.Sprintf("bench_%d", db), recv, sender, scaleN, k)
				r.Run = run
				fmt.Fprintf(os.Stderr, "%-24s %-34s run %d %8.0f/s %s\n", r.Scenario, r.System, run, r.PerSecond, r.Err)
				results = append(results, r)
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Runs    []result  `json:"runs"`
			Summary []summary `json:"summary"`
		}{results, summarize(results)})
	}
	if *repeat > 1 {
		printSummary(os.Stdout, summarize(results))
		return nil
	}
	printTable(results)
	return nil
}

func runOne(cluster *pgtest.Cluster, dbName string, recv *receiver, sender webhook.Sender, sc scenario, sys system) (r result) {
	r = result{Scenario: sc.name, System: sys.Name(), N: sc.n}
	fail := func(err error) result { r.Err = err.Error(); return r }
	ctx := context.Background()
	url, err := cluster.CreateDatabase(dbName)
	if err != nil {
		return fail(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fail(err)
	}
	cfg.MaxConns = poolConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	recv.reset()
	recv.Latency, recv.FailRate, recv.FailAll, recv.RetryAfter = sc.latency, sc.failRate, false, sc.retryAfter
	recv.HangPath, recv.FlakyPath, recv.Hang, recv.FlakyRate = "", "", 0, 0
	e := env{Pool: pool, DBURL: url, URL: recv.URL(), Sender: sender, Workers: cmp.Or(sc.workers, workers), Breaker: sc.breaker, Ack: recv.ack}
	switch {
	case sc.endpointLimit != 0:
		e.EndpointLimit = sc.endpointLimit
	case !sc.defaultLimit:
		e.EndpointLimit = webhook.NoEndpointLimit
	}
	if sc.noisy {
		recv.HangPath, recv.Hang = "/webhook/"+strconv.Itoa(sc.endpoints-2), webhook.SendTimeoutDefault
		recv.FlakyPath, recv.FlakyRate = "/webhook/"+strconv.Itoa(sc.endpoints-1), 0.5
	}
	if err := sys.Setup(ctx, e); err != nil {
		return fail(err)
	}
	if sc.prepare != nil {
		if err := sc.prepare(ctx, sys, e); err != nil {
			return fail(err)
		}
	}
	items, err := makeItems(sc.n)
	if err != nil {
		return fail(err)
	}
	// measured are the items the run waits for and measures: all but a
	// noisy scenario's bad neighbours'.
	measured := make(map[string]int, len(items))
	for i := range items {
		endpoint := i
		if sc.fanout > 0 {
			endpoint %= sc.fanout
		}
		if sc.endpoints > 0 {
			endpoint %= sc.endpoints
		}
		if sc.endpoints > 0 {
			items[i].URL = e.URL + "/" + strconv.Itoa(endpoint)
		}
		if !sc.noisy || endpoint < sc.endpoints-2 {
			measured[items[i].Key] = i
		}
	}
	accepted := make([]time.Time, len(items))
	if sc.rate == 0 && sc.fanout == 0 {
		if err := sys.EnqueueBulk(ctx, items); err != nil {
			return fail(err)
		}
	}
	pool.Reset() // backends flush their statistics as they exit
	tx0 := settledTransactions(ctx, url)
	resetStatements(ctx, url)
	start, cpu0 := time.Now(), machineCPU()
	stopSys, err := sys.Start(ctx)
	if err != nil {
		return fail(err)
	}
	stop := sync.OnceFunc(stopSys)
	defer stop()
	enqErr := make(chan error, 1)
	var acceptTook time.Duration
	if sc.rate > 0 {
		// Warm up (connections, prepared statements) off the clock: steady
		// load measures a running system, not its first second.
		warm, err := makeItems(sc.rate / 5)
		if err != nil {
			return fail(err)
		}
		if err := paced(ctx, sys, warm, sc.rate, make([]time.Time, len(warm))); err != nil {
			return fail(err)
		}
		for range warm {
			<-recv.ok
		}
		recv.reset()
		resetStatements(ctx, url)
		start, cpu0 = time.Now(), machineCPU()
		go func() { enqErr <- paced(ctx, sys, items, sc.rate, accepted) }()
	} else if sc.fanout > 0 {
		go func() {
			err := fanOut(ctx, sys, items, sc.fanout, accepted)
			acceptTook = time.Since(start) // read once enqErr is received
			enqErr <- err
		}()
	} else {
		for i := range accepted {
			accepted[i] = start
		}
		enqErr <- nil
	}
	deadline := time.After(10 * time.Minute)
	for got := 0; got < len(measured); {
		select {
		case k := <-recv.ok:
			if _, ok := measured[k]; ok {
				got++
			}
		case <-deadline:
			return fail(fmt.Errorf("%d of %d delivered after 10 minutes", got, len(measured)))
		}
	}
	elapsed := time.Since(start)
	if err := <-enqErr; err != nil {
		return fail(err)
	}
	if acceptTook > 0 {
		r.AcceptPerSec = float64(len(items)) / acceptTook.Seconds()
	}
	r.PerSecond = float64(len(items)) / elapsed.Seconds()
	if cpu := machineCPU(); cpu0 > 0 && cpu > cpu0 {
		r.CPUPerDeliv = float64((cpu - cpu0).Microseconds()) / float64(len(items))
	}
	r.RSSMB = rssMB()
	r.StmtsPerDeliv = float64(statements(ctx, url)) / float64(len(items))
	printTopStatements(ctx, url, sc.name+" / "+sys.Name())
	stop()
	pool.Close() // backends flush their statistics as they exit
	r.TxPerDelivery = float64(settledTransactions(ctx, url)-tx0) / float64(len(items))
	got, total := recv.snapshot()
	r.Requests = total
	if sc.rate > 0 || sc.fanout > 0 {
		var first, done []time.Duration
		for k, g := range got {
			if i, ok := measured[k]; ok {
				first = append(first, g.first.Sub(accepted[i]))
				done = append(done, g.okAt.Sub(accepted[i]))
			}
		}
		r.FirstP50, r.FirstP99, r.FirstP999 = pct(first, 500), pct(first, 990), pct(first, 999)
		r.DeliveredP50, r.DeliveredP99, r.DeliveredP999 = pct(done, 500), pct(done, 990), pct(done, 999)
	}
	return r
}

// paced enqueues items at rate per second from many goroutines, as request
// handlers would, recording when each was accepted.
func paced(ctx context.Context, sys system, items []item, rate int, accepted []time.Time) error {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	sem := make(chan struct{}, 64)
	for i := range items {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := sys.Enqueue(ctx, items[i:i+1]); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			accepted[i] = time.Now()
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// noisyNeighbours are the systems of the noisy-neighbour scenarios: those
// with retries (the ceilings have none).
var noisyNeighbours = []string{"PostgresSupervisor", "MemorySupervisor", "river"}

// perItemURL are the systems that send each item to its own URL.
var perItemURL = []string{"PostgresSupervisor", "MemorySupervisor", "river", "raw HTTP (ceiling)", "minimal SQL (ceiling)", "minimal SQL batched (ceiling)"}

// fanOut accepts items in events of size webhooks from 16 producers, each
// event one bulk insert, recording when each was accepted.
func fanOut(ctx context.Context, sys system, items []item, size int, accepted []time.Time) error {
	var next atomic.Int64
	errs := make([]error, 16)
	var wg sync.WaitGroup
	for g := range errs {
		wg.Go(func() {
			for first := int(next.Add(int64(size))) - size; first < len(items); first = int(next.Add(int64(size))) - size {
				end := min(first+size, len(items))
				enqueue := sys.EnqueueBulk
				if size == 1 {
					enqueue = sys.Enqueue
				}
				if err := enqueue(ctx, items[first:end]); err != nil {
					errs[g] = err
					return
				}
				now := time.Now()
				for i := first; i < end; i++ {
					accepted[i] = now
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// makeItems builds n MCP webhook bodies, each with its own key.
func makeItems(n int) ([]item, error) {
	items := make([]item, n)
	now := time.Now()
	for i := range items {
		body, key, err := webhook.BuildMCPBody(webhook.MCPWebhook{
			URL: "http://127.0.0.1/webhook", OperationID: "op_bench", TaskID: "task_" + strconv.Itoa(i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted,
			Result: map[string]any{"media_buy_id": "mb_" + strconv.Itoa(i), "packages": []string{"pkg_1", "pkg_2"}},
		}, now)
		if err != nil {
			return nil, err
		}
		items[i] = item{Key: key, Body: body}
	}
	return items, nil
}

// backlog fills the supervisor's tables with rows pending far in the
// future and rows long delivered, before the run.
func backlog(rows int) func(ctx context.Context, s system, e env) error {
	return func(ctx context.Context, _ system, e env) error {
		for _, sql := range []string{
			`INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key, breaker_key, accepted_at)
			 SELECT 'pending', now() + interval '30 days', $1, '{}'::bytea, 'whk_backlog_pending_' || g, $1, now()
			 FROM generate_series(1, $2) g`,
			`INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key, breaker_key, accepted_at, finished_at, attempts)
			 SELECT 'delivered', now(), $1, '{}'::bytea, 'whk_backlog_done_' || g, $1, now(), now(), 1
			 FROM generate_series(1, $2) g`,
			`VACUUM ANALYZE adcp_webhook_deliveries`,
		} {
			args := []any{e.URL, rows}
			if strings.HasPrefix(sql, "VACUUM") {
				args = nil
			}
			if _, err := e.Pool.Exec(ctx, sql, args...); err != nil {
				return err
			}
		}
		return nil
	}
}

// resetStatements zeroes pg_stat_statements, whose counts are kept per
// database.
func resetStatements(ctx context.Context, url string) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	_, _ = conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
}

// statements counts the statements run on url's database since the last
// resetStatements, the measuring connection's own excluded.
func statements(ctx context.Context, url string) int64 {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var n int64
	_ = conn.QueryRow(ctx, `SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT LIKE '%pg_stat_statements%'`).Scan(&n)
	return n
}

// topStatements is the -statements flag: how many statements
// printTopStatements prints (0: none).
var topStatements = new(int)

// printTopStatements prints the statements that took the most time on
// url's database since the last resetStatements, for profiling a scenario.
func printTopStatements(ctx context.Context, url, title string) {
	if *topStatements <= 0 {
		return
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT calls, total_exec_time, mean_exec_time, rows,
			shared_blks_hit + shared_blks_read, wal_bytes::bigint, regexp_replace(query, '\s+', ' ', 'g')
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT LIKE '%pg_stat_statements%'
		ORDER BY total_exec_time DESC LIMIT $1`, *topStatements)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pg_stat_statements: %v\n", err)
		return
	}
	defer rows.Close()
	fmt.Fprintf(os.Stderr, "-- %s: top statements\n%8s %10s %8s %8s %9s %10s  query\n", title, "calls", "total ms", "mean ms", "rows", "blocks", "wal bytes")
	for rows.Next() {
		var calls, nrows, blocks, wal int64
		var total, mean float64
		var q string
		if rows.Scan(&calls, &total, &mean, &nrows, &blocks, &wal, &q) != nil {
			return
		}
		if len(q) > 160 {
			q = q[:160] + "…"
		}
		fmt.Fprintf(os.Stderr, "%8d %10.1f %8.3f %8d %9d %10d  %s\n", calls, total, mean, nrows, blocks, wal, q)
	}
}

// settledTransactions counts the database's committed and rolled-back
// transactions once the statistics settle: backends report theirs at most
// once a second, and when they exit.
func settledTransactions(ctx context.Context, url string) int64 {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var last int64 = -1
	for range 20 {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			return 0
		}
		if n == last {
			return n
		}
		last = n
		time.Sleep(150 * time.Millisecond)
	}
	return last
}

func pct(ds []time.Duration, perMille int) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[(len(ds)-1)*perMille/1000].Microseconds()) / 1000
}

// rssMB is this process's resident set size (0 where /proc is missing).
func rssMB() float64 { return processRSSMB(os.Getpid()) }

func printTable(results []result) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\tsystem\tdeliveries/s\tPostgresSupervisor ÷ it\taccepted/s\tstatements/delivery\ttx/delivery\tCPU µs/delivery\trequests\tfirst attempt p50/p99/p999 ms\tdelivered p50/p99/p999 ms\tRSS MB\t")
	lib := map[string]float64{}
	for _, r := range results {
		if r.System == "PostgresSupervisor" {
			lib[r.Scenario] = r.PerSecond
		}
	}
	for _, r := range results {
		if r.Err != "" {
			fmt.Fprintf(w, "%s\t%s\terror: %s\t\t\t\t\t\t\t\t\t\t\n", r.Scenario, r.System, r.Err)
			continue
		}
		ratio := ""
		if l := lib[r.Scenario]; l > 0 && r.PerSecond > 0 {
			ratio = fmt.Sprintf("%.2f", l/r.PerSecond)
		}
		lat, dl := "", ""
		if r.FirstP50 > 0 || r.FirstP99 > 0 {
			lat = fmt.Sprintf("%.1f / %.1f / %.1f", r.FirstP50, r.FirstP99, r.FirstP999)
			dl = fmt.Sprintf("%.1f / %.1f / %.1f", r.DeliveredP50, r.DeliveredP99, r.DeliveredP999)
		}
		acc := ""
		if r.AcceptPerSec > 0 {
			acc = fmt.Sprintf("%.0f", r.AcceptPerSec)
		}
		fmt.Fprintf(w, "%s\t%s\t%.0f\t%s\t%s\t%.2f\t%.2f\t%.0f\t%d\t%s\t%s\t%.0f\t\n", r.Scenario, r.System, r.PerSecond, ratio, acc, r.StmtsPerDeliv, r.TxPerDelivery, r.CPUPerDeliv, r.Requests, lat, dl, r.RSSMB)
	}
	w.Flush()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// allSystems is every system, the library's first. River and the seed
// design live in river.go and seed.go.
func allSystems() []system {
	out := []system{&postgresSystem{}, &memorySystem{}}
	out = append(out, comparators()...)
	return append(out, &rawHTTPSystem{}, &minimalSQLSystem{}, &minimalBatchSQLSystem{})
}

// checkNames refuses -scenarios and -systems names that match nothing, so a
// typo is an error naming the valid ones rather than an empty table.
func checkNames(which, only string, scenarios []scenario) error {
	valid := []string{"scale-out"}
	for _, sc := range scenarios {
		if strings.Contains(sc.name, ",") { // a bug here, not the user's
			return fmt.Errorf("scenario %q has a comma in its name, which -scenarios cannot name", sc.name)
		}
		valid = append(valid, sc.name)
	}
	for _, name := range splitNames(which) {
		if !slices.Contains(valid, name) {
			return fmt.Errorf("unknown scenario %q; the scenarios are %q", name, valid)
		}
	}
	var systems []string
	for _, sys := range allSystems() {
		systems = append(systems, sys.Name())
	}
	for _, name := range splitNames(only) {
		if !slices.Contains(systems, name) {
			return fmt.Errorf("unknown system %q; the systems are %q", name, systems)
		}
	}
	return nil
}

func splitNames(list string) []string {
	if list == "" {
		return nil
	}
	return strings.Split(list, ",")
}
