package webhook

import (
	"context"
	"log/slog"
	"slices"
	"time"
)

// maxWriteBatch bounds how many completions one statement writes.
const maxWriteBatch = 64

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
		next.record(s.k.breaker, r.c.result, r.c.end)
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
	var (
		ids, tokens, respUS                        = make([]int64, n), make([]int64, n), make([]int64, n)
		states, keys, urls, breakers, outcomes     = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		attempts, numbers, maxes, sizes            = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		dues, occurred                             = make([]time.Time, n), make([]time.Time, n)
		firsts, finished, nexts                    = make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
		statuses, httpStatuses                     = make([]*int32, n), make([]*int32, n)
		lastErrs, seqKeys, errs, types, tasks, nts = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		seqs, versions                             = make([]*int64, n), make([]int64, n)
		retries, gated, successes                  = make([]bool, n), make([]bool, n), make([]bool, n)
	)
	for i, r := range batch {
		c, a := r.c, &r.c.record
		states[i], dues[i] = s.written(r.j, c)
		ids[i], tokens[i], attempts[i] = r.j.row, r.j.token, int32(c.attempts)
		firsts[i], finished[i], statuses[i], lastErrs[i] = timeOrNil(c.firstAt), timeOrNil(c.finishedAt), int32OrNil(c.status), textOrNil(c.errText)
		keys[i], urls[i], breakers[i], seqKeys[i] = a.IdempotencyKey, a.URL, a.BreakerKey, textOrNil(a.SequenceKey)
		if a.SequenceNumber != 0 {
			seqs[i] = &a.SequenceNumber
		}
		numbers[i], maxes[i], outcomes[i], httpStatuses[i] = int32(a.AttemptNumber), int32(a.MaxAttempts), string(a.Outcome), int32OrNil(a.HTTPStatus)
		errs[i], respUS[i], occurred[i], retries[i], nexts[i] = textOrNil(a.Error), a.ResponseTime.Microseconds(), a.OccurredAt, a.WillRetry, timeOrNil(a.NextRetryAt)
		types[i], tasks[i], sizes[i], nts[i] = textOrNil(string(a.TaskType)), textOrNil(a.TaskID), int32(a.PayloadSize), textOrNil(a.NotificationType)
		p := plans[r.j.breakerKey]
		gated[i], successes[i], versions[i] = p.changed, c.result == breakerSuccess, p.version
	}
	var (
		gKeys, gStates        []string
		gFailures, gSuccesses []int32
		gOpened, gRetry       []*time.Time
		gPeriods, gExpected   []int64
		gAt                   []time.Time
		now                   = batch[len(batch)-1].c.end
	)
	for key, p := range plans {
		if !p.changed {
			continue
		}
		gKeys, gStates = append(gKeys, key), append(gStates, p.after.State.String())
		gFailures, gSuccesses = append(gFailures, int32(p.after.Failures)), append(gSuccesses, int32(p.after.Successes))
		gOpened, gRetry = append(gOpened, timeOrNil(p.after.OpenedAt)), append(gRetry, timeOrNil(p.after.retryAt(s.k.breaker)))
		gPeriods, gExpected, gAt = append(gPeriods, int64(p.after.Period)), append(gExpected, p.version), append(gAt, now)
	}
	written := make(map[int64]bool, n)
	rows, err := s.db.Query(ctx, s.q.completeBatch, ids, tokens, states, attempts, dues, firsts, finished, statuses, lastErrs,
		keys, urls, breakers, seqKeys, seqs, numbers, maxes, outcomes, httpStatuses, errs, respUS, occurred, retries,
		nexts, types, tasks, sizes, nts, gated, successes,
		gKeys, gStates, gFailures, gSuccesses, gOpened, gPeriods, gRetry, gExpected, gAt, versions)
	if err == nil {
		for rows.Next() {
			var id *int64
			var key *string
			if err = rows.Scan(&id, &key); err != nil {
				break
			}
			if id != nil {
				written[*id] = true
			}
			if key != nil {
				plans[*key].persisted = true
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: writing a batch of attempt results failed; writing them one by one",
			slog.Int("batch", n), slog.String("error", dbError("complete", err).Error()))
		for _, r := range batch {
			r.written <- false
		}
		return
	}
	var moved []string
	for key, p := range plans {
		switch {
		case p.persisted:
			w.gates.put(key, p.after, p.version+1)
			s.gateChanged(ctx, key, p.before, p.after)
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

func textOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
