package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
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
	// flow is this pool's share of EndpointConcurrency, with its workers.
	flow *pgFlow
	// next is when the next delivery or gate falls due, as the last
	// claim's transaction saw it after the claim (nil: none), if
	// nextKnown: Idle, called right after a short claim, waits for it.
	next      *time.Time
	nextKnown bool
	// after is the breaker key where the last walk past a capped head
	// stopped: the next starts after it ("" : from the first).
	after string
}

// pgFlow is what one RunWorker call's pool knows of EndpointConcurrency:
// its own attempts per endpoint (claimed, not yet settled), and the
// endpoints that were at their cap after its last claim. An attempt of
// such an endpoint that ends wakes the claimer once half of the
// endpoint's slots are free here: claims then take several of its
// deliveries at a time, not one per attempt. (Slots freed in other
// processes are found by their claims, and by this one's next.)
type pgFlow struct {
	limit  int
	mu     sync.Mutex
	own    map[string]int
	capped map[string]bool
	// The last claim's start and end (zero while it runs). A result
	// committed between them may have freed a slot that the claim's first
	// statement counted as taken and that its at-cap list, read after,
	// no longer shows: the claimer must look again.
	claimStart, claimEnd time.Time
}

func newPgFlow(limit int) *pgFlow {
	return &pgFlow{limit: limit, own: make(map[string]int), capped: make(map[string]bool)}
}

// claimed counts a claim's jobs.
func (f *pgFlow) claimed(jobs []*pgJob) {
	if f.limit == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range jobs {
		f.own[j.breakerKey]++
	}
}

// claimStarts notes that a claim is running, until setCapped.
func (f *pgFlow) claimStarts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claimStart, f.claimEnd = time.Now(), time.Time{}
}

// setCapped notes the endpoints at their cap after a claim, which has
// ended.
func (f *pgFlow) setCapped(keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claimEnd = time.Now()
	clear(f.capped)
	for _, k := range keys {
		f.capped[k] = true
	}
}

// ended counts off an attempt of endpoint key (or a claim given back), whose
// result was written from sent to done (zero: nothing written), and reports
// whether the claimer should look again for it: its endpoint was at its cap
// and has half its slots free here now, or the write may have committed
// while the last claim ran.
func (f *pgFlow) ended(key string, sent, done time.Time) bool {
	if f.limit == 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.own[key] - 1
	if n <= 0 {
		delete(f.own, key)
	} else {
		f.own[key] = n
	}
	if f.capped[key] && n <= f.limit/2 {
		delete(f.capped, key)
		return true
	}
	return !done.IsZero() && done.After(f.claimStart) && (f.claimEnd.IsZero() || sent.Before(f.claimEnd))
}

