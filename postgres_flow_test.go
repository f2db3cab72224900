package webhook_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// EndpointConcurrency counts the attempts in flight in every process on the
// tables: two processes of four workers each, with a limit of two, keep
// two attempts in flight to a hanging endpoint between them, and deliver
// another endpoint's webhooks meanwhile.
func TestPostgresEndpointConcurrencyAcrossProcesses(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 4, EndpointConcurrency: 2})
	slow, fast := "https://slow.example/hook", "https://fast.example/hook"
	release := make(chan struct{})
	for range 8 {
		pe.sender.on(slow, step{status: 200, gate: release})
	}
	runWorker(t, pe.sup)
	runWorker(t, pe.another())
	for i := range 8 {
		pe.sendMCP(mcp(slow, fmt.Sprint("s", i)))
	}
	pe.waitSent(2)
	// Every fast delivery is claimed after the slow ones were due, by
	// either process, each claim counting both processes' attempts.
	for i := range 12 {
		pe.sendMCP(mcp(fast, fmt.Sprint("f", i)))
	}
	for _, a := range pe.attempts(12) {
		require.Equal(t, fast, a.URL)
	}
	close(release)
	for _, a := range pe.attempts(8) {
		require.Equal(t, slow, a.URL)
	}
	for _, r := range pe.sender.sent() {
		if r.URL == slow {
			require.LessOrEqual(t, r.InFlightURL, 2, "two processes together stay within EndpointConcurrency")
		}
	}
	st, err := pe.pg.Stats(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 20, st.Delivered)
}

// An endpoint at its cap with more due deliveries than a claim looks at
// (the oldest four per worker) does not hide the deliveries of other
// endpoints behind them: the claim then takes every other endpoint's
// oldest.
func TestPostgresEndpointConcurrencyPastACappedBacklog(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 4, EndpointConcurrency: 1})
	slow, fast := "https://slow.example/hook", "https://fast.example/hook"
	release := make(chan struct{})
	pe.sender.on(slow, step{status: 200, gate: release})
	ctx := context.Background()
	var backlog []webhook.MCPWebhook
	for i := range 150 {
		backlog = append(backlog, mcp(slow, fmt.Sprint("s", i)))
	}
	_, err := pe.pg.SendMCPBatch(ctx, backlog)
	require.NoError(t, err)
	pe.clock.Advance(time.Second) // the fast endpoint's deliveries are due after all of them
	for i := range 3 {
		pe.sendMCP(mcp(fast, fmt.Sprint("f", i)))
	}
	runWorker(t, pe.sup)
	for _, a := range pe.attempts(3) {
		require.Equal(t, fast, a.URL, "delivered while the slow endpoint holds its one slot")
	}
	require.Len(t, pe.sender.sent(), 4, "one slow attempt in flight, and the three fast ones")
	close(release)
	for _, a := range pe.attempts(150) {
		require.Equal(t, slow, a.URL)
	}
	for _, r := range pe.sender.sent() {
		if r.URL == slow {
			require.Equal(t, 1, r.InFlightURL)
		}
	}
}

// A capped claim that fails part way commits nothing, so it runs nothing:
// a delivery it had taken is not sent while its row stays pending (it
// would be sent again by the next claim).
func TestPostgresFailedCappedClaimRunsNothing(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 4, EndpointConcurrency: 1})
	ctx := context.Background()
	boom := "https://boom.example/hook"
	// Claiming boom's delivery fails: the second statement of the claim
	// (past the capped head) errors after the first took fast's.
	_, err := pe.pool.Exec(ctx, `
CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'test: boom'; END $$;
CREATE TRIGGER test_boom BEFORE UPDATE ON adcp_webhook_deliveries FOR EACH ROW
WHEN (NEW.breaker_key = '`+boom+`' AND NEW.state = 'running') EXECUTE FUNCTION test_boom();`)
	require.NoError(t, err)
	fast, slow := "https://fast.example/hook", "https://slow.example/hook"
	pe.sendMCP(mcp(fast, "a"))
	pe.clock.Advance(time.Second)
	var backlog []webhook.MCPWebhook
	for i := range 70 {
		backlog = append(backlog, mcp(slow, fmt.Sprint("s", i)))
	}
	_, err = pe.pg.SendMCPBatch(ctx, backlog)
	require.NoError(t, err)
	pe.clock.Advance(time.Second)
	pe.sendMCP(mcp(boom, "b"))
	runWorker(t, pe.sup)
	require.Eventually(t, func() bool {
		return strings.Count(pe.logs.String(), "test: boom") >= 3
	}, guard, 10*time.Millisecond, "the claim failed three times")
	for _, r := range pe.sender.sent() {
		require.NotEqual(t, fast, r.URL, "sent from a claim that did not commit")
	}
	require.Equal(t, 1, pe.count(`SELECT count(*)::int FROM adcp_webhook_deliveries WHERE url = $1 AND state = 'pending'`, fast))
}

