package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// These tests put the Postgres supervisor on a scripted pool to produce the
// faults a real database cannot produce on demand: a server error on the
// attempt-log insert alone, and a connection that drops between claim and
// completion.
//
// The pool is a small pgxmock-style fake written here because pgxmock
// (v4.9.0, its newest release on the module proxy) does not compile against
// pgx v5.11 and later, which added methods to pgx.Rows and
// pgx.BatchResults. Like pgxmock, it answers each statement from the first
// expectation that matches it, and reports calls no expectation matched.

// Statement prefixes, after whitespace is collapsed. A prefix, not a
// substring: the combined completion contains the state-only update's text.
const (
	sqlClaim         = "WITH due AS"                              // claim due deliveries
	sqlComplete      = "WITH done AS"                             // state change + attempt row
	sqlCompleteNoLog = "UPDATE adcp_webhook_deliveries SET state" // state change only
	sqlCompleteBatch = "WITH v AS ( SELECT * FROM unnest("        // many completions
	sqlProbeCheck    = "SELECT EXISTS"                            // any half-open probe candidates?
	sqlNextDue       = "SELECT LEAST("                            // when to look again
)

const mockURL = "https://buyer.example/hook"

// mockPool is a scripted webhook.PostgresPool.
type mockPool struct {
	mu         sync.Mutex
	exps       []*mockExpect
	unexpected []string
}

var _ webhook.PostgresPool = (*mockPool)(nil)

// mockExpect is one expected statement and its answer.
type mockExpect struct {
	prefix   string
	args     args // by parameter name; a parameter not named matches anything
	times    int  // how many calls it answers; 0: any number
	optional bool // need not be called
	err      error
	tag      string
	cols     []string // the rows' column names
	rows     [][]any
	calls    []time.Time // when it answered
}

// args are statement arguments by parameter name: literals, compared with
// reflect.DeepEqual to the argument (what it points to, through any
// number of pointers; nil for a nil pointer), or argFuncs.
type args map[string]any

// expect adds an expectation for a statement starting with prefix, with
// args (nil for any).
func (p *mockPool) expect(prefix string, args args) *mockExpect {
	e := &mockExpect{prefix: prefix, args: args, times: 1}
	p.mu.Lock()
	p.exps = append(p.exps, e)
	p.mu.Unlock()
	return e
}

// result sets an Exec's command tag, "UPDATE 1" say.
func (e *mockExpect) result(tag string) *mockExpect { e.tag = tag; return e }

// returnRows sets a Query's rows of one unnamed column each, for
// statements whose result is scanned by position (a single value).
func (e *mockExpect) returnRows(rows ...[]any) *mockExpect { e.rows = rows; return e }

// returnRecords sets a Query's rows by column name.
func (e *mockExpect) returnRecords(recs ...map[string]any) *mockExpect {
	e.cols, e.rows = nil, nil
	for name := range recs[0] {
		e.cols = append(e.cols, name)
	}
	for _, r := range recs {
		row := make([]any, len(e.cols))
		for i, name := range e.cols {
			row[i] = r[name]
		}
		e.rows = append(e.rows, row)
	}
	return e
}

// fail makes the statement fail with err.
func (e *mockExpect) fail(err error) *mockExpect { e.err = err; return e }

// repeatedly lets the expectation answer any number of calls, at least one.
func (e *mockExpect) repeatedly() *mockExpect { e.times = 0; return e }

// anyTimes lets the expectation answer any number of calls, none included.
func (e *mockExpect) anyTimes() *mockExpect { e.times, e.optional = 0, true; return e }

func (e *mockExpect) matches(sql string, args []any) bool {
	if e.times > 0 && len(e.calls) >= e.times {
		return false
	}
	if !strings.HasPrefix(strings.Join(strings.Fields(sql), " "), e.prefix) {
		return false
	}
	if e.args == nil {
		return true
	}
	names := webhook.ParamNames(sql)
	for name, want := range e.args {
		i := slices.Index(names, name)
		if i < 0 || i >= len(args) {
			return false // not a parameter of this statement
		}
		got := args[i]
		for v := reflect.ValueOf(got); v.Kind() == reflect.Pointer; v = v.Elem() {
			got = nil
			if v.IsNil() {
				break
			}
			got = v.Elem().Interface()
		}
		if f, ok := want.(argFunc); ok {
			if !f(got) {
				return false
			}
		} else if !reflect.DeepEqual(want, got) {
			return false
		}
	}
	return true
}

