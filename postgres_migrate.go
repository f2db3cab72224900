package webhook

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"

	"github.com/adcpkit/webhook/internal/engine"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Versioned migrations of the Postgres supervisor's schema.

// SchemaVersion is the schema version this code needs: the number of the
// newest migration in migrations/.
const SchemaVersion = 7

// migrationFiles are migrations/NNNN_name.up.sql, with the default table
// names.
//
//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// Migration is one numbered change to the schema, as SQL with the table
// names of a [PostgresTables]. Every migration is idempotent and records
// its version in the schema-version table itself, so a migration tool
// (goose, golang-migrate, atlas, tern) can run them in order instead of
// [PostgresSupervisor.CreateSchema].
type Migration struct {
	// Version numbers migrations from 1, with no gaps.
	Version int
	// Name says what it does, in snake_case.
	Name string
	// SQL is the migration's statements.
	SQL string
}

// PostgresMigrations returns every migration, oldest first, with t's
// table names (t's empty fields take the defaults). The files under
// migrations/ in the module are the same SQL with the default names.
func PostgresMigrations(t PostgresTables) ([]Migration, error) {
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return nil, err
	}
	return t.migrations(), nil
}

// migrations parses migrationFiles once per call; there are few.
func (t PostgresTables) migrations() []Migration {
	names, err := fs.Glob(migrationFiles, "migrations/*.up.sql")
	if err != nil {
		panic(err) // a constant pattern
	}
	out := make([]Migration, 0, len(names))
	for i, path := range names { // fs.Glob sorts
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".up.sql")
		num, name, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			panic("webhook: migrations are not numbered 1, 2, 3...: " + path)
		}
		sql, err := migrationFiles.ReadFile(path)
		if err != nil {
			panic(err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: t.rename(string(sql))})
	}
	return out
}

// versionTable is the table that records applied migrations.
func (t PostgresTables) versionTable() string {
	return t.rename(DeliveriesTableDefault + "_schema_version")
}

// legacyUpgrade brings tables created by CreateSchema before migrations
// were numbered up to migration 1's shape; it runs once, before
// migration 1, when there is no schema-version table. Each block checks
// first, so that an up-to-date table is never locked exclusively.
const legacyUpgrade = `
-- Tables created before lost_attempts existed. Checked first, so that an
-- up-to-date table is never locked exclusively while workers use it.
DO $$
BEGIN
    IF to_regclass('adcp_webhook_deliveries') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('adcp_webhook_deliveries')
                   AND attname = 'lost_attempts' AND NOT attisdropped) THEN
        ALTER TABLE adcp_webhook_deliveries ADD COLUMN lost_attempts integer NOT NULL DEFAULT 0;
    END IF;
END $$;

-- Tables created before AdCP 3.2's payload binding and re-emission.
DO $$
BEGIN
    IF to_regclass('adcp_webhook_deliveries') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('adcp_webhook_deliveries')
                   AND attname = 'subscriber_id' AND NOT attisdropped) THEN
        ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS mcp_body boolean NOT NULL DEFAULT false,
            ADD COLUMN IF NOT EXISTS payload_sha256 bytea, ADD COLUMN IF NOT EXISTS reemission_of bigint,
            ADD COLUMN IF NOT EXISTS reemitted_as bigint, ADD COLUMN IF NOT EXISTS notification_id text,
            ADD COLUMN IF NOT EXISTS subscriber_id text;
    END IF;
END $$;

-- Attempt tables created before re-emission.
DO $$
BEGIN
    IF to_regclass('adcp_webhook_attempts') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('adcp_webhook_attempts')
                   AND attname = 'timed_out' AND NOT attisdropped) THEN
        ALTER TABLE adcp_webhook_attempts ADD COLUMN IF NOT EXISTS reemission_of bigint,
            ADD COLUMN IF NOT EXISTS notification_id text, ADD COLUMN IF NOT EXISTS subscriber_id text,
            ADD COLUMN IF NOT EXISTS timed_out boolean NOT NULL DEFAULT false;
    END IF;
END $$;

-- Tables created before retry_at and version existed. Checked first, so
-- that an up-to-date table is never locked exclusively while workers use it.
DO $$
BEGIN
    IF to_regclass('adcp_webhook_breakers') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('adcp_webhook_breakers')
                   AND attname = 'version' AND NOT attisdropped) THEN
        -- Existing rows start at version 1; their open gates have no
        -- retry_at and are probed as before, OpenTimeout after they opened.
        ALTER TABLE adcp_webhook_breakers ADD COLUMN retry_at timestamptz,
            ADD COLUMN version bigint NOT NULL DEFAULT 1;
        DROP INDEX IF EXISTS adcp_webhook_breakers_tripped_idx;
    END IF;
END $$;
`

// SchemaVersion returns the newest migration applied to the database: 0
// when none is (the tables do not exist, or were created before
// migrations were numbered).
func (s *PostgresSupervisor) SchemaVersion(ctx context.Context) (int, error) {
	v, err := s.schemaVersion(ctx, s.db)
	return v, dbError("schema version", err)
}

