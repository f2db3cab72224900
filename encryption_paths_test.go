package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
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

// R2: Reencrypt of sealed template rows and of plain rows whose
// payload_sha256 is NULL (accepted before the payload binding).
func TestPostgresReencryptSequencedAndUnboundRows(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	ctx := context.Background()
	k1only, keys := ring(t, "k1")
	k2 := mustKey(t)
	rotated, err := webhook.NewEncryptionKeys("k2", map[string][]byte{"k1": keys["k1"], "k2": k2})
	require.NoError(t, err)
	k2only, err := webhook.NewEncryptionKeys("k2", map[string][]byte{"k2": k2})
	require.NoError(t, err)

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

// R3: Activity's pending record reports the sealed size, not the body's.
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
