package webhook

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/adcpkit/webhook/internal/engine"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The completer: it writes an attempt's result, fenced by the lease token,
// with its gate's change, alone or through the batch writer
// (postgres_batch.go); the attempt logic does not know which.

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
	g.record(s.k.breaker, c.result, c.failedAtEndpoint(), c.end)
	return g, g != j.gate
}

// finish writes a completion, retrying through connection trouble for as
// long as the lease lasts (after that another worker may have taken over,
// and the delivery will be attempted again: a duplicate under the same
// key). It reports whether the breaker changed.
func (s *PostgresSupervisor) finish(ctx context.Context, gates *gateCache, j *pgJob, c *completion) (breakerChanged bool) {
	ctx = context.WithoutCancel(ctx) // results are written after cancellation too
	giveUp := j.claimed.Add(s.lease)
	var backoff engine.Backoff
	withLog := true
	moved := 0
	for {
		tctx, cancel := context.WithTimeout(ctx, statementTimeout)
		changed, err := s.writeCompletion(tctx, gates, j, c, withLog, moved > maxGateMoves)
		cancel()
		if err == nil {
			return changed
		}
		if errors.Is(err, errGateMoved) && !time.Now().After(giveUp) {
			moved++ // j holds the gate's row as the statement saw it: decide again
			continue
		}
		if errors.Is(err, errLeaseLost) {
			// Another worker owns the delivery and reports its attempts;
			// this one's result was not written, and the sink does not
			// get it either (as the attempt table does not).
			c.hold, c.superseded = false, true
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: lease lost before the attempt's result was written; another worker owns the delivery now",
				slog.String("delivery_id", j.id), slog.Int("attempt_number", c.record.AttemptNumber))
			if obs := s.k.obs; obs != nil && obs.LeaseLost != nil {
				s.k.guardHook("LeaseLost", func() { obs.LeaseLost(ctx, LeaseInfo{DeliveryID: j.id, AttemptNumber: c.record.AttemptNumber}) })
			}
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
			c.hold, c.unstored = false, true // nothing to release
			return false
		}
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: recording an attempt's result failed; retrying",
			slog.String("delivery_id", j.id), slog.String("error", dbError("complete", err).Error()))
		time.Sleep(backoff.Next())
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
	if j.unsure != nil {
		// An earlier try may have committed: then this one would find the
		// row written and report nothing, and the change that try made
		// would never be reported.
		committed, err := s.committedEarlier(ctx, j)
		if err != nil {
			return false, err
		}
		w := *j.unsure
		j.unsure = nil
		if committed {
			return s.gateWritten(ctx, gates, j, w), nil
		}
	}
	if !locked {
		j.gate, j.version = gates.snapshot(j)
		w, err := s.writeGated(ctx, s.db, j, c, withLog)
		if errors.Is(err, errGateMoved) {
			gates.put(j.breakerKey, j.gate, j.version) // the row as it is now
		}
		if err != nil {
			return false, err
		}
		return s.gateWritten(ctx, gates, j, w), nil
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	w, err := s.writeLocked(ctx, tx, j, c, withLog)
	if err == nil {
		if err = tx.Commit(ctx); err != nil && w.wrote {
			j.unsure = &w
		}
	}
	if err != nil {
		// What the transaction saw or wrote may never have been: start
		// again from nothing known.
		j.gate, j.version = gate{}, 0
		gates.forget(j.breakerKey)
		return false, err
	}
	return s.gateWritten(ctx, gates, j, w), nil
}

// writeLocked is writeGated under the gate row's lock, taken by tx.
func (s *PostgresSupervisor) writeLocked(ctx context.Context, tx pgx.Tx, j *pgJob, c *completion, withLog bool) (gateWrite, error) {
	r, err := collectOne[gateRow](query(ctx, tx, s.q.lockBreaker, keyAtParams{Key: j.breakerKey, Now: c.end}))
	if err != nil {
		return gateWrite{}, err
	}
	if j.gate, j.version, err = r.gate(); err != nil {
		return gateWrite{}, err
	}
	return s.writeGated(ctx, tx, j, c, withLog)
}

// gateWrite is a gate change a completion persisted: from before to after,
// now at version.
type gateWrite struct {
	before, after gate
	version       int64
	wrote         bool
}

// gateWritten runs once a completion's write has committed: j and the
// cache learn the gate's new row, and a change of state is logged (and
// acted on). It reports whether the state changed.
func (s *PostgresSupervisor) gateWritten(ctx context.Context, gates *gateCache, j *pgJob, w gateWrite) bool {
	if !w.wrote {
		return false
	}
	j.gate, j.version = w.after, w.version
	gates.put(j.breakerKey, w.after, w.version)
	s.gateChanged(ctx, j.breakerKey, w.before, w.after, w.version)
	return w.before.State != w.after.State
}

