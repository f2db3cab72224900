package webhook

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Default table names, as in schema.sql.
const (
	DeliveriesTableDefault = "adcp_webhook_deliveries"
	AttemptsTableDefault   = "adcp_webhook_attempts"
	BreakersTableDefault   = "adcp_webhook_breakers"
	SequencesTableDefault  = "adcp_webhook_sequences"
)

// PostgresTables names the supervisor's tables. Empty fields take the
// defaults. Each name must match ^[a-z_][a-z0-9_]{0,62}$ and is used
// unquoted, so it resolves through the connection's search_path, and so
// it cannot be a word Postgres reserves (order, user, …).
type PostgresTables struct {
	Deliveries string
	Attempts   string
	Breakers   string
	Sequences  string
}

var tableNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// reservedWords are the keywords Postgres 15 does not accept as a table
// name unquoted: pg_get_keywords() with catcode R (reserved) or T
// (reserved, can be a function or type name). A test compares them with
// the server's own list.
var reservedWords = strings.Fields(`
	all analyse analyze and any array as asc asymmetric authorization binary both case cast check
	collate collation column concurrently constraint create cross current_catalog current_date
	current_role current_schema current_time current_timestamp current_user default deferrable desc
	distinct do else end except false fetch for foreign freeze from full grant group having ilike in
	initially inner intersect into is isnull join lateral leading left like limit localtime
	localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
	references returning right select session_user similar some symmetric table tablesample then to
	trailing true union unique user using variadic verbose when where window with`)

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
		if slices.Contains(reservedWords, f.name) {
			return badConfig(field, "is %q, a word Postgres reserves: it cannot name a table unquoted; choose another name (adcp_webhook_%s, say)", f.name, f.name)
		}
		if other, dup := seen[f.name]; dup {
			return badConfig(field, "is %q, the same as Tables.%s; give every table its own name", f.name, other)
		}
		seen[f.name] = f.field
	}
	return nil
}

// schemaIdentRE matches the identifiers in the migrations that carry a
// default table name: the tables, their indexes, the version table.
var schemaIdentRE = regexp.MustCompile(`\badcp_webhook_[a-z_]+\b`)

// ddl returns every migration, in order, with t's names: the schema
// CreateSchema builds on an empty database (schema.sql, with the default
// names).
func (t PostgresTables) ddl() string {
	var b strings.Builder
	for i, m := range t.migrations() {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(m.SQL)
	}
	return b.String()
}

