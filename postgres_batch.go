package webhook

import (
	"context"
	"log/slog"
	"slices"
	"time"
)

// maxWriteBatch bounds how many completions one statement writes. With
// 1,024 sends in flight to a 50 ms endpoint, the one writer at 64 a
// statement was the bottleneck (256: 1.16× the deliveries a second, four
// pairs of runs; 512 did no better than 256).
const maxWriteBatch = 256

// pgWriter writes the completions of one RunWorker call's workers, many per
// statement: while one batch commits, the next one gathers, so under load
// the workers share commits instead of queueing for the WAL one by one, and
// a lone completion waits for nobody. A batch applies the gate's state
// machine to its completions in order, key by key, and persists each
// changed gate with them, on the condition that its row has not moved (see
// completeBatch); a completion the batch could not write is written alone.
type pgWriter struct {
	s     *PostgresSupervisor
	gates *gateCache
	reqs  chan *pgWrite
	done  chan struct{}
}

// pgWrite is one completion waiting to be written. written receives true
// when it was (changed then says whether its gate's state changed), false
// when the caller must write it alone (the batch failed, its gate's row
// moved, or its lease needs checking).
type pgWrite struct {
	j       *pgJob
	c       *completion
	changed bool
	written chan bool
}

// newWriter starts a writer whose statements carry ctx's values; ctx must
// not be cancelled before close (results are written after RunWorker's
// context ends).
func (s *PostgresSupervisor) newWriter(ctx context.Context, gates *gateCache) *pgWriter {
	w := &pgWriter{s: s, gates: gates, reqs: make(chan *pgWrite), done: make(chan struct{})}
	go w.run(ctx)
	return w
}

// close stops the writer once every worker has finished with it.
func (w *pgWriter) close() {
	close(w.reqs)
	<-w.done
}

