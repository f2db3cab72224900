package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/adcpkit/webhook/receive"
)

// DedupConfig configures [NewDedupStore]. The zero value is valid.
type DedupConfig struct {
	// Table names the binding table; the per-sender counters are in
	// Table + "_senders". Defaults to adcp_webhook_dedup. It must match
	// ^[a-z_][a-z0-9_]{0,54}$.
	Table string
	// Retention is how long a completed binding is kept: at least
	// receive.DedupRetentionMin (24 h), more when a sender advertises a
	// longer delivery_retry_horizon_seconds. Defaults to 24 h.
	Retention time.Duration
	// PerSenderCap bounds the bindings held per sender (answer 429 past
	// it). Defaults to 1,000,000.
	PerSenderCap int
}

// DedupTableDefault is DedupConfig.Table's default.
const DedupTableDefault = "adcp_webhook_dedup"

// DedupStore is a [receive.DedupStore] in Postgres, shared by every pod
// and kept across restarts, as AdCP 3.2 requires of a receiver's
// de-duplication. A claim runs in one transaction that locks the sender's
// counter row and then the binding's row, so one delivery has one owner
// across pods and the per-sender cap holds. (Claims of one sender are
// serialised by that lock: a few thousand a second.) Completed bindings
// are deleted by [DedupStore.Purge] once their retention passes.
type DedupStore struct {
	db                            Pool
	retention                     time.Duration
	perSender                     int
	ddl, lockSender, read, remove string
	insert, takeOver, complete    string
	release, count, purgeSenders  string
	purge, bindings, sendersTable string
}

// newToken is a random owner token, never 0.
func newToken() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

// NewDedupStore returns a store on db. Call [DedupStore.CreateSchema]
// once, or apply [DedupStore.Schema] with your migration tool.
func NewDedupStore(db Pool, cfg DedupConfig) (*DedupStore, error) {
	if db == nil {
		return nil, errors.New("pgstore: NewDedupStore: the pool is nil")
	}
	table := cfg.Table
	if table == "" {
		table = DedupTableDefault
	}
	if !tableName.MatchString(table) || len(table) > 55 {
		return nil, fmt.Errorf("pgstore: DedupConfig.Table %q must match ^[a-z_][a-z0-9_]{0,54}$", table)
	}
	if cfg.Retention < 0 || cfg.PerSenderCap < 0 {
		return nil, errors.New("pgstore: DedupConfig.Retention and PerSenderCap must not be negative (0 means the default)")
	}
	s := &DedupStore{db: db, retention: max(cfg.Retention, receive.DedupRetentionMin), perSender: cfg.PerSenderCap,
		bindings: table, sendersTable: table + "_senders"}
	if s.perSender == 0 {
		s.perSender = 1_000_000
	}
	r := strings.NewReplacer("{dedup}", quote(s.bindings), "{senders}", quote(s.sendersTable), "{dedup_idx}", quote(s.bindings+"_until_idx"))
	s.ddl = r.Replace(`CREATE TABLE IF NOT EXISTS {dedup} (
    sender      text NOT NULL,
    key         text NOT NULL,
    -- SHA-256 of the payload's RFC 8785 canonical form.
    fingerprint bytea NOT NULL,
    done        boolean NOT NULL,
    -- The owner's token while not done.
    token       bigint NOT NULL,
    -- Not done: the owner's lease; done: when the binding may be forgotten.
    until       timestamptz NOT NULL,
    PRIMARY KEY (sender, key)
);
CREATE INDEX IF NOT EXISTS {dedup_idx} ON {dedup} (sender, until);
-- Bindings per sender.
CREATE TABLE IF NOT EXISTS {senders} (
    sender text PRIMARY KEY,
    keys   bigint NOT NULL
);`)
	s.lockSender = r.Replace(`INSERT INTO {senders} AS s (sender, keys) VALUES ($1, 0)
ON CONFLICT (sender) DO UPDATE SET keys = s.keys RETURNING keys`)
	s.read = r.Replace(`SELECT fingerprint, done, token, until FROM {dedup} WHERE sender = $1 AND key = $2 FOR UPDATE`)
	s.remove = r.Replace(`DELETE FROM {dedup} WHERE sender = $1 AND key = $2`)
	s.insert = r.Replace(`INSERT INTO {dedup} (sender, key, fingerprint, done, token, until) VALUES ($1, $2, $3, false, $4, $5)`)
	s.takeOver = r.Replace(`UPDATE {dedup} SET token = $3, until = $4 WHERE sender = $1 AND key = $2`)
	s.complete = r.Replace(`UPDATE {dedup} SET done = true, until = $4 WHERE sender = $1 AND key = $2 AND token = $3 AND NOT done`)
	s.release = r.Replace(`UPDATE {dedup} SET token = 0, until = $4 WHERE sender = $1 AND key = $2 AND token = $3 AND NOT done`)
	s.count = r.Replace(`UPDATE {senders} SET keys = keys + $2 WHERE sender = $1`)
	s.purgeSenders = r.Replace(`SELECT DISTINCT sender FROM {dedup} WHERE until <= $1 AND (done OR until <= $2)`)
	// Completed bindings past retention, and claims abandoned for as long.
	s.purge = r.Replace(`WITH d AS (
	DELETE FROM {dedup} WHERE sender = $1 AND until <= $2 AND (done OR until <= $3) RETURNING 1
)
SELECT count(*) FROM d`)
	return s, nil
}

