package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Batch acceptance: many webhooks accepted at once, all or none. An AdCP
// account event goes to every subscriber; a batch accepts its fan-out in
// one call (on Postgres, one transaction, one commit, one NOTIFY).

// BatchMax is the most webhooks one batch call accepts, and BatchMaxBytes
// the most body bytes (a batch is one statement on Postgres).
const (
	BatchMax      = 1000
	BatchMaxBytes = 64 << 20
)

// BatchError is why a batch was refused: the item at Index, and its error
// (a [*ValidationError], [ErrIdempotencyConflict], [ErrCircuitOpen],
// [ErrQueueFull] and so on, which errors.Is and errors.As see through
// it). Nothing of the batch was accepted.
type BatchError struct {
	// Index is the item's position in the batch.
	Index int
	// Err is the item's error.
	Err error
}

func (e *BatchError) Error() string {
	return "webhook: batch item " + strconv.Itoa(e.Index) + " (nothing of the batch was accepted): " + e.Err.Error()
}

// Unwrap returns the item's error.
func (e *BatchError) Unwrap() error { return e.Err }

// batchItem wraps err as item i's when it is that item's refusal (invalid,
// a key bound to another payload, an open breaker, a full queue); any
// other error (a context's, a database outage, a deadlock) names no item
// and is returned as it is.
func batchItem(i int, err error) error {
	var be *BatchError
	var ve *ValidationError
	if errors.As(err, &be) || !errors.As(err, &ve) && !errors.Is(err, ErrCircuitOpen) && !errors.Is(err, ErrQueueFull) {
		return err
	}
	return &BatchError{Index: i, Err: err}
}

// checkBatchSize refuses an empty or oversized batch.
func checkBatchSize(n int) error {
	switch {
	case n == 0:
		return invalid("batch", "is empty; pass at least one webhook")
	case n > BatchMax:
		return invalid("batch", "has %d webhooks; pass at most %d per call (BatchMax), in several calls", n, BatchMax)
	}
	return nil
}

// prepareMCPBatch validates and builds every item before anything is
// stored.
func (k *core) prepareMCPBatch(ws []MCPWebhook, now time.Time) ([]prepared, error) {
	return prepareBatch(ws, func(w *MCPWebhook) (prepared, error) { return k.urls.prepareMCP(*w, now) }, nil)
}

// preparePreparedBatch is prepareMCPBatch for prepared bodies, whose sizes
// are known before any is copied.
func (k *core) preparePreparedBatch(ws []PreparedWebhook) ([]prepared, error) {
	return prepareBatch(ws, func(w *PreparedWebhook) (prepared, error) { return k.urls.prepare(*w) },
		func(w *PreparedWebhook) int { return len(w.Body) })
}

// prepareBatch prepares each item, refusing the batch at the item that
// takes its bodies past BatchMaxBytes (counted, when size is given, before
// any body is copied).
func prepareBatch[W any](ws []W, prepare func(*W) (prepared, error), size func(*W) int) ([]prepared, error) {
	if err := checkBatchSize(len(ws)); err != nil {
		return nil, err
	}
	tooBig := func(i, total int) error {
		return batchItem(i, invalid("batch", "holds more than %d body bytes with item %d (%d); split it (BatchMaxBytes)", BatchMaxBytes, i, total))
	}
	if size != nil {
		total := 0
		for i := range ws {
			if total += size(&ws[i]); total > BatchMaxBytes {
				return nil, tooBig(i, total)
			}
		}
	}
	ds := make([]prepared, len(ws))
	total := 0
	for i := range ws {
		d, err := prepare(&ws[i])
		if err != nil {
			return nil, batchItem(i, err)
		}
		if total += len(d.body); total > BatchMaxBytes {
			return nil, tooBig(i, total)
		}
		ds[i] = d
	}
	return ds, nil
}