// find returns the first expectation that answers sql with args, counting
// the call, or records the call as unexpected.
func (p *mockPool) find(ctx context.Context, sql string, args []any) (*mockExpect, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // as pgx does
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.exps {
		if e.matches(sql, args) {
			e.calls = append(e.calls, time.Now())
			return e, e.err
		}
	}
	stmt := strings.Join(strings.Fields(sql), " ")
	stmt = stmt[:min(len(stmt), 60)]
	p.unexpected = append(p.unexpected, fmt.Sprintf("%s %v", stmt, args))
	return nil, fmt.Errorf("mockPool: unexpected statement %q", stmt)
}

func (p *mockPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	e, err := p.find(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return pgconn.NewCommandTag(e.tag), nil
}

func (p *mockPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	e, err := p.find(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	return &mockRows{cols: e.cols, rows: e.rows, i: -1}, nil
}

func (p *mockPool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := p.Query(ctx, sql, args...)
	return mockRow{rows: rows, err: err}
}

func (p *mockPool) Begin(context.Context) (pgx.Tx, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unexpected = append(p.unexpected, "Begin")
	return nil, errors.New("mockPool: unexpected Begin")
}

// check reports calls that no expectation matched and expectations that
// were not met.
func (p *mockPool) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Empty(t, p.unexpected, "statements no expectation matched")
	for _, e := range p.exps {
		if !e.optional && len(e.calls) < max(e.times, 1) {
			t.Errorf("expectation %q %v called %d times, want %d", e.prefix, e.args, len(e.calls), max(e.times, 1))
		}
	}
}

// calls returns when e answered.
func (p *mockPool) calls(e *mockExpect) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), e.calls...)
}

// mockRows is a result set of plain Go values.
type mockRows struct {
	cols   []string
	rows   [][]any
	i      int
	closed bool
}

var _ pgx.Rows = (*mockRows)(nil)

func (r *mockRows) Close()                        { r.closed = true }
func (r *mockRows) Err() error                    { return nil }
func (r *mockRows) CommandTag() pgconn.CommandTag { return pgconn.NewCommandTag("SELECT") }
func (r *mockRows) FieldDescriptions() []pgconn.FieldDescription {
	fds := make([]pgconn.FieldDescription, len(r.cols))
	for i, name := range r.cols {
		fds[i].Name = name
	}
	return fds
}
func (r *mockRows) RawValues() [][]byte  { return nil }
func (r *mockRows) Conn() *pgx.Conn      { return nil }
func (r *mockRows) TypeMap() *pgtype.Map { return pgtype.NewMap() }

func (r *mockRows) Next() bool {
	if r.closed || r.i+1 >= len(r.rows) {
		r.closed = true
		return false
	}
	r.i++
	return true
}

func (r *mockRows) Values() ([]any, error) { return r.rows[r.i], nil }

// Scan assigns each value to its destination: directly, through a pointer
// (for nullable columns), or through a Scan method.
func (r *mockRows) Scan(dest ...any) error {
	row := r.rows[r.i]
	if len(dest) != len(row) {
		return fmt.Errorf("mockRows: %d destinations for %d columns", len(dest), len(row))
	}
	for i, d := range dest {
		if d == nil {
			continue
		}
		if s, ok := d.(interface{ Scan(any) error }); ok {
			if err := s.Scan(row[i]); err != nil {
				return err
			}
			continue
		}
		dv := reflect.ValueOf(d)
		if dv.Kind() != reflect.Pointer {
			return fmt.Errorf("mockRows: column %d: destination %T is not a pointer", i, d)
		}
		to := dv.Elem()
		if row[i] == nil {
			to.SetZero()
			continue
		}
		v := reflect.ValueOf(row[i])
		switch {
		case v.Type().AssignableTo(to.Type()):
			to.Set(v)
		case to.Kind() == reflect.Pointer && v.Type().AssignableTo(to.Type().Elem()):
			p := reflect.New(to.Type().Elem())
			p.Elem().Set(v)
			to.Set(p)
		default:
			return fmt.Errorf("mockRows: column %d: cannot scan %T into %T", i, row[i], d)
		}
	}
	return nil
}

// mockRow is QueryRow's answer from rows, or err.
type mockRow struct {
	rows pgx.Rows
	err  error
}

func (r mockRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	return r.rows.Scan(dest...)
}

// argFunc matches an argument by predicate.
type argFunc func(any) bool

