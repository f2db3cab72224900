package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// Encryption at rest on the less common paths: per-item batches, re-emission,
// Reencrypt of sequenced rows and of rows from before the payload binding,
// activity records.

// The per-item (OpenDrop) batch path, with encryption: sealed, sent intact,
// duplicates compared.
func TestPostgresEncryptionOpenDropBatch(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	enc, _ := ring(t, "k1")
	sup := newPostgresOn(t, w.pool, suiteConfig{Sender: w.sender, Retry: webhook.RetryPolicy{MaxAttempts: 1},
		Breaker: webhook.BreakerPolicy{OpenAction: webhook.OpenDrop}},
		webhook.PostgresConfig{Encryption: enc, PollInterval: 50 * time.Millisecond})
	ctx := context.Background()
	a := encWebhook(w, "task_a")
	a.WriteSequenceNumber, a.SequenceKey = true, "s"
	a.Headers = map[string]string{"X-A2A-Notification-Token": encHeaderValue}
	b := encWebhook(w, "task_b")
	b.Authentication = &webhook.Authentication{Scheme: webhook.AuthHMACSHA256, Credentials: encCredentials}
	ts := time.Now()
	a.Timestamp, b.Timestamp = ts, ts
	a.IdempotencyKey, b.IdempotencyKey = webhook.NewIdempotencyKey(), webhook.NewIdempotencyKey()
	rs, err := sup.SendMCPBatch(ctx, []webhook.MCPWebhook{a, b})
	require.NoError(t, err)
	again, err := sup.SendMCPBatch(ctx, []webhook.MCPWebhook{a, b})
	require.NoError(t, err)
	require.Equal(t, rs[0].ID, again[0].ID)
	w.requireNoPlaintext(nil)
	runWorker(t, sup)
	cctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	for _, r := range rs {
		d, err := sup.Wait(cctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State, d.LastError)
	}
	got, err := w.rcv.WaitFor(cctx, 2)
	require.NoError(t, err)
	for _, g := range got {
		if g.URI == "/hook/task_a" {
			require.Contains(t, string(g.Body), `"sequence_number":1`)
			require.Equal(t, encHeaderValue, g.Header.Get("X-A2A-Notification-Token"))
		}
	}
}

// Re-emission of a sealed row: sealed under its own key, headers and
// credentials carried over.
func TestPostgresEncryptionReemission(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	enc, _ := ring(t, "k1")
	sup := newPostgresOn(t, w.pool, suiteConfig{Sender: w.sender, Retry: webhook.RetryPolicy{MaxAttempts: 1, Horizon: 24 * time.Hour}},
		webhook.PostgresConfig{Encryption: enc, PollInterval: 50 * time.Millisecond})
	ctx := context.Background()
	a := encWebhook(w, "task_a")
	a.WriteSequenceNumber, a.SequenceKey = true, "s"
	a.Headers = map[string]string{"X-A2A-Notification-Token": encHeaderValue}
	a.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: encCredentials}
	r, err := sup.SendMCP(ctx, a)
	require.NoError(t, err)
	_, err = w.pool.Exec(ctx, `UPDATE adcp_webhook_deliveries SET state = 'failed', finished_at = now(), first_attempt_at = now() - interval '48 hours', attempts = 1, last_status = 500 WHERE id = $1`, r.ID)
	require.NoError(t, err)
	nr, err := sup.Redeliver(ctx, r.ID)
	require.NoError(t, err)
	require.NotEqual(t, r.ID, nr.ID)
	w.requireNoPlaintext(nil)
	runWorker(t, sup)
	cctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	d, err := sup.Wait(cctx, nr.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State, d.LastError)
	got, err := w.rcv.WaitFor(cctx, 1)
	require.NoError(t, err)
	require.Equal(t, "Bearer "+encCredentials, got[0].Header.Get("Authorization"))
	require.Equal(t, encHeaderValue, got[0].Header.Get("X-A2A-Notification-Token"))
	require.Contains(t, string(got[0].Body), `"sequence_number":1`)
}

