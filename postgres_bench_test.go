package webhook_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// BenchmarkPostgresSupervisor measures end-to-end delivery through the
// Postgres supervisor to a loopback receiver that answers at once, with the
// throwaway Postgres at its default durability (fsync and synchronous_commit
// on). One RunWorker call with Concurrency workers.
//
//   - drain: b.N deliveries enqueued first (not timed), then delivered;
//   - enqueue+deliver: 16 goroutines enqueue b.N while the workers deliver;
//   - latency-200/s: b.N deliveries offered at 200 per second; reports the
//     p50 and p99 from acceptance to the start of the first attempt.
//
// Each reports SQL statements per delivery (BEGIN and COMMIT count; the
// LISTEN connection does not).
//
//	go test -run '^$' -bench BenchmarkPostgresSupervisor -benchtime 20000x
func BenchmarkPostgresSupervisor(b *testing.B) {
	b.Run("drain", func(b *testing.B) {
		pb := newPgBench(b)
		pb.drain(b)
	})
	// Producers stand for request handlers calling SendMCP at once; each
	// SendMCP is a commit of its own.
	b.Run("enqueue+deliver", func(b *testing.B) {
		pb := newPgBench(b)
		b.ResetTimer()
		stop := pb.start(b)
		pb.sendConcurrently(b)
		pb.waitDelivered(b, b.N)
		b.StopTimer()
		stop()
		pb.report(b)
	})
	b.Run("latency-200/s", func(b *testing.B) {
		pb := newPgBench(b)
		stop := pb.start(b)
		b.ResetTimer()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := range b.N {
			<-tick.C
			pb.send(b, i)
		}
		pb.waitDelivered(b, b.N)
		b.StopTimer()
		stop()
		pb.report(b)
		lat := pb.latencies()
		b.ReportMetric(float64(percentile(lat, 50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(percentile(lat, 99).Microseconds())/1000, "p99-ms")
	})
}

// benchProducers is how many goroutines call SendMCP in enqueue+deliver.
const benchProducers = 16

type pgBench struct {
	pool      *countingPool
	sup       *webhook.PostgresSupervisor
	url       string
	delivered atomic.Int64
	done      chan struct{}
	want      atomic.Int64

	mu       sync.Mutex
	accepted map[string]time.Time // key → when SendMCP returned
	first    map[string]time.Time // key → when its first attempt started
}

func newPgBench(b *testing.B) *pgBench { return newPgBenchWith(b, nil) }

// newPgBenchWith is newPgBench with the supervisor's config changed by
// configure.
func newPgBenchWith(b *testing.B, configure func(*webhook.PostgresConfig)) *pgBench {
	b.Helper()
	srv, sender := benchReceiver(b)
	pb := &pgBench{url: srv.URL, done: make(chan struct{}), accepted: map[string]time.Time{}, first: map[string]time.Time{}}
	pb.want.Store(-1)
	cfg, err := pgxpool.ParseConfig(pgtest.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 24
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	pb.pool = &countingPool{Pool: pool}
	timed := webhook.SenderFunc(func(ctx context.Context, r *webhook.Request) (*webhook.Response, error) {
		if r.Attempt == 1 {
			now := time.Now()
			pb.mu.Lock()
			if _, ok := pb.first[r.IdempotencyKey]; !ok {
				pb.first[r.IdempotencyKey] = now
			}
			pb.mu.Unlock()
		}
		return sender.Send(ctx, r)
	})
	sink := webhook.LogSinkFunc(func(_ context.Context, a webhook.Attempt) error {
		if a.Outcome == webhook.OutcomeSuccess && pb.delivered.Add(1) == pb.want.Load() {
			close(pb.done)
		}
		return nil
	})
	pc := webhook.PostgresConfig{
		AllowInsecureHTTP: true,
		LogSink:           sink,
		Concurrency:       benchConcurrency,
	}
	if configure != nil {
		configure(&pc)
	}
	pb.sup, err = webhook.NewPostgresSupervisor(pb.pool, timed, pc)
	if err != nil {
		b.Fatal(err)
	}
	if err := pb.sup.CreateSchema(context.Background()); err != nil {
		b.Fatal(err)
	}
	return pb
}

func (pb *pgBench) send(b *testing.B, i int) {
	r, err := pb.sup.SendMCP(context.Background(), benchWebhook(pb.url, i))
	if err != nil {
		b.Error(err)
		return
	}
	now := time.Now()
	pb.mu.Lock()
	pb.accepted[r.IdempotencyKey] = now
	pb.mu.Unlock()
}

// drain accepts b.N deliveries (not timed), then times their delivery.
func (pb *pgBench) drain(b *testing.B) {
	for i := range b.N {
		pb.send(b, i)
	}
	pb.pool.statements.Store(0)
	b.ResetTimer()
	stop := pb.start(b)
	pb.waitDelivered(b, b.N)
	b.StopTimer()
	stop()
	pb.report(b)
}

// sendConcurrently accepts b.N deliveries from benchProducers goroutines,
// as request handlers calling SendMCP at once would.
func (pb *pgBench) sendConcurrently(b *testing.B) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for range benchProducers {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
				pb.send(b, i)
			}
		})
	}
	wg.Wait()
}

