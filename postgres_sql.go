package webhook

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"regexp"
	"strings"
)

// schemaSQL is schema.sql: the DDL with the default table names.
//
//go:embed schema.sql
var schemaSQL string

// Default table names, as in schema.sql.
const (
	DeliveriesTableDefault = "adcp_webhook_deliveries"
	AttemptsTableDefault   = "adcp_webhook_attempts"
	BreakersTableDefault   = "adcp_webhook_breakers"
	SequencesTableDefault  = "adcp_webhook_sequences"
)

// PostgresTables names the supervisor's tables. Empty fields take the
// defaults. Each name must match ^[a-z_][a-z0-9_]{0,62}$ and is used
// unquoted, so it resolves through the connection's search_path.
type PostgresTables struct {
	Deliveries string
	Attempts   string
	Breakers   string
	Sequences  string
}

var tableNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (t PostgresTables) withDefaults() PostgresTables {
	t.Deliveries = cmpOr(t.Deliveries, DeliveriesTableDefault)
	t.Attempts = cmpOr(t.Attempts, AttemptsTableDefault)
	t.Breakers = cmpOr(t.Breakers, BreakersTableDefault)
	t.Sequences = cmpOr(t.Sequences, SequencesTableDefault)
	return t
}

func (t PostgresTables) validate() error {
	seen := map[string]string{}
	for _, f := range []struct{ field, name string }{
		{"Deliveries", t.Deliveries}, {"Attempts", t.Attempts}, {"Breakers", t.Breakers}, {"Sequences", t.Sequences},
	} {
		field := "PostgresConfig.Tables." + f.field
		if !tableNameRE.MatchString(f.name) {
			return badConfig(field, "is %q; table names must match ^[a-z_][a-z0-9_]{0,62}$ (lower-case ASCII letters, digits and underscores)", f.name)
		}
		if other, dup := seen[f.name]; dup {
			return badConfig(field, "is %q, the same as Tables.%s; give every table its own name", f.name, other)
		}
		seen[f.name] = f.field
	}
	return nil
}

// schemaIdentRE matches the identifiers in schema.sql that carry a default
// table name: the tables and their indexes.
var schemaIdentRE = regexp.MustCompile(`\badcp_webhook_[a-z_]+\b`)

// ddl returns schema.sql with t's names. An index named after a default
// table is renamed after the overriding table, shortened with a hash when
// the result would pass Postgres's 63-byte identifier limit (which would
// otherwise truncate it, perhaps onto another name).
func (t PostgresTables) ddl() string {
	defaults := []struct{ def, name string }{
		{DeliveriesTableDefault, t.Deliveries}, {AttemptsTableDefault, t.Attempts},
		{BreakersTableDefault, t.Breakers}, {SequencesTableDefault, t.Sequences},
	}
	return schemaIdentRE.ReplaceAllStringFunc(schemaSQL, func(id string) string {
		for _, d := range defaults {
			if id == d.def {
				return d.name
			}
			if suffix, ok := strings.CutPrefix(id, d.def+"_"); ok {
				return indexName(d.name, suffix)
			}
		}
		return id
	})
}

// indexName names table's index with suffix in at most 63 bytes.
func indexName(table, suffix string) string {
	name := table + "_" + suffix
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:4])
	keep := 63 - len(suffix) - len(h) - 2
	return table[:keep] + "_" + h + "_" + suffix
}

// schemaObjectRE finds the tables and indexes a DDL creates.
var schemaObjectRE = regexp.MustCompile(`CREATE (?:TABLE|INDEX) IF NOT EXISTS ([a-z0-9_]+)`)

// schemaObjects lists the tables and indexes ddl creates.
func schemaObjects(ddl string) []string {
	var names []string
	for _, m := range schemaObjectRE.FindAllStringSubmatch(ddl, -1) {
		names = append(names, m[1])
	}
	return names
}