// writeGated writes c on q, the pool or the transaction that holds the
// gate row's lock: without touching the gate when the state machine says
// c does not change it (and the gate is still the row j computed from),
// else with the gate's new value, if its row is still at j's version. It
// commits nothing itself and touches no cache: see gateWritten.
// errGateMoved means the row had moved on: j now holds it.
func (s *PostgresSupervisor) writeGated(ctx context.Context, q querier, j *pgJob, c *completion, withLog bool) (gateWrite, error) {
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
		return gateWrite{}, err
	}
	r, err := collectOne[completeGateResult](query(ctx, q, s.q.completeGate, completeGateParams{
		stateParams:   s.stateParams(j, c),
		attemptValues: attemptRecord(c.record),
		gateParams:    s.gateParams(after),
		WithLog:       withLog,
		GateVersion:   j.version,
		GateKey:       j.breakerKey,
	}))
	switch {
	case err != nil:
		if q == s.db { // sent on its own: it may have committed (in a transaction, the commit decides)
			j.unsure = &gateWrite{before: before, after: after, version: j.version + 1, wrote: true}
		}
		return gateWrite{}, err
	case r.Done:
		return gateWrite{before: before, after: after, version: j.version + 1, wrote: true}, nil
	case !r.Leased:
		return gateWrite{}, s.fenced(ctx, q, j, false)
	}
	if j.gate, j.version, err = r.gate(); err != nil {
		return gateWrite{}, err
	}
	return gateWrite{}, errGateMoved
}

// gateChanged reports a gate's change and, when it opened, defers
// its pending deliveries to its probe, so that claims do not keep
// stepping over them. (The claim skips them anyway: this is only for
// speed, and may fail.)
func (s *PostgresSupervisor) gateChanged(ctx context.Context, key string, before, after gate, version int64) {
	s.k.gateChanged(ctx, key, before, after, version)
	if after.State == BreakerOpen && before.State != BreakerOpen {
		if _, err := exec(ctx, s.db, s.q.deferBreaker, deferParams{Key: key, Until: after.retryAt(s.k.breaker)}); err != nil {
			s.k.logger.LogAttrs(ctx, slog.LevelDebug, "webhook: deferring the deliveries of an opened gate failed", slog.String("error", dbError("defer", err).Error()))
		}
	}
}

// committedEarlier reports whether an earlier write of j's completion
// committed.
func (s *PostgresSupervisor) committedEarlier(ctx context.Context, j *pgJob) (bool, error) {
	written, _, err := s.leaseOf(ctx, s.db, j)
	return written, err
}

// leaseOf reads where j's row stands: written, a completion under j's
// lease committed (the row left running under the negated token, or left
// running); held, the row is still running under j's lease.
func (s *PostgresSupervisor) leaseOf(ctx context.Context, q querier, j *pgJob) (written, held bool, err error) {
	var state string
	var token *int64
	if err := queryRow(ctx, q, s.q.leaseState, idParams{ID: j.row}).Scan(&state, &token); err != nil {
		return false, false, err
	}
	switch {
	case token == nil:
		return false, false, nil
	case *token == -j.token:
		return true, false, nil
	case *token == j.token:
		return state != string(StateRunning), state == string(StateRunning), nil
	}
	return false, false, nil
}

// reloadGate reads j's gate row again.
func (s *PostgresSupervisor) reloadGate(ctx context.Context, q querier, j *pgJob) error {
	gates, err := s.loadGates(ctx, q, []string{j.breakerKey})
	if err == nil {
		e := gates[j.breakerKey] // no row: a closed gate at version 0
		j.gate, j.version = e.g, e.version
	}
	return err
}

// completeRow writes the delivery's new state and its attempt row, fenced
// by the lease token.
func (s *PostgresSupervisor) completeRow(ctx context.Context, q querier, j *pgJob, c *completion, withLog bool) error {
	// Written only while its gate is still the row it was decided from
	// (or, for a success, clean).
	guard := guardParams{Success: c.result == breakerSuccess, GateVersion: j.version}
	var tag pgconn.CommandTag
	var err error
	if withLog {
		tag, err = exec(ctx, q, s.q.complete, completeParams{s.stateParams(j, c), attemptRecord(c.record), guard})
	} else {
		tag, err = exec(ctx, q, s.q.completeNoLog, completeNoLogParams{s.stateParams(j, c), guard})
	}
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	return s.fenced(ctx, q, j, true) // the gate guard may have refused it
}

// stateParams are a completion's state columns, fenced by j's lease.
func (s *PostgresSupervisor) stateParams(j *pgJob, c *completion) stateParams {
	state, due := s.written(j, c)
	p := stateParams{
		ID: j.row, Token: j.token, State: state, Attempts: c.attempts, DueAt: due,
		FirstAttemptAt: timeOrNil(c.firstAt), FinishedAt: timeOrNil(c.finishedAt), LastError: textOrNil(c.errText),
	}
	if c.status != 0 {
		p.LastStatus = &c.status
	}
	return p
}

// written is the state and due time a completion writes. A held retry
// stays running, claimable by another worker only if this one never
// releases it: not before the retry is due, the claim's lease ends, or
// the sink and the release could have run after this write. The
// completion statements negate the lease token of a row they leave
// running, so a held delivery is released (and a retried write
// recognised) by -token.
func (s *PostgresSupervisor) written(j *pgJob, c *completion) (state string, due time.Time) {
	if !c.hold {
		return string(c.state), c.due
	}
	due = s.k.clock.Now().Add(s.k.retry.SinkTimeout + statementTimeout)
	for _, t := range []time.Time{c.due, j.leaseEnd} {
		if t.After(due) {
			due = t
		}
	}
	return string(StateRunning), due
}

// fenced explains a completion that wrote no row: the lease moved on
// (errLeaseLost), an earlier try of this write committed without our
// hearing of it (nil), or a success found its gate no longer clean
// (errGateMoved).
func (s *PostgresSupervisor) fenced(ctx context.Context, q querier, j *pgJob, guarded bool) error {
	written, held, err := s.leaseOf(ctx, q, j)
	switch {
	case err != nil:
		return err
	case written:
		return nil
	case held && guarded:
		return errGateMoved
	}
	return errLeaseLost
}
