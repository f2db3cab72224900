package main

import (
	"context"
	"crypto/sha256"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// comparatorEnv starts what one run of a system needs: its own database on
// a shared throwaway cluster, a receiver and the sender the harness uses.
type comparatorEnv struct {
	cluster *pgtest.Cluster
	sender  webhook.Sender
	mu      sync.Mutex
	dbs     int
}

func newComparatorEnv(t *testing.T) *comparatorEnv {
	t.Helper()
	cluster, err := pgtest.StartCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &comparatorEnv{cluster: cluster, sender: sender}
}

func (c *comparatorEnv) env(t *testing.T, recv *receiver, workers int) env {
	t.Helper()
	c.mu.Lock()
	c.dbs++
	name := "systems_test_" + strconv.Itoa(c.dbs)
	c.mu.Unlock()
	url, err := c.cluster.CreateDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = int32(workers + 8)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return env{Pool: pool, DBURL: url, URL: recv.URL(), Sender: c.sender, Workers: workers, Ack: recv.ack}
}

func testItems(t *testing.T, prefix string, n int) []item {
	t.Helper()
	items := make([]item, n)
	for i := range items {
		body, key, err := webhook.BuildMCPBody(webhook.MCPWebhook{
			URL: "http://127.0.0.1/webhook", OperationID: "op_" + prefix, TaskID: prefix + "_" + strconv.Itoa(i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted,
			Result: map[string]any{"media_buy_id": "mb_" + strconv.Itoa(i), "note": "<&> é"},
		}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		items[i] = item{Key: key, Body: body}
	}
	return items
}

// TestComparatorsDeliverEverything runs River and the seed design end to
// end: half the webhooks accepted one by one from concurrent callers before
// the workers start, half in bulk while they run, a fifth of first attempts
// answered 503. Every key must end answered 2xx with the exact bytes.
func TestComparatorsDeliverEverything(t *testing.T) {
	c := newComparatorEnv(t)
	for _, sys := range []system{&riverSystem{}, &seedSystem{}} {
		t.Run(sys.Name(), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			recv := newReceiver()
			defer recv.Close()
			recv.FailRate = 0.2
			e := c.env(t, recv, 4)
			if err := sys.Setup(ctx, e); err != nil {
				t.Fatal(err)
			}
			items := testItems(t, "t", 50)
			var wg sync.WaitGroup
			errs := make(chan error, 5)
			for g := range 5 {
				wg.Go(func() {
					for i := g; i < 25; i += 5 {
						if err := sys.Enqueue(ctx, items[i:i+1]); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			stop, err := sys.Start(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The bulk half arrives while the workers run (and before
			// five attempts can have failed in a row, so the seed
			// design's breaker cannot refuse it).
			if err := sys.EnqueueBulk(ctx, items[25:]); err != nil {
				stop()
				t.Fatal(err)
			}
			timeout := time.After(12 * time.Second)
			for got := 0; got < len(items); got++ {
				select {
				case <-recv.ok:
				case <-timeout:
					stop()
					t.Fatalf("%d of %d delivered", got, len(items))
				}
			}
			stop()
			seen, _ := recv.snapshot()
			if len(seen) != len(items) {
				t.Errorf("receiver saw %d keys, want %d", len(seen), len(items))
			}
			retried := 0
			for _, it := range items {
				r, ok := seen[it.Key]
				switch {
				case !ok:
					t.Errorf("%s: never arrived", it.Key)
				case !r.ok:
					t.Errorf("%s: never answered 2xx", it.Key)
				case r.differ || r.body != sha256.Sum256(it.Body):
					t.Errorf("%s: bytes differ from the item's", it.Key)
				}
				if r.requests > 1 {
					retried++
				}
			}
			t.Logf("%d of %d keys needed a retry", retried, len(items))
		})
	}
	t.Run("seed design gives up after 3 attempts", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		recv := newReceiver()
		defer recv.Close()
		recv.FailRate, recv.FailAll = 1, true
		e := c.env(t, recv, 2)
		s := &seedSystem{}
		if err := s.Setup(ctx, e); err != nil {
			t.Fatal(err)
		}
		items := testItems(t, "dead", 2)
		if err := s.Enqueue(ctx, items); err != nil {
			t.Fatal(err)
		}
		stop, err := s.Start(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		deadline := time.Now().Add(8 * time.Second)
		for {
			var rows int
			if err := e.Pool.QueryRow(ctx, "SELECT count(*) FROM "+seedTable).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if rows == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d rows left after 8 s", rows)
			}
			time.Sleep(50 * time.Millisecond)
		}
		seen, _ := recv.snapshot()
		for _, it := range items {
			if r := seen[it.Key]; r.requests != seedMaxAttempts || r.ok || r.differ {
				t.Errorf("%s: %d requests (ok %v, differ %v), want %d failed ones with the same bytes", it.Key, r.requests, r.ok, r.differ, seedMaxAttempts)
			}
		}
	})
}

func TestSeedBreakerOpensAtEnqueueOnly(t *testing.T) {
	var b seedBreaker
	const url = "http://receiver/webhook"
	for range seedFailThreshold - 1 {
		b.record(url, false)
	}
	b.record(url, true) // a success resets the consecutive count
	for range seedFailThreshold - 1 {
		b.record(url, false)
	}
	if err := b.allow(url); err != nil {
		t.Fatalf("open after %d consecutive failures: %v", seedFailThreshold-1, err)
	}
	b.record(url, false)
	if err := b.allow(url); err == nil {
		t.Fatal("still closed after 5 consecutive failures")
	}
	b.record(url, true) // a success while open changes nothing
	if err := b.allow(url); err == nil {
		t.Fatal("a success closed an open breaker")
	}
	b.state[url].openedAt = time.Now().Add(-seedOpenTimeout)
	if err := b.allow(url); err != nil {
		t.Fatalf("still open after the open timeout: %v", err)
	}
	b.record(url, true)
	b.record(url, false) // any failure while half-open re-opens
	if err := b.allow(url); err == nil {
		t.Fatal("a failure while half-open did not re-open it")
	}
	b.state[url].openedAt = time.Now().Add(-seedOpenTimeout)
	_ = b.allow(url)
	b.record(url, true)
	b.record(url, true)
	if got := b.state[url].state; got != "closed" {
		t.Fatalf("state %q after 2 half-open successes, want closed", got)
	}
}
