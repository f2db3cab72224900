package webhook

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/adcpkit/webhook/internal/engine"
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
	// unsure is a gate change that a write of this job's completion
	// carried but whose commit the worker did not hear of (the statement
	// or the commit failed after it was sent). The next try reports it if
	// it finds that write committed (see writeCompletion).
	unsure *gateWrite
	// writeSent and writeDone bracket the write of the job's result (zero:
	// not written), for pgFlow.ended.
	writeSent, writeDone time.Time
}

func (j *pgJob) base() *job { return &j.job }

// RunWorker delivers due webhooks until ctx is done. See [Supervisor].
//
// It runs up to Concurrency attempts at once, fed by one claimer, which
// claims up to ClaimBatch due deliveries per statement, as many as there
// are free workers, and keeps up to ClaimBatch (at most Concurrency) more
// waiting while there is a backlog. A worker whose attempt is over hands
// its slot to the next delivery and writes the result beside it: up to
// 3×Concurrency (at most 256) more goroutines wait for their results to be
// written, many to a statement. An attempt that counts against its
// endpoint's breaker, or fails its delivery for good at the endpoint,
// keeps its slot until it is written, so that the next claim sees the
// breaker or health it changed. Idle, it waits for a
// NOTIFY from an enqueue, its own next due delivery, or PollInterval. A
// lost database connection is logged and retried with backoff; RunWorker
// returns only when ctx is done, after the in-flight attempts finish
// (bounded by DrainTimeout) and their results are written.
func (s *PostgresSupervisor) RunWorker(ctx context.Context) error {
	if s.k.sender == nil {
		return errNoWorkers
	}
	if err := s.checkSchema(ctx); err != nil {
		return err
	}
	writer := s.newWriter(context.WithoutCancel(ctx), newGateCache())
	flow := newPgFlow(s.limit)
	var pool *engine.Pool[*pgJob]
	pool = engine.New(engine.Config{
		Workers:      s.concurrency + min(3*s.concurrency, maxWriting),
		Active:       s.concurrency,
		Buffer:       min(s.batch, s.concurrency),
		Batch:        s.batch,
		BacklogBatch: s.batch / 2,
		DrainTimeout: s.drainTimeout,
		Logger:       s.k.logger,
	}, engine.Source[*pgJob](&pgSource{s: s, lookForProbes: true, flow: flow}),
		func(ctx context.Context, replace func()) engine.Worker[*pgJob] {
			st := &pgWorker{s: s, ctx: ctx, writer: writer, w: &pgWrite{written: make(chan bool, 1)}, wake: pool.Wake, flow: flow}
			return newAttemptWorker(s.k, ctx, replace, attemptStore[*pgJob](st))
		})
	var background sync.WaitGroup
	if !s.pollOnly {
		background.Go(func() { s.listen(ctx, pool.Wake) })
	}
	background.Go(func() { s.purgeLoop(ctx) })
	pool.Run(ctx)
	writer.close()
	background.Wait()
	return nil
}

// maxWriting bounds the goroutines of a RunWorker call that write
// attempts' results while the next attempts run: 3×Concurrency,
// so that the workers keep sending while a batch of results commits (with
// one goroutine per attempt they spent most of a fast endpoint's time
// waiting for the commit), and at most this many.
const maxWriting = 256

// pgWorker is the attempt logic's storage for one worker goroutine.
type pgWorker struct {
	s      *PostgresSupervisor
	ctx    context.Context // the pool's attempt context
	writer *pgWriter
	w      *pgWrite // reused by this worker's completions
	wake   func()   // the claimer's
	flow   *pgFlow
}

// begin renews the lease of a delivery that waited long for a worker, so
// that its attempt has the time it would have had, and bounds the attempt
// to end well before its lease, so that no other worker can claim the
// delivery while it is in flight: it gets half the lease, and less when it
// waited for a worker, but ends by three quarters of it. (A delivery waits
// for at most one attempt, so it keeps a quarter.)
func (pw *pgWorker) begin(ctx context.Context, j *pgJob) (context.Context, context.CancelFunc, bool) {
	s := pw.s
	if pw.gateClosedSince(ctx, j) {
		return nil, nil, false
	}
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

// gateClosedSince reports whether j, claimed while its gate was closed,
// must not start because the gate has left closed since: this RunWorker
// cached a newer row of it after the claim (a delivery claimed ahead of
// the workers can wait behind the attempt that opened it). A cached row
// older than the claim is not trusted over what the claim saw. It gives j back then:
// pending, uncharged, due when the gate lets a probe through. A half-open
// probe was claimed by the gate's own rule and starts.
func (pw *pgWorker) gateClosedSince(ctx context.Context, j *pgJob) bool {
	if j.probe != 0 {
		return false
	}
	s := pw.s
	g, changed := pw.writer.gates.since(j.breakerKey, j.claimed)
	if !changed {
		return false // the claim saw the gate closed, and nothing newer is known
	}
	now := s.k.clock.Now()
	if room, retryAt := g.room(s.k.breaker, now, 0, 0); room == unlimited {
		return false
	} else if retryAt.After(now) {
		now = retryAt
	}
	if err := s.leased(ctx, "give back", s.q.release, leaseParams{ID: j.row, Token: j.token, DueAt: now}); err != nil && !errors.Is(err, errLeaseLost) {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not give back a delivery whose breaker opened after its claim; it is due again when its lease expires",
			slog.String("delivery_id", j.id), slog.String("error", err.Error()))
	}
	pw.wake() // it may be a probe's due now
	return true
}