// Idle waits until something may be due: a notification or local change
// (wake), the next due delivery or breaker, or the poll interval.
func (src *pgSource) Idle(ctx context.Context, wake <-chan struct{}) {
	if src.after != "" {
		return // a walk past a capped head stopped part way: go on with it
	}
	s := src.s
	var due <-chan time.Time
	stop := func() bool { return false }
	next, known := src.next, src.nextKnown
	if !known {
		if err := queryRow(ctx, s.db, s.q.nextDue, nowParams{Now: src.now}).Scan(&next); err != nil {
			next = nil
		}
	}
	if next != nil {
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
func (src *pgSource) Unclaim(ctx context.Context, j *pgJob) {
	src.s.unclaim(ctx, j)
	src.flow.ended(j.breakerKey, time.Time{}, time.Time{})
}

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
	src.flow.claimed(jobs)
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
	p := claimParams{Now: now, Limit: want, LeaseEnd: lease, Token: token}
	var rows []jobRow
	var err error
	src.next, src.nextKnown = nil, false
	unknown := false
	if s.limit == 0 {
		rows, src.next, err = s.claimPlain(ctx, p)
	} else {
		var c cappedClaim
		src.flow.claimStarts()
		c, err = s.claimCapped(ctx, p, src.after)
		rows, src.next, src.after, unknown = c.rows, c.next, c.after, c.nextUnknown
		src.flow.setCapped(c.capped)
	}
	src.nextKnown = err == nil && !unknown
	probes := len(jobs)
	jobs = s.appendJobs(jobs, rows, token, 0)
	src.lookForProbes = len(jobs)-probes < want
	return jobs, dbError("claim", err)
}

// claimScan is how many due rows a capped claim looks at per row it may
// take: rows of an endpoint at its cap are looked at and left.
const claimScan = 4

// claimPlain claims the oldest due rows, whatever their endpoint, and
// reads when the next falls due, in one round trip when the pool
// pipelines.
func (s *PostgresSupervisor) claimPlain(ctx context.Context, p claimParams) (rows []jobRow, next *time.Time, err error) {
	np := nowParams{Now: p.Now}
	if _, ok := s.db.(pipeliner); !ok { // two statements: nothing binds them
		if rows, err = collect[jobRow](query(ctx, s.db, s.q.claim, p)); err != nil {
			return rows, nil, err
		}
		err = queryRow(ctx, s.db, s.q.nextDue, np).Scan(&next)
		return rows, next, err
	}
	var batch pgx.Batch
	batch.Queue(s.q.claim.sql, s.q.claim.args(&p)...)
	batch.Queue(s.q.nextDue.sql, s.q.nextDue.args(&np)...)
	err = s.sendBatch(ctx, &batch, func(br pgx.BatchResults) error {
		var err error
		if rows, err = collect[jobRow](br.Query()); err != nil {
			return err
		}
		return br.QueryRow().Scan(&next)
	})
	if err != nil { // rolled back, or its commit unheard of: a lease left behind runs out
		return nil, nil, err
	}
	return rows, next, nil
}

// claimWalk is how many endpoints a claim past a capped head visits (from
// where the last one stopped, round the key space): its cost, under the
// claim lock, stays bounded however many endpoints have deliveries.
const claimWalk = 256

// cappedClaim is what a capped claim returns.
type cappedClaim struct {
	rows   []jobRow
	capped []string   // the endpoints at their cap after it
	after  string     // where the next walk past a capped head starts
	next   *time.Time // when the next delivery or gate falls due (nil: none)
	// nextUnknown: next was not read (the claim was full, or reading it
	// failed after the claim committed).
	nextUnknown bool
}

// claimCapped claims within EndpointConcurrency, under the claim lock, in
// one round trip: from the oldest due rows, and, when that leaves a backlog
// of due rows whose endpoints are at their cap (rows of other endpoints
// may be behind them), the oldest of up to claimWalk other endpoints, the
// walk starting after the key after. A short claim reads, in a second
// round trip, the endpoints at their cap and the next due time.
func (s *PostgresSupervisor) claimCapped(ctx context.Context, p claimParams, after string) (cappedClaim, error) {
	lock := lockParams{Lock: s.q.claimLockKey}
	dp := deepClaimParams{claimParams: p, Cap: s.limit}
	cp := cappedClaimParams{deepClaimParams: dp, Scan: max(p.Limit*claimScan, 64)}
	wp := walkParams{cappedClaimParams: cp, After: after, Walk: claimWalk}
	at := capParams{Now: p.Now, Cap: s.limit, Scan: cp.Scan}
	np := nowParams{Now: p.Now}
	var batch pgx.Batch
	batch.Queue(s.q.claimLock.sql, s.q.claimLock.args(&lock)...)
	batch.Queue(s.q.claimCapped.sql, s.q.claimCapped.args(&cp)...)
	batch.Queue(s.q.claimWalk.sql, s.q.claimWalk.args(&wp)...)
	batch.Queue(s.q.claimDeep.sql, s.q.claimDeep.args(&dp)...)
	c := cappedClaim{after: after}
	err := s.sendBatch(ctx, &batch, func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		var err error
		if c.rows, err = collect[jobRow](br.Query()); err != nil {
			return err
		}
		var walked bool // (a column only so that its settings are made)
		if err := br.QueryRow().Scan(&walked, &c.after); err != nil {
			return err
		}
		more, err := collect[jobRow](br.Query())
		c.rows = append(c.rows, more...)
		return err
	})
	if err != nil { // rolled back, or its commit unheard of: a lease left behind runs out
		return cappedClaim{after: after}, err
	}
	c.nextUnknown = len(c.rows) >= p.Limit
	if !c.nextUnknown {
		// Short: the claimer waits next, for a slot or the next due
		// delivery. (A full claim is followed by another as slots free.)
		batch = pgx.Batch{}
		batch.Queue(s.q.atCap.sql, s.q.atCap.args(&at)...)
		batch.Queue(s.q.nextDue.sql, s.q.nextDue.args(&np)...)
		err = s.sendBatch(ctx, &batch, func(br pgx.BatchResults) error {
			if err := br.QueryRow().Scan(&c.capped); err != nil {
				return err
			}
			return br.QueryRow().Scan(&c.next)
		})
		c.nextUnknown = err != nil
	}
	return c, nil
}

