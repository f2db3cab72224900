package webhook_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// runBindingSuite: AdCP 3.2 binds an idempotency key to the RFC 8785
// canonical form of its payload. A caller-supplied key submitted again
// with the same payload gets the original receipt (no second delivery, no
// new sequence number); with another payload (or URL), a typed error. And
// what has no canonical form is refused at acceptance.
func runBindingSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("ACallerKeyIsBoundToItsPayload", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		ctx := context.Background()
		url := "https://buyer.example/hook"
		w := mcp(url, "t1")
		w.IdempotencyKey = "evt_0123456789abcdef"
		w.Timestamp = epoch.Add(-time.Minute) // the event's own time, so that a retry is identical
		w.SequenceKey = "mb_1/delivery"
		w.Result = json.RawMessage(`{"media_buy_id":"mb_1","packages":[{"id":"p1","budget":1500.50}]}`)
		r1 := e.sendMCP(w)
		require.Equal(t, int64(1), r1.Sequence)

		// The caller did not learn the outcome and sends the event again,
		// serialised otherwise: the same canonical payload.
		w.Result = json.RawMessage(`{ "packages": [ { "budget": 1.5005e3, "id": "p1" } ], "media_buy_id": "mb_1" }`)
		again := e.sendMCP(w)
		require.Equal(t, r1, again, "the original receipt, no second delivery")

		changed := w
		changed.Result = json.RawMessage(`{"media_buy_id":"mb_1","packages":[{"id":"p1","budget":1600}]}`)
		_, err := e.sup.SendMCP(ctx, changed)
		require.ErrorIs(t, err, webhook.ErrIdempotencyConflict)
		var ve *webhook.ValidationError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, "IdempotencyKey", ve.Field)
		require.ErrorContains(t, err, r1.ID, "the error names the delivery that holds the key")
		require.ErrorContains(t, err, "fresh key")

		elsewhere := w
		elsewhere.URL = "https://other.example/hook"
		_, err = e.sup.SendMCP(ctx, elsewhere)
		require.ErrorIs(t, err, webhook.ErrIdempotencyConflict, "the same payload for another endpoint is not the same delivery")

		later := w
		later.Timestamp = epoch // a SendMCP that lets the timestamp default changes the payload
		_, err = e.sup.SendMCP(ctx, later)
		require.ErrorIs(t, err, webhook.ErrIdempotencyConflict)

		e.startWorker()
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
		require.Equal(t, r1, e.sendMCP(w), "still bound once delivered")
		next := mcp(url, "t2")
		next.SequenceKey = "mb_1/delivery"
		require.Equal(t, int64(2), e.sendMCP(next).Sequence, "the repeats drew no sequence number")
		e.attempts(1)
		require.Len(t, e.sender.sent(), 2, "one delivery per event")

		p := webhook.PreparedWebhook{URL: url, IdempotencyKey: "evt_prepared_000001",
			Body: []byte(`{"idempotency_key":"evt_prepared_000001","list_id":"l1","changes":[1,2]}`)}
		rp, err := e.sup.SendPrepared(ctx, p)
		require.NoError(t, err)
		p.Body = []byte(`{"changes":[1,2],"list_id":"l1","idempotency_key":"evt_prepared_000001"}`)
		rp2, err := e.sup.SendPrepared(ctx, p)
		require.NoError(t, err)
		require.Equal(t, rp, rp2)
		p.Body = []byte(`{"idempotency_key":"evt_prepared_000001","list_id":"l2"}`)
		_, err = e.sup.SendPrepared(ctx, p)
		require.ErrorIs(t, err, webhook.ErrIdempotencyConflict)
		e.attempts(1)
		require.Len(t, e.sender.sent(), 3)
	})

	t.Run("AcceptanceRefusesWhatHasNoCanonicalForm", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		ctx := context.Background()
		url := "https://buyer.example/hook"
		for name, tc := range map[string]struct {
			send  func() error
			field string
		}{
			"a Result number beyond the double range": {func() error {
				w := mcp(url, "t1")
				w.Result = json.RawMessage(`{"impressions":1e400}`)
				_, err := e.sup.SendMCP(ctx, w)
				return err
			}, "Result"},
			"a Result with duplicate keys (duplicate_key_input)": {func() error {
				w := mcp(url, "t1")
				w.Result = json.RawMessage(`{"a":{"b":1,"b":2}}`)
				_, err := e.sup.SendMCP(ctx, w)
				return err
			}, "Result"},
			"a prepared body beyond the double range": {func() error {
				_, err := e.sup.SendPrepared(ctx, webhook.PreparedWebhook{URL: url, IdempotencyKey: "evt_0123456789abcdef",
					Body: []byte(`{"idempotency_key":"evt_0123456789abcdef","n":-1e999}`)})
				return err
			}, "Body"},
			"a prepared body with escaped duplicate keys": {func() error {
				_, err := e.sup.SendPrepared(ctx, webhook.PreparedWebhook{URL: url, IdempotencyKey: "evt_0123456789abcdef",
					Body: []byte(`{"idempotency_key":"evt_0123456789abcdef","n":1,"\u006e":2}`)})
				return err
			}, "Body"},
			"a prepared body with a lone surrogate": {func() error {
				_, err := e.sup.SendPrepared(ctx, webhook.PreparedWebhook{URL: url, IdempotencyKey: "evt_0123456789abcdef",
					Body: []byte(`{"idempotency_key":"evt_0123456789abcdef","s":"\ud800"}`)})
				return err
			}, "Body"},
		} {
			err := tc.send()
			var ve *webhook.ValidationError
			require.ErrorAs(t, err, &ve, name)
			require.Equal(t, tc.field, ve.Field, name)
		}
		e.startWorker()
		e.sendMCP(mcp(url, "t2"))
		require.Equal(t, "t2", e.attempts(1)[0].TaskID, "nothing refused was queued")
		require.Len(t, e.sender.sent(), 1)
	})
}