func (s *PostgresSupervisor) schemaVersion(ctx context.Context, q querier) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, s.versionTable).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v int
	err := q.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM `+s.versionTable).Scan(&v)
	return v, err
}

// checkSchema returns an error naming the fix when the database's schema
// is not the version this code needs. While the database cannot answer
// (down, starting up, out of connections) it waits and asks again, warning
// once, so that a worker started during an outage neither exits nor runs
// unchecked; it returns nil if ctx ends first.
func (s *PostgresSupervisor) checkSchema(ctx context.Context) error {
	var backoff engine.Backoff
	warned := false
	for {
		v, err := s.schemaVersion(ctx, s.db)
		switch {
		case err == nil && v < SchemaVersion:
			return fmt.Errorf("%w: the database schema is at version %d and this code needs %d; run `%s` (or PostgresSupervisor.CreateSchema) first", ErrSchemaMissing, v, SchemaVersion, s.migrateCommand())
		case err == nil && v > SchemaVersion:
			return fmt.Errorf("%w: the database schema is at version %d, newer than the %d this code knows; upgrade github.com/adcpkit/webhook in this binary", ErrSchemaNewer, v, SchemaVersion)
		case err == nil, ctx.Err() != nil:
			return nil
		case refusedStatement(err):
			return dbError("schema version", err) // permission denied, say: asking again will not help
		}
		if !warned {
			warned = true
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: cannot read the schema version yet; waiting for the database",
				slog.String("error", dbError("schema version", err).Error()))
		}
		if !engine.Sleep(ctx, backoff.Next()) {
			return nil
		}
	}
}

// migrateCommand is the webhookctl command that migrates this
// supervisor's tables.
func (s *PostgresSupervisor) migrateCommand() string {
	cmd := "webhookctl schema migrate"
	for _, t := range []struct{ flag, name, def string }{
		{"--deliveries-table", s.tables.Deliveries, DeliveriesTableDefault}, {"--attempts-table", s.tables.Attempts, AttemptsTableDefault},
		{"--breakers-table", s.tables.Breakers, BreakersTableDefault}, {"--sequences-table", s.tables.Sequences, SequencesTableDefault},
	} {
		if t.name != t.def {
			cmd += " " + t.flag + " " + t.name
		}
	}
	return cmd
}

// CreateSchema creates the supervisor's tables, or upgrades them: it
// applies the migrations the database lacks (see [PostgresMigrations]),
// in one transaction under an advisory lock, so it is safe when several
// processes call it at once. A database already at [SchemaVersion] is left
// alone, without a lock; one at a newer version is [ErrSchemaNewer].
// Tables created before migrations were numbered are upgraded too.
func (s *PostgresSupervisor) CreateSchema(ctx context.Context) error {
	_, err := s.migrate(ctx)
	return err
}

// migrate applies the missing migrations and returns the ones it applied.
func (s *PostgresSupervisor) migrate(ctx context.Context) ([]Migration, error) {
	// A current schema is left alone: DDL such as CREATE INDEX IF NOT
	// EXISTS takes a share lock on its table even when the index exists,
	// which would stall (or, with locks taken in another order, deadlock)
	// the workers of a running deployment every time a process starts.
	v, err := s.schemaVersion(ctx, s.db)
	if err != nil {
		return nil, dbError("create schema", err)
	}
	if v == SchemaVersion {
		return nil, nil
	}
	// Each try waits at most lockTimeout for a table lock, so that an
	// open application transaction on a table delays the workers' and
	// enqueuers' statements queued behind the migration by no more than
	// that; then it gives way and tries again.
	var backoff engine.Backoff
	for try := 1; ; try++ {
		applied, err := s.migrateOnce(ctx)
		var pe *pgconn.PgError
		switch {
		case err == nil || !errors.As(err, &pe) || pe.Code != "55P03":
			return applied, err
		case try == migrateTries:
			return nil, fmt.Errorf("%w (a transaction that holds the tables kept the migration waiting; run it again when that transaction ends)", err)
		}
		if !engine.Sleep(ctx, backoff.Next()) {
			return nil, dbError("create schema", ctx.Err())
		}
	}
}

// Migration locks: how long one try waits for a table lock, and how many
// tries there are.
const (
	lockTimeout  = "500ms"
	migrateTries = 20
)

// migrateOnce applies the missing migrations in one transaction.
func (s *PostgresSupervisor) migrateOnce(ctx context.Context) ([]Migration, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return nil, dbError("create schema", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	// One schema change at a time: concurrent CREATE TABLE IF NOT EXISTS
	// can otherwise collide in the catalog.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('github.com/adcpkit/webhook schema'))`); err != nil {
		return nil, dbError("create schema", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+lockTimeout+`'`); err != nil {
		return nil, dbError("create schema", err)
	}
	v, err := s.schemaVersion(ctx, tx)
	if err != nil {
		return nil, dbError("create schema", err)
	}
	if v > SchemaVersion {
		return nil, fmt.Errorf("%w: the database schema is at version %d, newer than the %d this code knows; upgrade github.com/adcpkit/webhook in this binary", ErrSchemaNewer, v, SchemaVersion)
	}
	if v == 0 {
		if _, err := tx.Exec(ctx, s.tables.rename(legacyUpgrade), pgx.QueryExecModeSimpleProtocol); err != nil {
			return nil, dbError("create schema", err)
		}
	}
	var applied []Migration
	for _, m := range s.tables.migrations()[v:] {
		if _, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			return nil, dbError(fmt.Sprintf("migration %d (%s)", m.Version, m.Name), err)
		}
		applied = append(applied, m)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, dbError("create schema", err)
	}
	return applied, nil
}

// Migrate is CreateSchema that reports the migrations it applied (none
// when the schema was current): what `webhookctl schema migrate` prints.
func (s *PostgresSupervisor) Migrate(ctx context.Context) ([]Migration, error) {
	return s.migrate(ctx)
}
