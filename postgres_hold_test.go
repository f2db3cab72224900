package webhook_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/stretchr/testify/require"
)

// A held retry whose release fails must still wait for its scheduled time
// (here a 10-minute Retry-After), not come back when the claim's lease ends.
func TestPostgresFailedReleaseKeepsTheRetrySchedule(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{}, func(c *suiteConfig) {
		c.Retry.MaxDelay = time.Hour
	})
	ctx := context.Background()
	// Make every release fail (a running row under a negated token turning pending).
	_, err := pe.pool.Exec(ctx, `
CREATE FUNCTION no_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state = 'running' AND NEW.state = 'pending' AND OLD.lease_token < 0 THEN
    RAISE EXCEPTION 'release refused by test';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER no_release BEFORE UPDATE ON adcp_webhook_deliveries FOR EACH ROW EXECUTE FUNCTION no_release();`)
	require.NoError(t, err)
	url := "https://buyer.example/busy"
	pe.sender.on(url, step{status: 429, header: http.Header{"Retry-After": {"600"}}})
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "t1"))
	a := pe.attempts(1)[0]
	require.True(t, a.WillRetry)
	require.Equal(t, epoch.Add(10*time.Minute), a.NextRetryAt)
	pe.clock.Set(epoch.Add(3 * time.Minute)) // past the lease (2m), before the retry (10m)
	require.False(t, pe.sentWithin(2, 3*time.Second), "attempt 2 was sent at %v, though the receiver asked for %v", pe.clock.Now(), a.NextRetryAt)
}

// A retry must not start while the sink still has the previous attempt's
// record, even when the sink takes longer than what is left of the lease.
func TestPostgresHeldRetryOutlivesItsLease(t *testing.T) {
	t.Parallel()
	release, held := make(chan struct{}), make(chan struct{}, 1)
	pe := newPgEnv(t, webhook.PostgresConfig{LeaseDuration: 10 * time.Second}, func(c *suiteConfig) {
		c.Retry.MaxDelay = time.Hour
		c.Retry.SinkTimeout = guard
		sink := c.Sink
		c.Sink = webhook.LogSinkFunc(func(ctx context.Context, a webhook.Attempt) error {
			if a.AttemptNumber == 1 {
				held <- struct{}{}
				<-release
			}
			return sink.RecordAttempt(ctx, a)
		})
	})
	url := "https://buyer.example/busy"
	pe.sender.on(url, step{status: 429, header: http.Header{"Retry-After": {"30"}}})
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "t1"))
	<-held
	pe.clock.Set(epoch.Add(15 * time.Second)) // past the 10s lease, before the 30s retry
	pe.sendMCP(mcp("https://buyer.example/other", "wake"))
	sent := pe.sentWithin(3, 3*time.Second)
	close(release)
	require.False(t, sent, "attempt 2 was sent while the sink held attempt 1's record, 15s before its Retry-After")
}

// A held retry whose write took longer than SinkTimeout plus a statement's
// time (a lock wait, failover retries: up to the lease) is still held: the
// hold counts from the write, not from the attempt's end, so no other
// worker sends attempt 2 before the sink has had attempt 1's record.
func TestPostgresHeldRetryCountsFromItsWrite(t *testing.T) {
	t.Parallel()
	url := "https://buyer.example/busy"
	inSink, releaseSink := make(chan struct{}, 1), make(chan struct{})
	pe := newPgEnv(t, webhook.PostgresConfig{Concurrency: 4}, func(c *suiteConfig) {
		c.Retry.SinkTimeout = guard
		sink := c.Sink
		c.Sink = webhook.LogSinkFunc(func(ctx context.Context, a webhook.Attempt) error {
			if a.URL == url && a.AttemptNumber == 1 {
				inSink <- struct{}{}
				<-releaseSink
			}
			return sink.RecordAttempt(ctx, a)
		})
	})
	ctx := context.Background()
	sending := make(chan struct{})
	pe.sender.on(url, step{status: 429, header: http.Header{"Retry-After": {"1"}}, gate: sending})
	runWorker(t, pe.sup)
	r := pe.sendMCP(mcp(url, "t1"))
	id, _ := strconv.ParseInt(r.ID, 10, 64)
	pe.waitSent(1)
	// The database is slow: the completion's write waits on the row.
	tx, err := pe.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM adcp_webhook_deliveries WHERE id = $1 FOR UPDATE`, id)
	require.NoError(t, err)
	close(sending)
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`) > 0
	}, guard, 10*time.Millisecond)
	pe.clock.Set(epoch.Add(guard + 16*time.Second)) // the write took SinkTimeout + 16s (lease: 2m)
	require.NoError(t, tx.Rollback(ctx))
	require.Eventually(t, func() bool {
		return pe.count(`SELECT count(*) FROM adcp_webhook_deliveries WHERE id = $1 AND lease_token < 0`, id) == 1
	}, guard, 10*time.Millisecond)
	<-inSink // the sink has attempt 1's record now
	pe.sendMCP(mcp("https://buyer.example/other", "wake"))
	sent := pe.sentWithin(3, 3*time.Second)
	close(releaseSink)
	require.False(t, sent, "attempt 2 was sent before the sink returned from attempt 1's record: %+v", pe.sender.sent())
}
