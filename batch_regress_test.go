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
// another producer's fan-out, say) can deadlock: the array statement
// inserts in item order, so each waits on a key the other holds.
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
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, b := range [][]webhook.PreparedWebhook{ws, rev} {
			wg.Go(func() {
				if _, err := pe.pg.SendPreparedBatch(ctx, b); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	for _, err := range errs {
		t.Log(err)
	}
	require.Empty(t, errs)
}

// Under OpenDrop the per-item path locks sequence counters in item order:
// two fan-outs of distinct events (distinct keys) over the same
// subscribers' sequences, listed in different orders, deadlock. (The
// array path sorts the counters; this path does not.)
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
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, b := range [][]webhook.MCPWebhook{batch("a", false), batch("b", true)} {
			wg.Go(func() {
				if _, err := pe.pg.SendMCPBatch(ctx, b); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	for _, err := range errs {
		t.Log(err)
	}
	require.Empty(t, errs)
}

// A context deadline (or any database error) in the per-item path is
// reported as a *BatchError naming an item, as if that item were refused;
// batchItem's own comment says errors that name no item are not wrapped.
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
