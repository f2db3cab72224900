package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(pgtest.Wrap(m))) }

// world is a database with deliveries made by a real supervisor over real
// HTTP: some delivered, some failed by a buyer that was down, one whose
// URL carries a secret query and whose body a token.
type world struct {
	t       *testing.T
	url     string
	pool    *pgxpool.Pool
	sup     *webhook.PostgresSupervisor
	down    *httptest.Server
	healthy atomic.Bool // the down buyer is back
	ok      *httptest.Server
	ids     map[string]string // task -> delivery ID
}

const secretToken = "buyer-token-0123456789-secret"

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, url: pgtest.URL(t), ids: map[string]string{}}
	var err error
	w.pool, err = pgxpool.New(context.Background(), w.url)
	require.NoError(t, err)
	t.Cleanup(w.pool.Close)
	w.ok = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(w.ok.Close)
	w.down = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if !w.healthy.Load() {
			http.Error(rw, "down for maintenance", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(w.down.Close)

	key, err := webhook.GenerateSigningKey("ctl-test", "ed25519")
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, AllowPrivateDestinations: true})
	require.NoError(t, err)
	w.sup, err = webhook.NewPostgresSupervisor(w.pool, sender, webhook.PostgresConfig{
		AllowInsecureHTTP: true, PollInterval: 20 * time.Millisecond,
		Retry: webhook.RetryPolicy{MaxAttempts: 1},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t.Cleanup(func() { cancel(); <-done })
	require.NoError(t, w.sup.CreateSchema(ctx))
	go func() { done <- w.sup.RunWorker(ctx) }()

	for _, d := range []struct{ task, url string }{
		{"ok1", w.ok.URL + "/hook"}, {"down1", w.down.URL + "/hook?sig=querysecret"},
		{"down2", w.down.URL + "/hook?sig=querysecret"}, {"ok2", w.ok.URL + "/hook"},
	} {
		r, err := w.sup.SendMCP(ctx, webhook.MCPWebhook{URL: d.url, OperationID: "op_" + d.task, TaskID: d.task,
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Token: secretToken,
			Result: map[string]any{"media_buy_id": "mb_" + d.task}, Routing: webhook.Routing{NotificationType: "scheduled"}})
		require.NoError(t, err)
		w.ids[d.task] = r.ID
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = w.sup.Wait(wctx, r.ID)
		wcancel()
		require.NoError(t, err)
	}
	return w
}

// ctl runs webhookctl with DATABASE_URL set and returns its exit status
// and output.
func (w *world) ctl(args ...string) (int, string, string) {
	w.t.Helper()
	var out, errOut bytes.Buffer
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return w.url
		}
		return ""
	}
	code := run(context.Background(), args, env, &out, &errOut)
	// Nothing secret is ever printed.
	for _, secret := range []string{secretToken, "querysecret", w.urlPassword()} {
		if secret != "" {
			require.NotContains(w.t, out.String()+errOut.String(), secret, "webhookctl %v", args)
		}
	}
	return code, out.String(), errOut.String()
}

func (w *world) urlPassword() string {
	cfg, err := pgxpool.ParseConfig(w.url)
	if err != nil {
		return ""
	}
	return cfg.ConnConfig.Password
}

func (w *world) ctlJSON(v any, args ...string) {
	w.t.Helper()
	code, out, errOut := w.ctl(append(args, "--json")...)
	require.Equal(w.t, 0, code, errOut)
	reflect.ValueOf(v).Elem().SetZero() // no field left from an earlier call
	require.NoError(w.t, json.Unmarshal([]byte(out), v), out)
}

