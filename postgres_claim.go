package webhook

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"
)

// The claimer's source: it claims due deliveries for the worker pool's free
// slots (half-open probes first, within their gates' slots), and waits when
// there are none.

// pgSource is the deliveries table as one RunWorker call's pool sees it.
type pgSource struct {
	s         *PostgresSupervisor
	now       time.Time // of the last claim, by the supervisor's clock
	lastProbe time.Time // real time of the last half-open probe check
	// lookForProbes is set when the last claim did not fill up (and at
	// the start): the next one looks for half-open probes first.
	lookForProbes bool
}

// Idle waits until something may be due: a notification or local change
// (wake), the next due delivery or breaker, or the poll interval.
func (src *pgSource) Idle(ctx context.Context, wake <-chan struct{}) {
	s := src.s
	var due <-chan time.Time
	stop := func() bool { return false }
	var next *time.Time
	if err := queryRow(ctx, s.db, s.q.nextDue, nowParams{Now: src.now}).Scan(&next); err == nil && next != nil {
		due, stop = s.k.clock.TimerAt(*next)
	}
	defer stop()
	poll := time.NewTimer(s.poll)
	defer poll.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
	case <-due:
	case <-poll.C:
	}
}

// Unclaim gives back a delivery claimed while RunWorker was stopping.
func (src *pgSource) Unclaim(ctx context.Context, j *pgJob) { src.s.unclaim(ctx, j) }

// Claim takes up to n due deliveries under one lease. Half-open probes come
// first, when they are looked for: after a claim that did not fill up, and
// at least once a second under load, so that a busy queue cannot starve a
// recovering endpoint; then deliveries whose gate is closed.
func (src *pgSource) Claim(ctx context.Context, n int) ([]*pgJob, error) {
	s := src.s
	src.now = s.k.clock.Now()
	token := newLeaseToken()
	lease := src.now.Add(s.lease)
	started := time.Now()
	jobs, err := src.claim(ctx, n, lease, token)
	for _, j := range jobs {
		j.claimed, j.leaseEnd = started, lease
	}
	return jobs, err
}

func (src *pgSource) claim(ctx context.Context, n int, lease time.Time, token int64) ([]*pgJob, error) {
	s, now := src.s, src.now
	var jobs []*pgJob
	if src.lookForProbes || time.Since(src.lastProbe) > time.Second {
		src.lastProbe = time.Now()
		var err error
		if jobs, err = s.claimProbes(ctx, nil, n, now, lease, token); err != nil {
			// Probes wait for the next look; other endpoints' deliveries
			// do not wait for them.
			src.lookForProbes = false
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: claiming half-open probes failed; retrying later",
				slog.String("error", err.Error()))
			jobs = nil
		}
	}
	want := n - len(jobs)
	if want <= 0 {
		return jobs, nil
	}
	rows, err := collect[jobRow](query(ctx, s.db, s.q.claim, claimParams{Now: now, Limit: want, LeaseEnd: lease, Token: token}))
	probes := len(jobs)
	jobs = appendJobs(jobs, rows, token, 0)
	src.lookForProbes = len(jobs)-probes < want
	return jobs, dbError("claim", err)
}

