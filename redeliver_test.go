package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// redeliverer is what both supervisors offer operators to send a failed
// delivery again.
type redeliverer interface {
	Redeliver(ctx context.Context, id string) (webhook.Receipt, error)
}

// settled returns the delivery once it is final and its records were
// reported.
func (e *env) settled(id string) webhook.Delivery {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	var d webhook.Delivery
	var err error
	switch s := e.sup.(type) {
	case *webhook.MemorySupervisor:
		d, err = s.Wait(ctx, id)
	case *webhook.PostgresSupervisor:
		d, err = s.Delivery(ctx, id)
	default:
		e.t.Fatalf("no lookup for %T", e.sup)
	}
	require.NoError(e.t, err)
	return d
}

// runRedeliverySuite: AdCP 3.2's retry horizon is a maximum from the first
// attempt. Within it a redelivery sends the same bytes under the same key
// and does not extend it; past it the key is never sent again: the
// delivery is re-emitted under a fresh key, with the same notification_id,
// linked to the original.
func runRedeliverySuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("WithinTheHorizonTheSameKeyPastItAReemission", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 }) // the default 24 h horizon
		rd := e.sup.(redeliverer)
		url := "https://buyer.example/misconfigured"
		e.sender.on(url, step{status: 400}, step{status: 400})
		e.startWorker()
		w := mcp(url, "t1")
		w.Status = webhook.StatusCompleted // notification_id "t1.terminal"
		r := e.sendMCP(w)
		require.Equal(t, webhook.OutcomeFailure, e.attempts(1)[0].Outcome)
		require.Equal(t, webhook.StateFailed, e.settled(r.ID).State)

		_, err := rd.Redeliver(context.Background(), "999999")
		require.ErrorIs(t, err, webhook.ErrNotFound)

		// 12 hours later, within the horizon: the same delivery, key and bytes.
		e.clock.Advance(12 * time.Hour)
		again, err := rd.Redeliver(context.Background(), r.ID)
		require.NoError(t, err)
		require.Equal(t, r, again)
		a := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeFailure, a.Outcome)
		require.Equal(t, r.IdempotencyKey, a.IdempotencyKey)
		require.Empty(t, a.ReemissionOf)
		sent := e.sender.sent()
		require.Len(t, sent, 2)
		require.Equal(t, sent[0].Body, sent[1].Body)
		e.settled(r.ID)

		// 25 hours after the first attempt the horizon has passed, whatever
		// the redelivery at 12 hours did: a re-emission.
		e.clock.Advance(13 * time.Hour)
		re, err := rd.Redeliver(context.Background(), r.ID)
		require.NoError(t, err)
		require.NotEqual(t, r.ID, re.ID)
		require.NotEqual(t, r.IdempotencyKey, re.IdempotencyKey)
		require.Regexp(t, `^whk_[0-9a-f-]{36}$`, re.IdempotencyKey)
		require.Equal(t, r.ID, re.ReemissionOf)
		a = e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
		require.Equal(t, re.ID, a.DeliveryID)
		require.Equal(t, re.IdempotencyKey, a.IdempotencyKey)
		require.Equal(t, r.ID, a.ReemissionOf, "the record links the re-emission to the original")
		sent = e.sender.sent()
		require.Len(t, sent, 3)
		require.Equal(t, re.IdempotencyKey, sent[2].Key)
		var before, after map[string]any
		require.NoError(t, json.Unmarshal(sent[0].Body, &before))
		require.NoError(t, json.Unmarshal(sent[2].Body, &after))
		require.Equal(t, re.IdempotencyKey, after["idempotency_key"])
		require.Equal(t, "t1.terminal", after["notification_id"], "the logical notification keeps its identity")
		before["idempotency_key"] = re.IdempotencyKey
		require.Equal(t, before, after, "the same payload under the fresh key")
		require.True(t, bytes.Equal(bytes.Replace(sent[0].Body, []byte(r.IdempotencyKey), []byte(re.IdempotencyKey), 1), sent[2].Body))

		orig, nd := e.settled(r.ID), e.settled(re.ID)
		require.Equal(t, webhook.StateFailed, orig.State)
		require.Equal(t, re.ID, orig.ReemittedAs)
		require.Equal(t, r.ID, nd.ReemissionOf)
		require.Equal(t, webhook.StateDelivered, nd.State)
		_, err = rd.Redeliver(context.Background(), r.ID)
		require.ErrorIs(t, err, webhook.ErrNotFailed, "an original is re-emitted once")
		require.ErrorContains(t, err, re.ID, "the error names the re-emission")
		_, err = rd.Redeliver(context.Background(), re.ID)
		require.ErrorIs(t, err, webhook.ErrNotFailed, "delivered")
	})

	t.Run("APreparedBodyPastTheHorizonIsNotRebuilt", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		rd := e.sup.(redeliverer)
		url := "https://buyer.example/misconfigured"
		e.sender.on(url, step{status: 400})
		e.startWorker()
		r, err := e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{URL: url,
			Body: []byte(`{"idempotency_key":"evt_0123456789abcdef","notification_id":"n1"}`), IdempotencyKey: "evt_0123456789abcdef"})
		require.NoError(t, err)
		require.Equal(t, webhook.OutcomeFailure, e.attempts(1)[0].Outcome)
		e.settled(r.ID)

		e.clock.Advance(25 * time.Hour)
		_, err = rd.Redeliver(context.Background(), r.ID)
		require.ErrorIs(t, err, webhook.ErrReemitPrepared)
		require.ErrorContains(t, err, "fresh idempotency_key and the same notification_id", "the error says what to do")
		d := e.settled(r.ID)
		require.Equal(t, webhook.StateFailed, d.State, "nothing changed")
		require.Empty(t, d.ReemittedAs)
		require.Len(t, e.sender.sent(), 1)
	})
}

