package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/jcs"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

// Encryption at rest on Postgres (PostgresConfig.Encryption), against a
// real Postgres and a real receiver over loopback.

// ring makes a key ring of fresh keys, the first current.
func ring(t *testing.T, ids ...string) (*webhook.EncryptionKeys, map[string][]byte) {
	t.Helper()
	keys := map[string][]byte{}
	for _, id := range ids {
		k, err := webhook.GenerateEncryptionKey()
		require.NoError(t, err)
		keys[id] = k
	}
	r, err := webhook.NewEncryptionKeys(ids[0], keys)
	require.NoError(t, err)
	return r, keys
}

// encWorld is a database, a receiver and a way to make supervisors on them.
type encWorld struct {
	t      *testing.T
	pool   *pgxpool.Pool
	rcv    *webhooktest.Receiver
	sender *webhook.HTTPSender
}

func newEncWorld(t *testing.T) *encWorld {
	t.Helper()
	w := &encWorld{t: t, pool: pgtest.New(t)}
	w.rcv = webhooktest.NewReceiver(webhooktest.Config{})
	t.Cleanup(w.rcv.Close)
	var err error
	w.sender, err = webhook.NewHTTPSender(webhook.HTTPSenderConfig{Development: true})
	require.NoError(t, err)
	return w
}

func (w *encWorld) supervisor(enc *webhook.EncryptionKeys) *webhook.PostgresSupervisor {
	w.t.Helper()
	return newPostgresOn(w.t, w.pool, suiteConfig{Sender: w.sender, Retry: webhook.RetryPolicy{MaxAttempts: 1}},
		webhook.PostgresConfig{Encryption: enc, PollInterval: 50 * time.Millisecond})
}

// secrets of the test's deliveries, none of which may be stored readable.
const (
	encToken       = "push-token-0123456789-abcdef"
	encCredentials = "hmac-credential-0123456789-ABCDEFGHIJ"
	encHeaderValue = "a2a-notification-token-0123456789"
	encResult      = "confidential-media-buy-result"
)

func encWebhook(w *encWorld, task string) webhook.MCPWebhook {
	m := mcp(w.rcv.URL+"/hook/"+task, task)
	m.Token, m.Result = encToken, map[string]string{"note": encResult}
	return m
}