func TestMemoryBinding(t *testing.T) {
	t.Parallel()
	runBindingSuite(t, newMemory)
}

func TestPostgresBinding(t *testing.T) {
	t.Parallel()
	runBindingSuite(t, newPostgres)
}

// A key being bound by a transaction that has not committed: a second
// submission waits for it and then gets its receipt, and many racing
// submissions make one delivery.
func TestPostgresBindingRaces(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	ctx := context.Background()
	w := mcp("https://buyer.example/hook", "t1")
	w.IdempotencyKey = "evt_0123456789abcdef"
	w.Timestamp = epoch

	// Its breaker is open (OpenDefer: accepted, held back), which must not
	// turn the second submission into a refusal.
	_, err := pe.pool.Exec(ctx, `INSERT INTO adcp_webhook_breakers (breaker_key, state, failures, opened_at, retry_at, updated_at)
		VALUES ($1, 'open', 5, $2, $3, $2)`, w.URL, epoch, epoch.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerOpen, func() webhook.BreakerState {
		st, err := pe.pg.Breaker(ctx, w.URL)
		require.NoError(t, err)
		return st
	}())

	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	r1, err := pe.pg.SendMCPTx(ctx, tx, w)
	require.NoError(t, err)
	type result struct {
		r   webhook.Receipt
		err error
	}
	second := make(chan result, 1)
	go func() {
		r, err := pe.pg.SendMCP(ctx, w) // blocks on the uncommitted key
		second <- result{r, err}
	}()
	select {
	case <-second:
		t.Fatal("the second submission returned before the first committed")
	case <-time.After(50 * time.Millisecond): // not a timing assertion: either way it must not have a receipt yet
	}
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, result{r1, nil}, <-second)

	w2 := mcp("https://buyer.example/hook", "t2")
	w2.IdempotencyKey = "evt_fedcba9876543210"
	w2.Timestamp = epoch
	got := make(chan result, 8)
	for range 8 {
		go func() {
			r, err := pe.pg.SendMCP(ctx, w2)
			got <- result{r, err}
		}()
	}
	first := <-got
	require.NoError(t, first.err)
	for range 7 {
		require.Equal(t, first, <-got)
	}
	require.Equal(t, 1, pe.count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE idempotency_key = $1`, w2.IdempotencyKey))
}

// A prepared body's own idempotency_key is the one receivers see: the
// delivery's key must be it, or the binding would bind another key.
func TestPreparedKeyMustBeTheBodys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, newMemory)
	_, err := e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{URL: "https://buyer.example/hook",
		IdempotencyKey: "evt_outer_0000000001", Body: []byte(`{"idempotency_key":"evt_inner_0000000001","amount":1}`)})
	var ve *webhook.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "IdempotencyKey", ve.Field)
	_, err = e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{URL: "https://buyer.example/hook",
		IdempotencyKey: "evt_outer_0000000001", Body: []byte(`{"task":{"id":"t1"}}`)})
	require.NoError(t, err, "a body without a key of its own (an A2A task) takes the delivery's")
}