// Schema is the DDL CreateSchema runs: idempotent.
func (s *DedupStore) Schema() string { return s.ddl }

// CreateSchema creates the tables if they do not exist.
func (s *DedupStore) CreateSchema(ctx context.Context) error {
	if _, err := s.db.Exec(ctx, s.ddl); err != nil {
		return fmt.Errorf("pgstore: creating the dedup tables: %w", err)
	}
	return nil
}

// Claim implements [receive.DedupStore].
func (s *DedupStore) Claim(ctx context.Context, sender, key string, fp [32]byte, now time.Time, lease time.Duration) (receive.DedupClaim, error) {
	c := receive.DedupClaim{Sender: sender, Key: key}
	if lease <= 0 {
		return c, errors.New("pgstore: dedup: a claim's lease must be positive: a zero lease would let two claims own one delivery")
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return c, fmt.Errorf("pgstore: dedup: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	var keys int64
	if err := tx.QueryRow(ctx, s.lockSender, sender).Scan(&keys); err != nil {
		return c, fmt.Errorf("pgstore: dedup: %w", err)
	}
	var stored []byte
	var done bool
	var token int64
	var until time.Time
	err = tx.QueryRow(ctx, s.read, sender, key).Scan(&stored, &done, &token, &until)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("pgstore: dedup: %w", err)
	}
	if found && done && !now.Before(until) { // retention passed
		if _, err := tx.Exec(ctx, s.remove, sender, key); err != nil {
			return c, fmt.Errorf("pgstore: dedup: %w", err)
		}
		if _, err := tx.Exec(ctx, s.count, sender, -1); err != nil {
			return c, fmt.Errorf("pgstore: dedup: %w", err)
		}
		found, keys = false, keys-1
	}
	c.Token = newToken()
	switch {
	case !found:
		if keys >= int64(s.perSender) { // forget what may be forgotten first
			var n int64
			if err := tx.QueryRow(ctx, s.purge, sender, now, now.Add(-s.retention)).Scan(&n); err != nil {
				return c, fmt.Errorf("pgstore: dedup: %w", err)
			}
			if n > 0 {
				if _, err := tx.Exec(ctx, s.count, sender, -n); err != nil {
					return c, fmt.Errorf("pgstore: dedup: %w", err)
				}
				keys -= n
			}
		}
		if keys >= int64(s.perSender) {
			c.Verdict, c.Token = receive.DedupOverCap, 0
			return c, tx.Commit(ctx)
		}
		if _, err := tx.Exec(ctx, s.insert, sender, key, fp[:], int64(c.Token), now.Add(lease)); err != nil {
			return c, fmt.Errorf("pgstore: dedup: %w", err)
		}
		if _, err := tx.Exec(ctx, s.count, sender, 1); err != nil {
			return c, fmt.Errorf("pgstore: dedup: %w", err)
		}
	case string(stored) != string(fp[:]):
		c.Verdict, c.Token = receive.DedupConflict, 0
		return c, tx.Commit(ctx)
	case done:
		c.Verdict, c.Token = receive.DedupCompleted, 0
		return c, tx.Commit(ctx)
	case now.Before(until):
		c.Verdict, c.Token = receive.DedupInProgress, 0
		return c, tx.Commit(ctx)
	default: // the owner's lease passed: take it over
		if _, err := tx.Exec(ctx, s.takeOver, sender, key, int64(c.Token), now.Add(lease)); err != nil {
			return c, fmt.Errorf("pgstore: dedup: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return c, fmt.Errorf("pgstore: dedup: %w", err)
	}
	c.Verdict = receive.DedupFirst
	return c, nil
}

// Complete implements [receive.DedupStore].
func (s *DedupStore) Complete(ctx context.Context, c receive.DedupClaim, now time.Time) error {
	tag, err := s.db.Exec(ctx, s.complete, c.Sender, c.Key, int64(c.Token), now.Add(s.retention))
	if err != nil {
		return fmt.Errorf("pgstore: dedup: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return receive.ErrNotOwner
	}
	return nil
}

// Release implements [receive.DedupStore]: the binding stays, its claim
// lapsed now.
func (s *DedupStore) Release(ctx context.Context, c receive.DedupClaim, now time.Time) error {
	if _, err := s.db.Exec(ctx, s.release, c.Sender, c.Key, int64(c.Token), now); err != nil {
		return fmt.Errorf("pgstore: dedup: %w", err)
	}
	return nil
}

// Purge deletes the completed bindings whose retention passed by now, and
// claims abandoned (their owner died) for as long as the retention, and
// returns how many it deleted. Run it now and then from any pod.
func (s *DedupStore) Purge(ctx context.Context, now time.Time) (int64, error) {
	abandoned := now.Add(-s.retention)
	rows, err := s.db.Query(ctx, s.purgeSenders, now, abandoned)
	if err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	senders, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	var total int64
	for _, sender := range senders { // one short transaction each: claims of others go on
		n, err := s.purgeSender(ctx, sender, now, abandoned)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

func (s *DedupStore) purgeSender(ctx context.Context, sender string, now, abandoned time.Time) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	var keys, n int64
	if err := tx.QueryRow(ctx, s.lockSender, sender).Scan(&keys); err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	if err := tx.QueryRow(ctx, s.purge, sender, now, abandoned).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	if _, err := tx.Exec(ctx, s.count, sender, -n); err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pgstore: dedup purge: %w", err)
	}
	return n, nil
}

var _ receive.DedupStore = (*DedupStore)(nil)
