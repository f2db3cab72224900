package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// runInspectorSuite: both supervisors answer an operator's questions the
// same way.
func runInspectorSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("LookupsAgree", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Breaker.FailureThreshold = 3 })
		in := e.sup.(webhook.Inspector)
		ctx := context.Background()
		url := "https://buyer.example/flaky"
		e.sender.on(url, step{status: 503}, step{status: 500})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 3)
		d := e.settled(r.ID)
		got, err := in.Delivery(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, d, got)
		require.Equal(t, webhook.StateDelivered, got.State)
		require.Equal(t, 3, got.Attempts)

		rec, err := in.Attempts(ctx, r.ID)
		require.NoError(t, err)
		require.Len(t, rec, 3)
		for i := range rec {
			require.Equal(t, i+1, rec[i].AttemptNumber)
			require.Equal(t, as[i].Outcome, rec[i].Outcome)
			require.Equal(t, as[i].HTTPStatus, rec[i].HTTPStatus)
			require.Equal(t, as[i].OccurredAt, rec[i].OccurredAt)
			require.Equal(t, r.IdempotencyKey, rec[i].IdempotencyKey)
		}

		st, err := in.Breaker(ctx, url)
		require.NoError(t, err)
		require.Equal(t, webhook.BreakerClosed, st, "a success reset it")
		st, err = in.Breaker(ctx, "https://never.example/used")
		require.NoError(t, err)
		require.Equal(t, webhook.BreakerClosed, st)

		other := e.sendMCP(mcp("https://buyer.example/later", "t2"))
		e.attempts(1)
		e.settled(other.ID)
		rec, err = in.Attempts(ctx, other.ID)
		require.NoError(t, err)
		require.Len(t, rec, 1, "each delivery's own records")
		require.Equal(t, other.ID, rec[0].DeliveryID)
		require.Equal(t, webhook.OutcomeSuccess, rec[0].Outcome)

		for _, id := range []string{"999999", "no-such-id"} {
			_, err = in.Delivery(ctx, id)
			require.ErrorIs(t, err, webhook.ErrNotFound, id)
			_, err = in.Attempts(ctx, id)
			require.ErrorIs(t, err, webhook.ErrNotFound, id)
			_, err = in.Redeliver(ctx, id)
			require.ErrorIs(t, err, webhook.ErrNotFound, id)
		}
	})
}

func TestMemoryInspector(t *testing.T) {
	t.Parallel()
	runInspectorSuite(t, newMemory)
}

func TestPostgresInspector(t *testing.T) {
	t.Parallel()
	runInspectorSuite(t, newPostgres)
}

// waiter is what both supervisors offer to block until a delivery is final.
type waiter interface {
	Wait(ctx context.Context, id string) (webhook.Delivery, error)
}

func runWaitSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("WaitReturnsTheFinalState", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		w := e.sup.(waiter)
		ctx := context.Background()
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: 400})
		r := e.sendMCP(mcp(url, "t1"))

		// No worker yet: a wait whose context ends returns its error, and
		// the snapshot as last read (Postgres reads nothing once the
		// context has ended).
		short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		d, err := w.Wait(short, r.ID)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, webhook.StatePending, d.State)

		e.startWorker()
		d, err = w.Wait(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateFailed, d.State)
		require.Equal(t, 1, d.Attempts)
		_, err = w.Wait(ctx, "999999")
		require.ErrorIs(t, err, webhook.ErrNotFound)
	})
}

func TestMemoryWait(t *testing.T) {
	t.Parallel()
	runWaitSuite(t, newMemory)
}

func TestPostgresWait(t *testing.T) {
	t.Parallel()
	runWaitSuite(t, newPostgres)
}