func TestWebhookctlEndToEnd(t *testing.T) {
	t.Parallel()
	w := newWorld(t)

	// schema
	code, out, _ := w.ctl("schema", "status")
	require.Equal(t, 0, code)
	require.Contains(t, out, fmt.Sprintf("database at version %d; this webhookctl expects %[1]d", webhook.SchemaVersion))
	code, out, _ = w.ctl("schema", "print")
	require.Equal(t, 0, code)
	require.Contains(t, out, "CREATE TABLE IF NOT EXISTS adcp_webhook_deliveries (")
	code, out, _ = w.ctl("schema", "migrate")
	require.Equal(t, 0, code)
	require.Equal(t, fmt.Sprintf("schema at version %d\n", webhook.SchemaVersion), out, "nothing to apply")

	// stats
	var st statsJSON
	w.ctlJSON(&st, "stats")
	require.Equal(t, statsJSON{Delivered: 2, Failed: 2}, st)
	code, out, _ = w.ctl("stats")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^failed +2$`, out)

	// deliveries list, filtered and paged
	var list struct {
		Deliveries []deliveryJSON `json:"deliveries"`
		Next       string         `json:"next"`
	}
	w.ctlJSON(&list, "deliveries", "list", "--state", "failed", "--limit", "1")
	require.Len(t, list.Deliveries, 1)
	require.Equal(t, w.ids["down2"], list.Deliveries[0].ID, "newest first")
	require.Equal(t, w.down.URL+"/hook", list.Deliveries[0].URL, "no query")
	require.Equal(t, "HTTP 503 Service Unavailable", list.Deliveries[0].LastError)
	require.NotEmpty(t, list.Next)
	w.ctlJSON(&list, "deliveries", "list", "--state", "failed", "--limit", "1", "--after", list.Next)
	require.Equal(t, w.ids["down1"], list.Deliveries[0].ID)
	require.Empty(t, list.Next)
	w.ctlJSON(&list, "--json", "deliveries", "list", "--task", "ok2")
	require.Len(t, list.Deliveries, 1)
	w.ctlJSON(&list, "deliveries", "list", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	require.Empty(t, list.Deliveries)
	code, out, _ = w.ctl("deliveries", "list")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^ID +STATE +ATTEMPTS`, out)
	require.Equal(t, 5, strings.Count(out, "\n"), "a header and four rows:\n%s", out)

	// deliveries show
	code, out, _ = w.ctl("deliveries", "show", w.ids["down1"])
	require.Equal(t, 0, code)
	require.Contains(t, out, `"token": "<redacted>"`)
	require.Contains(t, out, `"media_buy_id": "mb_down1"`)
	require.Regexp(t, `(?m)^1 +failure +503 `, out)
	var shown deliveryJSON
	w.ctlJSON(&shown, "deliveries", "show", w.ids["down1"])
	require.Len(t, shown.AttemptRecords, 1)
	require.NotNil(t, shown.Body)
	code, _, errOut := w.ctl("deliveries", "show", "999999")
	require.Equal(t, exitNotFound, code)
	require.Contains(t, errOut, "not found")

	// breakers: the down buyer's counts its failures
	var bl struct {
		Breakers []breakerJSON `json:"breakers"`
	}
	w.ctlJSON(&bl, "breakers", "list")
	require.Len(t, bl.Breakers, 1)
	require.Equal(t, w.down.URL+"/hook", bl.Breakers[0].Key)
	require.Equal(t, 2, bl.Breakers[0].Failures)
	code, out, _ = w.ctl("breakers", "reset", bl.Breakers[0].Key) // the printed form resolves
	require.Equal(t, 0, code)
	require.Contains(t, out, "reset "+w.down.URL+"/hook (1 breaker(s))")
	w.ctlJSON(&bl, "breakers", "list")
	require.Len(t, bl.Breakers, 1, "closed, and still failing until a 2xx")
	require.Equal(t, "closed", bl.Breakers[0].State)
	require.Zero(t, bl.Breakers[0].Failures)
	require.NotNil(t, bl.Breakers[0].FailingSince)
	require.Equal(t, 2, bl.Breakers[0].FailedDeliveries)
	_, out, _ = w.ctl("breakers", "list")
	require.Contains(t, out, "FAILING SINCE")
	code, _, errOut = w.ctl("breakers", "reset", w.down.URL+"/hook")
	require.Equal(t, exitNotFound, code, "nothing to reset is an error a script sees")
	require.Contains(t, errOut, "no breaker named")

	// redeliver: refused without a filter, counted in a dry run, then sent
	code, _, errOut = w.ctl("redeliver")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "at least one filter")
	code, _, _ = w.ctl("redeliver", "--state", "delivered", "--task", "ok1")
	require.Equal(t, exitUsage, code)
	code, _, errOut = w.ctl("redeliver", "--state", "failed")
	require.Equal(t, exitUsage, code, "--state alone narrows nothing")
	require.Contains(t, errOut, "narrows")
	var bulk struct {
		Matched, Redelivered, Reemitted int
		Receipts                        []receiptJSON
	}
	w.ctlJSON(&bulk, "redeliver", "--url", w.down.URL+"/hook?sig=querysecret", "--dry-run")
	require.Equal(t, 2, bulk.Matched)
	w.ctlJSON(&bulk, "redeliver", "--breaker-key", w.down.URL+"/hook", "--dry-run") // as breakers list printed it
	require.Equal(t, 2, bulk.Matched, "the printed key names the real one")
	require.Equal(t, 2, bulk.Redelivered)
	require.Empty(t, bulk.Receipts)
	w.healthy.Store(true)
	w.ctlJSON(&bulk, "redeliver", "--url", w.down.URL+"/hook?sig=querysecret", "--limit", "1")
	require.Equal(t, 1, bulk.Redelivered)
	require.Equal(t, w.ids["down2"], bulk.Receipts[0].ID)
	d, err := w.sup.Wait(context.Background(), w.ids["down2"])
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	code, out, _ = w.ctl("redeliver", w.ids["down1"])
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "redelivered "+w.ids["down1"])
	d, err = w.sup.Wait(context.Background(), w.ids["down1"])
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	code, _, errOut = w.ctl("redeliver", w.ids["down1"])
	require.Equal(t, exitNotFound, code, "delivered: nothing to redeliver")
	require.Contains(t, errOut, "only failed deliveries")

	// purge
	var purged struct{ Purged int64 }
	w.ctlJSON(&purged, "purge")
	require.Zero(t, purged.Purged, "nothing is 30 days old")
	w.ctlJSON(&purged, "purge", "--before", time.Now().Add(time.Minute).UTC().Format(time.RFC3339))
	require.EqualValues(t, 4, purged.Purged)
	w.ctlJSON(&st, "stats")
	require.Equal(t, statsJSON{}, st)
}

