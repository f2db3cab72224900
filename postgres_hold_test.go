package webhook_test

import (
	"context"
	"net/http"
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