// claimProbes claims half-open probes, within each breaker's slots: it
// locks the breakers that may let a probe through, counts their probes in
// flight (running rows of the current period with a live lease: a dead
// worker's probe frees its slot when its lease expires) and claims the
// difference.
func (s *PostgresSupervisor) claimProbes(ctx context.Context, jobs []*pgJob, n int, now, lease time.Time, token int64) ([]*pgJob, error) {
	var candidates bool
	probes := probesParams{Now: now, Probes: s.k.breaker.HalfOpenProbes}
	if err := queryRow(ctx, s.db, s.q.probeCandidate, probes).Scan(&candidates); err != nil || !candidates {
		return jobs, dbError("claim probes", err)
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return jobs, dbError("claim probes", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	rows, err := collect[keyedGateRow](query(ctx, tx, s.q.lockBreakers, lockBreakersParams{probesParams: probes, Limit: 16}))
	if err != nil {
		return jobs, dbError("claim probes", err)
	}
	type keyed struct {
		key     string
		b       gate
		version int64
	}
	bs := make([]keyed, len(rows))
	for i, r := range rows {
		bs[i].key = r.Key
		if bs[i].b, bs[i].version, err = r.gate(); err != nil {
			return jobs, dbError("claim probes", err)
		}
	}
	var claimed []*pgJob
	var changes []gateChange // reported once committed
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
		if err := queryRow(ctx, tx, s.q.countProbes, countProbesParams{Key: kb.key, Period: int64(b.Period), Now: now}).Scan(&inFlight); err != nil {
			return jobs, dbError("claim probes", err)
		}
		room, _ := b.room(s.k.breaker, now, inFlight, b.Period)
		free := min(room, n-len(jobs)-len(claimed))
		if free <= 0 {
			continue
		}
		version := kb.version
		if b != kb.b {
			if version, err = s.saveGate(ctx, tx, kb.key, b, now); err != nil {
				return jobs, err
			}
			changes = append(changes, gateChange{kb.key, kb.b, b, version}) // half-open
		}
		rows, err := collect[jobRow](query(ctx, tx, s.q.claimProbes, claimProbesParams{
			claimParams: claimParams{Now: now, Limit: free, LeaseEnd: lease, Token: token},
			Key:         kb.key, Period: int64(b.Period),
		}))
		from := len(claimed)
		claimed = appendJobs(claimed, rows, token, b.Period)
		if err != nil {
			return append(jobs, claimed...), dbError("claim probes", err)
		}
		for _, j := range claimed[from:] {
			j.gate, j.version = b, version
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return jobs, dbError("claim probes", err)
	}
	for _, c := range changes {
		s.k.gateChanged(ctx, c.key, c.before, c.after, c.seq)
	}
	return append(jobs, claimed...), nil
}

// appendJobs appends the claimed rows, under lease token and holding a
// probe slot of period probe (0: none), as jobs.
func appendJobs(out []*pgJob, rows []jobRow, token int64, probe uint64) []*pgJob {
	for i := range rows {
		r := &rows[i]
		j := &pgJob{token: token, probe: probe, row: r.ID}
		j.id = strconv.FormatInt(r.ID, 10)
		j.url, j.body, j.key, j.breakerKey = r.URL, r.Body, r.IdempotencyKey, r.BreakerKey
		j.seq, j.gated = deref(r.SequenceNumber), probe != 0
		j.taskType, j.taskID, j.carrier = TaskType(deref(r.TaskType)), deref(r.TaskID), deref(r.TraceCarrier)
		j.routing = Routing{SequenceKey: deref(r.SequenceKey), NotificationType: deref(r.NotificationType)}
		if j.breakerKey != j.url {
			j.routing.BreakerKey = j.breakerKey
		}
		if r.AuthScheme != nil {
			j.routing.Authentication = &Authentication{Scheme: AuthScheme(*r.AuthScheme), Credentials: string(r.AuthCredentials)}
		}
		if r.Headers != nil {
			if err := json.Unmarshal(r.Headers, &j.routing.Headers); err != nil {
				// Its row was changed outside the supervisor: it fails
				// alone, with the reason (the parser's, which quotes no
				// header value), and holds back nothing else.
				j.broken = "its headers column is not a JSON object of strings (" + err.Error() + ")"
			}
		}
		j.attempts, j.lost, j.accepted, j.firstAt = r.Attempts, r.LostAttempts, r.AcceptedAt, deref(r.FirstAttemptAt)
		j.reemissionOf, j.nid = idText(r.ReemissionOf), deref(r.NotificationID)
		j.routing.SubscriberID = deref(r.SubscriberID)
		out = append(out, j)
	}
	return out
}
