package webhook_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// runBatchSuite: a batch is accepted all or none, by both supervisors.
func runBatchSuite(t *testing.T, newSup newSupervisorFunc) {
	ctx := context.Background()

	// An event's fan-out: receipts in order, one sequence drawn in order,
	// every item delivered.
	t.Run("FanOut", func(t *testing.T) {
		t.Parallel()
		o := &observed{carrier: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Observer = o.observer() })
		var ws []webhook.MCPWebhook
		for i := range 5 {
			w := mcp(fmt.Sprintf("https://buyer%d.example/hook", i), "t1")
			w.Routing.SequenceKey = "account_1"
			ws = append(ws, w)
		}
		rs, err := e.sup.SendMCPBatch(ctx, ws)
		require.NoError(t, err)
		require.Len(t, rs, 5)
		for i, r := range rs {
			require.Equal(t, int64(i+1), r.Sequence)
			require.NotEmpty(t, r.ID)
		}
		e.startWorker()
		as := e.attempts(5)
		got := map[string]bool{}
		for _, a := range as {
			require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
			got[a.DeliveryID] = true
		}
		require.Len(t, got, 5)
		o.mu.Lock()
		defer o.mu.Unlock()
		require.Equal(t, rs, o.receipts, "the Observer is told each item's acceptance")
		for _, s := range o.starts {
			require.Equal(t, o.carrier, s.Carrier, "each item's carrier is stored")
		}
	})

	// One bad item refuses the batch, naming it; nothing is accepted.
	t.Run("OneBadItemRefusesAll", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		ws := []webhook.PreparedWebhook{
			{URL: "https://a.example/hook", Body: []byte(`{"n":1}`), IdempotencyKey: "whk_0123456789abcdef0"},
			{URL: "https://b.example/hook", Body: []byte(`{"n":2}`), IdempotencyKey: "whk_0123456789abcdef1"},
			{URL: "ftp://c.example/hook", Body: []byte(`{"n":3}`), IdempotencyKey: "whk_0123456789abcdef2"},
		}
		_, err := e.sup.SendPreparedBatch(ctx, ws)
		var be *webhook.BatchError
		require.ErrorAs(t, err, &be)
		require.Equal(t, 2, be.Index)
		var ve *webhook.ValidationError
		require.ErrorAs(t, err, &ve, "the item's own error shows through")
		require.Equal(t, "URL", ve.Field)
		require.Contains(t, err.Error(), "batch item 2")
		st, err := e.inspector().Stats(ctx)
		require.NoError(t, err)
		require.Zero(t, st.Pending+st.Running+st.Delivered+st.Failed, "nothing accepted")

		// The same key twice with two payloads, in one batch: refused.
		ws[2] = webhook.PreparedWebhook{URL: "https://a.example/hook", Body: []byte(`{"n":9}`), IdempotencyKey: ws[0].IdempotencyKey}
		_, err = e.sup.SendPreparedBatch(ctx, ws)
		require.ErrorAs(t, err, &be)
		require.Equal(t, 2, be.Index)
		require.ErrorIs(t, err, webhook.ErrIdempotencyConflict)
		st, err = e.inspector().Stats(ctx)
		require.NoError(t, err)
		require.Zero(t, st.Pending)

		_, err = e.sup.SendPreparedBatch(ctx, nil)
		require.ErrorAs(t, err, &ve)
		_, err = e.sup.SendPreparedBatch(ctx, make([]webhook.PreparedWebhook, webhook.BatchMax+1))
		require.ErrorAs(t, err, &ve)
		require.Contains(t, err.Error(), "BatchMax")
	})

	// A key accepted before, or earlier in the batch, with the same
	// payload: that delivery's receipt, and no second delivery.
	t.Run("DuplicatesShareADelivery", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		a := webhook.PreparedWebhook{URL: "https://a.example/hook", Body: []byte(`{"n":1}`), IdempotencyKey: "whk_0123456789abcdef0"}
		b := webhook.PreparedWebhook{URL: "https://b.example/hook", Body: []byte(`{"n":2}`), IdempotencyKey: "whk_0123456789abcdef1"}
		ra, err := e.sup.SendPrepared(ctx, a)
		require.NoError(t, err)
		rs, err := e.sup.SendPreparedBatch(ctx, []webhook.PreparedWebhook{b, a, b})
		require.NoError(t, err)
		require.Equal(t, ra, rs[1])
		require.Equal(t, rs[0], rs[2])
		require.NotEqual(t, ra.ID, rs[0].ID)
		st, err := e.inspector().Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 2, st.Pending)
	})

	// Two batches drawing from one sequence at once: each batch's numbers
	// are contiguous, and together they are 1..2n.
	t.Run("SequencesContiguousPerBatch", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		const n = 20
		var wg sync.WaitGroup
		results := make([][]webhook.Receipt, 2)
		for b := range 2 {
			wg.Go(func() {
				var ws []webhook.MCPWebhook
				for i := range n {
					w := mcp(fmt.Sprintf("https://buyer%d.example/hook", i), fmt.Sprintf("b%d", b))
					w.Routing.SequenceKey = "account_1"
					ws = append(ws, w)
				}
				rs, err := e.sup.SendMCPBatch(ctx, ws)
				if err != nil {
					t.Error(err)
				}
				results[b] = rs
			})
		}
		wg.Wait()
		var all []int64
		for _, rs := range results {
			require.Len(t, rs, n)
			for i, r := range rs {
				require.Equal(t, rs[0].Sequence+int64(i), r.Sequence, "contiguous within the batch")
				all = append(all, r.Sequence)
			}
		}
		slices.Sort(all)
		for i, s := range all {
			require.Equal(t, int64(i+1), s)
		}
	})

	// Under OpenDrop an item whose breaker is open refuses the batch.
	t.Run("OpenDropRefusesTheBatch", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Breaker.FailureThreshold, c.Breaker.OpenAction = 1, webhook.OpenDrop
			c.Retry.MaxAttempts = 1
		})
		down := "https://down.example/hook"
		e.sender.on(down, step{status: 503})
		e.startWorker()
		r := e.sendMCP(mcp(down, "t0"))
		e.attempts(1)
		e.settled(r.ID)
		_, err := e.sup.SendMCPBatch(ctx, []webhook.MCPWebhook{mcp("https://up.example/hook", "t1"), mcp(down, "t2")})
		var be *webhook.BatchError
		require.ErrorAs(t, err, &be)
		require.Equal(t, 1, be.Index)
		require.ErrorIs(t, err, webhook.ErrCircuitOpen)
		refusal := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeCircuitOpen, refusal.Outcome, "the refusal is recorded, as for one webhook")
		st, err := e.inspector().Stats(ctx)
		require.NoError(t, err)
		require.Zero(t, st.Pending+st.Running, "the healthy item was not accepted either")
	})
}

