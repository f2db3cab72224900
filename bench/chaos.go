package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// chaosPolicy is what every chaos process runs with: retries generous
// enough that 10% transient failures never exhaust them, a short lease so a
// killed worker's deliveries come back quickly, and a short breaker timeout.
func chaosConfig(lease time.Duration) webhook.PostgresConfig {
	return webhook.PostgresConfig{
		AllowInsecureHTTP: true,
		Concurrency:       8,
		LeaseDuration:     lease,
		PollInterval:      200 * time.Millisecond,
		Retry:             webhook.RetryPolicy{MaxAttempts: 20, BaseDelay: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond},
		Breaker:           webhook.BreakerPolicy{OpenTimeout: time.Second},
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// runChaosWorker is one worker process of the soak: it delivers until
// SIGTERM (graceful) or SIGKILL (the point of the exercise).
func runChaosWorker(args []string) error {
	fs := flag.NewFlagSet("chaos-worker", flag.ExitOnError)
	db := fs.String("db", "", "database URL")
	lease := fs.Duration("lease", 2*time.Second, "lease duration")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, sup, err := chaosSupervisor(ctx, *db, *lease)
	if err != nil {
		return err
	}
	defer pool.Close()
	return sup.RunWorker(ctx)
}

// chaosSupervisor is what every chaos process runs: a pool on db and a
// PostgresSupervisor with chaosConfig.
func chaosSupervisor(ctx context.Context, db string, lease time.Duration) (*pgxpool.Pool, *webhook.PostgresSupervisor, error) {
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		return nil, nil, err
	}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true, Timeout: 2 * time.Second})
	if err == nil {
		var sup *webhook.PostgresSupervisor
		if sup, err = webhook.NewPostgresSupervisor(pool, sender, chaosConfig(lease)); err == nil {
			return pool, sup, nil
		}
	}
	pool.Close()
	return nil, nil, err
}