// Due rows just past what the first statement of a claim looked at, behind
// endpoints at their cap, are taken by the claim past the capped head even
// when the first statement took some.
func TestPostgresEndpointConcurrencyJustPastTheWindow(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 4, EndpointConcurrency: 1, PollOnly: true, PollInterval: time.Hour})
	ctx := context.Background()
	slow1, slow2, fast := "https://slow1.example/hook", "https://slow2.example/hook", "https://fast.example/hook"
	release := make(chan struct{})
	defer close(release)
	pe.sender.on(slow1, step{status: 200, gate: release})
	pe.sender.on(slow2, step{status: 200, gate: release})
	var head []webhook.MCPWebhook
	for i := range 63 { // a claim for 4 looks at 64 rows: these 63 and slow2's one
		head = append(head, mcp(slow1, fmt.Sprint("s", i)))
	}
	head = append(head, mcp(slow2, "x"))
	_, err := pe.pg.SendMCPBatch(ctx, head)
	require.NoError(t, err)
	pe.clock.Advance(time.Second)
	pe.sendMCP(mcp(fast, "f"))
	runWorker(t, pe.sup)
	require.Equal(t, fast, pe.attempts(1)[0].URL, "claimed while slow1 and slow2 hold their one slot each")
}

// A half-open probe claimed with other deliveries does not count against
// the claim's own limit twice: the claim still reaches past a capped head.
func TestPostgresEndpointConcurrencyProbeAndCappedHead(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 2, EndpointConcurrency: 1},
		func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenTimeout: time.Minute}
		})
	ctx := context.Background()
	probe, slow, fast := "https://probe.example/hook", "https://slow.example/hook", "https://fast.example/hook"
	release := make(chan struct{})
	defer close(release)
	pe.sender.on(probe, step{status: 503}, step{status: 200, gate: release})
	pe.sender.on(slow, step{status: 200, gate: release})
	stop := runWorker(t, pe.sup)
	pe.sendMCP(mcp(probe, "p0"))
	require.Equal(t, webhook.OutcomeFailure, pe.attempts(1)[0].Outcome) // the breaker opens
	stop()
	var backlog []webhook.MCPWebhook
	for i := range 70 {
		backlog = append(backlog, mcp(slow, fmt.Sprint("s", i)))
	}
	_, err := pe.pg.SendMCPBatch(ctx, backlog)
	require.NoError(t, err)
	pe.sendMCP(mcp(probe, "p1"))
	// A process that only polls: it claims when its clock timer fires.
	w := newPostgresOn(t, pe.pool, pe.cfg, webhook.PostgresConfig{Concurrency: 2, EndpointConcurrency: 1, PollOnly: true, PollInterval: time.Hour})
	runWorker(t, w)
	pe.waitSent(2) // one slow attempt in flight: the slow endpoint is at its cap
	pe.clock.Advance(time.Second)
	pe.sendMCP(mcp(fast, "f"))    // due behind the slow backlog
	pe.clock.Advance(time.Minute) // half-open: the next claim takes p1 as a probe, and f
	// (f waits for a worker: both hold gated attempts.)
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*)::int FROM adcp_webhook_deliveries WHERE url = $1 AND state = 'running'`, fast) == 1
	}, guard, 10*time.Millisecond, "the fast endpoint's delivery is claimed with the probe")
}

// The claim past a capped head visits a bounded number of endpoints per
// statement, and the next claims go on from where it stopped: an endpoint
// past hundreds of others that have only future deliveries is reached.
func TestPostgresEndpointConcurrencyWalksEveryEndpoint(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 4, EndpointConcurrency: 1})
	ctx := context.Background()
	slow, fast := "https://slow.example/hook", "https://zz.example/hook" // fast sorts after the others
	release := make(chan struct{})
	defer close(release)
	pe.sender.on(slow, step{status: 200, gate: release})
	var ws []webhook.MCPWebhook
	for i := range 70 {
		ws = append(ws, mcp(slow, fmt.Sprint("s", i)))
	}
	for i := range 600 { // endpoints with a delivery due only tomorrow
		ws = append(ws, mcp(fmt.Sprintf("https://later%03d.example/hook", i), fmt.Sprint("l", i)))
	}
	_, err := pe.pg.SendMCPBatch(ctx, ws)
	require.NoError(t, err)
	_, err = pe.pool.Exec(ctx, `UPDATE adcp_webhook_deliveries SET due_at = due_at + interval '1 day' WHERE url LIKE 'https://later%'`)
	require.NoError(t, err)
	pe.clock.Advance(time.Second)
	pe.sendMCP(mcp(fast, "f"))
	runWorker(t, pe.sup)
	require.Equal(t, fast, pe.attempts(1)[0].URL)
}

// A worker whose attempt succeeded takes the next delivery while that
// attempt's result is written and reported: with one worker, the second
// delivery is sent while the sink still holds the first's record. (A
// failure keeps its worker until it is written: see the suite's
// BreakerOpensAfterExactlyItsThreshold.)
func TestPostgresSuccessFreesItsWorkerBeforeItsRecord(t *testing.T) {
	t.Parallel()
	var pe *pgEnv
	var first sync.Once
	sawSecond := make(chan bool, 1)
	pe = newPgEnv(t, webhook.PostgresConfig{Concurrency: 1, EndpointConcurrency: webhook.NoEndpointLimit}, func(c *suiteConfig) {
		c.Retry.SinkTimeout = time.Hour // no replacement worker: the wait below is the sink's own
		c.Sink = webhook.LogSinkFunc(func(context.Context, webhook.Attempt) error {
			first.Do(func() { sawSecond <- pe.sentWithin(2, guard) })
			return nil
		})
	})
	url := "https://buyer.example/hook"
	pe.sendMCP(mcp(url, "t1"))
	pe.sendMCP(mcp(url, "t2"))
	runWorker(t, pe.sup)
	select {
	case ok := <-sawSecond:
		require.True(t, ok, "the second delivery was not sent while the first's record was in the sink")
	case <-time.After(guard):
		t.Fatal("no record reached the sink")
	}
}

// An attempt that ends while a capped claim runs frees a slot the claim
// may have seen taken: the claimer must look again rather than wait for
// PollInterval (an hour here, and no NOTIFY) with deliveries due. One
// endpoint alone, and one among others, at one and at four workers.
func TestPostgresCappedClaimMissesNoEndedAttempt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		concurrency int
		others      bool
	}{{"one endpoint, one worker", 1, false}, {"one endpoint, four workers", 4, false},
		{"among others, one worker", 1, true}, {"among others, four workers", 4, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: tc.concurrency, PollInterval: time.Hour, PollOnly: true})
			const n = 40
			for i := range n {
				pe.sendMCP(mcp("https://e1.example/hook", fmt.Sprint("a", i)))
				pe.clock.Advance(time.Millisecond)
				if tc.others {
					pe.sendMCP(mcp(fmt.Sprintf("https://x%d.example/hook", i), fmt.Sprint("b", i)))
					pe.clock.Advance(time.Millisecond)
				}
			}
			runWorker(t, pe.sup)
			want := n
			if tc.others {
				want = 2 * n
			}
			pe.attempts(want) // fails after guard if the claimer waits for its poll
		})
	}
}
