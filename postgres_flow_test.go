package webhook_test

import (
	"context"
	"fmt"
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
