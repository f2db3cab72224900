package webhook_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/internal/pgtest"
)

var updateSchema = flag.Bool("update-schema", false, "rewrite schema.sql from migrations/")

// schemaHeader opens schema.sql.
const schemaHeader = `-- Schema of github.com/adcpkit/webhook's PostgresSupervisor with the
-- default table names: every migration in migrations/, in order. Generated:
-- go test -run TestSchemaFileIsTheMigrations -update-schema .
-- PostgresSupervisor.CreateSchema applies the migrations a database lacks;
-- migration tools can run the files in migrations/ instead (see README).

`

// schema.sql is every migration, in order, so that it can never drift.
func TestSchemaFileIsTheMigrations(t *testing.T) {
	ms, err := webhook.PostgresMigrations(webhook.PostgresTables{})
	require.NoError(t, err)
	require.Len(t, ms, webhook.SchemaVersion, "SchemaVersion is the newest migration")
	var parts []string
	for i, m := range ms {
		require.Equal(t, i+1, m.Version)
		require.Regexp(t, `^[a-z][a-z0-9_]*$`, m.Name)
		raw, err := os.ReadFile(fmt.Sprintf("migrations/%04d_%s.up.sql", m.Version, m.Name))
		require.NoError(t, err)
		require.Equal(t, string(raw), m.SQL, "with the default names a migration is its file")
		require.Contains(t, m.SQL, fmt.Sprintf("VALUES (%d, '%s')", m.Version, m.Name), "each migration records itself")
		parts = append(parts, m.SQL)
	}
	want := schemaHeader + strings.Join(parts, "\n")
	if *updateSchema {
		require.NoError(t, os.WriteFile("schema.sql", []byte(want), 0o644))
	}
	got, err := os.ReadFile("schema.sql")
	require.NoError(t, err)
	require.Equal(t, want, string(got), "schema.sql is stale: go test -run TestSchemaFileIsTheMigrations -update-schema .")

	custom, err := webhook.PostgresMigrations(webhook.PostgresTables{Deliveries: "d"})
	require.NoError(t, err)
	require.Contains(t, custom[0].SQL, "CREATE TABLE IF NOT EXISTS d_schema_version")
	require.NotContains(t, custom[0].SQL, "adcp_webhook_deliveries")
	_, err = webhook.PostgresMigrations(webhook.PostgresTables{Deliveries: "select"})
	require.ErrorIs(t, err, webhook.ErrInvalidConfig)
}

// A database made by schema.sql before migrations were numbered, holding
// live rows (due, in flight under an expired lease, held back by an open
// breaker), is refused by workers with the command to run, then upgraded
// by CreateSchema, after which every row is delivered.
func TestPostgresMigrationUpgradesLiveRows(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	old, err := os.ReadFile("testdata/schema/unversioned-d48fc46.sql")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, string(old))
	require.NoError(t, err)

	sender := newScriptedSender()
	sink := newRecordingSink()
	clock := fakeclock.New(epoch)
	s, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{PollOnly: true, PollInterval: 10 * time.Millisecond,
		LogSink: sink, Clock: clock, Retry: webhook.RetryPolicy{NoJitter: true}})
	require.NoError(t, err)
	v, err := s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Zero(t, v, "no version table yet")

	// Rows as the code of d48fc46 wrote them (this code needs the newer
	// columns to accept).
	var rs []webhook.Receipt
	for i, task := range []string{"due", "inflight", "gated"} {
		body, key, err := webhook.BuildMCPBody(mcp("https://buyer.example/"+task, task), epoch)
		require.NoError(t, err)
		var id int64
		require.NoError(t, pool.QueryRow(ctx, `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key,
			breaker_key, sequence_key, sequence_number, task_type, task_id, accepted_at, mcp_body)
			VALUES ('pending', $1, $2, $3, $4, $2, 'mb_1', $5, 'create_media_buy', $6, $1, true) RETURNING id`,
			epoch, "https://buyer.example/"+task, body, key, i+1, task).Scan(&id))
		rs = append(rs, webhook.Receipt{ID: fmt.Sprint(id), IdempotencyKey: key, Sequence: int64(i + 1)})
	}
	_, err = pool.Exec(ctx, `INSERT INTO adcp_webhook_sequences (sequence_key, last_value) VALUES ('mb_1', 3)`)
	require.NoError(t, err)
	_, err = s.SendMCP(ctx, mcp("https://buyer.example/new", "new"))
	require.ErrorIs(t, err, webhook.ErrSchemaMissing, "this code accepts only once the tables are migrated")
	_, err = pool.Exec(ctx, `UPDATE adcp_webhook_deliveries SET state = 'running', lease_token = 7, due_at = $1 WHERE id = $2`,
		epoch.Add(-time.Minute), rs[1].ID)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO adcp_webhook_breakers (breaker_key, state, failures, opened_at, retry_at, updated_at)
		VALUES ('https://buyer.example/gated', 'open', 0, $1, $2, $1)`, epoch.Add(-time.Hour), epoch.Add(-time.Second))
	require.NoError(t, err)

	err = s.RunWorker(ctx)
	require.ErrorIs(t, err, webhook.ErrSchemaMissing)
	require.ErrorContains(t, err, "webhookctl schema migrate")
	require.ErrorContains(t, err, "version 0")

	applied, err := s.Migrate(ctx)
	require.NoError(t, err)
	require.Len(t, applied, webhook.SchemaVersion)
	v, err = s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, webhook.SchemaVersion, v)
	applied, err = s.Migrate(ctx)
	require.NoError(t, err)
	require.Empty(t, applied, "current: nothing to apply")
	var idx *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('adcp_webhook_deliveries_failed_key_idx')::text`).Scan(&idx))
	require.NotNil(t, idx)

	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunWorker(wctx) }()
	got := map[string]webhook.Outcome{}
	for len(got) < 3 {
		select {
		case a := <-sink.ch:
			got[a.DeliveryID] = a.Outcome
		case <-time.After(guard):
			t.Fatalf("delivered %v of %d", got, len(rs))
		}
	}
	cancel()
	require.NoError(t, <-done)
	for _, r := range rs {
		require.Equal(t, webhook.OutcomeSuccess, got[r.ID], r.ID)
		d, err := s.Delivery(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateDelivered, d.State)
	}
	require.Equal(t, []int64{1, 2, 3}, []int64{rs[0].Sequence, rs[1].Sequence, rs[2].Sequence})
}