func runRedeliveryRules(t *testing.T, newSup newSupervisorFunc) {
	// A receiver that answered 409 holds the key bound to another payload:
	// the key must not be sent again, even within the horizon.
	t.Run("After409AReemission", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		rd := e.sup.(redeliverer)
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: 409})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		require.Equal(t, 409, e.attempts(1)[0].HTTPStatus)
		e.settled(r.ID)
		re, err := rd.Redeliver(context.Background(), r.ID)
		require.NoError(t, err)
		require.Equal(t, r.ID, re.ReemissionOf)
		require.NotEqual(t, r.IdempotencyKey, re.IdempotencyKey)
		require.Equal(t, re.IdempotencyKey, e.attempts(1)[0].IdempotencyKey)
		for _, s := range e.sender.sent()[1:] {
			require.NotEqual(t, r.IdempotencyKey, s.Key, "the 409'd key is never sent again")
		}
	})

	// Concurrent redeliveries of one delivery past its horizon make one
	// re-emission.
	t.Run("OneReemissionUnderConcurrency", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		rd := e.sup.(redeliverer)
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: 400})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		e.attempts(1)
		e.settled(r.ID)
		e.clock.Advance(25 * time.Hour)
		const n = 8
		type result struct {
			r   webhook.Receipt
			err error
		}
		got := make(chan result, n)
		for range n {
			go func() {
				re, err := rd.Redeliver(context.Background(), r.ID)
				got <- result{re, err}
			}()
		}
		made := map[string]bool{}
		for range n {
			res := <-got
			if res.err == nil {
				made[res.r.ID] = true
			} else {
				require.ErrorIs(t, res.err, webhook.ErrNotFailed)
			}
		}
		require.Len(t, made, 1, "one re-emission")
	})
}

func TestMemoryRedelivery(t *testing.T) {
	t.Parallel()
	runRedeliverySuite(t, newMemory)
	runRedeliveryRules(t, newMemory)
}

func TestPostgresRedelivery(t *testing.T) {
	t.Parallel()
	runRedeliverySuite(t, newPostgres)
	runRedeliveryRules(t, newPostgres)
}