// pgSQL is every statement the supervisor runs, built once with the
// validated table names. Values are always bound parameters.
type pgSQL struct {
	// channel is the NOTIFY channel: the deliveries table's name.
	channel string
	// breakersTable is the gate table's name.
	breakersTable string

	schemaCurrent  string
	enqueue        string
	enqueueNotify  string
	notify         string
	refusedUntil   string
	insertRefusal  string
	claim          string
	claimProbes    string
	probeCandidate string
	lockBreakers   string
	countProbes    string
	nextDue        string
	complete       string
	completeGate   string
	completeBatch  string
	gates          string
	completeNoLog  string
	leaseState     string
	renewLease     string
	release        string
	lockBreaker    string
	saveBreaker    string
	deferBreaker   string
	delivery       string
	attempts       string
	failed         string
	redeliver      string
	purge          string
	purgeRefusals  string
	nextSequence   string
}

// deliveryColumns are what a worker reads of a claimed delivery.
const deliveryColumns = `d.id, d.url, d.body, d.idempotency_key, d.breaker_key, d.sequence_key, d.sequence_number,
	d.task_type, d.task_id, d.notification_type, d.auth_scheme, d.auth_credentials, d.headers,
	d.attempts, COALESCE(d.redelivered_at, d.accepted_at), d.first_attempt_at`

// snapshotColumns are what a Delivery snapshot shows.
const snapshotColumns = `d.id, d.url, d.body, d.idempotency_key, d.breaker_key, d.sequence_key, d.sequence_number,
	d.task_type, d.task_id, d.state, d.attempts, d.last_error, d.last_status,
	d.accepted_at, d.due_at, d.finished_at`

// attemptColumns are the attempt log's columns after id, in Attempt order.
const attemptColumns = `delivery_id, idempotency_key, url, breaker_key, sequence_key, sequence_number,
	attempt_number, max_attempts, outcome, http_status, error_message, response_time_us,
	occurred_at, will_retry, next_retry_at, task_type, task_id, payload_size, notification_type`

// gateColumns are a gate's persisted fields, from a breakers row b.
const gateColumns = `b.state, b.failures, b.successes, b.opened_at, b.period, b.version`

// gateUnchanged is the condition under which a completion that leaves its
// gate alone is written: the gate is still the row the decision was
// computed from (version ver; 0: no row), or, for a success (flag), it is
// clean (closed with no failures), which a success leaves alone whatever
// its version.
func gateUnchanged(flag, key, ver string) string {
	return `NOT EXISTS (SELECT 1 FROM {breakers} b
		WHERE b.breaker_key = ` + key + ` AND b.version <> ` + ver + `::bigint
		  AND NOT (` + flag + `::boolean AND b.failures = 0 AND b.state = 'closed'))`
}

// openRetryAt is when an open gate row b lets a probe through. A row
// written by a release before retry_at existed has none: due at once (the
// gate's own timing then decides).
const openRetryAt = `COALESCE(b.retry_at, b.opened_at)`