// Reencrypt of sealed template rows and of plain rows whose
// payload_sha256 is NULL (accepted before the payload binding).
func TestPostgresReencryptSequencedAndUnboundRows(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	ctx := context.Background()
	k1only, rotated, k2only := rotation(t)

	bodies := map[string][]byte{}
	plainSup := w.supervisor(nil)
	legacy := encWebhook(w, "task_legacy")
	legacy.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: encCredentials}
	r0, err := plainSup.SendMCP(ctx, legacy)
	require.NoError(t, err)
	_, err = w.pool.Exec(ctx, `UPDATE adcp_webhook_deliveries SET payload_sha256 = NULL WHERE id = $1`, r0.ID)
	require.NoError(t, err)
	d, _ := plainSup.Delivery(ctx, r0.ID)
	bodies[r0.ID] = d.Body

	s1 := w.supervisor(k1only)
	var ids = []string{r0.ID}
	for i, task := range []string{"task_s1", "task_s2"} {
		m := encWebhook(w, task)
		m.WriteSequenceNumber, m.SequenceKey = true, "buyer-1"
		if i == 0 {
			m.Headers = map[string]string{"X-A2A-Notification-Token": encHeaderValue}
		}
		r, err := s1.SendMCP(ctx, m)
		require.NoError(t, err)
		d, _ := s1.Delivery(ctx, r.ID)
		bodies[r.ID] = d.Body
		ids = append(ids, r.ID)
	}
	res, err := w.supervisor(rotated).Reencrypt(ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Reencrypted)
	var nulls int
	require.NoError(t, w.pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries WHERE payload_sha256 IS NULL`).Scan(&nulls))
	require.Equal(t, 1, nulls, "a legacy row keeps no fingerprint")

	after := w.supervisor(k2only)
	for _, id := range ids {
		d, err := after.Delivery(ctx, id)
		require.NoError(t, err)
		require.Equal(t, string(bodies[id]), string(d.Body))
	}
	runWorker(t, after)
	cctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	for _, id := range ids {
		d, err := after.Wait(cctx, id)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State, d.LastError)
	}
}

// Activity's pending record of a sealed delivery gives its plaintext size.
func TestPostgresEncryptionActivitySize(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	enc, _ := ring(t, "k1")
	sup := w.supervisor(enc)
	ctx := context.Background()
	m := encWebhook(w, "task_act")
	m.NotificationType = "task_status"
	r, err := sup.SendMCP(ctx, m)
	require.NoError(t, err)
	d, err := sup.Delivery(ctx, r.ID)
	require.NoError(t, err)
	recs, err := sup.Activity(ctx, webhook.ActivityQuery{DeliveryID: r.ID})
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	require.Equal(t, len(d.Body), recs[0].PayloadSizeBytes, "pending record's size")
}

// A row a worker holds locked when Reencrypt passes is skipped, and taken
// on a later sweep: Reencrypt returns only when it is rewritten too.
func TestPostgresReencryptWaitsForLockedRows(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	ctx := context.Background()
	plain := w.supervisor(nil)
	var ids []string
	for i := range 5 {
		r, err := plain.SendMCP(ctx, encWebhook(w, "task_locked_"+string(rune('a'+i))))
		require.NoError(t, err)
		ids = append(ids, r.ID)
	}
	tx, err := w.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT id FROM adcp_webhook_deliveries WHERE id = $1 FOR UPDATE`, ids[2])
	require.NoError(t, err)
	released := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond) // Reencrypt's first sweep finds it locked
		_ = tx.Rollback(ctx)
		close(released)
	}()
	enc, _ := ring(t, "k1")
	res, err := w.supervisor(enc).Reencrypt(ctx, 2)
	require.NoError(t, err)
	<-released
	require.EqualValues(t, 5, res.Reencrypted)
	var left int
	require.NoError(t, w.pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries WHERE sealed_with IS NULL`).Scan(&left))
	require.Zero(t, left)
}

// An OpenDrop refusal of a sealed template must still be recorded, as it is
// for any other webhook (TestPostgresDropRefusalStoresNothing).
func TestPostgresSealedTemplateRefusalIsRecorded(t *testing.T) {
	t.Parallel()
	enc, _ := ring(t, "k1")
	pe := newPgEnv(t, webhook.PostgresConfig{Encryption: enc}, func(c *suiteConfig) {
		c.Retry.MaxAttempts = 1
		c.Breaker = webhook.BreakerPolicy{FailureThreshold: 1, OpenAction: webhook.OpenDrop}
	})
	url := "https://buyer.example/dead"
	pe.sender.on(url, step{status: 503})
	runWorker(t, pe.sup)
	pe.sendMCP(mcp(url, "t1"))
	pe.attempts(1)
	for _, tmpl := range []bool{false, true} {
		w := mcp(url, "t2")
		w.SequenceKey = "s"
		w.WriteSequenceNumber = tmpl
		w.IdempotencyKey = webhook.NewIdempotencyKey()
		_, err := pe.sup.SendMCP(context.Background(), w)
		require.ErrorIs(t, err, webhook.ErrCircuitOpen)
	}
	require.Equal(t, 2, pe.count(`SELECT count(*) FROM adcp_webhook_attempts WHERE delivery_id IS NULL AND outcome = 'circuit_open' AND task_id = 't2'`),
		"both refusals recorded (plain body, then sealed template)")
}

// tracer cancels a context once the enqueue statement has run.
type cancelAfterEnqueue struct{ cancel context.CancelFunc }

func (c *cancelAfterEnqueue) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (c *cancelAfterEnqueue) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if c.cancel != nil && d.Err == nil && (d.CommandTag.Select() || d.CommandTag.Insert()) {
		c.cancel()
		c.cancel = nil
	}
}

// SendMCPTx that returns an error must not leave a delivery in the
// caller's transaction.
func TestPostgresSealedTemplateErrorLeavesNothingInTx(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	tr := &cancelAfterEnqueue{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	enc, _ := ring(t, "k1")
	sup := newPostgresOn(t, pool, suiteConfig{Sender: newScriptedSender()}, webhook.PostgresConfig{Encryption: enc, PollOnly: true})
	tx, err := pool.Begin(context.Background())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	tr.cancel = cancel
	w := mcp("https://buyer.example/hook", "t1")
	w.SequenceKey, w.WriteSequenceNumber = "s", true
	_, err = sup.SendMCPTx(ctx, tx, w)
	require.Error(t, err)
	// The caller carries on with its own work and commits.
	require.NoError(t, tx.Commit(context.Background()))
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM adcp_webhook_deliveries`).Scan(&n))
	require.Zero(t, n, "an errored SendMCPTx left a delivery in the caller's tx")
}