// runChaos is the soak: worker processes deliver n webhooks to a receiver
// that fails 10% of requests transiently, while one worker is killed with
// SIGKILL and restarted every killEvery and Postgres restarts once. It
// checks that every accepted webhook was delivered or failed with a reason,
// and that every duplicate carried identical bytes under its key.
func runChaos(args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ExitOnError)
	n := fs.Int("n", 2000, "webhooks to accept")
	workers := fs.Int("workers", 3, "worker processes")
	killEvery := fs.Duration("kill-every", 500*time.Millisecond, "how often a worker is killed (SIGKILL) and restarted")
	failRate := fs.Float64("fail", 0.1, "share of requests the receiver fails with 503")
	lease := fs.Duration("lease", 2*time.Second, "lease duration: how soon a killed worker's deliveries come back")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up waiting for deliveries after this")
	_ = fs.Parse(args)
	start := time.Now()

	cluster, err := pgtest.StartCluster()
	if err != nil {
		return err
	}
	defer cluster.Stop()
	dbURL, err := cluster.CreateDatabase("chaos")
	if err != nil {
		return err
	}
	ctx := context.Background()
	pool, sup, err := chaosSupervisor(ctx, dbURL, *lease)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := sup.CreateSchema(ctx); err != nil {
		return err
	}
	recv := newReceiver()
	defer recv.Close()
	recv.FailRate, recv.FailAll = *failRate, true

	self, err := os.Executable()
	if err != nil {
		return err
	}
	procs := make([]*exec.Cmd, *workers)
	spawn := func(i int) error {
		cmd := exec.Command(self, "chaos-worker", "-db", dbURL, "-lease", lease.String())
		cmd.SysProcAttr = workerAttr()
		if err := cmd.Start(); err != nil {
			return err
		}
		procs[i] = cmd
		return nil
	}
	for i := range procs {
		if err := spawn(i); err != nil {
			return err
		}
	}
	defer func() {
		for _, p := range procs {
			if p != nil && p.Process != nil {
				_ = p.Process.Kill()
				_ = p.Wait()
			}
		}
	}()

	// Enqueue, retrying through the Postgres restart.
	var (
		mu         sync.Mutex
		accepted   = make(map[string]bool, *n)
		enqErrs    atomic.Int64
		enqDone    = make(chan struct{})
		restartAt  = *n * 2 / 5
		restartErr error
		restarted  = make(chan struct{})
	)
	go func() {
		defer close(enqDone)
		for i := 0; i < *n; {
			if i == restartAt && restarted != nil {
				go func() {
					restartErr = cluster.Restart()
					close(restarted)
				}()
				restartAt = -1
			}
			r, err := sup.SendMCP(ctx, webhook.MCPWebhook{
				URL: recv.URL(), OperationID: "op_chaos", TaskID: fmt.Sprint("task_", i),
				TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted,
				Result: map[string]any{"media_buy_id": fmt.Sprint("mb_", i)},
			})
			if err != nil {
				enqErrs.Add(1)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			mu.Lock()
			accepted[r.IdempotencyKey] = true
			mu.Unlock()
			i++
		}
	}()

	// Kill a worker every killEvery until the deliveries are done.
	kills := 0
	stopKilling := make(chan struct{})
	killerDone := make(chan error, 1)
	go func() {
		t := time.NewTicker(*killEvery)
		defer t.Stop()
		for {
			select {
			case <-stopKilling:
				killerDone <- nil
				return
			case <-t.C:
			}
			i := rand.IntN(len(procs))
			_ = procs[i].Process.Kill()
			_ = procs[i].Wait()
			kills++
			if err := spawn(i); err != nil {
				killerDone <- err
				return
			}
		}
	}()

	// Wait until every accepted delivery is final.
	deadline := time.Now().Add(*timeout)
	<-enqDone
	<-restarted
	if restartErr != nil {
		return fmt.Errorf("restarting Postgres: %w", restartErr)
	}
	keys := make([]string, 0, len(accepted))
	for k := range accepted {
		keys = append(keys, k)
	}
	var unfinished int
	for {
		err := pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries
			WHERE idempotency_key = ANY($1) AND state NOT IN ('delivered', 'failed')`, keys).Scan(&unfinished)
		if err == nil && unfinished == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stopKilling)
	if err := <-killerDone; err != nil {
		return err
	}
	for _, p := range procs { // graceful stop
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	for i, p := range procs {
		_ = p.Wait()
		procs[i] = nil
	}

	// The verdict.
	var delivered, failed int
	reasons := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT idempotency_key, state, coalesce(last_error, '') FROM adcp_webhook_deliveries`)
	if err != nil {
		return err
	}
	state := map[string]string{}
	for rows.Next() {
		var k, s, e string
		if err := rows.Scan(&k, &s, &e); err != nil {
			return err
		}
		state[k] = s
		if accepted[k] && s == "failed" {
			reasons[e]++
		}
	}
	rows.Close()
	got, requests := recv.snapshot()
	lost, duplicates, differ, unexpected := 0, 0, 0, 0
	for k := range accepted {
		switch {
		case state[k] == "delivered" && got[k].ok:
			delivered++
		case state[k] == "failed":
			failed++
		default:
			lost++
			fmt.Printf("lost: %s (state %q, received %d requests, answered 2xx %v)\n", k, state[k], got[k].requests, got[k].ok)
		}
	}
	for k, r := range got {
		duplicates += r.afterOK
		if r.differ {
			differ++
			fmt.Printf("different bytes under one key: %s\n", k)
		}
		if !accepted[k] {
			unexpected++
		}
	}
	fmt.Printf("chaos soak: %d webhooks, %d worker processes, a worker killed every %v (%d kills), Postgres restarted once, receiver failing %.0f%% of requests\n",
		*n, *workers, *killEvery, kills, *failRate*100)
	fmt.Printf("  accepted             %d (%d enqueue errors retried)\n", len(accepted), enqErrs.Load())
	fmt.Printf("  delivered            %d\n", delivered)
	fmt.Printf("  failed with a reason %d\n", failed)
	for _, r := range sortedKeys(reasons) {
		fmt.Printf("      %d × %s\n", reasons[r], r)
	}
	fmt.Printf("  lost                 %d\n", lost)
	fmt.Printf("  requests             %d\n", requests)
	fmt.Printf("  duplicates           %d (requests after a 2xx), all with identical bytes under their key: %v\n", duplicates, differ == 0)
	fmt.Printf("  not accepted but delivered %d (enqueue failed after its commit)\n", unexpected)
	fmt.Printf("  took %v\n", time.Since(start).Round(time.Millisecond))
	if lost > 0 || differ > 0 {
		return errors.New("chaos soak FAILED: webhooks lost or a duplicate differed")
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