func newPgSQL(t PostgresTables) *pgSQL {
	r := strings.NewReplacer(
		"{deliveries}", t.Deliveries, "{attempts}", t.Attempts,
		"{breakers}", t.Breakers, "{sequences}", t.Sequences,
		"{delivery_columns}", deliveryColumns, "{snapshot_columns}", snapshotColumns,
		"{attempt_columns}", attemptColumns,
	)
	q := &pgSQL{channel: t.Deliveries, breakersTable: t.Breakers}

	// Whether every table and index of the DDL ($1) exists, and the gate
	// table ($2) has its latest column.
	q.schemaCurrent = `SELECT NOT EXISTS (SELECT 1 FROM unnest($1::text[]) n WHERE to_regclass(n) IS NULL)
	AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($2) AND attname = 'version' AND NOT attisdropped)`

	// Enqueue: allocate the sequence number, insert, notify, in one
	// statement. $13 refuses the webhook (OpenDrop) while its breaker is
	// open: then nothing is inserted or allocated and no row returns. A
	// webhook accepted while its breaker is open is due when it half-opens.
	enqueue := r.Replace(`
WITH refused AS (
	SELECT $12::boolean AND EXISTS (
		SELECT 1 FROM {breakers} b
		WHERE b.breaker_key = $4 AND b.state = 'open' AND ` + openRetryAt + ` > $11::timestamptz) AS yes
), seq AS (
	INSERT INTO {sequences} AS s (sequence_key, last_value)
	SELECT $5, 1 FROM refused WHERE $5::text IS NOT NULL AND NOT refused.yes
	ON CONFLICT (sequence_key) DO UPDATE SET last_value = s.last_value + 1
	RETURNING last_value
), ins AS (
	INSERT INTO {deliveries} (state, due_at, url, body, idempotency_key, breaker_key, sequence_key, sequence_number,
		task_type, task_id, notification_type, auth_scheme, auth_credentials, headers, accepted_at)
	SELECT 'pending',
		GREATEST($11::timestamptz, (SELECT ` + openRetryAt + ` FROM {breakers} b
			WHERE b.breaker_key = $4 AND b.state = 'open')),
		$1, $2, $3, $4, $5, (SELECT last_value FROM seq), $6, $7, $8, $9, $10, $13::jsonb, $11
	FROM refused WHERE NOT refused.yes
	RETURNING id, sequence_number
)
`)
	q.enqueue = enqueue + `SELECT ins.id, COALESCE(ins.sequence_number, 0) FROM ins`
	// In the caller's transaction the NOTIFY must go with it, to be sent at
	// its commit. (Postgres serialises the commits of notifying
	// transactions, WAL flush included, so the pool path notifies
	// separately: see notify.)
	q.enqueueNotify = enqueue + `SELECT ins.id, COALESCE(ins.sequence_number, 0), pg_notify($14, '') FROM ins`
	// A wake-up needs no durability: committing it without waiting for the
	// WAL keeps the notify lock for microseconds.
	q.notify = `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')`
	q.refusedUntil = r.Replace(`SELECT (SELECT ` + openRetryAt + ` FROM {breakers} b WHERE b.breaker_key = $1 AND b.state = 'open' AND ` + openRetryAt + ` > $2)`)
	q.insertRefusal = r.Replace(`INSERT INTO {attempts} ({attempt_columns})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`)

	// The claim: up to $2 rows due at $1 whose gate is closed (or has no
	// row), marked running under lease $4 until $3. Committed at once.
	// (It does not return the gate's row: a LEFT JOIN here made the claim
	// thirty times slower under a backlog. Completions start from the
	// gate cache instead.)
	q.claim = r.Replace(`
WITH due AS (
	SELECT d.id FROM {deliveries} d
	WHERE d.state IN ('pending', 'running') AND d.due_at <= $1
	  AND NOT EXISTS (SELECT 1 FROM {breakers} b WHERE b.breaker_key = d.breaker_key AND b.state <> 'closed')
	ORDER BY d.due_at
	LIMIT $2
	FOR UPDATE OF d SKIP LOCKED
)
UPDATE {deliveries} d SET state = 'running', due_at = $3, lease_token = $4, probe_period = NULL
FROM due WHERE d.id = due.id
RETURNING {delivery_columns}`)
	// The same for one breaker key's half-open probes ($5, period $6).
	q.claimProbes = r.Replace(`
WITH due AS (
	SELECT d.id FROM {deliveries} d
	WHERE d.breaker_key = $5 AND d.state IN ('pending', 'running') AND d.due_at <= $1
	ORDER BY d.due_at
	LIMIT $2
	FOR UPDATE OF d SKIP LOCKED
)
UPDATE {deliveries} d SET state = 'running', due_at = $3, lease_token = $4, probe_period = $6
FROM due WHERE d.id = due.id
RETURNING {delivery_columns}`)
	// Gates that may let a probe through now (open past their retry_at, or
	// half-open with a free slot: a filter; the gate decides once locked),
	// and have work for one.
	tripped := `(b.state = 'open' AND ` + openRetryAt + ` <= $1
		OR b.state = 'half_open' AND (SELECT count(*) FROM {deliveries} d WHERE d.breaker_key = b.breaker_key
			AND d.state = 'running' AND d.probe_period = b.period AND d.due_at > $1) < $2)
	  AND EXISTS (SELECT 1 FROM {deliveries} d
		WHERE d.breaker_key = b.breaker_key AND d.state IN ('pending', 'running') AND d.due_at <= $1)`
	q.probeCandidate = r.Replace(`SELECT EXISTS (SELECT 1 FROM {breakers} b WHERE ` + tripped + `)`)
	q.lockBreakers = r.Replace(`SELECT b.breaker_key, ` + gateColumns + `
FROM {breakers} b WHERE ` + tripped + `
ORDER BY b.updated_at LIMIT $3 FOR UPDATE SKIP LOCKED`)
	q.countProbes = r.Replace(`SELECT count(*) FROM {deliveries}
WHERE breaker_key = $1 AND state = 'running' AND probe_period = $2 AND due_at > $3`)

	// When an idle worker should look again: the next due row or lease
	// expiry, or the next open gate to half-open.
	q.nextDue = r.Replace(`SELECT LEAST(
	(SELECT min(due_at) FROM {deliveries} WHERE state IN ('pending', 'running') AND due_at > $1),
	(SELECT min(` + openRetryAt + `) FROM {breakers} b WHERE b.state = 'open' AND ` + openRetryAt + ` > $1))`)

	// Completion, fenced by the lease token: the state change and the log
	// row in one statement. No row is inserted when the lease was lost.
	set := `state = $3, attempts = $4, due_at = $5, first_attempt_at = $6, finished_at = $7,
		last_status = $8, last_error = $9, probe_period = NULL,
		lease_token = CASE WHEN $3 = 'running' THEN -lease_token ELSE lease_token END`
	// A success that leaves the gate alone ($28) is written only while the
	// gate stays clean: closed with no failures, or no row (a success on
	// any other gate changes it, and takes completeGate).
	q.complete = r.Replace(`
WITH done AS (
	UPDATE {deliveries} SET ` + set + `
	WHERE id = $1 AND lease_token = $2 AND state = 'running' AND ` + gateUnchanged("$28", "{deliveries}.breaker_key", "$29") + `
	RETURNING id
)
INSERT INTO {attempts} ({attempt_columns})
SELECT done.id, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27 FROM done`)
	// A completion that changes the gate persists the gate's new value
	// ($29-$34, computed by the state machine from the row at version
	// $35) only if the row is still at that version, and the delivery's
	// state only with it; the attempt row follows when $28. It returns
	// whether the lease held, whether the completion was written, and, for
	// a retry when it was not, the gate's row as this statement saw it.
	q.completeGate = r.Replace(`
WITH leased AS (
	SELECT id FROM {deliveries} WHERE id = $1 AND lease_token = $2 AND state = 'running' FOR UPDATE
), gate AS (
	INSERT INTO {breakers} AS b (breaker_key, state, failures, successes, opened_at, period, retry_at, version, updated_at)
	SELECT $12, $29, $30, $31, $32, $33, $34, $35::bigint + 1, $21 FROM leased
	ON CONFLICT (breaker_key) DO UPDATE SET state = EXCLUDED.state, failures = EXCLUDED.failures,
		successes = EXCLUDED.successes, opened_at = EXCLUDED.opened_at, period = EXCLUDED.period,
		retry_at = EXCLUDED.retry_at, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
	WHERE b.version = $35
	RETURNING 1
), done AS (
	UPDATE {deliveries} SET ` + set + `
	WHERE id = $1 AND lease_token = $2 AND state = 'running' AND EXISTS (SELECT 1 FROM gate)
	RETURNING id
), logged AS (
	INSERT INTO {attempts} ({attempt_columns})
	SELECT done.id, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27
	FROM done WHERE $28::boolean
)
SELECT EXISTS (SELECT 1 FROM leased), EXISTS (SELECT 1 FROM done), ` + gateColumns + `
FROM (SELECT 1) one LEFT JOIN {breakers} b ON b.breaker_key = $12`)
	// The same for many deliveries at once, from arrays; it returns the IDs
	// it wrote.
	// The same for many deliveries at once, from arrays. Completions of a
	// gate that changes ($28 gated) are written only with that gate's new
	// value ($30-$38, one element per changed gate, computed by the state
	// machine from the row at version expected), and only if its row is
	// still at that version; successes that leave their gate alone only
	// while it is unchanged ($39, the version they were decided from) or
	// clean. It returns the IDs it wrote and the gates it persisted.
	q.completeBatch = r.Replace(`
WITH v AS (
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::timestamptz[], $6::timestamptz[],
		$7::timestamptz[], $8::int[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[],
		$15::int[], $16::int[], $17::text[], $18::int[], $19::text[], $20::bigint[], $21::timestamptz[], $22::boolean[],
		$23::timestamptz[], $24::text[], $25::text[], $26::int[], $27::text[], $28::boolean[], $29::boolean[], $39::bigint[])
	AS v(id, token, state, attempts, due_at, first_attempt_at, finished_at, last_status, last_error,
		idempotency_key, url, breaker_key, sequence_key, sequence_number, attempt_number, max_attempts, outcome,
		http_status, error_message, response_time_us, occurred_at, will_retry, next_retry_at, task_type, task_id,
		payload_size, notification_type, gated, success, gate_version)
), g AS (
	SELECT * FROM unnest($30::text[], $31::text[], $32::int[], $33::int[], $34::timestamptz[], $35::bigint[],
		$36::timestamptz[], $37::bigint[], $38::timestamptz[])
	AS g(breaker_key, state, failures, successes, opened_at, period, retry_at, expected, updated_at)
), gated AS (
	-- In key order, so that concurrent batches lock gates in one order.
	INSERT INTO {breakers} AS b (breaker_key, state, failures, successes, opened_at, period, retry_at, version, updated_at)
	SELECT g.breaker_key, g.state, g.failures, g.successes, g.opened_at, g.period, g.retry_at, g.expected + 1, g.updated_at
	FROM g ORDER BY g.breaker_key
	ON CONFLICT (breaker_key) DO UPDATE SET state = EXCLUDED.state, failures = EXCLUDED.failures,
		successes = EXCLUDED.successes, opened_at = EXCLUDED.opened_at, period = EXCLUDED.period,
		retry_at = EXCLUDED.retry_at, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
	WHERE b.version = EXCLUDED.version - 1
	RETURNING b.breaker_key
), done AS (
	UPDATE {deliveries} d SET state = v.state, attempts = v.attempts, due_at = v.due_at,
		first_attempt_at = v.first_attempt_at, finished_at = v.finished_at, last_status = v.last_status,
		last_error = v.last_error, probe_period = NULL,
		lease_token = CASE WHEN v.state = 'running' THEN -d.lease_token ELSE d.lease_token END
	FROM v WHERE d.id = ANY($1::bigint[]) AND d.id = v.id AND d.lease_token = v.token AND d.state = 'running'
		AND CASE WHEN v.gated THEN v.breaker_key IN (SELECT breaker_key FROM gated)
			ELSE ` + gateUnchanged("v.success", "d.breaker_key", "v.gate_version") + ` END
	RETURNING d.id, v.token AS lease_token
), logged AS (
	INSERT INTO {attempts} ({attempt_columns})
	SELECT v.id, v.idempotency_key, v.url, v.breaker_key, v.sequence_key, v.sequence_number, v.attempt_number,
		v.max_attempts, v.outcome, v.http_status, v.error_message, v.response_time_us, v.occurred_at, v.will_retry,
		v.next_retry_at, v.task_type, v.task_id, v.payload_size, v.notification_type
	FROM v JOIN done ON done.id = v.id AND done.lease_token = v.token
	RETURNING delivery_id
)
SELECT delivery_id, NULL::text FROM logged
UNION ALL
SELECT NULL::bigint, breaker_key FROM gated`)
	// The gates of some keys, as they are now.
	q.gates = r.Replace(`SELECT b.breaker_key, ` + gateColumns + ` FROM {breakers} b WHERE b.breaker_key = ANY($1)`)
	q.completeNoLog = r.Replace(`UPDATE {deliveries} SET ` + set + `
WHERE id = $1 AND lease_token = $2 AND state = 'running' AND ` + gateUnchanged("$10", "{deliveries}.breaker_key", "$11"))
	// A held completion left the row running under the negated token;
	// release makes it pending for its next attempt.
	q.release = r.Replace(`UPDATE {deliveries} SET state = 'pending', due_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running'`)
	q.renewLease = r.Replace(`UPDATE {deliveries} SET due_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running'`)
	q.leaseState = r.Replace(`SELECT state, lease_token FROM {deliveries} WHERE id = $1`)

	// The locked path of a gate change: the upsert creates and locks the
	// row and returns it; the worker applies the state machine (gate.go)
	// and persists the result in the same transaction.
	q.lockBreaker = r.Replace(`INSERT INTO {breakers} AS b (breaker_key, updated_at) VALUES ($1, $2)
ON CONFLICT (breaker_key) DO UPDATE SET updated_at = b.updated_at
RETURNING ` + gateColumns)
	// Persisting a gate the caller has locked.
	q.saveBreaker = r.Replace(`UPDATE {breakers} SET state = $2, failures = $3, successes = $4, opened_at = $5, period = $6,
	retry_at = $7, version = version + 1, updated_at = $8
WHERE breaker_key = $1
RETURNING version`)
	// A breaker that opened defers its pending deliveries to when it
	// half-opens, so claims do not keep stepping over them.
	q.deferBreaker = r.Replace(`UPDATE {deliveries} SET due_at = $2
WHERE id IN (SELECT id FROM {deliveries}
	WHERE breaker_key = $1 AND state = 'pending' AND due_at < $2 FOR UPDATE SKIP LOCKED)`)

	q.delivery = r.Replace(`SELECT {snapshot_columns} FROM {deliveries} d WHERE d.id = $1`)
	q.attempts = r.Replace(`SELECT {attempt_columns} FROM {attempts} WHERE delivery_id = $1 ORDER BY id`)
	q.failed = r.Replace(`SELECT {snapshot_columns} FROM {deliveries} d WHERE d.state = 'failed' AND d.id > $1 ORDER BY d.id LIMIT $2`)
	q.redeliver = r.Replace(`UPDATE {deliveries} SET state = 'pending', due_at = $2, attempts = 0, first_attempt_at = NULL, redelivered_at = $2,
	finished_at = NULL, lease_token = NULL, probe_period = NULL
WHERE id = $1 AND state = 'failed'
RETURNING pg_notify($3, '')`)
	q.purge = r.Replace(`DELETE FROM {deliveries} WHERE id IN (
	SELECT id FROM {deliveries} WHERE state IN ('delivered', 'failed') AND finished_at < $1
	ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`)
	q.purgeRefusals = r.Replace(`DELETE FROM {attempts} WHERE id IN (
	SELECT id FROM {attempts} WHERE delivery_id IS NULL AND occurred_at < $1
	ORDER BY occurred_at LIMIT $2 FOR UPDATE SKIP LOCKED)`)
	q.nextSequence = r.Replace(`INSERT INTO {sequences} AS s (sequence_key, last_value) VALUES ($1, 1)
ON CONFLICT (sequence_key) DO UPDATE SET last_value = s.last_value + 1
RETURNING last_value`)
	return q
}