func TestWebhookctlUsageAndSchemaErrors(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t) // an empty database
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return url
		}
		return ""
	}
	ctl := func(env func(string) string, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, env, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	for _, args := range [][]string{{"help"}, {"-help"}, {}} {
		code, out, _ := ctl(env, args...)
		require.Equal(t, 0, code, args)
		require.Contains(t, out, "webhookctl [flags] deliveries show ID", args)
	}
	for _, args := range [][]string{{"frobnicate"}, {"deliveries"}, {"deliveries", "show"}, {"breakers", "reset"},
		{"stats", "extra"}, {"--no-such-flag", "stats"}, {"deliveries", "list", "--since", "yesterday"},
		{"deliveries", "list", "--state", "lost"}, {"deliveries", "list", "--limit", "5000"}} {
		code, _, errOut := ctl(env, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, errOut)
		require.NotEmpty(t, errOut)
	}
	code, _, errOut := ctl(env, "--deliveries-table", "select", "stats")
	require.Equal(t, exitUsage, code, "a bad table name is bad usage: %s", errOut)
	code, _, errOut = ctl(env, "breakers", "reset", "--", "-not-a-flag")
	require.Equal(t, exitSchema, code, "after --, words are arguments (here the missing schema stops it): %s", errOut)
	code, _, errOut = ctl(func(string) string { return "" }, "stats")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "DATABASE_URL")
	code, _, errOut = ctl(func(string) string { return "postgres://u:hunter2secret@%zz/db" }, "stats")
	require.Equal(t, exitUsage, code)
	require.NotContains(t, errOut, "hunter2secret")

	// No tables yet: read commands name the fix, and status says so.
	code, _, errOut = ctl(env, "stats")
	require.Equal(t, exitSchema, code, errOut)
	require.Contains(t, errOut, "CreateSchema")
	code, out, _ := ctl(env, "schema", "status")
	require.Equal(t, exitSchema, code)
	require.Contains(t, out, "database at version 0")
	code, out, _ = ctl(env, "schema", "migrate")
	require.Equal(t, 0, code)
	require.Contains(t, out, "applied  1  baseline")
	code, _, _ = ctl(env, "schema", "status")
	require.Equal(t, 0, code)
}

// Several breakers can print alike (their keys differ in a query): a
// reset by the printed form refuses to guess, --all resets them all.
func TestWebhookctlResetAmbiguousKeys(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := webhook.NewPostgresSupervisor(pool, nil, webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(context.Background()))
	_, err = pool.Exec(context.Background(), `INSERT INTO adcp_webhook_breakers (breaker_key, state, failures, updated_at)
		VALUES ('https://b.example/hook', 'closed', 2, now()), ('https://b.example/hook?token=querysecret', 'closed', 3, now())`)
	require.NoError(t, err)
	w := &world{t: t, url: url}
	code, _, errOut := w.ctl("breakers", "reset", "https://b.example/hook")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "names 2 breakers")
	code, _, _ = w.ctl("breakers", "reset", "--exact", "https://b.example/hook")
	require.Equal(t, 0, code)
	st, err := s.Breakers(context.Background(), webhook.Page{})
	require.NoError(t, err)
	require.Len(t, st.Breakers, 1, "only the exact key was reset")
	code, _, errOut = w.ctl("breakers", "reset", "--exact", "https://typo.example/hook")
	require.Equal(t, exitNotFound, code, "an exact key that names no breaker: %s", errOut)
	code, out, _ := w.ctl("breakers", "reset", "--all", "https://b.example/hook")
	require.Equal(t, 0, code)
	require.Contains(t, out, "(1 breaker(s))")
	st, err = s.Breakers(context.Background(), webhook.Page{})
	require.NoError(t, err)
	require.Empty(t, st.Breakers)
}

