package webhook

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresSupervisor defaults.
const (
	LeaseDurationDefault = 2 * time.Minute
	PollIntervalDefault  = time.Second
	RetentionDefault     = ActivityRetention
	// MaxLostAttemptsDefault is PostgresConfig.MaxLostAttempts's default.
	MaxLostAttemptsDefault = 5
)

// maxPostgresBreakerKey bounds breaker keys (a URL when no BreakerKey is
// given): they are B-tree index keys, which Postgres limits to about 2.7 kB.
const maxPostgresBreakerKey = 2048

// PostgresPool is what the Postgres supervisor needs of a connection pool. A
// *pgxpool.Pool satisfies it; tests can pass pgxmock's pool. The supervisor
// never closes it.
//
// To LISTEN for new deliveries the supervisor opens one connection of its
// own per RunWorker call, configured like the pool: the pool must also have
// a Config() *pgxpool.Config method (as *pgxpool.Pool does), or
// [PostgresConfig.PollOnly] must be set.
type PostgresPool interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// pgConfigurer is a pool that can say how it connects, for LISTEN.
type pgConfigurer interface {
	Config() *pgxpool.Config
}

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PostgresConfig configures [NewPostgresSupervisor]. The zero value is valid.
type PostgresConfig struct {
	// Tables overrides the table names; see [PostgresTables].
	Tables PostgresTables
	// Retry is the retry policy. The zero value is the Python SDK's.
	Retry RetryPolicy
	// Breaker is the circuit-breaker policy, shared by every worker of
	// every process on the same tables. The zero value is the Python SDK's.
	Breaker BreakerPolicy
	// LogSink receives every [Attempt] once the supervisor has written it to
	// the attempt table (or given up: when the database stays unreachable
	// until the lease expires, the record says WillRetry, since another
	// worker will attempt the delivery again). An attempt whose lease was
	// taken over by another worker before its result was written (its
	// worker stalled past the lease, or the clock stepped) is in neither.
	// Defaults to nil: the table is the log.
	LogSink LogSink
	// Logger receives the supervisor's own warnings (a lost connection, a
	// failing sink) and, at Info, circuit-breaker transitions. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// Concurrency is how many attempts one RunWorker call runs at once.
	// Defaults to 16. Attempts whose results wait for their statement do
	// not count (see RunWorker).
	Concurrency int
	// EndpointConcurrency is the most attempts in flight at once to one
	// endpoint (breaker key), counted in every process on the tables (an
	// attempt whose result is not yet written included): a
	// claim takes an endpoint's deliveries only up to it, oldest first,
	// and round-robin across endpoints, so that one buyer that hangs until
	// the timeout cannot take every worker. Defaults to half of
	// Concurrency (at least 1); NoEndpointLimit turns it off (claims then
	// take the oldest due deliveries, whatever their endpoint). Raise it
	// for a buyer that needs more in flight than that: one slow endpoint
	// that takes most of the traffic.
	EndpointConcurrency int
	// ClaimBatch is the most deliveries one claim statement takes. Defaults
	// to Concurrency.
	ClaimBatch int
	// LeaseDuration is how long a claimed delivery belongs to its worker.
	// A worker that dies leaves its deliveries to be claimed again when their
	// lease expires; an attempt is cancelled after half of it, so that it
	// ends before another worker can take over. Defaults to 2m.
	LeaseDuration time.Duration
	// MaxLostAttempts bounds the attempts of one delivery that are lost:
	// its worker died, or lost its lease, before the attempt's result was
	// written (the delivery is claimed again when the lease expires, and
	// the lost attempt is not charged). A delivery whose attempts were
	// lost MaxLostAttempts times fails without another send, with a
	// recorded reason, so that a delivery that crashes its worker is not
	// sent forever. Defaults to 5: a crash storm (the chaos soak kills a
	// worker process every half second) can cost an honest delivery a few
	// claims too.
	MaxLostAttempts int
	// PollInterval is how often an idle worker looks for due deliveries in
	// case a notification was missed. Defaults to 1s.
	PollInterval time.Duration
	// PollOnly turns LISTEN/NOTIFY wake-ups off, for PgBouncer in
	// transaction pooling mode: workers then find new deliveries by polling
	// every PollInterval. Enqueue still sends NOTIFY.
	PollOnly bool
	// DrainTimeout bounds how long RunWorker waits, once its context is done,
	// for in-flight attempts; after it they are cancelled and left pending,
	// not charged. Defaults to 30s.
	DrainTimeout time.Duration
	// Retention is how long delivered and failed deliveries (and their
	// attempt rows) are kept after they finish; the workers purge older
	// ones in small batches. Defaults to 30 days, AdCP 3.2's floor for activity records; negative keeps them forever.
	Retention time.Duration
	// AllowInsecureHTTP accepts plain http:// destinations, for local
	// development and tests. Defaults to false: https only.
	AllowInsecureHTTP bool
	// Clock is the time source for scheduling, leases and breakers, and is
	// written to the tables: the clocks of every worker process should agree
	// (NTP) to well within LeaseDuration. Defaults to the system clock.
	Clock Clock
	// Observer is told what happens to deliveries, for telemetry; its
	// carriers are stored with the deliveries, so attempts in any process
	// can link to their acceptance. Defaults to nil: nothing, at no cost.
	Observer *Observer
	// Encryption, when set, encrypts what the deliveries table holds of
	// each delivery's secrets — its body, legacy credentials, header
	// values and payload fingerprint — with the ring's current key
	// (AES-256-GCM, each value bound to its column and delivery), and
	// decrypts them with whichever key of the ring sealed them. Every
	// process on the tables needs the ring, operators' tools included
	// (without it they show no body). A row that cannot be decrypted
	// fails alone ([ErrCannotDecrypt]). A ring with no current key only
	// decrypts. See [EncryptionKeys] for the order in which to roll rings
	// out, and [PostgresSupervisor.Reencrypt]. Defaults to nil: plain
	// text.
	Encryption *EncryptionKeys
}