// acceptingBatch calls the observer's Accepting for each item, and returns
// the func that reports the batch's outcome to each.
func (k *core) acceptingBatch(ctx context.Context, ds []prepared, now time.Time) func([]Receipt, []bool, error) {
	if k.obs == nil || k.obs.Accepting == nil {
		return func([]Receipt, []bool, error) {}
	}
	dones := make([]func(AcceptResult), len(ds))
	for i := range ds {
		dones[i] = k.accepting(ctx, &ds[i], now)
	}
	return func(rs []Receipt, dup []bool, err error) {
		for i, done := range dones {
			if err != nil {
				done(AcceptResult{Err: err})
			} else {
				done(AcceptResult{Receipt: rs[i], Duplicate: dup[i]})
			}
		}
	}
}

// SendMCPBatch accepts many MCP webhooks at once, all or none: each is
// validated and built before anything is queued, and any item's refusal
// (invalid, a key bound to another payload, an open breaker under
// OpenDrop, a full queue) returns a [*BatchError] naming it and queues
// nothing. Receipts are in the items' order; an item whose key was
// accepted before with the same payload (or earlier in the batch) gets
// that delivery's receipt. Sequence numbers are drawn in the items'
// order. At most [BatchMax] items.
func (s *MemorySupervisor) SendMCPBatch(ctx context.Context, ws []MCPWebhook) ([]Receipt, error) {
	now := s.k.clock.Now()
	ds, err := s.k.prepareMCPBatch(ws, now)
	if err != nil {
		return nil, err
	}
	return s.acceptBatch(ctx, ds, now)
}

// SendPreparedBatch is SendMCPBatch for prepared bodies.
func (s *MemorySupervisor) SendPreparedBatch(ctx context.Context, ws []PreparedWebhook) ([]Receipt, error) {
	ds, err := s.k.preparePreparedBatch(ws)
	if err != nil {
		return nil, err
	}
	return s.acceptBatch(ctx, ds, s.k.clock.Now())
}

func (s *MemorySupervisor) acceptBatch(ctx context.Context, ds []prepared, now time.Time) ([]Receipt, error) {
	done := s.k.acceptingBatch(ctx, ds, now)
	rs, dup, err := s.storeBatch(ctx, ds, now)
	done(rs, dup, err)
	return rs, err
}

// storeBatch checks every item under the lock, then stores them all, or
// none.
func (s *MemorySupervisor) storeBatch(ctx context.Context, ds []prepared, now time.Time) ([]Receipt, []bool, error) {
	firsts, err := batchFirsts(ds)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	rs, dup := make([]Receipt, len(ds)), make([]bool, len(ds))
	var fresh int
	var bytes int64
	overflow := -1 // the first new item past MaxQueued or MaxQueuedBytes
	for i := range ds {
		d := &ds[i]
		if firsts[i] != i {
			dup[i] = true // its receipt is its first item's, once stored
			continue
		}
		r, isDup, until, err := s.priorLocked(d, now)
		switch {
		case err != nil:
			s.mu.Unlock()
			return nil, nil, batchItem(i, err)
		case !until.IsZero():
			s.mu.Unlock()
			return nil, nil, batchItem(i, s.k.refused(ctx, d, now, until))
		case isDup:
			rs[i], dup[i] = r, true
			continue
		}
		fresh++
		bytes += d.size()
		if overflow < 0 && s.fullLocked(fresh, bytes) != nil {
			overflow = i
		}
	}
	if err := s.fullLocked(fresh, bytes); err != nil {
		s.mu.Unlock()
		return nil, nil, &BatchError{Index: overflow, Err: err}
	}
	for s.heldBytes+bytes > s.maxBytes {
		s.forgetOldestLocked() // finished ones only: the unfinished fit
	}
	for i := range ds {
		if !dup[i] {
			rs[i] = s.insertLocked(&ds[i], now, 0)
		}
	}
	for i, j := range firsts {
		if j != i {
			rs[i] = rs[j]
		}
	}
	if fresh > 0 {
		s.signalLocked()
	}
	s.mu.Unlock()
	return rs, dup, nil
}