// sendBatch runs batch in one implicit transaction (one round trip when the
// pool pipelines: a *pgxpool.Pool; else in a transaction of its own), read
// reading its results. On an error nothing it did may have committed.
func (s *PostgresSupervisor) sendBatch(ctx context.Context, batch *pgx.Batch, read func(pgx.BatchResults) error) error {
	if pp, ok := s.db.(pipeliner); ok {
		br := pp.SendBatch(ctx, batch)
		return errors.Join(read(br), br.Close())
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	br := tx.SendBatch(ctx, batch)
	if err := errors.Join(read(br), br.Close()); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// pipeliner is a pool that sends a batch of statements in one round trip
// (an implicit transaction), as *pgxpool.Pool does.
type pipeliner interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
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
	if s.limit > 0 {                              // probes count toward EndpointConcurrency, as other claims do
		lock := lockParams{Lock: s.q.claimLockKey}
		if _, err := exec(ctx, tx, s.q.claimLock, lock); err != nil {
			return jobs, dbError("claim probes", err)
		}
	}
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
		if s.limit > 0 {
			var busy int
			if err := queryRow(ctx, tx, s.q.keyBusy, keyAtParams{Key: kb.key, Now: now}).Scan(&busy); err != nil {
				return jobs, dbError("claim probes", err)
			}
			room = min(room, s.limit-busy)
		}
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
		if err != nil { // rolled back: none of them is claimed
			return jobs, dbError("claim probes", err)
		}
		from := len(claimed)
		claimed = s.appendJobs(claimed, rows, token, b.Period)
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
func (s *PostgresSupervisor) appendJobs(out []*pgJob, rows []jobRow, token int64, probe uint64) []*pgJob {
	for i := range rows {
		r := &rows[i]
		j := &pgJob{token: token, probe: probe, row: r.ID}
		j.id = strconv.FormatInt(r.ID, 10)
		j.url, j.key, j.breakerKey = r.URL, r.IdempotencyKey, r.BreakerKey
		j.seq, j.gated = deref(r.SequenceNumber), probe != 0
		j.taskType, j.taskID, j.carrier = TaskType(deref(r.TaskType)), deref(r.TaskID), deref(r.TraceCarrier)
		j.routing = Routing{SequenceKey: deref(r.SequenceKey), NotificationType: deref(r.NotificationType)}
		if j.breakerKey != j.url {
			j.routing.BreakerKey = j.breakerKey
		}
		// A row that does not decrypt, or that was changed outside the
		// supervisor, fails alone with the reason (which quotes no
		// secret), and holds back nothing else.
		opened, err := s.openRow(r.IdempotencyKey, r.URL, r.sealedValues, r.Body, r.AuthCredentials, r.Headers)
		if err != nil {
			j.broken = "it cannot be decrypted: " + strings.TrimPrefix(err.Error(), ErrCannotDecrypt.Error()+": ")
		}
		j.body = opened.body
		if r.AuthScheme != nil {
			j.routing.Authentication = &Authentication{Scheme: AuthScheme(*r.AuthScheme), Credentials: string(opened.credentials)}
		}
		if opened.headers != nil {
			if err := json.Unmarshal(opened.headers, &j.routing.Headers); err != nil {
				j.broken = "its headers column is not a JSON object of strings (" + err.Error() + ")"
			}
		}
		j.attempts, j.lost, j.accepted, j.firstAt = r.Attempts, r.LostAttempts, r.AcceptedAt, deref(r.FirstAttemptAt)
		j.reemissionOf, j.nid = idText(r.ReemissionOf), deref(r.NotificationID)
		j.routing.SubscriberID = deref(r.SubscriberID)
		j.routing.Tenant = deref(r.Tenant)
		out = append(out, j)
	}
	return out
}
