package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// runBenchWorker is one worker process of the scale-out scenario: one
// RunWorker with the library's defaults until SIGTERM.
func runBenchWorker(args []string) error {
	fs := flag.NewFlagSet("bench-worker", flag.ExitOnError)
	db := fs.String("db", "", "database URL")
	limit := fs.Int("endpoint-limit", 0, "EndpointConcurrency (0: the default; -1: NoEndpointLimit)")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := pgxpool.ParseConfig(*db)
	if err != nil {
		return err
	}
	cfg.MaxConns = workers + 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	if err != nil {
		return err
	}
	sup, err := webhook.NewPostgresSupervisor(pool, sender, libPostgresConfig(workers, *limit))
	if err != nil {
		return err
	}
	return sup.RunWorker(ctx)
}

// runScaleOut delivers a burst of n with k worker processes sharing one
// Postgres, each one RunWorker with 16 workers.
func runScaleOut(cluster *pgtest.Cluster, dbName string, recv *receiver, sender webhook.Sender, n, k int) (r result) {
	r = result{Scenario: "scale-out (burst)", System: fmt.Sprintf("PostgresSupervisor, %d process(es)", k), N: n}
	fail := func(err error) result { r.Err = err.Error(); return r }
	ctx := context.Background()
	url, err := cluster.CreateDatabase(dbName)
	if err != nil {
		return fail(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	recv.reset()
	recv.Latency, recv.FailRate, recv.FailAll, recv.RetryAfter = 0, 0, false, 0
	sys := &postgresSystem{}
	if err := sys.Setup(ctx, env{Pool: pool, DBURL: url, URL: recv.URL(), Sender: sender, Workers: workers}); err != nil {
		return fail(err)
	}
	items, err := makeItems(n)
	if err != nil {
		return fail(err)
	}
	if err := sys.EnqueueBulk(ctx, items); err != nil {
		return fail(err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	pool.Reset()
	tx0 := settledTransactions(ctx, url)
	resetStatements(ctx, url)
	start := time.Now()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}()
	for range k {
		// The one endpoint may take every worker of every process.
		cmd := exec.Command(self, "bench-worker", "-db", url, "-endpoint-limit", strconv.Itoa(webhook.NoEndpointLimit))
		cmd.SysProcAttr = workerAttr()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return fail(err)
		}
		procs = append(procs, cmd)
	}
	deadline := time.After(10 * time.Minute)
	for got := 0; got < n; got++ {
		select {
		case <-recv.ok:
		case <-deadline:
			return fail(fmt.Errorf("%d of %d delivered after 10 minutes", got, n))
		}
	}
	elapsed := time.Since(start)
	r.PerSecond = float64(n) / elapsed.Seconds()
	_, r.Requests = recv.snapshot()
	r.StmtsPerDeliv = float64(statements(ctx, url)) / float64(n)
	for _, p := range procs {
		r.RSSMB += processRSSMB(p.Process.Pid)
		_ = p.Process.Signal(syscall.SIGTERM)
		_ = p.Wait()
	}
	procs = nil
	pool.Close()
	r.TxPerDelivery = float64(settledTransactions(ctx, url)-tx0) / float64(n)
	return r
}

// processRSSMB is a process's resident set size.
func processRSSMB(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