// SendMCPBatch accepts many MCP webhooks at once, all or none, in one
// transaction: each is validated and built before anything is written,
// and any item's refusal returns a [*BatchError] naming it and commits
// nothing. Receipts are in the items' order; an item whose key was
// accepted before with the same payload (or earlier in the batch) gets
// that delivery's receipt. Sequence numbers are drawn in the items'
// order, contiguous per key. Workers get one notification. At most
// [BatchMax] items.
func (s *PostgresSupervisor) SendMCPBatch(ctx context.Context, ws []MCPWebhook) ([]Receipt, error) {
	return s.SendMCPBatchTx(ctx, nil, ws)
}

// SendMCPBatchTx is SendMCPBatch inside the caller's transaction (in a
// savepoint: a refused batch leaves tx as it was). A nil tx uses the
// pool. Sequence keys lock as in [PostgresSupervisor.SendMCPTx].
func (s *PostgresSupervisor) SendMCPBatchTx(ctx context.Context, tx pgx.Tx, ws []MCPWebhook) ([]Receipt, error) {
	now := s.k.clock.Now()
	ds, err := s.k.prepareMCPBatch(ws, now)
	if err != nil {
		return nil, err
	}
	return s.enqueueBatch(ctx, tx, ds, now)
}

// SendPreparedBatch is SendMCPBatch for prepared bodies.
func (s *PostgresSupervisor) SendPreparedBatch(ctx context.Context, ws []PreparedWebhook) ([]Receipt, error) {
	return s.SendPreparedBatchTx(ctx, nil, ws)
}

// SendPreparedBatchTx is SendMCPBatchTx for prepared bodies.
func (s *PostgresSupervisor) SendPreparedBatchTx(ctx context.Context, tx pgx.Tx, ws []PreparedWebhook) ([]Receipt, error) {
	ds, err := s.k.preparePreparedBatch(ws)
	if err != nil {
		return nil, err
	}
	return s.enqueueBatch(ctx, tx, ds, s.k.clock.Now())
}

func (s *PostgresSupervisor) enqueueBatch(ctx context.Context, tx pgx.Tx, ds []prepared, now time.Time) ([]Receipt, error) {
	for i := range ds {
		if err := checkPostgresKey(&ds[i]); err != nil {
			return nil, batchItem(i, err)
		}
	}
	done := s.k.acceptingBatch(ctx, ds, now)
	rs, dup, err := s.insertBatch(ctx, tx, ds, now)
	done(rs, dup, err)
	return rs, err
}

// insertBatch writes every item in one transaction (a savepoint of the
// caller's), or none.
func (s *PostgresSupervisor) insertBatch(ctx context.Context, tx pgx.Tx, ds []prepared, now time.Time) ([]Receipt, []bool, error) {
	firsts, err := batchFirsts(ds)
	if err != nil {
		return nil, nil, err
	}
	oneStatement := s.k.breaker.OpenAction == OpenDefer
	for {
		rs, dup, err := s.insertBatchOnce(ctx, tx, ds, firsts, now, oneStatement)
		if oneStatement && errors.Is(err, errBatchRaced) {
			oneStatement = false // again, one statement per item, which sorts the race out
			continue
		}
		return rs, dup, err
	}
}

// errBatchRaced: a key of the batch was bound by a transaction that
// committed while the batch's statement ran.
var errBatchRaced = errors.New("a key of the batch was bound meanwhile")