// timeArg matches a time.Time argument equal to want.
func timeArg(want time.Time) argFunc {
	return func(v any) bool {
		t, ok := v.(time.Time)
		return ok && t.Equal(want)
	}
}

// mockJob is a delivery as the claim statement returns it, and the lease
// token it was claimed under.
type mockJob struct {
	id   int64
	key  string
	body []byte

	mu       sync.Mutex
	token    int64
	tokenSet bool
}

func newMockJob(id int64) *mockJob {
	return &mockJob{id: id, key: webhook.NewIdempotencyKey(), body: fmt.Appendf(nil, `{"delivery":%d}`, id)}
}

// expectClaim makes the next claim return j, and remembers the lease
// token it is claimed under.
func (j *mockJob) expectClaim(p *mockPool) *mockExpect {
	captureToken := argFunc(func(v any) bool {
		n, ok := v.(int64)
		if ok {
			j.mu.Lock()
			j.token, j.tokenSet = n, true
			j.mu.Unlock()
		}
		return ok
	})
	return p.expect(sqlClaim, args{"now": timeArg(epoch), "limit": 1, "token": captureToken}).returnRecords(map[string]any{
		"id": j.id, "url": mockURL, "body": j.body, "idempotency_key": j.key, "breaker_key": mockURL,
		"sequence_key": nil, "sequence_number": nil, "task_type": nil, "task_id": nil, "notification_type": nil,
		"auth_scheme": nil, "auth_credentials": nil, "headers": nil,
		"attempts": 0, "lost_attempts": 0, "accepted_at": epoch, "first_attempt_at": nil, "reemission_of": nil,
		"notification_id": nil, "subscriber_id": nil, "trace_carrier": nil, "tenant": nil, "sealed_with": nil, "sealed_headers": nil,
	})
}

// sameToken matches the lease token j was claimed under.
func (j *mockJob) sameToken() argFunc {
	return func(v any) bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		n, ok := v.(int64)
		return ok && j.tokenSet && n == j.token
	}
}

// stateArgs are the completion's state arguments for a first attempt
// delivered at epoch, fenced by id and token.
func (j *mockJob) stateArgs() args {
	return args{
		"id": j.id, "token": j.sameToken(), "state": string(webhook.StateDelivered), "attempts": 1,
		"due_at": timeArg(epoch), "first_attempt_at": timeArg(epoch), "finished_at": timeArg(epoch),
		"last_status": 200, "last_error": nil,
		// A success that leaves its gate alone, decided from no gate row.
		"success": true, "gate_version": int64(0),
	}
}

// completeArgs are the combined statement's arguments: the state, and the
// attempt row.
func (j *mockJob) completeArgs() args {
	a := j.stateArgs()
	a["idempotency_key"], a["attempt_number"], a["outcome"] = j.key, 1, string(webhook.OutcomeSuccess)
	a["http_status"], a["occurred_at"], a["will_retry"] = 200, timeArg(epoch), false
	return a
}

// noLogArgs are the state-only statement's arguments.
func (j *mockJob) noLogArgs() args { return j.stateArgs() }

// expectIdle lets the claimer find nothing more to do: empty claims, no
// half-open probe candidates, nothing due later.
func expectIdle(p *mockPool) {
	p.expect(sqlClaim, nil).anyTimes()
	p.expect(sqlProbeCheck, nil).returnRows([]any{false}).anyTimes()
	p.expect(sqlNextDue, nil).returnRows([]any{nil}).anyTimes()
}

// newMockEnv returns the suite's env (fake clock, scripted sender,
// recording sink, captured log) around a PostgresSupervisor on a mockPool.
// The worker runs one attempt at a time (so no two completions can share a
// statement), never purges, and looks for work only when an attempt ends,
// so the statements it runs are few and known.
func newMockEnv(t *testing.T, lease time.Duration) (*env, *mockPool) {
	t.Helper()
	pool := &mockPool{}
	// RunWorker's schema check: current.
	pool.expect("SELECT to_regclass(", nil).returnRows([]any{true}).anyTimes()
	pool.expect("SELECT COALESCE(max(version), 0)", nil).returnRows([]any{webhook.SchemaVersion}).anyTimes()
	e := newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		s, err := webhook.NewPostgresSupervisor(pool, cfg.Sender, webhook.PostgresConfig{
			PollOnly:    true, // the pool has no Config to LISTEN with
			Retention:   -1,   // no purge statements
			Concurrency: 1,
			// The plain claim, which the mock scripts: with one worker
			// the limit cannot bind.
			EndpointConcurrency: webhook.NoEndpointLimit,
			PollInterval:        time.Hour,
			LeaseDuration:       lease,
			Retry:               cfg.Retry,
			Breaker:             cfg.Breaker,
			LogSink:             cfg.Sink,
			Clock:               cfg.Clock,
			Logger:              cfg.Logger,
		})
		require.NoError(t, err)
		return s
	})
	return e, pool
}