// redeliver --url takes the printed form; when it names several URLs that
// differ only in what is hidden, it asks for --all or --exact.
func TestWebhookctlRedeliverAmbiguousURLs(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := webhook.NewPostgresSupervisor(pool, nil, webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	require.NoError(t, s.CreateSchema(ctx))
	for i, u := range []string{"https://d.example/hook", "https://d.example/hook?sig=querysecret", "https://d.example/hook?sig=querysecret"} {
		_, err := s.SendMCP(ctx, webhook.MCPWebhook{URL: u, OperationID: "op_1", TaskID: fmt.Sprint("t", i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted})
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `UPDATE adcp_webhook_deliveries SET state = 'failed', finished_at = now()`)
	require.NoError(t, err)
	w := &world{t: t, url: url}
	var bulk struct{ Matched int }
	code, _, errOut := w.ctl("redeliver", "--url", "https://d.example/hook", "--dry-run")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "names 2 values")
	w.ctlJSON(&bulk, "redeliver", "--url", "https://d.example/hook", "--dry-run", "--exact")
	require.Equal(t, 1, bulk.Matched)
	w.ctlJSON(&bulk, "redeliver", "--url", "https://d.example/hook", "--dry-run", "--all")
	require.Equal(t, 3, bulk.Matched)
	w.ctlJSON(&bulk, "redeliver", "--breaker-key", "https://d.example/hook", "--dry-run", "--all", "--limit", "2")
	require.Equal(t, 2, bulk.Matched, "--limit across the keys")
}

// reencrypt rewrites the rows under the ring's current key, and show reads
// their bodies only with the ring; the ring itself is never printed.
func TestWebhookctlReencrypt(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	sup, err := webhook.NewPostgresSupervisor(pool, nil, webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, sup.CreateSchema(ctx))
	var ids []string
	for i := range 5 {
		r, err := sup.SendMCP(ctx, webhook.MCPWebhook{URL: "https://buyer.example/hook", OperationID: "op", TaskID: fmt.Sprintf("t%d", i),
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Result: map[string]any{"media_buy_id": "mb_sealed"}})
		require.NoError(t, err)
		ids = append(ids, r.ID)
	}
	key, err := webhook.GenerateEncryptionKey()
	require.NoError(t, err)
	ring := "k1:" + base64.StdEncoding.EncodeToString(key)
	ctl := func(withRing bool, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, func(k string) string {
			switch {
			case k == "DATABASE_URL":
				return url
			case k == "WEBHOOK_ENCRYPTION_KEYS" && withRing:
				return ring
			}
			return ""
		}, &out, &errOut)
		require.NotContains(t, out.String()+errOut.String(), ring[3:23], "the ring is never printed")
		return code, out.String(), errOut.String()
	}
	code, _, errOut := ctl(false, "reencrypt")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "WEBHOOK_ENCRYPTION_KEYS")

	code, out, errOut := ctl(true, "reencrypt", "--batch", "2")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "reencrypted 5 deliveries under key k1 (")
	var plain int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM adcp_webhook_deliveries WHERE position(convert_to('mb_sealed', 'UTF8') in body) > 0 OR sealed_with IS NULL`).Scan(&plain))
	require.Zero(t, plain)

	code, out, _ = ctl(true, "deliveries", "show", ids[0])
	require.Equal(t, 0, code)
	require.Contains(t, out, "mb_sealed")
	code, out, _ = ctl(false, "deliveries", "show", ids[0])
	require.Equal(t, 0, code)
	require.NotContains(t, out, "mb_sealed")
	require.Contains(t, out, "k1")

	code, out, _ = ctl(true, "reencrypt", "--json")
	require.Equal(t, 0, code)
	require.Contains(t, out, `"reencrypted": 0`)
}