// insertBatchOnce writes the batch in one transaction (a savepoint of tx),
// in one statement or one per item (pipelined), and commits it.
func (s *PostgresSupervisor) insertBatchOnce(ctx context.Context, tx pgx.Tx, ds []prepared, firsts []int, now time.Time, oneStatement bool) ([]Receipt, []bool, error) {
	sub, err := s.beginIn(ctx, tx)
	if err != nil {
		return nil, nil, dbError("enqueue batch", err)
	}
	defer sub.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	rs, dup := make([]Receipt, len(ds)), make([]bool, len(ds))
	if oneStatement {
		if err := s.insertArrays(ctx, sub, tx != nil, ds, firsts, now, rs, dup); err != nil {
			return nil, nil, err
		}
		return s.commitBatch(ctx, tx, sub, ds, rs, dup)
	}
	again, err := s.pipeline(ctx, sub, tx != nil, ds, now, rs, dup)
	if err != nil {
		return nil, nil, err
	}
	var refused *refusal
	for _, i := range again {
		// No row: a key bound by a transaction that committed meanwhile,
		// or a refusal; the one-by-one path sorts it out.
		rs[i], dup[i], refused, err = s.insertIn(ctx, sub, true, tx != nil, ds[i], now)
		if err != nil {
			return nil, nil, batchItem(i, err)
		}
		if refused != nil {
			if err := sub.Rollback(ctx); err != nil {
				return nil, nil, batchItem(i, dbError("enqueue batch", err))
			}
			var q querier = s.db
			if tx != nil {
				q = tx
			}
			return nil, nil, batchItem(i, s.refuse(ctx, q, ds[i], now, refused.until))
		}
	}
	return s.commitBatch(ctx, tx, sub, ds, rs, dup)
}

// beginIn begins a transaction: a savepoint of tx, or one of the pool's
// when tx is nil.
func (s *PostgresSupervisor) beginIn(ctx context.Context, tx pgx.Tx) (pgx.Tx, error) {
	if tx != nil {
		return tx.Begin(ctx)
	}
	return s.db.Begin(ctx)
}

// commitBatch seals the batch's templates, commits its transaction and
// wakes the workers.
func (s *PostgresSupervisor) commitBatch(ctx context.Context, tx, sub pgx.Tx, ds []prepared, rs []Receipt, dup []bool) ([]Receipt, []bool, error) {
	if err := s.sealTemplates(ctx, sub, ds, rs, dup); err != nil {
		return nil, nil, err
	}
	if err := sub.Commit(ctx); err != nil {
		if tx == nil && outcomeUnknown(err) {
			return nil, nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, dbError("enqueue batch", err))
		}
		return nil, nil, dbError("enqueue batch", err)
	}
	if tx == nil && slices.Contains(dup, false) { // (in the caller's transaction, the statements notified with it)
		s.wakeWorkers()
	}
	return rs, dup, nil
}

// batchFirsts maps each item to the first item with its key (itself, for
// a first), refusing a key repeated with another payload or URL.
func batchFirsts(ds []prepared) ([]int, error) {
	firsts := make([]int, len(ds))
	seen := make(map[string]int, len(ds))
	for i := range ds {
		j, ok := seen[ds[i].key]
		if !ok {
			seen[ds[i].key], firsts[i] = i, i
			continue
		}
		if ds[j].fp != ds[i].fp || ds[j].url != ds[i].url {
			return nil, batchItem(i, conflict("in this batch, item "+strconv.Itoa(j)))
		}
		firsts[i] = j
	}
	return firsts, nil
}

