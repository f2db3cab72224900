// Package pgstore keeps a buyer's receiving state in Postgres, shared by
// every pod: the (keyid, nonce) replay cache AdCP's webhook verifier
// needs ([NonceStore]). AdCP 3.2 calls per-pod in-memory caches
// non-conformant for a buyer that runs more than one endpoint or pod.
//
// It links pgx; the receive package it serves does not.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/adcpkit/webhook/receive"
)

// Pool is what the stores need of a *pgxpool.Pool.
type Pool interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Defaults of [NonceConfig], the spec's recommended webhook sizing.
const (
	PerKeyCapDefault    = 100_000
	AggregateCapDefault = 10_000_000
	NonceTableDefault   = "adcp_webhook_nonces"
)

// NonceConfig configures [NewNonceStore]. The zero value is valid.
type NonceConfig struct {
	// Table names the nonce table; the per-key counters are in Table +
	// "_keys". Defaults to adcp_webhook_nonces. It must match
	// ^[a-z_][a-z0-9_]{0,56}$.
	Table string
	// PerKeyCap bounds one keyid's live nonces: a signature past it is
	// refused with webhook_signature_rate_abuse (never by evicting
	// another). Defaults to 100,000, the spec's recommendation.
	PerKeyCap int
	// AggregateCap bounds the nonces of every keyid together, expired
	// ones counting until Purge deletes them (run it: see Purge). Each
	// Use reads the total without locking other keyids, so concurrent
	// uses under different keyids can pass it by at most their number.
	// Defaults to 10,000,000.
	AggregateCap int
}

var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,56}$`)

// quote is a table or index name as an SQL identifier: a name the pattern
// allows may still be a reserved word ("order").
func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// NonceStore is a [receive.NonceStore] (and [receive.NonceCapChecker]) in
// Postgres: every pod that verifies with it sees every other pod's
// nonces, so a signature accepted by one is a replay at all of them. A
// nonce is recorded, checked and counted against its keyid's cap in one
// transaction that locks the keyid's counter row, so the caps hold across
// pods. Expired nonces are deleted by [NonceStore.Purge], and lazily for
// a keyid that reaches its cap. Safe for concurrent use.
type NonceStore struct {
	db                   Pool
	perKey, aggregate    int
	upsertKey, insert    string
	count, expireKey     string
	overCap, purge, ddl  string
	sumLive              string
	expiredKeys          string
	nonceTable, keyTable string
}

// NewNonceStore returns a store on db. Call [NonceStore.CreateSchema]
// once, or apply [NonceStore.Schema] with your migration tool.
func NewNonceStore(db Pool, cfg NonceConfig) (*NonceStore, error) {
	if db == nil {
		return nil, errors.New("pgstore: NewNonceStore: the pool is nil")
	}
	table := cfg.Table
	if table == "" {
		table = NonceTableDefault
	}
	if !tableName.MatchString(table) {
		return nil, fmt.Errorf("pgstore: NonceConfig.Table %q must match %s", table, tableName)
	}
	if cfg.PerKeyCap < 0 || cfg.AggregateCap < 0 {
		return nil, errors.New("pgstore: NonceConfig caps must not be negative (0 means the default)")
	}
	s := &NonceStore{db: db, perKey: cfg.PerKeyCap, aggregate: cfg.AggregateCap, nonceTable: table, keyTable: table + "_keys"}
	if s.perKey == 0 {
		s.perKey = PerKeyCapDefault
	}
	if s.aggregate == 0 {
		s.aggregate = AggregateCapDefault
	}
	r := strings.NewReplacer("{nonces}", quote(s.nonceTable), "{keys}", quote(s.keyTable), "{nonces_idx}", quote(s.nonceTable+"_expires_idx"))
	s.ddl = r.Replace(`CREATE TABLE IF NOT EXISTS {nonces} (
    keyid      text NOT NULL,
    nonce      text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (keyid, nonce)
);
CREATE INDEX IF NOT EXISTS {nonces_idx} ON {nonces} (keyid, expires_at);
-- Rows of the nonce table per keyid (expired ones included until purged).
CREATE TABLE IF NOT EXISTS {keys} (
    keyid text PRIMARY KEY,
    rows  bigint NOT NULL
);`)
	// Locks the keyid's counter row for the rest of the transaction.
	s.upsertKey = r.Replace(`INSERT INTO {keys} AS k (keyid, rows) VALUES ($1, 0)
