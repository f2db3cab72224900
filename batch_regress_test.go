package webhook_test

// Regression tests from the adversarial review of batch acceptance: each
// failed before its fix.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// Two batches sharing keys in opposite orders (a producer's retry racing
// another producer's fan-out, say) do not deadlock: the array statement
// inserts in key order. (In item order, each waited on a key the other
// held.)
func TestPostgresBatchesSharingKeysDoNotDeadlock(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	var errs []error
	for round := range 20 {
		var ws []webhook.PreparedWebhook
		for i := range 200 {
			key := fmt.Sprintf("whk_r%03d_%012d", round, i)
			ws = append(ws, webhook.PreparedWebhook{URL: "https://a.example/hook", IdempotencyKey: key,
				Body: []byte(`{"idempotency_key":"` + key + `"}`)})
		}
		rev := slices.Clone(ws)
		slices.Reverse(rev)
		errs = append(errs, concurrently(ctx, pe.pg.SendPreparedBatch, ws, rev)...)
	}
	for _, err := range errs {
		t.Log(err)
	}
	require.Empty(t, errs)
}

// Under OpenDrop (the per-item path), two fan-outs of distinct events over
// the same subscribers' sequences, listed in different orders, do not
// deadlock: the statements go in sequence-key order. (In item order, each
// locked a counter the other waited on.)
func TestPostgresOpenDropBatchesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) { c.Breaker.OpenAction = webhook.OpenDrop })
	ctx := context.Background()
	var errs []error
	for round := range 10 {
		batch := func(ev string, rev bool) []webhook.MCPWebhook {
			var ws []webhook.MCPWebhook
			for i := range 100 {
				w := mcp(fmt.Sprintf("https://buyer%d.example/hook", i), fmt.Sprintf("%s_%d_%d", ev, round, i))
				w.Routing.SequenceKey = fmt.Sprintf("sub_%d", i)
				ws = append(ws, w)
			}
			if rev {
				slices.Reverse(ws)
			}
			return ws
		}
		errs = append(errs, concurrently(ctx, pe.pg.SendMCPBatch, batch("a", false), batch("b", true))...)
	}
	for _, err := range errs {
		t.Log(err)
	}
	require.Empty(t, errs)
}

// A context deadline (or any database error) names no item: it is not a
// *BatchError, on either path. (The per-item path reported it as an
// item's refusal, inviting a caller to drop a healthy webhook.)
func TestPostgresBatchTimeoutNamesNoItem(t *testing.T) {
	t.Parallel()
	for _, action := range []webhook.OpenAction{webhook.OpenDefer, webhook.OpenDrop} {
		t.Run(fmt.Sprint(action), func(t *testing.T) {
			pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) { c.Breaker.OpenAction = action })
			ctx := context.Background()
			held := mcp("https://a.example/hook", "t0")
			held.Routing.SequenceKey = "acct"
			tx, err := pe.pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx)                  //nolint:errcheck
			_, err = pe.pg.SendMCPTx(ctx, tx, held) // holds acct's counter row
			require.NoError(t, err)
			b := mcp("https://b.example/hook", "t2")
			b.Routing.SequenceKey = "acct"
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, err = pe.pg.SendMCPBatch(cctx, []webhook.MCPWebhook{mcp("https://c.example/hook", "t1"), b})
			t.Logf("%T %v", err, err)
			require.Error(t, err)
			var be *webhook.BatchError
			require.False(t, errors.As(err, &be), "a timeout is reported as item %d's refusal", func() int {
				if be != nil {
					return be.Index
				}
				return -1
			}())
		})
	}
}

// A full memory queue names the batch's last item, even when that item is
// a duplicate that adds nothing, rather than the first item that overflows.
func TestMemoryBatchFullNamesTheItemThatOverflows(t *testing.T) {
	t.Parallel()
	s, err := webhook.NewMemorySupervisor(nil, webhook.MemoryConfig{MaxQueued: 2})
	require.NoError(t, err)
	ws := []webhook.PreparedWebhook{
		{URL: "https://a.example/hook", Body: []byte(`{"n":1}`), IdempotencyKey: "whk_0123456789abcdef0"},
		{URL: "https://a.example/hook", Body: []byte(`{"n":2}`), IdempotencyKey: "whk_0123456789abcdef1"},
		{URL: "https://a.example/hook", Body: []byte(`{"n":3}`), IdempotencyKey: "whk_0123456789abcdef2"}, // the one that overflows
		{URL: "https://a.example/hook", Body: []byte(`{"n":1}`), IdempotencyKey: "whk_0123456789abcdef0"}, // a duplicate of item 0
	}
	_, err = s.SendPreparedBatch(context.Background(), ws)
	var be *webhook.BatchError
	require.ErrorAs(t, err, &be)
	require.ErrorIs(t, err, webhook.ErrQueueFull)
	require.Equal(t, 2, be.Index, "the item that overflows the queue")
}

// A batch's bodies are bounded in total, before any is copied: a batch is
// one statement on Postgres, and hostile input must not cost more than
// honest input.
func TestBatchBoundsItsBytes(t *testing.T) {
	t.Parallel()
	s, err := webhook.NewMemorySupervisor(nil, webhook.MemoryConfig{})
	require.NoError(t, err)
	body := make([]byte, 1<<20) // shared by every item: the check comes first
	ws := make([]webhook.PreparedWebhook, 100)
	for i := range ws {
		ws[i] = webhook.PreparedWebhook{URL: "https://a.example/hook", Body: body, IdempotencyKey: fmt.Sprintf("whk_%016d", i)}
	}
	_, err = s.SendPreparedBatch(context.Background(), ws)
	var be *webhook.BatchError
	require.ErrorAs(t, err, &be)
	require.Equal(t, webhook.BatchMaxBytes>>20, be.Index, "the item that takes the batch past BatchMaxBytes")
	require.Contains(t, err.Error(), "BatchMaxBytes")
}

// concurrently sends the batches at once and returns their errors.
func concurrently[W any](ctx context.Context, send func(context.Context, []W) ([]webhook.Receipt, error), batches ...[]W) []error {
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() { _, errs[i] = send(ctx, b) })
	}
	wg.Wait()
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}