// The tests below hold however many times the combined statement is tried
// before finish's own loop runs (a batching writer may try it first), so
// they count outcomes (the state-only update, log lines, sends), not tries.

// When the combined completion fails with a server error (the attempt
// table cannot be written), the delivery's state is still recorded, by the
// state-only update; the record still reaches the sink; the error is
// logged; and the worker carries on.
func TestPostgresMockAttemptLogFailureKeepsState(t *testing.T) {
	t.Parallel()
	e, pool := newMockEnv(t, 5*time.Second)
	first, second := newMockJob(1), newMockJob(2)

	first.expectClaim(pool)
	pool.expect(sqlComplete, first.completeArgs()).
		fail(&pgconn.PgError{Severity: "ERROR", Code: "53100", Message: "could not extend file"}).repeatedly()
	noLog := pool.expect(sqlCompleteNoLog, first.noLogArgs()).result("UPDATE 1")
	// The worker is still there: it claims, sends and completes another.
	// The second may be sent while the first's result is being written,
	// and the two written in one batch, which fails as the first's write
	// does; each is then written alone.
	second.expectClaim(pool)
	pool.expect(sqlCompleteBatch, nil).
		fail(&pgconn.PgError{Severity: "ERROR", Code: "53100", Message: "could not extend file"}).anyTimes()
	pool.expect(sqlComplete, second.completeArgs()).result("INSERT 0 1")
	expectIdle(pool)

	stop := runWorker(t, e.sup)
	as := e.attempts(2)
	stop() // RunWorker returned nil

	// Their records can reach the sink in either order.
	slices.SortFunc(as, func(a, b webhook.Attempt) int { return strings.Compare(a.DeliveryID, b.DeliveryID) })
	for i, a := range as {
		require.Equal(t, fmt.Sprint(i+1), a.DeliveryID)
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
		require.Equal(t, 1, a.AttemptNumber)
		require.False(t, a.WillRetry)
	}
	require.Equal(t, first.key, as[0].IdempotencyKey, "the sink got the record whose row could not be written")
	reqs := e.sender.sent()
	require.Len(t, reqs, 2, "the delivery whose log row failed was not sent again")
	require.Equal(t, []string{first.key, second.key}, []string{reqs[0].Key, reqs[1].Key})
	// The state-only update ran once, with the delivered state, fenced by
	// the claim's token.
	require.Len(t, pool.calls(noLog), 1)

	logs := e.logs.String()
	require.Contains(t, logs, `level=ERROR msg="webhook: writing the attempt row failed; recording the delivery's state without it" delivery_id=1 attempt_number=1`)
	require.Contains(t, logs, "could not extend file (SQLSTATE 53100)")
	require.Equal(t, 1, strings.Count(logs, "writing the attempt row failed"), "the second completion wrote its row")
	require.NotContains(t, logs, "retrying", "a server error is not retried as connection trouble")
	require.NotContains(t, logs, "will be attempted again")
	pool.check(t)
}

// When the connection drops after the claim, the completion is retried
// with backoff, under the same lease token and with the attempt row, until
// it is written; the endpoint is not called again.
func TestPostgresMockCompletionRetriesLostConnection(t *testing.T) {
	t.Parallel()
	e, pool := newMockEnv(t, 5*time.Second)
	j := newMockJob(1)

	j.expectClaim(pool)
	failed := []*mockExpect{
		pool.expect(sqlComplete, j.completeArgs()).fail(errors.New("conn closed")),
		pool.expect(sqlComplete, j.completeArgs()).fail(&net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}),
	}
	written := pool.expect(sqlComplete, j.completeArgs()).result("INSERT 0 1")
	expectIdle(pool)

	stop := runWorker(t, e.sup)
	a := e.attempts(1)[0]
	stop()

	require.Equal(t, "1", a.DeliveryID)
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome)
	require.False(t, a.WillRetry)
	require.Len(t, e.sender.sent(), 1, "retrying the write does not send again")
	wrote := pool.calls(written)
	require.Len(t, wrote, 1, "the third try wrote the completion")
	// The retries backed off (from 100ms) rather than spinning.
	firstFail := pool.calls(failed[0])
	require.Len(t, firstFail, 1)
	require.GreaterOrEqual(t, wrote[0].Sub(firstFail[0]), 100*time.Millisecond, "the completion was retried without backoff")

	logs := e.logs.String()
	warnings := strings.Count(logs, `level=WARN msg="webhook: recording an attempt's result failed; retrying" delivery_id=1`)
	require.True(t, warnings >= 1 && warnings <= len(failed), "%d warnings for %d failed tries:\n%s", warnings, len(failed), logs)
	require.Contains(t, logs, "connection reset by peer", "the failure before the successful try is logged")
	require.NotContains(t, logs, "writing the attempt row failed", "connection trouble does not drop the attempt row")
	require.NotContains(t, logs, "will be attempted again")
	require.NotContains(t, logs, "lease lost")
	pool.check(t) // so the state-only update never ran
}

