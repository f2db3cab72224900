package webhook

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgJob is a claimed delivery.
type pgJob struct {
	job
	row      int64     // the deliveries table's id
	token    int64     // the lease token of this claim
	claimed  time.Time // when the claim started, by the real clock: the lease runs from here
	leaseEnd time.Time // when the lease expires, by the supervisor's clock
	probe    uint64    // the half-open period whose probe slot it holds; 0: none
	// gate is the endpoint gate's row as last seen (by a probe's claim, or
	// when a completion found it moved), and version its row version (0:
	// none seen); a completion computes from the newer of it and the gate
	// cache's.
	gate    gate
	version int64
}

func (j *pgJob) base() *job { return &j.job }

// RunWorker delivers due webhooks until ctx is done. See [Supervisor].
//
// It runs Concurrency worker goroutines fed by one claimer, which claims up
// to ClaimBatch due deliveries per statement, as many as there are free
// workers. Idle, it waits for a NOTIFY from an enqueue, its own next due
// delivery, or PollInterval. A lost database connection is logged and
// retried with backoff; RunWorker returns only when ctx is done, after the
// in-flight attempts finish (bounded by DrainTimeout) and their results are
// written.
func (s *PostgresSupervisor) RunWorker(ctx context.Context) error {
	attemptCtx, cancelAttempts := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAttempts()
	p := &pgPool{
		s:          s,
		writer:     s.newWriter(context.WithoutCancel(ctx), newGateCache()),
		attemptCtx: attemptCtx,
		work:       make(chan *pgJob, s.batch),
		slots:      make(chan struct{}, s.concurrency+s.batch),
		wake:       make(chan struct{}, 1),
	}
	p.workers.Add(s.concurrency)
	for range s.concurrency {
		go p.loop()
	}
	var background sync.WaitGroup
	if !s.pollOnly {
		background.Go(func() { s.listen(ctx, p.signal) })
	}
	background.Go(func() { s.purgeLoop(ctx) })

	p.claimLoop(ctx)
	close(p.work)

	s.k.drain(ctx, &p.workers, s.drainTimeout, cancelAttempts)
	p.writer.close()
	background.Wait()
	return nil
}

// pgPool is the workers of one RunWorker call.
type pgPool struct {
	s          *PostgresSupervisor
	writer     *pgWriter
	attemptCtx context.Context // cancelled only after DrainTimeout
	work       chan *pgJob
	slots      chan struct{} // a token per busy worker
	wake       chan struct{} // something may be due
	workers    sync.WaitGroup
	lastProbe  time.Time // real time of the last half-open probe check
}