func (pw *pgWorker) complete(ctx context.Context, j *pgJob, c *completion) bool {
	j.writeSent = time.Now()
	defer func() { j.writeDone = time.Now() }()
	return pw.s.write(ctx, pw.writer, pw.w, j, c)
}

// settle releases a held delivery to its next attempt; the claimer looks
// again when a breaker changed, the delivery is pending (it may be due at
// once), it was a half-open probe (its slot is free for the next), or its
// endpoint was at its cap and now has half its slots free here.
func (pw *pgWorker) settle(j *pgJob, c *completion, wake bool) {
	if c.hold {
		pw.s.release(pw.ctx, j, c)
	}
	if freed := pw.flow.ended(j.breakerKey, j.writeSent, j.writeDone); wake || freed || c.state == StatePending || j.probe != 0 {
		pw.wake()
	}
}

// release makes a held delivery pending, due at its next attempt,
// retrying through connection trouble (not a statement the server
// refuses) until the claim's lease would have ended or the worker's
// attempts are cancelled. When it cannot, the held row is claimed again
// once its hold passes (SinkTimeout and a statement's time after its
// write, at least).
func (s *PostgresSupervisor) release(ctx context.Context, j *pgJob, c *completion) {
	var backoff engine.Backoff
	for {
		err := s.leased(ctx, "release", s.q.release, leaseParams{ID: j.row, Token: -j.token, DueAt: c.due})
		if err == nil || errors.Is(err, errLeaseLost) {
			return
		}
		if refusedStatement(err) || time.Now().Add(backoff.Peek()).After(j.claimed.Add(s.lease)) || !engine.Sleep(ctx, backoff.Next()) {
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not release a delivery for its next attempt; it is due again when its hold passes",
				slog.String("delivery_id", j.id), slog.String("error", err.Error()))
			return
		}
	}
}

// unclaim gives back a delivery claimed but not attempted: pending, due
// now, as it was. When it cannot, its lease runs out.
func (s *PostgresSupervisor) unclaim(ctx context.Context, j *pgJob) {
	if err := s.leased(ctx, "unclaim", s.q.release, leaseParams{ID: j.row, Token: j.token, DueAt: s.k.clock.Now()}); err != nil && !errors.Is(err, errLeaseLost) {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not give back a delivery claimed while stopping; it is due again when its lease expires",
			slog.String("delivery_id", j.id), slog.String("error", err.Error()))
	}
}

// leased runs a statement that must change exactly the one row its lease
// token names, even after ctx is cancelled; errLeaseLost when it changed none.
func (s *PostgresSupervisor) leased(ctx context.Context, op string, st stmt[leaseParams], p leaseParams) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statementTimeout)
	defer cancel()
	tag, err := exec(ctx, s.db, st, p)
	switch {
	case err != nil:
		return dbError(op, err)
	case tag.RowsAffected() != 1:
		return errLeaseLost
	}
	return nil
}

// renew extends j's lease from now. When it cannot (the lease was lost, or
// the database is unreachable), j is left alone: its lease runs out and it
// is claimed again, not charged.
func (s *PostgresSupervisor) renew(ctx context.Context, j *pgJob) bool {
	started, now := time.Now(), s.k.clock.Now()
	if err := s.leased(ctx, "renew lease", s.q.renewLease, leaseParams{ID: j.row, Token: j.token, DueAt: now.Add(s.lease)}); err != nil {
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not renew the lease of a delivery that waited for a worker; leaving it to be claimed again",
			slog.String("delivery_id", j.id), slog.String("error", err.Error()))
		return false
	}
	j.claimed, j.leaseEnd = started, now.Add(s.lease)
	return true
}

// newLeaseToken returns a random token identifying one claim.
func newLeaseToken() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:])>>1) | 1 // positive: a held completion negates it
}