// PostgresSupervisor is a durable [Supervisor] that keeps its queue, attempt
// log, breakers and sequence counters in Postgres.
//
// Any number of RunWorker calls, in any number of processes, share the
// tables. Acceptance is durable: when SendMCP returns nil the delivery is
// committed. Workers claim due deliveries in batches under a lease, send
// with no transaction or lock held, and record each attempt in one short
// transaction fenced by the lease; a worker that dies leaves its deliveries
// to be claimed again when their leases expire. A delivery whose breaker is
// open is not claimed. Finished deliveries are kept, failed ones with their
// last error, until [PostgresConfig.Retention] passes.
//
// A delivery is attempted at least once and may be attempted twice for one
// attempt number: when a worker dies (or loses its connection for longer
// than the lease) after sending and before its result commits, the
// delivery is sent again after the lease expires, with the same bytes and
// idempotency key, which the receiver de-duplicates.
type PostgresSupervisor struct {
	k            *core
	db           PostgresPool
	q            *pgSQL
	ddl          string
	tables       PostgresTables
	versionTable string
	concurrency  int
	limit        int // EndpointConcurrency; 0: none
	batch        int
	lease        time.Duration
	poll         time.Duration
	pollOnly     bool
	listenConfig *pgx.ConnConfig
	drainTimeout time.Duration
	retention    time.Duration
	enc          *EncryptionKeys // PostgresConfig.Encryption, or nil

	notifier struct {
		mu      sync.Mutex
		running bool // a goroutine is sending NOTIFY
		again   bool // and must send another when it is done
	}
}