func (pb *pgBench) start(b *testing.B) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pb.sup.RunWorker(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

func (pb *pgBench) waitDelivered(b *testing.B, n int) {
	pb.want.Store(int64(n))
	if pb.delivered.Load() >= int64(n) {
		return
	}
	select {
	case <-pb.done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("%d of %d delivered", pb.delivered.Load(), n)
	}
}

func (pb *pgBench) report(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(pb.pool.statements.Load())/float64(b.N), "statements/delivery")
}

func (pb *pgBench) latencies() []time.Duration {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	var out []time.Duration
	for k, at := range pb.accepted {
		if f, ok := pb.first[k]; ok {
			out = append(out, f.Sub(at))
		}
	}
	slices.Sort(out)
	return out
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}

// countingPool counts the statements the supervisor sends through the pool
// and its transactions.
type countingPool struct {
	*pgxpool.Pool
	statements atomic.Int64
}

func (p *countingPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.statements.Add(1)
	return p.Pool.Exec(ctx, sql, args...)
}

func (p *countingPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	p.statements.Add(1)
	return p.Pool.Query(ctx, sql, args...)
}

func (p *countingPool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	p.statements.Add(1)
	return p.Pool.QueryRow(ctx, sql, args...)
}

func (p *countingPool) Begin(ctx context.Context) (pgx.Tx, error) {
	p.statements.Add(1)
	tx, err := p.Pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &countingTx{Tx: tx, n: &p.statements}, nil
}

type countingTx struct {
	pgx.Tx
	n *atomic.Int64
}

func (t *countingTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t.n.Add(1)
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *countingTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t.n.Add(1)
	return t.Tx.Query(ctx, sql, args...)
}

func (t *countingTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	t.n.Add(1)
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *countingTx) Commit(ctx context.Context) error {
	t.n.Add(1)
	return t.Tx.Commit(ctx)
}

// BenchmarkPostgresEnqueue measures acceptance alone (no worker runs), per
// webhook: 16 producers calling SendMCP, against the same producers
// calling SendMCPBatch with 100 webhooks a call (an event's fan-out),
// each call a commit of its own, at the throwaway Postgres's default
// durability.
//
//	go test -run '^$' -bench BenchmarkPostgresEnqueue -benchtime 20000x
func BenchmarkPostgresEnqueue(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(map[int]string{1: "SendMCP", 100: "SendMCPBatch-100"}[batch], func(b *testing.B) {
			pb := newPgBench(b)
			var wg sync.WaitGroup
			var next atomic.Int64
			b.ResetTimer()
			for range benchProducers {
				wg.Go(func() {
					ws := make([]webhook.MCPWebhook, 0, batch)
					for first := int(next.Add(int64(batch))) - batch; first < b.N; first = int(next.Add(int64(batch))) - batch {
						ws = ws[:0]
						for i := first; i < min(first+batch, b.N); i++ {
							ws = append(ws, benchWebhook(pb.url, i))
						}
						var err error
						if batch == 1 {
							_, err = pb.sup.SendMCP(context.Background(), ws[0])
						} else {
							_, err = pb.sup.SendMCPBatch(context.Background(), ws)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
		})
	}
}

// BenchmarkPostgresEncryption measures what encryption at rest
// (PostgresConfig.Encryption) costs, against the same supervisor without
// it: acceptance (16 producers calling SendMCP) and delivery (drain, as in
// BenchmarkPostgresSupervisor), and the rotation's throughput: Reencrypt
// rewriting b.N rows from one key to another, in its default batches.
// Run the pairs interleaved and compare ratios:
//
//	go test -run '^$' -bench BenchmarkPostgresEncryption -benchtime 20000x -count 5
func BenchmarkPostgresEncryption(b *testing.B) {
	k1, _ := webhook.GenerateEncryptionKey()
	k2, _ := webhook.GenerateEncryptionKey()
	ring1, _ := webhook.NewEncryptionKeys("k1", map[string][]byte{"k1": k1})
	ring2, _ := webhook.NewEncryptionKeys("k2", map[string][]byte{"k1": k1, "k2": k2})
	for _, mode := range []string{"plain", "encrypted"} {
		configure := func(pc *webhook.PostgresConfig) {
			if mode == "encrypted" {
				pc.Encryption = ring1
			}
		}
		b.Run("enqueue/"+mode, func(b *testing.B) {
			pb := newPgBenchWith(b, configure)
			b.ResetTimer()
			pb.sendConcurrently(b)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
		})
		b.Run("drain/"+mode, func(b *testing.B) { newPgBenchWith(b, configure).drain(b) })
	}
	b.Run("reencrypt", func(b *testing.B) {
		pb := newPgBenchWith(b, func(pc *webhook.PostgresConfig) { pc.Encryption = ring1 })
		pb.sendConcurrently(b)
		rotated, err := webhook.NewPostgresSupervisor(pb.pool, nil, webhook.PostgresConfig{Encryption: ring2, PollOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		res, err := rotated.Reencrypt(context.Background(), 0)
		b.StopTimer()
		if err != nil || res.Reencrypted != int64(b.N) {
			b.Fatalf("reencrypted %d of %d: %v", res.Reencrypted, b.N, err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}