func TestMemoryBatch(t *testing.T) {
	t.Parallel()
	runBatchSuite(t, newMemory)
}

func TestPostgresBatch(t *testing.T) {
	t.Parallel()
	runBatchSuite(t, newPostgres)
}

// In the caller's transaction, a batch commits and rolls back with it, and
// a refused batch leaves the transaction usable.
func TestPostgresBatchTx(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = pe.pg.SendMCPBatchTx(ctx, tx, []webhook.MCPWebhook{mcp("https://a.example/hook", "t1"), {URL: "https://b.example/hook"}})
	var be *webhook.BatchError
	require.ErrorAs(t, err, &be)
	bad := mcp("https://b.example/hook", "t2")
	bad.IdempotencyKey = "whk_0123456789abcdef0"
	_, err = pe.pg.SendMCPTx(ctx, tx, bad)
	require.NoError(t, err)
	conflicting := bad
	conflicting.TaskID = "other" // same key, another payload
	_, err = pe.pg.SendMCPBatchTx(ctx, tx, []webhook.MCPWebhook{mcp("https://c.example/hook", "t3"), conflicting})
	require.ErrorAs(t, err, &be)
	require.Equal(t, 1, be.Index)
	rs, err := pe.pg.SendMCPBatchTx(ctx, tx, []webhook.MCPWebhook{mcp("https://d.example/hook", "t4")})
	require.NoError(t, err, "the transaction is still usable")
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 2, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`), "the single webhook and the last batch; nothing of the refused ones")
	_, err = pe.pg.Delivery(ctx, rs[0].ID)
	require.NoError(t, err)

	tx, err = pe.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = pe.pg.SendMCPBatchTx(ctx, tx, []webhook.MCPWebhook{mcp("https://e.example/hook", "t5")})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, 2, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`), "rolled back with the caller's transaction")
}

// A key bound by a transaction that commits while the batch's statement
// waits on it: the batch is written again, one statement per item, and
// the key gets that transaction's delivery.
func TestPostgresBatchRacesAConcurrentKey(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	raced := mcp("https://a.example/hook", "t1")
	raced.IdempotencyKey = "whk_0123456789abcdef0"
	raced.Routing.SequenceKey = "account_1"
	other := mcp("https://b.example/hook", "t2")
	other.Routing.SequenceKey = "account_1"

	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	first, err := pe.pg.SendMCPTx(ctx, tx, raced)
	require.NoError(t, err)
	type result struct {
		rs  []webhook.Receipt
		err error
	}
	done := make(chan result, 1)
	go func() {
		rs, err := pe.pg.SendMCPBatch(ctx, []webhook.MCPWebhook{other, raced})
		done <- result{rs, err}
	}()
	require.Eventually(t, func() bool { // the batch waits on the uncommitted key (or on the sequence's row)
		return pe.count(`SELECT count(*) FROM pg_locks WHERE NOT granted`) > 0
	}, guard, time.Millisecond)
	require.NoError(t, tx.Commit(ctx))
	res := <-done
	require.NoError(t, res.err)
	require.Equal(t, first, res.rs[1], "the key's delivery is the committed one")
	require.Equal(t, int64(2), res.rs[0].Sequence, "after the committed one's, with no gap")
	require.Equal(t, 2, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries`))
}