// NewPostgresSupervisor returns a PostgresSupervisor on pool that delivers
// with sender. It does not touch the database: call
// [PostgresSupervisor.CreateSchema] or apply schema.sql first. A nil
// sender makes a supervisor for an operator's tools (a CLI, a dashboard,
// a process that only enqueues): it accepts and inspects deliveries, and
// its RunWorker returns [ErrNilSender]. A nil pool or a bad config is an
// error.
func NewPostgresSupervisor(pool PostgresPool, sender Sender, cfg PostgresConfig) (*PostgresSupervisor, error) {
	if pool == nil || isNil(pool) {
		return nil, badConfig("pool", "is nil; pass a *pgxpool.Pool")
	}
	k, err := newCore(commonConfig{
		prefix:            "PostgresConfig.",
		sender:            sender,
		retry:             cfg.Retry,
		breaker:           cfg.Breaker,
		sink:              cfg.LogSink,
		logger:            cfg.Logger,
		clock:             cfg.Clock,
		allowInsecureHTTP: cfg.AllowInsecureHTTP,
		observer:          cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	tables := cfg.Tables.withDefaults()
	if err := tables.validate(); err != nil {
		return nil, err
	}
	switch {
	case cfg.Concurrency < 0:
		return nil, badConfig("PostgresConfig.Concurrency", "is negative; use 0 for %d", ConcurrencyDefault)
	case cfg.ClaimBatch < 0:
		return nil, badConfig("PostgresConfig.ClaimBatch", "is negative; use 0 for Concurrency")
	case cfg.LeaseDuration < 0 || cfg.LeaseDuration > 0 && cfg.LeaseDuration < 2*time.Second:
		return nil, badConfig("PostgresConfig.LeaseDuration", "is %v; use 2s or more (0 means %v)", cfg.LeaseDuration, LeaseDurationDefault)
	case cfg.PollInterval < 0:
		return nil, badConfig("PostgresConfig.PollInterval", "is negative; use 0 for %v", PollIntervalDefault)
	case cfg.DrainTimeout < 0:
		return nil, badConfig("PostgresConfig.DrainTimeout", "is negative; use 0 for %v", DrainTimeoutDefault)
	case cfg.MaxLostAttempts < 0:
		return nil, badConfig("PostgresConfig.MaxLostAttempts", "is negative; use 0 for %d", MaxLostAttemptsDefault)
	case cfg.Retention > 0 && cfg.Retention < k.retry.Horizon:
		// A purged delivery's key is free again: it must stay bound for
		// the whole horizon (AdCP 3.2).
		return nil, badConfig("PostgresConfig.Retention", "is %v, shorter than the retry horizon %v: a key must stay bound to its payload for the horizon; keep finished deliveries at least that long (0 means %v)", cfg.Retention, k.retry.Horizon, RetentionDefault)
	}
	k.maxLost = cmp.Or(cfg.MaxLostAttempts, MaxLostAttemptsDefault)
	concurrency := cmp.Or(cfg.Concurrency, ConcurrencyDefault)
	limit, err := endpointLimit("PostgresConfig.EndpointConcurrency", cfg.EndpointConcurrency, concurrency)
	if err != nil {
		return nil, err
	}
	s := &PostgresSupervisor{
		k:            k,
		db:           pool,
		q:            newPgSQL(tables),
		ddl:          tables.ddl(),
		tables:       tables,
		versionTable: tables.versionTable(),
		concurrency:  concurrency,
		limit:        limit,
		lease:        cmp.Or(cfg.LeaseDuration, LeaseDurationDefault),
		poll:         cmp.Or(cfg.PollInterval, PollIntervalDefault),
		pollOnly:     cfg.PollOnly,
		drainTimeout: cmp.Or(cfg.DrainTimeout, DrainTimeoutDefault),
		retention:    cmp.Or(cfg.Retention, RetentionDefault),
		enc:          cfg.Encryption,
	}
	s.batch = cmp.Or(cfg.ClaimBatch, s.concurrency)
	if !s.pollOnly {
		c, ok := pool.(pgConfigurer)
		if !ok || c.Config() == nil || c.Config().ConnConfig == nil {
			return nil, badConfig("PostgresConfig.PollOnly", "is false, but the pool has no Config() *pgxpool.Config to open a LISTEN connection with; pass a *pgxpool.Pool or set PollOnly")
		}
		s.listenConfig = c.Config().ConnConfig.Copy()
	}
	return s, nil
}

// Schema returns the DDL CreateSchema runs on an empty database: every
// migration in order (schema.sql) with the configured table names.
func (s *PostgresSupervisor) Schema() string { return s.ddl }

// DeliveryStateIsDurable reports true: accepted deliveries are committed to
// Postgres.
func (s *PostgresSupervisor) DeliveryStateIsDurable() bool { return true }

// DeliveryRetryHorizon returns [RetryPolicy.Horizon] (24 h unless
// configured), or 0 for [NoHorizon].
func (s *PostgresSupervisor) DeliveryRetryHorizon() time.Duration { return max(s.k.retry.Horizon, 0) }

// SendMCP validates w, builds its body once and commits it for delivery.
// See [Supervisor].
func (s *PostgresSupervisor) SendMCP(ctx context.Context, w MCPWebhook) (Receipt, error) {
	return s.SendMCPTx(ctx, nil, w)
}

// SendMCPTx is SendMCP inside the caller's transaction: the delivery is
// delivered if tx commits and never if it rolls back, so a task's state
// change and its webhook commit together. A nil tx uses the pool. Workers
// are notified when tx commits.
//
// A webhook with a SequenceKey locks that key's counter row until tx ends.
// Two transactions that enqueue webhooks of two keys in opposite orders
// can deadlock (Postgres then aborts one): enqueue the keys of one
// transaction in a fixed order, sorted say.
func (s *PostgresSupervisor) SendMCPTx(ctx context.Context, tx pgx.Tx, w MCPWebhook) (Receipt, error) {
	now := s.k.clock.Now()
	d, err := s.k.urls.prepareMCP(w, now)
	if err != nil {
		return Receipt{}, err
	}
	return s.enqueue(ctx, tx, d, now)
}

// SendPrepared validates w and commits a copy of its body for delivery. See
// [Supervisor].
func (s *PostgresSupervisor) SendPrepared(ctx context.Context, w PreparedWebhook) (Receipt, error) {
	return s.SendPreparedTx(ctx, nil, w)
}

// SendPreparedTx is SendPrepared inside the caller's transaction, as
// [PostgresSupervisor.SendMCPTx].
func (s *PostgresSupervisor) SendPreparedTx(ctx context.Context, tx pgx.Tx, w PreparedWebhook) (Receipt, error) {
	d, err := s.k.urls.prepare(w)
	if err != nil {
		return Receipt{}, err
	}
	return s.enqueue(ctx, tx, d, s.k.clock.Now())
}

func (s *PostgresSupervisor) enqueue(ctx context.Context, tx pgx.Tx, d prepared, now time.Time) (Receipt, error) {
	done := s.k.accepting(ctx, &d, now) // a no-op without an Observer
	r, dup, err := s.insert(ctx, tx, d, now)
	done(AcceptResult{Receipt: r, Duplicate: dup, Err: err})
	return r, err
}

// insert is enqueue without the observer. dup reports a key accepted
// before with this payload: r is that delivery's.
func (s *PostgresSupervisor) insert(ctx context.Context, tx pgx.Tx, d prepared, now time.Time) (r Receipt, dup bool, err error) {
	if err := checkPostgresKey(&d); err != nil {
		return Receipt{}, false, err
	}
	if s.enc.sealing() && d.seqAt > 0 {
		return s.insertSealedTemplate(ctx, tx, d, now)
	}
	var q querier = s.db
	if tx != nil {
		q = tx
	}
	r, dup, refused, err := s.insertIn(ctx, q, tx != nil, tx != nil, d, now)
	switch {
	case refused != nil:
		return Receipt{}, false, s.refuse(ctx, q, d, now, refused.until)
	case err != nil:
		return Receipt{}, false, err
	}
	if tx == nil && !dup {
		s.wakeWorkers()
	}
	return r, dup, nil
}

// checkPostgresKey refuses a breaker key too long for the breakers
// table's key.
func checkPostgresKey(d *prepared) error {
	if len(d.breakerKey) <= maxPostgresBreakerKey {
		return nil
	}
	field := "BreakerKey"
	if d.routing.BreakerKey == "" {
		field = "URL"
	}
	return invalid(field, "is %d bytes; the Postgres supervisor keys breakers by it and accepts at most %d: set a shorter Routing.BreakerKey", len(d.breakerKey), maxPostgresBreakerKey)
}

// refusal is an OpenDrop refusal: the breaker is open until until.
type refusal struct{ until time.Time }

// insertIn runs the enqueue statement for d on q (in a transaction when
// inTx; with its NOTIFY when notify). A refusal (OpenDrop) is returned
// for the caller to record; nothing else is done after the statement.
func (s *PostgresSupervisor) insertIn(ctx context.Context, q querier, inTx, notify bool, d prepared, now time.Time) (r Receipt, dup bool, refused *refusal, err error) {
	p, err := s.enqueueParams(&d, now)
	if err != nil {
		return Receipt{}, false, nil, err
	}
	var row enqueuedRow
	insert := func() (err error) { row, err = scanEnqueued(queryRow(ctx, q, s.q.enqueue, p)); return err }
	if notify {
		insert = func() (err error) {
			row, err = scanEnqueued(queryRow(ctx, q, s.q.enqueueNotify, enqueueTxParams{p, s.q.channel}))
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return Receipt{}, false, nil, dbError("enqueue", err) // nothing was sent
	}
	// No row: the key was bound by a transaction that committed after the
	// statement began (the next try sees its delivery), or, with OpenDrop,
	// the breaker refused the webhook.
	err = insert()
	for try := 0; errors.Is(err, pgx.ErrNoRows); try++ {
		if try == 0 || !p.Drop {
			if try == 3 {
				return Receipt{}, false, nil, dbError("enqueue", errors.New("the enqueue statement returned no row three times"))
			}
			err = insert()
			continue
		}
		var until *time.Time
		if err = queryRow(ctx, q, s.q.refusedUntil, keyAtParams{Key: d.breakerKey, Now: now}).Scan(&until); err != nil {
			return Receipt{}, false, nil, dbError("enqueue", err)
		}
		if until != nil || try == 3 {
			return Receipt{}, false, &refusal{deref(until)}, nil
		}
		// The breaker closed in between: try again.
		err = insert()
	}
	if err != nil {
		if !inTx && outcomeUnknown(err) {
			return Receipt{}, false, nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, dbError("enqueue", err))
		}
		return Receipt{}, false, nil, dbError("enqueue", err)
	}
	r, dup, err = s.enqueued(&d, &row)
	return r, dup, nil, err
}

// scanEnqueued reads one row of an enqueue statement (not the batch's,
// whose rows also carry their item's ord).
func scanEnqueued(row pgx.Row) (r enqueuedRow, err error) {
	err = row.Scan(&r.ID, &r.Seq, &r.SameURL, &r.FP, &r.FPSealedWith, &r.ReemissionOf)
	return r, err
}

// enqueued is the receipt of an enqueue statement's row for d: d's new
// delivery, or the one its key was bound to before (dup), or a conflict.
func (s *PostgresSupervisor) enqueued(d *prepared, r *enqueuedRow) (Receipt, bool, error) {
	same, err := s.samePayload(d, r.SameURL, r.FP, r.FPSealedWith)
	if err != nil {
		return Receipt{}, false, err
	}
	id := strconv.FormatInt(r.ID, 10)
	if same != nil { // the key was bound before
		if !*same {
			return Receipt{}, false, conflict(id)
		}
		return Receipt{ID: id, IdempotencyKey: d.key, Sequence: r.Seq, ReemissionOf: idText(r.ReemissionOf)}, true, nil
	}
	return Receipt{ID: id, IdempotencyKey: d.key, Sequence: r.Seq}, false, nil
}

// enqueueParams are the enqueue statement's parameters for d.
func (s *PostgresSupervisor) enqueueParams(d *prepared, now time.Time) (enqueueParams, error) {
	p := enqueueParams{
		deliveryValues: deliveryValues{
			URL: d.url, Body: d.body, IdempotencyKey: d.key, BreakerKey: d.breakerKey,
			SequenceKey: textOrNil(d.routing.SequenceKey), TaskType: textOrNil(string(d.taskType)), TaskID: textOrNil(d.taskID),
		},
		NotificationType: textOrNil(d.routing.NotificationType), Now: now, Drop: s.k.breaker.OpenAction == OpenDrop,
		MCPBody: d.mcp, PayloadSHA256: d.fp[:], SeqAt: d.seqAt,
		NotificationID: textOrNil(d.nid), SubscriberID: textOrNil(d.routing.SubscriberID), TraceCarrier: textOrNil(d.carrier),
		Tenant: textOrNil(d.routing.Tenant),
	}
	if a := d.routing.Authentication; a != nil {
		p.AuthScheme, p.AuthCredentials = textOrNil(string(a.Scheme)), []byte(a.Credentials)
	}
	if len(d.routing.Headers) > 0 {
		doc, err := json.Marshal(d.routing.Headers)
		if err != nil {
			return enqueueParams{}, err
		}
		p.Headers = textOrNil(string(doc))
	}
	s.sealParams(&p, d)
	return p, nil
}

// outcomeUnknown reports whether an autocommitted statement that returned
// err may nevertheless have committed: the server did not refuse it, no
// connection could be made, and pgx cannot promise that nothing reached
// the server. (A pool that timed out waiting for a connection is reported
// as unknown too: its error does not say that nothing was sent.)
func outcomeUnknown(err error) bool {
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	return !errors.As(err, &pe) && !errors.As(err, &ce) && !errors.Is(err, pgx.ErrNoRows) && !pgconn.SafeToRetry(err)
}

// refuse records a webhook refused at acceptance because its breaker is
// open (OpenDrop) and returns ErrCircuitOpen.
func (s *PostgresSupervisor) refuse(ctx context.Context, q querier, d prepared, now, until time.Time) error {
	a := s.k.refusalRecord(&d, now, until)
	if _, err := exec(ctx, q, s.q.insertRefusal, attemptRow{attemptValues: attemptRecord(a)}); err != nil {
		return dbError("enqueue", err)
	}
	return s.k.emitRefusal(ctx, a, until)
}

// attemptRecord is an attempt's row, after its delivery_id.
func attemptRecord(a Attempt) attemptValues {
	v := attemptValues{
		IdempotencyKey: a.IdempotencyKey, URL: a.URL, BreakerKey: a.BreakerKey,
		SequenceKey: textOrNil(a.SequenceKey), AttemptNumber: a.AttemptNumber, MaxAttempts: a.MaxAttempts,
		Outcome: string(a.Outcome), ErrorMessage: textOrNil(a.Error), ResponseTimeUS: a.ResponseTime.Microseconds(),
		OccurredAt: a.OccurredAt, WillRetry: a.WillRetry, NextRetryAt: timeOrNil(a.NextRetryAt),
		TaskType: textOrNil(string(a.TaskType)), TaskID: textOrNil(a.TaskID), PayloadSize: a.PayloadSize,
		NotificationType: textOrNil(a.NotificationType), ReemissionOf: idOrNil(a.ReemissionOf),
		NotificationID: textOrNil(a.NotificationID), SubscriberID: textOrNil(a.SubscriberID), TimedOut: a.TimedOut,
	}
	if a.SequenceNumber != 0 {
		v.SequenceNumber = &a.SequenceNumber
	}
	if a.HTTPStatus != 0 {
		v.HTTPStatus = &a.HTTPStatus
	}
	return v
}

// attempt is the Attempt a row records.
func (r *attemptRow) attempt() Attempt {
	a := Attempt{
		IdempotencyKey: r.IdempotencyKey, URL: r.URL, BreakerKey: r.BreakerKey,
		SequenceKey: deref(r.SequenceKey), SequenceNumber: deref(r.SequenceNumber),
		AttemptNumber: r.AttemptNumber, MaxAttempts: r.MaxAttempts, Outcome: Outcome(r.Outcome),
		HTTPStatus: deref(r.HTTPStatus), Error: deref(r.ErrorMessage),
		ResponseTime: time.Duration(r.ResponseTimeUS) * time.Microsecond,
		OccurredAt:   r.OccurredAt.UTC(), WillRetry: r.WillRetry,
		TaskType: TaskType(deref(r.TaskType)), TaskID: deref(r.TaskID), PayloadSize: r.PayloadSize,
		NotificationType: deref(r.NotificationType), ReemissionOf: idText(r.ReemissionOf),
		NotificationID: deref(r.NotificationID), SubscriberID: deref(r.SubscriberID), TimedOut: r.TimedOut,
	}
	if r.DeliveryID != nil {
		a.DeliveryID = strconv.FormatInt(*r.DeliveryID, 10)
	}
	if r.NextRetryAt != nil {
		a.NextRetryAt = r.NextRetryAt.UTC()
	}
	return a
}

// parseID turns a Receipt ID back into a row ID.
func parseID(id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: %q is not a PostgresSupervisor delivery ID", ErrNotFound, id)
	}
	return n, nil
}

// Delivery returns a snapshot of a delivery, or [ErrNotFound].
func (s *PostgresSupervisor) Delivery(ctx context.Context, id string) (Delivery, error) {
	n, err := parseID(id)
	if err != nil {
		return Delivery{}, err
	}
	ds, err := collect[snapshotRow](query(ctx, s.db, s.q.delivery, idParams{ID: n}))
	if err != nil {
		return Delivery{}, dbError("delivery", err)
	}
	if len(ds) == 0 {
		return Delivery{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	d, r := ds[0].delivery(), &ds[0]
	// A row this process cannot decrypt shows no body (Delivery.EncryptionKey
	// says whose; its LastError says why once a worker has tried it).
	opened, _ := s.openRow(r.IdempotencyKey, r.URL, sealedValues{SealedWith: r.SealedWith}, r.Body, nil, nil)
	d.Body = opened.body
	return d, nil
}

// Attempts returns a delivery's attempt records (and decisions, with
// AttemptNumber 0) from the attempt table, in order: an empty slice for a
// delivery not yet attempted, [ErrNotFound] for an unknown one.
func (s *PostgresSupervisor) Attempts(ctx context.Context, id string) ([]Attempt, error) {
	n, err := parseID(id)
	if err != nil {
		return nil, err
	}
	rows, err := collect[attemptRow](query(ctx, s.db, s.q.attempts, idParams{ID: n}))
	if err != nil {
		return nil, dbError("attempts", err)
	}
	if len(rows) == 0 {
		if _, err := s.Delivery(ctx, id); err != nil {
			return nil, err // ErrNotFound, or the database's error
		}
	}
	out := make([]Attempt, len(rows))
	for i := range rows {
		out[i] = rows[i].attempt()
	}
	return out, nil
}

// Redeliver sends a failed delivery again, following AdCP 3.2's retry
// horizon and its 409 rule, as [MemorySupervisor.Redeliver] does: within
// the horizon (and unless the receiver last answered 409)
// (counted from the first attempt, which a redelivery does not move) the
// same row is queued again, due now, with the same bytes and key and a
// fresh allowance of attempts, and its earlier attempt rows are kept; past
// it, a new row re-emits it under a fresh idempotency_key (the same
// payload, notification_id and sequence number; linked both ways:
// Receipt.ReemissionOf, Delivery.ReemissionOf and ReemittedAs, and every
// attempt record's ReemissionOf). A SendPrepared body past its horizon
// returns [ErrReemitPrepared]. It returns [ErrNotFound] for an unknown ID
// and [ErrNotFailed] for a delivery that has not failed or was already
// re-emitted.
func (s *PostgresSupervisor) Redeliver(ctx context.Context, id string) (Receipt, error) {
	n, err := parseID(id)
	if err != nil {
		return Receipt{}, err
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return Receipt{}, dbError("redeliver", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	row, err := collectOne[redeliverRow](query(ctx, tx, s.q.redeliverLock, idParams{ID: n}))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Receipt{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	case err != nil:
		return Receipt{}, dbError("redeliver", err)
	case row.State != string(StateFailed):
		return Receipt{}, fmt.Errorf("%w: delivery %s is %s; only failed deliveries can be redelivered", ErrNotFailed, id, row.State)
	case row.ReemittedAs != nil:
		return Receipt{}, fmt.Errorf("%w: delivery %s was re-emitted as %d; redeliver that one", ErrNotFailed, id, *row.ReemittedAs)
	}
	now := s.k.clock.Now()
	p := redeliverParams{ID: n, Now: now, Channel: s.q.channel}
	r := Receipt{ID: id, IdempotencyKey: row.IdempotencyKey, Sequence: row.SequenceNumber, ReemissionOf: idText(row.ReemissionOf)}
	anchor := row.AcceptedAt
	if row.FirstAttemptAt != nil {
		anchor = *row.FirstAttemptAt
	}
	accepted := noAccepted // a re-emission's observer
	if !s.k.pastHorizon(anchor, now) && row.LastStatus != http.StatusConflict {
		if _, err := exec(ctx, tx, s.q.redeliver, p); err != nil {
			return Receipt{}, dbError("redeliver", err)
		}
	} else {
		old, err := s.openRow(row.IdempotencyKey, row.URL, row.sealedValues, row.Body, row.AuthCredentials, row.Headers)
		if err != nil {
			return Receipt{}, fmt.Errorf("delivery %s cannot be re-emitted: %w", id, err)
		}
		d, err := reemission(&prepared{body: old.body, key: row.IdempotencyKey, mcp: row.MCPBody}, id)
		if err != nil {
			return Receipt{}, err
		}
		d.url, d.taskType, d.routing.NotificationType = row.URL, TaskType(deref(row.TaskType)), deref(row.NotificationType)
		done := s.k.accepting(ctx, &d, now)
		// The re-emission's own key binds its seals.
		v := secrets{body: d.body, fingerprint: d.fp[:], credentials: old.credentials}
		if old.headers != nil {
			v.headers = textOrNil(string(old.headers))
		}
		s.enc.sealSecrets(d.key, d.url, &v)
		var newID int64
		if err := queryRow(ctx, tx, s.q.reemit, reemitParams{redeliverParams: p, Body: v.body, IdempotencyKey: d.key,
			PayloadSHA256: v.fingerprint, TraceCarrier: textOrNil(d.carrier), AuthCredentials: v.credentials, Headers: v.headers,
			SealedWith: v.sealedWith, SealedHeaders: v.sealedHeaders}).Scan(&newID, nil); err != nil {
			err = dbError("redeliver", err)
			done(AcceptResult{Err: err})
			return Receipt{}, err
		}
		r = Receipt{ID: strconv.FormatInt(newID, 10), IdempotencyKey: d.key, Sequence: row.SequenceNumber, ReemissionOf: id}
		accepted = done
	}
	if err := tx.Commit(ctx); err != nil {
		err = dbError("redeliver", err)
		accepted(AcceptResult{Err: err})
		return Receipt{}, err
	}
	accepted(AcceptResult{Receipt: r})
	return r, nil
}

// Breaker returns the state of the breaker for key (a BreakerKey, or a URL
// for webhooks without one).
func (s *PostgresSupervisor) Breaker(ctx context.Context, key string) (BreakerState, error) {
	gates, err := s.loadGates(ctx, s.db, []string{key})
	if err != nil {
		return BreakerClosed, dbError("breaker", err)
	}
	b := gates[key].g // no row: closed
	b.advance(s.k.breaker, s.k.clock.Now())
	return b.State, nil
}

// NextSequence allocates and returns the next number of key's sequence,
// durably. Deliveries with that SequenceKey draw from the same counter.
func (s *PostgresSupervisor) NextSequence(ctx context.Context, key string) (int64, error) {
	if err := checkText("key", key, true, 255); err != nil {
		return 0, err
	}
	var n int64
	err := queryRow(ctx, s.db, s.q.nextSequence, sequenceParams{Key: key}).Scan(&n)
	return n, dbError("next sequence", err)
}

// delivery is the snapshot a row shows.
func (r *snapshotRow) delivery() Delivery {
	d := Delivery{
		ID: strconv.FormatInt(r.ID, 10), URL: r.URL, Body: r.Body, IdempotencyKey: r.IdempotencyKey,
		BreakerKey: r.BreakerKey, SequenceKey: deref(r.SequenceKey), Sequence: deref(r.SequenceNumber),
		TaskType: TaskType(deref(r.TaskType)), TaskID: deref(r.TaskID), State: DeliveryState(r.State),
		Attempts: r.Attempts, LastError: deref(r.LastError), LastStatus: deref(r.LastStatus),
		AcceptedAt: r.AcceptedAt.UTC(),
	}
	if d.State == StatePending {
		d.NextAttemptAt = r.DueAt.UTC()
	}
	if r.FinishedAt != nil {
		d.FinishedAt = r.FinishedAt.UTC()
	}
	if r.FirstAttemptAt != nil {
		d.FirstAttemptAt = r.FirstAttemptAt.UTC()
	}
	d.NotificationType, d.SubscriberID, d.Tenant = deref(r.NotificationType), deref(r.SubscriberID), deref(r.Tenant)
	d.EncryptionKey = deref(r.SealedWith)
	d.ReemissionOf, d.ReemittedAs = idText(r.ReemissionOf), idText(r.ReemittedAs)
	return d
}

// idText is a row ID as a delivery ID, or "" for none.
func idText(id *int64) string {
	if id == nil {
		return ""
	}
	return strconv.FormatInt(*id, 10)
}

// idOrNil is a delivery ID as a row ID, or nil for "" (or an ID that is
// not one of this supervisor's, which cannot happen).
func idOrNil(id string) *int64 {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// dbError wraps a database error for the caller, without the server's
// DETAIL and WHERE text, which can quote row values (credentials among
// them).
func dbError(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		c := *pe
		c.Detail, c.Where, c.Hint, c.InternalQuery = "", "", "", ""
		err = &c
		switch c.Code {
		case "42P01": // undefined_table
			return fmt.Errorf("webhook: postgres %s: %w: run PostgresSupervisor.CreateSchema (or apply schema.sql) first: %w", op, ErrSchemaMissing, err)
		case "42703": // undefined_column
			return fmt.Errorf("webhook: postgres %s: %w: the tables are older than this version; run PostgresSupervisor.CreateSchema to upgrade them: %w", op, ErrSchemaMissing, err)
		}
	}
	return fmt.Errorf("webhook: postgres %s: %w", op, err)
}

// Activity returns the AdCP webhook_activity[] records of the deliveries q
// selects, newest first: one per attempt row, and a pending one for each
// queued or in-flight delivery (due at its next attempt, or started when
// it was claimed). Only deliveries with a Routing.NotificationType have
// records (the record's notification_type is required). Records last as
// long as their deliveries: [PostgresConfig.Retention], 30 days by
// default, AdCP's floor.
func (s *PostgresSupervisor) Activity(ctx context.Context, q ActivityQuery) ([]ActivityRecord, error) {
	q, err := q.check()
	if err != nil {
		return nil, err
	}
	p := activityParams{TaskID: textOrNil(q.TaskID), SubscriberID: textOrNil(q.SubscriberID), Limit: q.Limit, Lease: s.lease}
	primary := 0
	switch {
	case q.DeliveryID != "":
		n, err := parseID(q.DeliveryID)
		if err != nil {
			return []ActivityRecord{}, nil // no such delivery: no records
		}
		p.DeliveryID = &n
	case q.TaskID != "":
		primary = 1
	default:
		primary = 2
	}
	rows, err := collect[activityRow](query(ctx, s.db, s.q.activity[primary], p))
	if err != nil {
		return nil, dbError("activity", err)
	}
	out := make([]ActivityRecord, 0, len(rows))
	for _, row := range rows {
		a := Attempt{IdempotencyKey: row.IdempotencyKey, URL: row.URL, SequenceNumber: deref(row.SequenceNumber),
			NotificationType: row.NotificationType, NotificationID: deref(row.NotificationID), SubscriberID: deref(row.SubscriberID),
			PayloadSize: row.PayloadSize, OccurredAt: row.FiredAt}
		if row.Pending {
			if r, ok := pendingActivity(a, row.Ordinal, row.FiredAt); ok {
				out = append(out, r)
			}
			continue
		}
		a.Outcome, a.HTTPStatus, a.Error = Outcome(deref(row.Outcome)), deref(row.HTTPStatus), deref(row.ErrorMessage)
		a.ResponseTime, a.TimedOut = time.Duration(deref(row.ResponseTimeUS))*time.Microsecond, deref(row.TimedOut)
		out = append(out, activityOf(&a, row.Ordinal))
	}
	return newestFirst(out, q.Limit), nil
}

// Wait blocks until the delivery reaches a final state (delivered or
// failed) and returns its snapshot, or returns ctx's error with the
// snapshot it last read. Unlike [MemorySupervisor.Wait] it polls the
// table (every 10 ms at first, backing off to once a second), and the
// final state may be committed a moment before the worker's LogSink call
// for it returns. It returns [ErrNotFound] for an unknown delivery.
func (s *PostgresSupervisor) Wait(ctx context.Context, id string) (Delivery, error) {
	pause := 10 * time.Millisecond
	var last Delivery
	for {
		d, err := s.Delivery(ctx, id)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ErrNotFound) {
				return last, ctxErr
			}
			return last, err
		}
		last = d
		if d.State == StateDelivered || d.State == StateFailed {
			return d, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return d, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}