// A schema newer than the code is refused by CreateSchema and workers;
// one migration behind gets exactly the missing one.
func TestPostgresMigrationVersions(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	ms, err := webhook.PostgresMigrations(webhook.PostgresTables{})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, ms[0].SQL)
	require.NoError(t, err)
	applied, err := s.Migrate(ctx)
	require.NoError(t, err)
	require.Len(t, applied, webhook.SchemaVersion-1)
	require.Equal(t, 2, applied[0].Version)

	_, err = pool.Exec(ctx, fmt.Sprintf(`INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (%d, 'future')`, webhook.SchemaVersion+1))
	require.NoError(t, err)
	require.ErrorIs(t, s.CreateSchema(ctx), webhook.ErrSchemaNewer)
	err = s.RunWorker(ctx)
	require.ErrorIs(t, err, webhook.ErrSchemaNewer)
	require.ErrorContains(t, err, "upgrade github.com/adcpkit/webhook")
}

// A worker that starts while the database cannot answer waits for it,
// then checks the schema: it neither exits nor runs unchecked.
func TestPostgresSchemaCheckWaitsForTheDatabase(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	ctx := context.Background()
	setup, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer setup.Close()
	ms, err := webhook.PostgresMigrations(webhook.PostgresTables{})
	require.NoError(t, err)
	for _, m := range ms {
		_, err = setup.Exec(ctx, m.SQL)
		require.NoError(t, err)
	}
	_, err = setup.Exec(ctx, fmt.Sprintf(`INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (%d, 'future')`, webhook.SchemaVersion+1))
	require.NoError(t, err)

	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	var dials atomic.Int32
	cfg.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
		if dials.Add(1) <= 2 {
			return errors.New("dial tcp: connection refused") // down for a moment
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	var logs syncBuffer
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	require.ErrorIs(t, s.RunWorker(wctx), webhook.ErrSchemaNewer)
	require.NoError(t, wctx.Err(), "it returned because it read the version, not because time ran out")
	require.Equal(t, 1, strings.Count(logs.String(), "waiting for the database"), logs.String())
}

// A migration waits only briefly for an application transaction that
// holds a table, so that enqueues queued behind it are not stalled for
// the transaction's whole life; it applies once the transaction ends.
func TestPostgresMigrationGivesWayToOpenTransactions(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	ms, err := webhook.PostgresMigrations(webhook.PostgresTables{})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, ms[0].SQL) // at version 1
	require.NoError(t, err)
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	// The application's open transaction enqueued a webhook (as the code
	// that runs against version 1 does: a row lock on the table).
	enqueue := `INSERT INTO adcp_webhook_deliveries (state, due_at, url, body, idempotency_key, breaker_key, accepted_at)
		VALUES ('pending', now(), 'https://buyer.example/a', '{}', $1, 'k', now())`
	_, err = tx.Exec(ctx, enqueue, "whk_0123456789abcdef")
	require.NoError(t, err)

	migrated := make(chan error, 1)
	go func() { migrated <- s.CreateSchema(ctx) }()
	for i := range 5 { // other pods' enqueues keep going meanwhile
		sctx, cancel := context.WithTimeout(ctx, guard)
		_, err = pool.Exec(sctx, enqueue, fmt.Sprintf("whk_%016d", i))
		cancel()
		require.NoError(t, err)
	}
	select {
	case err := <-migrated:
		t.Fatalf("the migration finished while a transaction held its table: %v", err)
	default:
	}
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-migrated)
	v, err := s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, webhook.SchemaVersion, v)
}

// With its own table names, the schema error names the command with
// them.
func TestPostgresSchemaErrorNamesTheTables(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	s, err := webhook.NewPostgresSupervisor(pool, newScriptedSender(), webhook.PostgresConfig{PollOnly: true,
		Tables: webhook.PostgresTables{Deliveries: "seller_deliveries"}})
	require.NoError(t, err)
	err = s.RunWorker(context.Background())
	require.ErrorIs(t, err, webhook.ErrSchemaMissing)
	require.ErrorContains(t, err, "`webhookctl schema migrate --deliveries-table seller_deliveries`")
}