// rawRows reads every deliveries row as Postgres prints it, and its
// secret columns as bytes.
func (w *encWorld) rawRows() []string {
	w.t.Helper()
	rows, err := w.pool.Query(context.Background(), `SELECT d::text FROM adcp_webhook_deliveries d ORDER BY id`)
	require.NoError(w.t, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(w.t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(w.t, rows.Err())
	return out
}

// requireNoPlaintext checks that no stored row shows a secret, as text or
// as the hex of a bytea, nor the plain payload fingerprint.
func (w *encWorld) requireNoPlaintext(plainFingerprints [][]byte) {
	w.t.Helper()
	rows := w.rawRows()
	require.NotEmpty(w.t, rows)
	for _, row := range rows {
		for _, secret := range []string{encToken, encCredentials, encHeaderValue, encResult, `"status":"completed"`} {
			require.NotContains(w.t, row, secret)
			require.NotContains(w.t, row, hex.EncodeToString([]byte(secret)))
		}
		for _, fp := range plainFingerprints {
			require.NotContains(w.t, row, hex.EncodeToString(fp))
		}
	}
}

func TestPostgresEncryptionAtRest(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	enc, _ := ring(t, "k1")
	sup := w.supervisor(enc)
	ctx := context.Background()

	// Every way in: one, a batch, inside the caller's transaction; with
	// legacy credentials, headers and a sequence number written at
	// acceptance.
	hmac := encWebhook(w, "task_hmac")
	hmac.Authentication = &webhook.Authentication{Scheme: webhook.AuthHMACSHA256, Credentials: encCredentials}
	seq := encWebhook(w, "task_seq")
	seq.Result, seq.WriteSequenceNumber, seq.SequenceKey = map[string]string{"note": encResult}, true, "buyer-1"
	receipts := []webhook.Receipt{}
	for _, m := range []webhook.MCPWebhook{hmac, seq, seq} {
		r, err := sup.SendMCP(ctx, m)
		require.NoError(t, err)
		receipts = append(receipts, r)
	}
	require.EqualValues(t, 2, receipts[2].Sequence)
	prepKey := webhook.NewIdempotencyKey()
	prep := webhook.PreparedWebhook{URL: w.rcv.URL + "/a2a", IdempotencyKey: prepKey,
		Body:    []byte(`{"idempotency_key":"` + prepKey + `","kind":"task","secret":"` + encResult + `"}`),
		Routing: webhook.Routing{Headers: map[string]string{"X-A2A-Notification-Token": encHeaderValue}}}
	key := webhook.NewIdempotencyKey()
	rs, err := sup.SendPreparedBatch(ctx, []webhook.PreparedWebhook{prep, {URL: w.rcv.URL + "/b", IdempotencyKey: key,
		Body: []byte(`{"idempotency_key":"` + key + `","secret":"` + encResult + `"}`)}})
	require.NoError(t, err)
	receipts = append(receipts, rs...)
	tx, err := w.pool.Begin(ctx)
	require.NoError(t, err)
	r, err := sup.SendMCPTx(ctx, tx, encWebhook(w, "task_tx"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	receipts = append(receipts, r)

	// The binding still works on sealed fingerprints: the same payload is
	// the same delivery, a changed one is refused.
	again, err := sup.SendPrepared(ctx, prep)
	require.NoError(t, err)
	require.Equal(t, receipts[3].ID, again.ID)
	changed := prep
	changed.Body = []byte(`{"idempotency_key":"` + prepKey + `","kind":"task","secret":"changed"}`)
	_, err = sup.SendPrepared(ctx, changed)
	require.ErrorIs(t, err, webhook.ErrIdempotencyConflict)
	moved := prep
	moved.URL = w.rcv.URL + "/elsewhere"
	_, err = sup.SendPrepared(ctx, moved)
	require.ErrorIs(t, err, webhook.ErrIdempotencyConflict)

	// The inspector shows the bodies; the table shows none of them.
	var fps [][]byte
	bodies := map[string][]byte{}
	for _, r := range receipts {
		d, err := sup.Delivery(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, "k1", d.EncryptionKey)
		require.Contains(t, string(d.Body), encResult)
		bodies[r.IdempotencyKey] = d.Body
		fps = append(fps, sha256JCS(t, d.Body))
		if r.Sequence > 0 { // the binding is to the payload as submitted: its number 0
			n := fmt.Sprintf(`"sequence_number":%d`, r.Sequence)
			fps = append(fps, sha256JCS(t, bytes.Replace(d.Body, []byte(n), []byte(`"sequence_number":0`), 1)))
		}
	}
	require.Contains(t, string(bodies[receipts[2].IdempotencyKey]), `"sequence_number":2`)
	w.requireNoPlaintext(fps)

	// Workers send the plaintext, exactly as accepted.
	runWorker(t, sup)
	cctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	got, err := w.rcv.WaitFor(cctx, len(receipts))
	require.NoError(t, err)
	for _, d := range got {
		require.Equal(t, string(bodies[d.IdempotencyKey]), string(d.Body))
		switch d.IdempotencyKey {
		case receipts[0].IdempotencyKey:
			ts := d.Header.Get("X-ADCP-Timestamp")
			require.Equal(t, "sha256="+receive.LegacyHMAC(encCredentials, ts, d.Body), d.Header.Get("X-ADCP-Signature"))
		case receipts[3].IdempotencyKey:
			require.Equal(t, encHeaderValue, d.Header.Get("X-A2A-Notification-Token"))
		}
	}
	for _, r := range receipts {
		d, err := sup.Wait(cctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State, d.LastError)
	}
	w.requireNoPlaintext(fps)

	// A process without the ring shows no body, and says whose key.
	plain := w.supervisor(nil)
	d, err := plain.Delivery(ctx, receipts[0].ID)
	require.NoError(t, err)
	require.Nil(t, d.Body)
	require.Equal(t, "k1", d.EncryptionKey)
	_, err = plain.SendPrepared(ctx, prep)
	require.ErrorIs(t, err, webhook.ErrCannotDecrypt, "a key bound to a sealed payload cannot be compared without the ring")
}

// sha256JCS is the plain payload fingerprint of body.
func sha256JCS(t *testing.T, body []byte) []byte {
	t.Helper()
	fp, err := jcs.Sum256(body)
	require.NoError(t, err)
	return fp[:]
}

// Values moved between rows or columns, a changed URL, and a key the ring
// lacks: each such delivery fails alone with the reason, sends nothing,
// and the others are delivered.
func TestPostgresEncryptionRefusesSwappedRows(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	enc, _ := ring(t, "k1")
	sup := w.supervisor(enc)
	ctx := context.Background()
	ids := map[string]string{}
	for _, task := range []string{"task_a", "task_b", "task_c", "task_d", "task_e", "task_ok", "task_seq"} {
		m := encWebhook(w, task)
		switch task {
		case "task_d":
			m.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: encCredentials}
		case "task_seq":
			m.WriteSequenceNumber, m.SequenceKey = true, "buyer-1"
		}
		r, err := sup.SendMCP(ctx, m)
		require.NoError(t, err)
		ids[task] = r.ID
	}
	other, _ := ring(t, "k9")
	stranger := w.supervisor(other)
	r, err := stranger.SendMCP(ctx, encWebhook(w, "task_stranger"))
	require.NoError(t, err)
	ids["task_stranger"] = r.ID

	exec := func(sql string, args ...any) {
		_, err := w.pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	// a gets b's body; c's URL is pointed elsewhere; d's credentials move
	// into its body column; e's fingerprint into its body.
	exec(`UPDATE adcp_webhook_deliveries SET body = (SELECT body FROM adcp_webhook_deliveries WHERE id = $2) WHERE id = $1`, ids["task_a"], ids["task_b"])
	exec(`UPDATE adcp_webhook_deliveries SET url = $2 WHERE id = $1`, ids["task_c"], w.rcv.URL+"/attacker")
	exec(`UPDATE adcp_webhook_deliveries SET body = auth_credentials WHERE id = $1`, ids["task_d"])
	exec(`UPDATE adcp_webhook_deliveries SET body = payload_sha256 WHERE id = $1`, ids["task_e"])
	// A sequence number is inside the sealed body: changing the column
	// changes nothing that is sent.
	exec(`UPDATE adcp_webhook_deliveries SET sequence_number = 424242 WHERE id = $1`, ids["task_seq"])

	runWorker(t, sup)
	cctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	for task, id := range ids {
		d, err := sup.Wait(cctx, id)
		require.NoError(t, err)
		switch task {
		case "task_b", "task_ok", "task_seq":
			require.Equal(t, webhook.StateDelivered, d.State, task)
		default:
			require.Equal(t, webhook.StateFailed, d.State, task)
			require.Contains(t, d.LastError, "cannot be decrypted", task)
			require.Equal(t, 0, d.LastStatus, task)
			require.Nil(t, d.Body, task)
		}
	}
	d, _ := sup.Delivery(ctx, ids["task_stranger"])
	require.Contains(t, d.LastError, `sealed with key "k9"`)
	d, _ = sup.Delivery(ctx, ids["task_a"])
	require.Contains(t, d.LastError, "does not authenticate")
	require.NotContains(t, d.LastError, encResult)
	for _, got := range w.rcv.Deliveries() {
		require.Contains(t, []string{"/hook/task_b", "/hook/task_ok", "/hook/task_seq"}, got.URI, "only the intact rows were sent")
		if got.URI == "/hook/task_seq" {
			require.Contains(t, string(got.Body), `"sequence_number":1,`)
		}
	}
	require.Len(t, w.rcv.Deliveries(), 3)
}

// Rotating the ring while workers deliver: processes move to a ring whose
// current key is k2 (still holding k1), Reencrypt rewrites every row —
// plain-text rows from before encryption too — while new deliveries
// arrive, every delivery reaches the receiver byte for byte, and then a
// ring of k2 alone reads everything.
func TestPostgresEncryptionRotationWithLiveWorkers(t *testing.T) {
	t.Parallel()
	w := newEncWorld(t)
	ctx := context.Background()
	k1only, rotated, k2only := rotation(t)

	bodies := sync.Map{} // idempotency key -> body as accepted
	var ids []string
	send := func(s *webhook.PostgresSupervisor, n int, prefix string) {
		for i := range n {
			m := encWebhook(w, fmt.Sprintf("task_%s_%d", prefix, i))
			if i%3 == 0 {
				m.Authentication = &webhook.Authentication{Scheme: webhook.AuthHMACSHA256, Credentials: encCredentials}
			}
			r, err := s.SendMCP(ctx, m)
			require.NoError(t, err)
			d, err := s.Delivery(ctx, r.ID)
			require.NoError(t, err)
			bodies.Store(r.IdempotencyKey, d.Body)
			ids = append(ids, r.ID)
		}
	}
	send(w.supervisor(nil), 20, "plain") // before encryption was on
	old := w.supervisor(k1only)
	send(old, 60, "k1")

	w.rcv.Fail(webhooktest.Fault{Delay: 20 * time.Millisecond}) // a slower buyer keeps work in flight
	next := w.supervisor(rotated)
	runWorker(t, next)
	runWorker(t, w.supervisor(rotated))
	type result struct {
		res webhook.ReencryptResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := next.Reencrypt(ctx, 7)
		done <- result{res, err}
	}()
	send(next, 40, "k2") // accepted during the rotation
	out := <-done
	require.NoError(t, out.err)
	res := out.res
	require.Zero(t, res.Failed)
	require.GreaterOrEqual(t, res.Reencrypted, int64(80), "the plain and k1 rows")
	require.Greater(t, res.Batches, 1)

	cctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	got, err := w.rcv.WaitFor(cctx, len(ids))
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, d := range got {
		want, ok := bodies.Load(d.IdempotencyKey)
		require.True(t, ok)
		require.Equal(t, string(want.([]byte)), string(d.Body))
		seen[d.IdempotencyKey] = true
	}
	require.Len(t, seen, len(ids), "every delivery was sent")

	// Every row is under k2 now: a ring of k2 alone reads every body.
	after := w.supervisor(k2only)
	for _, id := range ids {
		d, err := after.Wait(cctx, id)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State, d.LastError)
		require.Equal(t, "k2", d.EncryptionKey)
		want, _ := bodies.Load(d.IdempotencyKey)
		require.Equal(t, string(want.([]byte)), string(d.Body))
	}
	var n int
	require.NoError(t, w.pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries WHERE sealed_with IS DISTINCT FROM 'k2'`).Scan(&n))
	require.Zero(t, n)
	w.requireNoPlaintext(nil)
	// A second run has nothing to do.
	res, err = after.Reencrypt(ctx, 0)
	require.NoError(t, err)
	require.Zero(t, res.Reencrypted)
}

// rotation is a rotation's three rings: k1 alone, k2 current with k1, k2
// alone.
func rotation(t *testing.T) (k1only, rotated, k2only *webhook.EncryptionKeys) {
	t.Helper()
	k1only, keys := ring(t, "k1")
	k2 := mustKey(t)
	rotated, err := webhook.NewEncryptionKeys("k2", map[string][]byte{"k1": keys["k1"], "k2": k2})
	require.NoError(t, err)
	k2only, err = webhook.NewEncryptionKeys("k2", map[string][]byte{"k2": k2})
	require.NoError(t, err)
	return k1only, rotated, k2only
}

func mustKey(t *testing.T) []byte {
	t.Helper()
	k, err := webhook.GenerateEncryptionKey()
	require.NoError(t, err)
	return k
}

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
func encodeURL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestEncryptionKeysConfig(t *testing.T) {
	t.Parallel()
	key := mustKey(t)
	for name, c := range map[string]struct {
		current string
		keys    map[string][]byte
		want    string
	}{
		"current missing": {"k2", map[string][]byte{"k1": key}, `current key "k2" is not in the ring`},
		"short key":       {"k1", map[string][]byte{"k1": key[:16]}, "has 16 bytes"},
		"bad id":          {"k 1", map[string][]byte{"k 1": key}, "must match"},
		"reserved id":     {"none", map[string][]byte{"none": key}, "must match"},
	} {
		_, err := webhook.NewEncryptionKeys(c.current, c.keys)
		require.ErrorIs(t, err, webhook.ErrInvalidConfig, name)
		require.Contains(t, err.Error(), c.want, name)
	}
	b64 := "k2:" + strings.TrimRight(encodeStd(key), "=") + ", k1:" + encodeURL(mustKey(t))
	r, err := webhook.ParseEncryptionKeys(b64)
	require.NoError(t, err)
	require.Equal(t, "k2", r.Current())
	require.Equal(t, []string{"k1", "k2"}, r.IDs())
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s", r, r, r, *r)} {
		require.NotContains(t, s, encodeStd(key)[:20])
		require.False(t, bytes.Contains([]byte(s), key))
	}
	colons, err := webhook.ParseEncryptionKeys("ns:k:1:" + encodeStd(key))
	require.NoError(t, err)
	require.Equal(t, "ns:k:1", colons.Current())
	decryptOnly, err := webhook.ParseEncryptionKeys("none, k1:" + encodeStd(key))
	require.NoError(t, err)
	require.Equal(t, "", decryptOnly.Current())
	require.Equal(t, []string{"k1"}, decryptOnly.IDs())
	for _, bad := range []string{"", "none", "k1", "k1:!!!", "k1:" + encodeStd(key) + ",k1:" + encodeStd(key)} {
		_, err := webhook.ParseEncryptionKeys(bad)
		require.ErrorIs(t, err, webhook.ErrInvalidConfig, bad)
		require.NotContains(t, err.Error(), encodeStd(key)[:20])
	}
}