// rename returns sql with t's names. An index named after a default table
// is renamed after the overriding table, shortened with a hash when the
// result would pass Postgres's 63-byte identifier limit (which would
// otherwise truncate it, perhaps onto another name).
func (t PostgresTables) rename(sql string) string {
	defaults := []struct{ def, name string }{
		{DeliveriesTableDefault, t.Deliveries}, {AttemptsTableDefault, t.Attempts},
		{BreakersTableDefault, t.Breakers}, {SequencesTableDefault, t.Sequences},
	}
	return schemaIdentRE.ReplaceAllStringFunc(sql, func(id string) string {
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
// Rows, as statements return them and scans read them by column name.

// deliveryValues are the columns a delivery is accepted with that every
// reader of it shows.
type deliveryValues struct {
	URL            string  `db:"url"`
	Body           []byte  `db:"body"`
	IdempotencyKey string  `db:"idempotency_key"`
	BreakerKey     string  `db:"breaker_key"`
	SequenceKey    *string `db:"sequence_key"`
	TaskType       *string `db:"task_type"`
	TaskID         *string `db:"task_id"`
}

// jobRow is what a worker reads of a claimed delivery.
type jobRow struct {
	ID int64 `db:"id"`
	deliveryValues
	SequenceNumber   *int64     `db:"sequence_number"`
	NotificationType *string    `db:"notification_type"`
	AuthScheme       *string    `db:"auth_scheme"`
	AuthCredentials  []byte     `db:"auth_credentials"`
	Headers          []byte     `db:"headers"` // JSON
	Attempts         int        `db:"attempts"`
	LostAttempts     int        `db:"lost_attempts"`
	AcceptedAt       time.Time  `db:"accepted_at"`
	FirstAttemptAt   *time.Time `db:"first_attempt_at"`
	ReemissionOf     *int64     `db:"reemission_of"`
	NotificationID   *string    `db:"notification_id"`
	SubscriberID     *string    `db:"subscriber_id"`
	TraceCarrier     *string    `db:"trace_carrier"`
	Tenant           *string    `db:"tenant"`
	sealedValues
}

// sealedValues are the columns that say how a row's secrets are stored.
type sealedValues struct {
	SealedWith    *string `db:"sealed_with"`    // the ring's key; nil: plaintext
	SealedHeaders []byte  `db:"sealed_headers"` // sealed Routing.Headers (headers is NULL)
}

// snapshotRow is what a Delivery snapshot shows.
type snapshotRow struct {
	ID int64 `db:"id"`
	deliveryValues
	SequenceNumber   *int64     `db:"sequence_number"`
	State            string     `db:"state"`
	Attempts         int        `db:"attempts"`
	LastError        *string    `db:"last_error"`
	LastStatus       *int       `db:"last_status"`
	AcceptedAt       time.Time  `db:"accepted_at"`
	DueAt            time.Time  `db:"due_at"`
	FinishedAt       *time.Time `db:"finished_at"`
	ReemissionOf     *int64     `db:"reemission_of"`
	ReemittedAs      *int64     `db:"reemitted_as"`
	FirstAttemptAt   *time.Time `db:"first_attempt_at"`
	NotificationType *string    `db:"notification_type"`
	SubscriberID     *string    `db:"subscriber_id"`
	Tenant           *string    `db:"tenant"`
	MCPBody          bool       `db:"mcp_body"`
	SealedWith       *string    `db:"sealed_with"`
}

// attemptRow is a row of the attempt log.
type attemptRow struct {
	DeliveryID *int64 `db:"delivery_id"` // nil: refused at acceptance
	attemptValues
}

// attemptValues are an attempt row's columns after delivery_id, which a
// completion takes from the row it updated.
type attemptValues struct {
	IdempotencyKey   string     `db:"idempotency_key"`
	URL              string     `db:"url"`
	BreakerKey       string     `db:"breaker_key"`
	SequenceKey      *string    `db:"sequence_key"`
	SequenceNumber   *int64     `db:"sequence_number"`
	AttemptNumber    int        `db:"attempt_number"`
	MaxAttempts      int        `db:"max_attempts"`
	Outcome          string     `db:"outcome"`
	HTTPStatus       *int       `db:"http_status"`
	ErrorMessage     *string    `db:"error_message"`
	ResponseTimeUS   int64      `db:"response_time_us"`
	OccurredAt       time.Time  `db:"occurred_at"`
	WillRetry        bool       `db:"will_retry"`
	NextRetryAt      *time.Time `db:"next_retry_at"`
	TaskType         *string    `db:"task_type"`
	TaskID           *string    `db:"task_id"`
	PayloadSize      int        `db:"payload_size"`
	NotificationType *string    `db:"notification_type"`
	ReemissionOf     *int64     `db:"reemission_of"`
	NotificationID   *string    `db:"notification_id"`
	SubscriberID     *string    `db:"subscriber_id"`
	TimedOut         bool       `db:"timed_out"`
}

// gateRow is a gate's persisted fields. A row that is not there (every
// column NULL, from a LEFT JOIN) is a closed, clean gate at version 0.
type gateRow struct {
	State     *string    `db:"state"`
	Failures  *int       `db:"failures"`
	Successes *int       `db:"successes"`
	OpenedAt  *time.Time `db:"opened_at"`
	Period    *int64     `db:"period"`
	Version   *int64     `db:"version"`
	// The endpoint's run of failures (gate.go's health).
	FailingSince     *time.Time `db:"failing_since"`
	FailedDeliveries *int       `db:"failed_deliveries"`
	Failing          *bool      `db:"failing"`
}

// keyedGateRow is a gate row with its key.
type keyedGateRow struct {
	Key string `db:"breaker_key"`
	gateRow
}

// Parameters, one struct per statement (or per family of statements).

type enqueueParams struct {
	deliveryValues
	NotificationType *string   `db:"notification_type"`
	AuthScheme       *string   `db:"auth_scheme"`
	AuthCredentials  []byte    `db:"auth_credentials"`
	Headers          *string   `db:"headers"` // JSON
	Now              time.Time `db:"now"`
	Drop             bool      `db:"drop"`     // refuse while the breaker is open (OpenDrop)
	MCPBody          bool      `db:"mcp_body"` // BuildMCPBody's: a re-emission can rebuild it
	PayloadSHA256    []byte    `db:"payload_sha256"`
	SeqAt            int       `db:"seq_at"` // write the sequence number over the 0 at this offset of body; 0: none
	NotificationID   *string   `db:"notification_id"`
	SubscriberID     *string   `db:"subscriber_id"`
	TraceCarrier     *string   `db:"trace_carrier"`
	Tenant           *string   `db:"tenant"`
	SealedWith       *string   `db:"sealed_with"`
	SealedHeaders    []byte    `db:"sealed_headers"`
}

// enqueueRows are a batch's webhooks, one array element each, with
// distinct keys (the caller resolves keys repeated within the batch).
// Each field's pg tag is its element type.
type enqueueRows struct {
	Ord              []int32   `db:"ord" pg:"int"` // the item's index
	URL              []string  `db:"url" pg:"text"`
	Body             [][]byte  `db:"body" pg:"bytea"`
	IdempotencyKey   []string  `db:"idempotency_key" pg:"text"`
	BreakerKey       []string  `db:"breaker_key" pg:"text"`
	SequenceKey      []*string `db:"sequence_key" pg:"text"`
	TaskType         []*string `db:"task_type" pg:"text"`
	TaskID           []*string `db:"task_id" pg:"text"`
	NotificationType []*string `db:"notification_type" pg:"text"`
	AuthScheme       []*string `db:"auth_scheme" pg:"text"`
	AuthCredentials  [][]byte  `db:"auth_credentials" pg:"bytea"`
	Headers          []*string `db:"headers" pg:"jsonb"`
	MCPBody          []bool    `db:"mcp_body" pg:"boolean"`
	PayloadSHA256    [][]byte  `db:"payload_sha256" pg:"bytea"`
	SeqAt            []int32   `db:"seq_at" pg:"int"`
	NotificationID   []*string `db:"notification_id" pg:"text"`
	SubscriberID     []*string `db:"subscriber_id" pg:"text"`
	TraceCarrier     []*string `db:"trace_carrier" pg:"text"`
	Tenant           []*string `db:"tenant" pg:"text"`
	SealedWith       []*string `db:"sealed_with" pg:"text"`
	SealedHeaders    [][]byte  `db:"sealed_headers" pg:"bytea"`
}

type enqueueBatchParams struct {
	enqueueRows
	Now time.Time `db:"now"`
}

// enqueuedRow is one row of enqueueBatch: the item at ord, its delivery
// and sequence number, and for a key bound before, whether its payload
// and URL are the same, and its reemission_of.
type enqueuedRow struct {
	Ord          int32   `db:"ord"`
	ID           int64   `db:"id"`
	Seq          int64   `db:"seq"`
	SameURL      *bool   `db:"same_url"`
	FP           []byte  `db:"fp"`
	FPSealedWith *string `db:"fp_sealed_with"`
	ReemissionOf *int64  `db:"reemission_of"`
}

type enqueueTxParams struct {
	enqueueParams
	Channel string `db:"channel"`
}

type channelParams struct {
	Channel string `db:"channel"`
}

type keyAtParams struct {
	Key string    `db:"breaker_key"`
	Now time.Time `db:"now"`
}

type claimParams struct {
	Now      time.Time `db:"now"`
	Limit    int       `db:"limit"`
	LeaseEnd time.Time `db:"lease_end"`
	Token    int64     `db:"token"`
}

// deepClaimParams claim within EndpointConcurrency (Cap): from the
// endpoints a walk found.
type deepClaimParams struct {
	claimParams
	Cap int `db:"cap"`
}

// cappedClaimParams claim within EndpointConcurrency, looking at the
// oldest Scan due rows.
type cappedClaimParams struct {
	deepClaimParams
	Scan int `db:"scan"`
}

// lockParams name an advisory lock.
type lockParams struct {
	Lock int64 `db:"lock"`
}

// walkParams walk past a capped head: up to Walk endpoints after the key
// After.
type walkParams struct {
	cappedClaimParams
	After string `db:"after"`
	Walk  int    `db:"walk"`
}

// capParams ask which endpoints among the oldest Scan due rows are at
// their cap.
type capParams struct {
	Now  time.Time `db:"now"`
	Cap  int       `db:"cap"`
	Scan int       `db:"scan"`
}

type claimProbesParams struct {
	claimParams
	Key    string `db:"breaker_key"`
	Period int64  `db:"period"`
}

type probesParams struct {
	Now    time.Time `db:"now"`
	Probes int       `db:"probes"` // HalfOpenProbes
}

type lockBreakersParams struct {
	probesParams
	Limit int `db:"limit"`
}

type countProbesParams struct {
	Key    string    `db:"breaker_key"`
	Period int64     `db:"period"`
	Now    time.Time `db:"now"`
}

type nowParams struct {
	Now time.Time `db:"now"`
}

// stateParams are a completion's delivery columns, fenced by its lease.
type stateParams struct {
	ID             int64      `db:"id"`
	Token          int64      `db:"token"`
	State          string     `db:"state"`
	Attempts       int        `db:"attempts"`
	DueAt          time.Time  `db:"due_at"`
	FirstAttemptAt *time.Time `db:"first_attempt_at"`
	FinishedAt     *time.Time `db:"finished_at"`
	LastStatus     *int       `db:"last_status"`
	LastError      *string    `db:"last_error"`
}

// guardParams decide whether a completion that leaves its gate alone is
// written: its gate is still at GateVersion (0: no row), or, for a
// success, clean.
type guardParams struct {
	Success     bool  `db:"success"`
	GateVersion int64 `db:"gate_version"`
}

type completeParams struct {
	stateParams
	attemptValues
	guardParams
}

type completeNoLogParams struct {
	stateParams
	guardParams
}

// gateParams are a gate's new value.
type gateParams struct {
	GateState     string     `db:"gate_state"`
	GateFailures  int        `db:"gate_failures"`
	GateSuccesses int        `db:"gate_successes"`
	GateOpenedAt  *time.Time `db:"gate_opened_at"`
	GatePeriod    int64      `db:"gate_period"`
	GateRetryAt   *time.Time `db:"gate_retry_at"`
	// The endpoint's run of failures.
	GateFailingSince     *time.Time `db:"gate_failing_since"`
	GateFailedDeliveries int        `db:"gate_failed_deliveries"`
	GateFailing          bool       `db:"gate_failing"`
}

type completeGateParams struct {
	stateParams
	attemptValues
	gateParams
	WithLog     bool  `db:"with_log"`
	GateVersion int64 `db:"gate_version"` // the row the new value was computed from
	// GateKey is the delivery's breaker key. (attemptValues' breaker_key
	// is the record's, in its loggable form.)
	GateKey string `db:"gate_key"`
}

// completeGateResult is what completeGate returns.
type completeGateResult struct {
	Leased  bool `db:"leased"` // the lease held
	Done    bool `db:"done"`   // the completion was written
	gateRow      // the gate's row as the statement saw it
}

// batchRows are the completions of a batch, one array element each. Each
// field's pg tag is its element type.
type batchRows struct {
	ID               []int64      `db:"id" pg:"bigint"`
	Token            []int64      `db:"token" pg:"bigint"`
	State            []string     `db:"state" pg:"text"`
	Attempts         []int32      `db:"attempts" pg:"int"`
	DueAt            []time.Time  `db:"due_at" pg:"timestamptz"`
	FirstAttemptAt   []*time.Time `db:"first_attempt_at" pg:"timestamptz"`
	FinishedAt       []*time.Time `db:"finished_at" pg:"timestamptz"`
	LastStatus       []*int32     `db:"last_status" pg:"int"`
	LastError        []*string    `db:"last_error" pg:"text"`
	IdempotencyKey   []string     `db:"idempotency_key" pg:"text"`
	URL              []string     `db:"url" pg:"text"`
	BreakerKey       []string     `db:"breaker_key" pg:"text"`
	SequenceKey      []*string    `db:"sequence_key" pg:"text"`
	SequenceNumber   []*int64     `db:"sequence_number" pg:"bigint"`
	AttemptNumber    []int32      `db:"attempt_number" pg:"int"`
	MaxAttempts      []int32      `db:"max_attempts" pg:"int"`
	Outcome          []string     `db:"outcome" pg:"text"`
	HTTPStatus       []*int32     `db:"http_status" pg:"int"`
	ErrorMessage     []*string    `db:"error_message" pg:"text"`
	ResponseTimeUS   []int64      `db:"response_time_us" pg:"bigint"`
	OccurredAt       []time.Time  `db:"occurred_at" pg:"timestamptz"`
	WillRetry        []bool       `db:"will_retry" pg:"boolean"`
	NextRetryAt      []*time.Time `db:"next_retry_at" pg:"timestamptz"`
	TaskType         []*string    `db:"task_type" pg:"text"`
	TaskID           []*string    `db:"task_id" pg:"text"`
	PayloadSize      []int32      `db:"payload_size" pg:"int"`
	NotificationType []*string    `db:"notification_type" pg:"text"`
	ReemissionOf     []*int64     `db:"reemission_of" pg:"bigint"`
	NotificationID   []*string    `db:"notification_id" pg:"text"`
	SubscriberID     []*string    `db:"subscriber_id" pg:"text"`
	TimedOut         []bool       `db:"timed_out" pg:"boolean"`
	Gated            []bool       `db:"gated" pg:"boolean"`       // its gate changes
	Success          []bool       `db:"success" pg:"boolean"`     // a success
	GateVersion      []int64      `db:"gate_version" pg:"bigint"` // the gate row it was decided from
}

// batchGates are the new values of the gates a batch changes, one array
// element per gate; columns are the tags without "gate_".
type batchGates struct {
	GateBreakerKey []string     `db:"gate_breaker_key" pg:"text"`
	GateState      []string     `db:"gate_state" pg:"text"`
	GateFailures   []int32      `db:"gate_failures" pg:"int"`
	GateSuccesses  []int32      `db:"gate_successes" pg:"int"`
	GateOpenedAt   []*time.Time `db:"gate_opened_at" pg:"timestamptz"`
	GatePeriod     []int64      `db:"gate_period" pg:"bigint"`
	GateRetryAt    []*time.Time `db:"gate_retry_at" pg:"timestamptz"`
	// The endpoint's run of failures.
	GateFailingSince     []*time.Time `db:"gate_failing_since" pg:"timestamptz"`
	GateFailedDeliveries []int32      `db:"gate_failed_deliveries" pg:"int"`
	GateFailing          []bool       `db:"gate_failing" pg:"boolean"`
	GateExpected         []int64      `db:"gate_expected" pg:"bigint"` // the version the value was computed from
	GateUpdatedAt        []time.Time  `db:"gate_updated_at" pg:"timestamptz"`
}

type batchParams struct {
	batchRows
	batchGates
}

// batchResult is one row of completeBatch's answer: a written delivery or
// a persisted gate.
type batchResult struct {
	DeliveryID *int64  `db:"delivery_id"`
	BreakerKey *string `db:"breaker_key"`
}

type keysParams struct {
	Keys []string `db:"keys"`
}

type leaseParams struct {
	ID    int64     `db:"id"`
	Token int64     `db:"token"`
	DueAt time.Time `db:"due_at"`
}

type idParams struct {
	ID int64 `db:"id"`
}

type saveGateParams struct {
	Key string `db:"breaker_key"`
	gateParams
	Now time.Time `db:"now"`
}

type deferParams struct {
	Key   string    `db:"breaker_key"`
	Until time.Time `db:"until"`
}

type breakerPageParams struct {
	After string `db:"after"`
	Limit int    `db:"limit"`
}

// statsRow is what the stats statement returns.
type statsRow struct {
	Pending      int64      `db:"pending"`
	Running      int64      `db:"running"`
	Delivered    int64      `db:"delivered"`
	Failed       int64      `db:"failed"`
	OpenBreakers int64      `db:"open_breakers"`
	Due          int64      `db:"due"`
	OldestDue    *time.Time `db:"oldest_due"`
}

type redeliverParams struct {
	ID      int64     `db:"id"`
	Now     time.Time `db:"now"`
	Channel string    `db:"channel"`
}

type activityParams struct {
	DeliveryID   *int64        `db:"delivery_id"`
	TaskID       *string       `db:"task_id"`
	SubscriberID *string       `db:"subscriber_id"`
	Limit        int           `db:"limit"`
	Lease        time.Duration `db:"lease"` // a running delivery was claimed this long before its due_at
}

// activityRow is an attempt row, or an unfinished delivery's next
// attempt (Pending), as Activity reads it.
type activityRow struct {
	ID               int64     `db:"id"`
	DeliveryID       int64     `db:"delivery_id"`
	Pending          bool      `db:"pending"`
	FiredAt          time.Time `db:"fired_at"`
	IdempotencyKey   string    `db:"idempotency_key"`
	URL              string    `db:"url"`
	SequenceNumber   *int64    `db:"sequence_number"`
	NotificationType string    `db:"notification_type"`
	NotificationID   *string   `db:"notification_id"`
	SubscriberID     *string   `db:"subscriber_id"`
	PayloadSize      int       `db:"payload_size"`
	Outcome          *string   `db:"outcome"`
	HTTPStatus       *int      `db:"http_status"`
	ErrorMessage     *string   `db:"error_message"`
	ResponseTimeUS   *int64    `db:"response_time_us"`
	TimedOut         *bool     `db:"timed_out"`
	Ordinal          int       `db:"ordinal"`
}

type reemitParams struct {
	redeliverParams
	Body            []byte  `db:"body"`
	IdempotencyKey  string  `db:"idempotency_key"`
	PayloadSHA256   []byte  `db:"payload_sha256"`
	TraceCarrier    *string `db:"trace_carrier"`
	AuthCredentials []byte  `db:"auth_credentials"`
	Headers         *string `db:"headers"` // JSON
	SealedWith      *string `db:"sealed_with"`
	SealedHeaders   []byte  `db:"sealed_headers"`
}

// redeliverRow is what Redeliver reads of a delivery, locked.
type redeliverRow struct {
	State          string     `db:"state"`
	IdempotencyKey string     `db:"idempotency_key"`
	Body           []byte     `db:"body"`
	MCPBody        bool       `db:"mcp_body"`
	SequenceNumber int64      `db:"sequence_number"`
	AcceptedAt     time.Time  `db:"accepted_at"`
	FirstAttemptAt *time.Time `db:"first_attempt_at"`
	ReemissionOf   *int64     `db:"reemission_of"`
	ReemittedAs    *int64     `db:"reemitted_as"`
	LastStatus     int        `db:"last_status"`
	// For a re-emission's Observer.Accepting.
	URL              string  `db:"url"`
	TaskType         *string `db:"task_type"`
	NotificationType *string `db:"notification_type"`
	// For a re-emission's row, which has its own key and so its own seals.
	AuthCredentials []byte `db:"auth_credentials"`
	Headers         []byte `db:"headers"`
	sealedValues
}

type purgeParams struct {
	Cutoff time.Time `db:"cutoff"`
	Limit  int       `db:"limit"`
}

type sequenceParams struct {
	Key string `db:"sequence_key"`
}

// pgSQL is every statement the supervisor runs, compiled once with the
// validated table names. Values are always bound parameters.
type pgSQL struct {
	// channel is the NOTIFY channel: the deliveries table's name.
	channel string
	// list is the start of a delivery list: the columns without the body
	// FROM the table as d. Lists add their filters (postgres_inspect.go).
	list string

	enqueue        stmt[enqueueParams]
	enqueueBatch   stmt[enqueueBatchParams]
	enqueueNotify  stmt[enqueueTxParams]
	notify         stmt[channelParams]
	refusedUntil   stmt[keyAtParams]
	insertRefusal  stmt[attemptRow]
	claim          stmt[claimParams]
	claimLock      stmt[lockParams]
	claimLockKey   int64 // the claim lock's, of these tables
	claimCapped    stmt[cappedClaimParams]
	claimWalk      stmt[walkParams]
	claimDeep      stmt[deepClaimParams]
	keyBusy        stmt[keyAtParams]
	atCap          stmt[capParams]
	claimProbes    stmt[claimProbesParams]
	probeCandidate stmt[probesParams]
	lockBreakers   stmt[lockBreakersParams]
	countProbes    stmt[countProbesParams]
	nextDue        stmt[nowParams]
	complete       stmt[completeParams]
	completeNoLog  stmt[completeNoLogParams]
	completeGate   stmt[completeGateParams]
	completeBatch  stmt[batchParams]
	gates          stmt[keysParams]
	release        stmt[leaseParams]
	renewLease     stmt[leaseParams]
	leaseState     stmt[idParams]
	lockBreaker    stmt[keyAtParams]
	saveBreaker    stmt[saveGateParams]
	deferBreaker   stmt[deferParams]
	delivery       stmt[idParams]
	attempts       stmt[idParams]
	stats          stmt[nowParams]
	breakers       stmt[breakerPageParams]
	resetBreaker   stmt[keyAtParams]
	redeliver      stmt[redeliverParams]
	redeliverLock  stmt[idParams]
	activity       [3]stmt[activityParams] // by delivery, task, subscriber
	reemit         stmt[reemitParams]
	purge          stmt[purgeParams]
	purgeRefusals  stmt[purgeParams]
	nextSequence   stmt[sequenceParams]
	// Reencrypt's batches.
	reencryptRead  stmt[reencryptReadParams]
	reencryptWrite stmt[reencryptRows]
	reencryptLeft  stmt[reencryptLeftParams]
	// A sealed template's body, sealed again once its number is drawn.
	rewriteBody stmt[rewriteBodyParams]
}

type rewriteBodyParams struct {
	ID   int64  `db:"id"`
	Body []byte `db:"body"`
}

// reencryptLeftParams ask whether rows are left to rewrite, but those that
// did not decrypt.
type reencryptLeftParams struct {
	Current string  `db:"current"`
	Failed  []int64 `db:"failed"`
}

// reencryptReadParams select the next rows Reencrypt rewrites.
type reencryptReadParams struct {
	After   int64  `db:"after"`
	Current string `db:"current"`
	Limit   int    `db:"limit"`
}

// reencryptRow is a row whose secrets Reencrypt rewrites.
type reencryptRow struct {
	ID              int64   `db:"id"`
	IdempotencyKey  string  `db:"idempotency_key"`
	URL             string  `db:"url"`
	Body            []byte  `db:"body"`
	AuthCredentials []byte  `db:"auth_credentials"`
	Headers         *string `db:"headers"` // JSON
	PayloadSHA256   []byte  `db:"payload_sha256"`
	sealedValues
}

// reencryptRows are a batch of rewritten rows, one array element each.
type reencryptRows struct {
	ID              []int64  `db:"id" pg:"bigint"`
	Body            [][]byte `db:"body" pg:"bytea"`
	AuthCredentials [][]byte `db:"auth_credentials" pg:"bytea"`
	PayloadSHA256   [][]byte `db:"payload_sha256" pg:"bytea"`
	SealedWith      []string `db:"sealed_with" pg:"text"`
	SealedHeaders   [][]byte `db:"sealed_headers" pg:"bytea"`
}

// gateUnchanged is the condition under which a completion that leaves its
// gate alone is written: the gate is still the row the decision was
// computed from (version ver; 0: no row), or, for a success (flag), it is
// clean (closed with no failures and no run of them: gate.clean), which a
// success leaves alone whatever its version.
func gateUnchanged(flag, key, ver string) string {
	return `NOT EXISTS (SELECT 1 FROM {breakers} b
		WHERE b.breaker_key = ` + key + ` AND b.version <> ` + ver + `::bigint
		  AND NOT (` + flag + `::boolean AND b.failures = 0 AND b.state = 'closed' AND b.failing_since IS NULL))`
}

// gateSet writes a gate's value from EXCLUDED.
const gateSet = `state = EXCLUDED.state, failures = EXCLUDED.failures,
		successes = EXCLUDED.successes, opened_at = EXCLUDED.opened_at, period = EXCLUDED.period,
		retry_at = EXCLUDED.retry_at, failing_since = EXCLUDED.failing_since,
		failed_deliveries = EXCLUDED.failed_deliveries, failing = EXCLUDED.failing,
		version = EXCLUDED.version, updated_at = EXCLUDED.updated_at`

// lostClaim counts a lost attempt when a claim takes a running row under a
// positive lease token: its lease expired with no result written. Every
// path that leaves a row without a result (unclaim, give-back, a drained
// attempt) makes it pending first; a held retry (negative token) had its
// result written, and is not lost when its release is late or never comes.
const lostClaim = `(d.state = 'running' AND d.lease_token > 0)::int`

// noSync is a CTE that makes its statement's transaction commit without
// waiting for the WAL flush; the statement must read no_sync.
const noSync = `no_sync AS (SELECT set_config('synchronous_commit', 'off', true))`

// openRetryAt is when an open gate row b lets a probe through. A row
// written by a release before retry_at existed has none: due at once (the
// gate's own timing then decides).
const openRetryAt = `COALESCE(b.retry_at, b.opened_at)`

func newPgSQL(t PostgresTables) *pgSQL {
	r := strings.NewReplacer(
		"{deliveries}", t.Deliveries, "{attempts}", t.Attempts,
		"{breakers}", t.Breakers, "{sequences}", t.Sequences,
		"{job_columns}", columns[jobRow]("d."), "{snapshot_columns}", columns[snapshotRow]("d."),
		"{attempt_columns}", columns[attemptRow](""), "{gate_columns}", columns[gateRow]("b."),
		"{attempt_params}", params[attemptRow](), "{attempt_values}", params[attemptRow]("delivery_id"),
		"{batch_rows}", unnest[batchRows]("v", ""), "{batch_gates}", unnest[batchGates]("g", "gate_"),
		"{enqueue_rows}", unnest[enqueueRows]("v", ""),
	)
	q := &pgSQL{channel: t.Deliveries, claimLockKey: claimLockKey(t.Deliveries)}

	// Enqueue: allocate the sequence number, insert, notify, in one
	// statement. @drop refuses the webhook (OpenDrop) while its breaker is
	// open: then nothing is inserted or allocated and no row returns. A
	// webhook accepted while its breaker is open is due when it half-opens.
	enqueue := r.Replace(`
WITH prior AS (
	SELECT id, url = @url AS same_url, payload_sha256 AS fp, sealed_with AS fp_sealed_with,
		COALESCE(sequence_number, 0) AS seq, reemission_of
	FROM {deliveries} WHERE idempotency_key = @idempotency_key AND payload_sha256 IS NOT NULL
), refused AS (
	SELECT @drop::boolean AND NOT EXISTS (SELECT 1 FROM prior) AND EXISTS (
		SELECT 1 FROM {breakers} b
		WHERE b.breaker_key = @breaker_key AND b.state = 'open' AND ` + openRetryAt + ` > @now::timestamptz) AS yes
), seq AS (
	INSERT INTO {sequences} AS s (sequence_key, last_value)
	SELECT @sequence_key, 1 FROM refused WHERE @sequence_key::text IS NOT NULL AND NOT refused.yes
		AND NOT EXISTS (SELECT 1 FROM prior)
	ON CONFLICT (sequence_key) DO UPDATE SET last_value = s.last_value + 1
	RETURNING last_value
), ins AS (
	INSERT INTO {deliveries} (state, due_at, url, body, idempotency_key, breaker_key, sequence_key, sequence_number,
		task_type, task_id, notification_type, auth_scheme, auth_credentials, headers, accepted_at, mcp_body, payload_sha256,
		notification_id, subscriber_id, trace_carrier, tenant, sealed_with, sealed_headers)
	SELECT 'pending',
		GREATEST(@now::timestamptz, (SELECT ` + openRetryAt + ` FROM {breakers} b
			WHERE b.breaker_key = @breaker_key AND b.state = 'open')),
		@url, CASE WHEN @seq_at::int > 0 AND @sealed_with::text IS NULL
			THEN overlay(@body::bytea placing convert_to((SELECT last_value FROM seq)::text, 'UTF8') from @seq_at::int + 1 for 1)
			ELSE @body::bytea END,
		@idempotency_key, @breaker_key, @sequence_key, (SELECT last_value FROM seq),
		@task_type, @task_id, @notification_type, @auth_scheme, @auth_credentials, @headers::jsonb, @now, @mcp_body, @payload_sha256,
		@notification_id, @subscriber_id, @trace_carrier, @tenant, @sealed_with, @sealed_headers
	FROM refused WHERE NOT refused.yes AND NOT EXISTS (SELECT 1 FROM prior)
	ON CONFLICT (idempotency_key) WHERE payload_sha256 IS NOT NULL DO NOTHING
	RETURNING id, sequence_number
)
`)
	// A batch in one statement (OpenDefer only: OpenDrop batches go one
	// statement per item): each key bound before returns its delivery;
	// each new one is inserted, its sequence number drawn in the items'
	// order from one counter update per key (in key order). A key bound by
	// a transaction that committed after the statement began returns no
	// row; the caller then writes the batch again, one by one.
	q.enqueueBatch = compile[enqueueBatchParams](r.Replace(`
WITH v AS (
	SELECT * FROM {enqueue_rows}
), prior AS (
	SELECT v.ord, d.id, d.url = v.url AS same_url, d.payload_sha256 AS fp, d.sealed_with AS fp_sealed_with,
		COALESCE(d.sequence_number, 0) AS seq, d.reemission_of
	FROM v JOIN {deliveries} d ON d.idempotency_key = v.idempotency_key AND d.payload_sha256 IS NOT NULL
), fresh AS (
	SELECT v.*, row_number() OVER (PARTITION BY v.sequence_key ORDER BY v.ord) AS rank
	FROM v WHERE v.ord NOT IN (SELECT ord FROM prior)
), counts AS (
	SELECT sequence_key, count(*) AS n FROM fresh WHERE sequence_key IS NOT NULL GROUP BY sequence_key
), seq AS (
	INSERT INTO {sequences} AS s (sequence_key, last_value)
	SELECT sequence_key, n FROM counts ORDER BY sequence_key
	ON CONFLICT (sequence_key) DO UPDATE SET last_value = s.last_value + EXCLUDED.last_value
	RETURNING sequence_key, last_value
), numbered AS (
	SELECT f.*, seq.last_value - c.n + f.rank AS number
	FROM fresh f LEFT JOIN seq ON seq.sequence_key = f.sequence_key LEFT JOIN counts c ON c.sequence_key = f.sequence_key
), ins AS (
	INSERT INTO {deliveries} (state, due_at, url, body, idempotency_key, breaker_key, sequence_key, sequence_number,
		task_type, task_id, notification_type, auth_scheme, auth_credentials, headers, accepted_at, mcp_body, payload_sha256,
		notification_id, subscriber_id, trace_carrier, tenant, sealed_with, sealed_headers)
	SELECT 'pending',
		GREATEST(@now::timestamptz, (SELECT ` + openRetryAt + ` FROM {breakers} b
			WHERE b.breaker_key = n.breaker_key AND b.state = 'open')),
		n.url, CASE WHEN n.seq_at > 0 AND n.number IS NOT NULL AND n.sealed_with IS NULL
			THEN overlay(n.body placing convert_to(n.number::text, 'UTF8') from n.seq_at + 1 for 1)
			ELSE n.body END,
		n.idempotency_key, n.breaker_key, n.sequence_key, n.number,
		n.task_type, n.task_id, n.notification_type, n.auth_scheme, n.auth_credentials, n.headers, @now, n.mcp_body, n.payload_sha256,
		n.notification_id, n.subscriber_id, n.trace_carrier, n.tenant, n.sealed_with, n.sealed_headers
	-- In key order (the numbers are drawn already), so that concurrent
	-- batches sharing keys wait on them in one order.
	FROM numbered n ORDER BY n.idempotency_key
	ON CONFLICT (idempotency_key) WHERE payload_sha256 IS NOT NULL DO NOTHING
	RETURNING id, idempotency_key, sequence_number
)
SELECT v.ord, ins.id, COALESCE(ins.sequence_number, 0) AS seq, NULL::boolean AS same_url, NULL::bytea AS fp,
	NULL::text AS fp_sealed_with, NULL::bigint AS reemission_of
FROM v JOIN ins ON ins.idempotency_key = v.idempotency_key
UNION ALL
SELECT ord, id, seq, same_url, fp, fp_sealed_with, reemission_of FROM prior`))

	// A key bound before returns its delivery instead (prior.same: the
	// same payload and URL). A key bound by a transaction that committed
	// after this statement began returns no row, as a refusal does; the
	// caller then looks again. (That race is the one way a sequence
	// number goes unused: the statement drew it before it lost.)
	const priorRow = ` UNION ALL SELECT id, seq, same_url, fp, fp_sealed_with, reemission_of FROM prior`
	q.enqueue = compile[enqueueParams](enqueue + `SELECT ins.id, COALESCE(ins.sequence_number, 0), NULL::boolean, NULL::bytea, NULL::text, NULL::bigint FROM ins` + priorRow)
	// In the caller's transaction the NOTIFY must go with it, to be sent at
	// its commit. (Postgres serialises the commits of notifying
	// transactions, WAL flush included, so the pool path notifies
	// separately: see notify.)
	q.enqueueNotify = compile[enqueueTxParams](enqueue + `SELECT ins.id, COALESCE(ins.sequence_number, 0), NULL::boolean, NULL::bytea, NULL::text, NULL::bigint
FROM ins, LATERAL (SELECT pg_notify(@channel, '')) notified` + priorRow)
	// A wake-up needs no durability: committing it without waiting for the
	// WAL keeps the notify lock for microseconds.
	q.notify = compile[channelParams](`SELECT set_config('synchronous_commit', 'off', true), pg_notify(@channel, '')`)
	q.refusedUntil = compile[keyAtParams](r.Replace(`SELECT (SELECT ` + openRetryAt + ` FROM {breakers} b
	WHERE b.breaker_key = @breaker_key AND b.state = 'open' AND ` + openRetryAt + ` > @now)`))
	q.insertRefusal = compile[attemptRow](r.Replace(`INSERT INTO {attempts} ({attempt_columns}) VALUES ({attempt_params})`))

	// The claim: up to @limit rows due at @now whose gate is closed (or has
	// no row), marked running under lease @token until @lease_end.
	// Committed at once. (It does not return the gate's row: a LEFT JOIN
	// here made the claim thirty times slower under a backlog. Completions
	// start from the gate cache instead.)
	// A claim commits without waiting for the WAL flush (noSync): lost in
	// a crash of Postgres, it leaves its rows as they were, due, and their
	// attempts are sent again, with the same keys and bytes (at least once,
	// as after a worker's crash). A completion's commit waits for the WAL
	// up to itself, its claim's included, so a recorded attempt's claim is
	// never lost.
	claimSet := `state = 'running', due_at = @lease_end, lease_token = @token, probe_period = NULL,
	lost_attempts = d.lost_attempts + ` + lostClaim
	q.claim = compile[claimParams](r.Replace(`
WITH due AS (
	SELECT d.id FROM {deliveries} d
	WHERE d.state IN ('pending', 'running') AND d.due_at <= @now
	  AND NOT EXISTS (SELECT 1 FROM {breakers} b WHERE b.breaker_key = d.breaker_key AND b.state <> 'closed')
	ORDER BY d.due_at
	LIMIT @limit
	FOR UPDATE OF d SKIP LOCKED
), ` + noSync + `
UPDATE {deliveries} d SET ` + claimSet + `
FROM due, no_sync WHERE d.id = due.id
RETURNING {job_columns}`))
	// The claim within EndpointConcurrency (@cap), run under the claim
	// lock (claimLock: one claim at a time on these tables, so each counts
	// the attempts every earlier one started): an endpoint's attempts in
	// flight (running rows under a live lease; a held retry, whose attempt
	// has ended, is not one) and its deliveries claimed now stay within
	// @cap. It looks at the oldest @scan due rows and takes up to @limit of
	// them round-robin: each endpoint's oldest first, the least busy
	// endpoints first. Rows of an endpoint at its cap are left, so a
	// claim costs the same whatever the backlog behind them.
	q.claimLock = compile[lockParams](`SELECT pg_advisory_xact_lock(@lock), set_config('synchronous_commit', 'off', true)`)
	// An endpoint's attempts in flight, counted on the breaker_due index
	// (a running row is due when its lease ends), so a claim reads the
	// endpoints it looks at, not every running row.
	inFlight := func(key string) string {
		return `(SELECT count(*) FROM {deliveries} r WHERE r.breaker_key = ` + key + `
			AND r.state IN ('pending', 'running') AND r.due_at > @now AND r.state = 'running' AND r.lease_token > 0)`
	}
	// ranked and pick, from rows (id, breaker_key, due_at) and their
	// endpoints' attempts in flight (busy).
	pickRows := `busy AS MATERIALIZED (
	SELECT k.breaker_key, ` + inFlight("k.breaker_key") + ` AS n
	FROM (SELECT DISTINCT breaker_key FROM candidates) k
), ranked AS (
	SELECT c.id, c.due_at,
		busy.n + row_number() OVER (PARTITION BY c.breaker_key ORDER BY c.due_at, c.id) AS slot
	FROM candidates c JOIN busy ON busy.breaker_key = c.breaker_key
), pick AS (
	SELECT id FROM ranked WHERE slot <= @cap ORDER BY slot, due_at, id LIMIT @limit
), locked AS (
	-- Rows another statement holds (an operator's, a breaker's deferral)
	-- are left to the next claim. (By primary key alone: the update
	-- checks that they are still due, on their newest version.)
	SELECT d.id FROM {deliveries} d WHERE d.id = ANY(ARRAY(SELECT id FROM pick))
	FOR UPDATE OF d SKIP LOCKED
)
UPDATE {deliveries} d SET ` + claimSet + `
FROM locked WHERE d.id = locked.id AND d.state IN ('pending', 'running') AND d.due_at <= @now
RETURNING {job_columns}`
	gateClosed := `NOT EXISTS (SELECT 1 FROM {breakers} b WHERE b.breaker_key = d.breaker_key AND b.state <> 'closed')`
	q.claimCapped = compile[cappedClaimParams](r.Replace(`
WITH candidates AS (
	SELECT d.id, d.breaker_key, d.due_at FROM {deliveries} d
	WHERE d.state IN ('pending', 'running') AND d.due_at <= @now AND ` + gateClosed + `
	ORDER BY d.due_at
	LIMIT @scan
), ` + pickRows))
	// The claim past a head of due rows whose endpoints are at their cap,
	// in two statements in the same transaction after the first (they see
	// what it took under lease @token; probes are not counted in @limit).
	// claimWalk: when due rows the first did not look at may be left (the
	// head still holds as many as it looked at, less what it took) and it
	// took fewer than @limit, up to @walk endpoints with unfinished
	// deliveries after the key @after, skipping from key to key (one
	// descent of the breaker_due index each). It leaves them, and how many
	// rows to take, in the transaction's settings adcp_webhook.claim_keys
	// and adcp_webhook.claim_want, and returns where the next walk starts
	// ("": from the first key; the walk reached the last). claimDeep: of
	// those endpoints, the ones below their cap with a closed gate, the
	// oldest due rows, as many as each may take, round-robin as above.
	q.claimWalk = compile[walkParams](r.Replace(`
WITH RECURSIVE want AS (
	SELECT @limit - taken.n AS n FROM (SELECT count(*) AS n FROM {deliveries}
		WHERE due_at = @lease_end AND state = 'running' AND lease_token = @token AND probe_period IS NULL) taken
	WHERE CASE WHEN taken.n >= @limit THEN false -- (CASE: the head is read only when needed)
		ELSE (SELECT count(*) FROM (SELECT 1 FROM {deliveries} d
			WHERE d.state IN ('pending', 'running') AND d.due_at <= @now AND ` + gateClosed + `
			ORDER BY d.due_at LIMIT @scan) head) >= @scan - taken.n END
), keys AS (
	-- (EXISTS: a one-time filter, so that no want reads nothing.)
	(SELECT d.breaker_key, 1 AS walked FROM {deliveries} d WHERE EXISTS (SELECT 1 FROM want)
		AND d.state IN ('pending', 'running') AND d.breaker_key > @after ORDER BY d.breaker_key LIMIT 1)
	UNION ALL
	SELECT (SELECT d.breaker_key FROM {deliveries} d WHERE d.state IN ('pending', 'running')
		AND d.breaker_key > k.breaker_key ORDER BY d.breaker_key LIMIT 1), k.walked + 1
	FROM keys k WHERE k.breaker_key IS NOT NULL AND k.walked < @walk
), walk AS (
	SELECT COALESCE(array_agg(k.breaker_key) FILTER (WHERE k.breaker_key IS NOT NULL
			AND ` + inFlight("k.breaker_key") + ` < @cap), '{}') AS open,
		count(*) AS visited, count(k.breaker_key) AS named, max(k.breaker_key) AS last
	FROM keys k
)
SELECT set_config('adcp_webhook.claim_keys', walk.open::text, true) IS NOT NULL
	AND set_config('adcp_webhook.claim_want', COALESCE((SELECT n FROM want), 0)::text, true) IS NOT NULL AS walked,
	CASE WHEN walk.visited = walk.named AND walk.visited = @walk THEN walk.last ELSE '' END AS after
FROM walk`))
	q.claimDeep = compile[deepClaimParams](r.Replace(`
WITH room AS (
	SELECT k.breaker_key, @cap - ` + inFlight("k.breaker_key") + ` AS free
	FROM unnest(current_setting('adcp_webhook.claim_keys')::text[]) k (breaker_key)
	WHERE NOT EXISTS (SELECT 1 FROM {breakers} b WHERE b.breaker_key = k.breaker_key AND b.state <> 'closed')
), candidates AS (
	SELECT r.id, room.breaker_key, r.due_at
	FROM room, LATERAL (SELECT d.id, d.due_at FROM {deliveries} d
		WHERE d.breaker_key = room.breaker_key AND d.state IN ('pending', 'running') AND d.due_at <= @now
		ORDER BY d.due_at LIMIT room.free) r
	WHERE room.free > 0
), ` + strings.Replace(pickRows, "LIMIT @limit", "LIMIT LEAST(@limit, current_setting('adcp_webhook.claim_want')::int)", 1)))
	// The endpoints at their cap after a claim with due rows among the
	// oldest @scan: the claimer claims again when enough of their attempts
	// of its own end.
	q.atCap = compile[capParams](r.Replace(`SELECT COALESCE(array_agg(h.breaker_key), '{}') FROM (
	SELECT DISTINCT w.breaker_key FROM (SELECT d.breaker_key FROM {deliveries} d
		WHERE d.state IN ('pending', 'running') AND d.due_at <= @now AND ` + gateClosed + `
		ORDER BY d.due_at LIMIT @scan) w) h
WHERE ` + inFlight("h.breaker_key") + ` >= @cap`))
	// One endpoint's attempts in flight.
	q.keyBusy = compile[keyAtParams](r.Replace(`SELECT ` + inFlight("@breaker_key")))
	// The same for one breaker key's half-open probes of @period.
	q.claimProbes = compile[claimProbesParams](r.Replace(`
WITH due AS (
	SELECT d.id FROM {deliveries} d
	WHERE d.breaker_key = @breaker_key AND d.state IN ('pending', 'running') AND d.due_at <= @now
	ORDER BY d.due_at
	LIMIT @limit
	FOR UPDATE OF d SKIP LOCKED
)
UPDATE {deliveries} d SET state = 'running', due_at = @lease_end, lease_token = @token, probe_period = @period,
	lost_attempts = d.lost_attempts + ` + lostClaim + `
FROM due WHERE d.id = due.id
RETURNING {job_columns}`))
	// Gates that may let a probe through now (open past their retry_at, or
	// half-open with a free slot: a filter; the gate decides once locked),
	// and have work for one.
	tripped := `(b.state = 'open' AND ` + openRetryAt + ` <= @now
		OR b.state = 'half_open' AND (SELECT count(*) FROM {deliveries} d WHERE d.breaker_key = b.breaker_key
			AND d.state = 'running' AND d.probe_period = b.period AND d.due_at > @now) < @probes)
	  AND EXISTS (SELECT 1 FROM {deliveries} d
		WHERE d.breaker_key = b.breaker_key AND d.state IN ('pending', 'running') AND d.due_at <= @now)`
	q.probeCandidate = compile[probesParams](r.Replace(`SELECT EXISTS (SELECT 1 FROM {breakers} b WHERE ` + tripped + `)`))
	q.lockBreakers = compile[lockBreakersParams](r.Replace(`SELECT b.breaker_key, {gate_columns}
FROM {breakers} b WHERE ` + tripped + `
ORDER BY b.updated_at LIMIT @limit FOR UPDATE SKIP LOCKED`))
	q.countProbes = compile[countProbesParams](r.Replace(`SELECT count(*) FROM {deliveries}
WHERE breaker_key = @breaker_key AND state = 'running' AND probe_period = @period AND due_at > @now`))

	// When an idle worker should look again: the next due row or lease
	// expiry, or the next open gate to half-open.
	q.nextDue = compile[nowParams](r.Replace(`SELECT LEAST(
	(SELECT min(due_at) FROM {deliveries} WHERE state IN ('pending', 'running') AND due_at > @now),
	(SELECT min(` + openRetryAt + `) FROM {breakers} b WHERE b.state = 'open' AND ` + openRetryAt + ` > @now))`))

	// Completion, fenced by the lease token: the state change and the log
	// row in one statement. No row is inserted when the lease was lost.
	// A row left running (a held retry) is left under the negated token.
	set := `state = @state, attempts = @attempts, due_at = @due_at, first_attempt_at = @first_attempt_at,
		finished_at = @finished_at, last_status = @last_status, last_error = @last_error, probe_period = NULL,
		lease_token = CASE WHEN @state = 'running' THEN -lease_token ELSE lease_token END`
	fence := `id = @id AND lease_token = @token AND state = 'running'`
	// A completion that leaves the gate alone is written only while the
	// gate is the row it was decided from (a success also while it is
	// clean: closed with no failures, or no row).
	guard := gateUnchanged("@success", "{deliveries}.breaker_key", "@gate_version")
	q.complete = compile[completeParams](r.Replace(`
WITH done AS (
	UPDATE {deliveries} SET ` + set + `
	WHERE ` + fence + ` AND ` + guard + `
	RETURNING id
)
INSERT INTO {attempts} ({attempt_columns})
SELECT done.id, {attempt_values} FROM done`))
	q.completeNoLog = compile[completeNoLogParams](r.Replace(`UPDATE {deliveries} SET ` + set + `
WHERE ` + fence + ` AND ` + guard))
	// A completion that changes the gate persists the gate's new value
	// (computed by the state machine from the row at @gate_version) only
	// if the row is still at that version, and the delivery's state only
	// with it; the attempt row follows when @with_log. It returns whether
	// the lease held, whether the completion was written, and, for a retry
	// when it was not, the gate's row as this statement saw it.
	q.completeGate = compile[completeGateParams](r.Replace(`
WITH leased AS (
	SELECT id FROM {deliveries} WHERE ` + fence + ` FOR UPDATE
), gate AS (
	INSERT INTO {breakers} AS b (breaker_key, state, failures, successes, opened_at, period, retry_at,
		failing_since, failed_deliveries, failing, version, updated_at)
	SELECT @gate_key, @gate_state, @gate_failures, @gate_successes, @gate_opened_at, @gate_period, @gate_retry_at,
		@gate_failing_since, @gate_failed_deliveries, @gate_failing, @gate_version::bigint + 1, @occurred_at FROM leased
	ON CONFLICT (breaker_key) DO UPDATE SET ` + gateSet + `
	WHERE b.version = @gate_version
	RETURNING 1
), done AS (
	UPDATE {deliveries} SET ` + set + `
	WHERE ` + fence + ` AND EXISTS (SELECT 1 FROM gate)
	RETURNING id
), logged AS (
	INSERT INTO {attempts} ({attempt_columns})
	SELECT done.id, {attempt_values} FROM done WHERE @with_log::boolean
)
SELECT EXISTS (SELECT 1 FROM leased) AS leased, EXISTS (SELECT 1 FROM done) AS done, {gate_columns}
FROM (SELECT 1) one LEFT JOIN {breakers} b ON b.breaker_key = @gate_key`))
	// The same for many deliveries at once, from arrays. Completions of a
	// gate that changes (v.gated) are written only with that gate's new
	// value (one element of g per changed gate, computed by the state
	// machine from the row at version g.expected), and only if its row is
	// still at that version; completions that leave their gate alone only
	// while it is the row they were decided from (v.gate_version) or, for
	// a success, clean. It returns the IDs it wrote and the gates it
	// persisted.
	q.completeBatch = compile[batchParams](r.Replace(`
WITH v AS (
	SELECT * FROM {batch_rows}
), g AS (
	SELECT * FROM {batch_gates}
), leased AS (
	-- The rows whose lease still holds, locked (as completeGate locks its
	-- one) so that it holds until the commit.
	SELECT d.id FROM {deliveries} d JOIN v ON d.id = v.id
	WHERE d.id = ANY(@id::bigint[]) AND d.lease_token = v.token AND d.state = 'running'
	ORDER BY d.id FOR UPDATE OF d
), gated AS (
	-- In key order, so that concurrent batches lock gates in one order.
	-- A gate whose value counts a completion that lost its lease is not
	-- written: its completions are then written one by one, each fenced.
	INSERT INTO {breakers} AS b (breaker_key, state, failures, successes, opened_at, period, retry_at,
		failing_since, failed_deliveries, failing, version, updated_at)
	SELECT g.breaker_key, g.state, g.failures, g.successes, g.opened_at, g.period, g.retry_at,
		g.failing_since, g.failed_deliveries, g.failing, g.expected + 1, g.updated_at
	FROM g WHERE NOT EXISTS (SELECT 1 FROM v JOIN {deliveries} d ON d.id = v.id
		WHERE v.gated AND d.breaker_key = g.breaker_key AND v.id NOT IN (SELECT id FROM leased))
	ORDER BY g.breaker_key
	ON CONFLICT (breaker_key) DO UPDATE SET ` + gateSet + `
	WHERE b.version = EXCLUDED.version - 1
	RETURNING b.breaker_key
), done AS (
	UPDATE {deliveries} d SET state = v.state, attempts = v.attempts, due_at = v.due_at,
		first_attempt_at = v.first_attempt_at, finished_at = v.finished_at, last_status = v.last_status,
		last_error = v.last_error, probe_period = NULL,
		lease_token = CASE WHEN v.state = 'running' THEN -d.lease_token ELSE d.lease_token END
	FROM v WHERE d.id = ANY(@id::bigint[]) AND d.id = v.id AND d.lease_token = v.token AND d.state = 'running'
		-- d.breaker_key: v's is the attempt record's, in its loggable form.
		AND CASE WHEN v.gated THEN d.breaker_key IN (SELECT breaker_key FROM gated)
			ELSE ` + gateUnchanged("v.success", "d.breaker_key", "v.gate_version") + ` END
	RETURNING d.id, v.token AS lease_token
), logged AS (
	INSERT INTO {attempts} ({attempt_columns})
	SELECT v.id, ` + columns[attemptValues]("v.") + `
	FROM v JOIN done ON done.id = v.id AND done.lease_token = v.token
	RETURNING delivery_id
)
SELECT delivery_id, NULL::text AS breaker_key FROM logged
UNION ALL
SELECT NULL::bigint, breaker_key FROM gated`))
	// The gates of some keys, as they are now.
	q.gates = compile[keysParams](r.Replace(`SELECT b.breaker_key, {gate_columns} FROM {breakers} b WHERE b.breaker_key = ANY(@keys)`))
	// A held completion left the row running under the negated token;
	// release makes it pending for its next attempt. (Unclaiming gives
	// back a row under its own token the same way.)
	q.release = compile[leaseParams](r.Replace(`UPDATE {deliveries} SET state = 'pending', due_at = @due_at WHERE ` + fence))
	q.renewLease = compile[leaseParams](r.Replace(`UPDATE {deliveries} SET due_at = @due_at WHERE ` + fence))
	q.leaseState = compile[idParams](r.Replace(`SELECT state, lease_token FROM {deliveries} WHERE id = @id`))

	// The locked path of a gate change: the upsert creates and locks the
	// row and returns it; the worker applies the state machine (gate.go)
	// and persists the result in the same transaction.
	q.lockBreaker = compile[keyAtParams](r.Replace(`INSERT INTO {breakers} AS b (breaker_key, updated_at) VALUES (@breaker_key, @now)
ON CONFLICT (breaker_key) DO UPDATE SET updated_at = b.updated_at
RETURNING {gate_columns}`))
	// Persisting a gate the caller has locked.
	q.saveBreaker = compile[saveGateParams](r.Replace(`UPDATE {breakers} SET state = @gate_state, failures = @gate_failures,
	successes = @gate_successes, opened_at = @gate_opened_at, period = @gate_period, retry_at = @gate_retry_at,
	failing_since = @gate_failing_since, failed_deliveries = @gate_failed_deliveries, failing = @gate_failing,
	version = version + 1, updated_at = @now
WHERE breaker_key = @breaker_key
RETURNING version`))
	// A breaker that opened defers its pending deliveries to when it
	// half-opens, so claims do not keep stepping over them.
	q.deferBreaker = compile[deferParams](r.Replace(`UPDATE {deliveries} SET due_at = @until
WHERE id IN (SELECT id FROM {deliveries}
	WHERE breaker_key = @breaker_key AND state = 'pending' AND due_at < @until FOR UPDATE SKIP LOCKED)
	-- Still open: an operator's reset since leaves the deliveries due.
	-- FOR SHARE: a reset in progress is waited for, not read past.
	AND EXISTS (SELECT 1 FROM {breakers} b WHERE b.breaker_key = @breaker_key AND b.state = 'open' FOR SHARE)`))

	q.delivery = compile[idParams](r.Replace(`SELECT {snapshot_columns} FROM {deliveries} d WHERE d.id = @id`))
	q.attempts = compile[idParams](r.Replace(`SELECT {attempt_columns} FROM {attempts} WHERE delivery_id = @id ORDER BY id`))
	q.list = r.Replace(`SELECT ` + strings.Replace(columns[snapshotRow]("d."), "d.body,", "NULL::bytea AS body,", 1) + ` FROM {deliveries} d`)
	// Counts by state, and the backlog: due pending deliveries whose
	// breaker is closed (what a claim would take).
	q.stats = compile[nowParams](r.Replace(`SELECT s.*, due.*,
	(SELECT count(*) FROM {breakers} b WHERE b.state <> 'closed') AS open_breakers
FROM (SELECT count(*) FILTER (WHERE state = 'pending') AS pending, count(*) FILTER (WHERE state = 'running') AS running,
		count(*) FILTER (WHERE state = 'delivered') AS delivered, count(*) FILTER (WHERE state = 'failed') AS failed
	FROM {deliveries}) s,
	(SELECT count(*) AS due, min(d.due_at) AS oldest_due FROM {deliveries} d
	WHERE d.state = 'pending' AND d.due_at <= @now
		AND NOT EXISTS (SELECT 1 FROM {breakers} b WHERE b.breaker_key = d.breaker_key AND b.state <> 'closed')) due`))
	// Byte order (COLLATE "C"), as the memory supervisor sorts, whatever
	// the database's collation.
	q.breakers = compile[breakerPageParams](r.Replace(`SELECT b.breaker_key, {gate_columns} FROM {breakers} b
WHERE (b.state <> 'closed' OR b.failures > 0 OR b.failing_since IS NOT NULL) AND b.breaker_key COLLATE "C" > @after
ORDER BY b.breaker_key COLLATE "C" LIMIT @limit`))
	// An operator's reset: closed and clean, in a new half-open period (a
	// probe in flight cannot free a slot of it) at a new version (a
	// completion computed from the old row recomputes), and the
	// endpoint's pending deliveries due now.
	q.resetBreaker = compile[keyAtParams](r.Replace(`WITH old AS (
	SELECT state FROM {breakers} WHERE breaker_key = @breaker_key AND (state <> 'closed' OR failures > 0) FOR UPDATE
), b AS (
	UPDATE {breakers} SET state = 'closed', failures = 0, successes = 0, opened_at = NULL, retry_at = NULL,
		period = period + 1, version = version + 1, updated_at = @now
	WHERE breaker_key = @breaker_key AND EXISTS (SELECT 1 FROM old)
	RETURNING version
), d AS (
	UPDATE {deliveries} SET due_at = @now
	WHERE breaker_key = @breaker_key AND state = 'pending' AND due_at > @now AND EXISTS (SELECT 1 FROM old)
)
SELECT old.state, b.version FROM old, b`))
	// Redelivery: the row, locked; then either the same delivery again
	// (first_attempt_at, where its horizon counts from, is kept) or a
	// re-emission under a fresh key, linked both ways.
	q.redeliverLock = compile[idParams](r.Replace(`SELECT state, idempotency_key, body, mcp_body, COALESCE(sequence_number, 0) AS sequence_number,
	accepted_at, first_attempt_at, reemission_of, reemitted_as, COALESCE(last_status, 0) AS last_status,
	url, task_type, notification_type, auth_credentials, headers, sealed_with, sealed_headers
FROM {deliveries} WHERE id = @id FOR UPDATE`))
	// Activity: the newest attempt rows and unfinished deliveries (their
	// next attempt) of the deliveries selected, merged in one statement
	// (one snapshot), each found by the index of its primary filter; then
	// each record's ordinal among its delivery's attempts.
	shown := `attempt_number > 0 AND notification_type IS NOT NULL
	AND (error_message IS NULL OR error_message NOT LIKE '` + cancelledText + `%')`
	filters := `(@delivery_id::bigint IS NULL OR delivery_id = @delivery_id) AND (@task_id::text IS NULL OR task_id = @task_id)
	AND (@subscriber_id::text IS NULL OR subscriber_id = @subscriber_id)`
	for i, primary := range []string{"delivery_id = @delivery_id", "task_id = @task_id", "subscriber_id = @subscriber_id"} {
		q.activity[i] = compile[activityParams](r.Replace(`WITH a AS (
	SELECT id, delivery_id, false AS pending, occurred_at AS fired_at, idempotency_key, url, sequence_number, notification_type,
		notification_id, subscriber_id, payload_size, outcome, http_status, error_message, response_time_us, timed_out
	FROM {attempts} WHERE ` + primary + ` AND ` + filters + ` AND ` + shown + `
	ORDER BY occurred_at DESC, id DESC LIMIT @limit
), p AS (
	SELECT id, id AS delivery_id, true AS pending,
		-- in flight: claimed a lease before due_at; held for the sink after
		-- a failure (negative token): due_at is the next attempt's, at least
		CASE WHEN state = 'running' AND lease_token > 0 THEN due_at - @lease::interval ELSE due_at END AS fired_at,
		idempotency_key, url, sequence_number, notification_type, notification_id, subscriber_id,
		octet_length(body) - CASE WHEN sealed_with IS NULL THEN 0 ELSE ` + sealOverheadSQL + ` END AS payload_size, NULL::text AS outcome, NULL::int AS http_status, NULL::text AS error_message,
		NULL::bigint AS response_time_us, NULL::boolean AS timed_out
	FROM {deliveries} WHERE ` + strings.Replace(primary, "delivery_id =", "id =", 1) + ` AND ` +
			strings.Replace(filters, "OR delivery_id =", "OR id =", 1) + `
		AND state IN ('pending', 'running') AND notification_type IS NOT NULL
	ORDER BY fired_at DESC, id DESC LIMIT @limit
), m AS (
	SELECT * FROM a UNION ALL SELECT * FROM p ORDER BY fired_at DESC, pending DESC, id DESC LIMIT @limit
)
SELECT m.*, (SELECT count(*) FROM {attempts} b WHERE b.delivery_id = m.delivery_id AND ` +
			strings.ReplaceAll(strings.ReplaceAll(shown, "attempt_number", "b.attempt_number"), "error_message", "b.error_message") + `
		AND (m.pending OR (b.occurred_at, b.id) <= (m.fired_at, m.id)))::int + CASE WHEN m.pending THEN 1 ELSE 0 END AS ordinal
FROM m`))
	}
	q.redeliver = compile[redeliverParams](r.Replace(`UPDATE {deliveries} SET state = 'pending', due_at = @now, attempts = 0,
	redelivered_at = @now, finished_at = NULL, lease_token = NULL, probe_period = NULL, lost_attempts = 0
WHERE id = @id AND state = 'failed'
RETURNING pg_notify(@channel, '')`))
	q.reemit = compile[reemitParams](r.Replace(`WITH ins AS (
	INSERT INTO {deliveries} (state, due_at, url, body, idempotency_key, breaker_key, sequence_key, sequence_number,
		task_type, task_id, notification_type, auth_scheme, auth_credentials, headers, accepted_at, mcp_body, reemission_of,
		payload_sha256, notification_id, subscriber_id, trace_carrier, tenant, sealed_with, sealed_headers)
	SELECT 'pending', @now, url, @body, @idempotency_key, breaker_key, sequence_key, sequence_number,
		task_type, task_id, notification_type, auth_scheme, @auth_credentials, @headers::jsonb, @now, true, id, @payload_sha256,
		notification_id, subscriber_id, @trace_carrier, tenant, @sealed_with, @sealed_headers
	FROM {deliveries} WHERE id = @id
	RETURNING id
), orig AS (
	UPDATE {deliveries} SET reemitted_as = (SELECT id FROM ins) WHERE id = @id
)
SELECT id, pg_notify(@channel, '') FROM ins`))
	q.purge = compile[purgeParams](r.Replace(`DELETE FROM {deliveries} WHERE id IN (
	SELECT id FROM {deliveries} WHERE state IN ('delivered', 'failed') AND finished_at < @cutoff
	ORDER BY finished_at LIMIT @limit FOR UPDATE SKIP LOCKED)`))
	q.purgeRefusals = compile[purgeParams](r.Replace(`DELETE FROM {attempts} WHERE id IN (
	SELECT id FROM {attempts} WHERE delivery_id IS NULL AND occurred_at < @cutoff
	ORDER BY occurred_at LIMIT @limit FOR UPDATE SKIP LOCKED)`))
	// Reencrypt: the next rows not under the current key, skipping those
	// a claim or completion holds; then their new values. (A claim only
	// ever writes state columns, so a rewritten row's attempt in flight
	// is unaffected.)
	q.reencryptRead = compile[reencryptReadParams](r.Replace(`SELECT ` + columns[reencryptRow]("") + `
FROM {deliveries} WHERE id > @after AND sealed_with IS DISTINCT FROM @current
ORDER BY id LIMIT @limit FOR UPDATE SKIP LOCKED`))
	q.reencryptWrite = compile[reencryptRows](r.Replace(`UPDATE {deliveries} d SET body = v.body, auth_credentials = v.auth_credentials,
	payload_sha256 = v.payload_sha256, sealed_with = v.sealed_with, headers = NULL, sealed_headers = v.sealed_headers
FROM ` + unnest[reencryptRows]("v", "") + ` WHERE d.id = v.id`))
	q.rewriteBody = compile[rewriteBodyParams](r.Replace(`UPDATE {deliveries} SET body = @body WHERE id = @id`))
	q.reencryptLeft = compile[reencryptLeftParams](r.Replace(`SELECT EXISTS (SELECT 1 FROM {deliveries}
	WHERE sealed_with IS DISTINCT FROM @current AND id <> ALL(COALESCE(@failed::bigint[], '{}')))`))
	q.nextSequence = compile[sequenceParams](r.Replace(`INSERT INTO {sequences} AS s (sequence_key, last_value) VALUES (@sequence_key, 1)
ON CONFLICT (sequence_key) DO UPDATE SET last_value = s.last_value + 1
RETURNING last_value`))
	return q
}

// claimLockKey is the advisory lock under which capped claims on the
// deliveries table named table run, one at a time: distinct per table, so
// supervisors on other tables of the same database do not wait for it.
func claimLockKey(table string) int64 {
	sum := sha256.Sum256([]byte("github.com/adcpkit/webhook claim lock\x00" + table))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}