// When the connection stays down for longer than the lease, the worker
// stops retrying the completion (another worker may own the delivery by
// then), says the delivery will be attempted again, and carries on.
func TestPostgresMockCompletionGivesUpAfterLease(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second // the shortest allowed
	e, pool := newMockEnv(t, lease)
	j := newMockJob(1)

	j.expectClaim(pool)
	down := pool.expect(sqlComplete, j.completeArgs()).fail(errors.New("conn closed")).repeatedly()
	// Neither the state-only update nor a lease check is expected.
	expectIdle(pool)

	start := time.Now()
	stop := runWorker(t, e.sup)
	a := e.attempts(1)[0]
	elapsed := time.Since(start)
	stop()

	require.Equal(t, "1", a.DeliveryID)
	require.Equal(t, webhook.OutcomeSuccess, a.Outcome, "the sink still gets the attempt")
	require.True(t, a.WillRetry, "the record says another worker will attempt it again")
	require.Equal(t, epoch.Add(lease), a.NextRetryAt, "when the lease expires")
	require.Len(t, e.sender.sent(), 1)
	require.GreaterOrEqual(t, elapsed, lease, "gave up before the lease passed")
	tries := pool.calls(down)
	// Backoff from 100ms, doubling: about six tries in 2s, not a spin.
	require.LessOrEqual(t, len(tries), 10, "the completion was retried without backoff")

	logs := e.logs.String()
	require.Equal(t, 1, strings.Count(logs, `level=ERROR msg="webhook: could not record an attempt's result before its lease expired; the delivery will be attempted again" delivery_id=1`), logs)
	warnings := strings.Count(logs, `msg="webhook: recording an attempt's result failed; retrying" delivery_id=1`)
	require.GreaterOrEqual(t, warnings, 2, "retried before giving up")
	require.Less(t, warnings, len(tries), "at most one warning per failed try")
	require.NotContains(t, logs, "writing the attempt row failed")
	require.NotContains(t, logs, "lease lost")
	pool.check(t)
}

// A Postgres worker that cannot write a result before its lease ends
// stores nothing (the delivery will be attempted again): the observer is
// told of the attempt, but of no final state.
func TestPostgresMockGiveUpIsNotAFinish(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second
	o := &observed{}
	pool := &mockPool{}
	pool.expect("SELECT to_regclass(", nil).returnRows([]any{true}).anyTimes()
	pool.expect("SELECT COALESCE(max(version), 0)", nil).returnRows([]any{webhook.SchemaVersion}).anyTimes()
	e := newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		s, err := webhook.NewPostgresSupervisor(pool, cfg.Sender, webhook.PostgresConfig{
			PollOnly: true, Retention: -1, Concurrency: 1, EndpointConcurrency: webhook.NoEndpointLimit, PollInterval: time.Hour, LeaseDuration: lease,
			Retry: cfg.Retry, Breaker: cfg.Breaker, LogSink: cfg.Sink, Clock: cfg.Clock, Logger: cfg.Logger,
			Observer: o.observer(),
		})
		require.NoError(t, err)
		return s
	})
	j := newMockJob(1)
	j.expectClaim(pool)
	pool.expect(sqlComplete, j.completeArgs()).fail(errors.New("conn closed")).repeatedly()
	expectIdle(pool)

	stop := runWorker(t, e.sup)
	a := e.attempts(1)[0]
	stop()
	require.True(t, a.WillRetry, "the sink is told the delivery will be attempted again")
	require.Empty(t, o.finished(), "DeliveryFinished reported a final state that was never stored")
}