// insertArrays writes the batch's distinct keys in one statement, and
// fills rs and dup (a repeated key gets its first item's receipt). In the
// caller's transaction (notify), one NOTIFY goes with it.
func (s *PostgresSupervisor) insertArrays(ctx context.Context, sub pgx.Tx, notify bool, ds []prepared, firsts []int, now time.Time, rs []Receipt, dup []bool) error {
	p := enqueueBatchParams{Now: now}
	v := &p.enqueueRows
	for i := range ds {
		if firsts[i] != i {
			continue
		}
		e, err := s.enqueueParams(&ds[i], now)
		if err != nil {
			return batchItem(i, err)
		}
		v.Ord, v.URL, v.Body = append(v.Ord, int32(i)), append(v.URL, e.URL), append(v.Body, e.Body)
		v.IdempotencyKey, v.BreakerKey = append(v.IdempotencyKey, e.IdempotencyKey), append(v.BreakerKey, e.BreakerKey)
		v.SequenceKey, v.TaskType, v.TaskID = append(v.SequenceKey, e.SequenceKey), append(v.TaskType, e.TaskType), append(v.TaskID, e.TaskID)
		v.NotificationType, v.AuthScheme = append(v.NotificationType, e.NotificationType), append(v.AuthScheme, e.AuthScheme)
		v.AuthCredentials, v.Headers, v.MCPBody = append(v.AuthCredentials, e.AuthCredentials), append(v.Headers, e.Headers), append(v.MCPBody, e.MCPBody)
		v.PayloadSHA256, v.SeqAt = append(v.PayloadSHA256, e.PayloadSHA256), append(v.SeqAt, int32(e.SeqAt))
		v.NotificationID, v.SubscriberID, v.TraceCarrier = append(v.NotificationID, e.NotificationID), append(v.SubscriberID, e.SubscriberID), append(v.TraceCarrier, e.TraceCarrier)
		v.Tenant, v.SealedWith, v.SealedHeaders = append(v.Tenant, e.Tenant), append(v.SealedWith, e.SealedWith), append(v.SealedHeaders, e.SealedHeaders)
	}
	rows, err := collect[enqueuedRow](query(ctx, sub, s.q.enqueueBatch, p))
	if err != nil {
		return dbError("enqueue batch", err)
	}
	if len(rows) != len(v.Ord) {
		return errBatchRaced
	}
	for _, r := range rows {
		i := int(r.Ord)
		if rs[i], dup[i], err = s.enqueued(&ds[i], &r); err != nil {
			return batchItem(i, err)
		}
	}
	for i, j := range firsts {
		if j != i {
			rs[i], dup[i] = rs[j], true
		}
	}
	if notify && slices.Contains(dup, false) {
		if _, err := sub.Exec(ctx, "SELECT pg_notify($1, '')", s.q.channel); err != nil {
			return dbError("enqueue batch", err)
		}
	}
	return nil
}

// pipeline sends every item's enqueue statement at once (one round trip),
// in order, so that sequence numbers are drawn in the items' order. In the
// caller's transaction (notify) each statement notifies with it: Postgres
// delivers one notification per transaction and channel; on its own
// transaction, the caller wakes the workers after the commit. It fills rs
// and dup, and returns the items whose statement returned no row.
func (s *PostgresSupervisor) pipeline(ctx context.Context, tx pgx.Tx, notify bool, ds []prepared, now time.Time, rs []Receipt, dup []bool) ([]int, error) {
	// In sequence-key order (items in order within a key, so each key's
	// numbers follow the items), so that concurrent batches lock counters
	// in one order.
	order := make([]int, len(ds))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return strings.Compare(ds[a].routing.SequenceKey, ds[b].routing.SequenceKey)
	})
	var batch pgx.Batch
	for _, i := range order {
		p, err := s.enqueueParams(&ds[i], now)
		if err != nil {
			return nil, batchItem(i, err)
		}
		if notify {
			tp := enqueueTxParams{p, s.q.channel}
			batch.Queue(s.q.enqueueNotify.sql, s.q.enqueueNotify.args(&tp)...)
		} else {
			batch.Queue(s.q.enqueue.sql, s.q.enqueue.args(&p)...)
		}
	}
	results := tx.SendBatch(ctx, &batch)
	var again []int
	for _, i := range order {
		r, err := scanEnqueued(results.QueryRow())
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			again = append(again, i)
			continue
		case err != nil:
			results.Close()
			return nil, batchItem(i, dbError("enqueue batch", err))
		}
		if rs[i], dup[i], err = s.enqueued(&ds[i], &r); err != nil {
			results.Close()
			return nil, batchItem(i, err)
		}
	}
	if err := results.Close(); err != nil {
		return nil, dbError("enqueue batch", err)
	}
	return again, nil
}