func (w *pgWriter) run(ctx context.Context) {
	defer close(w.done)
	batch := make([]*pgWrite, 0, maxWriteBatch)
	for first := range w.reqs {
		batch = append(batch[:0], first)
	gather:
		for len(batch) < maxWriteBatch {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		w.write(ctx, batch)
	}
}

// gatePlan is one key's gate through a batch: from the row at version, by
// the state machine, to after.
type gatePlan struct {
	before, after gate
	version       int64
	changed       bool
	persisted     bool
	unsure        bool // a job carries the change to report (see pgJob.unsure)
}

func (w *pgWriter) write(ctx context.Context, all []*pgWrite) {
	// One completion per row: a second (a claim of the row after the
	// first's lease expired) is written alone, so the statement's result,
	// keyed by row, cannot be mistaken for it.
	batch := make([]*pgWrite, 0, len(all))
	var again []*pgWrite
	for _, r := range all {
		if slices.ContainsFunc(batch, func(o *pgWrite) bool { return o.j.row == r.j.row }) {
			again = append(again, r)
		} else {
			batch = append(batch, r)
		}
	}
	defer func() {
		for _, r := range again {
			r.written <- false
		}
	}()
	s := w.s
	ctx, cancel := context.WithTimeout(ctx, statementTimeout)
	defer cancel()
	plans := make(map[string]*gatePlan, 4)
	for _, r := range batch {
		// Each key starts from the newest row any of its jobs has seen.
		g, v := w.gates.snapshot(r.j)
		if p := plans[r.j.breakerKey]; p == nil || v > p.version {
			plans[r.j.breakerKey] = &gatePlan{before: g, after: g, version: v}
		}
	}
	for _, r := range batch {
		p := plans[r.j.breakerKey]
		next := p.after
		next.record(s.k.breaker, r.c.result, r.c.failedAtEndpoint(), r.c.end)
		if next != p.after {
			p.after, p.changed = next, true
		}
	}
	if p := plans[batch[0].j.breakerKey]; len(batch) == 1 && !p.changed {
		r := batch[0]
		r.j.gate, r.j.version = p.before, p.version
		r.changed = false
		r.written <- s.completeRow(ctx, s.db, r.j, r.c, true) == nil
		return
	}
	n := len(batch)
	var p batchParams
	v := &p.batchRows
	for _, r := range batch {
		c, a := r.c, &r.c.record
		state, due := s.written(r.j, c)
		v.ID, v.Token, v.State = append(v.ID, r.j.row), append(v.Token, r.j.token), append(v.State, state)
		v.Attempts, v.DueAt = append(v.Attempts, int32(c.attempts)), append(v.DueAt, due)
		v.FirstAttemptAt, v.FinishedAt = append(v.FirstAttemptAt, timeOrNil(c.firstAt)), append(v.FinishedAt, timeOrNil(c.finishedAt))
		v.LastStatus, v.LastError = append(v.LastStatus, int32OrNil(c.status)), append(v.LastError, textOrNil(c.errText))
		v.IdempotencyKey, v.URL, v.BreakerKey = append(v.IdempotencyKey, a.IdempotencyKey), append(v.URL, a.URL), append(v.BreakerKey, a.BreakerKey)
		v.SequenceKey, v.SequenceNumber = append(v.SequenceKey, textOrNil(a.SequenceKey)), append(v.SequenceNumber, int64OrNil(a.SequenceNumber))
		v.AttemptNumber, v.MaxAttempts = append(v.AttemptNumber, int32(a.AttemptNumber)), append(v.MaxAttempts, int32(a.MaxAttempts))
		v.Outcome, v.HTTPStatus = append(v.Outcome, string(a.Outcome)), append(v.HTTPStatus, int32OrNil(a.HTTPStatus))
		v.ErrorMessage, v.ResponseTimeUS = append(v.ErrorMessage, textOrNil(a.Error)), append(v.ResponseTimeUS, a.ResponseTime.Microseconds())
		v.OccurredAt, v.WillRetry, v.NextRetryAt = append(v.OccurredAt, a.OccurredAt), append(v.WillRetry, a.WillRetry), append(v.NextRetryAt, timeOrNil(a.NextRetryAt))
		v.TaskType, v.TaskID = append(v.TaskType, textOrNil(string(a.TaskType))), append(v.TaskID, textOrNil(a.TaskID))
		v.PayloadSize, v.NotificationType = append(v.PayloadSize, int32(a.PayloadSize)), append(v.NotificationType, textOrNil(a.NotificationType))
		v.ReemissionOf = append(v.ReemissionOf, idOrNil(a.ReemissionOf))
		v.NotificationID, v.SubscriberID = append(v.NotificationID, textOrNil(a.NotificationID)), append(v.SubscriberID, textOrNil(a.SubscriberID))
		v.TimedOut = append(v.TimedOut, a.TimedOut)
		plan := plans[r.j.breakerKey]
		v.Gated, v.Success, v.GateVersion = append(v.Gated, plan.changed), append(v.Success, c.result == breakerSuccess), append(v.GateVersion, plan.version)
	}
	g, now := &p.batchGates, batch[len(batch)-1].c.end
	for key, plan := range plans {
		if !plan.changed {
			continue
		}
		after := s.gateParams(plan.after)
		g.GateBreakerKey, g.GateState = append(g.GateBreakerKey, key), append(g.GateState, after.GateState)
		g.GateFailures, g.GateSuccesses = append(g.GateFailures, int32(after.GateFailures)), append(g.GateSuccesses, int32(after.GateSuccesses))
		g.GateOpenedAt, g.GatePeriod, g.GateRetryAt = append(g.GateOpenedAt, after.GateOpenedAt), append(g.GatePeriod, after.GatePeriod), append(g.GateRetryAt, after.GateRetryAt)
		g.GateFailingSince, g.GateFailedDeliveries = append(g.GateFailingSince, after.GateFailingSince), append(g.GateFailedDeliveries, int32(after.GateFailedDeliveries))
		g.GateFailing = append(g.GateFailing, after.GateFailing)
		g.GateExpected, g.GateUpdatedAt = append(g.GateExpected, plan.version), append(g.GateUpdatedAt, now)
	}
	written := make(map[int64]bool, n)
	results, err := collect[batchResult](query(ctx, s.db, s.q.completeBatch, p))
	for _, res := range results {
		if res.DeliveryID != nil {
			written[*res.DeliveryID] = true
		}
		if res.BreakerKey != nil {
			plans[*res.BreakerKey].persisted = true
		}
	}
	if err != nil {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: writing a batch of attempt results failed; writing them one by one",
			slog.Int("batch", n), slog.String("error", dbError("complete", err).Error()))
		// The statement may have committed: the first job of each changed
		// gate carries its change, for the one-by-one write to report if
		// it finds the job written.
		for _, r := range batch {
			if p := plans[r.j.breakerKey]; p.changed && !p.unsure {
				p.unsure = true
				r.j.unsure = &gateWrite{before: p.before, after: p.after, version: p.version + 1, wrote: true}
			}
			r.written <- false
		}
		return
	}
	var moved []string
	for key, p := range plans {
		switch {
		case p.persisted:
			w.gates.put(key, p.after, p.version+1)
			s.gateChanged(ctx, key, p.before, p.after, p.version+1)
		case p.changed:
			moved = append(moved, key)
		}
	}
	if len(moved) > 0 {
		// Another process moved these gates: their completions are
		// written one by one, from the rows as they are now.
		w.gates.reload(ctx, s, moved)
	}
	for _, r := range batch {
		p := plans[r.j.breakerKey]
		r.changed = p.persisted && p.before.State != p.after.State
		r.written <- written[r.j.row]
	}
}

// statementTimeout bounds one completion statement, so that a connection
// that hangs instead of failing is given up and retried.
const statementTimeout = 15 * time.Second

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func int32OrNil(n int) *int32 {
	if n == 0 {
		return nil
	}
	v := int32(n)
	return &v
}

func int64OrNil(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

func textOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
