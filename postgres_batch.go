package webhook

import (
	"context"
	"log/slog"
	"time"
)

// maxWriteBatch bounds how many completions one statement writes.
const maxWriteBatch = 64

// pgWriter writes the completions of one RunWorker call's workers, many per
// statement: while one batch commits, the next one gathers, so under load
// the workers share commits instead of queueing for the WAL one by one, and
// a lone completion waits for nobody. Completions that change a breaker do
// not come here: they need the breaker's row lock (see writeCompletion).
type pgWriter struct {
	s    *PostgresSupervisor
	reqs chan *pgWrite
	done chan struct{}
}

// pgWrite is one completion waiting to be written. written receives true
// when it was, false when the caller must write it alone (the batch failed,
// or its lease needs checking).
type pgWrite struct {
	j       *pgJob
	c       *completion
	written chan bool
}

// newWriter starts a writer whose statements carry ctx's values; ctx must
// not be cancelled before close (results are written after RunWorker's
// context ends).
func (s *PostgresSupervisor) newWriter(ctx context.Context) *pgWriter {
	w := &pgWriter{s: s, reqs: make(chan *pgWrite), done: make(chan struct{})}
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

func (w *pgWriter) write(ctx context.Context, batch []*pgWrite) {
	s := w.s
	ctx, cancel := context.WithTimeout(ctx, statementTimeout)
	defer cancel()
	if len(batch) == 1 {
		r := batch[0]
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
		seqs                                       = make([]*int64, n)
		retries, successes                         = make([]bool, n), make([]bool, n)
	)
	for i, r := range batch {
		c, a := r.c, &r.c.record
		states[i], dues[i] = r.j.written(c)
		ids[i], tokens[i], attempts[i] = r.j.row, r.j.token, int32(c.attempts)
		firsts[i], finished[i], statuses[i], lastErrs[i] = timeOrNil(c.firstAt), timeOrNil(c.finishedAt), int32OrNil(c.status), textOrNil(c.errText)
		keys[i], urls[i], breakers[i], seqKeys[i] = a.IdempotencyKey, a.URL, a.BreakerKey, textOrNil(a.SequenceKey)
		if a.SequenceNumber != 0 {
			seqs[i] = &a.SequenceNumber
		}
		numbers[i], maxes[i], outcomes[i], httpStatuses[i] = int32(a.AttemptNumber), int32(a.MaxAttempts), string(a.Outcome), int32OrNil(a.HTTPStatus)
		errs[i], respUS[i], occurred[i], retries[i], nexts[i] = textOrNil(a.Error), a.ResponseTime.Microseconds(), a.OccurredAt, a.WillRetry, timeOrNil(a.NextRetryAt)
		types[i], tasks[i], sizes[i], nts[i] = textOrNil(string(a.TaskType)), textOrNil(a.TaskID), int32(a.PayloadSize), textOrNil(a.NotificationType)
		successes[i] = c.result == breakerSuccess
	}
	written := make(map[int64]bool, n)
	rows, err := s.db.Query(ctx, s.q.completeBatch, ids, tokens, states, attempts, dues, firsts, finished, statuses, lastErrs,
		keys, urls, breakers, seqKeys, seqs, numbers, maxes, outcomes, httpStatuses, errs, respUS, occurred, retries,
		nexts, types, tasks, sizes, nts, successes)
	if err == nil {
		for rows.Next() {
			var id int64
			if err = rows.Scan(&id); err != nil {
				break
			}
			written[id] = true
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: writing a batch of attempt results failed; writing them one by one",
			slog.Int("batch", n), slog.String("error", dbError("complete", err).Error()))
	}
	for _, r := range batch {
		r.written <- err == nil && written[r.j.row]
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