func (p *pgPool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// claimLoop claims due deliveries for free workers until ctx is done. A
// slot is a worker's attempt or a claimed delivery waiting in the work
// channel for one: while there is a backlog the claimer keeps up to
// ClaimBatch deliveries waiting and claims half a batch at a time, so claims
// stay few per delivery; when there is none it claims for every worker that
// frees up, at once.
func (p *pgPool) claimLoop(ctx context.Context) {
	s := p.s
	backoff := newBackoff()
	backlog := false
	for ctx.Err() == nil {
		n := 0
		want := 1
		if backlog {
			want = max(1, s.batch/2)
		}
		for n < want {
			select {
			case p.slots <- struct{}{}:
				n++
			case <-ctx.Done():
				for range n {
					<-p.slots
				}
				return
			}
		}
	more:
		for n < s.batch {
			select {
			case p.slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		now := s.k.clock.Now()
		jobs, err := p.claim(ctx, n, now)
		for range n - len(jobs) {
			<-p.slots
		}
		for _, j := range jobs {
			p.work <- j
		}
		backlog = err == nil && len(jobs) == n
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: claiming deliveries failed; retrying",
				slog.String("error", err.Error()), slog.Duration("retry_in", backoff.peek()))
			sleepCtx(ctx, backoff.next())
			continue
		}
		backoff.reset()
		if !backlog {
			p.idle(ctx, now)
		}
	}
}

// idle waits until something may be due: a notification, a local change,
// the next due delivery or breaker, or the poll interval.
func (p *pgPool) idle(ctx context.Context, now time.Time) {
	s := p.s
	var due <-chan time.Time
	stop := func() bool { return false }
	var next *time.Time
	if err := s.db.QueryRow(ctx, s.q.nextDue, now).Scan(&next); err == nil && next != nil {
		due, stop = s.k.clock.TimerAt(*next)
	}
	defer stop()
	poll := time.NewTimer(s.poll)
	defer poll.Stop()
	select {
	case <-ctx.Done():
	case <-p.wake:
	case <-due:
	case <-poll.C:
	}
}

// claim takes up to n due deliveries: first those whose breaker is closed,
// then half-open probes.
func (p *pgPool) claim(ctx context.Context, n int, now time.Time) ([]*pgJob, error) {
	s := p.s
	token := newLeaseToken()
	lease := now.Add(s.lease)
	started := time.Now()
	rows, err := s.db.Query(ctx, s.q.claim, now, n, lease, token)
	if err != nil {
		return nil, dbError("claim", err)
	}
	jobs, err := scanJobs(rows, token, 0, nil)
	if err == nil && (len(jobs) < n || time.Since(p.lastProbe) > time.Second) {
		// Probes wait for a claim that did not fill up, or at most a
		// second under load, so that a busy queue cannot starve a
		// recovering endpoint.
		p.lastProbe = time.Now()
		jobs, err = s.claimProbes(ctx, jobs, n, now, lease, token)
	}
	for _, j := range jobs {
		j.claimed, j.leaseEnd = started, lease
	}
	return jobs, dbError("claim", err)
}

// claimProbes claims half-open probes, within each breaker's slots: it
// locks the breakers that may let a probe through, counts their probes in
// flight (running rows of the current period with a live lease: a dead
// worker's probe frees its slot when its lease expires) and claims the
// difference.
func (s *PostgresSupervisor) claimProbes(ctx context.Context, jobs []*pgJob, n int, now, lease time.Time, token int64) ([]*pgJob, error) {
	var candidates bool
	if err := s.db.QueryRow(ctx, s.q.probeCandidate, now, s.k.breaker.HalfOpenProbes).Scan(&candidates); err != nil || !candidates {
		return jobs, dbError("claim probes", err)
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return jobs, dbError("claim probes", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	rows, err := tx.Query(ctx, s.q.lockBreakers, now, s.k.breaker.HalfOpenProbes, 16)
	if err != nil {
		return jobs, dbError("claim probes", err)
	}
	type keyed struct {
		key     string
		b       gate
		version int64
	}
	var bs []keyed
	for rows.Next() {
		var k keyed
		var r gateRow
		err := rows.Scan(append([]any{&k.key}, r.dest()...)...)
		if err == nil {
			k.b, k.version, err = r.gate()
		}
		if err != nil {
			rows.Close()
			return jobs, dbError("claim probes", err)
		}
		bs = append(bs, k)
	}
	if err := rows.Err(); err != nil {
		return jobs, dbError("claim probes", err)
	}
	var claimed []*pgJob
	for _, kb := range bs {
		if len(jobs)+len(claimed) >= n {
			break
		}
		b := kb.b
		b.advance(s.k.breaker, now)
		if b.State != BreakerHalfOpen {
			continue
		}
		var inFlight int
		if err := tx.QueryRow(ctx, s.q.countProbes, kb.key, int64(b.Period), now).Scan(&inFlight); err != nil {
			return jobs, dbError("claim probes", err)
		}
		free := min(s.k.breaker.HalfOpenProbes-inFlight, n-len(jobs)-len(claimed))
		if free <= 0 {
			continue
		}
		version := kb.version
		if b != kb.b {
			if version, err = s.saveGate(ctx, tx, kb.key, b, now); err != nil {
				return jobs, err
			}
		}
		rows, err := tx.Query(ctx, s.q.claimProbes, now, free, lease, token, kb.key, int64(b.Period))
		if err != nil {
			return jobs, dbError("claim probes", err)
		}
		from := len(claimed)
		if claimed, err = scanJobs(rows, token, b.Period, claimed); err != nil {
			return jobs, dbError("claim probes", err)
		}
		for _, j := range claimed[from:] {
			j.gate, j.version = b, version
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return jobs, dbError("claim probes", err)
	}
	return append(jobs, claimed...), nil
}

func scanJobs(rows pgx.Rows, token int64, probe uint64, out []*pgJob) ([]*pgJob, error) {
	defer rows.Close()
	for rows.Next() {
		j := &pgJob{token: token, probe: probe}
		var (
			seqKey, taskType, taskID, typ, scheme *string
			seq                                   *int64
			creds, headers                        []byte
			firstAt                               *time.Time
		)
		if err := rows.Scan(&j.row, &j.url, &j.body, &j.key, &j.breakerKey, &seqKey, &seq,
			&taskType, &taskID, &typ, &scheme, &creds, &headers,
			&j.attempts, &j.accepted, &firstAt); err != nil {
			return out, err
		}
		j.id = strconv.FormatInt(j.row, 10)
		j.seq, j.gated = deref(seq), probe != 0
		j.taskType, j.taskID = TaskType(deref(taskType)), deref(taskID)
		j.routing = Routing{SequenceKey: deref(seqKey), NotificationType: deref(typ)}
		if j.breakerKey != j.url {
			j.routing.BreakerKey = j.breakerKey
		}
		if scheme != nil {
			j.routing.Authentication = &Authentication{Scheme: AuthScheme(*scheme), Credentials: string(creds)}
		}
		if headers != nil {
			if err := json.Unmarshal(headers, &j.routing.Headers); err != nil {
				return out, fmt.Errorf("delivery %d: headers: %w", j.row, err)
			}
		}
		if firstAt != nil {
			j.firstAt = *firstAt
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// loop is one worker goroutine.
func (p *pgPool) loop() {
	guard := p.s.k.newSinkGuard(p.attemptCtx, func() { go p.loop() })
	defer guard.stop()
	req := new(Request)
	st := &pgWorker{p: p, w: &pgWrite{written: make(chan bool, 1)}}
	for j := range p.work {
		if runAttempt(p.s.k, p.attemptCtx, req, j, attemptStore[*pgJob](st), guard) {
			return // the replacement carries on and calls Done
		}
	}
	p.workers.Done()
}

// pgWorker is the attempt logic's storage for one worker goroutine.
type pgWorker struct {
	p *pgPool
	w *pgWrite // reused by this worker's completions
}

// begin renews the lease of a delivery that waited long for a worker, so
// that its attempt has the time it would have had, and bounds the attempt
// to end well before its lease, so that no other worker can claim the
// delivery while it is in flight: it gets half the lease, and less when it
// waited for a worker, but ends by three quarters of it. (A delivery waits
// for at most one attempt, so it keeps a quarter.)
func (pw *pgWorker) begin(ctx context.Context, j *pgJob) (context.Context, context.CancelFunc, bool) {
	s := pw.p.s
	if time.Since(j.claimed) > s.lease/4 && !s.renew(ctx, j) {
		return nil, nil, false
	}
	deadline := time.Now().Add(s.lease / 2)
	if latest := j.claimed.Add(s.lease * 3 / 4); latest.Before(deadline) {
		deadline = latest
	}
	sendCtx, cancel := context.WithDeadline(ctx, deadline)
	return sendCtx, cancel, true
}

func (pw *pgWorker) complete(ctx context.Context, j *pgJob, c *completion) bool {
	return pw.p.s.write(ctx, pw.p.writer, pw.w, j, c)
}

// settle releases a held delivery to its next attempt and frees the
// worker's slot; the claimer looks again when a breaker changed or the
// delivery is pending (it may be due at once).
func (pw *pgWorker) settle(j *pgJob, c *completion, wake bool) {
	if c.hold {
		pw.p.s.release(pw.p.attemptCtx, j, c)
	}
	<-pw.p.slots
	if wake || c.state == StatePending {
		pw.p.signal()
	}
}

// release makes a held delivery pending, due at its next attempt. When it
// cannot, the delivery's lease runs out and it is claimed again then.
func (s *PostgresSupervisor) release(ctx context.Context, j *pgJob, c *completion) {
	if err := s.leased(ctx, "release", s.q.release, j.row, -j.token, c.due); err != nil {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not release a delivery for its next attempt; it is due again when its lease expires",
			slog.String("delivery_id", j.id), slog.String("error", err.Error()))
	}
}

// leased runs a statement that must change exactly the one row its lease
// token names, even after ctx is cancelled; errLeaseLost when it changed none.
func (s *PostgresSupervisor) leased(ctx context.Context, op, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statementTimeout)
	defer cancel()
	tag, err := s.db.Exec(ctx, sql, args...)
	switch {
	case err != nil:
		return dbError(op, err)
	case tag.RowsAffected() != 1:
		return errLeaseLost
	}
	return nil
}

// write writes a completion through the batch writer, or on its own when
// the batch could not write it. It reports whether the gate's state
// changed.
func (s *PostgresSupervisor) write(ctx context.Context, pw *pgWriter, w *pgWrite, j *pgJob, c *completion) bool {
	w.j, w.c = j, c
	pw.reqs <- w
	written := <-w.written
	w.j, w.c = nil, nil
	if written {
		return w.changed
	}
	return s.finish(ctx, pw.gates, j, c)
}

// gateAfter is j's gate once c is recorded, computed from the row j last
// saw, and whether that changes it. (Postgres counts probe slots from
// running rows, so no probe is handed back here.)
func (s *PostgresSupervisor) gateAfter(j *pgJob, c *completion) (gate, bool) {
	g := j.gate
	g.record(s.k.breaker, c.result, 0, c.end)
	return g, g != j.gate
}

// renew extends j's lease from now. When it cannot (the lease was lost, or
// the database is unreachable), j is left alone: its lease runs out and it
// is claimed again, not charged.
func (s *PostgresSupervisor) renew(ctx context.Context, j *pgJob) bool {
	started, now := time.Now(), s.k.clock.Now()
	if err := s.leased(ctx, "renew lease", s.q.renewLease, j.row, j.token, now.Add(s.lease)); err != nil {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not renew the lease of a delivery that waited for a worker; leaving it to be claimed again",
			slog.String("delivery_id", j.id), slog.String("error", err.Error()))
		return false
	}
	j.claimed, j.leaseEnd = started, now.Add(s.lease)
	return true
}

// finish writes a completion, retrying through connection trouble for as
// long as the lease lasts (after that another worker may have taken over,
// and the delivery will be attempted again: a duplicate under the same
// key). It reports whether the breaker changed.
func (s *PostgresSupervisor) finish(ctx context.Context, gates *gateCache, j *pgJob, c *completion) (breakerChanged bool) {
	ctx = context.WithoutCancel(ctx) // results are written after cancellation too
	giveUp := j.claimed.Add(s.lease)
	backoff := newBackoff()
	withLog := true
	moved := 0
	for {
		tctx, cancel := context.WithTimeout(ctx, statementTimeout)
		changed, err := s.writeCompletion(tctx, gates, j, c, withLog, moved > maxGateMoves)
		cancel()
		if err == nil {
			return changed
		}
		if errors.Is(err, errGateMoved) {
			moved++ // j holds the gate's row as the statement saw it: decide again
			continue
		}
		if errors.Is(err, errLeaseLost) {
			c.hold = false // nothing to release
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: lease lost before the attempt's result was written; another worker owns the delivery now",
				slog.String("delivery_id", j.id), slog.Int("attempt_number", c.record.AttemptNumber))
			return false
		}
		if withLog && refusedStatement(err) {
			// The server refused the statement (the attempt table is
			// broken, say): keep the delivery's state, drop the log row.
			s.k.logger.LogAttrs(ctx, slog.LevelError, "webhook: writing the attempt row failed; recording the delivery's state without it",
				slog.String("delivery_id", j.id), slog.Int("attempt_number", c.record.AttemptNumber), slog.String("error", dbError("complete", err).Error()))
			withLog = false
			continue
		}
		if time.Now().After(giveUp) {
			s.k.logger.LogAttrs(ctx, slog.LevelError, "webhook: could not record an attempt's result before its lease expired; the delivery will be attempted again",
				slog.String("delivery_id", j.id), slog.String("error", dbError("complete", err).Error()))
			// The record the sink gets says what will happen.
			c.record.WillRetry, c.record.NextRetryAt = true, j.leaseEnd
			c.hold = false // nothing to release
			return false
		}
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: recording an attempt's result failed; retrying",
			slog.String("delivery_id", j.id), slog.String("error", dbError("complete", err).Error()))
		time.Sleep(backoff.next())
	}
}

// refusedStatement reports whether err is the server refusing a statement
// (a broken attempt table, a full disk), as opposed to a connection,
// shutdown, lock or read-only error that a retry can get past.
func refusedStatement(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch {
	case strings.HasPrefix(pe.Code, "08"), // connection exception
		strings.HasPrefix(pe.Code, "40"), // transaction rollback: deadlock, serialization
		strings.HasPrefix(pe.Code, "57"), // operator intervention: shutdown, cancel
		pe.Code == "53300",               // too many connections
		pe.Code == "25006",               // read-only transaction (a failover in progress)
		pe.Code == "55P03":               // lock not available
		return false
	}
	return true
}

// maxGateMoves is how often a completion recomputes a gate that other
// completions keep changing before it locks the gate's row instead.
const maxGateMoves = 3

// writeCompletion writes c: in one statement that leaves the gate alone
// when the gate's state machine says c does not change it (a success on a
// clean gate, a neutral result), else in one statement that persists the
// gate's new value if its row is still the one the value was computed
// from. errGateMoved means the row had moved on: j now holds it, and the
// caller decides again. locked takes the gate's row lock first, so that a
// completion that keeps losing that race wins it.
func (s *PostgresSupervisor) writeCompletion(ctx context.Context, gates *gateCache, j *pgJob, c *completion, withLog, locked bool) (bool, error) {
	if !locked {
		j.gate, j.version = gates.snapshot(j)
		return s.writeGated(ctx, gates, s.db, j, c, withLog)
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	var r gateRow
	if err := tx.QueryRow(ctx, s.q.lockBreaker, j.breakerKey, c.end).Scan(r.dest()...); err != nil {
		return false, err
	}
	if j.gate, j.version, err = r.gate(); err != nil {
		return false, err
	}
	changed, err := s.writeGated(ctx, gates, tx, j, c, withLog)
	if err != nil {
		return false, err
	}
	return changed, tx.Commit(ctx)
}

// writeGated is writeCompletion on q, a pool or the transaction that
// holds the gate's row lock.
func (s *PostgresSupervisor) writeGated(ctx context.Context, gates *gateCache, q querier, j *pgJob, c *completion, withLog bool) (bool, error) {
	before := j.gate
	after, changes := s.gateAfter(j, c)
	if !changes {
		err := s.completeRow(ctx, q, j, c, withLog)
		if errors.Is(err, errGateMoved) {
			err = s.reloadGate(ctx, q, j)
			if err == nil {
				err = errGateMoved
			}
		}
		return false, err
	}
	var opened, retry any
	if !after.OpenedAt.IsZero() {
		opened = after.OpenedAt
	}
	if t := after.retryAt(s.k.breaker); !t.IsZero() {
		retry = t
	}
	args := append(completionArgs(j, c), attemptArgs(nil, c.record)[1:]...)
	args = append(args, withLog, after.State.String(), after.Failures, after.Successes, opened, int64(after.Period), retry, j.version)
	var leased, done bool
	var r gateRow
	if err := q.QueryRow(ctx, s.q.completeGate, args...).Scan(append([]any{&leased, &done}, r.dest()...)...); err != nil {
		return false, err
	}
	switch {
	case done:
		j.gate, j.version = after, j.version+1
		gates.put(j.breakerKey, j.gate, j.version)
	case !leased:
		return false, s.fenced(ctx, q, j, false)
	default:
		var err error
		if j.gate, j.version, err = r.gate(); err != nil {
			return false, err
		}
		gates.put(j.breakerKey, j.gate, j.version)
		return false, errGateMoved
	}
	s.gateChanged(ctx, j.breakerKey, before, after)
	return before.State != after.State, nil
}

// gateChanged logs a gate's change of state and, when it opened, defers
// its pending deliveries to its probe, so that claims do not keep
// stepping over them. (The claim skips them anyway: this is only for
// speed, and may fail.)
func (s *PostgresSupervisor) gateChanged(ctx context.Context, key string, before, after gate) {
	s.k.breakerChanged(key, before.State, after.State)
	if after.State == BreakerOpen && before.State != BreakerOpen {
		if _, err := s.db.Exec(ctx, s.q.deferBreaker, key, after.retryAt(s.k.breaker)); err != nil {
			s.k.logger.LogAttrs(ctx, slog.LevelDebug, "webhook: deferring the deliveries of an opened gate failed", slog.String("error", dbError("defer", err).Error()))
		}
	}
}

// reloadGate reads j's gate row again.
func (s *PostgresSupervisor) reloadGate(ctx context.Context, q querier, j *pgJob) error {
	var r gateRow
	err := q.QueryRow(ctx, s.q.breakerState, j.breakerKey).Scan(r.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		j.gate, j.version = gate{}, 0
		return nil
	}
	if err == nil {
		j.gate, j.version, err = r.gate()
	}
	return err
}

// completeRow writes the delivery's new state and its attempt row, fenced
// by the lease token.
func (s *PostgresSupervisor) completeRow(ctx context.Context, q querier, j *pgJob, c *completion, withLog bool) error {
	// A success is written only while its gate stays clean.
	skipsBreaker := c.result == breakerSuccess
	args := completionArgs(j, c)
	sql := s.q.completeNoLog
	if withLog {
		sql = s.q.complete
		args = append(args, attemptArgs(nil, c.record)[1:]...)
	}
	args = append(args, skipsBreaker)
	tag, err := q.Exec(ctx, sql, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	return s.fenced(ctx, q, j, skipsBreaker)
}

// completionArgs are a completion's state columns, fenced by j's lease.
func completionArgs(j *pgJob, c *completion) []any {
	var finished, first, status any
	if !c.finishedAt.IsZero() {
		finished = c.finishedAt
	}
	if !c.firstAt.IsZero() {
		first = c.firstAt
	}
	if c.status != 0 {
		status = c.status
	}
	state, due := j.written(c)
	return []any{j.row, j.token, state, c.attempts, due, first, finished, status, nullText(c.errText)}
}

// written is the state and due time a completion writes. A held delivery
// stays running until its lease expires; the completion statements negate
// the lease token of a row they leave running, so a held delivery is
// released (and a retried write recognised) by -token.
func (j *pgJob) written(c *completion) (state string, due time.Time) {
	if c.hold {
		return string(StateRunning), j.leaseEnd
	}
	return string(c.state), c.due
}

// fenced explains a completion that wrote no row: the lease moved on
// (errLeaseLost), an earlier try of this write committed without our
// hearing of it (nil), or a success found its gate no longer clean
// (errGateMoved).
func (s *PostgresSupervisor) fenced(ctx context.Context, q querier, j *pgJob, skipsBreaker bool) error {
	var state string
	var token *int64
	if err := q.QueryRow(ctx, s.q.leaseState, j.row).Scan(&state, &token); err != nil {
		return err
	}
	if token != nil && *token == -j.token {
		return nil // a held completion committed
	}
	if token != nil && *token == j.token {
		if state != string(StateRunning) {
			return nil
		}
		if skipsBreaker {
			return errGateMoved
		}
	}
	return errLeaseLost
}

// saveGate persists a gate whose row the caller has locked, and returns
// the row's new version.
func (s *PostgresSupervisor) saveGate(ctx context.Context, q querier, key string, b gate, now time.Time) (int64, error) {
	var opened, retry any
	if !b.OpenedAt.IsZero() {
		opened = b.OpenedAt
	}
	if t := b.retryAt(s.k.breaker); !t.IsZero() {
		retry = t
	}
	var version int64
	err := q.QueryRow(ctx, s.q.saveBreaker, key, b.State.String(), b.Failures, b.Successes, opened, int64(b.Period), retry, now).Scan(&version)
	return version, dbError("save gate", err)
}

// gateRow scans gateColumns. A row that is not there (every column NULL,
// from a LEFT JOIN) is a closed, clean gate at version 0.
type gateRow struct {
	state               *string
	failures, successes *int
	openedAt            *time.Time
	period, version     *int64
}

func (r *gateRow) dest() []any {
	return []any{&r.state, &r.failures, &r.successes, &r.openedAt, &r.period, &r.version}
}

// gate returns the gate and its row version.
func (r *gateRow) gate() (gate, int64, error) {
	if r.state == nil {
		return gate{}, 0, nil
	}
	var g gate
	switch *r.state {
	case "closed":
		g.State = BreakerClosed
	case "open":
		g.State = BreakerOpen
	case "half_open":
		g.State = BreakerHalfOpen
	default:
		return gate{}, 0, fmt.Errorf("unknown gate state %q", *r.state)
	}
	if p := deref(r.period); p >= 0 {
		g.Period = uint64(p)
	}
	g.Failures, g.Successes, g.OpenedAt = deref(r.failures), deref(r.successes), deref(r.openedAt)
	return g, deref(r.version), nil
}

// listen wakes the claimer on NOTIFY from a dedicated connection, and
// reconnects with backoff when it drops; meanwhile the claimer polls.
func (s *PostgresSupervisor) listen(ctx context.Context, wake func()) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, s.listenConfig)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.q.channel}.Sanitize())
			if err == nil {
				backoff.reset()
				wake() // anything enqueued while not listening
				for err == nil {
					_, err = conn.WaitForNotification(ctx)
					if err == nil {
						wake()
					}
				}
			}
			conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing a broken connection
		}
		if ctx.Err() != nil {
			return
		}
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: LISTEN connection failed; polling until it is back",
			slog.String("error", dbError("listen", err).Error()), slog.Duration("retry_in", backoff.peek()))
		sleepCtx(ctx, backoff.next())
	}
}

// purgeLoop runs Purge when the worker starts and then every minute.
func (s *PostgresSupervisor) purgeLoop(ctx context.Context) {
	if s.retention < 0 {
		return
	}
	for {
		if _, err := s.Purge(ctx); err != nil && ctx.Err() == nil {
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: purging finished deliveries failed", slog.String("error", err.Error()))
		}
		if !sleepCtx(ctx, purgeEvery) {
			return
		}
	}
}

const purgeEvery = time.Minute

// backoff doubles from 100ms to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) peek() time.Duration { return b.d }
func (b *backoff) next() time.Duration {
	d := b.d
	b.d = min(2*b.d, 5*time.Second)
	return d
}
func (b *backoff) reset() { b.d = 100 * time.Millisecond }

// sleepCtx sleeps for d or until ctx is done, reporting whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// newLeaseToken returns a random token identifying one claim.
func newLeaseToken() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:])>>1) | 1 // positive: a held completion negates it
}