ON CONFLICT (keyid) DO UPDATE SET rows = k.rows RETURNING rows`)
	s.sumLive = r.Replace(`SELECT COALESCE(sum(rows), 0) FROM {keys}`)
	// A nonce whose entry expired may be used again: the row is reused.
	s.insert = r.Replace(`INSERT INTO {nonces} AS n (keyid, nonce, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (keyid, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE n.expires_at <= $4
RETURNING (xmax = 0) AS inserted`)
	s.count = r.Replace(`UPDATE {keys} SET rows = rows + $2 WHERE keyid = $1`)
	s.expireKey = r.Replace(`WITH d AS (DELETE FROM {nonces} WHERE keyid = $1 AND expires_at <= $2 RETURNING 1)
SELECT count(*) FROM d`)
	// At the cap counting expired rows, and none of them expired (then
	// Use would forget those first): two index probes, whatever the cap.
	s.overCap = r.Replace(`SELECT COALESCE((SELECT rows FROM {keys} WHERE keyid = $1), 0) >= $2
	AND NOT EXISTS (SELECT 1 FROM {nonces} WHERE keyid = $1 AND expires_at <= $3)`)
	// The keyids' counter rows are locked first, in key order, as Use
	// locks its one before its nonce: no deadlock with Use or another
	// purge.
	s.expiredKeys = r.Replace(`SELECT DISTINCT keyid FROM {nonces} WHERE expires_at <= $1`)
	s.purge = r.Replace(`WITH d AS (
	DELETE FROM {nonces} WHERE keyid = $1 AND expires_at <= $2 RETURNING 1
)
SELECT count(*) FROM d`)
	return s, nil
}

// Schema is the DDL CreateSchema runs: idempotent.
func (s *NonceStore) Schema() string { return s.ddl }

// CreateSchema creates the tables if they do not exist.
func (s *NonceStore) CreateSchema(ctx context.Context) error {
	if _, err := s.db.Exec(ctx, s.ddl); err != nil {
		return fmt.Errorf("pgstore: creating the nonce tables: %w", err)
	}
	return nil
}

// Use implements [receive.NonceStore]: records nonce for keyID until
// expires, unless it is live already (a replay, at any pod) or the keyID
// (or every keyID together) is at its cap.
func (s *NonceStore) Use(ctx context.Context, keyID, nonce string, expires, now time.Time) (v receive.NonceVerdict, err error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgstore: nonce: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	var rows int64
	if err := tx.QueryRow(ctx, s.upsertKey, keyID).Scan(&rows); err != nil {
		return 0, fmt.Errorf("pgstore: nonce: %w", err)
	}
	if rows >= int64(s.perKey) {
		// At the cap counting expired rows: forget this keyid's expired
		// ones before deciding.
		var gone int64
		if err := tx.QueryRow(ctx, s.expireKey, keyID, now).Scan(&gone); err != nil {
			return 0, fmt.Errorf("pgstore: nonce: %w", err)
		}
		if gone > 0 {
			if _, err := tx.Exec(ctx, s.count, keyID, -gone); err != nil {
				return 0, fmt.Errorf("pgstore: nonce: %w", err)
			}
			rows -= gone
		}
	}
	var inserted bool
	err = tx.QueryRow(ctx, s.insert, keyID, nonce, expires, now).Scan(&inserted)
	switch {
	case errors.Is(err, pgx.ErrNoRows): // live: a replay
		return receive.NonceReplayed, tx.Commit(ctx)
	case err != nil:
		return 0, fmt.Errorf("pgstore: nonce: %w", err)
	}
	if inserted {
		var total int64
		if err := tx.QueryRow(ctx, s.sumLive).Scan(&total); err != nil {
			return 0, fmt.Errorf("pgstore: nonce: %w", err)
		}
		if rows >= int64(s.perKey) || total >= int64(s.aggregate) {
			return receive.NonceOverCap, nil // rolled back: nothing recorded
		}
		if _, err := tx.Exec(ctx, s.count, keyID, 1); err != nil {
			return 0, fmt.Errorf("pgstore: nonce: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pgstore: nonce: %w", err)
	}
	return receive.NonceFresh, nil
}

// OverCap implements [receive.NonceCapChecker]: whether keyID already has
// PerKeyCap live nonces, read without locking (the verifier's cheap check
// before cryptography; Use decides).
func (s *NonceStore) OverCap(ctx context.Context, keyID string, now time.Time) (bool, error) {
	var over bool
	if err := s.db.QueryRow(ctx, s.overCap, keyID, s.perKey, now).Scan(&over); err != nil {
		return false, fmt.Errorf("pgstore: nonce: %w", err)
	}
	return over, nil
}

// Purge deletes the nonces that expired by now and returns how many it
// deleted, one keyid at a time in short transactions. Run it every minute
// or so (from one pod, or from every pod: concurrent purges are safe):
// without it expired nonces count toward AggregateCap until a keyid at
// its own cap forgets its own.
func (s *NonceStore) Purge(ctx context.Context, now time.Time) (int64, error) {
	rows, err := s.db.Query(ctx, s.expiredKeys, now)
	if err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	var total int64
	for _, key := range keys { // one short transaction each: other keyids' Use goes on
		n, err := s.purgeKey(ctx, key, now)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

func (s *NonceStore) purgeKey(ctx context.Context, key string, now time.Time) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	var rows, n int64
	if err := tx.QueryRow(ctx, s.upsertKey, key).Scan(&rows); err != nil { // its counter row first, as Use
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	if err := tx.QueryRow(ctx, s.purge, key, now).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	if _, err := tx.Exec(ctx, s.count, key, -n); err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	return n, nil
}

// The store is a receive.NonceStore and a receive.NonceCapChecker.
var (
	_ receive.NonceStore      = (*NonceStore)(nil)
	_ receive.NonceCapChecker = (*NonceStore)(nil)
)
